"""kho-v2/v3/v4 (Linux 7.1+): the page-sized radix tree.

``preserved-memory-map`` -> level-5 root. Levels 5..1 are tables of 512 u64
phys pointers; level 0 is a 4 KiB leaf bitmap. A preserved block (phys,
order) is the key ``(1 << (52 - order)) | (phys >> (12 + order))``.
v3 and v4 maps are byte-identical; v2 was never released. Since Linux 7.1
(commit 3f2ad90060, "kho: adopt radix tree for preserved memory tracking",
which named it kho-v2; 7.1 released it as kho-v3). The kernel's own
definition is ``include/linux/kho/abi/kexec_handover.h`` (7.1+). See
docs/abi.md section 5.
"""

#: The root compatibles of the radix generations, oldest first (docs/abi.md
#: section 2).
COMPATIBLES = ("kho-v2", "kho-v3", "kho-v4")
#: Sub-node properties: u64 phys of any blob, and (v3+) its byte length.
SUBNODE_PROP_BLOB = "preserved-data"
SUBNODE_PROP_SIZE = "blob-size"

NODE_SIZE = 4096
TABLE_SIZE_LOG2 = 9                       # 512 u64 entries per table
TABLE_ENTRIES = 1 << TABLE_SIZE_LOG2
BITMAP_SIZE_LOG2 = 15                     # 32768 bits per leaf
LEAF_BITS = 1 << BITMAP_SIZE_LOG2
ORDER_0_LOG2 = 64 - 12                    # 52: the order bit of order 0
KEY_WIDTH = ORDER_0_LOG2 + 1              # 53 significant key bits
TREE_MAX_DEPTH = 6                        # levels 5 (root) .. 0 (leaf)
ROOT_LEVEL = TREE_MAX_DEPTH - 1
#: Root table entries at or above this index would need keys >= 2^53.
ROOT_MAX_INDEX = 1 << (KEY_WIDTH - BITMAP_SIZE_LOG2
                       - (ROOT_LEVEL - 1) * TABLE_SIZE_LOG2)


def level_shift(level: int) -> int:
    """Lowest key bit indexed by a table at *level* (1..5)."""
    return BITMAP_SIZE_LOG2 + (level - 1) * TABLE_SIZE_LOG2


def encode_key(phys: int, order: int) -> int:
    """Radix key of the block of *order* at *phys*."""
    return (1 << (ORDER_0_LOG2 - order)) | (phys >> (12 + order))


def decode_key(key: int) -> tuple[int, int]:
    """Return (phys, order) of a non-zero radix *key*."""
    ob = key.bit_length() - 1
    order = ORDER_0_LOG2 - ob
    return (key ^ (1 << ob)) << (12 + order), order

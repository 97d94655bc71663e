"""A deliberately naive reader of the radix-tree preserved-memory map
(kho-v2/v3/v4, 7.1+), written from docs/abi.md section 5 alone and importing
nothing from kho_inspect: the second opinion the vmtests hold the module's
reader against (on radix kernels the walker's tracker and the decoder's map
share ``decode.radix.walk_radix``, so comparing those two compares it with
itself).

It does what the kernel's reader does (section 5.4): a recursive walk of
fixed depth following every non-zero entry, no other check. It trusts its
input; only fixed depth bounds it, so give it maps from real kernels.
"""

import struct

PAGE = 4096
#: levels 5 (root) .. 1 hold u64 table[512]; level 0 is a 32768-bit leaf
DEPTH = 5
TABLE_BITS, LEAF_BITS = 9, 15


def block_of_key(key: int) -> tuple[int, int]:
    """(phys, order) of a key: its highest set bit carries the order
    (``order = 52 - ob``), the bits below it ``phys >> (12 + order)``."""
    if key <= 0:
        raise ValueError("key 0 encodes nothing")
    ob = key.bit_length() - 1
    order = 52 - ob
    return (key - (1 << ob)) << (12 + order), order


def read_map(read_page, root: int) -> list[tuple[int, int]]:
    """Every (phys, order) block the tree at *root* holds, sorted;
    ``read_page(phys)`` returns the 4096 bytes at that physical address."""
    out = []

    def walk(phys, level, prefix):
        page = read_page(phys)
        if level == 0:                  # bit n: u64 word n / 64, bit n % 64
            for w, word in enumerate(struct.unpack("<512Q", page)):
                while word:
                    low = word & -word
                    word ^= low
                    out.append(block_of_key(
                        (prefix << LEAF_BITS) | (w * 64 + low.bit_length()
                                                 - 1)))
            return
        for slot, child in enumerate(struct.unpack("<512Q", page)):
            if child:
                walk(child, level - 1, (prefix << TABLE_BITS) | slot)

    walk(root, DEPTH, 0)
    return sorted(out)


def runs(blocks) -> list[tuple[int, int, int]]:
    """*blocks* as ``(phys, order, count)`` runs: sorted, each as long as
    the blocks of one order lie back to back. Two sets of disjoint blocks
    are equal exactly when their runs are."""
    out: list[list[int]] = []
    for p, o in sorted(blocks):
        if out and out[-1][1] == o and \
                out[-1][0] + out[-1][2] * (PAGE << o) == p:
            out[-1][2] += 1
        else:
            out.append([p, o, 1])
    return [tuple(r) for r in out]

"""Facts shared by every KHO generation (x86-64, 4 KiB pages, little-endian).

See docs/abi.md section 3 (the root FDT and its handover) and section 6.1
(the head-page marker).
"""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: Largest order the buddy allocator (and kho_restore_* up to 7.0) accepts.
MAX_PAGE_ORDER = 10
#: Largest order whose block size (PAGE_SIZE << order) still fits in 64 bits.
MAX_REPRESENTABLE_ORDER = 64 - PAGE_SHIFT - 1

#: Root FDT property holding the u64 (little-endian) phys of the memory map.
PROP_MEM_MAP = "preserved-memory-map"
PROP_COMPATIBLE = "compatible"

#: Largest root FDT: one page. 6.16-6.18 build it with
#: ``fdt_create(fdt, PAGE_SIZE)``, 6.19+ resize it with
#: ``fdt_open_into(fdt, fdt, PAGE_SIZE)``, and the next kernel maps exactly
#: PAGE_SIZE bytes (``kho_populate``); a larger header is corrupt.
ROOT_FDT_MAX = PAGE_SIZE

#: High 32 bits of page->private on a preserved, not yet restored head page
#: ("KHOP"). Since Linux 6.18 (``union kho_page_info``); 6.16/6.17 store the
#: bare order. The low 32 bits hold the order.
KHO_PAGE_MAGIC = 0x4B484F50

#: x86 setup_data type of the KHO handover (struct kho_data).
SETUP_KEXEC_KHO = 10
#: sizeof(struct kho_data): u64 fdt_addr, fdt_size, scratch_addr,
#: scratch_size, in that order.
KHO_DATA_SIZE = 32

#: struct kho_scratch { phys_addr_t addr; phys_addr_t size; }
SCRATCH_FORMAT = "<QQ"
SCRATCH_SIZE = 16


def u64le(value: bytes) -> int:
    """Decode a KHO integer property: a raw 8-byte little-endian u64 (not an
    FDT big-endian cell). Raises ValueError if the length is not 8."""
    if len(value) != 8:
        raise ValueError(f"expected 8 bytes, got {len(value)}")
    return int.from_bytes(value, "little")


def page_private_marker(private: int) -> tuple[int, bool]:
    """Split a head page's ``page->private`` into (order, has_magic).

    6.16/6.17 store just the order; since Linux 6.18 it is
    ``KHO_PAGE_MAGIC << 32 | order`` (``union kho_page_info``: u32 order,
    then u32 magic).
    """
    return private & 0xFFFFFFFF, (private >> 32) == KHO_PAGE_MAGIC


def split_pages(pfn: int, nr: int, node_of=None) -> list[tuple[int, int]]:
    """The blocks ``(pfn, order)`` the kernel makes of *nr* pages from
    *pfn*: each as large as the alignment of its first pfn and the pages
    left allow, ``order = min(ctz(pfn), ilog2(end - pfn))``, with no
    MAX_PAGE_ORDER cap (``kho_preserve_phys`` 6.16/6.17,
    ``kho_preserve_pages`` 6.18+, and the walk of ``kho_restore_pages``).

    :param node_of: ``pfn -> node``; when given, an order is lowered until
        the block's first and last page are on one node, as 7.1's
        ``__kho_preserve_pages_order`` does (``kho_restore_pages`` does not,
        7.1-7.3: docs/abi.md section 5.4).
    """
    out, end = [], pfn + nr
    while pfn < end:
        order = (end - pfn).bit_length() - 1
        if pfn:
            order = min(order, (pfn & -pfn).bit_length() - 1)
        if node_of is not None:
            while order and node_of(pfn) != node_of(pfn + (1 << order) - 1):
                order -= 1
        out.append((pfn, order))
        pfn += 1 << order
    return out

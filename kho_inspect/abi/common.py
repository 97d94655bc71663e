"""Facts shared by every KHO generation (x86-64, 4 KiB pages, little-endian).

Source: shared/kho-abi.md sections 2 and 10.
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

#: The root FDT is one page and the handover always states PAGE_SIZE.
ROOT_FDT_MAX = PAGE_SIZE

#: High 32 bits of page->private on a preserved, not yet restored head page
#: (6.18+; "KHOP"). The low 32 bits hold the order.
KHO_PAGE_MAGIC = 0x4B484F50

#: x86 setup_data type of the KHO handover (struct kho_data).
SETUP_KEXEC_KHO = 10
#: struct kho_data: fdt_addr, fdt_size, scratch_addr, scratch_size (u64 each).
KHO_DATA_FORMAT = "<QQQQ"
KHO_DATA_SIZE = 32

#: struct kho_scratch { phys_addr_t addr; phys_addr_t size; }
SCRATCH_FORMAT = "<QQ"
SCRATCH_SIZE = 16


def block_size(order: int) -> int:
    """Bytes covered by one preserved block of *order*."""
    return PAGE_SIZE << order


def u64le(value: bytes) -> int:
    """Decode a KHO integer property: a raw 8-byte little-endian u64 (not an
    FDT big-endian cell). Raises ValueError if the length is not 8."""
    if len(value) != 8:
        raise ValueError(f"expected 8 bytes, got {len(value)}")
    return int.from_bytes(value, "little")


def page_private_marker(private: int) -> tuple[int, bool]:
    """Split a head page's ``page->private`` into (order, has_magic).

    6.16/6.17 store just the order; 6.18+ store ``KHO_PAGE_MAGIC << 32 | order``.
    """
    return private & 0xFFFFFFFF, (private >> 32) == KHO_PAGE_MAGIC

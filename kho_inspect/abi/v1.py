"""kho-v1 (Linux 6.16-7.0): the serialized chunk list.

Since Linux 6.16 (commit fc33e4b44b27, "kexec: enable KHO support for memory
preservation"). ``preserved-memory-map`` -> first ``struct
khoser_mem_chunk`` (one page): header {u64 next; u32 order; u32 num_elms}
then ``KHOSER_BITMAP_SIZE`` entries {u64 phys_start; u64 bitmap}. Each
bitmap is a ``struct kho_mem_phys_bits`` whose size differs inside kho-v1
and cannot be inferred from the compatible string. See docs/abi.md
section 4.
"""

import struct

COMPATIBLE = "kho-v1"
#: Sub-node property: u64 phys of the client's FDT (no size property).
SUBNODE_PROP_BLOB = "fdt"

CHUNK_SIZE = 4096
CHUNK_HEADER = struct.Struct("<QII")       # next, order, num_elms
CHUNK_ENTRY = struct.Struct("<QQ")         # phys_start, bitmap
KHOSER_BITMAP_SIZE = (CHUNK_SIZE - CHUNK_HEADER.size) // CHUNK_ENTRY.size  # 255

#: sizeof(struct kho_mem_phys_bits): 512 in 6.16/6.17; PAGE_SIZE since Linux
#: 6.18 ("kho: increase metadata bitmap size to PAGE_SIZE", marked for
#: stable, so later 6.16.y/6.17.y may have it too).
BITMAP_BYTES_SMALL = 512
BITMAP_BYTES_PAGE = 4096
BITMAP_BYTES_CHOICES = (BITMAP_BYTES_SMALL, BITMAP_BYTES_PAGE)


def bitmap_bytes_for_release(release: str):
    """Bitmap size a kho-v1 kernel of *release* (``uname -r``) writes, or None
    when the release cannot be parsed. 6.16 and 6.17 use 512 bytes (verified
    up to 6.17.8; a stable backport may have changed later point releases,
    which only DWARF can tell); 6.18 and later use a page."""
    try:
        major, minor = (int(x) for x in release.split("-")[0].split(".")[:2])
    except ValueError:
        return None
    return BITMAP_BYTES_SMALL if (major, minor) < (6, 18) else BITMAP_BYTES_PAGE


def parse_chunk(page: bytes):
    """Split one chunk page into (next, order, num_elms, entries bytes).

    *entries bytes* covers all KHOSER_BITMAP_SIZE slots; the caller checks
    num_elms before using it.
    """
    nxt, order, num = CHUNK_HEADER.unpack_from(page, 0)
    return nxt, order, num, page[CHUNK_HEADER.size:]


def phys_start_alignment(bitmap_bytes: int, order: int) -> int:
    """Every ``phys_start`` the writer emits is a multiple of this: it is
    ``(xa_index * PRESERVE_BITS) << (order + PAGE_SHIFT)`` in
    ``kho_mem_serialize`` (docs/abi.md section 4.2). An entry that is not
    aligned to it was not written with *bitmap_bytes*-byte bitmaps."""
    return (bitmap_bytes * 8) << (order + 12)

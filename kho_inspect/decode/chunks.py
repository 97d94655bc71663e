"""kho-v1: decode the serialized list of ``khoser_mem_chunk`` pages."""

from __future__ import annotations


from .. import bits
from ..abi import v1
from ..abi.common import MAX_REPRESENTABLE_ORDER, PAGE_SHIFT
from ..errors import KhoError
from .model import MapPage, PreservedMap


def decode_chunks(mem, map_phys: int, bitmap_bytes: int,
                  bitmap_source: str = "caller") -> PreservedMap:
    """Decode the kho-v1 chunk list starting at *map_phys*.

    :param mem: a :class:`~kho_inspect.memory.PhysMemory`.
    :param bitmap_bytes: ``sizeof(struct kho_mem_phys_bits)`` of the kernel
        that wrote the map (512 or 4096; see :mod:`kho_inspect.abi.v1`).
    :returns: the runs (not yet coalesced) and the chunk and bitmap pages.
    :raises KhoError: on a cycle, a repeated bitmap, an impossible count or
        order, a chunk that is not page-aligned or a bitmap not aligned to
        its size (the writer's ``kzalloc`` objects are), a bitmap inside a
        chunk page, a ``phys_start`` not a multiple of
        :func:`~kho_inspect.abi.v1.phys_start_alignment` (the writer's
        are; a map read with the wrong bitmap size mostly fails here), or
        memory the source does not hold. So no byte of the
        map is decoded twice.
    """
    if bitmap_bytes not in v1.BITMAP_BYTES_CHOICES:
        raise KhoError(f"kho-v1 bitmap size must be one of "
                       f"{v1.BITMAP_BYTES_CHOICES}, not {bitmap_bytes}")
    result = PreservedMap(v1.COMPATIBLE, map_phys, [], [],
                          bitmap_bytes=bitmap_bytes,
                          bitmap_source=bitmap_source)
    if map_phys == 0:
        # 6.16-6.18 write 0 for "nothing preserved"; 6.19/7.0 before
        # kho_finalize(). Only the second can have a non-empty tracker.
        result.state = "not-finalized"
        return result
    runs, pages = result.runs, result.pages
    seen: set[int] = set()
    page_mask = v1.CHUNK_SIZE - 1
    chunk_pages: set[int] = set()
    bitmap_pages: set[int] = set()
    phys, idx = map_phys, 0
    while phys:
        where = f"kho-v1 chunk #{idx} at phys 0x{phys:x}"
        if phys in seen:
            raise KhoError(f"{where}: the chunk list loops back to a chunk "
                           "already visited")
        if phys & page_mask:
            raise KhoError(f"{where}: not page-aligned (a chunk is a page of "
                           "its own)")
        if phys in bitmap_pages:
            raise KhoError(f"{where}: the page also holds a bitmap")
        seen.add(phys)
        chunk_pages.add(phys)
        page = mem.read(phys, v1.CHUNK_SIZE, f"kho-v1 chunk #{idx}")
        nxt, order, num, entries = v1.parse_chunk(page)
        if num > v1.KHOSER_BITMAP_SIZE:
            raise KhoError(f"{where}: num_elms {num} exceeds the "
                           f"{v1.KHOSER_BITMAP_SIZE} entries a chunk holds")
        if order > MAX_REPRESENTABLE_ORDER:
            raise KhoError(f"{where}: order {order}: a block of 4096 << "
                           f"{order} bytes does not fit in 64 bits")
        pages.append(MapPage(phys, v1.CHUNK_SIZE, "chunk"))
        shift = PAGE_SHIFT + order
        align = v1.phys_start_alignment(bitmap_bytes, order)
        for e in range(num):
            phys_start, bm = v1.CHUNK_ENTRY.unpack_from(entries,
                                                        e * v1.CHUNK_ENTRY.size)
            if phys_start % align:
                raise KhoError(f"{where}: entry {e}: phys_start "
                               f"0x{phys_start:x} is not a multiple of "
                               f"0x{align:x}, as every order-{order} entry "
                               f"written with {bitmap_bytes}-byte bitmaps "
                               "is (wrong bitmap size, or a corrupt map)")
            if bm in seen:
                raise KhoError(f"{where}: entry {e}: bitmap at 0x{bm:x} is "
                               "referenced twice")
            if bm % bitmap_bytes:
                raise KhoError(f"{where}: entry {e}: bitmap at 0x{bm:x} is "
                               f"not {bitmap_bytes}-byte aligned")
            if bm & ~page_mask in chunk_pages:
                raise KhoError(f"{where}: entry {e}: bitmap at 0x{bm:x} lies "
                               "in a chunk page")
            seen.add(bm)
            bitmap_pages.add(bm & ~page_mask)
            data = mem.read(bm, bitmap_bytes,
                            f"bitmap of entry {e} of kho-v1 chunk #{idx}")
            pages.append(MapPage(bm, bitmap_bytes, "bitmap"))
            found = bits.block_runs(data, phys_start, shift, order)
            if not found:
                continue
            last = found[-1]
            if last[0] + (last[2] << shift) > 1 << 64:
                raise KhoError(f"{where}: entry {e}: phys_start "
                               f"0x{phys_start:x} with order {order} "
                               "describes memory beyond 2^64")
            runs.extend(found)
        phys, idx = nxt, idx + 1
    return result

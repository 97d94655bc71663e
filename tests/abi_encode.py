"""Preserved-memory maps encoded from the ABI text, not from kho_inspect.

The property tests and the walker's synthetic kernels need maps built by
something other than the code under test: every constant and formula here is
copied from the ABI description (kho-v1 chunk list, section 3.2; kho-v2+
radix tree, section 5.2), and nothing is imported from ``kho_inspect``.

Both encoders take a set of ``(phys, order)`` blocks and return
``(segments, map_phys)``: ``segments`` a list of ``(phys, bytes)`` to place
in physical memory, ``map_phys`` the value of ``preserved-memory-map``.
"""

import struct

PAGE = 4096

# -- kho-v1: linked list of khoser_mem_chunk pages (6.16 - 7.0) -------------
# struct khoser_mem_chunk_hdr { u64 next; u32 order; u32 num_elms; } (16 B),
# then bitmaps[(4096 - 16) / 16 = 255] of { u64 phys_start; u64 bitmap; }.
V1_HDR = "<QII"
V1_ENTRY = "<QQ"
V1_ENTRIES_PER_CHUNK = 255


def encode_v1(blocks, bitmap_bytes, base=0x100000):
    """The kho-v1 map of *blocks* with *bitmap_bytes*-byte bitmaps (512 on
    6.16/6.17, 4096 from 6.18).

    As the kernel does: pfn_high = pfn >> order, xa_index = pfn_high /
    PRESERVE_BITS, bit = pfn_high % PRESERVE_BITS; an element's phys_start
    is (xa_index * PRESERVE_BITS) << (order + 12). One chunk list, orders
    ascending, a new chunk for each order and after 255 elements, elements
    in ascending xa_index. Bitmaps are packed at their own alignment (the
    512-byte ones share pages, like kzalloc'd objects).
    """
    preserve_bits = bitmap_bytes * 8
    per_order = {}                       # order -> {xa_index: int bitmap}
    for phys, order in blocks:
        pfn_high = (phys // PAGE) >> order
        idx, bit = divmod(pfn_high, preserve_bits)
        bms = per_order.setdefault(order, {})
        bms[idx] = bms.get(idx, 0) | (1 << bit)
    n_bitmaps = sum(len(b) for b in per_order.values())
    bitmap_area = base
    chunk_area = base + -(-n_bitmaps * bitmap_bytes // PAGE) * PAGE
    chunks = []                          # (order, [(phys_start, bm_phys)])
    bm_data = bytearray()
    for order in sorted(per_order):
        elems = []
        for idx, bits in sorted(per_order[order].items()):
            bm_phys = bitmap_area + len(bm_data)
            bm_data += bits.to_bytes(bitmap_bytes, "little")
            elems.append(((idx * preserve_bits) << (order + 12), bm_phys))
        for i in range(0, len(elems), V1_ENTRIES_PER_CHUNK):
            chunks.append((order, elems[i:i + V1_ENTRIES_PER_CHUNK]))
    if not chunks:
        return [], 0
    segs = [(bitmap_area, bytes(bm_data))] if bm_data else []
    for i, (order, elems) in enumerate(chunks):
        nxt = chunk_area + (i + 1) * PAGE if i + 1 < len(chunks) else 0
        page = struct.pack(V1_HDR, nxt, order, len(elems))
        for e in elems:
            page += struct.pack(V1_ENTRY, *e)
        segs.append((chunk_area + i * PAGE, page.ljust(PAGE, b"\0")))
    return segs, chunk_area


# -- kho-v2/v3/v4: radix tree (7.1+) ------------------------------------------
# key = (1 << (52 - order)) | (phys >> (12 + order)); key bits per level:
# 5 (root): 51..59, 4: 42..50, 3: 33..41, 2: 24..32, 1: 15..23 (-> leaf),
# leaf: 0..14, a 32768-bit bitmap. Tables: u64 table[512] of child phys.
RADIX_LEVEL_LOW_BIT = {5: 51, 4: 42, 3: 33, 2: 24, 1: 15}


def radix_key(phys, order):
    return (1 << (52 - order)) | (phys >> (12 + order))


def encode_radix(blocks, base=0x100000):
    """The radix-tree map of *blocks*; pages allocated upwards from *base*,
    the level-5 root first (it exists even when the tree is empty)."""
    nxt = [base]

    def alloc():
        nxt[0] += PAGE
        return nxt[0] - PAGE

    root = alloc()
    tables = {(): (root, {})}            # index path -> (phys, {slot: phys})
    leaves = {}                          # index path -> (phys, bytearray)
    for phys, order in sorted(blocks):
        key = radix_key(phys, order)
        path = ()
        for level in (5, 4, 3, 2, 1):
            slot = (key >> RADIX_LEVEL_LOW_BIT[level]) & 511
            child = path + (slot,)
            if level > 1 and child not in tables:
                tables[child] = (alloc(), {})
            elif level == 1 and child not in leaves:
                leaves[child] = (alloc(), bytearray(PAGE))
            tables[path][1][slot] = (tables[child][0] if level > 1
                                     else leaves[child][0])
            path = child
        bit = key & 0x7FFF
        leaves[path][1][bit // 8] |= 1 << (bit % 8)
    segs = []
    for phys, slots in tables.values():
        t = [0] * 512
        for slot, child in slots.items():
            t[slot] = child
        segs.append((phys, struct.pack("<512Q", *t)))
    segs += [(phys, bytes(bm)) for phys, bm in leaves.values()]
    return segs, root

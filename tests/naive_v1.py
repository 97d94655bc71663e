"""A deliberately naive reader of the kho-v1 preserved-memory map (the chunk
list, 6.16 - 7.0), written from docs/abi.md section 4 alone and importing
nothing from kho_inspect: the second opinion the sample tests hold the
decoder against. It trusts its input as the kernel's reader does; give it
maps from real kernels.
"""

import struct

PAGE = 4096


def read_map(read, first: int, bitmap_bytes: int) -> list[tuple[int, int]]:
    """Every (phys, order) block of the chunk list starting at *first* (0:
    empty), with *bitmap_bytes*-byte bitmaps (512 on 6.16/6.17, 4096 from
    6.18), sorted; ``read(phys, size)`` returns the bytes at that physical
    address."""
    out = []
    phys = first
    while phys:
        page = read(phys, PAGE)
        nxt, order, num = struct.unpack_from("<QII", page, 0)
        for i in range(num):
            start, bm = struct.unpack_from("<QQ", page, 16 + 16 * i)
            # little-endian longs: bit b is bit b % 64 of u64 word b / 64
            words = struct.unpack(f"<{bitmap_bytes // 8}Q",
                                  read(bm, bitmap_bytes))
            for w, word in enumerate(words):
                while word:
                    low = word & -word
                    word ^= low
                    b = w * 64 + low.bit_length() - 1
                    out.append((start + (b << (order + 12)), order))
        phys = nxt
    return sorted(out)

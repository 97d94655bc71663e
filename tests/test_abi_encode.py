"""The test-only encoders (tests/abi_encode.py) against maps worked out by
hand from the ABI text, so that the property tests built on them rest on
the ABI, not on kho_inspect.abi."""

import struct

from abi_encode import encode_radix, encode_v1

PAGE = 4096


def _table(entries):
    t = [0] * 512
    for i, v in entries.items():
        t[i] = v
    return struct.pack("<512Q", *t)


def _bits(nbytes, *bits):
    b = bytearray(nbytes)
    for n in bits:
        b[n // 8] |= 1 << (n % 8)
    return bytes(b)


def test_radix_worked_example():
    # (0x1000000, 0): key = 1<<52 | 0x1000: level 5 index 2, levels 4..1
    #   index 0, leaf bit 0x1000 = 4096
    # (0x40000000, 9): key = 1<<43 | 0x40000000>>21 = 1<<43 | 512: level 5
    #   index 0, level 4 index (key>>42)&511 = 2, levels 3..1 index 0, bit 512
    segs, root = encode_radix({(0x40000000, 9), (0x1000000, 0)}, 0x100000)
    assert root == 0x100000
    assert dict(segs) == {
        0x100000: _table({2: 0x101000, 0: 0x106000}),
        0x101000: _table({0: 0x102000}), 0x102000: _table({0: 0x103000}),
        0x103000: _table({0: 0x104000}), 0x104000: _table({0: 0x105000}),
        0x105000: _bits(PAGE, 4096),
        0x106000: _table({2: 0x107000}), 0x107000: _table({0: 0x108000}),
        0x108000: _table({0: 0x109000}), 0x109000: _table({0: 0x10a000}),
        0x10a000: _bits(PAGE, 512),
    }


def test_radix_empty_tree_has_a_root():
    assert encode_radix(set(), 0x5000) == ([(0x5000, bytes(PAGE))], 0x5000)


def test_v1_worked_example_512_byte_bitmaps():
    # order 0: pfn_high 0, 1, 0x64 -> xa_index 0, bits 0, 1, 100
    # order 9: pfn 0x200200 >> 9 = 4097 -> xa_index 1, bit 1; phys_start =
    #   (1 * 4096) << (9 + 12) = 0x200000000
    # two 512-byte bitmaps share the page at 0x10000; chunks follow
    segs, first = encode_v1({(0, 0), (0x1000, 0), (0x64000, 0),
                             (0x200200000, 9)}, 512, base=0x10000)
    assert first == 0x11000
    bm = bytearray(1024)
    bm[0], bm[12], bm[512] = 0b11, 1 << 4, 0b10
    assert dict(segs) == {
        0x10000: bytes(bm),
        0x11000: (struct.pack("<QIIQQ", 0x12000, 0, 1, 0, 0x10000)
                  .ljust(PAGE, b"\0")),
        0x12000: (struct.pack("<QIIQQ", 0, 9, 1, 0x200000000, 0x10200)
                  .ljust(PAGE, b"\0")),
    }


def test_v1_chunk_holds_255_elements():
    # block i at i << 24 with 512-byte bitmaps (4096 bits): pfn_high = i <<
    # 12, so xa_index i: 256 elements of order 0 -> chunks of 255 and 1
    segs, first = encode_v1({(i << 24, 0) for i in range(256)}, 512,
                            base=0x100000)
    pages = dict(segs)
    nxt, order, num = struct.unpack_from("<QII", pages[first])
    assert (order, num) == (0, 255) and nxt
    assert struct.unpack_from("<QII", pages[nxt]) == (0, 0, 1)
    assert struct.unpack_from("<Q", pages[nxt], 16)[0] == 255 << 24


def test_v1_nothing_preserved():
    assert encode_v1(set(), 4096) == ([], 0)

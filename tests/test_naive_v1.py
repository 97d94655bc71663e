"""The naive kho-v1 reader (tests/naive_v1.py) against the encoder written
from the ABI text (tests/abi_encode.py); neither imports kho_inspect."""

import random

import pytest

from abi_encode import encode_v1
from naive_v1 import read_map


def _read(segs):
    def read(phys, size):
        for base, data in segs:
            if base <= phys and phys + size <= base + len(data):
                return data[phys - base:phys - base + size]
        raise KeyError(hex(phys))
    return read


@pytest.mark.parametrize("bitmap_bytes", [512, 4096])
@pytest.mark.parametrize("blocks", [
    set(),
    {(0x1000, 0)},
    {(0x0, 0), (0x2000, 1), (0x40000000, 18), (0x5e000000, 11)},
    # the last bit of a 512-byte bitmap and the first of the next
    {(4095 << 12, 0), (4096 << 12, 0)},
])
def test_read_map_returns_what_was_encoded(blocks, bitmap_bytes):
    segs, first = encode_v1(blocks, bitmap_bytes)
    assert read_map(_read(segs), first, bitmap_bytes) == sorted(blocks)


@pytest.mark.parametrize("bitmap_bytes", [512, 4096])
def test_read_map_many_blocks_over_several_chunks(bitmap_bytes):
    rng = random.Random(5)
    blocks = set()
    for _ in range(2000):
        order = rng.choice((0, 0, 1, 3, 10))
        # spread far apart: more than 255 bitmaps of one order, two chunks
        blocks.add((rng.randrange(0, 1 << 40) >> (12 + order)
                    << (12 + order), order))
    segs, first = encode_v1(blocks, bitmap_bytes)
    assert read_map(_read(segs), first, bitmap_bytes) == sorted(blocks)

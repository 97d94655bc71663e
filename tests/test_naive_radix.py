"""The naive radix reader (tests/naive_radix.py) against the encoder written
from the ABI text (tests/abi_encode.py): the two halves of the second opinion
the vmtests use on radix kernels; neither imports kho_inspect."""

import random

import pytest

from abi_encode import encode_radix, radix_key
from naive_radix import block_of_key, read_map


def _reader(segs):
    mem = dict(segs)
    return lambda phys: mem[phys]


@pytest.mark.parametrize("blocks", [
    set(),
    {(0x1000, 0)},
    {(0x0, 0), (0x2000, 1), (0x40000000, 18), (0x5e000000, 11)},
    # the three root indexes: order >= 2, order 1, order 0
    {(0x100000, 2), (0x102000, 1), (0x104000, 0)},
    # order 0 above 2^63 (root index 3), and orders whose bit falls in the
    # leaf (>= 38)
    {(1 << 63, 0), (1 << 51, 39), (0, 51)},
    # the last bit of a leaf and the first of the next
    {(0x7fff << 12, 0), (0x8000 << 12, 0)},
])
def test_read_map_returns_what_was_encoded(blocks):
    segs, root = encode_radix(blocks)
    assert read_map(_reader(segs), root) == sorted(blocks)


def test_read_map_many_blocks():
    rng = random.Random(7)
    blocks = set()
    for _ in range(3000):
        order = rng.choice((0, 0, 0, 1, 2, 9, 10, 11))
        blocks.add((rng.randrange(0, 1 << 34) >> (12 + order)
                    << (12 + order), order))
    segs, root = encode_radix(blocks)
    assert read_map(_reader(segs), root) == sorted(blocks)


@pytest.mark.parametrize("phys, order", [(0, 0), (0x5e000000, 11),
                                         (1 << 63, 0), (1 << 63, 51)])
def test_block_of_key(phys, order):
    assert block_of_key(radix_key(phys, order)) == (phys, order)


def test_key_0_encodes_nothing():
    with pytest.raises(ValueError):
        block_of_key(0)


def test_runs():
    from naive_radix import runs
    assert runs([]) == []
    assert runs({(0x3000, 0), (0x1000, 0), (0x2000, 0), (0x4000, 1),
                 (0x6000, 1), (0xc000, 0)}) == [
        (0x1000, 0, 3), (0x4000, 1, 2), (0xc000, 0, 1)]
    # back to back but of another order, or a gap: a new run
    assert runs({(0x0, 0), (0x1000, 1)}) == [(0x0, 0, 1), (0x1000, 1, 1)]
    assert runs({(0x0, 0), (0x2000, 0)}) == [(0x0, 0, 1), (0x2000, 0, 1)]

"""Bitmap -> runs of set bits, at C speed (no Python object per bit).

Bitmaps are arrays of little-endian ``unsigned long``: bit *b* is bit
``b % 8`` of byte ``b // 8``, so the whole bitmap is one little-endian integer.
"""

import functools
from itertools import accumulate, count, repeat
from operator import add, lshift, sub

#: Below this many set bits a plain bit-trick loop beats the string pass.
_FEW_BITS = 24


@functools.cache
def _full(nbytes: int) -> bytes:
    return b"\xff" * nbytes


def _positions(v: int):
    """Iterator over the indices of the set bits of *v*, ascending."""
    gaps = bin(v)[:1:-1].split("1")
    gaps.pop()
    return map(add, accumulate(map(len, gaps)), count())


def runs(data: bytes) -> tuple[list[int], list[int]]:
    """Runs of consecutive set bits in the bitmap *data*.

    :returns: ``(starts, lengths)``, two lists of equal length, ascending.
    """
    if data and data == _full(len(data)):
        return [0], [len(data) * 8]
    x = int.from_bytes(data, "little")
    if not x:
        return [], []
    if x.bit_count() <= _FEW_BITS:
        starts, lens, base = [], [], 0
        while x:
            low = (x & -x).bit_length() - 1
            x >>= low
            base += low
            n = (~x & (x + 1)).bit_length() - 1
            starts.append(base)
            lens.append(n)
            x >>= n
            base += n
        return starts, lens
    starts = list(_positions(x & ~(x << 1)))
    ends = _positions((x & ~(x >> 1)) << 1)   # one past each run's last bit
    return starts, list(map(sub, ends, starts))


def set_bits(data: bytes) -> list[int]:
    """Indices of every set bit in *data* (for bitmaps mixing orders)."""
    x = int.from_bytes(data, "little")
    return list(_positions(x)) if x else []


def block_runs(data: bytes, base: int, shift: int, order: int) -> list:
    """Runs of set bits in *data* as ``(phys, order, count)`` tuples, where
    bit *b* stands for the block at ``base + (b << shift)``.

    This is :func:`runs` fused with the address arithmetic, so that a
    fragmented bitmap costs a handful of C-level operations per run.
    """
    if data and data == _full(len(data)):
        return [(base, order, len(data) * 8)]
    x = int.from_bytes(data, "little")
    if not x:
        return []
    nset = x.bit_count()
    if nset <= _FEW_BITS or nset * _SPARSE < len(data) * 8:
        # sparse: splitting the whole bit string on "0" would cost one list
        # slot per clear bit; positions of run starts and ends are cheaper
        starts, lens = runs(data)
        return list(zip(map(add, repeat(base),
                            map(lshift, starts, repeat(shift))),
                        repeat(order), lens))
    gaps = bin(x & ~(x << 1))[:1:-1].split("1")
    gaps.pop()
    if x & (x >> 1):
        # the runs of 1s as words: str.split() drops the empty pieces that
        # split("0") would make, one per clear bit
        lens = map(len, bin(x)[:1:-1].replace("0", " ").split())
    else:
        lens = repeat(1)        # no two set bits adjacent: every run is 1
    first = base - (1 << shift)
    if len(gaps) >= _TABLE_RUNS:
        # many runs: look each gap's address step up instead of computing
        # it, one allocation less per run (the table is built once per shift)
        steps = _steps(shift, len(data) * 8).__getitem__
        phys = accumulate(map(steps, map(len, gaps)), initial=first)
        next(phys)
    else:
        # accumulate(gap + 1) is each run's start + 1; the -1 is in *first*
        phys = map(add, repeat(first),
                   map(lshift, accumulate(map(add, map(len, gaps),
                                              repeat(1))), repeat(shift)))
    return list(zip(phys, repeat(order), lens))


#: Below one set bit in this many, a bitmap counts as sparse.
_SPARSE = 16
#: From this many runs in one bitmap on, :func:`_steps` pays for itself.
_TABLE_RUNS = 4096


@functools.lru_cache(maxsize=4)
def _steps(shift: int, nbits: int) -> list[int]:
    """``(gap + 1) << shift`` for every gap length a bitmap can have."""
    return [(g + 1) << shift for g in range(nbits + 1)]

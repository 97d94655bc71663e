"""Bitmap -> runs of set bits, at C speed (no Python object per bit).

Bitmaps are arrays of little-endian ``unsigned long``: bit *b* is bit
``b % 8`` of byte ``b // 8``, so the whole bitmap is one little-endian integer.
"""

import functools
from itertools import accumulate, count, islice, repeat
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
    first = base - (1 << shift)
    if x & (x >> 1):
        return _dense_runs(x, len(data) * 8, base, shift, order)
    # no two set bits adjacent: every run is 1 bit, and the gaps between
    # run starts are all there is to split
    gaps = bin(x & ~(x << 1))[:1:-1].split("1")
    gaps.pop()
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
    return list(zip(phys, repeat(order), repeat(1)))


def _dense_runs(x: int, nbits: int, base: int, shift: int,
                order: int) -> list:
    """:func:`block_runs` of a bitmap *x* with at least one run longer than
    a bit. One split of the bit string at every run boundary
    (``x ^ x << 1`` has a bit at each run's start and one past its end)
    gives the pieces strictly between boundaries, alternately inside a run
    and inside a gap: ``L[0]`` is the first run's start, ``L[2i+1]`` is run
    *i*'s length - 1 and ``L[2i]`` (i > 0) the gap before run *i*, - 1.
    Most pieces are empty or one character (interned strings, nothing
    allocated), unlike splitting the bitmap's own bits at every 0.
    """
    pieces = bin(x ^ (x << 1))[:1:-1].split("1")
    pieces.pop()
    lens = list(map(len, pieces))
    plus1 = _steps(0, nbits).__getitem__           # g -> g + 1
    counts = map(plus1, islice(lens, 1, None, 2))
    # run i starts L[2i-1] + L[2i] + 2 bits after run i - 1
    between = map(add, islice(lens, 1, len(lens) - 1, 2),
                  islice(lens, 2, None, 2))
    first = base + (lens[0] << shift)
    if len(lens) >= 2 * _TABLE_RUNS:
        phys = accumulate(map(_steps(shift, nbits + 1, 2).__getitem__,
                              between), initial=first)
    else:
        phys = map(add, repeat(base), map(lshift, accumulate(
            map(add, between, repeat(2)), initial=lens[0]), repeat(shift)))
    return list(zip(phys, repeat(order), counts))


#: Below one set bit in this many, a bitmap counts as sparse.
_SPARSE = 16
#: From this many runs in one bitmap on, :func:`_steps` pays for itself.
_TABLE_RUNS = 4096


@functools.lru_cache(maxsize=8)
def _steps(shift: int, nbits: int, extra: int = 1) -> list[int]:
    """``(gap + extra) << shift`` for every gap length a bitmap of *nbits*
    bits can have."""
    return [(g + extra) << shift for g in range(nbits + 1)]

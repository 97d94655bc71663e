#!/usr/bin/env python3
"""Reference-decoder throughput, as ratios to a plain pass over the same bytes.

The baseline reads every page of the map through the same drgn memory source
and does nothing with it; a ratio of 1.0 means decoding is free. Absolute
figures are printed too, for the goals in the foundation issue:
  dense   >= 1 GiB/s of bitmap (1 TiB of order-0 pages in ~0.1 s)
  frag    >= 5 M output runs/s
  sparse  keys spread over the 52-bit key space, well under a second
  memory  proportional to the number of output runs

usage: bench/decoder.py [--scale N] [--repeat R]
  N=1: 1 TiB dense, 1 M fragmented runs; each case timed R times (default 3),
  the best pass counts (decoder and baseline alike). Runs/s are given on
  the wall clock and, in parentheses, on this thread's CPU time (steadier
  when other work shares the machine)
"""

import argparse
import os
import random
import struct
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from kho_inspect.abi import radix, v1  # noqa: E402
from kho_inspect.decode.chunks import decode_chunks  # noqa: E402
from kho_inspect.decode.radix import decode_radix  # noqa: E402
from kho_inspect.memory import PhysMemory, program_from_segments  # noqa: E402
from kho_inspect.ranges import coalesce  # noqa: E402

PAGE = 4096
BASE = 1 << 32


class Layout:
    """Pages laid out contiguously from BASE, handed to drgn as one segment."""

    def __init__(self):
        self.pages = []

    def add(self, data: bytes) -> int:
        self.pages.append(data.ljust(PAGE, b"\0"))
        return BASE + (len(self.pages) - 1) * PAGE

    def memory(self):
        return PhysMemory(program_from_segments([(BASE, b"".join(self.pages))]),
                          "bench")


def radix_map(leaves):
    """leaves: list of (key_prefix, leaf bytes) -> (layout, root phys)."""
    lay = Layout()
    tables = {(): [0] * 512}
    order = [()]
    leaf_at = {}
    for prefix, data in leaves:
        path = tuple((prefix >> radix.level_shift(lv)) & 511
                     for lv in range(radix.ROOT_LEVEL, 0, -1))
        for d in range(1, len(path)):
            if path[:d] not in tables:
                tables[path[:d]] = [0] * 512
                order.append(path[:d])
        leaf_at[path] = lay.add(data)
    addr = {p: lay.add(b"") for p in order}
    for p in order[1:]:
        tables[p[:-1]][p[-1]] = addr[p]
    for path, a in leaf_at.items():
        tables[path[:-1]][path[-1]] = a
    for p in order:
        lay.pages[(addr[p] - BASE) // PAGE] = struct.pack("<512Q", *tables[p])
    return lay, addr[()]


def baseline(mem, pages):
    t = time.perf_counter()
    for p in pages:
        mem.read(p.phys, p.size, "bench")
    return time.perf_counter() - t


#: Timed passes per case; the best counts (the machine may be shared).
REPEAT = 3


def measure(name, fn, mem, nbytes_bitmap=None):
    dt = base = cpu = float("inf")
    for _ in range(REPEAT):
        c = time.thread_time()
        t = time.perf_counter()
        m = fn()
        dt = min(dt, time.perf_counter() - t)
        cpu = min(cpu, time.thread_time() - c)
        base = min(base, baseline(mem, m.pages))
        del m
    m = fn()
    runs = coalesce(m.runs)
    del m
    # a second pass for memory: tracemalloc slows allocation down, so it
    # must not share a pass with the timing
    tracemalloc.start()
    m = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    line = (f"{name:8} {dt:7.3f} s  ratio {dt / base:7.2f}x  "
            f"{len(m.runs):>8} runs ({len(runs)} coalesced)  "
            f"{len(m.runs) / dt / 1e6:5.2f} M runs/s "
            f"({len(m.runs) / max(cpu, 1e-9) / 1e6:5.2f} on CPU time)")
    if nbytes_bitmap:
        line += f"  {nbytes_bitmap / dt / 2**30:5.2f} GiB/s of bitmap"
    line += f"  peak {peak / max(len(m.runs), 1):5.0f} B/run"
    print(line, flush=True)


def main():
    global REPEAT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=REPEAT)
    args = ap.parse_args()
    REPEAT = max(1, args.repeat)
    full = b"\xff" * PAGE

    # dense: 1 TiB of order-0 pages = 2^28 bits = 8192 full leaves
    n = max(1, int(8192 * args.scale))
    prefix0 = 1 << (radix.ORDER_0_LOG2 - radix.BITMAP_SIZE_LOG2)
    lay, root = radix_map([((prefix0 + i) << 15, full) for i in range(n)])
    mem = lay.memory()
    measure("dense", lambda: decode_radix(mem, root, "kho-v4"), mem, n * PAGE)

    # the same in kho-v1 with 4 KiB bitmaps: n bitmaps in n/255 chunks
    lay = Layout()
    bms = [lay.add(full) for _ in range(n)]
    chunks = []
    for i in range(0, n, v1.KHOSER_BITMAP_SIZE):
        ents = b"".join(struct.pack("<QQ", (j * 32768) << 12, bms[j])
                        for j in range(i, min(n, i + v1.KHOSER_BITMAP_SIZE)))
        chunks.append(ents)
    addrs = [BASE + (len(lay.pages) + k) * PAGE for k in range(len(chunks))]
    for k, ents in enumerate(chunks):
        nxt = addrs[k + 1] if k + 1 < len(chunks) else 0
        cnt = len(ents) // 16
        lay.add(struct.pack("<QII", nxt, 0, cnt) + ents)
    mem = lay.memory()
    measure("dense-v1", lambda: decode_chunks(mem, addrs[0], 4096), mem,
            n * PAGE)

    # fragmented: every other page preserved -> 16384 runs per leaf
    n = max(1, int(64 * args.scale))
    lay, root = radix_map([((prefix0 + i) << 15, b"\x55" * PAGE)
                           for i in range(n)])
    mem = lay.memory()
    measure("frag", lambda: decode_radix(mem, root, "kho-v4"), mem)

    # fragmented at random: random bytes, runs of every length
    rnd = random.Random(2)
    lay, root = radix_map([((prefix0 + i) << 15, rnd.randbytes(PAGE))
                           for i in range(n)])
    mem = lay.memory()
    measure("frag-rnd", lambda: decode_radix(mem, root, "kho-v4"), mem)

    # sparse: 4096 blocks of random orders anywhere in the 52-bit space
    rnd = random.Random(1)
    keys = set()
    while len(keys) < int(4096 * args.scale) or not keys:
        order = rnd.randrange(0, 20)
        phys = rnd.randrange(0, 1 << 52) >> (12 + order) << (12 + order)
        keys.add(radix.encode_key(phys, order))
    leaves = {}
    for k in keys:
        leaves.setdefault(k >> 15, set()).add(k & 0x7FFF)
    lay, root = radix_map([(p << 15, sum(1 << b for b in bs).to_bytes(PAGE,
                                                                    "little"))
                           for p, bs in sorted(leaves.items())])
    mem = lay.memory()
    measure("sparse", lambda: decode_radix(mem, root, "kho-v4"), mem)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The incoming memmap scan for KHO markers, as a ratio to a plain read.

`incoming` (and `check --incoming`) find the preserved, not yet restored
blocks by the marker in their head page's page->private, scanning the struct
pages of every valid pfn when memblock does not survive boot. The baseline
reads the same struct pages, in the same chunks, through the same drgn
program and does nothing with them; a ratio of 1.0 means looking for markers
is free. Also printed: the previous scan (a 4-byte substring search over
every byte) as a ratio to the same baseline, and, for each, struct pages/s
and the time projected for a 1 TiB-class host (268 M struct pages; goal
<= 10 s).

Synthetic memmap: a drgn program with a cached vmtest kernel's real DWARF
(struct page as the kernel lays it out) and a vmemmap segment whose read
callback synthesises struct pages on the fly (free buddy blocks, file and
anonymous pages, slab pages, a few markers), so a 1 TiB-scale memmap (16 GiB
of struct pages) costs no memory.

usage: bench/incoming_scan.py [--scale N] [--core VMCORE --vmlinux VMLINUX]
  --scale N   share of 1 TiB of RAM to scan (default 1: 268 M struct pages)
  --core      also scan a real vmcore's memmap (every valid pfn)
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import drgn  # noqa: E402
from drgn.helpers.linux.mm import (for_each_valid_page_range,  # noqa: E402
                                   pfn_to_page)

from kho_inspect.abi.common import KHO_PAGE_MAGIC  # noqa: E402
from kho_inspect.walk import incoming as inc  # noqa: E402

TIB_PAGES = (1 << 40) >> 12          # 268,435,456 struct pages
GOAL_S = 10.0
#: Distinct synthetic memmap sections (the callback cycles through them).
TEMPLATES = 8


def _templates(psize: int, poff: int, magic: bool) -> list[bytes]:
    """TEMPLATES sections of CHUNK_PAGES plausible struct pages each, with
    i + 1 markers in template i."""
    rnd = random.Random(1)
    vmemmap, direct = 0xFFFFEA0000000000, 0xFFFF888000000000
    out = []
    for t in range(TEMPLATES):
        page = bytearray(inc.CHUNK_PAGES * psize)
        pfn = t * inc.CHUNK_PAGES
        i = 0
        while i < inc.CHUNK_PAGES:
            kind = rnd.random()
            flags = 0x17FFFFC0000000 | rnd.choice([0, 0x4, 0x28, 0x2C, 0x200])
            if kind < 0.4:               # a free buddy block of order 0..9
                order = rnd.randrange(10)
                n = min(1 << order, inc.CHUNK_PAGES - i)
                link = vmemmap + rnd.randrange(1 << 28) * psize
                head = (flags, link, link + 8, 0, 0, order, -129, 0, 0)
                body = (flags, 0, 0, 0, 0, 0, -1, 0, 0)
            elif kind < 0.8:             # file or anonymous pages
                n = rnd.randrange(1, 64)
                mapping = direct + rnd.randrange(1 << 30) * 64
                anon = kind < 0.6
                head = (flags | 0x8, vmemmap + rnd.randrange(1 << 28) * psize,
                        vmemmap + rnd.randrange(1 << 28) * psize,
                        mapping | anon, rnd.randrange(1 << 30), 0,
                        rnd.randrange(3), rnd.randrange(1, 4),
                        direct + rnd.randrange(1 << 20) * 4096)
                body = head
            else:                        # slab and other kernel pages
                n = rnd.randrange(1, 16)
                head = (flags | 0x200, direct + rnd.randrange(1 << 30) * 64,
                        0, direct + rnd.randrange(1 << 30) * 64,
                        rnd.randrange(1 << 16),
                        direct + rnd.randrange(1 << 30) * 64, -1, 1, 0)
                body = head
            for k in range(min(n, inc.CHUNK_PAGES - i)):
                f = head if k == 0 else body
                at = (i + k) * psize
                struct.pack_into("<QQQQQ", page, at, *f[:5])
                struct.pack_into("<Q", page, at + poff, f[5])
                struct.pack_into("<iiQ", page, at + 48, *f[6:])
            i += n
        for k in range(t + 1):           # markers: order k at aligned pfns
            at = (k * 2048) * psize + poff
            private = (KHO_PAGE_MAGIC << 32 | k) if magic else k + 1
            struct.pack_into("<Q", page, at, private)
        del pfn
        out.append(bytes(page))
    return out


class SyntheticMemmap:
    """A vmemmap segment serving *pages* synthetic struct pages."""

    def __init__(self, prog: drgn.Program, vmemmap: int, pages: int,
                 magic: bool):
        t = prog.type("struct page")
        self.psize = drgn.sizeof(t)
        self.poff = drgn.offsetof(t, "private")
        if self.psize != 64 or self.poff != 40:
            raise SystemExit(f"struct page is {self.psize} bytes with private "
                             f"at {self.poff}; the templates assume 64/40")
        self.base = vmemmap
        self.period = inc.CHUNK_PAGES * self.psize
        self.tpl = _templates(self.psize, self.poff, magic)
        self.size = pages * self.psize
        prog.add_memory_segment(vmemmap, self.size, self.read)

    def read(self, address, count, offset, physical):
        rel = address - self.base
        k, off = divmod(rel, self.period)
        tpl = self.tpl[k % TEMPLATES]
        if off == 0 and count == self.period:
            return tpl                     # the common case: no copy here
        out = bytearray()
        while len(out) < count:
            n = min(self.period - off, count - len(out))
            out += tpl[off:off + n]
            k, off = k + 1, 0
            tpl = self.tpl[k % TEMPLATES]
        return bytes(out)


def plain_read(prog: drgn.Program, ranges, psize: int) -> None:
    """The baseline: read every chunk the scan reads, keep nothing."""
    for start, end in ranges:
        for s, e in inc._chunks(start, end):
            try:
                prog.read(pfn_to_page(prog, s).value_(), (e - s) * psize)
            except drgn.FaultError:
                pass


def substring_scan(prog: drgn.Program, ranges, psize: int, poff: int) -> int:
    """The previous scan: bytes.find of the 4-byte magic over every byte."""
    magic = struct.pack("<I", KHO_PAGE_MAGIC)
    found = 0
    for start, end in ranges:
        for s, e in inc._chunks(start, end):
            try:
                data = prog.read(pfn_to_page(prog, s).value_(),
                                 (e - s) * psize)
            except drgn.FaultError:
                continue
            pos = data.find(magic)
            while pos >= 0:
                found += (pos - poff - 4) % psize == 0
                pos = data.find(magic, pos + 1)
    return found


def best(fn, repeat: int):
    """(result, best time) of *repeat* calls: the first pass also warms the
    page cache for a vmcore, which must not count against either side."""
    out, dt = None, float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        dt = min(dt, time.perf_counter() - t)
    return out, dt


def report(label: str, prog: drgn.Program, ranges, magic: bool,
           want: int | None = None, repeat: int = 2) -> None:
    psize, poff = inc._page_layout(prog)
    pages = sum(e - s for s, e in ranges)
    _, base = best(lambda: plain_read(prog, ranges, psize), repeat)
    scan, dt = best(lambda: inc.scan_markers(prog, ranges, label, magic=magic,
                                             max_pages=None), repeat)
    print(f"{label}: {pages:,} struct pages ({pages * psize / 2**30:.2f} GiB "
          f"of memmap), {len(scan.markers)} markers"
          + ("" if want is None else
             f" (planted {want}: {'ok' if want == len(scan.markers) else 'WRONG'})"))

    def line(name, sec):
        rate = pages / sec
        proj = TIB_PAGES / rate
        print(f"  {name:22} {sec:7.3f} s  ratio {sec / base:5.2f}x  "
              f"{rate / 1e6:7.1f} M pages/s  268 M pages in {proj:6.1f} s"
              f"{'' if name == 'plain read' else '  (goal <= 10 s: ' + ('met' if proj <= GOAL_S else 'MISSED') + ')'}",
              flush=True)
    line("plain read", base)
    line("scan", dt)
    if magic:
        _, dt = best(lambda: substring_scan(prog, ranges, psize, poff), 1)
        line("previous scan (find)", dt)


def synthetic(scale: float) -> None:
    from walk_synth import VMEMMAP, SynthKernel, built_kernels
    kernels = built_kernels()
    if not kernels:
        print("synthetic: no built vmtest kernel in the cache; skipped")
        return
    rel = max(kernels, key=lambda r: tuple(int(x) for x in r.split(".")))
    k = SynthKernel(kernels[rel], tempfile.mkdtemp(), rel)
    magic = inc.has_page_magic(k.prog)
    pages = max(inc.CHUNK_PAGES,
                int(TIB_PAGES * scale) // inc.CHUNK_PAGES * inc.CHUNK_PAGES)
    # added last, so it takes precedence over SynthKernel's sparse vmemmap
    SyntheticMemmap(k.prog, VMEMMAP, pages, magic)
    chunks = pages // inc.CHUNK_PAGES
    want = sum((c % TEMPLATES) + 1 for c in range(chunks))
    report(f"synthetic {rel} memmap, {pages << 12 >> 30} GiB of RAM",
           k.prog, [(0, pages)], magic, want)


def real(core: str, vmlinux: str) -> None:
    prog = drgn.Program()
    prog.set_core_dump(core)
    prog.load_debug_info([vmlinux])
    ranges = [(s, e) for s, e, _ in for_each_valid_page_range(prog)]
    report(f"{os.path.basename(core)} (every valid pfn)", prog, ranges,
           inc.has_page_magic(prog))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--core")
    ap.add_argument("--vmlinux")
    args = ap.parse_args()
    synthetic(args.scale)
    if args.core:
        if not args.vmlinux:
            ap.error("--core needs --vmlinux")
        real(args.core, args.vmlinux)


if __name__ == "__main__":
    main()

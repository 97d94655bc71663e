#!/usr/bin/env python3
"""The drgn walker against the reference decoder on the same memory.

Both produce the outgoing preserved blocks of one kernel: the walker from the
kernel's tracker (DWARF, xarrays or radix nodes through the direct map), the
decoder from the outgoing FDT's map (physical reads). Printed: the best of
--repeat timings of each, and the ratio walker/decoder (goal: within 3x).

usage: bench/walker_vs_decoder.py [VMCORE VMLINUX] [--repeat N]
  VMCORE VMLINUX   a vmcore (or QEMU dump) of a KHO kernel and its vmlinux;
                   for kho-v1 it must have been taken after finalize.
  no arguments     the vmcore part is skipped (with a message); if the vmtest
                   cache holds a built kernel, the same comparison runs on
                   synthetic memory laid out with that kernel's real DWARF.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from kho_inspect.errors import KhoError  # noqa: E402
from kho_inspect.ranges import coalesce  # noqa: E402
from kho_inspect.walk.tracker import outgoing_tracker  # noqa: E402
from kho_inspect.walk.views import outgoing_handover  # noqa: E402

GOAL = 3.0


def best(fn, repeat: int):
    out, dt = None, float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        dt = min(dt, time.perf_counter() - t)
    return out, dt


def compare(prog, label: str, repeat: int) -> bool:
    t, tw = best(lambda: outgoing_tracker(prog), repeat)
    if t.layout != "radix" and t.finalized is False:
        print(f"{label}: kho-v1 not finalized: no map to decode; skipped")
        return True
    (h, _), td = best(lambda: outgoing_handover(
        prog, with_map=True, bitmap_bytes=t.bitmap_bytes), repeat)
    same = coalesce(t.runs) == coalesce(h.map.runs)
    ratio = tw / td if td else float("inf")
    print(f"{label}: {t.layout} ({t.expression}), {len(t.runs)} runs, "
          f"{len(t.pages)} pages walked")
    print(f"  walker  {tw * 1e3:9.2f} ms\n  decoder {td * 1e3:9.2f} ms\n"
          f"  ratio   {ratio:9.2f}x (goal <= {GOAL}x: "
          f"{'met' if ratio <= GOAL else 'MISSED'}); same blocks: {same}")
    return same


def vmcore(path: str, vmlinux: str, repeat: int) -> bool:
    from kho_inspect.memory import open_core
    return compare(open_core(path, vmlinux), f"vmcore {path}", repeat)


def synthetic(repeat: int, nblocks: int) -> bool:
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from walk_synth import SynthKernel, built_kernels
    kernels = built_kernels()
    if not kernels:
        print("synthetic: skipped: no built kernel in the vmtest cache")
        return True
    ok = True
    rnd = random.Random(1)
    for rel, vm in sorted(kernels.items()):
        k = SynthKernel(vm, tempfile.mkdtemp(), rel)
        blocks = set()
        while len(blocks) < nblocks:       # test_kho-like: random orders
            order = rnd.choice((0, 0, 0, 1, 2, 3, 9, 10))
            pfn = rnd.randrange(0x10000, 0x40000)   # 256 MiB - 1 GiB
            blocks.add(((pfn >> order << order) << 12, order))
        k.preserve(sorted(blocks))
        gen, mphys = _serialize(k, sorted(blocks))
        from helpers import kho_dts
        import subprocess
        blob = subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-"],
                              input=kho_dts(gen, mphys), capture_output=True,
                              check=True).stdout
        k.set_fdt(blob)
        if gen == "kho-v1":
            k.set_finalized(True)
        ok &= compare(k.prog, f"synthetic {rel} ({nblocks} blocks)", repeat)
    return ok


def _serialize(k, blocks):
    import drgn
    if k.tracker_member() == "radix_tree.root":
        try:
            k.prog.type("struct kho_block_header_ser")
            gen = "kho-v4"
        except LookupError:
            gen = "kho-v3"
        from walk_synth import PAGE_OFFSET
        return gen, k.prog["kho_out"].radix_tree.root.value_() - PAGE_OFFSET
    from helpers import encode_v1
    nbytes = drgn.sizeof(k.prog.type("struct kho_mem_phys_bits"))
    segs, mphys = encode_v1(blocks, nbytes, base=0x70000000)
    for phys, data in segs:
        k.write_phys(phys, data)
    return "kho-v1", mphys


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("vmcore", nargs="?")
    ap.add_argument("vmlinux", nargs="?")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=20000,
                    help="synthetic run: preserved blocks (default 20000)")
    args = ap.parse_args()
    try:
        if args.vmcore:
            if not args.vmlinux:
                ap.error("a vmcore needs its vmlinux")
            return 0 if vmcore(args.vmcore, args.vmlinux, args.repeat) else 1
        print("vmcore: skipped (no VMCORE VMLINUX given)")
        return 0 if synthetic(args.repeat, args.blocks) else 1
    except KhoError as e:
        print(f"walker_vs_decoder: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

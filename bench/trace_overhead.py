#!/usr/bin/env python3
"""What tracing costs: the kho_workload module times its own loop of the
cheapest KHO call (kho_preserve_folio + kho_unpreserve_folio on one order-0
folio, 6.19+; kho_preserve_folio on distinct folios where there is no
unpreserve), in the kernel with ktime, untraced and under the tracer in each
mode and mechanism, in one guest. Prints traced/untraced ratios (TCG
distorts absolute times; the ratios are what count).

usage: bench/trace_overhead.py KERNEL [--loops N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "vmtests"))

GUEST = r'''#!/bin/sh
# bench guest: runs instead of vmtests/guest/init.sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp PYTHONPATH=/project
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
cd /tmp
mount -t tmpfs tmpfs /boot && ln -s /kernel/vmlinux "/boot/vmlinux-$(uname -r)"
python3 /project/bench/trace_overhead.py --guest "$@" > /results/bench.out 2>&1
sync
python3 -c 'import ctypes, os; os.sync(); ctypes.CDLL(None).reboot(0x4321fedc)'
'''

MODES = [("untraced", None),
         ("summary, fentry", ["--summary", "--mechanism", "auto"]),
         ("summary, kprobe", ["--summary", "--mechanism", "kprobe"]),
         ("events, fentry", ["--json", "--mechanism", "auto"]),
         ("events, kprobe", ["--json", "--mechanism", "kprobe"]),
         ("untraced again", None)]


def guest(loops: int) -> int:
    import signal
    import subprocess
    ctl = Path("/sys/kernel/debug/kho_workload/ctl")
    bench = Path("/sys/kernel/debug/kho_workload/bench")
    subprocess.run(["insmod", "/results/kho_workload.ko"], check=True)
    out = {"release": subprocess.run(["uname", "-r"], capture_output=True,
                                     text=True).stdout.strip(),
           "loops": loops, "modes": {}}

    def loop() -> int:
        ctl.write_text(f"loop {loops}")
        fields = dict(w.split("=") for w in bench.read_text().split())
        return int(fields["ns"])

    loop()                                  # warm up (allocations, caches)
    for name, opts in MODES:
        tr = None
        if opts:
            err = Path(f"/results/tracer-{len(out['modes'])}.err")
            tr = subprocess.Popen(
                [sys.executable, "-m", "kho_inspect", "trace", *opts],
                stdout=subprocess.DEVNULL, stderr=open(err, "w"))
            t = time.monotonic()
            while "Tracing" not in err.read_text():
                if tr.poll() is not None or time.monotonic() - t > 300:
                    out["modes"][name] = {"error": err.read_text()[-300:]}
                    tr = None
                    break
                time.sleep(0.5)
            else:
                pass
            if name in out["modes"]:
                continue
        runs = [loop() for _ in range(3)]
        out["modes"][name] = {"ns": runs, "best": min(runs)}
        if tr:
            tr.send_signal(signal.SIGINT)
            tr.wait(120)
            tail = err.read_text().strip().splitlines()
            out["modes"][name]["tracer"] = tail[-1] if tail else ""
        print(name, out["modes"][name], flush=True)
    Path("/results/bench.json").write_text(json.dumps(out, indent=1))
    return 0


def host(kernel: str, loops: int, out: Path | None) -> int:
    import kernels
    import kmod
    import qemu
    import rootfs
    (k,) = kernels.select(kernel)
    b = kernels.cached_build(k)
    if b is None:
        sys.exit(f"kernel {kernel} not built yet (vmtests/kernels.py)")
    rfs = rootfs.build()
    out = out or Path.home() / ".cache/kho-inspect/bench-trace" / \
        f"{time.strftime('%Y%m%d-%H%M%S')}-{k.name}"
    proj = out / "project"
    shutil.rmtree(proj, ignore_errors=True)
    shutil.copytree(ROOT, proj, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.core", "*.pyc"))
    init = proj / "vmtests" / "guest" / "init.sh"
    init.write_text(GUEST)
    init.chmod(0o755)
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy2(kmod.build_module(b), results / "kho_workload.ko")
    g = qemu.Guest(bzimage=b.bzimage, rootfs=rfs, project=proj,
                   kernel_dir=b.dir, results=results, workdir=out,
                   init_args=[f"{loops}"])
    try:
        g.wait_exit(1800)
    finally:
        g.kill()
    f = results / "bench.json"
    if not f.exists():
        print((results / "bench.out").read_text()
              if (results / "bench.out").exists() else g.console_tail())
        return 1
    doc = json.loads(f.read_text())
    base = min(doc["modes"]["untraced"]["best"],
               doc["modes"]["untraced again"]["best"])
    print(f"{doc['release']}: {loops} x the cheapest KHO call, ns in the "
          "kernel (best of 3)")
    print(f"{'mode':<18} {'ns/loop':>9} {'ratio':>6}  tracer")
    for name, _ in MODES:
        m = doc["modes"][name]
        if "error" in m:
            print(f"{name:<18} error: {m['error']}")
            continue
        print(f"{name:<18} {m['best'] / loops:>9.0f} {m['best'] / base:>6.2f}"
              f"  {m.get('tracer', '')}")
    print(out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kernel", nargs="?")
    ap.add_argument("--loops", type=int, default=20000)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.guest:
        return guest(int(a.kernel or a.loops))
    if not a.kernel:
        ap.error("KERNEL is required")
    return host(a.kernel, a.loops, a.out)


if __name__ == "__main__":
    sys.exit(main())

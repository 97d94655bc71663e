#!/usr/bin/env python3
"""Boot one vmtest kernel and run the walker's in-guest checks
(vmtests/guest/walker_checks.py) in both stages, keeping a vmcore of each
stage for host-side walker runs (tracker/check/status/incoming --core).

It uses the vmtest rig (vmtests/qemu.py, kernels.py, rootfs.py) unchanged:
the guest gets a copy of the project in which vmtests/guest/stage.py is
wrapped so that walker_checks.run() runs right before ``kexec -e`` (stage 1,
after test_kho preserved and kho-v1 finalized) and after stage 2, and each
stage asks for a memory dump.

usage: bench/vm_walker.py KERNEL [--out DIR]     (e.g. 7.3, 6.18)
Output: DIR/results/walker-stage{1,2}.result.json, DIR/stage{1,2}.vmcore,
and host-side command outputs DIR/host-*.txt.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "vmtests"))

WRAPPER = r'''
import os, sys, time
from pathlib import Path
sys.path.insert(0, "/project/vmtests/guest")
import stage_orig as st
sys.modules["stage"] = st      # walker_checks imports test_kho_truth from it
import walker_checks

def dump(n):
    req, done = Path(f"/results/walker-dump{n}-request"), Path(f"/results/walker-dump{n}-done")
    req.write_text(str(time.time()))
    t = time.monotonic()
    while not done.exists() and time.monotonic() - t < 300:
        time.sleep(0.5)

_run = st.run
def run(cmd, *a, **kw):
    if list(cmd[:2]) == ["kexec", "-e"]:
        st.log("walker checks, stage 1: " + str(walker_checks.run("/results")["status"]))
        dump(1)
    return _run(cmd, *a, **kw)
st.run = run
rc = st.main()
if "stage=2" in sys.argv:
    st.log("walker checks, stage 2: " + str(walker_checks.run("/results")["status"]))
    dump(2)
sys.exit(rc)
'''


def project_copy(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.core", "*.pyc"))
    g = dest / "vmtests" / "guest"
    (g / "stage.py").rename(g / "stage_orig.py")
    (g / "stage.py").write_text(WRAPPER)
    return dest


def host(out: Path, name: str, *args) -> None:
    r = subprocess.run([sys.executable, "-m", "kho_inspect", *args],
                       capture_output=True, text=True, cwd=str(ROOT))
    (out / f"host-{name}.txt").write_text(
        f"$ kho-inspect {' '.join(args)}\nrc={r.returncode}\n{r.stdout}"
        f"{r.stderr}")
    print(f"host {name}: rc={r.returncode}")


def main() -> int:
    import kernels
    import qemu
    import rootfs
    ap = argparse.ArgumentParser()
    ap.add_argument("kernel")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    (k,) = kernels.select(args.kernel)
    b = kernels.cached_build(k)
    if b is None:
        sys.exit(f"kernel {args.kernel} not built yet")
    rfs = rootfs.cached()
    if rfs is None:
        sys.exit("rootfs not built yet")
    out = args.out or Path.home() / ".cache/kho-inspect/walker-runs" / \
        f"{time.strftime('%Y%m%d-%H%M%S')}-{k.name}"
    out.mkdir(parents=True, exist_ok=True)
    proj = project_copy(out / "project")
    results = out / "results"
    g = qemu.Guest(bzimage=b.bzimage, rootfs=rfs, project=proj,
                   kernel_dir=b.dir, results=results, workdir=out,
                   init_args=["stage=1", "dump=0"])
    try:
        for n in (1, 2):
            req = results / f"walker-dump{n}-request"
            if not g.wait_for(req.exists, 900):
                print(f"no dump request {n}; console tail:\n"
                      + g.console_tail())
                break
            g.qmp().dump_guest_memory(out / f"stage{n}.vmcore")
            (results / f"walker-dump{n}-done").write_text("ok\n")
            print(f"dumped stage {n}")
        g.wait_exit(300)
    finally:
        g.kill()
    vm = str(b.vmlinux)
    for n in (1, 2):
        core = out / f"stage{n}.vmcore"
        if core.exists():
            for cmd in (("status",), ("tracker", "--limit", "5"),
                        ("check", "--views", "tracker,map"),
                        ("incoming", "--limit", "5")):
                host(out, f"stage{n}-{cmd[0]}", *cmd, "--core", str(core),
                     "-s", vm)
    for n in (1, 2):
        f = results / f"walker-stage{n}.result.json"
        if f.exists():
            r = json.loads(f.read_text())
            print(f"stage {n}: {r['status']}: {r['reason']}")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""S12, in the guest: a page run across a NUMA node boundary.

``stage=numa-1`` (cold boot, two nodes, node 0 ending 16 MiB past an
8192-page boundary): the kho_workload module preserves ``numa 8192``: 32
MiB from the 32 MiB-aligned page below node 0's end, with kho_preserve_pages
(7.1+ splits it where the node changes). ``map --json`` and ``check --next
$(uname -r) --json`` record what kho_inspect sees and predicts; then ``kexec
-s -l`` the same kernel with ``stage=numa-2`` and ``kexec -e``.

``stage=numa-2`` (KHO boot): the module is loaded and restores the run with
kho_restore_pages; its ``list`` then names the blocks of the run that still
hold KHO's marker (read by the module, in the kernel: ``unrestored=``), and
``check --incoming --json`` lists what is still preserved, with owners.

The guest judges nothing; vmtests/numa.py compares the prediction with what
the kernel did.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

RESULTS = Path("/results")
CTL = Path("/sys/kernel/debug/kho_workload/ctl")
LIST = Path("/sys/kernel/debug/kho_workload/list")
BZIMAGE = "/kernel/bzImage"
NR = 8192


def log(msg: str) -> None:
    print(f"numa: {msg}", flush=True)


def sh(cmd, timeout=300) -> subprocess.CompletedProcess:
    log("run: " + " ".join(map(str, cmd)))
    try:
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(cmd, -1, e.stdout or "",
                                           f"timeout after {timeout}s")


def cli(name: str, *args) -> dict:
    """Run the CLI, keep its JSON in *name*; rc and stderr's tail."""
    r = sh([sys.executable, "-m", "kho_inspect", *args])
    (RESULTS / name).write_text(r.stdout)
    return {"rc": r.returncode, "stderr": r.stderr.strip()[-300:]}


def save(name: str, obj) -> None:
    (RESULTS / name).write_text(json.dumps(obj, indent=1) + "\n")


def nodes() -> list[str]:
    base = Path("/sys/devices/system/node")
    return sorted(p.name for p in base.glob("node[0-9]*")) if base.is_dir() \
        else []


def stage1(out: dict) -> None:
    out["nodes"] = nodes()
    r = sh(["insmod", str(RESULTS / "kho_workload.ko")])
    out["insmod"] = {"rc": r.returncode, "stderr": r.stderr[-300:]}
    save("numa-1.json", out)
    if r.returncode:
        return
    try:
        CTL.write_text(f"numa {NR}")
        out["numa"] = "ok"
    except OSError as e:
        out["numa"] = f"error: {e}"
    out["list"] = LIST.read_text()
    out["map"] = cli("numa-1-map.json", "map", "--json")
    out["check"] = cli("numa-1-check.json", "check", "--next",
                       os.uname().release, "--json")
    save("numa-1.json", out)
    cmdline = Path("/proc/cmdline").read_text().strip()
    new = re.sub(r"\bstage=numa-1\b", "stage=numa-2", cmdline)
    # the preserved run is where the crash kernel area was: not again
    new = re.sub(r"\s*\bcrashkernel=\S+", "", new)
    r = sh(["kexec", "-s", "-l", BZIMAGE, f"--append={new}"])
    out["kexec_load"] = {"rc": r.returncode, "stderr": r.stderr[-300:]}
    save("numa-1.json", out)
    if r.returncode:
        return
    os.sync()
    r = sh(["kexec", "-e"])
    out["kexec_e"] = f"returned rc={r.returncode}: {r.stderr[-300:]}"
    save("numa-1.json", out)


def stage2(out: dict) -> None:
    out["nodes"] = nodes()
    r = sh(["insmod", str(RESULTS / "kho_workload.ko")])
    out["insmod"] = {"rc": r.returncode, "stderr": r.stderr[-300:]}
    out["list"] = LIST.read_text() if LIST.exists() else ""
    out["dmesg"] = [ln for ln in sh(["dmesg"]).stdout.splitlines()
                    if "kho_workload" in ln or "KHO" in ln][-20:]
    out["check"] = cli("numa-2-check.json", "check", "--incoming", "--json")
    save("numa-2.json", out)


def main(args: dict) -> None:
    out: dict = {"uname": os.uname().release, "stage": args.get("stage")}
    (stage1 if args.get("stage") == "numa-1" else stage2)(out)

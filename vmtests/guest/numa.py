"""S12, in the guest: a page run across a NUMA node boundary.

``stage=numa-1`` (cold boot, two nodes, node 0 ending 16 MiB past an
8192-page boundary): the kho_workload module preserves ``numa 8192``: 32
MiB from the 32 MiB-aligned page below node 0's end, with kho_preserve_pages
(7.1+ splits it where the node changes). ``map --json`` and ``check --next
$(uname -r) --json`` record what kho_inspect sees and predicts (and
guest/naive.py reads the map again, naively, against ``map``'s); then ``kexec
-s -l`` the same kernel with ``stage=numa-2`` and ``kexec -e``.

``stage=numa-2`` (KHO boot): the module is loaded and restores the run with
kho_restore_pages; its ``list`` then names the blocks of the run that still
hold KHO's marker (read by the module, in the kernel: ``unrestored=``), and
``check --incoming --json`` lists what is still preserved, with owners.

The guest judges nothing; vmtests/numa.py compares the prediction with what
the kernel did.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import naive
import own_boot
from own_boot import RESULTS, kexec_exec, kexec_load, next_cmdline, save
from trace_checks import insmod

CTL = Path("/sys/kernel/debug/kho_workload/ctl")
LIST = Path("/sys/kernel/debug/kho_workload/list")
NR = 8192


sh = functools.partial(own_boot.sh, "numa")


def cli(name: str, *args) -> dict:
    """Run the CLI, keep its JSON in *name*; rc and stderr's tail."""
    r = own_boot.cli("numa", *args)
    (RESULTS / name).write_text(r.stdout)
    return {"rc": r.returncode, "stderr": r.stderr.strip()[-300:]}


def nodes() -> list[str]:
    base = Path("/sys/devices/system/node")
    return sorted(p.name for p in base.glob("node[0-9]*")) if base.is_dir() \
        else []


def stage1(out: dict) -> None:
    out["nodes"] = nodes()
    out["insmod"] = insmod(RESULTS)         # None, or why not
    save("numa-1.json", out)
    if out["insmod"]:
        return
    try:
        CTL.write_text(f"numa {NR}")
        out["numa"] = "ok"
    except OSError as e:
        out["numa"] = f"error: {e}"
    out["list"] = LIST.read_text()
    out["map"] = cli("numa-1-map.json", "map", "--json")
    try:                    # the map read a second time, naively
        ranges = json.loads((RESULTS / "numa-1-map.json").read_text())
        out["naive"] = naive.check(ranges["ranges"])
    except (OSError, ValueError, KeyError) as e:
        out["naive"] = {"error": f"map --json: {e}"}
    out["check"] = cli("numa-1-check.json", "check", "--next",
                       os.uname().release, "--json")
    save("numa-1.json", out)
    # the preserved run is where the crash kernel area was: not again
    new = next_cmdline("numa-1", "numa-2", drop="crashkernel=")
    if kexec_load("numa", new, out, "numa-1.json"):
        kexec_exec("numa", out, "numa-1.json")


def stage2(out: dict) -> None:
    out["nodes"] = nodes()
    out["insmod"] = insmod(RESULTS)
    out["list"] = LIST.read_text() if LIST.exists() else ""
    out["dmesg"] = [ln for ln in sh(["dmesg"]).stdout.splitlines()
                    if "kho_workload" in ln or "KHO" in ln][-20:]
    out["check"] = cli("numa-2-check.json", "check", "--incoming", "--json")
    save("numa-2.json", out)


def main(args: dict) -> None:
    out: dict = {"uname": os.uname().release, "stage": args.get("stage")}
    (stage1 if args.get("stage") == "numa-1" else stage2)(out)

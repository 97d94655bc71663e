"""S10, in the guest: a KHO kexec from one kernel release into another.

``stage=cross-a`` (kernel A, cold boot): the kho_workload module (A's
build) preserves folios and a 2048-page run, kho-v1 finalizes, ``map
--json`` records A's map, ``check --next-vmlinux /results/next-vmlinux``
says what kernel B will do with it; then ``kexec -s -l
/results/next-bzImage`` with ``stage=cross-b``, ``check --json`` with no
--next (the release read from the loaded image), and ``kexec -e``.

``stage=cross-b`` (kernel B, booted by A): records what B did, without
judging: its release, the KHO and test_kho lines of dmesg, whether debugfs
has ``in/fdt``, and ``incoming -s /results/next-vmlinux --json`` (B's own
DWARF: /kernel is A's), whose markers the host compares with A's map.

The host (vmtests/cross.py) judges: A's check must have predicted the
incompatibility, and B's behaviour is recorded against the prediction.
"""

from __future__ import annotations

import functools
import os
import re
import time
from pathlib import Path

import own_boot
from own_boot import RESULTS, kexec_exec, kexec_load, next_cmdline, save

NEXT_BZIMAGE = RESULTS / "next-bzImage"
NEXT_VMLINUX = RESULTS / "next-vmlinux"
FINALIZE = Path("/sys/kernel/debug/kho/out/finalize")
CTL = Path("/sys/kernel/debug/kho_workload/ctl")


sh = functools.partial(own_boot.sh, "cross")
cli = functools.partial(own_boot.cli, "cross")


def stage_a(args: dict) -> None:
    out: dict = {"uname": os.uname().release}
    save("cross-a.json", out)
    r = sh(["insmod", str(RESULTS / "kho_workload.ko")])
    out["insmod"] = r.returncode
    if r.returncode == 0:
        for cmd in ("folio 0 2", "folio 3 1", "pages 2048 2048"):
            try:
                CTL.write_text(cmd)
            except OSError as e:
                out.setdefault("ctl_errors", []).append(f"{cmd}: {e}")
    if FINALIZE.exists():
        FINALIZE.write_text("1\n")
        out["finalized"] = True
    r = cli("map", "--json")
    out["map_rc"] = r.returncode
    (RESULTS / "cross-a-map.json").write_text(r.stdout)
    r = cli("check", "--next-vmlinux", str(NEXT_VMLINUX), "--json")
    out["check_rc"] = r.returncode
    out["check_stderr"] = r.stderr[-300:]
    (RESULTS / "cross-a-check.json").write_text(r.stdout)
    # B may die before its console is up (reading A's map): print early
    new = next_cmdline("cross-a", "cross-b",
                       add="earlyprintk=serial,ttyS0,115200")
    if not kexec_load("cross", new, out, "cross-a.json", str(NEXT_BZIMAGE)):
        return
    r = cli("check", "--json")          # the next kernel: the loaded image
    out["check_auto_rc"] = r.returncode
    out["check_auto_stderr"] = r.stderr[-300:]
    (RESULTS / "cross-a-check-auto.json").write_text(r.stdout)
    out["kexec_at"] = time.time()
    kexec_exec("cross", out, "cross-a.json")


def stage_b(args: dict) -> None:
    out: dict = {"uname": os.uname().release}
    msgs = sh(["dmesg"]).stdout
    (RESULTS / "cross-b-dmesg.txt").write_text(msgs)
    out["kho_lines"] = [ln for ln in msgs.splitlines()
                        if re.search(r"KHO|kho|test_kho|kexec", ln)][:40]
    out["in_fdt"] = Path("/sys/kernel/debug/kho/in/fdt").exists()
    r = cli("incoming", "-s", str(NEXT_VMLINUX), "--scan-limit", "0",
            "--json")
    out["incoming_rc"] = r.returncode
    out["incoming_stderr"] = r.stderr.strip()[-300:]
    (RESULTS / "cross-b-incoming.json").write_text(r.stdout)
    save("cross-b.json", out)


def main(args: dict) -> None:
    (stage_a if args.get("stage") == "cross-a" else stage_b)(args)

"""S10: a KHO kexec across kernel releases, on the host side.

One boot per pair: kernel A (cold) builds KHO state and runs ``check
--next-vmlinux`` on kernel B's vmlinux, loads B (``kexec -s -l``) and runs
``check`` again with no --next (the release read from the loaded image:
it must be B's, flagged the same), then KHO-kexecs into B, which records
what it did (guest/cross.py). The verdict: A's check must predict
the incompatibility :data:`PAIRS` names (written from the ABI text: 6.17
writes 512-byte kho-v1 bitmaps, 6.18 reads 4096-byte ones under the same
compatible; 7.3 accepts only "kho-v4", from 6.18 or from 6.17), and B's behaviour must show it:

* ``next-bitmap``: B marks preserved blocks that A's map does not hold, or
  misses blocks it holds (B's markers, walked with B's DWARF, against A's
  map) - or B does not come up at all, which is recorded too;
* ``next-compatible``: B does not take the handover (no incoming FDT, or
  ``incoming`` says this was not a KHO boot).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import kmod
import qemu
from results import read_json

#: (from, to) -> the check id that must flag the pair before the kexec
PAIRS = {("6.17", "6.18"): "next-bitmap",
         ("6.18", "7.3"): "next-compatible",
         # the CI set's pair (kernels.CI_SET): kho-v1 into a kho-v4 kernel
         ("6.17", "7.3"): "next-compatible"}
TIMEOUT = 900


def _link(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)           # the cache and the run dir share a disk
    except OSError:
        shutil.copy2(src, dst)


def blocks(ranges) -> set:
    out = set()
    for r in ranges or []:
        for i in range(r["count"]):
            out.add((r["phys"] + i * (4096 << r["order"]), r["order"]))
    return out


def boot(a, b, rootfs: Path, project: Path, workdir: Path
         ) -> tuple[str | None, str]:
    """Boot build *a* with ``stage=cross-a``, B's bzImage, vmlinux and
    nothing else in the results share; (why it did not end by itself, or
    None; the console's tail)."""
    results = workdir / "results"
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy2(kmod.build_module(a), results / "kho_workload.ko")
    _link(b.bzimage, results / "next-bzImage")
    _link(b.vmlinux, results / "next-vmlinux")
    g = qemu.Guest(bzimage=a.bzimage, rootfs=rootfs, project=project,
                   kernel_dir=a.dir, results=results, workdir=workdir,
                   init_args=["stage=cross-a"])
    try:
        rc = g.wait_exit(TIMEOUT)
        why = None if rc is not None else f"timeout after {TIMEOUT}s"
    finally:
        g.kill()
    for name in ("next-bzImage", "next-vmlinux"):
        (results / name).unlink(missing_ok=True)
    return why, g.console_tail(30)


def judge(workdir: Path, pair: tuple[str, str], why: str | None,
          tail: str) -> tuple[str, str]:
    """(status, reason) of one pair."""
    res = workdir / "results"
    want = PAIRS[pair]
    a = read_json(res / "cross-a.json")
    if not a:
        return "fail", f"kernel A wrote nothing ({why or 'QEMU exited'})"
    chk = read_json(res / "cross-a-check.json")
    if chk is None:
        return "fail", (f"A: check --next-vmlinux rc={a.get('check_rc')}: "
                        f"{a.get('check_stderr', '')[-200:]}")
    ids = {f["id"] for f in chk["findings"]}
    if want not in ids or a.get("check_rc") != 1:
        return "fail", (f"A ({a['uname']}): check --next {chk.get('next')} "
                        f"rc={a.get('check_rc')} did not flag {want} "
                        f"(found {sorted(i for i in ids if 'next' in i)})")
    said = next(f["message"] for f in chk["findings"] if f["id"] == want)
    if a.get("kexec_load", {}).get("rc"):
        return "fail", f"A: kexec -l failed: {a['kexec_load']['stderr']}"
    auto = read_json(res / "cross-a-check-auto.json") or {}
    got = {f["id"] for f in auto.get("findings", [])}
    if (auto.get("next"), auto.get("next_source")) != (
            chk.get("next"), "loaded kexec image") or want not in got:
        return "fail", (f"A: check with B loaded, no --next: next "
                        f"{auto.get('next')} ({auto.get('next_source')}) "
                        f"rc={a.get('check_auto_rc')} flagged "
                        f"{sorted(i for i in got if 'next' in i)}; "
                        f"--next-vmlinux said {chk.get('next')}, {want} "
                        f"{a.get('check_auto_stderr', '')[-200:]}")
    bj = read_json(res / "cross-b.json")
    head = (f"A {a['uname']} check: {want} ({said[:90]}...; the same from "
            f"the loaded image, {auto['next']})")
    if bj is None:
        # B died before userspace: its console says how (earlyprintk)
        try:
            con = (workdir / "console.log").read_text(errors="replace")
        except OSError:
            con = tail
        con = con.split("Starting new kernel", 1)[-1]
        key = [ln.strip() for ln in con.splitlines() if re.search(
            r"BUG:|RIP:|Kernel panic|KHO:", ln)][:4]
        if not key:
            key = [ln for ln in con.splitlines() if ln.strip()][-3:]
        return "pass", (f"{head}; B never reached userspace "
                        f"({why or 'QEMU exited'}): {' | '.join(key)}")
    got = f"B {bj['uname']}"
    if want == "next-compatible":
        took = bj["in_fdt"] or bj["incoming_rc"] == 0
        kho = [ln.split("]", 1)[-1].strip() for ln in bj["kho_lines"]
               if "KHO" in ln][:2]
        if took:
            return "fail", (f"{head}; yet {got} took the handover "
                            f"(in/fdt {bj['in_fdt']}, incoming rc "
                            f"{bj['incoming_rc']})")
        return "pass", (f"{head}; {got} refused it: no incoming FDT; dmesg: "
                        + (" | ".join(kho) or "no KHO line"))
    # next-bitmap: B's markers against A's map
    amap = read_json(res / "cross-a-map.json")
    inc = read_json(res / "cross-b-incoming.json")
    if amap is None or inc is None or (inc.get("scan") or {}).get(
            "markers") is None:
        return "fail", (f"{head}; {got}: cannot compare (A map "
                        f"{amap is not None}, B incoming rc "
                        f"{bj['incoming_rc']}: {bj['incoming_stderr']})")
    mine = blocks(amap["ranges"])
    theirs = blocks(inc["scan"]["markers"])
    extra, lost = theirs - mine, mine - theirs
    if not extra and not lost:
        return "fail", (f"{head}; but {got} marked exactly A's "
                        f"{len(mine)} blocks: the bitmap size did not matter")
    return "pass", (f"{head}; {got} marked {len(theirs)} blocks for A's "
                    f"{len(mine)}: {len(extra)} A never preserved, "
                    f"{len(lost)} of A's missing (read 512-byte bitmaps "
                    "as 4096-byte ones)")


def run_pair(a_build, b_build, pair, rootfs: Path, project: Path,
             workdir: Path) -> tuple[str, str, float]:
    t = time.monotonic()
    why, tail = boot(a_build, b_build, rootfs, project, workdir)
    st, reason = judge(workdir, pair, why, tail)
    (workdir / "verdict.json").write_text(json.dumps(
        {"status": st, "reason": reason, "console_tail": tail}, indent=1))
    return st, reason, round(time.monotonic() - t, 1)

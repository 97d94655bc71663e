"""S10: a KHO kexec across kernel releases, on the host side.

One boot per pair: kernel A (cold) builds KHO state and runs ``check
--next-vmlinux`` on kernel B's vmlinux, loads B (``kexec -s -l``) and runs
``check`` again with no --next (the release read from the loaded image:
it must be B's, flagged the same), then KHO-kexecs into B, which records
what it did (guest/cross.py). The verdict (:func:`verdict`, no I/O): A's
check must predict the incompatibility :data:`PAIRS` names (written from
the ABI text: 6.17 writes 512-byte kho-v1 bitmaps, 6.18 reads 4096-byte
ones under the same compatible; 7.3 accepts only "kho-v4", from 6.18 or
from 6.17), and B's console must show that very failure - B not coming up
is never enough:

* ``next-bitmap``: B takes the handover (kho_populate()'s "found kexec
  handover data"), then dies with an oops or WARN in its restore path
  (:data:`RESTORE_PATH`), or comes up and marks preserved blocks that A's
  map does not hold, or misses blocks it holds (B's markers, walked with
  B's DWARF, against A's map);
* ``next-compatible``: B's kho_populate() refuses the handover ("handover
  FDT ... is incompatible with" the compatible A's check named, "disabling
  KHO revival") and B comes up with no incoming FDT (``incoming`` says this
  was not a KHO boot).
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


# -- B's console: what the predicted failure must show (pr_fmt "KHO: " in
# 6.18's kernel/kexec_handover.c and 7.3's kernel/liveupdate/
# kexec_handover.c)

#: A's console ends, B's begins: kernel_kexec() (kernel/kexec_core.c)
#: prints "kexec_core: Starting new kernel" just before the jump
KEXEC = "Starting new kernel"
#: kho_populate(), pr_info once B has taken the handover's FDT and scratch:
#: "found kexec handover data. Will skip init for some devices" (6.18,
#: runs 20261207-203827 and 20261207-232825, cross-6.17-6.18), "found
#: kexec handover data." (7.3)
TOOK = re.compile(r"KHO: found kexec handover data\b")
#: kho_populate(), when fdt_node_check_compatible() rejects the root:
#: pr_warn("setup: handover FDT (0x%llx) is incompatible with '%s': %d")
#: (7.3 and 6.18; every cross-6.1x-7.3 run: "... with 'kho-v4': 1")
REFUSED = re.compile(r"KHO: setup: handover FDT \(0x[0-9a-f]+\) is "
                     r"incompatible with '([^']*)'")
#: kho_populate()'s last word when it did not take the handover:
#: pr_warn("disabling KHO revival\n") (7.3; 6.18 adds ": %d")
GAVE_UP = re.compile(r"KHO: disabling KHO revival")
#: the first line of an oops or WARN report: "BUG: unable to handle page
#: fault" (arch/x86/mm/fault.c, show_fault_oops()), "Oops:"
#: (arch/x86/kernel/dumpstack.c, __die_header()), "WARNING:"
#: (kernel/panic.c, __warn()), "general protection fault" (GPFSTR,
#: arch/x86/kernel/traps.c)
REPORT = re.compile(r"BUG: |Oops: |WARNING: |general protection fault")
END_REPORT = "---[ end trace"
#: 6.18's restore path (kernel/kexec_handover.c): kho_memory_init() ->
#: kho_mem_deserialize() -> deserialize_bitmap(), which stores
#: (KHO_PAGE_MAGIC, order) in page->private for every bit it reads
#: (inlined: the oops of runs 20261207-203827 and 20261207-232825,
#: cross-6.17-6.18, is "RIP: 0010:kho_memory_init+0x22b/0x530", storing
#: 0x4b484f50_00000005 at page + 0x28); kho_restore_folio() and
#: kho_restore_pages() -> kho_restore_page(), whose WARN_ON_ONCE fires on
#: a page without the magic (one the misread bitmaps did not mark)
RESTORE_PATH = frozenset({"kho_memory_init", "kho_mem_deserialize",
                          "deserialize_bitmap", "kho_restore_page",
                          "kho_restore_folio", "kho_restore_pages"})
#: a stack frame: "kho_memory_init+0x22b/0x530", "kw_restore.constprop.0+"
FRAME = re.compile(r"(?<![\w.])(\w+)(?:\.\w+)*\+0x[0-9a-f]+/0x[0-9a-f]+")


def b_console(console: str) -> str:
    """B's part of *console*: what follows A's "Starting new kernel"; ""
    when A never got there."""
    _, sep, rest = console.partition(KEXEC)
    return rest if sep else ""


def _lines(console: str) -> list[str]:
    return [ln.strip() for ln in console.splitlines() if ln.strip()]


def last_lines(console: str, n: int = 4) -> str:
    """The last *n* lines of *console* that are not blank, joined by " | "
    (or says there are none)."""
    got = _lines(console)[-n:]
    return " | ".join(got) if got else "nothing (no console from B)"


def _first(lines: list[str], rx: re.Pattern, start: int = 0):
    """(index, match) of the first of *lines* from *start* matching *rx*,
    or (None, None)."""
    for i in range(start, len(lines)):
        m = rx.search(lines[i])
        if m:
            return i, m
    return None, None


def restore_oops(lines: list[str]) -> list[str]:
    """The first line of the first oops or WARN report in *lines* with a
    frame in :data:`RESTORE_PATH` (not a "?" one), and that frame's line;
    [] when there is none."""
    for i, ln in enumerate(lines):
        if not REPORT.search(ln):
            continue
        for f in lines[i:i + 60]:
            if f.startswith(END_REPORT):
                break
            if f.startswith("?"):
                continue
            if any(m.group(1) in RESTORE_PATH for m in FRAME.finditer(f)):
                return [ln] if f is ln else [ln, f]
    return []


def verdict(pair: tuple[str, str], a: dict | None, b: dict | None,
            console: str, why: str | None = None) -> tuple[str, str]:
    """(status, reason) of one pair, from what kernel A recorded (*a*:
    cross-a.json, with A's documents under "check", "check_auto" and
    "map"; None: nothing), what kernel B recorded (*b*: cross-b.json, with
    its "incoming" document; None: B never reached userspace), B's console
    (:func:`b_console`) and why QEMU did not exit by itself (*why*).

    A pass needs A's check to predict :data:`PAIRS`' id and B's console to
    show that very failure: never only "B did not come up"."""
    want = PAIRS[pair]
    if not a:
        return "fail", f"kernel A wrote nothing ({why or 'QEMU exited'})"
    chk = a.get("check")
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
    auto = a.get("check_auto") or {}
    got = {f["id"] for f in auto.get("findings", [])}
    if (auto.get("next"), auto.get("next_source")) != (
            chk.get("next"), "loaded kexec image") or want not in got:
        return "fail", (f"A: check with B loaded, no --next: next "
                        f"{auto.get('next')} ({auto.get('next_source')}) "
                        f"rc={a.get('check_auto_rc')} flagged "
                        f"{sorted(i for i in got if 'next' in i)}; "
                        f"--next-vmlinux said {chk.get('next')}, {want} "
                        f"{a.get('check_auto_stderr', '')[-200:]}")
    if a.get("kexec_e"):
        return "fail", f"A: kexec -e {a['kexec_e']}"
    head = (f"A {a['uname']} check: {want} ({said[:90]}...; the same from "
            f"the loaded image, {auto['next']})")
    lines = _lines(console)
    ver = re.search(r"Linux version (\S+)", console)
    name = f"B {b['uname'] if b else ver.group(1) if ver else '?'}"
    came = ("reached userspace" if b is not None else
            f"never reached userspace ({why or 'QEMU exited'})")
    ends = f"B's console ends: {last_lines(console)}"
    i, took = _first(lines, TOOK)
    if want == "next-compatible":
        return _refused(head, said, name, came, ends, b, lines, took)
    return _misread(head, name, came, ends, a, b, lines, i, why)


def _refused(head, said, name, came, ends, b, lines, took):
    """:func:`verdict` for next-compatible: B refuses the handover in
    kho_populate() and boots without it."""
    j, no = _first(lines, REFUSED)
    _, gave = _first(lines, GAVE_UP, j or 0)
    up = b is not None
    if took or up and (b.get("in_fdt") or b.get("incoming_rc") == 0):
        return "fail", (f"{head}; yet {name} took the handover ("
                        + (f"console: {took.string}; " if took else "")
                        + (f"in/fdt {b.get('in_fdt')}, incoming rc "
                           f"{b.get('incoming_rc')}" if up else came) + ")")
    if no is None or gave is None:
        return "fail", (f"{head}; but {name} {came} with no refusal from "
                        "kho_populate() on its console ('KHO: setup: "
                        "handover FDT (...) is incompatible with ...', then "
                        f"'KHO: disabling KHO revival'); {ends}")
    named = re.search(r"accepts only '([^']*)'", said)
    if named and no.group(1) != named.group(1):
        return "fail", (f"{head}; but {name} refused it as incompatible "
                        f"with {no.group(1)!r}, not {named.group(1)!r}: "
                        f"{no.string}")
    if not up:
        return "fail", (f"{head}; {name} refused it ({no.string}) but "
                        f"then {came}: a refused handover is a cold boot; "
                        f"{ends}")
    return "pass", (f"{head}; {name} refused it: no incoming FDT; "
                    f"console: {no.string} | {gave.string}")


def _misread(head, name, came, ends, a, b, lines, i, why):
    """:func:`verdict` for next-bitmap: B takes the handover and reads the
    wrong bitmaps: it dies in its restore path, or marks other blocks."""
    _, no = _first(lines, REFUSED)
    if no is not None:
        return "fail", (f"{head}; but {name} refused the handover, which it "
                        f"should have taken and misread: {no.string}")
    if i is None:
        return "fail", (f"{head}; but {name} {came} without taking the "
                        "handover (no 'KHO: found kexec handover data' from "
                        f"kho_populate()); {ends}")
    took = lines[i]
    if b is None:
        oops = restore_oops(lines[i + 1:])
        if not oops:
            return "fail", (f"{head}; {name} took the handover ({took}) "
                            f"but {came} with no oops or WARN in its "
                            f"restore path ({', '.join(sorted(RESTORE_PATH))}"
                            f"); {ends}")
        return "pass", (f"{head}; {name} took the handover and died "
                        f"reading it ({why or 'QEMU exited'}): {took} | "
                        + " | ".join(oops))
    # B came up: its markers against A's map
    amap, inc = a.get("map"), b.get("incoming")
    if amap is None or inc is None or (inc.get("scan") or {}).get(
            "markers") is None:
        return "fail", (f"{head}; {name}: cannot compare (A map "
                        f"{amap is not None}, B incoming rc "
                        f"{b.get('incoming_rc')}: {b.get('incoming_stderr')})")
    mine = blocks(amap["ranges"])
    theirs = blocks(inc["scan"]["markers"])
    extra, lost = theirs - mine, mine - theirs
    if not extra and not lost:
        return "fail", (f"{head}; but {name} marked exactly A's "
                        f"{len(mine)} blocks: the bitmap size did not matter")
    return "pass", (f"{head}; {name} took the handover ({took}) and marked "
                    f"{len(theirs)} blocks for A's {len(mine)}: "
                    f"{len(extra)} A never preserved, {len(lost)} of A's "
                    "missing (read 512-byte bitmaps as 4096-byte ones)")


def recorded(workdir: Path) -> tuple[dict | None, dict | None]:
    """(what A recorded, what B recorded) in *workdir*/results, as
    :func:`verdict` takes them."""
    res = workdir / "results"
    a = read_json(res / "cross-a.json")
    if a is not None:
        a = {**a, "check": read_json(res / "cross-a-check.json"),
             "check_auto": read_json(res / "cross-a-check-auto.json"),
             "map": read_json(res / "cross-a-map.json")}
    b = read_json(res / "cross-b.json")
    if b is not None:
        b = {**b, "incoming": read_json(res / "cross-b-incoming.json")}
    return a, b


def judge(workdir: Path, pair: tuple[str, str], why: str | None,
          tail: str) -> tuple[str, str]:
    """(status, reason) of one pair, from its results and B's console
    (console.log; *tail* when it cannot be read)."""
    try:
        con = (workdir / "console.log").read_text(errors="replace")
    except OSError:
        con = tail
    return verdict(pair, *recorded(workdir), b_console(con), why)


def run_pair(a_build, b_build, pair, rootfs: Path, project: Path,
             workdir: Path) -> tuple[str, str, float]:
    t = time.monotonic()
    why, tail = boot(a_build, b_build, rootfs, project, workdir)
    st, reason = judge(workdir, pair, why, tail)
    (workdir / "verdict.json").write_text(json.dumps(
        {"status": st, "reason": reason, "console_tail": tail}, indent=1))
    return st, reason, round(time.monotonic() - t, 1)

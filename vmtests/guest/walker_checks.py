"""In-guest checks of the drgn walker, for the vmtest stage runner.

``run(results_dir) -> dict`` is meant to be called inside the guest:

* stage 1 (cold boot), after test_kho preserved its folios and, for kho-v1,
  after finalize: the walker's tracker == the reference decoder's map of the
  outgoing FDT (``check --views tracker,map``, in process and through the
  CLI), and every folio test_kho itself lists is in the tracker at its
  order. Saves what the next kernel must find to
  ``results_dir/walker-stage1.json``.
* stage 2 (booted by KHO kexec): ``kho_in.fdt_phys`` is the FDT stage 1 was
  going to hand over, and the head pages still carrying a KHO marker are the
  stage-1 map minus what test_kho restored: no marker outside the stage-1
  map, no restored test_kho folio still marked, test_kho's own FDT folio
  (which it never restores) still marked. S5 runs before any client but the
  built-in test_kho restores, so every other block of the stage-1 map must
  still be marked: a block neither marked nor restored by test_kho (its
  folios and, 6.18+, its vmalloc'd info array as the kernel's vm_struct
  and kho_vmalloc chunks list them) fails (:func:`judge_markers`).

Returns ``{"status": "pass"|"fail"|"skip", "reason": str, ...details}`` and
writes the same to ``results_dir/walker-stage<N>.result.json``. "skip" comes
only with ``"lacks"``, the kernel feature missing (stage 2 on 6.16/6.17:
no KHO_PAGE_MAGIC, so the markers cannot be enumerated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
VMLINUX = "/kernel/vmlinux"
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(HERE))


def _program():
    import drgn
    prog = drgn.Program()
    prog.set_kernel()
    vm = VMLINUX if os.path.exists(VMLINUX) else None
    from kho_inspect.memory import load_debug_info
    load_debug_info(prog, vm)
    return prog


def _truth(prog) -> dict | None:
    """test_kho's own folio list (stage.test_kho_truth), or None."""
    try:
        from stage import test_kho_truth
        return test_kho_truth(prog)
    except Exception as e:     # the ground truth is optional here
        return {"error": f"{type(e).__name__}: {e}", "folios": []}


def _naive_vs(prog, tb: set, fails: list, info: dict, v1=True) -> None:
    """The tracker (*tb*) must be what the naive reader finds in the map
    (where it can read it: guest/naive.py; kho-v1 only with *v1*)."""
    import naive
    try:
        nb = naive.outgoing_blocks(prog, v1=v1)
    except Exception as e:
        fails.append(f"naive reader: {type(e).__name__}: {e}")
        return
    if nb is None:
        return
    info["naive_blocks"] = len(nb)
    if nb != tb:
        fails.append(f"tracker != naive reader: {len(tb - nb)} only "
                     f"in the tracker ({_fmt(tb - nb)}), {len(nb - tb)} only "
                     f"in the naive reading ({_fmt(nb - tb)})")


def _blocks(runs) -> set:
    from kho_inspect.ranges import blocks
    return set(blocks(runs))


def _cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kho_inspect", *args],
                          capture_output=True, text=True, timeout=timeout,
                          cwd=str(PROJECT))


def _fmt(blocks, n=5) -> str:
    return ", ".join(f"{p:#x}/{o}" for p, o in sorted(blocks)[:n]) + \
        (" ..." if len(blocks) > n else "")


def stage1(prog, results: Path) -> dict:
    from kho_inspect.check import compare_views
    from kho_inspect.walk import outgoing_fdt_phys, outgoing_tracker
    from kho_inspect.walk.views import status_view
    fails, info = [], {}
    t0 = time.monotonic()
    tracker = outgoing_tracker(prog)
    info["walk_s"] = round(time.monotonic() - t0, 3)
    info["layout"] = f"{tracker.layout} {tracker.expression}"
    info["bitmap_bytes"] = tracker.bitmap_bytes
    info["finalized"] = tracker.finalized
    tb = _blocks(tracker.runs)
    info["tracker_blocks"] = len(tb)
    _naive_vs(prog, tb, fails, info)
    # tracker == map (in process)
    res = compare_views(prog, ["tracker", "map"])
    if not res.ok:
        fails.append(f"tracker != map: {len(res.differences)} differences, "
                     f"e.g. {res.differences[0]}")
    info["check_differences"] = [str(d) for d in res.differences[:20]]
    # the same through the CLI, and tracker --json vs map --json
    r = _cli("check", "--views", "tracker,map")
    info["cli_check_rc"] = r.returncode
    if r.returncode != 0:
        fails.append(f"kho-inspect check rc={r.returncode}: "
                     + (r.stderr.strip() or r.stdout.strip())[-200:])
    tj, mj = _cli("tracker", "--json"), _cli("map", "--json")
    if tj.returncode or mj.returncode:
        fails.append(f"tracker/map --json rc={tj.returncode}/"
                     f"{mj.returncode}: {(tj.stderr + mj.stderr)[-200:]}")
    else:
        from kho_inspect.ranges import runs_from_json
        tr = json.loads(tj.stdout)
        mp = json.loads(mj.stdout)
        if _blocks(runs_from_json(tr["ranges"])) != \
                _blocks(runs_from_json(mp["ranges"])):
            fails.append("tracker --json ranges != map --json ranges")
        if tr["bitmap_bytes"] != mp["bitmap_bytes"]:
            fails.append(f"bitmap_bytes: tracker {tr['bitmap_bytes']} vs "
                         f"map {mp['bitmap_bytes']}")
    # test_kho's own list
    truth = _truth(prog)
    folios = {(f["phys"], f["order"]) for f in truth.get("folios", [])}
    info["test_kho_folios"] = len(folios)
    if truth.get("error"):
        info["truth_error"] = truth["error"]
    missing = folios - tb
    if not folios:
        fails.append("no test_kho folio list to compare with ("
                     + truth.get("error", "test_kho preserved nothing") + ")")
    if missing:
        fails.append(f"{len(missing)} test_kho folios not in the tracker: "
                     f"{_fmt(missing)}")
    # status must render
    try:
        doc = status_view(prog)
        info["status_problems"] = doc["problems"]
        if not doc["enabled"]:
            fails.append("status: KHO not enabled")
    except Exception as e:
        fails.append(f"status_view: {type(e).__name__}: {e}")
    # test_kho restores its data folios (and its vmalloc'd info array) in
    # the next kernel, never its own FDT folio
    data = {(f["phys"], f["order"]) for f in truth.get("folios", [])
            if f.get("what") != "fdt"}
    vm = {(v["phys"], v["order"]) for v in truth.get("vmalloc", [])}
    info["test_kho_vmalloc"] = len(vm)
    if vm - tb:
        fails.append(f"{len(vm - tb)} blocks of test_kho's vmalloc'd array "
                     f"not in the tracker: {_fmt(vm - tb)}")
    saved = {"release": os.uname().release,
             "fdt_phys": outgoing_fdt_phys(prog),
             "blocks": sorted(tb), "test_kho": sorted(data),
             "test_kho_fdt": sorted(folios - data),
             "test_kho_vmalloc": sorted(vm)}
    (results / "walker-stage1.json").write_text(json.dumps(saved))
    return {"status": "fail" if fails else "pass",
            "reason": "; ".join(fails) or
            f"tracker == map ({len(tb)} blocks)"
            + (" == naive reader" if "naive_blocks" in info else "")
            + f", which holds all {len(folios)} test_kho folios", **info}


def stage2(prog, results: Path) -> dict:
    from kho_inspect.walk import incoming_state, preserved_markers
    saved_path = results / "walker-stage1.json"
    if not saved_path.exists():
        return {"status": "fail", "reason": "no walker-stage1.json from "
                "stage 1"}
    saved = json.loads(saved_path.read_text())
    pre = {tuple(b) for b in saved["blocks"]}
    restored = {tuple(b) for b in saved["test_kho"]}
    fails, info = [], {}
    st = incoming_state(prog)
    info["kho_in"] = st.as_json()
    if st.fdt_phys != saved["fdt_phys"]:
        fails.append(f"kho_in.fdt_phys {st.fdt_phys:#x} != stage-1 "
                     f"outgoing FDT {saved['fdt_phys']:#x}")
    if st.previous_release is not None and \
            st.previous_release != saved["release"]:
        fails.append(f"kho_in.previous_release {st.previous_release!r} != "
                     f"{saved['release']!r}")
    # this kernel's own outgoing map (radix kernels), read twice
    from kho_inspect.walk import outgoing_tracker
    _naive_vs(prog, _blocks(outgoing_tracker(prog).runs), fails, info,
              v1=False)
    t0 = time.monotonic()
    scan = preserved_markers(prog, max_pages=None)
    info["scan_s"] = round(time.monotonic() - t0, 3)
    info["scan"] = {k: v for k, v in scan.as_json().items()
                    if k != "markers"}
    if scan.markers is None:
        if fails:
            return {"status": "fail", "reason": "; ".join(fails + [scan.note]),
                    **info}
        return {"status": "skip", "reason": scan.note,
                "lacks": "KHO_PAGE_MAGIC in page->private (6.18+)", **info}
    marked = _blocks(scan.markers)
    more, why = judge_markers(saved, marked, scan.magic)
    fails += more
    info.update(why)
    return {"status": "fail" if fails else "pass",
            "reason": "; ".join(fails) or
            f"markers ({len(marked)}, incl. test_kho's FDT) == stage-1 map "
            f"({len(pre)}) minus what test_kho restored ({len(restored)} "
            f"folios, {why['test_kho_vmalloc']} blocks of its vmalloc'd "
            f"array; the root FDT {why['root_fdt']})" + (f"; own map ({info['naive_blocks']} blocks) == naive "
                         "reader" if "naive_blocks" in info else ""),
            **info}


def judge_markers(saved: dict, marked: set, magic: bool = True
                  ) -> tuple[list[str], dict]:
    """S5 stage 2's judgement of the head pages still marked preserved.

    *saved* is stage 1's ``walker-stage1.json`` (``blocks``: the stage-1
    map; ``test_kho``: its data folios; ``test_kho_fdt``: its FDT folio,
    never restored; ``test_kho_vmalloc``: its vmalloc'd array, restored);
    *marked* the ``(phys, order)`` blocks whose head page still carries
    KHO's marker, read before any client but the built-in test_kho ran;
    *magic* False where markers are a bare order (6.16/6.17: order-0
    blocks are invisible, so they are left out on both sides). The marked
    set must be exactly the stage-1 map minus what test_kho restored, give
    or take the root FDT's page (``fdt_phys``), which KHO itself restores
    at boot in 6.18 (kho_memory_init(): kho_restore_folio(kho_in.fdt_phys))
    and leaves marked in 6.19+. Returns (the failures, details).
    """
    pre = {tuple(b) for b in saved["blocks"]}
    restored = {tuple(b) for b in saved["test_kho"]}
    vm = {tuple(b) for b in saved.get("test_kho_vmalloc", [])}
    kept = {tuple(b) for b in saved.get("test_kho_fdt", [])}
    root = {b for b in pre if b[0] == saved.get("fdt_phys")}
    marked_root = marked & root
    marked = marked - root
    pre = pre - root
    if not magic:
        pre, restored, vm, kept = ({b for b in s if b[1] > 0}
                                   for s in (pre, restored, vm, kept))
    fails = []
    extra = marked - pre
    if extra:
        fails.append(f"{len(extra)} marked blocks not in the stage-1 map: "
                     f"{_fmt(extra)}")
    still = marked & restored
    if still:
        fails.append(f"{len(still)} test_kho folios still marked (not "
                     f"restored): {_fmt(still)}")
    if marked & vm:
        fails.append(f"{len(marked & vm)} blocks of test_kho's vmalloc'd "
                     f"array still marked (not restored): {_fmt(marked & vm)}")
    if kept - marked:
        fails.append(f"test_kho's FDT folio (never restored) is not marked: "
                     f"{_fmt(kept - marked)}")
    lost = pre - restored - vm - kept - marked
    if lost:
        fails.append(f"{len(lost)} blocks of the stage-1 map neither "
                     f"marked nor restored by test_kho: {_fmt(lost)}")
    return fails, {"markers": len(marked | marked_root),
                   "test_kho_vmalloc": len(vm),
                   "root_fdt": "marked" if marked_root else
                   "restored" if root else "not preserved"}


def run(results_dir) -> dict:
    results = Path(results_dir)
    stage = "?"
    try:
        prog = _program()
        from kho_inspect.walk import incoming_state
        kho_boot = incoming_state(prog).kho_boot
        stage = "2" if kho_boot else "1"
        out = (stage2 if kho_boot else stage1)(prog, results)
    except Exception as e:
        traceback.print_exc()
        out = {"status": "fail", "reason": f"{type(e).__name__}: {e}"}
    out["stage"] = stage
    (results / f"walker-stage{stage}.result.json").write_text(
        json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "/results"),
                     indent=1, default=str))

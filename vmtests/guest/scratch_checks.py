"""In-guest check of ``status``'s scratch accounting, for the vmtest stage
runner.

``check_scratch(run) -> dict`` runs ``python3 -m kho_inspect status`` (text
and ``--json``) on the running kernel and compares it with what the kernel
says itself, read independently of kho_inspect:

* ``/proc/meminfo`` CmaTotal and CmaFree (read just before and just after
  the walk: CmaFree moves while the system runs, so it must lie within both
  readings, widened by a few per cent);
* debugfs ``kho/out/scratch_phys`` and ``scratch_len`` (one hex value per
  area, in array order) for the areas' addresses and sizes;
* for every area, in use + free == size and 0 <= free <= size;
* the free-list walk's total free MIGRATE_CMA memory against CmaFree (two
  different kernel sources: the free lists and the vm counter);
* the explanation (text ``shows CmaFree``, JSON ``mismatch``) present
  exactly when meminfo's CmaFree exceeds CmaTotal (CmaTotal 0 and CmaFree >
  0 in a guest without CMA reservations) while scratch areas exist.

*run* is stage.run (``run(cmd, timeout=..., **subprocess kwargs)`` returning
a CompletedProcess). Returns ``{"verdict": "pass"|"fail", "detail": str,
...figures}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent.parent
DEBUGFS = Path("/sys/kernel/debug")
#: CmaFree tolerance: relative, and absolute (kB) for tiny figures.
TOLERANCE = 0.03
SLACK_KB = 4096


def meminfo() -> dict[str, int]:
    """/proc/meminfo's figures in kB."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        f = rest.split()
        if f:
            out[name.strip()] = int(f[0])
    return out


def debugfs_scratch() -> list[tuple[int, int]] | None:
    """(addr, size) of each area from debugfs kho/out, or None."""
    if not (DEBUGFS / "kho").exists():
        subprocess.run(["mount", "-t", "debugfs", "none", str(DEBUGFS)],
                       capture_output=True)
    d = DEBUGFS / "kho" / "out"
    try:
        phys = (d / "scratch_phys").read_text().split()
        size = (d / "scratch_len").read_text().split()
    except OSError:
        return None
    return [(int(p, 16), int(s, 16)) for p, s in zip(phys, size)]


def _within(value_kb: int, lo_kb: int, hi_kb: int) -> bool:
    lo = lo_kb * (1 - TOLERANCE) - SLACK_KB
    hi = hi_kb * (1 + TOLERANCE) + SLACK_KB
    return lo <= value_kb <= hi


def check_scratch(run) -> dict:
    """Compare ``status``'s scratch accounting with /proc/meminfo and
    debugfs (see the module docstring)."""
    fails: list[str] = []
    before = meminfo()
    rj = run([sys.executable, "-m", "kho_inspect", "status", "--json"],
             cwd=str(PROJECT))
    after = meminfo()
    rt = run([sys.executable, "-m", "kho_inspect", "status"],
             cwd=str(PROJECT))
    if rj.returncode or rt.returncode:
        return {"verdict": "fail", "detail": f"status rc={rj.returncode}/"
                f"{rt.returncode}: {(rj.stderr or rt.stderr).strip()[-300:]}"}
    try:
        doc = json.loads(rj.stdout)
    except ValueError as e:
        return {"verdict": "fail", "detail": f"status --json: {e}"}
    text = " ".join(rt.stdout.split())
    areas = doc.get("scratch") or []
    acc = doc.get("scratch_accounting")
    info = {"meminfo_before": {k: before.get(k) for k in
                               ("MemTotal", "CmaTotal", "CmaFree")},
            "meminfo_after": {k: after.get(k) for k in
                              ("CmaTotal", "CmaFree")},
            "areas": len(areas), "accounting": acc}
    if not areas:
        if acc is not None:
            fails.append("scratch_accounting without scratch areas")
        if "shows CmaFree" in text:
            fails.append("explanation printed without scratch areas")
        verdict = "fail" if fails else "pass"
        return {"verdict": verdict, "detail": "; ".join(fails) or
                "no scratch areas (KHO off?): nothing to account", **info}
    if acc is None:
        return {"verdict": "fail", "detail": "scratch areas but no "
                "scratch_accounting", **info}
    # the areas: debugfs is the kernel's own list
    dbg = debugfs_scratch()
    mine = [(a["addr"], a["size"]) for a in areas]
    if dbg is None:
        info["debugfs"] = "kho/out/scratch_phys not readable"
    elif dbg != mine:
        fails.append(f"areas {[(hex(a), hex(s)) for a, s in mine]} != "
                     f"debugfs {[(hex(a), hex(s)) for a, s in dbg]}")
    # meminfo's figures
    if "CmaTotal" in before:
        ct = acc.get("cma_total")
        if ct is None or ct // 1024 != before["CmaTotal"]:
            fails.append(f"CmaTotal {ct} B != meminfo "
                         f"{before['CmaTotal']} kB")
        cf = acc.get("cma_free")
        lo = min(before["CmaFree"], after["CmaFree"])
        hi = max(before["CmaFree"], after["CmaFree"])
        if cf is None or not _within(cf // 1024, lo, hi):
            fails.append(f"CmaFree {cf} B not within meminfo {lo}..{hi} kB")
        walk = acc.get("walk")
        if walk is None:
            fails.append("no free-list walk")
        elif not _within(walk["free"] // 1024, lo, hi):
            fails.append(f"free lists hold {walk['free'] // 1024} kB of "
                         f"MIGRATE_CMA, meminfo CmaFree {lo}..{hi} kB")
        expect = before["CmaFree"] > before["CmaTotal"]
        if expect != (after["CmaFree"] > after["CmaTotal"]):
            info["note"] = "CmaFree crossed CmaTotal during the check"
        else:
            if bool(acc.get("mismatch")) != expect:
                fails.append(f"mismatch {acc.get('mismatch')} but meminfo "
                             f"CmaFree {before['CmaFree']} kB, CmaTotal "
                             f"{before['CmaTotal']} kB")
            if ("shows CmaFree" in text) != expect:
                fails.append("explanation " + ("missing" if expect else
                                               "printed without cause"))
    else:
        info["note"] = "no Cma lines in /proc/meminfo"
    # every area: in use + free == size
    per = {p["index"]: p for p in acc.get("areas", [])}
    for a in areas:
        p = per.get(a["index"])
        if p is None or p.get("free") is None:
            fails.append(f"area {a['index']}: no free figure")
            continue
        if p["free"] + p["in_use"] != a["size"] or not \
                0 <= p["free"] <= a["size"]:
            fails.append(f"area {a['index']}: free {p['free']} + in use "
                         f"{p['in_use']} != size {a['size']}")
    if doc.get("problems"):
        info["problems"] = doc["problems"]
    detail = "; ".join(fails) or (
        f"{len(areas)} areas agree with debugfs; CmaFree "
        f"{(acc.get('cma_free') or 0) // 1024} kB (meminfo "
        f"{before.get('CmaFree')}..{after.get('CmaFree')} kB), CmaTotal "
        f"{(acc.get('cma_total') or 0) // 1024} kB; scratch "
        f"{acc['scratch_size'] // 1024} kB, free "
        f"{(acc.get('scratch_free') or 0) // 1024} kB; explanation "
        f"{'shown' if acc.get('mismatch') else 'not shown'}")
    return {"verdict": "fail" if fails else "pass", "detail": detail, **info}


if __name__ == "__main__":
    def _run(cmd, timeout=600, **kw):
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout, **kw)
    res = check_scratch(_run)
    print(json.dumps(res, indent=1))
    sys.exit(0 if res["verdict"] == "pass" else 1)

"""S8, in the guest: ``kho-inspect check`` on a real kernel, against the
kho_workload module's own list (S6 made its items) and the kernel's own
behaviour.

``stage1(results) -> dict`` (after S6's workload, finalize, S3 and S5;
before the kexec):

* clean run: ``check --json`` exits 0 with no error-level finding, every
  preserved block has an owner, and every block of every item the module
  still preserves is owned by ``kho_workload``;
* ``check --next $(uname -r)`` names each of the module's blocks above
  MAX_PAGE_ORDER (the 2048-page run: one order-11 block) and predicts its
  fate: "refuses" or "no order check". The prediction is written to
  ``s8-plan.json`` and judged in stage 2 against what the kernel did. Its
  warnings are exactly an ``order`` and a ``next-order`` finding on each
  such block (:func:`judge_warnings1`);
* the plan for stage 2: one preserved folio the module will leave
  unrestored (``restore=`` lists every other id; S6 loads the module);
* ``status`` accounts for the scratch areas as /proc/meminfo sees them
  (``scratch_checks.check_scratch``); ``picture`` draws within 79 columns
  and writes an SVG that parses.

``stage2(results) -> dict`` (after S6 loaded the module, which restored
all but the planned item): ``check --incoming --json`` exits 0 with no
error, lists the left folio as preserved, unrestored and owned by
``kho_workload``, lists no block of a restored item, claims every still
marked block, and each big block's fate (restored / failed) is the one
stage 1 predicted. Every warning is an expected ``unrestored`` block with
its owner, and each expected one is there (:func:`judge_warnings2`). 6.16/6.17 mark head pages with a bare order, so the
unrestored blocks cannot be enumerated there: a skip naming that lack.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from trace_checks import (LIST, MAX_PAGE_ORDER, cli, ctl, insmod,
                          item_blocks, module_items, run_quiet)

PLAN = "s8-plan.json"
WORKLOAD = "kho_workload"


def log(msg: str) -> None:
    print(f"check_checks: {msg}", flush=True)


def _json(r):
    try:
        return json.loads(r.stdout)
    except ValueError:
        return None


def _blocks(ranges) -> dict:
    """{(phys, order): owner} of a check/map document's ranges."""
    out = {}
    for r in ranges:
        step = 4096 << r["order"]
        for i in range(r["count"]):
            out[(r["phys"] + i * step, r["order"])] = r.get("owner")
    return out


def _errors(doc) -> list[str]:
    return [f"{f['id']} {f['message']}" for f in doc["findings"]
            if f["severity"] == "error"]


def _finding_blocks(f) -> list:
    """The (phys, order) blocks a finding names ([] when it names none)."""
    if f.get("phys") is None or f.get("order") is None:
        return []
    step = 4096 << f["order"]
    return [(f["phys"] + i * step, f["order"])
            for i in range(f.get("count") or 1)]


def _where(f) -> str:
    return f"{f['id']} {f['message'][:120]}"


def judge_warnings1(findings: list, big: set) -> list[str]:
    """Stage 1's warnings (``check --next`` this same release) against the
    expected set: an ``order`` and a ``next-order`` finding on each block of
    *big* (the module's blocks above MAX_PAGE_ORDER, ``(phys, order)``),
    and no other warning. Returns the failures."""
    want = {(i, b) for b in big for i in ("order", "next-order")}
    got, fails = set(), []
    for f in findings:
        if f["severity"] != "warning":
            continue
        keys = {(f["id"], b) for b in _finding_blocks(f)}
        if not keys or not keys <= want:
            fails.append(f"unexpected warning: {_where(f)}")
        got |= keys
    fails += [f"no {i} warning for the module's block 0x{p:x} order {o}"
              for i, (p, o) in sorted(want - got)]
    return fails


#: Sub-FDT blobs their owner reads in place and never restores, so they
#: stay preserved and unrestored in the next kernel: kexec-metadata
#: (kernel/liveupdate/kexec_handover.c, kho_in_kexec_metadata(): 7.1+,
#: phys_to_virt() of the blob). test_kho's blob, its FDT folio, is judged
#: from test_kho's own state instead; kho_workload restores its blob.
BLOBS_LEFT = ("kexec-metadata",)


def judge_warnings2(findings: list, items: list, kho_test_fdt: set,
                    pages: dict) -> list[str]:
    """Stage 2's warnings (``check --incoming``) against the expected set.

    Expected, each as one ``unrestored`` warning with that owner: every
    block of the module's items it left unrestored or failed to restore
    (its list: *items*), ``kho_workload``; test_kho's FDT folio
    (*kho_test_fdt*, from its state in stage 1), ``kho_test``. Also
    accepted: a block holding a page of *pages* (``{phys: owner}``: the
    root FDT, ``kho``, and the :data:`BLOBS_LEFT` blobs, as the kernel
    hands them over) with that owner. Any other warning fails, and so does
    an expected block with no warning. Returns the failures."""
    want = {b: WORKLOAD for it in items
            if it.get("state") in ("unrestored", "failed")
            for b in item_blocks(it)}
    want.update({tuple(b): "kho_test" for b in kho_test_fdt})
    seen, fails = set(), []
    for f in findings:
        if f["severity"] != "warning":
            continue
        blocks = _finding_blocks(f)
        if f["id"] != "unrestored" or not blocks:
            fails.append(f"unexpected warning: {_where(f)}")
            continue
        for b in blocks:
            end = b[0] + (4096 << b[1])
            held = {w for p, w in pages.items() if b[0] <= p < end}
            if (want[b] != f["owner"]) if b in want else \
                    (held != {f["owner"]}):
                fails.append(f"unexpected unrestored block 0x{b[0]:x} "
                             f"order {b[1]} owned by {f['owner']}")
            seen.add(b)
    fails += [f"no unrestored warning for 0x{p:x} order {o} ({w})"
              for (p, o), w in sorted(want.items()) if (p, o) not in seen]
    return fails


def left_pages(in_fdt: Path, setup_data: Path = Path(
        "/sys/kernel/boot_params/setup_data")) -> dict:
    """``{phys: owner}`` of the pages handed over that nobody restores: the
    root FDT (x86 setup_data of type 10, SETUP_KEXEC_KHO: its first u64),
    ``kho``; the blobs of :data:`BLOBS_LEFT` (their ``preserved-data``, 7.1+,
    or ``fdt`` property in the incoming FDT *in_fdt*)."""
    from stage import fdt_props
    out = {}
    for d in sorted(setup_data.glob("*")):
        try:
            if int((d / "type").read_text().strip(), 0) == 10:
                out[int.from_bytes((d / "data").read_bytes()[:8],
                                   "little")] = "kho"
        except (OSError, ValueError):
            continue
    try:
        props = fdt_props(in_fdt.read_bytes())
    except (OSError, ValueError):
        return out
    for name in BLOBS_LEFT:
        v = props.get(f"{name}/preserved-data", props.get(f"{name}/fdt"))
        if v is not None and len(v) == 8:
            out[int.from_bytes(v, "little")] = name
    return out


def _picture(results: Path, fails: list, info: dict) -> None:
    r = cli("picture")
    if r.returncode:
        fails.append(f"picture rc={r.returncode}: {r.stderr.strip()[-200:]}")
        return
    wide = [ln for ln in r.stdout.splitlines() if len(ln) > 79]
    if wide:
        fails.append(f"picture: {len(wide)} lines over 79 columns")
    (results / "picture.txt").write_text(r.stdout)
    svg = results / "picture.svg"
    r = cli("picture", "-o", str(svg))
    try:
        root = ET.parse(svg).getroot()
        info["picture_svg_rects"] = sum(1 for e in root.iter()
                                        if e.tag.endswith("rect"))
    except (ET.ParseError, OSError) as e:
        fails.append(f"picture -o {svg.name} rc={r.returncode}: {e}")


def _scratch(fails: list, info: dict) -> None:
    try:
        import scratch_checks
    except ImportError as e:
        fails.append(f"scratch_checks: {e}")
        return
    out = scratch_checks.check_scratch(run_quiet)
    info["scratch"] = out.get("detail") or out.get("reason")
    if out.get("verdict", out.get("status")) != "pass":
        fails.append(f"status scratch accounting: {info['scratch']}")


def _own_workload(results: Path) -> str | None:
    """Without S6 (``-k S8``), load the module and give it items: folios
    and the 2048-page run (one order-11 block)."""
    if LIST.exists():
        return None
    why = insmod(results)
    if why:
        return why
    for cmd in ("folio 0 2", "folio 3 2", "pages 2048 2048"):
        rc = ctl(cmd)
        if rc:
            return f"ctl {cmd}: errno {rc}"
    return None


def stage1(results: Path) -> dict:
    fails, info = [], {}
    why = _own_workload(results)
    if why:
        return {"status": "fail", "reason": f"kho_workload: {why}"}
    fin = Path("/sys/kernel/debug/kho/out/finalize")
    if fin.exists() and fin.read_text().strip() != "1":
        fin.write_text("1\n")          # kho-v1: the map exists after it
    head, items = module_items()
    # one run (the DWARF loads once): the clean-run checks and, with --next
    # this very release, the next-* findings (warnings only: same kernel)
    rel = os.uname().release
    r = cli("check", "--next", rel, "--json")
    doc = _json(r)
    (results / "s8-check1.json").write_text(r.stdout)
    if doc is None:
        return {"status": "fail", "reason": f"check --next {rel} rc="
                f"{r.returncode}: " + r.stderr.strip()[-200:]}
    if r.returncode != 0 or _errors(doc):
        fails.append(f"check rc={r.returncode}: " + "; ".join(
            _errors(doc)[:3]))
    info["counts"] = doc["counts"]
    info["owners"] = {k: v["blocks"] for k, v in doc["owners"].items()}
    info["warnings"] = sorted({f["id"] for f in doc["findings"]
                               if f["severity"] == "warning"})

    if "(unclaimed)" in doc["owners"]:
        un = [f["message"] for f in doc["findings"]
              if f["id"] == "unclaimed"]
        fails.append(f"unclaimed blocks: {'; '.join(un[:3])}")
    owned = _blocks(doc["ranges"])
    preserved = [it for it in items if it.get("state") == "preserved"]
    for it in preserved:
        for b in item_blocks(it):
            if WORKLOAD not in (owned.get(b) or "").split(","):
                fails.append(f"item {it['id']} {it['kind']} block "
                             f"0x{b[0]:x} order {b[1]}: owner "
                             f"{owned.get(b, 'not preserved')}")
                break
    # the next kernel (this same release) and the big blocks
    predictions = {}
    big = {b: it for it in preserved for b in item_blocks(it)
           if b[1] > MAX_PAGE_ORDER}
    found = {(f["phys"], f["order"]): f["message"]
             for f in doc["findings"] if f["id"] == "next-order"}
    for (p, o), it in big.items():
        msg = found.get((p, o))
        if msg is None:
            fails.append(f"check --next {rel}: no next-order finding "
                         f"for item {it['id']}'s order-{o} block 0x{p:x}")
            continue
        fate = ("refuse" if "refuses" in msg else "unchecked"
                if "no order check" in msg else "?")
        predictions[str(it["id"])] = fate
    info["next_order"] = predictions
    fails += judge_warnings1(doc["findings"], set(big))
    if not big:
        fails.append("the module holds no block above MAX_PAGE_ORDER (S6's "
                     "2048-page run): nothing to predict")
    # the stage-2 plan: leave one folio unrestored
    folios = [it for it in preserved if it["kind"] == "folio"]
    leave = folios[-1]["id"] if folios else None
    ids = [it["id"] for it in items
           if it.get("state") in ("preserved", "unpreserved")]
    plan = {"leave": leave, "predictions": predictions,
            "restore": ",".join(str(i) for i in ids if i != leave)}
    (results / PLAN).write_text(json.dumps(plan, indent=1) + "\n")
    info["plan"] = plan
    _scratch(fails, info)
    _picture(results, fails, info)
    if fails:
        return {"status": "fail", "reason": "; ".join(fails), **info}
    return {"status": "pass", "reason": (
        f"check: {info['counts']['error']} errors, warnings "
        f"{info['warnings'] or 'none'}; owners {info['owners']}; "
        f"next {rel}: {predictions}; leave item {leave} unrestored; "
        f"scratch: {info.get('scratch')}"), **info}


def stage2(results: Path) -> dict:
    try:
        plan = json.loads((results / PLAN).read_text())
    except (OSError, ValueError) as e:
        return {"status": "fail", "reason": f"no stage-1 plan: {e}"}
    fails, info = [], {}
    if not LIST.exists():       # S6 did not load it: restore per the plan
        why = insmod(results, f"restore={plan['restore']}")
        if why:
            return {"status": "fail", "reason": f"kho_workload: {why}"}
    head, items = module_items()
    r = cli("check", "--incoming", "--json")
    doc = _json(r)
    (results / "s8-check2.json").write_text(r.stdout)
    if doc is None:
        return {"status": "fail", "reason": f"check --incoming rc="
                f"{r.returncode}: " + r.stderr.strip()[-200:]}
    if r.returncode != 0 or _errors(doc):
        fails.append(f"check --incoming rc={r.returncode}: "
                     + "; ".join(_errors(doc)[:3]))
    cannot = [f["message"] for f in doc["findings"]
              if f["id"] == "not-checked" and f["message"].startswith(
                  "unrestored")]
    if cannot:
        return {"status": "skip", "lacks": "KHO_PAGE_MAGIC (6.18+): "
                "preserved head pages carry a bare order",
                "reason": cannot[0][:200]}
    left = {}
    for f in doc["findings"]:
        if f["id"] in ("unrestored", "unclaimed"):
            for i in range(f["count"]):
                left[(f["phys"] + i * (4096 << f["order"]), f["order"])] = \
                    f["owner"]
    info["unrestored"] = len(left)
    info["owners"] = sorted({o or "(unclaimed)" for o in left.values()})
    if any(o is None for o in left.values()):
        fails.append("unclaimed blocks still marked: " + ", ".join(
            f"0x{p:x}/{o}" for (p, o), w in left.items() if w is None)[:200])
    by_id = {it["id"]: it for it in items}
    it = by_id.get(plan["leave"])
    if it is None or it["state"] != "unrestored":
        fails.append(f"item {plan['leave']} (left by restore=) is "
                     f"{it and it['state']}")
    else:
        for b in item_blocks(it):
            if left.get(b) != WORKLOAD:
                fails.append(f"left item {it['id']} block 0x{b[0]:x}: "
                             f"{left.get(b, 'not listed as unrestored')}")
    for it in items:
        if it["state"] == "restored":
            hit = [b for b in item_blocks(it) if b in left]
            if hit:
                fails.append(f"restored item {it['id']} still listed: "
                             f"0x{hit[0][0]:x}")
    fates = {}
    for iid, pred in plan["predictions"].items():
        it = by_id.get(int(iid))
        st = it and it["state"]
        fates[iid] = f"predicted {pred}, kernel: {st}"
        if (pred, st) not in (("refuse", "failed"),
                              ("unchecked", "restored")):
            fails.append(f"item {iid}: check --next predicted {pred!r}, "
                         f"the module's restore says {st}")
        elif st == "failed" and not all(left.get(b) == WORKLOAD
                                        for b in item_blocks(it)):
            fails.append(f"item {iid}: refused, but not listed as "
                         "unrestored and owned by kho_workload")
    info["fates"] = fates
    try:
        truth = json.loads((results / "truth.json").read_text())
        fdt = {(f["phys"], f["order"]) for f in truth["folios"]
               if f.get("what") == "fdt"}
    except (OSError, ValueError, KeyError) as e:
        fails.append(f"no test_kho truth from stage 1: {e}")
        fdt = set()
    pages = left_pages(results / "in-fdt.bin")
    info["left_pages"] = {f"0x{p:x}": w for p, w in pages.items()}
    fails += judge_warnings2(doc["findings"], items, fdt, pages)
    if fails:
        return {"status": "fail", "reason": "; ".join(fails), **info}
    return {"status": "pass", "reason": (
        f"check --incoming: {info['unrestored']} blocks unrestored, owners "
        f"{info['owners']}; left item {plan['leave']} listed; order>10: "
        f"{fates}"), **info}


def run(results_dir, stage: int) -> dict:
    results = Path(results_dir)
    res = (stage1 if stage == 1 else stage2)(results)
    (results / f"s8-stage{stage}.result.json").write_text(
        json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], int(sys.argv[2])), indent=1))

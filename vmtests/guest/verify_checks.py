"""``capture --hashes`` and ``verify`` in the guest: the corruption proof of
issue #8 section 5, for the vmtest stage runner (vmtests/guest/stage.py).

``stage1_verify(run, results_dir) -> dict`` (cold boot; the kho_workload
module loaded with preserved folio items, and on kho-v1 after finalize):
``capture --hashes -o results_dir/hashes.core``; ``scribble`` one preserved
folio item (the module flips 64 bytes of its first page, its checksum and
table unchanged); then ``verify`` in this same kernel, against its outgoing
tracker: exactly that block must be ``corrupted``, every other block of the
image ``intact``. It does not create items (kho-v1 refuses or does not hand
over preservations made after finalize); loading the module and making
items is left to the caller, except when the module is absent (then it
loads results_dir/kho_workload.ko and preserves ``folio 3 2``, which needs a
kernel not finalized yet). What the next kernel needs is saved to
``results_dir/verify-stage1.json`` and returned.

``stage2_verify(run, results_dir, stage1) -> dict`` (the KHO-booted kernel):
``verify results_dir/hashes.core --json``. If the module is not loaded yet,
the scribbled block must be ``corrupted`` (still preserved, content
changed) and it alone; then the module is loaded (``load_module``), restores
its items, and its own list must say ``state=mismatch`` for the scribbled
item (its own checksum agrees). If the module had already restored it, the
block must be ``restored, changed``. On every kernel the blocks of the
module's other items (saved in stage 1) must be listed unchanged. On
6.16/6.17 (no KHO_PAGE_MAGIC) the kernel cannot tell preserved from
restored: content is judged alone (:func:`judge_content`), and the
verdict says so.

NOTE for the S6 stage 2 check: the scribbled item is restored with a
checksum mismatch on purpose; its id is ``stage1["item"]["id"]``.

Both return the stage runner's verdict dict: ``status`` (pass, fail) and
``reason``, the same under ``verdict`` and ``detail``, plus details.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from trace_checks import (LIST, ctl as _ctl, insmod, item_blocks,
                          module_items, run_quiet)

CTL = Path("/sys/kernel/debug/kho_workload/ctl")
FINALIZE = Path("/sys/kernel/debug/kho/out/finalize")
VMLINUX = "/kernel/vmlinux"
TIMEOUT = 600


def _verdict(status: str, reason: str, **extra) -> dict:
    return {"status": status, "reason": reason, "verdict": status,
            "detail": reason, **extra}


def _cli(run, *args, timeout=TIMEOUT):
    vm = ["-s", VMLINUX] if os.path.exists(VMLINUX) and args[0] == "verify" \
        else []
    return run([sys.executable, "-m", "kho_inspect", *args, *vm],
               timeout=timeout)


def _items() -> list[dict]:
    """The module's list (vmtests/kmod/README.md), one dict per item."""
    return module_items()[1]


def _insmod(run, results: Path) -> str | None:
    return insmod(results)


def _verify_json(run, core: Path, name: str, results: Path):
    """(rc, document or None, error text)."""
    r = _cli(run, "verify", str(core), "--json", "--limit", "0")
    (results / f"{name}-out.json").write_text(r.stdout)
    (results / f"{name}-out.stderr").write_text(r.stderr)
    try:
        return r.returncode, json.loads(r.stdout), ""
    except ValueError:
        return r.returncode, None, (f"verify rc={r.returncode}: "
                                    + r.stderr.strip()[-300:])


def _states(doc: dict) -> dict:
    return {(b["phys"], b["order"]): b for b in doc["blocks"]}


def stage1_verify(run, results_dir) -> dict:
    results = Path(results_dir)
    info: dict = {}
    if not CTL.exists():
        why = _insmod(run, results)
        if why:
            return _verdict("fail", why)
        err = _ctl("folio 3 2")
        info["made_items"] = "folio 3 2" + (f" (errno {err})" if err else "")
        if err:
            return _verdict("fail", f"the module was not loaded; loading it "
                            f"and 'folio 3 2' failed with errno {err} "
                            "(kho-v1 after finalize refuses new items)",
                            **info)
    # not the folio S8 plans to leave unrestored: this one must be restored
    # (with a mismatch) in the next kernel
    try:
        leave = json.loads((results / "s8-plan.json").read_text())["leave"]
    except (OSError, ValueError, KeyError):
        leave = None
    folios = [it for it in _items() if it.get("kind") == "folio"
              and it.get("state") == "preserved" and it["id"] != leave]
    if not folios:
        return _verdict("fail", "the module has no preserved folio item to "
                        "scribble on", **info)
    item = max(folios, key=lambda it: (it["order"], -it["id"]))
    info["item"] = {k: item[k] for k in ("id", "phys", "order", "csum")}
    # what nobody writes to until the module restores it in stage 2
    info["untouched"] = sorted(
        b for it in _items() if it.get("state") == "preserved"
        and it["id"] != item["id"] and it["kind"] != "blob"
        for b in item_blocks(it))
    core = results / "hashes.core"
    r = _cli(run, "capture", "--hashes", "-o", str(core), "--json")
    (results / "verify-capture.stderr").write_text(r.stderr)
    if r.returncode:
        return _verdict("fail", f"capture --hashes rc={r.returncode}: "
                        + r.stderr.strip()[-300:], **info)
    cap = json.loads(r.stdout)
    info["capture"] = cap.get("hashes")
    info["fdt_phys"] = cap.get("fdt_phys")
    err = _ctl(f"scribble {item['id']}")
    if err:
        return _verdict("fail", f"scribble {item['id']}: errno {err}", **info)
    info["scribbled"] = True
    saved = dict(info)
    (results / "verify-stage1.json").write_text(json.dumps(saved))
    # the same kernel, before its kexec: its tracker is the reference
    rc, doc, why = _verify_json(run, core, "verify-stage1", results)
    info["verify_rc"] = rc
    if doc is None:
        return _verdict("fail", why, **info)
    fails = []
    key = (item["phys"], item["order"])
    st = _states(doc)
    info["counts"] = doc["counts"]
    if doc["mode"] != "same-kernel":
        fails.append(f"verify mode {doc['mode']}, not same-kernel")
    if key not in st or st[key]["state"] != "corrupted":
        fails.append(f"scribbled block {item['phys']:#x}/{item['order']}: "
                     f"{st.get(key, {}).get('state', 'not listed')}, not "
                     "corrupted")
    elif st[key]["changed_chunks"] != [item["phys"]]:
        fails.append(f"changed chunks {st[key]['changed_chunks']}, want "
                     f"[{item['phys']:#x}]")
    others = [b for k, b in st.items() if k != key and
              b["state"] not in ("intact", "extra")]
    if others:
        fails.append(f"{len(others)} other blocks not intact, e.g. "
                     f"{others[0]['phys']:#x}: {others[0]['state']} "
                     f"{others[0]['detail'][:100]}")
    if rc != 1:
        fails.append(f"verify exit status {rc}, want 1 (a block corrupted)")
    if fails:
        return _verdict("fail", "; ".join(fails), **info)
    return _verdict("pass", f"same-kernel verify: scribbled item "
                    f"{item['id']} ({item['phys']:#x}, order "
                    f"{item['order']}) corrupted, the other "
                    f"{doc['counts'].get('intact', 0)} blocks intact",
                    **info)


def judge_content(states: dict, key: tuple, untouched: list) -> list[str]:
    """What verify's content comparison must say in the next kernel,
    whatever the kernel can tell about states: the scribbled block *key*
    changed and not intact; every block of the module's other items
    (*untouched*, saved in stage 1, ``(phys, order)``) listed with its
    content unchanged. *states* is ``{(phys, order): block}`` of ``verify
    --json``. Returns the failures."""
    fails = []
    b = states.get(key)
    if b is None:
        fails.append(f"scribbled block {key[0]:#x} not in verify")
    elif b["matches"] is not False or b["state"] == "intact":
        fails.append(f"scribbled block: {b['state']} matches="
                     f"{b['matches']}, want changed")
    bad = [(tuple(u), states.get(tuple(u))) for u in untouched]
    bad = [(u, x) for u, x in bad if x is None or x["matches"] is not True]
    if bad:
        (p, o), x = bad[0]
        fails.append(f"{len(bad)} blocks of the module's other items not "
                     f"listed unchanged, e.g. {p:#x}/{o}: "
                     + (f"{x['state']} matches={x['matches']}" if x
                        else "not listed"))
    return fails


def stage2_verify(run, results_dir, stage1: dict | None = None,
                  load_module: bool = True) -> dict:
    results = Path(results_dir)
    if not stage1 or "item" not in stage1:
        path = results / "verify-stage1.json"
        stage1 = json.loads(path.read_text()) if path.exists() else {}
    if not stage1.get("scribbled"):
        return _verdict("fail", "stage 1 scribbled nothing (see its verdict)")
    item = stage1["item"]
    key = (item["phys"], item["order"])
    core = results / "hashes.core"
    was_loaded = CTL.exists()
    rc, doc, why = _verify_json(run, core, "verify-stage2", results)
    info: dict = {"verify_rc": rc, "item": item,
                  "module_loaded_before": was_loaded}
    if doc is None:
        return _verdict("fail", why, **info)
    st = _states(doc)
    info["counts"] = doc["counts"]
    info["mode"] = doc["mode"]
    b = st.get(key)
    fails, lacks = [], None
    if doc["mode"] != "incoming":
        fails.append(f"verify mode {doc['mode']}: {doc['against'][:150]}")
    ev = doc.get("evidence", {})
    magic = ev.get("held") is not None and bool(ev.get("exact"))
    info["magic"] = magic
    fails += judge_content(st, key, stage1.get("untouched", []))
    if b is None or not magic:
        # 6.16/6.17: preserved, restored and lost blocks cannot be told
        # apart (no KHO_PAGE_MAGIC); content is all there is to judge
        lacks = "KHO_PAGE_MAGIC (6.18+)"
    elif was_loaded:
        if (b["state"], b["matches"]) != ("restored", False):
            fails.append(f"scribbled block (module already loaded): "
                         f"{b['state']} matches={b['matches']}, want "
                         "restored, changed")
    else:
        if b["state"] != "corrupted":
            fails.append(f"scribbled block: {b['state']}, want corrupted")
        bad = [x for k, x in st.items() if k != key and
               x["state"] in ("corrupted", "lost")]
        if bad:
            fails.append(f"{len(bad)} other blocks {bad[0]['state']}, e.g. "
                         f"{bad[0]['phys']:#x}: {bad[0]['detail'][:100]}")
        if rc != 1:
            fails.append(f"verify exit status {rc}, want 1")
    # the module's own checksum must agree
    if not was_loaded and load_module:
        why = _insmod(run, results)
        if why:
            fails.append(why)
    if CTL.exists():
        mine = [it for it in _items() if it["id"] == item["id"]]
        info["module_state"] = mine[0]["state"] if mine else None
        if not mine or mine[0]["state"] != "mismatch":
            fails.append(f"module item {item['id']}: state "
                         f"{info['module_state']}, want mismatch")
    if fails:
        return _verdict("fail", "; ".join(fails), **info)
    text = (f"item {item['id']} ({item['phys']:#x}, order {item['order']}): "
            f"verify says {b['state']}"
            + (", changed" if b["matches"] is False and
               b["state"] != "corrupted" else "")
            + (f"; the module's restore: {info['module_state']}"
               if info.get("module_state") else ""))
    text += (f"; the module's other {len(stage1.get('untouched', []))} "
             "blocks unchanged")
    if lacks:
        text += (f" (content only: the kernel lacks {lacks}, so "
                 "preserved, restored and lost look alike)")
    return _verdict("pass", text, **info)


def _stage_run(cmd, timeout=TIMEOUT, **kw):
    return run_quiet(cmd, timeout=timeout, **kw)


def run(results_dir, stage: int) -> dict:
    """S9 for vmtests/guest/stage.py: stage 1 as :func:`stage1_verify`
    (and ``s9-scribbled.json`` naming the item, which S6's stage-2 check
    then expects to be restored with a mismatch, and only it); stage 2 as
    :func:`stage2_verify` before anything loads the module (S6 loads it
    next; :func:`after_restore` then checks the module's own verdict)."""
    results = Path(results_dir)
    if stage == 1:
        res = stage1_verify(_stage_run, results)
        if res.get("scribbled"):
            (results / "s9-scribbled.json").write_text(
                json.dumps({"id": res["item"]["id"]}) + "\n")
    else:
        res = stage2_verify(_stage_run, results, load_module=False)
    (results / f"s9-stage{stage}.result.json").write_text(
        json.dumps(res, indent=1) + "\n")
    return res


def after_restore(results_dir, res: dict) -> dict:
    """S9's stage-2 verdict *res*, amended once the module has restored
    its items (S6): the scribbled item's own checksum must disagree."""
    results = Path(results_dir)
    if res.get("status") == "fail":
        return res
    try:
        iid = json.loads((results / "s9-scribbled.json").read_text())["id"]
    except (OSError, ValueError, KeyError):
        return _verdict("fail", "no s9-scribbled.json from stage 1")
    if not LIST.exists():
        return _verdict("fail", res["reason"] + "; the module was never "
                        "loaded (S6 did not run?)")
    mine = [it for it in _items() if it["id"] == iid]
    st = mine[0]["state"] if mine else None
    if st != "mismatch":
        return _verdict("fail", res["reason"] + f"; the module's restore "
                        f"of item {iid}: {st}, want mismatch")
    out = dict(res, reason=res["reason"] + f"; the module's restore: {st}")
    out["detail"] = out["reason"]
    return out


__all__ = ["stage1_verify", "stage2_verify", "run", "after_restore"]

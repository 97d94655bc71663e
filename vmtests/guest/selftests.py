"""S14, in the guest: the kernel's own LUO selftests run under kho-inspect.

The host copies the programs vmtests/selftests.py built from this kernel's
tree into ``/results/selftests`` (``liveupdate``, the harness; the
two-stage ``luo_*`` programs); the boot has ``kho=1 liveupdate=1``.

``stage=selftests-1`` (cold boot):

1. ``check --json``: the blocks before (the baseline; kho-v1 6.19/7.0
   finalized first, so that the map holds them);
2. ``trace --json --check`` attached (S6's runner, ready when its start
   record is out), then ``liveupdate`` first (it opens /dev/liveupdate
   exclusively): its KTAP totals must say ``fail:0``, ``skip:0``,
   ``error:0`` and pass something; then each ``luo_*`` program with ``-s
   1``: exit 0 and ``Child PID`` (its child holds the sessions until the
   kexec); the tracer detached: exit 0, its ``check`` record ok (what the
   tracker gained == what was traced), nothing lost;
3. kho-v1 (6.19, 7.0): finalize again (the map was serialized before);
4. ``check --json``: no error, nothing unclaimed, and every block new
   since the baseline owned by ``LUO``; then the KHO kexec, ``liveupdate=1``
   kept.

``stage=selftests-2`` (KHO boot):

1. ``check --incoming --json``: nothing unclaimed; the unrestored blocks
   owned by ``LUO`` (before);
2. under ``trace --json --check``, each ``luo_*`` program with ``-s 2``:
   exit 0 and ``TEST PASSED`` (it retrieves, compares and finishes its
   sessions); the tracer as above;
3. ``check --incoming --json``: nothing unclaimed; the unrestored ``LUO``
   blocks now are a subset of those before, fewer, and none of them is a
   block the tracer saw restored (:func:`judge_retrieved`).

With ``lutest=1`` (the kernel has ``CONFIG_LIVEUPDATE_TEST``, 7.1+), the
in-kernel test's own dmesg verdict is required in both stages
(:func:`judge_lutest`).

The verdict of each stage is written to ``selftests-N.result.json``;
vmtests/selftests.py (:func:`run`) reads them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import own_boot
from own_boot import RESULTS, kexec_exec, kexec_load, next_cmdline, save
from trace_checks import Tracer

PROGRAMS = RESULTS / "selftests"
FINALIZE = Path("/sys/kernel/debug/kho/out/finalize")
#: ``# Totals: pass:15 fail:0 xfail:0 xpass:0 skip:0 error:0``
TOTALS = re.compile(r"^# Totals: (.*)$", re.M)
TIMEOUT = 900


def log(msg: str) -> None:
    print(f"selftests: {msg}", flush=True)


def _check(name: str, *args) -> tuple[dict | None, str]:
    """``check ARGS --json`` saved as *name*: (document, why not)."""
    r = own_boot.cli("selftests", "check", *args, "--json")
    (RESULTS / name).write_text(r.stdout)
    try:
        return json.loads(r.stdout), ""
    except ValueError:
        return None, f"check {' '.join(args)} rc={r.returncode}: " + \
            r.stderr.strip()[-200:]


def blocks(ranges, owner: str | None = None) -> set:
    """``(phys, order)`` of every block of *ranges* (check JSON ranges or
    findings), only *owner*'s when given."""
    return {(r["phys"] + i * (4096 << r["order"]), r["order"])
            for r in ranges if r.get("phys") is not None
            and (owner is None or owner in (r.get("owner") or "").split(","))
            for i in range(r.get("count") or 1)}


def problems(doc: dict) -> list[str]:
    """Errors and unclaimed blocks of a check document."""
    return [f"{f['id']}: {f['message'][:120]}" for f in doc["findings"]
            if f["severity"] == "error" or f["id"] == "unclaimed"]


def ktap_totals(out: str) -> dict | None:
    """The counts of a kselftest harness's ``# Totals:`` line, or None."""
    m = TOTALS.search(out)
    if not m:
        return None
    return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", m.group(1))}


def judge_harness(rc: int, out: str) -> str | None:
    """Why the ``liveupdate`` harness did not pass, or None: exit 0 is not
    enough (it exits 0 when every test is skipped)."""
    t = ktap_totals(out)
    if t is None:
        return f"rc={rc}, no '# Totals:' line"
    if rc or t.get("pass", 0) < 1 or any(
            t.get(k, 0) for k in ("fail", "skip", "error", "xpass")):
        return f"rc={rc}, totals {t}"
    return None


def judge_tracer(rc, lines: list[dict]) -> str | None:
    """Why a ``trace --json --check`` run does not vouch for what it saw,
    or None: exit 0, a ``check`` record that is ok, nothing lost."""
    chk = [d for d in lines if d.get("type") == "check"]
    end = [d for d in lines if d.get("type") == "end"]
    if rc != 0:
        return f"trace rc={rc}"
    if not chk or not chk[-1].get("ok"):
        return f"trace --check: {chk[-1] if chk else 'no check record'}"
    if not end or end[-1].get("lost"):
        return f"trace end: {end[-1] if end else 'no end record'}"
    return None


def judge_new_blocks(before: dict, after: dict) -> str | None:
    """Why the blocks preserved since *before* (check documents) are not
    all LUO's, or None."""
    new = blocks(after["ranges"]) - blocks(before["ranges"])
    if not new:
        return "the selftests preserved nothing (no new block)"
    theirs = blocks(after["ranges"], "LUO")
    bad = sorted(new - theirs)
    if bad:
        return (f"{len(bad)} of {len(new)} new blocks not owned by LUO, e.g. "
                f"0x{bad[0][0]:x} order {bad[0][1]}")
    return None


def judge_retrieved(before: set, after: set, restored) -> str | None:
    """Why ``check --incoming``'s unrestored LUO blocks *after* the
    programs retrieved their sessions are not what they left of *before*,
    or None: a subset, fewer, and none a block the tracer saw restored
    (*restored*: ``(phys, nr_pages)`` of its restore events)."""
    if not after <= before:
        extra = sorted(after - before)
        return (f"{len(extra)} unrestored LUO blocks that were not before, "
                f"e.g. 0x{extra[0][0]:x}")
    if after == before:
        return f"nothing retrieved: the same {len(before)} blocks unrestored"
    still = sorted(b for b in after for p, n in restored
                   if p <= b[0] < p + n * 4096)
    if still:
        return (f"{len(still)} blocks restored (traced) still listed "
                f"unrestored, e.g. 0x{still[0][0]:x}")
    return None


#: lib/tests/liveupdate.c (CONFIG_LIVEUPDATE_TEST, 7.1+), built in:
#: pr_fmt "liveupdate test: ", three test FLBs on every file handler
LUTEST = "liveupdate test: "
NFLBS = 3


def judge_lutest(dmesg: str, stage: int) -> str | None:
    """Why the kernel's own LUO test (lib/tests/liveupdate.c) did not pass
    in this boot's *dmesg*, or None. Stage 1: its FLBs registered and each
    one's ``preserve was triggered`` (the memfds preserved); stage 2, after
    the programs finished their sessions: each ``found flb data from the
    previous boot`` and ``finish was triggered``. Any ``ERROR`` or
    ``Failed`` line fails."""
    lines = [ln.split(LUTEST, 1)[1] for ln in dmesg.splitlines()
             if LUTEST in ln]
    bad = [ln for ln in lines if "ERROR" in ln or "Failed" in ln
           or "failed" in ln]
    if bad:
        return f"{LUTEST}{bad[0][:150]}"
    if not any(ln.startswith(f"Registered {NFLBS} FLBs") for ln in lines):
        return f"no '{LUTEST}Registered {NFLBS} FLBs' line"
    want = (["preserve was triggered"] if stage == 1 else
            ["found flb data from the previous boot",
             "finish was triggered"])
    for what in want:
        flbs = {ln.split(":", 1)[0] for ln in lines
                if ln.endswith(f": {what}")}
        if len(flbs) != NFLBS:
            return f"'{what}' for {sorted(flbs)}, want {NFLBS} FLBs"
    return None


def _dmesg() -> str:
    return own_boot.sh("selftests", ["dmesg"]).stdout


def _programs() -> tuple[str | None, list[str]]:
    """(the harness or None, the two-stage programs) shipped here."""
    names = sorted(p.name for p in PROGRAMS.iterdir()) \
        if PROGRAMS.is_dir() else []
    return ("liveupdate" if "liveupdate" in names else None,
            [n for n in names if n.startswith("luo_") and n != "luo_init"])


def _traced(name: str, work) -> tuple[str | None, list[dict], object]:
    """Run *work()* under ``trace --json --check``: (why the tracer does
    not vouch for it or None, its records, what *work* returned)."""
    t = Tracer(RESULTS, name, "--check")
    why = t.wait_started()
    if why:
        return why, [], None
    try:
        got = work()
    finally:
        rc = t.stop()
    lines = t.lines()
    return judge_tracer(rc, lines), lines, got


def _run(prog: str, *args) -> tuple[int, str]:
    r = own_boot.sh("selftests", [str(PROGRAMS / prog), *args], TIMEOUT)
    (RESULTS / f"{prog}{''.join(args).replace('-', '_')}.out").write_text(
        r.stdout + r.stderr)
    return r.returncode, r.stdout + r.stderr


def stage1() -> dict:
    harness, progs = _programs()
    if not os.path.exists("/dev/liveupdate"):
        return {"status": "fail", "reason": "no /dev/liveupdate although "
                "the kernel has LUO and was booted with liveupdate=1"}
    if not harness or not progs:
        return {"status": "fail", "reason": f"selftests missing in "
                f"{PROGRAMS}: harness {harness}, programs {progs}"}
    if FINALIZE.exists():
        FINALIZE.write_text("1\n")      # 6.19/7.0: the map as it is now
    before, why = _check("selftests-check0.json")
    if before is None:
        return {"status": "fail", "reason": why}

    def work():
        fails = []
        rc, out = _run(harness)
        w = judge_harness(rc, out)
        if w:
            fails.append(f"{harness}: {w}")
        for p in progs:
            rc, out = _run(p, "-s", "1")
            if rc or "Child PID" not in out:
                fails.append(f"{p} -s 1: rc={rc}: {out.strip()[-200:]}")
        return fails
    why, _, fails = _traced("selftests-trace1", work)
    fails = list(fails or []) + ([why] if why else [])
    if FINALIZE.exists():
        FINALIZE.write_text("1\n")      # 6.19/7.0: serialize the map again
    after, why = _check("selftests-check1.json")
    if after is None:
        return {"status": "fail", "reason": "; ".join(fails + [why])}
    fails += problems(after)
    w = judge_new_blocks(before, after)
    if w:
        fails.append(w)
    if LUTEST_ON:
        w = judge_lutest(_dmesg(), 1)
        if w:
            fails.append(w)
    new = len(blocks(after["ranges"]) - blocks(before["ranges"]))
    if fails:
        return {"status": "fail", "reason": "; ".join(fails[:4])}
    return {"status": "pass", "reason": (
        f"{harness} and {', '.join(p + ' -s 1' for p in progs)} passed "
        f"under trace --check (model == tracker growth, 0 lost); check: no "
        f"error, nothing unclaimed, the {new} new blocks all LUO's"
        + ("; lib/tests/liveupdate.c: its FLBs preserved" if LUTEST_ON
           else "")),
        "programs": progs}


def stage2() -> dict:
    _, progs = _programs()
    before, why = _check("selftests-check2.json", "--incoming")
    if before is None:
        return {"status": "fail", "reason": why}
    fails = problems(before)
    u1 = blocks([f for f in before["findings"] if f["id"] == "unrestored"],
                "LUO")

    def work():
        out = []
        for p in progs:
            rc, text = _run(p, "-s", "2")
            if rc or "TEST PASSED" not in text:
                out.append(f"{p} -s 2: rc={rc}: {text.strip()[-200:]}")
        return out
    why, lines, more = _traced("selftests-trace2", work)
    fails += list(more or []) + ([why] if why else [])
    restored = [(d["phys"], d.get("nr_pages") or 1) for d in lines
                if d.get("role") == "restore" and d.get("phys") is not None
                and not d.get("error")]
    after, why = _check("selftests-check3.json", "--incoming")
    if after is None:
        return {"status": "fail", "reason": "; ".join(fails + [why])}
    fails += problems(after)
    u2 = blocks([f for f in after["findings"] if f["id"] == "unrestored"],
                "LUO")
    w = judge_retrieved(u1, u2, restored)
    if w:
        fails.append(w)
    if LUTEST_ON:
        w = judge_lutest(_dmesg(), 2)
        if w:
            fails.append(w)
    if fails:
        return {"status": "fail", "reason": "; ".join(fails[:4])}
    return {"status": "pass", "reason": (
        f"{', '.join(p + ' -s 2' for p in progs)} passed under trace "
        f"--check ({len(restored)} restores traced); check --incoming: "
        f"{len(u1)} LUO blocks unrestored before, {len(u2)} after "
        f"(LUO's own), nothing unclaimed"
        + ("; lib/tests/liveupdate.c: its FLBs found and finished"
           if LUTEST_ON else ""))}


LUTEST_ON = False


def main(args: dict) -> None:
    global LUTEST_ON
    # the host says whether the kernel has CONFIG_LIVEUPDATE_TEST: its lines are
    # then required, never taken as optional
    LUTEST_ON = args.get("lutest") == "1"
    stage = args.get("stage")
    try:
        res = stage1() if stage == "selftests-1" else stage2()
    except (OSError, RuntimeError, ValueError) as e:
        res = {"status": "fail", "reason": f"{type(e).__name__}: {e}"}
    res["uname"] = os.uname().release
    name = f"{stage}.result.json"
    save(name, res)
    log(f"{stage}: {res['status']}: {res['reason']}")
    if stage != "selftests-1" or res["status"] != "pass":
        return
    if kexec_load("selftests", next_cmdline("selftests-1", "selftests-2"),
                  res, name):
        kexec_exec("selftests", res, name)
    res.update(status="fail", reason=f"stage 1 passed, no kexec: "
               f"{res.get('kexec_e') or res['kexec_load']['stderr']}")
    save(name, res)

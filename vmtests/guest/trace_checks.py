"""S6, in the guest: the bcc tracer against the kho_workload module.

``stage1(results) -> dict`` (cold boot, before finalize) loads the module
(which preserves its item table's blob: left out of the comparisons),
attaches ``kho-inspect trace --json --check`` and, the moment its start
record arrives, has the module preserve its first folio (one write(2) on a
file opened before: the ready line must mean ready), then preserves folios
of orders 1-10, a 2048-page run 8 MiB-aligned (one order-11 block), a vmalloc
area where the kernel has the API, unpreserves two folios where it has
that, and stops the tracer. Must hold, as sets of (phys, order):

* tracker(after) - tracker(before), walked independently with
  ``kho-inspect tracker``, == the tracer's model (recording functions);
* == the module's own list (``/sys/kernel/debug/kho_workload/list``), split
  here by its own code, plus only the vmalloc chunk pages KHO adds itself;
* the tracer's top-level API events == the module's calls (phys, order/nr).

``stage2(results) -> dict`` (after the KHO kexec) attaches the tracer
again, loads the module, which restores every item at load, then asks it to
restore a page that was never preserved. Must hold: one restore event per
item the module tried, at its phys, NULL exactly when the module saw a
failure; no checksum mismatch; the never-preserved restore flagged; no
other flag except an order above MAX_PAGE_ORDER. The order-11 item's fate
is recorded, not assumed.

"skip" only with the kernel feature missing, named.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

CTL = Path("/sys/kernel/debug/kho_workload/ctl")
LIST = Path("/sys/kernel/debug/kho_workload/list")
VMLINUX = "/kernel/vmlinux"
START_TIMEOUT = 240         # bcc compile under TCG + DWARF load
STOP_TIMEOUT = 180
MAX_PAGE_ORDER = 10         # x86-64 default; the ABI's, stated again here


def log(msg: str) -> None:
    print(f"trace_checks: {msg}", flush=True)


# --------------------------------------------------------------------------
# the module


def insmod(results: Path, *params: str) -> str | None:
    ko = results / "kho_workload.ko"
    if not ko.exists():
        return f"{ko} missing (the host did not build the module)"
    r = subprocess.run(["insmod", str(ko), *params], capture_output=True,
                       text=True, timeout=120)
    if r.returncode:
        return f"insmod rc={r.returncode}: {r.stderr.strip()[-200:]}"
    return None


def ctl(cmd: str) -> int:
    """Write one command; 0 or the errno the module returned."""
    return ctl_writer(cmd)()


def ctl_writer(cmd: str):
    """A function that writes *cmd* to the module's ctl file, opened now,
    and returns 0 or the errno (of the open, or the module's): the call it
    makes is one write(2)."""
    try:
        fd = os.open(CTL, os.O_WRONLY)
    except OSError as e:
        err = e.errno
        return lambda: err

    def write() -> int:
        try:
            os.write(fd, cmd.encode())
            return 0
        except OSError as e:
            return e.errno
        finally:
            os.close(fd)
    return write


def module_items() -> tuple[dict, list[dict]]:
    """(header fields, items) of the module's list."""
    head, items = {}, []
    for line in LIST.read_text().splitlines():
        if line.startswith("#"):
            head = dict(w.split("=", 1) for w in line[1:].split()
                        if "=" in w)
            continue
        d = dict(w.split("=", 1) for w in line.split() if "=" in w)
        for k in ("id", "order", "nr_pages", "ret"):
            if k in d:
                d[k] = int(d[k], 0)
        if "phys" in d:
            d["phys"] = int(d["phys"], 16)
        if d.get("pages"):
            d["pages"] = [int(x, 16) for x in d["pages"].split(",") if x]
        items.append(d)
    return head, items


def run_blocks(phys: int, nr: int) -> set:
    """The blocks a page run becomes, written here from the rule (each block
    the largest power of two both aligned at its start and fitting)."""
    out, pfn, left = set(), phys >> 12, nr
    while left:
        size = 1
        while pfn % (size * 2) == 0 and size * 2 <= left:
            size *= 2
        out.add((pfn << 12, size.bit_length() - 1))
        pfn += size
        left -= size
    return out


def item_blocks(it: dict) -> set:
    kind = it["kind"]
    if kind in ("folio", "blob"):
        return {(it["phys"], it["order"])}
    if kind in ("pages", "phys"):
        return run_blocks(it["phys"], it["nr_pages"])
    if kind == "vmalloc":
        return {(p, it["order"]) for p in it.get("pages", [])}
    return set()


# --------------------------------------------------------------------------
# the tracer and the walker, through the CLI


def run_quiet(cmd, timeout=300, **kw) -> subprocess.CompletedProcess:
    """subprocess.run capturing text; a timeout is rc -1, not an
    exception (the *run* the guest check helpers take)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(cmd, -1, e.stdout or "",
                                           f"timeout after {timeout}s")


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "kho_inspect", *args],
                          capture_output=True, text=True, timeout=timeout)


def tracker_blocks() -> set:
    r = cli("tracker", "--json", "-s", VMLINUX)
    if r.returncode:
        raise RuntimeError(f"kho-inspect tracker rc={r.returncode}: "
                           + r.stderr.strip()[-200:])
    out = set()
    for rg in json.loads(r.stdout)["ranges"]:
        step = 4096 << int(rg["order"])
        out |= {(rg["phys"] + i * step, int(rg["order"]))
                for i in range(rg["count"])}
    return out


class Tracer:
    """``kho-inspect trace --json -s VMLINUX ARGS`` running; its JSON lines
    copied to ``NAME.jsonl`` as they come. *on_start*, if given, is called
    the moment the ``start`` record arrives, before anything else (the
    ready line must mean ready: a call issued then must be traced)."""

    def __init__(self, results: Path, name: str, *args: str,
                 on_start=None):
        self.out = results / f"{name}.jsonl"
        self.err = results / f"{name}.stderr"
        self.started = threading.Event()
        self.on_start, self.on_start_result = on_start, None
        self.p = subprocess.Popen(
            [sys.executable, "-m", "kho_inspect", "trace", "--json",
             "-s", VMLINUX, *args],
            stdout=subprocess.PIPE, stderr=open(self.err, "w"))
        self.t0 = time.monotonic()
        self.pump = threading.Thread(target=self._copy, daemon=True)
        self.pump.start()

    def _copy(self) -> None:
        with open(self.out, "wb") as f:
            for line in self.p.stdout:
                start = not self.started.is_set() and _is_start(line)
                if start and self.on_start:
                    self.on_start_result = self.on_start()
                f.write(line)
                f.flush()
                if start:           # the start record is in the file
                    self.started.set()

    def lines(self) -> list[dict]:
        out = []
        for ln in self.out.read_text().splitlines():
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
        return out

    def wait_started(self) -> str | None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.started.wait(0.5):
                self.start_seconds = round(time.monotonic() - self.t0, 1)
                return None
            if self.p.poll() is not None:
                self.pump.join(10)
                if self.started.is_set():
                    continue
                return (f"tracer exited rc={self.p.returncode} before "
                        "attaching: " + self.err.read_text().strip()[-300:])
        self.p.kill()
        return f"tracer not attached after {START_TIMEOUT}s"

    def stop(self) -> int | None:
        self.p.send_signal(signal.SIGINT)
        try:
            rc = self.p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = None
        self.pump.join(30)          # every line copied
        return rc


def _is_start(line: bytes) -> bool:
    try:
        return json.loads(line).get("type") == "start"
    except (ValueError, AttributeError):
        return False


def leftovers() -> list[str]:
    """KHO probes left in tracefs or BPF objects pinned after detaching."""
    out = []
    for base in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        try:
            out += [f"{base}/kprobe_events: {ln.strip()}"
                    for ln in open(f"{base}/kprobe_events") if "kho" in ln]
        except OSError:
            pass
    try:
        out += [f"/sys/fs/bpf/{n}" for n in os.listdir("/sys/fs/bpf")]
    except OSError:
        pass
    return out


def api_events(lines: list[dict], fn: str) -> list[dict]:
    return [d for d in lines if d.get("type") == "event"
            and d["function"] == fn and not d["nested"]]


# --------------------------------------------------------------------------
# stage 1


def stage1(results: Path) -> dict:
    info: dict = {}
    fails: list[str] = []
    lacks: list[str] = []
    # the module first, so that its first command goes out the moment the
    # tracer says it is ready; what it preserves at load (its blob) is
    # before the trace, and left out of the comparisons below
    why = insmod(results)
    if why:
        return {"status": "fail", "reason": why}
    _, loaded = module_items()
    at_load = {it["id"] for it in loaded if it["state"] == "preserved"}
    info["preserved_at_load"] = sorted(at_load)
    before = tracker_blocks()
    cmds = [f"folio {o} 1" for o in range(MAX_PAGE_ORDER + 1)]
    cmds += ["pages 2048 2048", "pages 24 8", "vmalloc 16"]
    tr = Tracer(results, "s6-trace1", "--check",
                on_start=ctl_writer(cmds[0]))
    why = tr.wait_started()
    if why:
        return {"status": "fail", "reason": why}
    info["tracer_start_s"] = tr.start_seconds
    rcs = {cmds[0]: tr.on_start_result}
    rcs.update({c: ctl(c) for c in cmds[1:]})
    if rcs["vmalloc 16"] == errno.EOPNOTSUPP:
        lacks.append("kho_preserve_vmalloc (6.18+)")
    head, items = module_items()
    folios = [it for it in items if it["kind"] == "folio"]
    # unpreserve the order-1 and order-3 folios where the kernel can
    for it in folios:
        if it["order"] in (1, 3):
            rc = ctl(f"unpreserve {it['id']}")
            rcs[f"unpreserve {it['id']}"] = rc
            if rc == errno.EOPNOTSUPP:
                lacks.append("kho_unpreserve_* (6.19+)")
                break
    bad = {c: errno.errorcode.get(rc, rc) for c, rc in rcs.items()
           if rc and rc != errno.EOPNOTSUPP}
    if bad:
        fails.append(f"module commands failed: {bad}")
    rc = tr.stop()
    time.sleep(0.5)
    lines = tr.lines()
    (results / "s6-module1.txt").write_text(LIST.read_text())
    head, items = module_items()
    after = tracker_blocks()
    info["items"] = len(items)
    info["events"] = sum(1 for d in lines if d.get("type") == "event")
    start = next((d for d in lines if d.get("type") == "start"), {})
    info["probes"] = start.get("probes")
    info["compile_s"] = start.get("compile_seconds")
    check = next((d for d in lines if d.get("type") == "check"), None)
    end = next((d for d in lines if d.get("type") == "end"), {})
    if rc != 0:
        fails.append(f"tracer --check rc={rc}: "
                     + (json.dumps(check["differences"][:3]) if check
                        else tr.err.read_text().strip()[-200:]))
    if check is None:
        fails.append("tracer printed no check result")
    if end.get("lost"):
        fails.append(f"{end['lost']} events lost")
    left = leftovers()
    if left:
        fails.append(f"left attached after the tracer exited: {left[:3]}")
    # the kernel's own tracker, walked here, against the module's list
    grown, shrunk = after - before, before - after
    if shrunk:
        fails.append(f"{len(shrunk)} blocks left the tracker, e.g. "
                     f"{_fmt(shrunk)}")
    traced = [it for it in items if it["id"] not in at_load]
    held = set()
    for it in traced:
        if it["state"] == "preserved":
            held |= item_blocks(it)
    missing = held - grown
    extra = grown - held
    nvm = sum(1 for it in items if it["kind"] == "vmalloc"
              and it["state"] == "preserved")
    if missing:
        fails.append(f"{len(missing)} blocks the module holds are not new "
                     f"in the tracker: {_fmt(missing)}")
    if any(o != 0 for _, o in extra) or len(extra) > nvm:
        fails.append(f"tracker gained {len(extra)} blocks the module does "
                     f"not list (only {nvm} vmalloc chunk pages expected): "
                     f"{_fmt(extra)}")
    info["tracker_new_blocks"] = len(grown)
    info["module_blocks"] = len(held)
    # the tracer's model == what the tracker gained (the tracer says so in
    # its check line; compare its lists here too)
    if check:
        info["model"] = check.get("model_source")
        if check.get("tracker_added") != len(grown):
            fails.append(f"tracer saw the tracker gain "
                         f"{check.get('tracker_added')} blocks, the walk "
                         f"here {len(grown)}")
        if check.get("traced_added") != len(grown):
            fails.append(f"tracer's model added {check.get('traced_added')}"
                         f" blocks, the tracker gained {len(grown)}")
    # API events == the module's calls
    ev_f = {(d["phys"], d["order"]) for d in
            api_events(lines, "kho_preserve_folio")}
    want_f = {(it["phys"], it["order"]) for it in traced
              if it["kind"] in ("folio", "blob")}
    if ev_f != want_f:
        fails.append(f"kho_preserve_folio events {len(ev_f)} != module's "
                     f"folios {len(want_f)}: only traced "
                     f"{_fmt(ev_f - want_f)}, only listed "
                     f"{_fmt(want_f - ev_f)}")
    runs = [it for it in traced if it["kind"] in ("pages", "phys")]
    kind = runs[0]["kind"] if runs else "pages"
    fn = "kho_preserve_phys" if kind == "phys" else "kho_preserve_pages"
    ev_p = {(d["phys"], d["nr_pages"] if fn.endswith("pages")
             else d["size"] >> 12) for d in api_events(lines, fn)}
    want_p = {(it["phys"], it["nr_pages"]) for it in runs}
    if ev_p != want_p:
        fails.append(f"{fn} events {sorted(ev_p)} != module's runs "
                     f"{sorted(want_p)}")
    unp = {(d["phys"], d["order"]) for d in
           api_events(lines, "kho_unpreserve_folio")}
    want_u = {(it["phys"], it["order"]) for it in traced
              if it["state"] == "unpreserved"}
    if unp != want_u:
        fails.append(f"kho_unpreserve_folio events {sorted(unp)} != "
                     f"module's unpreserved {sorted(want_u)}")
    o11 = [b for b in held if b[1] > MAX_PAGE_ORDER]
    info["order_above_max"] = _fmt(set(o11))
    info["lacks"] = lacks
    if fails:
        return {"status": "fail", "reason": "; ".join(fails), **info}
    return {"status": "pass", "reason": (
        f"{len(grown)} new tracker blocks == tracer model == module list "
        f"({len(items)} items, {nvm} vmalloc chunk page(s)); "
        f"{info['events']} events; order>10 blocks {info['order_above_max']}"
        + (f"; kernel lacks {', '.join(lacks)}" if lacks else "")), **info}


# --------------------------------------------------------------------------
# stage 2


RESTORE_FN = {"folio": "kho_restore_folio", "blob": "kho_restore_folio",
              "pages": "kho_restore_pages", "vmalloc": "kho_restore_vmalloc"}


def stage2(results: Path) -> dict:
    info: dict = {}
    fails: list[str] = []
    notes: list[str] = []
    tr = Tracer(results, "s6-trace2")
    why = tr.wait_started()
    if why:
        return {"status": "fail", "reason": why}
    start = next(d for d in tr.lines() if d.get("type") == "start")
    # S8 plans one item left unrestored; S9 scribbled on one (a mismatch
    # is then expected of it, and only of it)
    plan = _read(results / "s8-plan.json")
    leave = plan.get("leave")
    scribbled = _read(results / "s9-scribbled.json").get("id")
    why = insmod(results, *([f"restore={plan['restore']}"]
                            if plan.get("restore") else []))
    if why:
        tr.stop()
        return {"status": "fail", "reason": why}
    rc_bogus = ctl("bogus")
    rc = tr.stop()
    time.sleep(0.5)
    lines = tr.lines()
    (results / "s6-module2.txt").write_text(LIST.read_text())
    head, items = module_items()
    if head.get("kho_boot") != "1":
        return {"status": "fail", "reason": "the module did not find its "
                "sub-node after the kexec", "head": head}
    if rc not in (0, 1):
        fails.append(f"tracer rc={rc}: {tr.err.read_text().strip()[-200:]}")
    if rc_bogus:
        fails.append(f"bogus command: {errno.errorcode.get(rc_bogus)}")
    events = [d for d in lines if d.get("type") == "event"
              and d["role"] == "restore" and not d["nested"]]
    info["restore_events"] = len(events)
    fates = {}
    for it in items:
        st = it["state"]
        if it["kind"] == "bogus":
            continue
        if it["id"] == leave and st == "unrestored":
            continue                    # S8's leak: not restored, by plan
        if st == "mismatch" and it["id"] != scribbled:
            fails.append(f"item {it['id']} {it['kind']}: checksum mismatch")
        if it["id"] == scribbled and st != "mismatch":
            fails.append(f"item {it['id']} was scribbled on (S9) yet is "
                         f"{st}, not mismatch")
        if st == "unpreserved":
            # unpreserved before the kexec: not handed over, not restored
            if any(d["phys"] == it["phys"] for d in events):
                fails.append(f"item {it['id']} was unpreserved before the "
                             "kexec, yet restored")
            continue
        if st not in ("restored", "failed", "mismatch"):
            if it["kind"] != "phys":
                fails.append(f"item {it['id']} {it['kind']}: {st}")
            continue
        fn = RESTORE_FN.get(it["kind"])
        match = [d for d in events if d["function"] == fn and (
            it["kind"] == "vmalloc" or d["phys"] == it["phys"])]
        if it["kind"] == "vmalloc":
            match = match[:1]
        if len(match) != 1:
            fails.append(f"item {it['id']} {it['kind']} 0x{it['phys']:x}: "
                         f"{len(match)} {fn} events")
            continue
        d = match[0]
        if (d["ret"] == 0) != (st == "failed"):
            fails.append(f"item {it['id']}: module says {st}, tracer saw "
                         f"ret {'NULL' if d['ret'] == 0 else 'ok'}")
        big = [b for b in item_blocks(it) if b[1] > MAX_PAGE_ORDER]
        if big:
            fates[f"0x{it['phys']:x}+{it['nr_pages']}p"] = st
            if not any("MAX_PAGE_ORDER" in f for f in d["flags"]):
                if start.get("restore_checks"):
                    fails.append(f"order>{MAX_PAGE_ORDER} restore of item "
                                 f"{it['id']} not flagged")
        other = [f for f in d["flags"] if "MAX_PAGE_ORDER" not in f]
        if other:
            fails.append(f"item {it['id']} flagged: {other}")
    bogus = [it for it in items if it["kind"] == "bogus"]
    if not bogus:
        fails.append("no bogus item in the module's list")
    elif start.get("restore_checks"):
        b = bogus[-1]
        flagged = [d for d in events if d["phys"] == b["phys"]
                   and any("not preserved" in f for f in d["flags"])]
        if not flagged:
            fails.append(f"restore of never-preserved 0x{b['phys']:x} not "
                         "flagged")
        info["bogus"] = f"0x{b['phys']:x} {b['state']}"
    else:
        notes.append("restore checks off: the kernel lacks KHO_PAGE_MAGIC "
                     "(6.16/6.17), so the incoming blocks cannot be "
                     "enumerated")
    info["order_above_max_fate"] = fates
    info["states"] = {st: sum(1 for it in items if it["state"] == st)
                      for st in sorted({it["state"] for it in items})}
    if fails:
        return {"status": "fail", "reason": "; ".join(fails), **info}
    return {"status": "pass", "reason": (
        f"{len(events)} restore events == module's {info['states']}; "
        f"order>10 fate {fates or 'n/a'}; bogus "
        f"{info.get('bogus', 'not checked')}"
        + (f" ({'; '.join(notes)})" if notes else "")), **info}


def _read(path: Path) -> dict:
    """A JSON file another scenario left, or {}."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fmt(blocks, n=3) -> str:
    return ", ".join(f"0x{p:x}/{o}" for p, o in sorted(blocks)[:n]) or "-"


def run(results_dir, stage: int) -> dict:
    results = Path(results_dir)
    res = (stage1 if stage == 1 else stage2)(results)
    (results / f"s6-stage{stage}.result.json").write_text(
        json.dumps(res, indent=1) + "\n")
    return res

"""kho-inspect trace: every KHO preserve, unpreserve and restore as it
happens (bcc). Registered with ``register(subparsers)``; ``main(argv)`` is
the stand-alone ``khotrace`` tool (scripts/khotrace).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
import time

from ..abi.common import MAX_PAGE_ORDER, PAGE_SHIFT
from ..errors import KhoError
from ..trace import model as tmodel
from ..trace import probes as tprobes
from ..trace.program import Options
from . import positive

SUMMARY = "trace KHO preserve, unpreserve and restore calls live (bcc)"
EPILOG = """\
examples:
  kho-inspect trace                   # every KHO call, one line each
  kho-inspect trace --summary 5       # counts, bytes, errors every 5 s
  kho-inspect trace --hist -d 30      # log2 latency per function, 30 s
  kho-inspect trace --stack           # who calls: kernel caller per call
  kho-inspect trace -p 181 --json     # JSON lines, only PID 181
  kho-inspect trace --check -d 60     # tracker after - before == traced?
  kho-inspect trace --list            # what would be probed, and how
"""
#: Present only in a kernel booted through a KHO kexec.
INCOMING_DEBUGFS = "/sys/kernel/debug/kho/in"
COLUMNS = ("TIME(s)", "PID", "COMM", "FUNCTION", "PHYS", "O/NR", "SIZE",
           "RET", "LAT(us)")
# 79 columns; names are cut to fit, numbers never (a field that outgrows its
# width, e.g. a phys above 16 TiB, shifts the rest of its line instead)
ROW = "{:<7} {:<6} {:<6} {:<16} {:<13} {:>5} {:>5} {:<6} {:>7}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("interval", nargs="?", type=positive,
                   help="with --summary/--hist: print every INTERVAL "
                        "seconds")
    p.add_argument("count", nargs="?", type=positive,
                   help="number of intervals, then exit")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--summary", action="store_true",
                      help="counts, bytes and errors by function and "
                           "order, aggregated in the kernel")
    mode.add_argument("--hist", action="store_true",
                      help="log2 histogram of latency per function")
    p.add_argument("-p", "--pid", type=positive,
                   help="trace this process only")
    p.add_argument("-d", "--duration", type=positive, metavar="SECONDS",
                   help="stop after SECONDS")
    p.add_argument("--stack", action="store_true",
                   help="show the kernel caller of each call, and a table "
                        "by caller at the end")
    p.add_argument("--check", action="store_true",
                   help="walk the tracker (drgn, needs the kernel's DWARF) "
                        "before attaching and after detaching; exit 1 if "
                        "what changed differs from what was traced")
    p.add_argument("-s", "--symbols", metavar="VMLINUX",
                   help="the kernel's vmlinux, for --check and the restore "
                        "checks (default: where drgn looks)")
    p.add_argument("--mechanism", choices=("auto", "fentry", "kprobe"),
                   default="auto",
                   help="fentry/fexit where the kernel's BTF allows "
                        "(auto, the default), or kprobes only")
    p.add_argument("--list", action="store_true",
                   help="print the probe points this kernel offers, exit")
    p.add_argument("--json", action="store_true",
                   help="JSON lines (schema in README.md)")


# --------------------------------------------------------------------------
# what one event says


def event_fields(ev) -> dict:
    """phys, order, nr_pages, size of one event, from its arguments or the
    block recorded inside it; None where the call does not say."""
    f = ev.func
    phys = order = nr = size = None
    if f.role.startswith("record"):
        phys, order = tmodel.record_block(ev)
    elif f.args[:1] == ("phys",):
        phys = ev.a0
        if f.args[1:2] == ("size",):
            size = ev.a1
        if f.args[1:2] == ("nr",):
            nr = ev.a1
    elif ev.rec_pfn is not None:
        phys = ev.rec_pfn << PAGE_SHIFT
    if f.args[:2] == ("page", "nr"):
        nr = ev.a1
    if f.args[:1] == ("size",):
        size = ev.a0
    if order is None and ev.rec_n == 1 and f.args[:1] == ("folio",):
        order = ev.rec_order
    if size is None and order is not None:
        size = 1 << (order + PAGE_SHIFT)
    if size is None and nr is not None:
        size = nr << PAGE_SHIFT
    return {"phys": phys, "order": order, "nr_pages": nr, "size": size}


def display_name(name: str) -> str:
    """A function's name in event lines: without the kho_ prefix that every
    one has (``kho_preserve_folio`` -> ``preserve_folio``,
    ``__kho_preserve_order`` -> ``__preserve_order``)."""
    if name.startswith("kho_"):
        return name[4:]
    if name.startswith("__kho_"):
        return "__" + name[6:]
    return name


def ret_text(ev) -> str:
    if ev.func.ret == "void":
        return ""
    if ev.func.ret == "int":
        from ..trace.session import errno_name
        return errno_name(ev.ret)
    return "NULL" if ev.ret == 0 else "ok"


def short_count(n: int) -> str:
    """A page count in at most 4 characters: 2048, 64K, 16M (rounded)."""
    if n < 10000:
        return str(n)
    v = n / 1024
    for unit in ("K", "M", "G", "T"):
        if v < 999.5 or unit == "T":
            return f"{v:.0f}{unit}"
        v /= 1024
    return str(n)


def short_us(ns: int) -> str:
    """A latency in microseconds within 6 characters."""
    us = ns / 1000
    if us < 1000:
        return f"{us:.1f}"
    if us < 1e6:
        return f"{us:.0f}"
    return f"{us / 1e6:.0f}s"


def short_size(n) -> str:
    """Bytes in at most 5 characters: 4K, 1.5M, 1024K (1024-based)."""
    if n is None:
        return "-"
    for unit in ("", "K", "M", "G", "T", "P"):
        if n < 1024 or unit == "P":
            if unit == "" or n == int(n):
                return f"{int(n)}{unit}"
            return f"{n:.1f}{unit}" if n < 10 else f"{n:.0f}{unit}"
        n /= 1024
    return str(n)


# --------------------------------------------------------------------------
# restore checks against the incoming state


class RestoreCheck:
    """Flags restores of blocks the previous kernel did not preserve, of
    another order, or of an order above MAX_PAGE_ORDER (which 7.1 - 7.3
    hand to prep_compound_page unchecked)."""

    def __init__(self, blocks: dict):
        self.blocks = blocks          # phys -> order, still marked at start

    def findings(self, ev, fields) -> list[str]:
        f = ev.func
        if f.role != "restore" or fields["phys"] is None:
            return []
        phys = fields["phys"]
        out = []
        if f.args == ("phys",):
            want = [(phys, None)]
        else:
            want = [(pfn << PAGE_SHIFT, o) for pfn, o in tmodel.split_run(
                phys >> PAGE_SHIFT, fields["nr_pages"] or 0)]
        for p, o in want:
            have = self.blocks.get(p)
            if have is None:
                out.append(f"0x{p:x} was not preserved (no KHO marker)")
                continue
            if o is not None and have != o:
                out.append(f"0x{p:x} preserved as order {have}, restored "
                           f"as order {o}")
            if have > MAX_PAGE_ORDER:
                out.append(f"0x{p:x} order {have} > MAX_PAGE_ORDER "
                           f"{MAX_PAGE_ORDER}"
                           + (" (kernel refused)" if ev.failed else
                              " (accepted: reaches prep_compound_page)"))
        return out


# --------------------------------------------------------------------------
# the command


def _program(args, cache={}):
    """The running kernel with its DWARF, loaded once per run."""
    if "prog" not in cache:
        from .source import open_source
        cache["prog"] = open_source(args).debug_program()
    return cache["prog"]


def _tracker_blocks(args) -> set:
    from ..walk.views import tracker_view
    doc = tracker_view(_program(args))
    blocks = set()
    for r in doc.get("ranges", []):
        step = 1 << (int(r["order"]) + PAGE_SHIFT)
        for i in range(int(r["count"])):
            blocks.add((int(r["phys"]) + i * step, int(r["order"])))
    return blocks


def _incoming_blocks(args):
    """phys -> order of every head page still carrying a KHO marker, or
    None when this kernel was not booted through KHO (or no DWARF)."""
    from ..walk.views import incoming_view
    if not os.path.isdir(INCOMING_DEBUGFS):
        return None           # not a KHO boot: no need to load DWARF
    try:
        doc = incoming_view(_program(args), max_pages=None)
    except KhoError:
        return None
    runs = (doc.get("scan") or {}).get("markers")
    if runs is None:
        return None
    out = {}
    for r in runs:
        step = 1 << (int(r["order"]) + PAGE_SHIFT)
        for i in range(int(r["count"])):
            out[int(r["phys"]) + i * step] = int(r["order"])
    return out


class _Stop(Exception):
    pass


def run(args, out=sys.stdout, err=sys.stderr) -> int:
    try:
        available, where = tprobes.available_functions()
    except OSError as e:
        raise KhoError(f"cannot list the kernel's functions "
                       f"(available_filter_functions, /proc/kallsyms): "
                       f"{e.strerror or e}; root needed, and a kernel with "
                       "CONFIG_KPROBES and tracefs") from None
    plan = tprobes.resolve(available, where)
    if not plan.probes:
        raise KhoError("this kernel has none of KHO's functions "
                       "(CONFIG_KEXEC_HANDOVER off?)")
    if args.list:
        return _list(args, plan, out)
    if args.interval and not (args.summary or args.hist):
        raise KhoError("an interval needs --summary or --hist")
    # the session attaches last: every check that can fail runs before
    from ..trace.session import Session, import_bcc, preflight
    import_bcc()
    preflight()
    before = _tracker_blocks(args) if args.check else None
    incoming = _incoming_blocks(args)
    checker = RestoreCheck(incoming) if incoming is not None else None
    events_wanted = not (args.summary or args.hist) or args.check
    opts = Options(events=events_wanted, summary=args.summary,
                   hist=args.hist, stack=args.stack, pid=args.pid)
    print("compiling the BPF program (bcc/LLVM)...", file=err, flush=True)
    stop = {"why": None, "tracing": False}

    def on_signal(signum, frame):
        # while tracing, only note it: the handler may run inside bcc's
        # ctypes callback, where an exception would be swallowed
        stop["why"] = signal.Signals(signum).name
        if not stop["tracing"]:
            raise _Stop()
    old = {s: signal.signal(s, on_signal)
           for s in (signal.SIGTERM, signal.SIGINT)}
    sess = None
    flagged = []
    by_caller: dict = {}
    try:
        mechanism = args.mechanism
        if args.stack and mechanism == "auto":
            # a stack walked from a BPF trampoline loses the caller on
            # some kernels (7.3.4: every frame unresolved); kprobes keep it
            mechanism = "kprobe"
        sess = Session(plan, opts, mechanism)
        printer = _Printer(args, sess, checker, flagged, by_caller, out)
        if events_wanted:
            # before the ready line: an event sent while no buffer is open
            # is dropped by the kernel, and not counted as lost
            sess.open_events(printer.event)
        _start(args, plan, sess, incoming, out, err)
        stop["tracing"] = True
        printer.t0 = time.monotonic_ns()    # the clock bpf_ktime_get_ns reads
        t0 = time.monotonic()
        deadline = t0 + args.duration if args.duration else None
        interval = args.interval or (None if not (args.summary or args.hist)
                                     else 1 << 30)
        next_print = t0 + interval if interval else None
        intervals = 0
        try:
            while not stop["why"]:
                now = time.monotonic()
                if deadline and now >= deadline:
                    stop["why"] = "duration"
                    break
                sess.poll(200)
                if next_print and time.monotonic() >= next_print:
                    printer.aggregate()
                    intervals += 1
                    next_print += interval
                    if args.count and intervals >= args.count:
                        stop["why"] = "count"
                        break
        except _Stop:
            pass
        # drain what is still buffered, then detach
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if events_wanted:
            sess.poll(0)
        if (args.summary or args.hist) and not (args.count and intervals
                                                >= args.count):
            printer.aggregate()
        events, lost = sess.events, sess.lost
        sess.close()
        sess = None
    except _Stop:
        if sess is not None:
            sess.close()
        print("interrupted before tracing started", file=err)
        return 0
    finally:
        if sess is not None:
            sess.close()
        for s, h in old.items():
            signal.signal(s, h)
    rc = 0
    if args.stack and by_caller:
        printer.callers()
    mdl = tmodel.replay(events, bool(plan.recording))
    if args.check:
        after = _tracker_blocks(args)
        diffs = tmodel.compare(mdl, before, after)
        if lost:
            diffs.insert(0, f"{lost} events lost: the model is incomplete")
        rc = 1 if diffs else 0
        _report_check(args, mdl, before, after, diffs, out)
    if flagged:
        rc = rc or 1
    _end(args, events, lost, flagged, stop["why"], out, err)
    return rc


def _wrap(text: str) -> str:
    """A start-up line within 80 columns, continuation lines indented."""
    return textwrap.fill(text, 79, subsequent_indent="  ",
                         break_on_hyphens=False)


def _list(args, plan, out) -> int:
    rows = [{"function": p.func.name, "symbol": p.symbol,
             "role": p.func.role} for p in plan.probes]
    if args.json:
        json.dump({"source": plan.source, "probes": rows,
                   "missing": [{"function": n, "why": w}
                               for n, w in plan.missing]}, out, indent=1)
        out.write("\n")
        return 0
    from tabulate import tabulate
    print(_wrap(f"functions listed in {plan.source}; tracker: "
                f"{'radix tree' if plan.radix else 'kho-v1 xarrays'}"),
          file=out)
    print(tabulate([(r["function"], r["symbol"], r["role"]) for r in rows],
                   headers=("function", "symbol probed", "role")), file=out)
    if plan.missing:
        print("\n" + _wrap("not probed (absent or inlined): "
                           + ", ".join(n for n, _ in plan.missing)),
              file=out)
    return 0


def _start(args, plan, sess, incoming, out, err) -> None:
    by = {}
    for sym, how in sess.attached:
        by.setdefault(how, []).append(sym)
    info = {"type": "start", "functions_from": plan.source,
            "tracker": "radix" if plan.radix else "kho-v1",
            "probes": [{"symbol": s, "mechanism": m}
                       for s, m in sess.attached],
            "missing": [n for n, _ in plan.missing],
            "compile_seconds": round(sess.compile_seconds, 1),
            "restore_checks": incoming is not None}
    if args.json:
        out.write(json.dumps(info) + "\n")
        out.flush()
    # stderr is for people in every mode: with --json too, they see what
    # was attached and when tracing starts
    for how, syms in sorted(by.items()):
        print(_wrap(f"{how}: {', '.join(syms)}"), file=err)
    if plan.missing:
        print(_wrap("not probed (absent or inlined): "
                    + ", ".join(n for n, _ in plan.missing)), file=err)
    if not plan.recording:
        print("no recording function probed: internal blocks are not "
              "seen", file=err)
    if incoming is None:
        print("restores not checked: not a KHO boot, or no debug info",
              file=err)
    print(f"Tracing {len(sess.attached)} KHO functions "
          f"(compiled in {sess.compile_seconds:.1f}s)... "
          "Hit Ctrl-C to end.", file=err, flush=True)
    if not (args.summary or args.hist or args.json):
        print(ROW.format(*COLUMNS), file=out, flush=True)


class _Printer:
    def __init__(self, args, sess, checker, flagged, by_caller, out):
        self.args, self.sess, self.checker = args, sess, checker
        self.flagged, self.by_caller, self.out = flagged, by_caller, out
        self.t0 = None
        self.quiet = args.summary or args.hist

    def event(self, ev) -> None:
        fields = event_fields(ev)
        found = (self.checker.findings(ev, fields) if self.checker
                 else [])
        self.flagged.extend(found)
        caller = self.sess.caller(ev) if self.args.stack else None
        if caller is not None and not ev.parent:
            c = self.by_caller.setdefault((caller, ev.func.name),
                                          [0, 0])
            c[0] += 1
            c[1] += fields["size"] or 0
        if self.quiet:
            return
        if self.args.json:
            doc = {"type": "event", "time_ns": ev.ts,
                   "pid": ev.pid, "tid": ev.tid, "comm": ev.comm,
                   "function": ev.func.name, "symbol": ev.probe.symbol,
                   "role": ev.func.role, **fields,
                   "ret": ev.ret if ev.func.ret != "void" else None,
                   "error": ev.failed, "latency_ns": ev.lat,
                   "nested": bool(ev.parent), "caller": caller,
                   "flags": found}
            if ev.func.role.startswith("record"):
                doc["tree"] = ev.a0
            self.out.write(json.dumps(doc) + "\n")
            self.out.flush()
            return
        name = display_name(ev.func.name)
        if ev.parent:
            name = ">" + name
        onr = ("-" if fields["order"] is None and fields["nr_pages"] is None
               else str(fields["order"]) if fields["order"] is not None
               else "n" + short_count(fields["nr_pages"]))
        print(ROW.format(f"{(ev.ts - self.t0) / 1e9:.2f}", ev.pid,
                         ev.comm[:6], name[:16],
                         "-" if fields["phys"] is None else
                         f"0x{fields['phys']:x}",
                         onr, short_size(fields["size"]),
                         ret_text(ev)[:6], short_us(ev.lat)),
              file=self.out)
        if caller:
            print(f"    caller: {caller}", file=self.out)
        for line in found:
            print(textwrap.fill(line, 79, initial_indent="    !! ",
                                subsequent_indent="       "), file=self.out)
        self.out.flush()

    def aggregate(self) -> None:
        if self.args.summary:
            self._summary()
        if self.args.hist:
            self._hist()

    def _summary(self) -> None:
        rows = self.sess.summary()
        stamp = time.strftime("%H:%M:%S")
        if self.args.json:
            self.out.write(json.dumps({
                "type": "summary", "time": stamp,
                "rows": [{"function": p.func.name, "order": o
                          if o >= 0 else None, "count": c, "bytes": b,
                          "errors": e} for p, o, c, b, e in rows]}) + "\n")
            self.out.flush()
            return
        from tabulate import tabulate
        print(f"\n{stamp}", file=self.out)
        # a folio's size is known only from its recording call, which
        # --summary alone does not pair with it (see trace.program.lean)
        print(tabulate([(p.func.name[:26], o if o >= 0 else "-", c,
                         "-" if o < 0 and p.func.args[:1] == ("folio",)
                         else short_size(b), e)
                        for p, o, c, b, e in rows],
                       headers=("function", "order", "calls", "bytes",
                                "errors")) if rows else "(no calls)",
              file=self.out, flush=True)

    def _hist(self) -> None:
        h = self.sess.hist()
        if self.args.json:
            self.out.write(json.dumps({
                "type": "hist", "unit": "ns log2",
                "functions": {p.func.name: {str(k): v for k, v in
                                            sorted(s.items())}
                              for p, s in h.items()}}) + "\n")
            self.out.flush()
            return
        for p, slots in sorted(h.items(), key=lambda kv: kv[0].index):
            print(f"\nfunction = {p.func.name}", file=self.out)
            print_log2(slots, "nsecs", self.out)
        self.out.flush()

    def callers(self) -> None:
        rows = sorted(self.by_caller.items(), key=lambda kv: -kv[1][0])
        if self.args.json:
            self.out.write(json.dumps({
                "type": "callers", "rows": [
                    {"caller": c, "function": f, "calls": n, "bytes": b}
                    for (c, f), (n, b) in rows]}) + "\n")
            return
        from tabulate import tabulate
        print("\nby caller:", file=self.out)
        print(tabulate([(c[:34], f[:22], n, short_size(b))
                        for (c, f), (n, b) in rows],
                       headers=("caller", "function", "calls", "bytes")),
              file=self.out)


def print_log2(slots: dict, unit: str, out) -> None:
    """A bcc-style log2 histogram (slot k counts values in [2^k, 2^(k+1)))."""
    if not slots:
        return
    hi = max(slots)
    top = max(slots.values())
    print(f"{unit:>20} : count     distribution", file=out)
    for k in range(min(slots), hi + 1):
        lo, up = (1 << k) if k else 0, (1 << (k + 1)) - 1
        n = slots.get(k, 0)
        bar = "*" * round(40 * n / top) if top else ""
        print(f"{lo:>9} -> {up:<9}: {n:<9} |{bar:<40}|", file=out)


def _report_check(args, mdl, before, after, diffs, out) -> None:
    doc = {"type": "check", "model_source": mdl.source,
           "traced_added": len(mdl.added),
           "traced_removed": len(mdl.removed),
           "tracker_added": len(after - before),
           "tracker_removed": len(before - after),
           "incomplete": mdl.incomplete, "differences": diffs,
           "ok": not diffs}
    if args.json:
        out.write(json.dumps(doc) + "\n")
        return
    print(f"\ncheck: tracker after - before: +{doc['tracker_added']} "
          f"-{doc['tracker_removed']} blocks; traced ({mdl.source}): "
          f"+{doc['traced_added']} -{doc['traced_removed']}", file=out)
    for line in diffs[:50]:
        print(f"  {line}", file=out)
    if len(diffs) > 50:
        print(f"  ... {len(diffs) - 50} more", file=out)
    print("check: " + ("OK, the tracker changed exactly as traced" if not
                       diffs else f"{len(diffs)} differences"), file=out)


def _end(args, events, lost, flagged, why, out, err) -> None:
    if args.json:
        out.write(json.dumps({"type": "end", "events": len(events),
                              "lost": lost, "flagged": flagged,
                              "reason": why}) + "\n")
    else:
        counted = (f"{len(events)} events, {lost} lost" if not (
            args.summary or args.hist) or args.check else "counted in the "
            "kernel")
        print(f"\n{counted}"
              + (f", {len(flagged)} flagged restores" if flagged else "")
              + f" (stopped: {why or 'end'})", file=err)
    out.flush()


def cmd_trace(args) -> int:
    return run(args)


def register(sub) -> None:
    from . import add_command
    p = add_command(sub, "trace", SUMMARY, cmd_trace, EPILOG)
    add_arguments(p)
    p.set_defaults(core=None, sample=None)


def main(argv=None) -> int:
    """``khotrace``: the same tool as ``kho-inspect trace``."""
    ap = argparse.ArgumentParser(
        prog="khotrace", description=SUMMARY, epilog=EPILOG.replace(
            "kho-inspect trace", "khotrace"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.set_defaults(core=None, sample=None)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except KhoError as e:
        print(f"khotrace: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1

"""S11, in the guest: a kernel holding more than a million preserved blocks.

``stage=large-1`` (cold boot, a large guest, small KHO scratch): the
kho_workload module preserves :data:`PLAN` (``scatter``: order-0 folios,
gapless or one every other page, one kho_preserve_folio call each) while
``trace --summary`` counts the calls in the kernel (``large-trace.jsonl``),
then one more scatter item with the tracer detached (the untraced rate),
kho-v1 finalizes, the module's own ``list`` is saved as ``large-list.txt``
(the truth the host compares every view with), guest/naive.py reads the
map (``large-naive.json``, runs), and the host is
asked for a
dump (``large-dump-request-1``,
acked by ``large-dump-done-1``); then ``kexec -s -l`` the same kernel with
``stage=large-2`` and ``kexec -e``.

``stage=large-2`` (KHO boot; the module is not loaded, so every block it
preserved stays preserved and marked): the boot's KHO lines and uptime, and
a second dump (``large-dump-request-2``) for the host's ``incoming``.

The guest judges nothing; vmtests/large.py does, from the dumps.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from pathlib import Path

import naive
import own_boot
from own_boot import RESULTS, kexec_exec, kexec_load, next_cmdline, save
import trace_checks             # S6's tracer runner and module loader
from trace_checks import insmod

CTL = Path("/sys/kernel/debug/kho_workload/ctl")
LIST = Path("/sys/kernel/debug/kho_workload/list")
FINALIZE = Path("/sys/kernel/debug/kho/out/finalize")
DUMP_TIMEOUT = 1800         # the host runs every command on the dump first

#: (command, times): 16 gapless runs of 65536 order-0 blocks (4 GiB) and
#: 16384 blocks one every other page: 1,064,960 blocks, about 16,400 runs,
#: preserved while trace --summary counts them
PLAN = [("scatter 65536 1", 16), ("scatter 16384 2", 1)]
#: then one more run with the tracer detached: the untraced rate
UNTRACED = "scatter 65536 1"


sh = functools.partial(own_boot.sh, "large")


def log(msg: str) -> None:
    print(f"large: {msg}", flush=True)


def meminfo() -> dict:
    out = {}
    for ln in Path("/proc/meminfo").read_text().splitlines():
        k, v = ln.split(":", 1)
        if k in ("MemTotal", "MemFree", "CmaFree", "CmaTotal"):
            out[k] = int(v.split()[0])
    return out


def dump(n: int, out: dict, name: str) -> None:
    """Ask the host for dump *n* and wait for its ack."""
    (RESULTS / f"large-dump-request-{n}").write_text(str(time.time()))
    done = RESULTS / f"large-dump-done-{n}"
    t = time.monotonic()
    while not done.exists():
        if time.monotonic() - t > DUMP_TIMEOUT:
            out["dump"] = "timeout waiting for the host"
            break
        time.sleep(0.5)
    else:
        out["dump"] = done.read_text().strip()
    out["dump_wait"] = round(time.monotonic() - t, 1)
    save(name, out)


def naive_reading(out: dict) -> None:
    """The outgoing map as guest/naive.py reads it, as runs in
    ``large-naive.json`` for the host to hold its map against."""
    t = time.monotonic()
    try:
        blocks = naive.outgoing_blocks(naive.program(debug_info=True))
    except Exception as e:          # judged by the host
        out["naive"] = {"error": f"{type(e).__name__}: {e}"}
        return
    out["naive"] = {"blocks": None if blocks is None else len(blocks),
                    "secs": round(time.monotonic() - t, 1)}
    if blocks is not None:
        (RESULTS / "large-naive.json").write_text(json.dumps(
            naive._reader().runs(blocks)))


def stage1(out: dict) -> None:
    out["meminfo_boot"] = meminfo()
    out["insmod"] = insmod(RESULTS)         # None, or why not
    save("large-1.json", out)
    if out["insmod"]:
        return
    tracer = trace_checks.Tracer(RESULTS, "large-trace", "--summary")
    out["trace_start"] = tracer.wait_started()
    out["trace_start_secs"] = getattr(tracer, "start_seconds", None)
    out["commands"] = []
    for cmd, times in PLAN:
        for _ in range(times):
            t = time.monotonic()
            try:
                CTL.write_text(cmd)
                err = None
            except OSError as e:
                err = str(e)
            out["commands"].append({"cmd": cmd, "error": err, "secs": round(
                time.monotonic() - t, 3)})
            if err:
                log(f"{cmd}: {err}")
    out["trace_rc"] = tracer.stop() if not out["trace_start"] else None
    try:
        CTL.write_text(UNTRACED)
        out["untraced"] = {"cmd": UNTRACED, "error": None}
    except OSError as e:
        out["untraced"] = {"cmd": UNTRACED, "error": str(e)}
    out["meminfo"] = meminfo()
    if FINALIZE.exists():
        t = time.monotonic()
        try:
            FINALIZE.write_text("1\n")
            out["finalize"] = "done"
        except OSError as e:
            out["finalize"] = f"error: {e}"
        out["finalize_secs"] = round(time.monotonic() - t, 2)
    (RESULTS / "large-list.txt").write_text(LIST.read_text())
    naive_reading(out)
    save("large-1.json", out)
    dump(1, out, "large-1.json")
    if kexec_load("large", next_cmdline("large-1", "large-2"), out,
                  "large-1.json"):
        kexec_exec("large", out, "large-1.json")


def stage2(out: dict) -> None:
    out["uptime"] = float(Path("/proc/uptime").read_text().split()[0])
    msgs = sh(["dmesg"]).stdout
    (RESULTS / "large-2-dmesg.txt").write_text(msgs)
    out["kho_lines"] = [ln for ln in msgs.splitlines()
                        if re.search(r"KHO|kho:", ln)][:20]
    out["in_fdt"] = Path("/sys/kernel/debug/kho/in/fdt").exists()
    out["meminfo"] = meminfo()
    save("large-2.json", out)
    dump(2, out, "large-2.json")


def main(args: dict) -> None:
    out: dict = {"uname": os.uname().release, "stage": args.get("stage")}
    (stage1 if args.get("stage") == "large-1" else stage2)(out)

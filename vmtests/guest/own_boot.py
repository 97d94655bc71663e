"""What the guest side of the scenarios with a boot of their own (S10
cross.py, S11 large.py, S12 numa.py, S13 luo.py) shares: running a command
quietly with a timeout, writing a JSON result to the results share, and
the command line of the next stage's kexec."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

RESULTS = Path("/results")


def sh(tag: str, cmd, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run *cmd* (logged to the console as ``TAG: run: ...``); a timeout is
    rc -1 with the reason in stderr, never an exception."""
    print(f"{tag}: run: " + " ".join(map(str, cmd)), flush=True)
    try:
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(cmd, -1, e.stdout or "",
                                           f"timeout after {timeout}s")


def cli(tag: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python3 -m kho_inspect ARGS`` through :func:`sh`."""
    return sh(tag, [sys.executable, "-m", "kho_inspect", *args], timeout)


def save(name: str, obj) -> None:
    (RESULTS / name).write_text(json.dumps(obj, indent=1) + "\n")


def next_cmdline(old: str, new: str, drop: str = "", add: str = "") -> str:
    """This boot's command line for the next stage: ``stage=OLD`` becomes
    ``stage=NEW``, kernel words matching the regex *drop* go, and *add* is
    put before the ``--`` that starts init's arguments."""
    line = Path("/proc/cmdline").read_text().strip()
    line = re.sub(rf"\bstage={re.escape(old)}\b", f"stage={new}", line)
    if drop:
        line = re.sub(rf"\s*\b(?:{drop})\S*", "", line)
    if add:
        line = line.replace(" -- ", f" {add} -- ", 1)
    return line


def kexec_load(tag: str, cmdline: str, out: dict, name: str,
               kernel: str = "/kernel/bzImage") -> bool:
    """``kexec -s -l KERNEL --append=CMDLINE``; the outcome goes into
    *out* (``kexec_load``), saved as *name*. True when loaded."""
    r = sh(tag, ["kexec", "-s", "-l", kernel, f"--append={cmdline}"])
    out["kexec_load"] = {"rc": r.returncode, "stderr": r.stderr[-300:]}
    save(name, out)
    return r.returncode == 0


def kexec_exec(tag: str, out: dict, name: str) -> None:
    """``kexec -e``: returns only when the kexec did not happen, with why
    in *out* (``kexec_e``), saved as *name*."""
    os.sync()
    r = sh(tag, ["kexec", "-e"], timeout=600)
    out["kexec_e"] = f"returned rc={r.returncode}: {r.stderr[-300:]}"
    save(name, out)

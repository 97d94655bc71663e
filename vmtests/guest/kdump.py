"""S7 kdump, guest side: the post-mortem flow users really have.

Users analyse vmcores that makedumpfile wrote from a crash kernel
(compressed, filtered: Debian's kdump-tools default is ``-d 31``), not QEMU
dumps. This boot (its own QEMU, after the S1-S6 one) does what a kdump
setup does:

stage=kdump (cold boot, ``kho=1 crashkernel=256M``): load the same bzImage as
  the crash kernel (``kexec -p -s``, command line with ``stage=crash``,
  without ``kho=1``/``crashkernel=``), build KHO state (test_kho is built in;
  the host's ``kho_workload.ko`` when it gave one), finalize where the
  generation has it (kho-v1), take the live views through the CLI
  (``status``, ``map``, ``tracker``, ``check``, ``incoming`` with ``--json``:
  ``s7-live-<view>.json``/``.stderr``), the System RAM ranges, then sync and
  panic with sysrq-c. ``kdump.json`` says what happened.
stage=kdump-kexec (cold boot): the kho_workload items, finalize, then a KHO
  kexec into the same kernel with stage=kdump: the kernel that crashes is
  then KHO-booted, and ``incoming`` has something to show (the module is
  loaded with ``restore=none``, so its items stay marked).
stage=crash (the crash kernel: ``/proc/vmcore``): ``makedumpfile -c -d 31``
  to ``kdump-c-d31`` and ``makedumpfile -E -d 31`` to ``kdump-E-d31.elf``;
  ``crash.json`` has each one's exit status, output and size. init.sh powers
  off after.

The host (vmtests/run, S7) runs the same views on both files and compares.
A failure before the panic is S7's verdict in ``kdump.json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path("/results")
BZIMAGE = "/kernel/bzImage"
VMLINUX = "/kernel/vmlinux"
DEBUGFS_KHO = Path("/sys/kernel/debug/kho")
WORKLOAD_CTL = Path("/sys/kernel/debug/kho_workload/ctl")
VMCORE = Path("/proc/vmcore")
#: the views taken live and, on the host, from each dump
VIEWS = ("status", "map", "tracker", "check", "incoming")
#: kdump-tools' default dump level; -c zlib (kdump format), -E ELF
DUMPS = {"kdump-c-d31": ["-c", "-d", "31"],
         "kdump-E-d31.elf": ["-E", "-d", "31"]}
#: what the module preserves (commands it lacks answer EOPNOTSUPP)
WORKLOAD = ("folio 0 3", "folio 3 1", "folio 9 1", "pages 24 8",
            "vmalloc 16")
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"kdump [{time.monotonic() - T0:6.1f}s]: {msg}", flush=True)


def write_json(name: str, obj) -> None:
    tmp = RESULTS / (name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    tmp.rename(RESULTS / name)


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    log("run: " + " ".join(cmd))
    t = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        r = subprocess.CompletedProcess(cmd, -1, "", f"timeout after "
                                        f"{timeout}s")
    r.elapsed = round(time.monotonic() - t, 1)
    log(f"  rc={r.returncode} in {r.elapsed}s")
    return r


def crash_cmdline(cmdline: str) -> str:
    """The crash kernel's command line: this one with stage=crash, without
    kho=1 (a kdump kernel hands nothing over) and crashkernel=, with one CPU
    and devices reset (what kdump-tools adds)."""
    words = [w for w in cmdline.split()
             if not re.fullmatch(r"kho=\S*|crashkernel=\S*", w)]
    words = ["stage=crash" if w == "stage=kdump" else w for w in words]
    i = words.index("--") if "--" in words else len(words)
    return " ".join(words[:i] + ["maxcpus=1", "nr_cpus=1", "reset_devices"]
                    + words[i:])


def read_sys(name: str) -> str:
    try:
        return Path("/sys/kernel", name).read_text().strip()
    except OSError as e:
        return f"unreadable: {e.strerror}"


def crash_image_kho() -> str | None:
    """Why the loaded crash kernel cannot work, or None: a crash image that
    carries KHO state (``kexec_crash_image->kho.fdt`` set: 6.19, whose
    kho_fill_kimage() does not skip crash images) boots with the crashed
    kernel's scratch areas as its memory, and hangs (seen on 6.19.11)."""
    try:
        import drgn
        from kho_inspect.memory import load_debug_info
        prog = drgn.Program()
        prog.set_kernel()
        load_debug_info(prog, VMLINUX)
        img = prog["kexec_crash_image"]
        if not img.value_():
            return "kexec_crash_image is NULL after kexec -p"
        try:
            fdt = img.kho.fdt.value_()
        except (AttributeError, LookupError):
            return None                 # struct kimage has no kho
    except Exception as e:      # noqa: BLE001 - the check is best effort
        log(f"crash image check: {type(e).__name__}: {e}")
        return None
    if fdt:
        return (f"the loaded crash kernel carries KHO state "
                f"(kexec_crash_image->kho.fdt = {fdt:#x}): it would boot "
                "into the crashed kernel's scratch areas (hangs)")
    return None


def system_ram() -> list[list[int]]:
    """[start, end) of every "System RAM" range (/proc/iomem, as root)."""
    out = []
    for ln in Path("/proc/iomem").read_text().splitlines():
        if ln.strip().endswith(": System RAM") and not ln.startswith(" "):
            a, b = ln.split(":")[0].strip().split("-")
            out.append([int(a, 16), int(b, 16) + 1])
    return out


def workload(res: dict) -> None:
    """Load the host's kho_workload.ko (if any) and preserve some memory."""
    ko = RESULTS / "kho_workload.ko"
    if not ko.exists():
        res["workload"] = "no module (test_kho only)"
        return
    # a KHO boot leaves the previous kernel's items preserved (incoming
    # markers); the parameter means nothing on a cold boot
    r = run(["insmod", str(ko), "restore=none"], timeout=120)
    if r.returncode:
        res["workload"] = f"insmod rc={r.returncode}: {r.stderr.strip()[-200:]}"
        return
    rcs = {}
    for c in WORKLOAD:
        try:
            fd = os.open(WORKLOAD_CTL, os.O_WRONLY)
            try:
                os.write(fd, c.encode())
                rcs[c] = "ok"
            finally:
                os.close(fd)
        except OSError as e:
            rcs[c] = os.strerror(e.errno)
    res["workload"] = rcs


def kdump_stage(args: dict) -> None:
    res = {"stage": "kdump", "uname": os.uname().release, "scenarios": {},
           "timings": {}}
    write_json("kdump.json", res)

    def fail(why: str) -> None:
        res["scenarios"]["S7"] = {"status": "fail", "reason": why}
        write_json("kdump.json", res)

    r = run([sys.executable, "-m", "kho_inspect", "--help"], timeout=120)
    if r.returncode or "map" not in r.stdout:
        return fail(f"kho_inspect CLI broken in the guest: --help rc="
                    f"{r.returncode}: "
                    + (r.stderr.strip().splitlines() or ["?"])[-1][:200])
    cmdline = Path("/proc/cmdline").read_text().strip()
    res["crash_cmdline"] = crash_cmdline(cmdline)
    res["crash_kernel_size"] = read_sys("kexec_crash_size")
    r = run(["kexec", "-p", "-s", BZIMAGE,
             f"--append={res['crash_cmdline']}"], timeout=300)
    res["kexec_p"] = {"rc": r.returncode, "stderr": r.stderr[-500:]}
    loaded = read_sys("kexec_crash_loaded")
    res["kexec_crash_loaded"] = loaded
    if r.returncode or loaded != "1":
        return fail(f"kexec -p rc={r.returncode}, kexec_crash_loaded="
                    f"{loaded}: {r.stderr.strip()[-200:]}")

    why = crash_image_kho()
    if why:
        res["scenarios"]["S7"] = {
            "status": "skip", "reason": why,
            "lacks": "a crash kernel kept out of KHO (kexec_file_load hands "
                     "it KHO's FDT and scratch areas; fixed in 7.1)"}
        write_json("kdump.json", res)
        return
    workload(res)
    fin = DEBUGFS_KHO / "out" / "finalize"
    if fin.exists():
        try:
            fin.write_text("1\n")
            res["finalize"] = "done"
        except OSError as e:
            res["finalize"] = f"error: {e}"
    else:
        res["finalize"] = "absent (stateless generation)"
    res["ram"] = system_ram()
    write_json("kdump.json", res)

    # the live views, just before the panic
    res["live"] = {}
    for view in VIEWS:
        t = time.monotonic()
        # -s: drgn's default lookup also wants the module's debug info
        r = run([sys.executable, "-m", "kho_inspect", view, "--json",
                 "-s", VMLINUX], timeout=600)
        res["timings"][view] = round(time.monotonic() - t, 1)
        (RESULTS / f"s7-live-{view}.stderr").write_text(r.stderr)
        if r.returncode in (0, 1) and r.stdout.strip():
            (RESULTS / f"s7-live-{view}.json").write_text(r.stdout)
        res["live"][view] = {"rc": r.returncode, "stderr": (
            r.stderr.strip().splitlines() or [""])[-1][:300]}
        write_json("kdump.json", res)
    if res["live"]["map"]["rc"] or res["live"]["status"]["rc"]:
        return fail("live views failed: " + json.dumps(
            {v: d for v, d in res["live"].items() if d["rc"] not in (0, 1)}))

    res["panic_at"] = time.time()
    write_json("kdump.json", res)
    log("panic (sysrq c)")
    os.sync()
    time.sleep(1)
    why = panic()
    if why:
        fail(why)


def panic() -> str | None:
    """sysrq c: panic(), which runs the loaded crash kernel; returns only
    if it did not (why)."""
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("c")
    time.sleep(30)
    return "still running 30 s after sysrq c"


def crash_stage(args: dict) -> None:
    res = {"stage": "crash", "uname": os.uname().release, "dumps": {}}
    vmcore = VMCORE
    res["vmcore_size"] = vmcore.stat().st_size if vmcore.exists() else None
    write_json("crash.json", res)
    if not vmcore.exists():
        res["error"] = "no /proc/vmcore in the crash kernel"
        write_json("crash.json", res)
        return
    for name, opts in DUMPS.items():
        out = RESULTS / name
        out.unlink(missing_ok=True)
        r = run(["makedumpfile", *opts, str(vmcore), str(out)], timeout=1200)
        res["dumps"][name] = {
            "options": " ".join(opts), "rc": r.returncode,
            "seconds": r.elapsed,
            "output": "\n".join(   # without the progress lines
                ln for ln in (r.stdout + r.stderr).splitlines()
                if ln.strip() and "%]" not in ln)[-1500:],
            "size": out.stat().st_size if out.exists() else None}
        write_json("crash.json", res)
    os.sync()


def kexec_stage(args: dict) -> None:
    """stage=kdump-kexec (cold boot): KHO state (the module's items), then
    a KHO kexec into this kernel with stage=kdump, so that the kernel that
    crashes has something incoming."""
    res = {"stage": "kdump-kexec", "uname": os.uname().release,
           "scenarios": {}, "timings": {}}

    def fail(why: str) -> None:
        res["scenarios"]["S7"] = {"status": "fail",
                                  "reason": "before the KHO kexec: " + why}
        write_json("kdump.json", res)

    workload(res)
    fin = DEBUGFS_KHO / "out" / "finalize"
    if fin.exists():
        try:
            fin.write_text("1\n")
        except OSError as e:
            return fail(f"finalize: {e}")
    cmdline = Path("/proc/cmdline").read_text().strip()
    new = re.sub(r"\bstage=kdump-kexec\b", "stage=kdump", cmdline)
    r = run(["kexec", "-s", "-l", BZIMAGE, f"--append={new}"], timeout=300)
    if r.returncode:
        return fail(f"kexec -l rc={r.returncode}: {r.stderr.strip()[-200:]}")
    write_json("kdump.json", res)
    os.sync()
    r = run(["kexec", "-e"], timeout=120)
    fail(f"kexec -e returned rc={r.returncode}: {r.stderr.strip()[-200:]}")


def main(args: dict) -> None:
    {"crash": crash_stage, "kdump-kexec": kexec_stage}.get(
        args.get("stage"), kdump_stage)(args)

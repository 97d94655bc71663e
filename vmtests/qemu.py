"""Start a vmtest guest under QEMU (TCG only) and talk to it over QMP.

The guest's root file system, the project tree, the kernel build directory
and a writable results directory are exported over virtio-9p.  The console
goes to a log file.  Every wait takes a timeout; on timeout the caller kills
QEMU (:meth:`Guest.kill`) and fails the test with the log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

MSIZE = 512000
QEMU = "qemu-system-x86_64"


class QMPError(RuntimeError):
    pass


class QMP:
    """Minimal QMP client: plain unix socket and line-delimited JSON."""

    def __init__(self, path: Path, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise QMPError(f"cannot connect to QMP socket {path}")
                time.sleep(0.1)
        self.f = self.sock.makefile("rwb")
        greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {greeting}")
        self.command("qmp_capabilities")

    def _read(self) -> dict:
        line = self.f.readline()
        if not line:
            raise QMPError("QMP connection closed")
        return json.loads(line)

    def command(self, name: str, timeout: float = 30, **args):
        self.sock.settimeout(timeout)
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            r = self._read()
            if "event" in r:
                continue
            if "error" in r:
                raise QMPError(f"{name}: {r['error']}")
            return r.get("return")

    def dump_guest_memory(self, dest: Path, timeout: float = 300) -> None:
        """ELF dump of all guest RAM (paging off), synchronously."""
        self.command("dump-guest-memory", timeout=timeout, paging=False,
                     protocol=f"file:{dest}", format="elf")

    def quit(self) -> None:
        try:
            self.command("quit", timeout=5)
        except (QMPError, OSError):
            pass

    def close(self) -> None:
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


class Guest:
    """One QEMU process."""

    def __init__(self, *, bzimage: Path, rootfs: Path, project: Path,
                 kernel_dir: Path, results: Path, workdir: Path,
                 init_args: list[str], memory: str = "2G",
                 extra_append: str = "", extra_qemu: tuple = ()):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        results.mkdir(parents=True, exist_ok=True)
        self.console = workdir / "console.log"
        self.qmp_path = workdir / "qmp.sock"
        self.qmp_path.unlink(missing_ok=True)
        append = (f"console=ttyS0 root=rootfs rootfstype=9p "
                  f"rootflags=trans=virtio,version=9p2000.L,msize={MSIZE} "
                  f"ro kho=1 panic=-1 init=/kho-init {extra_append} -- "
                  + " ".join(init_args)).replace("  ", " ")
        fsdevs = [("rootfs", rootfs, True), ("project", project, True),
                  ("kernel", kernel_dir, True), ("results", results, False)]
        cmd = [QEMU, "-accel", "tcg", "-cpu", "max", "-m", memory,
               "-smp", "1", "-nographic", "-no-reboot",
               "-device", "vmcoreinfo", "-device", "pvpanic-pci",
               "-action", "panic=exit-failure",
               "-qmp", f"unix:{self.qmp_path},server,nowait",
               "-kernel", str(bzimage), "-append", append,
               "-serial", f"file:{self.console}", "-monitor", "none",
               *extra_qemu]
        for i, (tag, path, ro) in enumerate(fsdevs):
            cmd += ["-fsdev", f"local,id=fs{i},path={path},"
                    f"security_model=none{',readonly=on' if ro else ''}",
                    "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={tag}"]
        self.cmd = cmd
        (workdir / "qemu-cmd.txt").write_text(
            " ".join(repr(c) if " " in c else c for c in cmd) + "\n")
        self.stderr = open(workdir / "qemu-stderr.log", "wb")
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=self.stderr,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._qmp: QMP | None = None

    def qmp(self) -> QMP:
        if self._qmp is None:
            self._qmp = QMP(self.qmp_path)
        return self._qmp

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, predicate, timeout: float, poll: float = 0.2) -> bool:
        """Wait until predicate() or QEMU exits; False on timeout/exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if not self.alive():
                return bool(predicate())
            time.sleep(poll)
        return False

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self._qmp:
            self._qmp.close()
            self._qmp = None
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.stderr.close()

    def console_tail(self, n: int = 30) -> str:
        try:
            lines = self.console.read_text(errors="replace").splitlines()
        except OSError:
            return "(no console log)"
        return "\n".join(lines[-n:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

"""Attach the tracer with bcc, deliver events, detach.

bcc is imported only here, lazily (Debian: ``python3-bpfcc``). Every
failure the user can meet (no bcc, not root, no kprobes/BPF, kernel headers
missing, lockdown) becomes a one-line :class:`KhoError`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import time

from ..errors import KhoError
from . import program as prog
from .probes import Plan, Probe

BTF = "/sys/kernel/btf/vmlinux"
#: Events per reader wake-up (the rest are taken at each poll interval).
WAKEUP_EVENTS = 64


class _Event(ctypes.Structure):
    _fields_ = [("ts", ctypes.c_uint64), ("lat", ctypes.c_uint64),
                ("a0", ctypes.c_uint64), ("a1", ctypes.c_uint64),
                ("a2", ctypes.c_uint64), ("ret", ctypes.c_int64),
                ("rec_pfn", ctypes.c_uint64), ("rec_order", ctypes.c_int32),
                ("rec_n", ctypes.c_uint32), ("pid", ctypes.c_uint32),
                ("tid", ctypes.c_uint32), ("probe", ctypes.c_uint32),
                ("parent", ctypes.c_uint32), ("depth", ctypes.c_uint32),
                ("stack", ctypes.c_int32), ("comm", ctypes.c_char * 16)]


@dataclasses.dataclass
class Event:
    """One traced call, decoded."""

    ts: int                 # entry, ns (CLOCK_MONOTONIC)
    lat: int                # ns
    probe: Probe
    a0: int
    a1: int
    a2: int
    ret: int                # int: sign-extended; ptr: the pointer
    rec_pfn: int | None     # first block recorded inside the call
    rec_order: int | None
    rec_n: int
    pid: int
    tid: int
    comm: str
    parent: int             # enclosing API probe index + 1 (0: none)
    stack: int

    @property
    def func(self):
        return self.probe.func

    @property
    def failed(self) -> bool:
        if self.func.ret == "int":
            return self.ret < 0
        if self.func.ret == "ptr":
            return self.ret == 0
        return False


def decode_event(plan: Plan, raw: _Event) -> Event:
    p = plan.probes[raw.probe]
    a1 = raw.a1
    if not plan.radix and "nr" in p.func.args:
        a1 &= 0xffffffff      # kho-v1 kernels pass nr as unsigned int
    ret = raw.ret
    if p.func.ret == "int":
        ret = ctypes.c_int32(ret & 0xffffffff).value
    elif p.func.ret == "ptr":
        ret &= (1 << 64) - 1
    return Event(ts=raw.ts, lat=raw.lat, probe=p, a0=raw.a0, a1=a1,
                 a2=raw.a2, ret=ret,
                 rec_pfn=raw.rec_pfn - 1 if raw.rec_pfn else None,
                 rec_order=raw.rec_order if raw.rec_n else None,
                 rec_n=raw.rec_n, pid=raw.pid, tid=raw.tid,
                 comm=raw.comm.decode(errors="replace"),
                 parent=raw.parent, stack=raw.stack)


def errno_name(ret: int) -> str:
    """``-12`` -> ``ENOMEM``; 0 -> ``0``."""
    if ret >= 0:
        return str(ret)
    return errno.errorcode.get(-ret, str(ret))


def import_bcc():
    """The bcc module, or a one-line error naming the Debian package."""
    try:
        import bcc
    except ImportError:
        raise KhoError("the tracer needs bcc's Python module: install "
                       "python3-bpfcc (Debian/Ubuntu) or your "
                       "distribution's bcc-python package") from None
    return bcc


def preflight() -> None:
    """The checks worth a clear message before bcc tries and fails."""
    if os.geteuid() != 0:
        raise KhoError("tracing needs root (CAP_BPF and CAP_PERFMON)")
    try:
        with open("/sys/kernel/security/lockdown") as f:
            mode = f.read()
        if "[confidentiality]" in mode:
            raise KhoError("kernel lockdown (confidentiality) forbids "
                           "kprobes and BPF reads of kernel memory")
    except OSError:
        pass
    if not os.path.exists("/sys/kernel/btf/vmlinux") and not (
            os.path.exists("/sys/kernel/kheaders.tar.xz")
            or os.path.isdir(f"/lib/modules/{os.uname().release}/build")):
        raise KhoError("bcc needs the kernel's headers: "
                       "/sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS), "
                       f"/lib/modules/{os.uname().release}/build, or BTF")


def btf_has(names) -> set[str]:
    """Which of *names* the kernel's BTF names (fentry needs that)."""
    try:
        with open(BTF, "rb") as f:
            data = f.read()
    except OSError:
        return set()
    return {n for n in names if b"\0" + n.encode() + b"\0" in data}


class Session:
    """Compile, attach, poll, detach (also as a context manager)."""

    def __init__(self, plan: Plan, opts: prog.Options, mechanism: str):
        self.plan, self.opts = plan, opts
        bcc = import_bcc()
        preflight()
        kfunc = set()
        if mechanism in ("auto", "fentry"):
            try:
                ok = bcc.BPF.support_kfunc()
            except Exception:
                ok = False
            if ok:
                kfunc = btf_has(p.symbol for p in plan.probes
                                if not p.clone)
            elif mechanism == "fentry":
                raise KhoError("fentry/fexit need BPF trampolines and the "
                               "kernel's BTF (CONFIG_DEBUG_INFO_BTF): use "
                               "--mechanism kprobe")
        self.kfunc = kfunc
        self.text = prog.generate(plan, opts, kfunc)
        self.bpf = None
        self.events: list[Event] = []
        self.lost = 0
        self.attached: list[tuple[str, str]] = []
        self.batched = False
        t = time.monotonic()
        try:
            self.bpf = bcc.BPF(text=self.text)
        except Exception as e:
            raise KhoError(_bcc_message(e)) from None
        self.compile_seconds = time.monotonic() - t
        try:
            for p in plan.probes:
                if p.symbol in kfunc:
                    self.attached.append((p.symbol, "fentry"))
                    continue
                e, r = prog.handler_names(p)
                self.bpf.attach_kprobe(event=p.symbol, fn_name=e)
                self.bpf.attach_kretprobe(event=p.symbol, fn_name=r,
                                          maxactive=64)
                self.attached.append((p.symbol, "kprobe"))
        except Exception as e:
            self.close()
            raise KhoError(f"attaching: {_bcc_message(e)}") from None

    def open_events(self, callback) -> None:
        """Call *callback(Event)* for every event from :meth:`poll`."""
        def handle(cpu, data, size):
            raw = ctypes.cast(data, ctypes.POINTER(_Event)).contents
            ev = decode_event(self.plan, raw)
            self.events.append(ev)
            callback(ev)

        def lost(n):
            self.lost += n
        table = self.bpf["events"]
        if not hasattr(self.bpf, "perf_buffer_consume"):
            table.open_perf_buffer(handle, page_cnt=256, lost_cb=lost)
            return
        try:
            # wake the reader once per WAKEUP_EVENTS events, not per event:
            # at a high rate, a wake-up per event is most of the cost
            table.open_perf_buffer(handle, page_cnt=256, lost_cb=lost,
                                   wakeup_events=WAKEUP_EVENTS)
            self.batched = True
        except TypeError:           # bcc older than 0.18
            table.open_perf_buffer(handle, page_cnt=256, lost_cb=lost)
            self.batched = False

    def poll(self, timeout_ms: int) -> None:
        """Deliver pending events, waiting up to *timeout_ms* for more."""
        if self.opts.events:
            self.bpf.perf_buffer_poll(timeout=timeout_ms)
            if self.batched:
                # fewer than WAKEUP_EVENTS pending wake nobody: take them
                self.bpf.perf_buffer_consume()
        else:
            time.sleep(timeout_ms / 1000)

    def summary(self, clear: bool = True) -> list[tuple[Probe, int, int,
                                                         int, int]]:
        """Rows (probe, order, count, bytes, errors) from the kernel."""
        t = self.bpf["summary"]
        rows = [(self.plan.probes[k.probe], k.order, v.count, v.bytes,
                 v.errors) for k, v in t.items()]
        if clear:
            t.clear()
        return sorted(rows, key=lambda r: (r[0].index, r[1]))

    def hist(self, clear: bool = True) -> dict:
        """{probe: {log2 slot: count}} from the kernel."""
        t = self.bpf["hist"]
        out: dict = {}
        for k, v in t.items():
            out.setdefault(self.plan.probes[k.probe], {})[k.slot] = v.value
        if clear:
            t.clear()
        return out

    def caller(self, ev: Event) -> str:
        """The first kernel frame outside KHO's own functions."""
        if ev.stack < 0:
            return "?"
        for addr in self.bpf["stacks"].walk(ev.stack):
            sym = self.bpf.ksym(addr, show_offset=False).decode(
                errors="replace")
            if not _own_frame(sym):
                return sym
        return "?"

    def close(self) -> None:
        """Detach everything (idempotent)."""
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _own_frame(sym: str) -> bool:
    """Frames that are KHO itself or the probe machinery, not a caller:
    KHO's functions, kprobe/BPF trampolines, and addresses in JIT memory
    that kallsyms attributes to the nearest marker symbol."""
    base = sym.split(".")[0]
    return (base.startswith(("kho_", "__kho_", "bpf_", "__bpf", "kprobe",
                             "__kretprobe", "arch_rethook", "rethook",
                             "ftrace", "__smp_locks", "[unknown]"))
            or not base)


def _bcc_message(e: Exception) -> str:
    msg = " ".join(str(e).split())
    if "kernel headers" in msg or "Unable to find kernel" in msg:
        return ("bcc could not find kernel headers: it unpacks "
                "/sys/kernel/kheaders.tar.xz with xz (install xz-utils), or "
                "install the kernel's headers package")
    if "Operation not permitted" in msg or "EPERM" in msg:
        return "BPF refused (not root, or lockdown): " + msg[:200]
    return f"bcc: {type(e).__name__}: {msg[:300]}"

"""Physical-memory sources: a drgn ``Program`` over /proc/kcore, a vmcore,
a QEMU ``dump-guest-memory`` core, a kho_inspect handover image, or
in-memory segments (tests). Everything above reads through :class:`PhysMemory`.
"""

from __future__ import annotations

import contextlib
import os
import platform as _platform

from .errors import KhoError, MemoryFault

try:
    import drgn
except ImportError:  # pragma: no cover - drgn is a hard dependency
    drgn = None

def _need_drgn():
    if drgn is None:
        raise KhoError("drgn is not installed (pip install drgn, or the "
                       "distribution's python3-drgn)")


# -- the one fault policy ----------------------------------------------------
#
# Every read of a program's memory, by the decoder (PhysMemory.read), the
# walker (walk._read re-exports read/reading) and the entry points (the CLI's
# main and scripts/_common.run, around everything else), turns what drgn
# raises for memory it cannot deliver into one KhoError, worded by
# fault_message. Nothing else words a fault (walk/incoming's memmap scan
# catches FaultError only to list the ranges it could not read).

#: What drgn raises when it cannot deliver memory: a page missing from the
#: source (FaultError), a segment it cannot read from the file (OSError, e.g.
#: EINVAL for a file offset past 2^63), a size it cannot allocate
#: (MemoryError, a length taken from damaged input).
FAULTS: tuple = ((drgn.FaultError, OSError, MemoryError) if drgn
                 else (OSError, MemoryError))
#: What the CLI's main words as a fault around a whole command: a drgn
#: fault that escaped every :func:`reading` (an OSError there may be the
#: output's own, so main words it apart).
STRAY_FAULT = drgn.FaultError if drgn else ()

_SOURCE_KEY = "kho_inspect_source"
_HOLES_KEY = "kho_inspect_holes"


def elf_holes(path: str) -> list[tuple[int, int]]:
    """Physical ranges ``[start, end)`` an ELF core declares but does not
    hold: a PT_LOAD's memory past its file data (``p_memsz > p_filesz``)
    that no other segment's data covers. ``makedumpfile -E -d N`` leaves
    the pages it filtered out that way, and drgn reads them from a kernel
    core as zeros, so :meth:`PhysMemory.read` refuses them instead. Empty
    for anything else (other formats, an unreadable header)."""
    import struct
    try:
        with open(path, "rb") as f:
            eh = f.read(64)
            if len(eh) < 64 or eh[:4] != b"\x7fELF" or eh[4:6] != b"\2\1":
                return []
            phoff, = struct.unpack_from("<Q", eh, 32)
            phentsize, phnum = struct.unpack_from("<HH", eh, 54)
            if phentsize != 56 or phnum > 1 << 16:
                return []
            f.seek(phoff)
            table = f.read(56 * phnum)
    except OSError:
        return []
    tails, data = [], []
    for i in range(len(table) // 56):
        ptype, _, _, _, paddr, filesz, memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", table, i * 56)
        if ptype == 1:                                  # PT_LOAD
            data.append((paddr, paddr + filesz))
            if memsz > filesz:
                tails.append((paddr + filesz, paddr + memsz))
    holes = []
    for a, b in sorted(tails):
        for da, db in sorted(data):                 # minus held data
            if da < b and a < db:
                if a < da:
                    holes.append((a, da))
                a = max(a, db)
            if a >= b:
                break
        if a < b:
            holes.append((a, b))
    return holes


def _in_hole(prog, phys: int, size: int) -> int | None:
    """The first address of ``[phys, phys + size)`` in a hole of *prog*'s
    ELF core (:func:`elf_holes`), or None."""
    try:
        holes = prog.cache.get(_HOLES_KEY)
    except AttributeError:
        return None
    end = phys + max(size, 1)
    for a, b in holes or ():
        if a < end and phys < b:
            return max(a, phys)
    return None


def name_source(prog, name: str, filtered: bool) -> None:
    """Record how messages name *prog*'s memory; *filtered* says whether
    missing pages may have been filtered out of a dump (makedumpfile)."""
    prog.cache[_SOURCE_KEY] = (name, filtered)


def source_name(prog) -> str:
    """How messages name *prog*'s memory."""
    return _source(prog)[0]


def may_be_filtered(prog) -> bool:
    """Whether pages missing from *prog*'s memory may have been filtered out
    of a dump (then a fault says nothing about the kernel's own state)."""
    return _source(prog)[1]


def _source(prog) -> tuple[str, bool]:
    try:
        return prog.cache[_SOURCE_KEY]
    except (AttributeError, KeyError, TypeError):
        pass
    try:
        live = bool(prog.flags & drgn.ProgramFlags.IS_LIVE)
    except AttributeError:
        return "the memory source", False
    if live:
        return "the running kernel (/proc/kcore)", False
    return "the core dump", True


def fault_message(prog, what: str, e: BaseException, phys: int | None = None,
                  size: int | None = None, source: str | None = None) -> str:
    """One line for a read of *what* that failed with *e*: which address,
    why, in which source, and (dumps) that the page may have been filtered
    out. *phys*/*size* name a physical range, else drgn's address is used;
    *source* overrides the name recorded for *prog*."""
    name, filtered = _source(prog)
    name = source or name
    if phys is not None:
        where = f" at phys 0x{phys:x}" + (f" (+0x{size:x})" if size else "")
    else:
        addr = getattr(e, "address", None)
        where = f" at 0x{addr:x}" if isinstance(addr, int) else ""
    if isinstance(e, MemoryError):
        why = "the size is more than this machine can allocate"
    elif isinstance(e, OSError) and e.strerror:
        why = f"the file cannot be read there ({e.strerror})"
    else:
        why = getattr(e, "message", None) or str(e) or type(e).__name__
    hint = (" (page filtered out of the dump, e.g. by makedumpfile -d: "
            "re-take it with -d 0 or a QEMU dump-guest-memory core)"
            if filtered and drgn and isinstance(e, drgn.FaultError) else "")
    return f"cannot read {what}{where}: {why} in {name}{hint}"


@contextlib.contextmanager
def reading(prog, what: str):
    """Context: a fault (:data:`FAULTS`) inside becomes a KhoError that names
    *what* and the source.

    >>> with reading(prog, "kho_out"):
    ...     fdt = prog["kho_out"].fdt.value_()
    """
    try:
        yield
    except FAULTS as e:
        raise KhoError(fault_message(prog, what, e)) from None


def read(prog, address: int, size: int, what: str,
         physical: bool = False) -> bytes:
    """``prog.read(address, size, physical)``; a fault names *what*."""
    with reading(prog, what):
        return prog.read(address, size, physical)


def x86_64_platform():
    """The drgn platform of every KHO target kho_inspect supports."""
    _need_drgn()
    return drgn.Platform(drgn.Architecture.X86_64,
                         drgn.PlatformFlags.IS_64_BIT
                         | drgn.PlatformFlags.IS_LITTLE_ENDIAN)


class PhysMemory:
    """Reads physical memory through a drgn :class:`drgn.Program`.

    :param prog: any program whose physical address space is populated.
    :param description: how the source is named in messages.
    """

    def __init__(self, prog, description: str):
        self.prog = prog
        self.description = description

    def read(self, phys: int, size: int, what: str) -> bytes:
        """Read *size* bytes at *phys*; *what* names the data for errors.

        :raises MemoryFault: if any byte is not in the source.
        """
        if phys < 0 or size < 0 or phys + size > 1 << 64:
            raise MemoryFault(phys, size, what, "address out of range")
        hole = _in_hole(self.prog, phys, size)
        try:
            if hole is not None:            # drgn would give zeros
                raise drgn.FaultError("not in the dump (past its ELF "
                                      "segment's file data)", hole)
            return self.prog.read(phys, size, True)
        except FAULTS + (ValueError, OverflowError) as e:
            raise MemoryFault(phys, size, what, message=fault_message(
                self.prog, what, e, phys, size, self.description)) from None


def program_from_segments(segments) -> "drgn.Program":
    """A drgn program whose physical memory is *segments*, a list of
    ``(phys, bytes)``. Used for tests and benchmarks; the program is a real
    drgn program, not a mock."""
    _need_drgn()
    prog = drgn.Program(x86_64_platform())
    name_source(prog, "the given segments", filtered=False)
    for phys, data in segments:
        data = bytes(data)

        def reader(address, count, offset, physical, data=data):
            return data[offset:offset + count]
        prog.add_memory_segment(phys, len(data), reader, physical=True)
    return prog


def open_core(path: str, vmlinux: str | None = None):
    """Open a vmcore, QEMU dump or handover image with drgn.

    :param vmlinux: debug info to load (required only by the walker).
    """
    _need_drgn()
    if not os.path.exists(path):
        raise KhoError(f"{path}: no such file")
    prog = drgn.Program()
    try:
        prog.set_core_dump(path)
    except Exception as e:  # noqa: BLE001 - see _drgn_failed
        raise KhoError(f"{path}: drgn cannot open it as a core: "
                       f"{_drgn_failed(e)}") from None
    prog.cache[_HOLES_KEY] = elf_holes(path)
    if vmlinux:
        load_debug_info(prog, vmlinux)
    return prog


def open_live(vmlinux: str | None = None):
    """Open the running kernel (``/proc/kcore``); needs root."""
    _need_drgn()
    if _platform.system() != "Linux":
        raise KhoError("live mode needs Linux; use --core FILE")
    if not os.path.exists("/proc/kcore"):
        # Not "needs root", even when not root: sudo would not help.
        raise KhoError("this kernel has no /proc/kcore (CONFIG_PROC_KCORE; "
                       "or /proc is not mounted); use --core FILE")
    if os.geteuid() != 0:
        raise KhoError("reading the running kernel needs root "
                       "(/proc/kcore); run with sudo, or use --core FILE")
    prog = drgn.Program()
    try:
        prog.set_kernel()
    except Exception as e:  # noqa: BLE001 - see _drgn_failed
        raise KhoError("cannot open the running kernel: "
                       f"{_drgn_failed(e)}") from None
    if vmlinux:
        load_debug_info(prog, vmlinux)
    return prog


def _drgn_failed(e: Exception) -> str:
    """What went wrong when drgn could not open a file, as one line; *e* is
    re-raised when it is not one of the ways drgn fails on bad files (so a
    bug still shows as one). drgn raises a bare Exception for libelf and
    libdw errors (a truncated or damaged ELF file)."""
    if isinstance(e, MemoryError):
        return "it claims more memory than this machine can allocate"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if type(e) is Exception or isinstance(e, FAULTS + (
            ValueError, OverflowError, drgn.BadDataError)):
        return str(e) or type(e).__name__
    raise e


def is_live(prog) -> bool:
    """Whether *prog* reads the running kernel (``/proc/kcore``)."""
    return bool(prog.flags & drgn.ProgramFlags.IS_LIVE)


def is_kernel(prog) -> bool:
    """Whether drgn took *prog* for a Linux kernel (a VMCOREINFO note, or
    /proc/kcore), as opposed to a user-space core or a handover image."""
    return bool(prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL)


def load_debug_info(prog, vmlinux: str | None = None) -> None:
    """Load the kernel's DWARF: *vmlinux* if given, else drgn's defaults
    (/usr/lib/debug, /lib/modules/$(uname -r)/build, ...)."""
    try:
        if vmlinux:
            prog.load_debug_info([vmlinux])
        else:
            # the kernel's own DWARF only (KHO is built in): with default=True
            # drgn also wants every loaded module's, and an out-of-tree
            # module without debug info would fail the whole load
            prog.load_debug_info(None, main=True)
    except drgn.MissingDebugInfoError as e:
        raise KhoError(f"missing kernel debug info: {e}; pass -s VMLINUX "
                       "(the vmlinux of this exact build) or install the "
                       "kernel's -dbg/-dbgsym package") from None
    except Exception as e:  # noqa: BLE001 - see _drgn_failed
        raise KhoError(f"cannot load debug info {vmlinux or ''}: "
                       f"{_drgn_failed(e)}") from None


def kernel_release(prog) -> str | None:
    """The release (``uname -r``) of the kernel *prog* describes, from
    VMCOREINFO (drgn's ``UTS_RELEASE``), or None for a core without one."""
    try:
        return prog["UTS_RELEASE"].string_().decode()
    except (KeyError, LookupError, ValueError, drgn.FaultError):
        pass
    if prog.flags & drgn.ProgramFlags.IS_LIVE and \
            prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        return os.uname().release
    return None

"""Physical-memory sources: a drgn ``Program`` over /proc/kcore, a vmcore,
a QEMU ``dump-guest-memory`` core, a kho_inspect handover image, or
in-memory segments (tests). Everything above reads through :class:`PhysMemory`.
"""

from __future__ import annotations

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
        try:
            return self.prog.read(phys, size, True)
        except drgn.FaultError as e:
            raise MemoryFault(phys, size, what, f"{e} in "
                              f"{self.description}") from None
        except (ValueError, OverflowError) as e:
            raise MemoryFault(phys, size, what, str(e)) from None


def program_from_segments(segments) -> "drgn.Program":
    """A drgn program whose physical memory is *segments*, a list of
    ``(phys, bytes)``. Used for tests and benchmarks; the program is a real
    drgn program, not a mock."""
    _need_drgn()
    prog = drgn.Program(x86_64_platform())
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
    except (drgn.FaultError, ValueError, OSError) as e:
        raise KhoError(f"{path}: drgn cannot open it as a core: {e}") from None
    if vmlinux:
        load_debug_info(prog, vmlinux)
    return prog


def open_live(vmlinux: str | None = None):
    """Open the running kernel (``/proc/kcore``); needs root."""
    _need_drgn()
    if _platform.system() != "Linux":
        raise KhoError("live mode needs Linux; use --core FILE")
    if os.geteuid() != 0:
        raise KhoError("reading the running kernel needs root "
                       "(/proc/kcore); run with sudo, or use --core FILE")
    if not os.path.exists("/proc/kcore"):
        raise KhoError("/proc/kcore is missing: the kernel lacks "
                       "CONFIG_PROC_KCORE; use --core FILE")
    prog = drgn.Program()
    try:
        prog.set_kernel()
    except (OSError, ValueError) as e:
        raise KhoError(f"cannot open the running kernel: {e}") from None
    if vmlinux:
        load_debug_info(prog, vmlinux)
    return prog


def load_debug_info(prog, vmlinux: str | None = None) -> None:
    """Load the kernel's DWARF: *vmlinux* if given, else drgn's defaults
    (/usr/lib/debug, /lib/modules/$(uname -r)/build, ...)."""
    try:
        if vmlinux:
            prog.load_debug_info([vmlinux])
        else:
            prog.load_debug_info(None, default=True, main=True)
    except drgn.MissingDebugInfoError as e:
        raise KhoError(f"missing kernel debug info: {e}; pass -s VMLINUX "
                       "(the vmlinux of this exact build) or install the "
                       "kernel's -dbg/-dbgsym package") from None
    except (OSError, ValueError) as e:
        raise KhoError(f"cannot load debug info {vmlinux or ''}: {e}") from None


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

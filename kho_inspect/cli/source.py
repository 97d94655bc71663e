"""Resolve the command line into a memory source and a root FDT.

Order of preference for the FDT: ``--fdt FILE``, ``--fdt-phys ADDR``, the
handover image's note, then (vmcore) the kernel's own pointer read with
DWARF, or (live) debugfs, falling back to DWARF when debugfs's copy is
missing or truncated.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os

from .. import fdt as fdtmod
from .. import memory, samples
from ..abi import common, v1
from ..decode import identify, read_fdt_at
from ..decode.handover import check_bitmap_bytes
from ..errors import KhoError
from ..image import read_image_meta
from .report import note

DEBUGFS = "/sys/kernel/debug/kho"
SETUP_DATA = "/sys/kernel/boot_params/setup_data"


#: Debug-info files drgn's default search tries for the running kernel.
_DEFAULT_VMLINUX = ("/usr/lib/debug/boot/vmlinux-{r}",
                    "/usr/lib/debug/lib/modules/{r}/vmlinux",
                    "/boot/vmlinux-{r}", "/lib/modules/{r}/build/vmlinux",
                    "/lib/modules/{r}/vmlinux")


def _looked_for(release: str | None) -> str:
    if not release:
        return ""
    return " (looked for " + ", ".join(
        p.format(r=release) for p in _DEFAULT_VMLINUX) + ")"


@dataclasses.dataclass
class Source:
    """An opened source: memory (maybe), program, image note."""

    description: str
    core: str | None = None
    symbols: str | None = None
    prog: object = None
    meta: dict | None = None
    _debug_loaded: bool = False

    @property
    def live(self) -> bool:
        return self.core is None

    def program(self):
        if self.prog is None:
            prog = (memory.open_core(self.core) if self.core
                    else memory.open_live())
            # Pages missing from a kernel dump may have been filtered out;
            # a handover image holds only what it holds, /proc/kcore all.
            memory.name_source(prog, self.description,
                               filtered=self.core is not None and
                               self.meta is None and not memory.is_live(prog))
            self.prog = prog
        return self.prog

    def memory(self) -> memory.PhysMemory:
        return memory.PhysMemory(self.program(), self.description)

    def debug_program(self):
        """The program with the kernel's DWARF loaded (the walker, and the
        decoder's fallbacks, need it). Errors name the files looked for,
        and a ``-s VMLINUX`` that drgn did not take (drgn only warns when
        it is missing or from another build) is refused."""
        if self._debug_loaded:
            return self.prog
        if self.meta is not None:
            raise KhoError("a handover image has no kernel state to walk; "
                           "use a vmcore or the live kernel")
        if self.symbols:
            check_symbols(self.symbols)
        prog = self.program()
        if self.core and not memory.is_kernel(prog):
            raise KhoError(f"{self.description}: not a Linux kernel core "
                           "dump (no VMCOREINFO note; QEMU's "
                           "dump-guest-memory writes one only with -device "
                           "vmcoreinfo) and not a handover image")
        log = logging.getLogger("drgn")
        level = log.level
        log.setLevel(logging.ERROR)     # drgn's "ignoring" warnings: ours below
        try:
            memory.load_debug_info(prog, self.symbols)
        except KhoError as e:
            if self.symbols:
                raise
            # drgn's default search failed: say where it looked.
            rel = os.uname().release if self.live else self.release()
            raise KhoError(f"{e}{_looked_for(rel)}") from None
        finally:
            log.setLevel(level)
        try:
            status = prog.main_module().debug_file_status
        except AttributeError:
            status = None               # older drgn: nothing to check
        except LookupError:             # no main module: nothing was loaded
            status = False
        if self.symbols and status is not None and \
                status != memory.drgn.ModuleFileStatus.HAVE:
            raise KhoError(f"-s {self.symbols}: drgn did not use it: it is "
                           "not the vmlinux of this kernel (build ID "
                           "differs)")
        self._debug_loaded = True
        return prog

    def release(self) -> str | None:
        if self.meta and self.meta.get("release"):
            return self.meta["release"]
        return memory.kernel_release(self.program())


def open_source(args) -> Source:
    """The source the command line names, opened once per *args* (the CLI's
    error handling finds it there to name it)."""
    src = getattr(args, "opened_source", None)
    if src is None:
        src = args.opened_source = _open_source(args)
    return src


def check_symbols(path: str) -> None:
    """Refuse a ``-s`` that cannot be a vmlinux, before drgn (which only
    warns) silently goes without it."""
    if not os.path.exists(path):
        raise KhoError(f"-s {path}: no such file")
    if os.path.isdir(path):
        raise KhoError(f"-s {path}: is a directory; give the kernel's "
                       "vmlinux file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise KhoError(f"-s {path}: {e.strerror}") from None
    if magic != b"\x7fELF":
        raise KhoError(f"-s {path}: not an ELF file; give the kernel's "
                       "vmlinux (with DWARF)")


def _check_options(args, meta: dict | None) -> None:
    """Refuse option combinations where one would be silently ignored."""
    how = getattr(args, "fdt_from", None) or "auto"
    core = getattr(args, "core", None) or \
        getattr(args, "sample", None) is not None
    if meta is not None and getattr(args, "symbols", None):
        raise KhoError("-s: a handover image holds no kernel state and needs "
                       "no debug info (use -s with a vmcore or the running "
                       "kernel)")
    if how == "auto":
        return
    if getattr(args, "fdt", None) or getattr(args, "fdt_phys", None) \
            is not None:
        raise KhoError(f"--fdt-from {how}: the FDT is already given by "
                       "--fdt/--fdt-phys")
    if meta is not None:
        raise KhoError(f"--fdt-from {how}: a handover image names its FDT "
                       "in its note")
    if core and how != "dwarf":
        raise KhoError(f"--fdt-from {how} reads the running kernel; a core "
                       "is read with DWARF (--fdt-from dwarf, -s VMLINUX)")
    if how == "setup-data" and not getattr(args, "incoming", False):
        raise KhoError("--fdt-from setup-data needs --incoming: setup_data "
                       "names the FDT this kernel received")


def _open_source(args) -> Source:
    if getattr(args, "symbols", None):
        check_symbols(args.symbols)
    core = getattr(args, "core", None)
    sample = getattr(args, "sample", None)
    if sample is not None:
        core = samples.path(sample)
    meta = read_image_meta(core) if core else None
    _check_options(args, meta)
    if core:
        desc = (f"handover image {core}" if meta else f"core {core}")
        return Source(desc, core=core, symbols=args.symbols, meta=meta)
    return Source("the running kernel (/proc/kcore)", symbols=args.symbols)


@dataclasses.dataclass
class RootFdt:
    blob: bytes
    phys: int | None
    origin: str

    @property
    def where(self) -> str:
        """The FDT named for messages: where it came from and its phys."""
        at = ("" if self.phys is None or self.origin.startswith("phys ")
              else f" at phys 0x{self.phys:x}")
        return f"root FDT from {self.origin}{at}"


def _read_file(path: str) -> bytes:
    """A root FDT file: at most the one page a root FDT may occupy
    (:data:`~kho_inspect.abi.common.ROOT_FDT_MAX`), as read_fdt_at reads
    one from memory."""
    try:
        with open(path, "rb") as f:
            blob = f.read(common.ROOT_FDT_MAX + 1)
    except OSError as e:
        raise KhoError(f"{path}: {e.strerror}") from None
    try:
        total = fdtmod.header_totalsize(blob)
    except fdtmod.FdtError:
        return blob             # parsing it names the problem and the file
    if total > common.ROOT_FDT_MAX:
        raise KhoError(f"{path}: header totalsize {total} exceeds "
                       f"{common.ROOT_FDT_MAX} bytes (a root FDT is one "
                       "page)")
    return blob


def _from_phys(src: Source, phys: int, origin: str) -> RootFdt:
    blob = read_fdt_at(src.memory(), phys, "root FDT")
    return RootFdt(blob, phys, origin)


def _debugfs_fdt(src: Source, incoming: bool) -> tuple[RootFdt | None, str]:
    """The debugfs copy if present and complete, else None and why not."""
    path = f"{DEBUGFS}/{'in' if incoming else 'out'}/fdt"
    if not os.path.exists(path):
        if not os.path.isdir(DEBUGFS) and \
                not os.path.ismount("/sys/kernel/debug"):
            return None, ("debugfs is not mounted (mount -t debugfs none "
                          "/sys/kernel/debug)")
        return None, f"{path} does not exist"
    blob = _read_file(path)
    try:
        total = fdtmod.header_totalsize(blob)
    except fdtmod.FdtError as e:
        raise KhoError(f"{path}: {e}") from None
    if total > len(blob):
        return None, (f"{path} is truncated ({len(blob)} of {total} bytes: "
                      "the kernel grew the FDT after debugfs sized the file)")
    return RootFdt(blob, None, path), ""


def _setup_data_fdt(src: Source) -> RootFdt | None:
    """x86: the incoming FDT named by the setup_data entry of type 10."""
    for d in sorted(glob.glob(f"{SETUP_DATA}/*")):
        try:
            with open(f"{d}/type") as f:
                t = int(f.read().strip(), 0)
            if t != common.SETUP_KEXEC_KHO:
                continue
            with open(f"{d}/data", "rb") as f:
                data = f.read()
        except (OSError, ValueError):
            continue
        if len(data) >= common.KHO_DATA_SIZE:
            fdt_addr = int.from_bytes(data[:8], "little")
            return _from_phys(src, fdt_addr, f"setup_data {d} (type 10)")
    return None


def root_fdt(src: Source, args) -> RootFdt:
    """Find the root FDT the command should decode, and check that it parses
    and names a known generation (an error names where the FDT came
    from)."""
    root = _find_root_fdt(src, args)
    try:
        identify(fdtmod.parse(root.blob))
    except KhoError as e:
        raise KhoError(f"{root.where}: {e}") from None
    return root


def _find_root_fdt(src: Source, args) -> RootFdt:
    incoming = getattr(args, "incoming", False)
    how = getattr(args, "fdt_from", None) or "auto"
    if getattr(args, "fdt", None):
        return RootFdt(_read_file(args.fdt), None, args.fdt)
    if getattr(args, "fdt_phys", None) is not None:
        return _from_phys(src, args.fdt_phys, f"phys 0x{args.fdt_phys:x}")
    if src.meta is not None:
        if incoming:
            raise KhoError("a handover image holds one outgoing handover; "
                           "--incoming does not apply")
        return _from_phys(src, src.meta["fdt_phys"],
                          f"{src.description} (note)")
    skipped = []            # why the live kernel's first choices were not used
    if src.live and how in ("auto", "debugfs"):
        found, why = _debugfs_fdt(src, incoming)
        if found is not None:
            return found
        if how == "debugfs":
            raise KhoError(f"--fdt-from debugfs: {why}")
        skipped.append(why)
    if src.live and incoming and how in ("auto", "setup-data"):
        found = _setup_data_fdt(src)
        if found is not None:
            _note_skipped(skipped, found)
            return found
        why = (f"no setup_data entry of type {common.SETUP_KEXEC_KHO} under "
               f"{SETUP_DATA} (not a KHO boot, or not x86)")
        if how == "setup-data":
            raise KhoError(f"--fdt-from setup-data: {why}")
        skipped.append(why)
    from .. import walk   # DWARF needed from here on
    from ..walk.state import require_kho_boot
    try:
        prog = src.debug_program()
        if incoming:
            phys = require_kho_boot(walk.incoming_fdt_phys(prog))
            found = _from_phys(src, phys, "kho_in.fdt_phys")
        else:
            found = _from_phys(src, walk.outgoing_fdt_phys(prog),
                               "kho_out.fdt")
    except KhoError as e:
        if skipped:     # one line: why the others failed, then this one
            raise KhoError("; ".join(skipped) + f"; and the kernel's own "
                           f"pointer: {e}") from None
        raise
    _note_skipped(skipped, found)
    return found


def _note_skipped(skipped: list, found: RootFdt) -> None:
    if skipped:
        note("; ".join(skipped) + f": used {found.origin} instead")


def bitmap_bytes(src: Source, args) -> tuple[int | None, str | None]:
    """The kho-v1 bitmap size and where it came from."""
    noted = (int(src.meta["bitmap_bytes"])
             if src.meta and src.meta.get("bitmap_bytes") else None)
    if getattr(args, "bitmap_bytes", None):
        # refused when the image note says otherwise
        return check_bitmap_bytes(args.bitmap_bytes, noted), "--bitmap-bytes"
    if noted:
        return noted, "image note"
    if src._debug_loaded or src.symbols:
        from .. import walk
        try:
            n = walk.bitmap_bytes(src.debug_program())
        except KhoError:
            n = None
        if n:
            return n, "DWARF sizeof(struct kho_mem_phys_bits)"
    rel = src.release()
    n = v1.bitmap_bytes_for_release(rel) if rel else None
    if n:
        return n, f"kernel release {rel}"
    return None, None

"""The second opinion on the map, in the guest (issue #16 section 2).

On radix kernels (7.1+) the walker's tracker and the decoder's map share one
tree walk, so ``tracker == map`` compares it with itself. tests/naive_radix.py
(and tests/naive_v1.py for kho-v1's chunk list) read the map again, written
from docs/abi.md alone; here they read the running kernel's outgoing map
through drgn's physical reads, and :func:`differs` holds a view of
kho_inspect (its ``ranges``) against it. Nothing here imports kho_inspect.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent.parent
OUT_FDT = Path("/sys/kernel/debug/kho/out/fdt")
VMLINUX = Path("/kernel/vmlinux")


def _reader(name: str = "naive_radix"):
    """tests/naive_radix.py (or naive_v1.py), loaded by path."""
    spec = importlib.util.spec_from_file_location(
        name, PROJECT / "tests" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def program(debug_info: bool = False):
    """A drgn program for the running kernel; with *debug_info*, the
    symbols of /kernel/vmlinux (needed only to find ``kho_out``)."""
    import drgn
    prog = drgn.Program()
    prog.set_kernel()
    if debug_info:
        prog.load_debug_info([str(VMLINUX)] if VMLINUX.exists() else None,
                             default=not VMLINUX.exists())
    return prog


def outgoing_fdt(prog) -> bytes | None:
    """The running kernel's outgoing root FDT, read where ``kho_out`` keeps
    it (6.19+: ``kho_out.fdt``, a ``void *``; 6.16-6.18:
    ``kho_out.ser.fdt``, a ``struct page *``), whole as its header sizes
    it; None without debug info or without an outgoing FDT. (debugfs's
    ``out/fdt`` is sized when the file is made: a kernel that adds
    sub-nodes later (6.19+) shows it cut short.)"""
    from drgn import cast
    from drgn.helpers.linux.mm import page_to_virt
    try:
        out = prog["kho_out"]
    except (KeyError, LookupError):
        return None
    try:
        fdt = out.fdt
    except AttributeError:
        fdt = out.ser.fdt
    if not int(fdt):
        return None
    if fdt.type_.type.unqualified().type_name() == "struct page":
        fdt = page_to_virt(fdt)
    va = int(cast("unsigned long", fdt))
    return prog.read(va, int.from_bytes(prog.read(va + 4, 4), "big"))


def outgoing_blocks(prog, fdt_path: Path = OUT_FDT, v1: bool = True
                    ) -> set | None:
    """The ``(phys, order)`` blocks of the running kernel's outgoing map as
    tests/naive_radix.py (or, for "kho-v1", tests/naive_v1.py) reads it,
    pages read by drgn at their physical address. The root: the
    ``preserved-memory-map`` of the outgoing FDT (:func:`outgoing_fdt`, or
    debugfs's *fdt_path* without debug info), or, with no FDT or when *v1*
    is False, ``kho_out.radix_tree.root``. None when the map cannot be
    read so: no FDT and no radix tree, kho-v1 without debug info (the
    bitmap size, ``struct kho_mem_phys_bits``), or kho-v1 when *v1* is
    False (its map is only the state of the last finalize, and before the
    first one in a KHO-booted kernel the FDT page holds anything)."""
    from stage import fdt_props
    blob = None
    if v1:      # else the radix tree alone: a kho-v1 FDT may be stale
        blob = outgoing_fdt(prog)
        if blob is None and fdt_path.exists():
            blob = fdt_path.read_bytes()
    if blob is not None:
        props = fdt_props(blob)
        base = props["compatible"].split(b"\0")[0].split(b";")[0]
        root = int.from_bytes(props["preserved-memory-map"], "little")
        if base == b"kho-v1":
            try:
                size = prog.type("struct kho_mem_phys_bits").size
            except LookupError:
                return None
            return set(_reader("naive_v1").read_map(
                lambda phys, n: prog.read(phys, n, True), root, size))
    else:
        from drgn.helpers.linux.mm import virt_to_phys
        try:
            root = int(virt_to_phys(prog["kho_out"].radix_tree.root))
        except (KeyError, LookupError, AttributeError):
            return None
    naive = _reader()
    return set(naive.read_map(
        lambda phys: prog.read(phys, naive.PAGE, True), root))


def differs(naive: set, ranges) -> str | None:
    """Why a view's ``ranges`` (JSON: phys, order, count) do not hold
    exactly the *naive* blocks, or None."""
    view = {(r["phys"] + i * (4096 << r["order"]), r["order"])
            for r in ranges for i in range(r["count"])}
    if view == naive:
        return None

    def fmt(s):
        return ", ".join(f"{p:#x}/{o}" for p, o in sorted(s)[:4]) + \
            (" ..." if len(s) > 4 else "")
    return (f"{len(view - naive)} blocks only in kho_inspect's view "
            f"({fmt(view - naive)}), {len(naive - view)} only in the naive "
            f"reading ({fmt(naive - view)})")


def check(ranges, prog=None) -> dict:
    """The running kernel's outgoing map read naively against *ranges*:
    ``{"blocks": n, "differs": str | None}``, ``{"blocks": None}`` when
    it cannot be read (:func:`outgoing_blocks`), or ``{"error": str}``."""
    try:
        blocks = outgoing_blocks(prog or program(debug_info=True))
    except Exception as e:          # reported, judged by the caller
        return {"error": f"{type(e).__name__}: {e}"}
    if blocks is None:
        return {"blocks": None}
    return {"blocks": len(blocks), "differs": differs(blocks, ranges)}

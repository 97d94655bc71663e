"""Reads for the walker: one ``prog.read`` per object, faults turned into
one-line :class:`~kho_inspect.errors.KhoError` naming what was being read.

On a vmcore, makedumpfile may have filtered out the pages the walker needs
(free pages, zero pages, user pages, ...). drgn then raises
:class:`drgn.FaultError`; the walker must say which page could not be read
and never treat it as empty.
"""

from __future__ import annotations

import contextlib

import drgn

from ..errors import KhoError


def source_name(prog: drgn.Program) -> str:
    """How to name *prog*'s memory in messages."""
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        return "the running kernel (/proc/kcore)"
    return "the core dump"


def fault_message(prog: drgn.Program, what: str, e: drgn.FaultError) -> str:
    addr = getattr(e, "address", None)
    where = f" at 0x{addr:x}" if isinstance(addr, int) else ""
    hint = ("" if prog.flags & drgn.ProgramFlags.IS_LIVE else
            " (page filtered out of the dump, e.g. by makedumpfile -d: "
            "re-take it with -d 0 or a QEMU dump-guest-memory core)")
    return (f"cannot read {what}{where}: {getattr(e, 'message', e)} in "
            f"{source_name(prog)}{hint}")


@contextlib.contextmanager
def reading(prog: drgn.Program, what: str):
    """Context: a :class:`drgn.FaultError` inside becomes a KhoError that
    names *what*."""
    try:
        yield
    except drgn.FaultError as e:
        raise KhoError(fault_message(prog, what, e)) from None


def read(prog: drgn.Program, address: int, size: int, what: str,
         physical: bool = False) -> bytes:
    """``prog.read(address, size, physical)``; a fault names *what*."""
    with reading(prog, what):
        return prog.read(address, size, physical)


def direct_map_base(prog: drgn.Program) -> int:
    """Virtual address of physical address 0 in the kernel's direct map
    (``phys_to_virt(0)``), cached per program."""
    try:
        return prog.cache["kho_inspect_direct_map"]
    except KeyError:
        pass
    from drgn.helpers.linux.mm import phys_to_virt
    base = phys_to_virt(prog, 0).value_()
    prog.cache["kho_inspect_direct_map"] = base
    return base

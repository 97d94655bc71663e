"""Reads for the walker: one ``prog.read`` per object, faults turned into
one-line :class:`~kho_inspect.errors.KhoError` naming what was being read.

On a vmcore, makedumpfile may have filtered out the pages the walker needs
(free pages, zero pages, user pages, ...). drgn then raises
:class:`drgn.FaultError`; the walker must say which page could not be read
and never treat it as empty. The policy itself (what counts as a fault, how
it is worded) is :func:`kho_inspect.memory.reading`, shared with the decoder
and the entry points; this module re-exports it for the walker.
"""

from __future__ import annotations

import drgn

from ..memory import fault_message, read, reading, source_name  # noqa: F401


def direct_map_base(prog: drgn.Program) -> int:
    """Virtual address of physical address 0 in the kernel's direct map
    (``phys_to_virt(0)``), cached per program."""
    try:
        return prog.cache["kho_inspect_direct_map"]
    except KeyError:
        pass
    from drgn.helpers.linux.mm import phys_to_virt
    with reading(prog, "page_offset_base (the direct map)"):
        base = phys_to_virt(prog, 0).value_()
    prog.cache["kho_inspect_direct_map"] = base
    return base

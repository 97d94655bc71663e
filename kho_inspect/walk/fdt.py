"""Where the kernel keeps its KHO FDTs, and the facts a decoder needs."""

from __future__ import annotations

import drgn
from drgn.helpers.linux.mm import page_to_phys, virt_to_phys

from ..errors import KhoError
from ._read import reading


def _variable(prog: drgn.Program, name: str) -> drgn.Object:
    try:
        return prog[name]
    except KeyError:
        raise KhoError(f"the kernel's debug info has no '{name}': the kernel "
                       "lacks CONFIG_KEXEC_HANDOVER, or the debug info "
                       "(-s VMLINUX) does not match it") from None


def kho_out(prog: drgn.Program) -> drgn.Object:
    """The outgoing state, ``static struct kho_out kho_out``.

    >>> kho_out(prog).fdt
    """
    return _variable(prog, "kho_out")


def kho_in(prog: drgn.Program) -> drgn.Object:
    """The incoming state, ``static struct kho_in kho_in``."""
    return _variable(prog, "kho_in")


def outgoing_fdt_phys(prog: drgn.Program) -> int:
    """Physical address of the outgoing root FDT.

    6.19+ keep it as ``void *kho_out.fdt``; 6.16-6.18 as
    ``struct page *kho_out.ser.fdt`` (whose content is valid only after
    finalize).
    """
    out = kho_out(prog)
    try:
        fdt = out.fdt
    except AttributeError:
        with reading(prog, "kho_out.ser.fdt"):
            page = out.ser.fdt.read_()
            if not page:
                raise KhoError("kho_out.ser.fdt is NULL: KHO was not "
                               "initialised (boot with kho=on)") from None
            return page_to_phys(page).value_()
    with reading(prog, "kho_out.fdt"):
        fdt = fdt.read_()
        if not fdt:
            raise KhoError("kho_out.fdt is NULL: KHO was not initialised "
                           "(boot with kho=on)")
        return virt_to_phys(fdt).value_()


def incoming_fdt_phys(prog: drgn.Program) -> int:
    """Physical address of the FDT the previous kernel handed over, from
    ``kho_in.fdt_phys`` (0 on a cold boot)."""
    ki = kho_in(prog)
    with reading(prog, "kho_in.fdt_phys"):
        return ki.fdt_phys.value_()


def is_finalized(prog: drgn.Program) -> bool | None:
    """``kho_out.finalized`` where the generation has a finalize step
    (6.16-7.0), None where it has none (7.1+)."""
    out = kho_out(prog)
    try:
        finalized = out.finalized
    except AttributeError:
        return None
    with reading(prog, "kho_out.finalized"):
        return bool(finalized)


def bitmap_bytes(prog: drgn.Program) -> int | None:
    """``sizeof(struct kho_mem_phys_bits)`` (kho-v1), None on radix kernels
    or without debug info."""
    try:
        return drgn.sizeof(prog.type("struct kho_mem_phys_bits"))
    except LookupError:
        return None

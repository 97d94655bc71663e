"""KHO state around the tracker: enable switch, scratch areas, the loaded
kexec image's KHO fields, and the incoming side (``kho_in``)."""

from __future__ import annotations

import dataclasses
import struct

import drgn

from ..abi.common import SCRATCH_FORMAT, SCRATCH_SIZE
from ..errors import KhoError
from ._read import read, reading
from .fdt import kho_in

#: Refuse absurd scratch counts (nodes + 2 in every version).
MAX_SCRATCH = 4096


def kho_enabled(prog: drgn.Program) -> bool:
    """``kho_enable``: KHO switched on (``kho=on``, or
    ``CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT``; 7.3 clears it in a kdump
    kernel or when scratch could not be set up).

    :raises KhoError: if the kernel has no KHO.
    """
    try:
        with reading(prog, "kho_enable"):
            return bool(prog["kho_enable"])
    except KeyError:
        raise KhoError("the kernel's debug info has no 'kho_enable': the "
                       "kernel lacks CONFIG_KEXEC_HANDOVER, or the debug "
                       "info (-s VMLINUX) does not match it") from None


@dataclasses.dataclass(frozen=True)
class ScratchArea:
    index: int
    addr: int
    size: int

    @property
    def role(self) -> str:
        """Array order: [0] lowmem, [1] global, [2..] one per node."""
        return ("lowmem" if self.index == 0 else "global" if self.index == 1
                else f"node #{self.index - 2}")

    def as_json(self) -> dict:
        return {"index": self.index, "addr": self.addr, "size": self.size,
                "role": self.role}


def scratch_areas(prog: drgn.Program) -> list[ScratchArea]:
    """The scratch areas, ``struct kho_scratch kho_scratch[kho_scratch_cnt]``
    (file-static in 6.16/6.17, global since Linux 6.18), read with one
    ``prog.read`` (docs/abi.md section 3.4).

    :returns: the areas in array order; empty when ``kho_scratch`` is NULL
        (KHO off, or scratch reservation failed).

    >>> [hex(a.addr) for a in scratch_areas(prog)]
    """
    try:
        arr, cnt = prog["kho_scratch"], prog["kho_scratch_cnt"]
    except KeyError:
        raise KhoError("the kernel's debug info has no 'kho_scratch' or "
                       "'kho_scratch_cnt': no CONFIG_KEXEC_HANDOVER") from None
    size = drgn.sizeof(prog.type("struct kho_scratch"))
    if size != SCRATCH_SIZE:
        raise KhoError(f"sizeof(struct kho_scratch) is {size}, the ABI says "
                       f"{SCRATCH_SIZE}")
    with reading(prog, "kho_scratch / kho_scratch_cnt"):
        addr, n = arr.value_(), cnt.value_()
    if not addr or not n:
        return []
    if n > MAX_SCRATCH:
        raise KhoError(f"kho_scratch_cnt is {n}: implausible")
    data = read(prog, addr, n * size, f"kho_scratch[{n}]")
    return [ScratchArea(i, a, s) for i, (a, s) in
            enumerate(struct.iter_unpack(SCRATCH_FORMAT, data))]


def kexec_image_kho(prog: drgn.Program) -> dict | None:
    """The KHO fields of the loaded kexec image (``kexec_image``).

    :returns: None when no image is loaded, else ``{"fdt": phys,
        "scratch": {"mem", "bufsz"} or None, "kho_fields": bool}``;
        ``kho_fields`` is False for a kernel whose ``struct kimage`` has no
        ``kho`` member. ``fdt`` is 0 when the image carries no KHO (loaded
        with kexec_load rather than ``kexec -s``, KHO off, or - 6.16-6.18 -
        loaded before finalize).
    """
    try:
        image = prog["kexec_image"]
    except KeyError:
        raise KhoError("the kernel's debug info has no 'kexec_image': no "
                       "CONFIG_KEXEC_CORE") from None
    with reading(prog, "kexec_image"):
        if not image.value_():
            return None
        try:
            kho = image.kho
        except AttributeError:
            return {"fdt": None, "scratch": None, "kho_fields": False}
        fdt = kho.fdt.value_()
        seg = kho.scratch
        scratch = None
        if seg.value_():
            scratch = {"mem": seg.mem.value_(), "bufsz": seg.bufsz.value_()}
        return {"fdt": fdt, "scratch": scratch, "kho_fields": True,
                "file_mode": _file_mode(image)}


def _file_mode(image: drgn.Object) -> bool | None:
    try:
        return bool(image.file_mode)
    except AttributeError:
        return None


#: Why there is nothing incoming: said by every command that needs a KHO boot.
NOT_KHO_BOOT = ("kho_in.fdt_phys is 0: this kernel was not booted through a "
                "KHO kexec (nothing incoming)")


def require_kho_boot(fdt_phys: int) -> int:
    """Return *fdt_phys* (``kho_in.fdt_phys``), or raise a KhoError saying
    this kernel was not booted through a KHO kexec when it is 0."""
    if not fdt_phys:
        raise KhoError(NOT_KHO_BOOT)
    return fdt_phys


@dataclasses.dataclass
class IncomingState:
    """``kho_in``: what the previous kernel handed over."""

    fdt_phys: int
    scratch_phys: int
    mem_map_phys: int | None = None        # 6.19/7.0
    previous_release: str | None = None    # 7.1+
    kexec_count: int | None = None         # 7.1+
    has_radix_tree: bool = False           # 7.3 (dangling after boot)

    @property
    def kho_boot(self) -> bool:
        return bool(self.fdt_phys)

    def as_json(self) -> dict:
        return dataclasses.asdict(self) | {"kho_boot": self.kho_boot}


def incoming_state(prog: drgn.Program) -> IncomingState:
    """Read ``kho_in``, probing the members each generation has
    (docs/abi.md sections 4.3 and 5.5): ``mem_map_phys`` in Linux 6.19/7.0;
    ``previous_release``/``kexec_count`` since 7.1 (kexec-metadata);
    ``radix_tree`` since 7.3.

    >>> incoming_state(prog).previous_release
    '7.3.4'
    """
    ki = kho_in(prog)
    with reading(prog, "kho_in"):
        st = IncomingState(ki.fdt_phys.value_(), ki.scratch_phys.value_())
        try:
            st.mem_map_phys = ki.mem_map_phys.value_()
        except AttributeError:
            pass
        try:
            rel = ki.previous_release
        except AttributeError:
            pass
        else:
            st.previous_release = rel.string_().decode(errors="replace")
            st.kexec_count = ki.kexec_count.value_()
        try:
            ki.radix_tree
            st.has_radix_tree = True
        except AttributeError:
            pass
    return st

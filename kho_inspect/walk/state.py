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
from .kexec import loaded_image

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
    image = loaded_image(prog)
    if image is None:
        return None
    with reading(prog, "kexec_image"):
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


# -- scratch accounting: what /proc/meminfo shows of the scratch areas -------

#: Free blocks walked at most on the MIGRATE_CMA free lists (4M blocks: 16
#: GiB of order-0 pages, 16 TiB of order-10 blocks).
MAX_FREE_BLOCKS = 1 << 22


def kernel_page_size(prog: drgn.Program) -> int:
    """``PAGE_SIZE`` in bytes (4096 when drgn cannot say)."""
    try:
        return prog["PAGE_SIZE"].value_()
    except (KeyError, LookupError):
        return 4096


def total_ram_pages(prog: drgn.Program) -> int:
    """``totalram_pages()``, the pages the buddy allocator manages: what
    ``/proc/meminfo`` prints as MemTotal (it includes the scratch areas once
    they are released).

    :returns: a page count.
    """
    with reading(prog, "_totalram_pages"):
        try:
            # atomic_long_t since Linux 5.0 (ca79b0c211af, "mm: convert
            # totalram_pages and totalhigh_pages variables to atomic")
            return prog["_totalram_pages"].counter.value_()
        except KeyError:
            return prog["totalram_pages"].value_()    # before 5.0


def cma_total_pages(prog: drgn.Program) -> int | None:
    """``totalcma_pages`` (mm/cma.c or mm/show_mem.c): the pages of real CMA
    reservations, /proc/meminfo's CmaTotal. KHO's scratch areas are not
    counted there.

    :returns: a page count, or None when the kernel has no CONFIG_CMA
        (then /proc/meminfo has no Cma lines).
    """
    try:
        obj = prog["totalcma_pages"]
    except KeyError:
        return None
    with reading(prog, "totalcma_pages"):
        return obj.value_()


def cma_free_pages(prog: drgn.Program) -> int | None:
    """``global_zone_page_state(NR_FREE_CMA_PAGES)``: the free pages in
    MIGRATE_CMA pageblocks, /proc/meminfo's CmaFree (the global counter,
    without the per-cpu deltas not folded in yet, as meminfo reads it).

    :returns: a page count (negative transients read as 0, as the kernel
        does), or None when ``NR_FREE_CMA_PAGES`` is not in the DWARF.
    """
    try:
        item = prog["NR_FREE_CMA_PAGES"].value_()
        stat = prog["vm_zone_stat"]
    except KeyError:
        return None
    with reading(prog, "vm_zone_stat[NR_FREE_CMA_PAGES]"):
        return max(stat[item].counter.value_(), 0)


@dataclasses.dataclass
class FreeWalk:
    """Free blocks found on the buddy allocator's free lists of one
    migratetype."""

    blocks: list[tuple[int, int]]     # (pfn, order)
    lists: int                        # free lists walked
    truncated: bool                   # stopped at max_blocks
    loops: int = 0                    # lists left where an entry repeated

    @property
    def pages(self) -> int:
        return sum(1 << order for _, order in self.blocks)


def _pgdats(prog: drgn.Program) -> list[drgn.Object]:
    """``struct pglist_data *`` of every node: the non-NULL entries of
    ``node_data[]`` (CONFIG_NUMA), else ``&contig_page_data``."""
    try:
        nd = prog["node_data"]
    except KeyError:
        return [prog["contig_page_data"].address_of_()]
    with reading(prog, "node_data[]"):
        return [p for p in nd.read_() if p.value_()]


def _buddy_member(prog: drgn.Program) -> str:
    """The ``struct page`` member linking free blocks: ``buddy_list`` since
    Linux 6.0 (bf75f200569d, "mm/page_alloc: add page->buddy_list and
    page->pcp_list"), ``lru`` before."""
    page = prog.type("struct page")
    try:
        drgn.offsetof(page, "buddy_list")
        return "buddy_list"
    except LookupError:
        return "lru"


def free_blocks(prog: drgn.Program, migratetype: str = "MIGRATE_CMA",
                max_blocks: int = MAX_FREE_BLOCKS) -> FreeWalk:
    """Walk ``zone->free_area[order].free_list[migratetype]`` of every zone
    of every node and return the free blocks on them. Free pages on the
    per-cpu lists (``zone->per_cpu_pageset``) are not included: the kernel
    counts them as allocated too.

    :param migratetype: an ``enum migratetype`` enumerator, looked up by
        name (``MIGRATE_CMA`` exists only with CONFIG_CMA).
    :returns: a :class:`FreeWalk`; ``truncated`` when more than
        *max_blocks* blocks were found; ``loops`` counts lists left at an
        entry seen before (corrupt, or changed while read on a live
        kernel), their blocks up to there kept.
    :raises KhoError: if the enumerator is missing or a list cannot be read.

    >>> sum(1 << o for _, o in free_blocks(prog).blocks)
    """
    from drgn.helpers.linux.mm import pfn_to_page
    try:
        mt = prog[migratetype].value_()
    except KeyError:
        raise KhoError(f"the kernel has no {migratetype} (no CONFIG_CMA)") \
            from None
    page_t = prog.type("struct page")
    off = drgn.offsetof(page_t, _buddy_member(prog))
    size = drgn.sizeof(page_t)
    blocks: list[tuple[int, int]] = []
    lists = loops = 0
    with reading(prog, f"the {migratetype} free lists"):
        # the memmap is linear for drgn (vmemmap, or mem_map on FLATMEM):
        # pfn = (page - page of pfn 0) / sizeof(struct page)
        page0 = pfn_to_page(prog, 0).value_()
        for pgdat in _pgdats(prog):
            zones = pgdat.node_zones
            for z in range(len(zones)):
                zone = zones[z]
                if not zone.present_pages.value_():
                    continue
                for order in range(len(zone.free_area)):
                    head = zone.free_area[order].free_list[mt].address_
                    lists += 1
                    nxt = prog.read_word(head)
                    seen = set()
                    while nxt and nxt != head:
                        if nxt in seen:
                            loops += 1
                            break
                        seen.add(nxt)
                        if len(blocks) >= max_blocks:
                            return FreeWalk(blocks, lists, True, loops)
                        blocks.append(((nxt - off - page0) // size, order))
                        nxt = prog.read_word(nxt)
    return FreeWalk(blocks, lists, False, loops)


def bin_free_blocks(blocks, areas, page_size: int = 4096
                    ) -> tuple[list[int], int]:
    """Share free blocks out among scratch areas.

    :param blocks: ``(pfn, order)`` free blocks.
    :param areas: ``(addr, size)`` of each area, in bytes.
    :returns: ``(free bytes inside each area, free bytes outside every
        area)``. A block straddling two adjacent areas (the buddy allocator
        merges neighbouring MIGRATE_CMA pageblocks) is split between them.
    """
    free = [0] * len(areas)
    outside = 0
    spans = sorted((a, a + s, i) for i, (a, s) in enumerate(areas) if s)
    for pfn, order in blocks:
        start = pfn * page_size
        end = start + (page_size << order)
        inside = 0
        for a, b, i in spans:
            n = min(end, b) - max(start, a)
            if n > 0:
                free[i] += n
                inside += n
        outside += (end - start) - inside
    return free, outside


def cma_mismatch(cma_free: int | None, cma_total: int | None,
                 scratch_bytes: int) -> bool:
    """The /proc/meminfo puzzle: CmaFree larger than CmaTotal (CmaTotal is
    often 0) while KHO scratch areas exist. Free pages of real CMA
    reservations never exceed CmaTotal, so the excess is MIGRATE_CMA memory
    of another origin: KHO's scratch areas (docs/abi.md section 3.4).

    :returns: True when status should explain it.
    """
    if cma_free is None or not scratch_bytes:
        return False
    return cma_free > 0 and cma_free > (cma_total or 0)

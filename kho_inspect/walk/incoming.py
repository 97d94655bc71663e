"""The incoming side, in a kernel booted through a KHO kexec.

What survives boot (docs/abi.md section 6):

* ``kho_in`` (see :func:`kho_inspect.walk.state.incoming_state`) and the
  root FDT it points to, with the client sub-nodes;
* for every preserved block, a memblock reservation and a marker in the head
  page's ``page->private``: ``KHO_PAGE_MAGIC << 32 | order`` since Linux
  6.18 (``union kho_page_info``), the bare order in 6.16/6.17. A successful
  ``kho_restore_*`` clears it (6.18+), so the markers still present are the
  preserved-and-not-yet-restored blocks.

What does not survive: the incoming map itself (kho-v1 chunks and bitmaps,
radix nodes) is free memory once the page allocator is up, and 7.3's
``kho_in.radix_tree.root`` is a dangling pointer. Nothing here decodes it.
"""

from __future__ import annotations

import dataclasses
import struct

import drgn
from drgn.helpers.linux.mm import for_each_valid_page_range, pfn_to_page

from ..abi.common import (KHO_PAGE_MAGIC, MAX_REPRESENTABLE_ORDER, PAGE_SHIFT,
                          page_private_marker)
from ..progress import Progress
from ..ranges import Run
from ._read import reading

#: Pages per memmap read: one 128 MiB section of struct pages (2 MiB).
CHUNK_PAGES = 1 << 15
#: Default bound on the pages examined by a full memmap scan: 1 TiB of RAM
#: (268 M struct pages, about as long as reading them: seconds).
DEFAULT_SCAN_PAGES = 1 << 28

_MAGIC = struct.pack("<I", KHO_PAGE_MAGIC)


@dataclasses.dataclass
class MarkerScan:
    """Head pages found carrying a KHO marker, and what was examined.

    ``markers`` is None when this kernel's markers cannot be told apart from
    other uses of ``page->private`` (see ``note``).
    """

    markers: list[Run] | None
    source: str                  # which pfn ranges were examined
    magic: bool                  # 6.18+: markers carry KHO_PAGE_MAGIC
    ranges: int = 0              # pfn ranges examined
    pages: int = 0               # struct pages examined
    unreadable: list[tuple[int, int]] = dataclasses.field(
        default_factory=list)    # (start_pfn, end_pfn) that faulted
    truncated_at_pfn: int | None = None   # scan bound reached here
    note: str = ""

    def as_json(self) -> dict:
        return {"markers": None if self.markers is None else
                [r.as_json() for r in self.markers],
                "source": self.source, "magic": self.magic,
                "ranges": self.ranges, "pages": self.pages,
                "unreadable": [{"start_pfn": s, "end_pfn": e}
                               for s, e in self.unreadable],
                "truncated_at_pfn": self.truncated_at_pfn,
                "note": self.note}


def has_page_magic(prog: drgn.Program) -> bool:
    """True if preserved head pages carry ``KHO_PAGE_MAGIC``: since Linux
    6.18 the kernel has ``union kho_page_info`` (probed, not the release)."""
    try:
        prog.type("union kho_page_info")
        return True
    except LookupError:
        return False


def memblock_reserved(prog: drgn.Program) -> list[tuple[int, int]] | None:
    """``memblock.reserved`` as (base, size) pairs, or None when it is not
    trustworthy after boot: ``memblock`` lives in the init sections (freed
    after boot without ``CONFIG_ARCH_KEEP_MEMBLOCK`` or memory hotplug), or
    ``memblock_discard()`` freed a grown regions array.
    """
    try:
        mb = prog["memblock"]
    except KeyError:
        return None
    addr = mb.address_
    try:
        lo = prog.symbol("__init_begin").address
        hi = prog.symbol("__init_end").address
        if lo <= addr < hi:
            return None
    except LookupError:
        pass
    with reading(prog, "memblock.reserved"):
        rtype = mb.reserved
        regions = rtype.regions.value_()
        try:
            prog.symbol("memblock_discard")
        except LookupError:
            pass          # kept memblock: memblock_discard is an empty inline
        else:
            try:
                init = prog["memblock_reserved_init_regions"].address_
            except KeyError:
                return None
            if regions != init:
                return None
        cnt = rtype.cnt.value_()
        if cnt > rtype.max.value_():
            return None
        rsize = drgn.sizeof(prog.type("struct memblock_region"))
        data = prog.read(regions, cnt * rsize)
    out = []
    for i in range(cnt):
        base, size = struct.unpack_from("<QQ", data, i * rsize)
        out.append((base, size))
    return out


def _page_layout(prog: drgn.Program) -> tuple[int, int]:
    try:
        return prog.cache["kho_inspect_page_layout"]
    except KeyError:
        pass
    t = prog.type("struct page")
    lay = (drgn.sizeof(t), drgn.offsetof(t, "private"))
    prog.cache["kho_inspect_page_layout"] = lay
    return lay


def _chunks(start: int, end: int):
    """Split [start, end) at CHUNK_PAGES boundaries (memmap is contiguous
    inside a section even without SPARSEMEM_VMEMMAP)."""
    while start < end:
        stop = min(end, (start // CHUNK_PAGES + 1) * CHUNK_PAGES)
        yield start, stop
        start = stop


def scan_markers(prog: drgn.Program, pfn_ranges, source: str, *,
                 magic: bool, max_pages: int | None = None) -> MarkerScan:
    """Examine ``page->private`` of every struct page in *pfn_ranges*
    (``(start_pfn, end_pfn)`` pairs), reading the memmap a section at a time.

    With *magic* (6.18+) a page is a marker if the high 32 bits are
    ``KHO_PAGE_MAGIC``; without it (6.16/6.17) any non-zero private that is a
    plausible order and aligns the pfn counts, which only makes sense inside
    memblock reservations.

    :returns: a :class:`MarkerScan`; unreadable memmap chunks are listed,
        never taken as empty.
    """
    psize, poff = _page_layout(prog)
    scan = MarkerScan([], source, magic)
    pfn_ranges = list(pfn_ranges)
    total = sum(max(0, e - s) for s, e in pfn_ranges)
    if max_pages is not None:
        total = min(total, max_pages)
    with Progress("scanning the memmap for KHO markers", total,
                  "struct pages") as progress:
        _scan(prog, pfn_ranges, scan, magic, max_pages, psize, poff,
              progress)
    return scan


def _scan(prog, pfn_ranges, scan: MarkerScan, magic: bool,
          max_pages: int | None, psize: int, poff: int,
          progress: Progress) -> None:
    markers = scan.markers
    find = _find_magic if magic else _find_orders
    for start, end in pfn_ranges:
        scan.ranges += 1
        for s, e in _chunks(start, end):
            if max_pages is not None and scan.pages >= max_pages:
                scan.truncated_at_pfn = s
                return
            n = e - s
            progress.advance(n)
            try:
                base = pfn_to_page(prog, s).value_()
                data = prog.read(base, n * psize)
            except drgn.FaultError:
                if scan.unreadable and scan.unreadable[-1][1] == s:
                    scan.unreadable[-1] = (scan.unreadable[-1][0], e)
                else:
                    scan.unreadable.append((s, e))
                continue
            scan.pages += n
            find(data, s, psize, poff, markers)


# No struct page is skipped by its flags. A marked head page is not
# PG_reserved: kho_preserved_memory_reserve() (kernel/liveupdate/
# kexec_handover.c, 7.3.4; deserialize_bitmap() in kernel/kexec_handover.c,
# 6.17.8 and 6.18.15) calls memblock_reserve() then
# memblock_reserved_mark_noinit(), and memmap_init_reserved_pages()
# (mm/memblock.c) sets PG_reserved only on reserved regions *without*
# MEMBLOCK_RSRV_NOINIT; the page keeps what __init_single_page() gave it
# (memmap_init_range(), or init_deferred_page() via kho_get_preserved_page()
# with DEFERRED_STRUCT_PAGE_INIT; mm/mm_init.c): zone/node links only. The
# memblock_reserved_mark_noinit() kernel-doc says so: "won't be marked as
# reserved". Nor can other flags rule a page out before its bytes are read,
# so the whole memmap is read, and the search over it is made cheap instead:
#
# The scans below look at one byte column of the memmap first: a strided
# slice of the chunk (one byte per struct page, a C loop) searched with
# bytes.find (memchr), and look at the 8 bytes of page->private only where
# that byte can belong to a marker. A substring search over every byte of
# the struct pages was the bottleneck (about 1 GB/s, against several for
# the read itself). Results are the same as looking at every page->private.

#: Top byte of ``page->private`` in a 6.18+ marker (KHO_PAGE_MAGIC's top byte,
#: little-endian u64 at ``offsetof(struct page, private)``).
_MAGIC_TOP = bytes([KHO_PAGE_MAGIC >> 24])
#: Low byte of ``page->private`` mapped to 1 if it can be a bare order
#: (1..MAX_REPRESENTABLE_ORDER), else 0.
_ORDER_BYTE = bytes(int(0 < b <= MAX_REPRESENTABLE_ORDER) for b in range(256))


def _find_magic(data: bytes, pfn0: int, psize: int, poff: int,
                out: list) -> None:
    """Markers with KHO_PAGE_MAGIC among the struct pages in *data*."""
    col = data[poff + 7::psize]
    find = col.find
    i = find(_MAGIC_TOP)
    while i >= 0:
        at = i * psize + poff
        private = int.from_bytes(data[at:at + 8], "little")
        order, magic = page_private_marker(private)
        if magic:
            out.append(Run((pfn0 + i) << PAGE_SHIFT, order, 1))
        i = find(_MAGIC_TOP, i + 1)


def _find_orders(data: bytes, pfn0: int, psize: int, poff: int,
                 out: list) -> None:
    """Bare-order markers (6.16/6.17): a non-zero ``page->private`` that is
    a plausible order and aligns the pfn."""
    col = data[poff::psize].translate(_ORDER_BYTE)
    find = col.find
    i = find(1)
    while i >= 0:
        at = i * psize + poff
        v = int.from_bytes(data[at:at + 8], "little")
        if v <= MAX_REPRESENTABLE_ORDER and not (pfn0 + i) & ((1 << v) - 1):
            out.append(Run((pfn0 + i) << PAGE_SHIFT, v, 1))
        i = find(1, i + 1)


def preserved_markers(prog: drgn.Program, *,
                      max_pages: int | None = DEFAULT_SCAN_PAGES
                      ) -> MarkerScan:
    """Find preserved, not yet restored head pages by their marker.

    Scans the struct pages of ``memblock.reserved`` when memblock survives
    boot, else (6.18+ only) the memmap of every valid pfn, at most
    *max_pages* pages.

    :returns: a :class:`MarkerScan` saying what was examined; ``markers`` is
        None on 6.16/6.17 without memblock (bare orders are ambiguous).

    >>> s = preserved_markers(prog)
    >>> s.source, len(s.markers)
    ('memmap of every valid pfn', 3)
    """
    magic = has_page_magic(prog)
    reserved = memblock_reserved(prog)
    if reserved is not None:
        ranges = [(b >> PAGE_SHIFT, (b + s + (1 << PAGE_SHIFT) - 1)
                   >> PAGE_SHIFT) for b, s in reserved if s]
        return scan_markers(prog, ranges,
                            f"memblock.reserved ({len(ranges)} regions)",
                            magic=magic, max_pages=max_pages)
    why = ("memblock.reserved does not survive boot on this kernel (no "
           "CONFIG_ARCH_KEEP_MEMBLOCK)")
    if not magic:
        return MarkerScan(None, "nothing", False, note=(
            f"{why}, and this kernel marks preserved head pages with the "
            "bare order (no KHO_PAGE_MAGIC before 6.18), which other pages "
            "carry in page->private too: markers cannot be enumerated"))
    with reading(prog, "mem_section (valid pfn ranges)"):
        ranges = [(s, e) for s, e, _ in for_each_valid_page_range(prog)]
    scan = scan_markers(prog, ranges, "memmap of every valid pfn",
                        magic=True, max_pages=max_pages)
    scan.note = why + "; scanned the memmap instead"
    return scan

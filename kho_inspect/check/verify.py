"""A handover image's content hashes (``capture --hashes``) against a
kernel: what became of every block the image recorded.

Two kernels can be verified against an image:

* the next kernel, booted by the KHO kexec that handed the image's FDT
  over (``kho_in.fdt_phys`` is the image's FDT): the incoming state;
* the kernel the image was captured from, before its kexec (its
  ``kho_out`` FDT is the image's): the outgoing tracker.

What the next kernel can still tell (docs/abi.md section 6): early in
boot it reserves every block of the incoming map in memblock and writes a
marker into the head page's ``page->private``; the map's own pages are free
memory after boot. So the durable evidence is

* the head pages still marked: ``KHO_PAGE_MAGIC << 32 | order`` since 6.18,
  cleared by a successful restore, so marked = preserved and not yet
  restored. 6.16/6.17 write the bare order and never clear it: a marker
  there cannot be told from other uses of ``page->private``, so preserved,
  restored and (after boot) lost cannot be told apart; only the content is
  compared;
* ``memblock.reserved``, where it survives boot (``CONFIG_ARCH_KEEP_MEMBLOCK``
  or memory hotplug): a block outside every reservation was never received.

Without memblock, a block that is not marked any more was restored, or was
dropped from the map before the kexec (a radix map is live until then):
only a block the image has and the incoming map provably lacks is called
lost. Each block gets one state:

``intact``     still marked (or still tracked) and every chunk's hash matches;
``corrupted``  still marked, content changed: the chunks are named;
``restored``   no longer marked; ``matches`` says whether the content still
               equals the capture (changed after a restore is normal use);
``lost``       not in the incoming state (not received, not reserved, or
               marked with another order), or, in the kernel the image was
               captured from, no longer in its tracker;
``unknown``    the kernel cannot say (6.16/6.17 without memblock, memmap
               not readable, content unreadable); with changed content it
               fails the verification (corruption cannot be ruled out);
``extra``      blocks this kernel holds that the image does not have.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ..abi.common import PAGE_SHIFT, PAGE_SIZE
from ..errors import KhoError
from ..image import BlockHashes, ImageHashes, chunk_spans, hash_span
from ..ranges import blocks as expand_blocks

INCOMING = "incoming"
SAME_KERNEL = "same-kernel"
NOT_RECEIVED = "not-received"

#: States that make ``verify`` exit 1; so does an ``unknown`` block whose
#: content changed (corrupted, or restored and written since: this kernel
#: cannot say which, so it cannot vouch for it).
FAILING = ("lost", "corrupted")


@dataclasses.dataclass
class Evidence:
    """What a kernel still tells about the image's handover.

    ``held``: the blocks still preserved (incoming markers, or the outgoing
    tracker), None when they cannot be enumerated. ``exact``: a block absent
    from ``held`` is really not marked (False for 6.16/6.17 bare orders,
    where order-0 blocks carry no marker). ``unscanned``: physical ranges
    ``[start, end)`` whose markers could not be read. ``reserved``:
    ``memblock.reserved`` as (base, size), where it survives boot.
    ``map_same``: the incoming FDT names the same map as the image's.
    """

    mode: str
    against: str
    held: list | None = None
    exact: bool = True
    unscanned: list = dataclasses.field(default_factory=list)
    reserved: list | None = None
    map_same: bool | None = None
    reason: str = ""              # NOT_RECEIVED: why
    notes: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class BlockVerdict:
    phys: int
    order: int
    state: str
    detail: str = ""
    matches: bool | None = None   # content == capture (None: not compared)
    changed: list = dataclasses.field(default_factory=list)  # chunk phys

    @property
    def label(self) -> str:
        """The state as the table shows it ("restored, changed")."""
        if self.state in ("restored", "unknown") and \
                self.matches is not None:
            return f"{self.state}, {'matches' if self.matches else 'changed'}"
        return self.state

    def as_json(self) -> dict:
        return {"phys": self.phys, "order": self.order,
                "size": PAGE_SIZE << self.order, "state": self.state,
                "matches": self.matches, "detail": self.detail,
                "changed_chunks": self.changed}


@dataclasses.dataclass
class VerifyResult:
    mode: str
    against: str
    chunk_bytes: int
    blocks: list[BlockVerdict]
    notes: list[str]
    #: what the states rest on: ``held`` (blocks still marked or tracked;
    #: None: cannot be enumerated), ``exact`` (markers unambiguous),
    #: ``memblock`` (reservations survive), ``map_same``
    evidence: dict = dataclasses.field(default_factory=dict)

    def counts(self) -> dict:
        out: dict = {}
        for b in self.blocks:
            out[b.label] = out.get(b.label, 0) + 1
        return out

    @property
    def failing(self) -> list[BlockVerdict]:
        return [b for b in self.blocks if b.state in FAILING or
                (b.state == "unknown" and b.matches is False)]

    @property
    def ok(self) -> bool:
        return not self.failing

    def as_json(self) -> dict:
        return {"mode": self.mode, "against": self.against,
                "chunk_bytes": self.chunk_bytes, "ok": self.ok,
                "counts": self.counts(),
                "evidence": self.evidence,
                "blocks": [b.as_json() for b in self.blocks],
                "notes": self.notes}


def compare_chunks(img: BlockHashes, now: list, chunk_bytes: int
                   ) -> tuple[list[int], int]:
    """(phys of every chunk whose hash differs, chunks that could not be
    compared: unreadable at capture or now)."""
    changed, unknown = [], 0
    spans = chunk_spans(img.phys, img.size, chunk_bytes)
    for (phys, _), then, cur in zip(spans, img.chunks, now):
        if then is None or cur is None:
            unknown += 1
        elif then != cur:
            changed.append(phys)
    return changed, unknown


def _covered(reserved: list, phys: int, size: int) -> bool:
    """Whether ``[phys, phys + size)`` lies inside the union of the
    (base, size) regions."""
    cur, end = phys, phys + size
    for base, n in sorted(reserved):
        if base > cur:
            break
        cur = max(cur, base + n)
        if cur >= end:
            return True
    return cur >= end


def _in_ranges(ranges: list, phys: int) -> bool:
    return any(s <= phys < e for s, e in ranges)


def _chunks_text(changed: list[int], total: int) -> str:
    """Which chunks changed, in a few words."""
    if total == 1:
        return "content changed"
    shown = ",".join(f"0x{p:x}" for p in changed[:2])
    more = "..." if len(changed) > 2 else ""
    return f"{len(changed)}/{total} chunks changed: {shown}{more}"


#: Said once, under the table, when a state rests on it.
NOTE_NO_MAGIC = ("this kernel cannot tell preserved from restored blocks: "
                 "before 6.18 the marker is the bare order, which a restore "
                 "does not clear, and memblock is gone; only the content is "
                 "compared, and a changed block may be corrupted or "
                 "restored and written since")
NOTE_NO_MEMBLOCK = ("memblock.reserved is gone after boot here: a block no "
                    "longer marked counts as restored; one dropped from the "
                    "map before the kexec would look the same")
NOTE_OTHER_MAP = ("the incoming FDT names another map than the image's: a "
                  "block no longer marked may have been dropped, not "
                  "restored")


def classify(hashes: ImageHashes, ev: Evidence,
             current: Callable[[BlockHashes], list]) -> VerifyResult:
    """Judge every block of *hashes* against the evidence *ev*;
    *current(block)* returns the block's chunk hashes now (None for a chunk
    that cannot be read). Pure: no kernel access but through *current*."""
    cb = hashes.chunk_bytes
    held: dict[int, int] = {}
    if ev.held is not None:
        for phys, order in expand_blocks(ev.held):
            held.setdefault(phys, order)
    out: list[BlockVerdict] = []
    notes = list(ev.notes)

    def note(text: str) -> None:
        if text not in notes:
            notes.append(text)

    def content(v: BlockVerdict, b: BlockHashes) -> str:
        v.changed, unknown = compare_chunks(b, current(b), cb)
        v.matches = False if v.changed else (None if unknown else True)
        return ("content matches" if v.matches else
                _chunks_text(v.changed, len(b.chunks)) if v.changed else
                f"{unknown} chunk(s) not comparable")

    for b in hashes.blocks:
        v = BlockVerdict(b.phys, b.order, "unknown")
        out.append(v)
        if ev.mode == NOT_RECEIVED:
            v.state, v.detail = "lost", "not received"
            note(ev.reason)
            continue
        if ev.reserved is not None and not _covered(ev.reserved, b.phys,
                                                    b.size):
            v.state = "lost"
            v.detail = "not reserved in memblock at boot"
            continue
        unscanned = _in_ranges(ev.unscanned, b.phys)
        if ev.held is None or not ev.exact or unscanned:
            v.detail = content(v, b)
            if unscanned and ev.held is not None:
                v.detail += "; marker unreadable"
            else:
                note(NOTE_NO_MAGIC)
            continue
        marked = held.get(b.phys)
        if marked is not None and marked != b.order:
            v.state = "lost"
            v.detail = f"head page marked order {marked} instead"
            continue
        text = content(v, b)
        if marked is not None:
            if v.changed:
                v.state, v.detail = "corrupted", text
            elif v.matches is None:
                v.state, v.detail = "unknown", "still preserved; " + text
            else:
                v.state = "intact"
            continue
        if ev.mode == SAME_KERNEL:
            v.state = "lost"
            v.detail = "no longer in the tracker (unpreserved)"
            continue
        v.state = "restored"
        v.detail = ("changed after the restore: normal use"
                    if v.changed and len(b.chunks) == 1 else text)
        note(NOTE_OTHER_MAP if ev.map_same is False else "")
        if ev.reserved is None:
            note(NOTE_NO_MEMBLOCK)
    image_blocks = {(b.phys, b.order) for b in hashes.blocks}
    image_heads = {b.phys for b in hashes.blocks}
    if ev.held and ev.exact:
        where = ("in the outgoing tracker" if ev.mode == SAME_KERNEL
                 else "still marked here")
        for phys, order in sorted(set(expand_blocks(ev.held))):
            if (phys, order) in image_blocks or phys in image_heads:
                continue
            out.append(BlockVerdict(phys, order, "extra",
                                    f"{where}, not in the image"))
    out.sort(key=lambda v: (v.phys, v.order))
    evidence = {"held": None if ev.held is None else
                sum(r[2] for r in ev.held),
                "exact": ev.exact if ev.held is not None else None,
                "memblock": ev.reserved is not None,
                "map_same": ev.map_same}
    return VerifyResult(ev.mode, ev.against, cb, out,
                        [n for n in notes if n], evidence)


# -- evidence from a kernel (drgn) ---------------------------------------------

def image_map_phys(image_path: str, fdt_phys: int) -> int | None:
    """The ``preserved-memory-map`` of the image's root FDT, or None."""
    from .. import fdt as fdtmod
    from ..decode import read_fdt_at
    from ..decode.handover import map_phys
    from ..memory import PhysMemory, open_core
    try:
        mem = PhysMemory(open_core(image_path), f"handover image "
                         f"{image_path}")
        return map_phys(fdtmod.parse(read_fdt_at(mem, fdt_phys,
                                                 "image root FDT")))
    except (KhoError, fdtmod.FdtError):
        return None


def gather(prog, meta: dict, image_map: int | None = None,
           max_pages: int | None = None) -> Evidence:
    """What kernel *prog* (DWARF loaded) still tells about the handover
    whose image note is *meta*; *image_map* is the image FDT's
    ``preserved-memory-map`` (see :func:`image_map_phys`)."""
    from .. import fdt as fdtmod
    from ..decode import read_fdt_at
    from ..decode.handover import map_phys
    from ..memory import PhysMemory, kernel_release
    from ..walk import (incoming_state, memblock_reserved, outgoing_fdt_phys,
                        outgoing_tracker, preserved_markers)
    from ..walk._read import source_name
    fdt = meta["fdt_phys"]
    st = incoming_state(prog)
    release = kernel_release(prog)
    if st.fdt_phys and st.fdt_phys == fdt:
        ev = Evidence(INCOMING, f"the incoming state (kho_in.fdt_phys "
                      f"0x{fdt:x} is the image's FDT)")
        if st.previous_release and meta.get("release") and \
                st.previous_release != meta["release"]:
            ev.notes.append(f"kho_in says the previous kernel was "
                            f"{st.previous_release}, the image "
                            f"{meta['release']}")
        try:
            mem = PhysMemory(prog, source_name(prog))
            now = map_phys(fdtmod.parse(read_fdt_at(mem, fdt,
                                                    "incoming root FDT")))
            if image_map is not None:
                ev.map_same = now == image_map
                if not ev.map_same:
                    ev.notes.append(
                        f"the incoming FDT's preserved-memory-map is "
                        f"0x{now:x}, the image's 0x{image_map:x}: the map "
                        "was rebuilt after the capture")
        except (KhoError, fdtmod.FdtError) as e:
            ev.notes.append(f"incoming FDT not compared: {e}")
        scan = preserved_markers(prog, max_pages=max_pages)
        ev.reserved = memblock_reserved(prog)
        ev.held, ev.exact = scan.markers, scan.magic
        ev.unscanned = [(s << PAGE_SHIFT, e << PAGE_SHIFT)
                        for s, e in scan.unreadable]
        ev.against += (f"; {len(scan.markers)} marked head pages, "
                       f"{scan.source}" if scan.markers is not None
                       else "; markers cannot be enumerated")
        if scan.truncated_at_pfn is not None:
            ev.unscanned.append((scan.truncated_at_pfn << PAGE_SHIFT,
                                 1 << 64))
            ev.notes.append(f"marker scan stopped at pfn "
                            f"0x{scan.truncated_at_pfn:x}")
        return ev
    try:
        out_fdt = outgoing_fdt_phys(prog)
    except KhoError:
        out_fdt = None
    if out_fdt == fdt and (not meta.get("release") or
                           meta["release"] == release):
        t = outgoing_tracker(prog)
        ev = Evidence(SAME_KERNEL, f"the outgoing tracker of the kernel the "
                      f"image was captured from ({t.expression}; kho_out "
                      f"FDT 0x{fdt:x})", held=t.runs)
        if t.finalized is False:
            ev.notes.append("kho-v1 not finalized now: nothing would be "
                            "handed over until finalize")
        ev.notes.append("same-kernel verify: checks the blocks before the "
                        "kexec; 'restored' does not apply")
        return ev
    if st.fdt_phys:
        why = (f"this kernel received another handover (kho_in.fdt_phys "
               f"0x{st.fdt_phys:x}, the image's FDT is at 0x{fdt:x})")
        scan = preserved_markers(prog, max_pages=max_pages)
        return Evidence(NOT_RECEIVED, why, held=scan.markers,
                        exact=scan.magic, reason=why)
    why = ("this kernel was not booted through a KHO kexec (kho_in.fdt_phys "
           "is 0) and is not the one the image was captured from"
           + (f" (its outgoing FDT is at 0x{out_fdt:x}, the image's at "
              f"0x{fdt:x})" if out_fdt is not None else ""))
    return Evidence(NOT_RECEIVED, why, reason=why)


def verify(prog, meta: dict, hashes: ImageHashes, *,
           image_map: int | None = None, max_pages: int | None = None,
           progress=None) -> VerifyResult:
    """Verify *hashes* (the image's, note *meta*) against kernel *prog*
    (DWARF loaded): :func:`gather`, then :func:`classify` reading the
    blocks' contents from *prog*. *progress(done, total)* as in
    :func:`kho_inspect.image.hash_blocks`."""
    from ..memory import PhysMemory
    from ..walk._read import source_name
    ev = gather(prog, meta, image_map, max_pages)
    mem = PhysMemory(prog, source_name(prog))
    total = sum(b.size for b in hashes.blocks)
    done = [0]

    def current(b: BlockHashes) -> list:
        got = hash_span(mem, b.phys, b.size, hashes.chunk_bytes)
        done[0] += b.size
        if progress is not None:
            progress(done[0], total)
        return got
    return classify(hashes, ev, current)


__all__ = ["Evidence", "BlockVerdict", "VerifyResult", "classify",
           "compare_chunks", "gather", "verify", "image_map_phys",
           "INCOMING", "SAME_KERNEL", "NOT_RECEIVED", "FAILING"]

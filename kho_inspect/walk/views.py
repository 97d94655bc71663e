"""Whole views built from the walker helpers: what ``kho-inspect status``,
``tracker`` and ``incoming`` (and the drgn scripts) print.

Each returns a JSON-friendly dict; :mod:`kho_inspect.cli.walker` renders it.
"""

from __future__ import annotations

import drgn

from ..abi import v1
from ..decode import decode_handover, read_fdt_at
from ..errors import KhoError
from ..memory import PhysMemory, kernel_release
from ..ranges import coalesce, totals_by_order
from ._read import direct_map_base, source_name
from .fdt import outgoing_fdt_phys
from .incoming import DEFAULT_SCAN_PAGES, preserved_markers
from .state import (bin_free_blocks, cma_free_pages, cma_mismatch,
                    cma_total_pages, free_blocks, incoming_state,
                    kernel_page_size, kexec_image_kho, kho_enabled,
                    require_kho_boot, scratch_areas, total_ram_pages)
from .tracker import RADIX, outgoing_tracker


def _mem(prog: drgn.Program) -> PhysMemory:
    return PhysMemory(prog, source_name(prog))


def outgoing_handover(prog: drgn.Program, *, with_map: bool = False,
                      bitmap_bytes: int | None = None):
    """Decode the outgoing root FDT (``kho_out.fdt`` / ``kho_out.ser.fdt``)
    with the reference decoder.

    :returns: ``(Handover, fdt_phys)``.
    :raises KhoError: if the FDT is not valid (6.16-6.18 build it only at
        finalize) or cannot be read.
    """
    phys = outgoing_fdt_phys(prog)
    mem = _mem(prog)
    blob = read_fdt_at(mem, phys, "outgoing root FDT")
    return decode_handover(blob, mem, fdt_phys=phys, bitmap_bytes=bitmap_bytes,
                           bitmap_source="DWARF sizeof(struct "
                           "kho_mem_phys_bits)", with_map=with_map), phys


def tracker_view(prog: drgn.Program) -> dict:
    """The outgoing tracker in the schema of ``kho-inspect map --json``
    (``generation``, ``bitmap_bytes``, ``bitmap_source``, ``map_phys``,
    ``state``, ``ranges`` coalesced, ``totals``, ``map_pages``,
    ``subnodes``, ``compat_tokens``), plus the walker's own ``layout``,
    ``expression``,
    ``finalized``, ``zero_pages`` and ``source``. ``map_pages`` are the
    bitmaps or nodes the walker read (``virt`` added)."""
    t = outgoing_tracker(prog)
    runs = coalesce(t.runs)
    gen, subnodes, tokens = None, [], []
    try:
        h, _ = outgoing_handover(prog)
        gen, subnodes = h.generation, [s.as_json() for s in h.subnodes]
        tokens = h.compat_tokens
    except KhoError:
        gen = v1.COMPATIBLE if t.layout != RADIX else None
    dm = direct_map_base(prog)
    return {"generation": gen, "compat_tokens": tokens,
            "bitmap_bytes": t.bitmap_bytes,
            "bitmap_source": ("DWARF sizeof(struct kho_mem_phys_bits)"
                              if t.bitmap_bytes else None),
            "map_phys": t.root_phys, "state": _state(t),
            "fdt_source": "kho_out (DWARF)",
            "release": kernel_release(prog),
            "ranges": [r.as_json() for r in runs],
            "totals": {str(o): v for o, v in totals_by_order(runs).items()},
            "map_pages": [{"phys": a - dm if a >= dm else None, "virt": a,
                           "size": s, "kind": k} for a, s, k in t.pages],
            "subnodes": subnodes,
            "layout": t.layout, "expression": t.expression,
            "finalized": t.finalized, "zero_pages": t.zero_pages,
            "source": source_name(prog)}


def _state(t) -> str:
    """As in ``map --json``: "not-finalized" when kho-v1 has not serialized
    the tracker yet (nothing would be handed over), else "ok"."""
    return "not-finalized" if t.finalized is False else "ok"


def status_view(prog: drgn.Program) -> dict:
    """One screen of KHO state: enabled, finalized, preserved totals by
    order, client sub-nodes, scratch areas, the loaded kexec image's KHO
    fields, and whether this kernel itself was KHO-booted. Parts that cannot
    be read are reported under ``problems`` rather than hiding the rest."""
    doc: dict = {"release": kernel_release(prog), "source": source_name(prog),
                 "problems": []}
    probs = doc["problems"]
    doc["enabled"] = kho_enabled(prog)     # KhoError here: no KHO at all
    try:
        t = outgoing_tracker(prog)
        runs = coalesce(t.runs)
        doc["tracker"] = {
            "layout": t.layout, "expression": t.expression,
            "bitmap_bytes": t.bitmap_bytes, "finalized": t.finalized,
            "ranges": len(runs),
            "totals": {str(o): v for o, v in totals_by_order(runs).items()}}
    except KhoError as e:
        doc["tracker"] = None
        probs.append(f"tracker: {e}")
    doc["fdt"] = None
    try:
        h, phys = outgoing_handover(prog)
        doc["fdt"] = {"phys": phys, "generation": h.generation,
                      "compat_tokens": h.compat_tokens, "size": h.fdt_size,
                      "subnodes": [s.as_json() for s in h.subnodes]}
    except KhoError as e:
        tr = doc.get("tracker")
        if tr and tr["finalized"] is False and tr["expression"].startswith(
                "kho_out.ser"):
            probs.append("outgoing FDT: not built yet (6.16-6.18 build it "
                         "at finalize)")
        else:
            probs.append(f"outgoing FDT: {e}")
    try:
        doc["scratch"] = [a.as_json() for a in scratch_areas(prog)]
    except KhoError as e:
        doc["scratch"] = None
        probs.append(f"scratch: {e}")
    try:
        doc["kexec_image"] = kexec_image_kho(prog)
    except KhoError as e:
        doc["kexec_image"] = None
        probs.append(f"kexec image: {e}")
    try:
        doc["incoming"] = incoming_state(prog).as_json()
    except KhoError as e:
        doc["incoming"] = None
        probs.append(f"incoming: {e}")
    if doc["scratch"]:
        doc["scratch_accounting"] = _scratch_accounting(prog, doc)
    else:
        doc["scratch_accounting"] = None
    return doc


def _scratch_accounting(prog: drgn.Program, doc: dict) -> dict:
    """How much of the scratch areas of ``doc["scratch"]`` is in use, and
    what /proc/meminfo shows of them: ``areas`` (per area, in array order:
    ``index``, ``free``, ``in_use``, ``ram_percent``), ``ram`` (MemTotal,
    ``_totalram_pages``), ``cma_total`` and ``cma_free`` (CmaTotal,
    CmaFree; None without CONFIG_CMA), ``scratch_size``, ``scratch_free``,
    the free-list walk (``walk``: MIGRATE_CMA blocks, ``outside_scratch``
    bytes, ``truncated``), ``origin`` and ``mismatch`` (CmaFree > CmaTotal
    with scratch present). Sizes in bytes; figures that could not be read
    are None, and why goes to ``doc["problems"]``. Kept apart from
    ``doc["scratch"]``: these figures move while the kernel runs."""
    probs = doc["problems"]
    areas = doc["scratch"]
    ps = kernel_page_size(prog)
    acc: dict = {"page_size": ps, "ram": None,
                 "ram_source": "MemTotal (_totalram_pages)",
                 "cma_total": None, "cma_free": None, "walk": None,
                 "scratch_size": sum(a["size"] for a in areas),
                 "scratch_free": None, "mismatch": False,
                 "origin": ("the previous kernel (kho_in.scratch_phys)"
                            if (doc.get("incoming") or {}).get("kho_boot")
                            else "this kernel, at boot")}
    per = [{"index": a["index"], "free": None, "in_use": None,
            "ram_percent": None} for a in areas]
    acc["areas"] = per
    try:
        acc["ram"] = total_ram_pages(prog) * ps
        total = cma_total_pages(prog)
        free = cma_free_pages(prog)
        acc["cma_total"] = None if total is None else total * ps
        acc["cma_free"] = None if free is None else free * ps
    except KhoError as e:
        probs.append(f"scratch accounting: {e}")
    for a, p in zip(areas, per):
        if acc["ram"]:
            p["ram_percent"] = round(100 * a["size"] / acc["ram"], 2)
    try:
        w = free_blocks(prog)
    except KhoError as e:
        probs.append(f"scratch accounting: {e}")
    else:
        inside, outside = bin_free_blocks(
            w.blocks, [(a["addr"], a["size"]) for a in areas], ps)
        for a, p, f in zip(areas, per, inside):
            p["free"], p["in_use"] = f, a["size"] - f
        acc["scratch_free"] = sum(inside)
        acc["walk"] = {"migratetype": "MIGRATE_CMA", "lists": w.lists,
                       "blocks": len(w.blocks), "free": w.pages * ps,
                       "outside_scratch": outside,
                       "truncated": w.truncated, "loops": w.loops}
        if w.truncated:
            probs.append(f"scratch accounting: free-list walk stopped after "
                         f"{len(w.blocks)} blocks: free figures are too low")
        if w.loops:
            probs.append(f"scratch accounting: {w.loops} free list(s) "
                         "repeat an entry (changed while read, or corrupt): "
                         "free figures are approximate")
    acc["mismatch"] = cma_mismatch(acc["cma_free"], acc["cma_total"],
                                   acc["scratch_size"])
    return acc


def incoming_view(prog: drgn.Program, *,
                  max_pages: int | None = DEFAULT_SCAN_PAGES,
                  markers: bool = True) -> dict:
    """The incoming side: ``kho_in``, the sub-nodes of the incoming FDT
    (reference decoder, map not decoded), and the preserved head pages
    still carrying their marker.

    :raises KhoError: if this kernel was not booted through a KHO kexec.
    """
    st = incoming_state(prog)
    require_kho_boot(st.fdt_phys)
    doc: dict = {"release": kernel_release(prog), "source": source_name(prog),
                 "kho_in": st.as_json(), "problems": []}
    notes = ["the incoming map's own pages (kho-v1 chunks and bitmaps, radix "
             "nodes) are free memory since boot and are not decoded"]
    if st.mem_map_phys:
        notes[0] += f" (kho_in.mem_map_phys 0x{st.mem_map_phys:x})"
    if st.has_radix_tree:
        notes.append("kho_in.radix_tree.root points to freed memory after "
                     "boot and is not walked")
    doc["notes"] = notes
    mem = _mem(prog)
    try:
        blob = read_fdt_at(mem, st.fdt_phys, "incoming root FDT")
        h = decode_handover(blob, mem, fdt_phys=st.fdt_phys, with_map=False)
        doc["fdt"] = {"phys": st.fdt_phys, "generation": h.generation,
                      "compat_tokens": h.compat_tokens, "size": h.fdt_size,
                      "subnodes": [s.as_json() for s in h.subnodes]}
        if any(s.error for s in h.subnodes):
            notes.append("a client that restored its data may have freed "
                         "the pages its sub-node blob points to (e.g. "
                         "kho_restore_vmalloc frees the chunk list): decode "
                         "errors in sub-nodes are expected after restore")
    except KhoError as e:
        doc["fdt"] = None
        doc["problems"].append(f"incoming FDT: {e}")
    if markers:
        scan = preserved_markers(prog, max_pages=max_pages)
        doc["scan"] = scan.as_json()
        runs = coalesce(scan.markers) if scan.markers is not None else None
        doc["scan"]["markers"] = (None if runs is None else
                                  [r.as_json() for r in runs])
        doc["scan"]["totals"] = (None if runs is None else
                                 {str(o): v for o, v in
                                  totals_by_order(runs).items()})
    return doc

"""Walker commands (need the kernel's DWARF): status, tracker, incoming
(``check``, which also runs without DWARF, is in :mod:`.check`). Register with ``register(subparsers)`` (see ``EXTRA_COMMANDS``).

The rendering functions (``*_text``) take the dicts of
:mod:`kho_inspect.walk.views`, so the drgn scripts under ``scripts/`` print
exactly what the CLI prints.
"""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from .report import (emit, generation_label, hexa, human_size,
                     pages_summary, ranges_lines, subnodes_table,
                     totals_table)

STATUS_EPILOG = """\
examples:
  kho-inspect status                       # the running kernel (root)
  kho-inspect status --core vmcore -s vmlinux --json
  drgn -k scripts/kho_status.py            # the same, as a drgn script
"""
TRACKER_EPILOG = """\
examples:
  kho-inspect tracker                      # what this kernel will hand over
  kho-inspect tracker --json > t.json      # same schema as 'map --json'
  kho-inspect tracker --core vmcore -s vmlinux
"""
INCOMING_EPILOG = """\
examples:
  kho-inspect incoming                     # in a kernel booted by KHO kexec
  kho-inspect incoming --scan-limit 0      # scan the whole memmap
  kho-inspect incoming --no-markers --json
"""
def _note(prefix: str, text: str) -> str:
    """A note wrapped to 79 columns, continuation lines indented."""
    return textwrap.fill(text, 79, initial_indent=f"{prefix}: ",
                         subsequent_indent="  ")


def _program(args):
    from .source import open_source
    return open_source(args).debug_program()


def _kb(n: int | None) -> str:
    """Bytes as /proc/meminfo prints them."""
    return "?" if n is None else f"{n // 1024} kB"


def _size(n: int | None) -> str:
    return "?" if n is None else human_size(n)


def cma_explanation(acc: dict, areas: int) -> str:
    """Why /proc/meminfo shows CmaFree above CmaTotal, for the
    ``scratch_accounting`` document *acc* (``mismatch`` true) of a kernel
    with *areas* scratch areas."""
    text = (f"/proc/meminfo shows CmaFree {_kb(acc['cma_free'])} with "
            f"CmaTotal {_kb(acc['cma_total'])}: the free memory in KHO's "
            f"scratch areas ({_size(acc['scratch_free'])} of "
            f"{_size(acc['scratch_size'])} in {areas} areas")
    if "previous" in acc["origin"]:
        text += ", handed over by the previous kernel"
    text += (") is in MIGRATE_CMA pageblocks so that only movable "
             "allocations use it and it stays available for the next "
             "kexec; it is not a CMA reservation (CmaTotal counts only "
             "those). It is usable memory, for page cache and user pages. "
             "To get it back as ordinary memory, boot with kho=off (no "
             "KHO), or shrink it with kho_scratch= (ignored on KHO boots).")
    return text


def _scratch_text(areas: list, acc: dict | None) -> str:
    """The scratch table, with the accounting when there is one."""
    if not areas:
        return "no scratch areas"
    per = {p["index"]: p for p in (acc or {}).get("areas", [])}
    rows = []
    for a in areas:
        p = per.get(a["index"], {})
        pct = p.get("ram_percent")
        rows.append((a["index"], a["role"], hexa(a["addr"]),
                     human_size(a["size"]),
                     "?" if pct is None else f"{pct:.1f}",
                     _size(p.get("in_use")), _size(p.get("free"))))
    out = [tabulate(rows, headers=["scratch", "role", "addr", "size",
                                   "% RAM", "in use", "free"],
                    disable_numparse=True,
                    colalign=("right", "left", "left") + ("right",) * 4)]
    if not acc:
        return "\n".join(out)
    w = acc.get("walk")
    lines = [f"scratch {_size(acc['scratch_size'])} in {len(areas)} areas, "
             f"set aside by {acc['origin']}; RAM is {acc['ram_source']} "
             f"{_size(acc['ram'])}"]
    if w:
        lines.append(f"free: the MIGRATE_CMA buddy free lists ({w['blocks']} "
                     f"blocks, {_size(w['free'])}; "
                     f"{_size(w['outside_scratch'])} outside the scratch "
                     "areas); pages on per-cpu lists count as in use, as in "
                     "the kernel's own figures")
    if acc.get("cma_free") is not None:
        lines.append(f"/proc/meminfo: CmaTotal {_kb(acc['cma_total'])}, "
                     f"CmaFree {_kb(acc['cma_free'])}")
    out += [textwrap.fill(x, 79, subsequent_indent="  ") for x in lines]
    if acc.get("mismatch"):
        out.append(_note("why CmaFree", cma_explanation(acc, len(areas))))
    return "\n".join(out)


def status_text(doc: dict) -> str:
    """Render :func:`kho_inspect.walk.views.status_view`."""
    tr = doc.get("tracker") or {}
    fin = tr.get("finalized")
    rows = [("kernel", doc.get("release") or "unknown"),
            ("source", doc["source"]),
            ("KHO enabled", "yes" if doc["enabled"] else "no (boot with "
             "kho=on)")]
    if tr:
        rows.append(("tracker", f"{tr['layout']} ({tr['expression']}"
                     + (f", {tr['bitmap_bytes']}-byte bitmaps"
                        if tr.get("bitmap_bytes") else "") + ")"))
        rows.append(("finalized", "n/a (no finalize step)" if fin is None
                     else "yes" if fin else "no"))
        allb = sum(t["bytes"] for t in tr["totals"].values())
        rows.append(("preserved", f"{human_size(allb)} in "
                     f"{tr['ranges']} ranges"))
    fdt = doc.get("fdt")
    if fdt:
        gen = generation_label(fdt["generation"], fdt.get("compat_tokens"))
        rows.append(("outgoing FDT", f"{gen} at "
                     f"{hexa(fdt['phys'])}, {fdt['size']} bytes"))
    img = doc.get("kexec_image")
    if img is None:
        rows.append(("kexec image", "none loaded"))
    elif not img.get("kho_fields"):
        rows.append(("kexec image", "loaded; struct kimage has no kho"))
    elif img["fdt"]:
        sc = img["scratch"]
        rows.append(("kexec image", f"loaded with KHO: fdt {hexa(img['fdt'])}"
                     + (f", scratch segment {hexa(sc['mem'])}"
                        f"+{sc['bufsz']}" if sc else "")))
    else:
        rows.append(("kexec image", "loaded WITHOUT KHO (kexec -s needed; "
                     "6.16-6.18: finalize before loading)"))
    inc = doc.get("incoming")
    if inc:
        rows.append(("this boot", "KHO kexec" + (
            f" from {inc['previous_release']} (count {inc['kexec_count']})"
            if inc.get("previous_release") else "") if inc["kho_boot"]
            else "cold boot"))
    out = [tabulate(rows, tablefmt="plain")]
    if tr:
        out += ["", totals_table(tr["totals"])]
    if fdt:
        out += ["", subnodes_table(fdt["subnodes"])]
    if doc.get("scratch") is not None:
        out += ["", _scratch_text(doc["scratch"],
                                  doc.get("scratch_accounting"))]
    for p in doc["problems"]:
        out.append(_note("note", p))
    return "\n".join(out)


def tracker_text(doc: dict, limit: int = 40) -> str:
    """Render :func:`kho_inspect.walk.views.tracker_view`."""
    head = f"tracker {doc['expression']} ({doc['layout']}"
    if doc.get("bitmap_bytes"):
        head += f", {doc['bitmap_bytes']}-byte bitmaps"
    head += f") of kernel {doc.get('release') or 'unknown'}"
    lines = [head]
    if doc["finalized"] is not None:
        lines.append("finalized: " + ("yes" if doc["finalized"] else
                                      "no (nothing handed over until "
                                      "finalize)"))
    lines += ["", totals_table(doc["totals"]), ""]
    lines += ranges_lines(doc["ranges"], limit)
    lines.append("\nread: " + (pages_summary(doc["map_pages"]) or "nothing")
                 + (f"; {doc['zero_pages']} all-zero" if doc["zero_pages"]
                    else ""))
    return "\n".join(lines)


def incoming_text(doc: dict, limit: int = 40) -> str:
    """Render :func:`kho_inspect.walk.views.incoming_view`."""
    ki = doc["kho_in"]
    rows = [("kernel", doc.get("release") or "unknown"),
            ("fdt_phys", hexa(ki["fdt_phys"])),
            ("scratch_phys", hexa(ki["scratch_phys"]))]
    if ki.get("mem_map_phys") is not None:
        rows.append(("mem_map_phys", hexa(ki["mem_map_phys"])))
    if ki.get("previous_release") is not None:
        rows.append(("previous kernel", f"{ki['previous_release']} (kexec "
                     f"count {ki['kexec_count']})"))
    out = [tabulate(rows, tablefmt="plain")]
    fdt = doc.get("fdt")
    if fdt:
        gen = generation_label(fdt["generation"], fdt.get("compat_tokens"))
        out += ["", f"incoming FDT: {gen}, {fdt['size']} bytes",
                subnodes_table(fdt["subnodes"])]
    scan = doc.get("scan")
    if scan:
        desc = (f"scanned {scan['pages']} struct pages in {scan['ranges']} "
                f"ranges ({scan['source']})")
        if scan["truncated_at_pfn"] is not None:
            desc += (f"; stopped at pfn {hexa(scan['truncated_at_pfn'])} "
                     "(--scan-limit)")
        if scan["unreadable"]:
            desc += "; unreadable memmap: " + ", ".join(
                f"pfn {hexa(u['start_pfn'])}-{hexa(u['end_pfn'])}"
                for u in scan["unreadable"][:5])
        out += ["", textwrap.fill(desc, 79, subsequent_indent="  ")]
        if scan["note"]:
            out.append(_note("note", scan["note"]))
        if scan["markers"] is None:
            out.append("preserved head pages: cannot be enumerated here")
        else:
            out.append("preserved, not yet restored (head pages with "
                       + ("KHO_PAGE_MAGIC" if scan["magic"] else
                          "a bare order: order-0 blocks are invisible")
                       + "):")
            if scan["markers"]:
                out.append(totals_table(scan["totals"]))
                ms = scan["markers"]
                shown = ms if limit <= 0 else ms[:limit]
                out.append(tabulate(
                    [(hexa(r["phys"]), r["order"], r["count"],
                      human_size(r["size"])) for r in shown],
                    headers=["phys", "order", "count", "size"]))
                if len(shown) < len(ms):
                    out.append(f"... {len(ms) - len(shown)} more")
            else:
                out.append("none")
    for n in doc.get("notes", []):
        out.append(_note("note", n))
    for p in doc["problems"]:
        out.append(_note("problem", p))
    return "\n".join(out)


# -- commands -------------------------------------------------------------

def cmd_status(args) -> int:
    from ..walk.views import status_view
    doc = status_view(_program(args))
    emit(args, doc, status_text(doc))
    return 0


def cmd_tracker(args) -> int:
    from ..walk.views import tracker_view
    doc = tracker_view(_program(args))
    emit(args, doc, tracker_text(doc, args.limit))
    return 0


def cmd_incoming(args) -> int:
    from ..walk.views import incoming_view
    from ..walk.incoming import DEFAULT_SCAN_PAGES
    limit = DEFAULT_SCAN_PAGES if args.scan_limit is None else args.scan_limit
    doc = incoming_view(_program(args), markers=not args.no_markers,
                        max_pages=limit or None)
    emit(args, doc, incoming_text(doc, args.limit))
    return 0


def register(sub) -> None:
    """Add status, tracker and incoming to *sub* (subparsers)."""
    from . import add_command, add_limit_option, add_source_options, count

    p = add_command(sub, "status", "one screen of KHO state (needs DWARF)",
                    cmd_status, STATUS_EPILOG)
    add_source_options(p)

    p = add_command(sub, "tracker", "walk the kernel's outgoing tracker "
                    "(needs DWARF)", cmd_tracker, TRACKER_EPILOG)
    add_source_options(p)
    add_limit_option(p, "ranges")

    p = add_command(sub, "incoming", "what the previous kernel handed over, "
                    "as held here (needs DWARF)", cmd_incoming,
                    INCOMING_EPILOG)
    add_source_options(p)
    p.add_argument("--no-markers", action="store_true",
                   help="skip the scan for preserved head pages")
    # default None: walk.incoming.DEFAULT_SCAN_PAGES (imported by the
    # command, not here: it imports drgn)
    p.add_argument("--scan-limit", type=count, default=None,
                   metavar="PAGES", help="struct pages to examine at most "
                   "when memblock is gone (default 256M struct pages = 1 "
                   "TiB of RAM; 0: no limit)")
    add_limit_option(p, "marker ranges")


__all__ = ["register", "status_text", "tracker_text", "incoming_text"]

"""Human-readable tables (tabulate) and the JSON documents of each command."""

from __future__ import annotations

import json
import sys
import textwrap

from tabulate import tabulate

from .. import fdt as fdtmod
from ..abi.common import MAX_PAGE_ORDER
from ..ranges import coalesce, human_size, totals_by_order  # noqa: F401


def hexa(n) -> str:
    return "-" if n is None else f"0x{n:x}"


def subnodes_json(h) -> list:
    return [s.as_json() for s in h.subnodes]


def generation_label(generation, tokens) -> str:
    """The generation, then the feature tokens of a composite compatible
    (``kho-v4;radix-v1`` -> ``kho-v4 (tokens: radix-v1)``)."""
    label = str(generation)
    if tokens:
        label += f" (tokens: {', '.join(tokens)})"
    return label


def fdt_json(h, tree, origin) -> dict:
    return {"source": origin, "generation": h.generation,
            "compat_tokens": h.compat_tokens,
            "fdt_phys": h.fdt_phys, "totalsize": tree.totalsize,
            "root": fdtmod.node_to_json(tree.root),
            "subnodes": subnodes_json(h)}


#: Notes (stderr) held back until the command has its result: a command
#: that fails prints only its one-line error.
_NOTES: list[str] = []


def note(msg: str) -> None:
    """Say *msg* on stderr once the command succeeds (see :func:`emit`)."""
    _NOTES.append(msg)


def flush_notes(keep: bool = True) -> None:
    """Print the pending notes (or, with *keep* false, drop them)."""
    if keep:
        for msg in _NOTES:
            print(f"kho-inspect: {msg}", file=sys.stderr)
    _NOTES.clear()


def emit(args, doc: dict, text: str) -> None:
    """Print the pending notes, then *doc* as JSON with ``--json``, else the
    human *text*."""
    flush_notes()
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(text)


def _subnode_summary(s: dict) -> str:
    if s.get("error"):
        return f"error: {s['error']}"
    c = s.get("content")
    if not c:
        return ""
    if "regions" in c:
        return ", ".join(f"{r['name']} {hexa(r['start'])}+{human_size(r['size'])}"
                         for r in c["regions"]) or "no regions"
    if "folios" in c:
        return f"{c.get('compatible')}: {c['nr_folios']} folios"
    if "items" in c:
        states: dict = {}
        for i in c["items"]:
            states[i["state"]] = states.get(i["state"], 0) + 1
        return f"{len(c['items'])} items (" + ", ".join(
            f"{n} {k}" for k, n in states.items()) + ")"
    if "previous_release" in c:
        return (f"previous release {c['previous_release']}, kexec count "
                f"{c['kexec_count']}")
    return str(c.get("compatible") or c.get("format"))


def subnodes_table(subnodes: list) -> str:
    """Sub-nodes (their ``as_json()`` form) as a table, within 79 columns
    (a long content, such as an error, is wrapped)."""
    rows = [[s["name"], hexa(s["phys"]), "-" if s["size"] is None
             else str(s["size"]), _subnode_summary(s)] for s in subnodes]
    if not rows:
        return "no sub-nodes"
    left = sum(max(len(h), *(len(r[i]) for r in rows)) + 2
               for i, h in enumerate(("sub-node", "phys", "size")))
    for r in rows:
        r[3] = "\n".join(textwrap.wrap(r[3], max(79 - left, 20))) or r[3]
    return tabulate(rows, headers=["sub-node", "phys", "size", "content"],
                    disable_numparse=True,
                    colalign=("left", "left", "right", "left"))


def fdt_text(h, tree, origin) -> str:
    """The root FDT and its sub-nodes, within 79 columns (the head line and
    long property values are wrapped)."""
    root = [(p.name, ", ".join(p.strings()) if p.name == "compatible"
             else hexa(int.from_bytes(p.value, "little"))
             if len(p.value) == 8 else p.value.hex())
            for p in tree.root.props.values()]
    left = max(len("property"), *(len(n) for n, _ in root)) + 2
    root = [(n, "\n".join(textwrap.wrap(v, max(79 - left, 20))) or v)
            for n, v in root]
    head = (f"{generation_label(h.generation, h.compat_tokens)} root FDT, "
            f"{tree.totalsize} bytes"
            + (f", at phys {hexa(h.fdt_phys)}" if h.fdt_phys is not None
               else "") + f" (from {origin})")
    return "\n".join([
        textwrap.fill(head, 79, subsequent_indent="  ",
                      break_on_hyphens=False),
        tabulate(root, headers=["property", "value"],
                 disable_numparse=True), "",
        subnodes_table(subnodes_json(h))])


def totals_table(totals: dict) -> str:
    """The ``totals`` of a map/tracker document, by order, with a sum."""
    rows = [(o, t["blocks"], human_size(t["bytes"]),
             "above MAX_PAGE_ORDER" if int(o) > MAX_PAGE_ORDER else "")
            for o, t in sorted(totals.items(), key=lambda kv: int(kv[0]))]
    rows.append(("all", sum(t["blocks"] for t in totals.values()),
                 human_size(sum(t["bytes"] for t in totals.values())), ""))
    return tabulate(rows, headers=["order", "blocks", "bytes", ""])


def ranges_lines(ranges: list, limit: int) -> list[str]:
    """The ``ranges`` of a map/tracker document as a table (first *limit*;
    0 for all)."""
    shown = ranges if limit <= 0 else ranges[:limit]
    owners = any("owner" in r for r in ranges)
    rows = [(hexa(r["phys"]), hexa(r["phys"] + r["size"]), r["order"],
             r["count"], human_size(r["size"]))
            + ((r.get("owner") or "(unclaimed)",) if owners else ())
            for r in shown]
    lines = [tabulate(rows, headers=["phys", "end", "order", "count",
                                     "size"] + (["owner"] if owners
                                                else []))]
    if len(shown) < len(ranges):
        lines.append(f"... {len(ranges) - len(shown)} more ranges "
                     "(--limit 0 shows all)")
    return lines


def pages_summary(pages: list) -> str:
    """``map_pages`` counted by kind: "13 radix-table page(s), ..."."""
    kinds: dict = {}
    for p in pages:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    return ", ".join(f"{n} {k} page(s)" for k, n in kinds.items())


def map_json(h, origin, release) -> dict:
    m = h.map
    runs = coalesce(m.runs)
    return {"generation": h.generation, "compat_tokens": h.compat_tokens,
            "bitmap_bytes": m.bitmap_bytes,
            "bitmap_source": m.bitmap_source, "map_phys": m.map_phys,
            "state": m.state, "fdt_source": origin, "release": release,
            "ranges": [r.as_json() for r in runs],
            "totals": {str(o): t for o, t in totals_by_order(runs).items()},
            "map_pages": [p.as_json() for p in m.pages],
            "subnodes": subnodes_json(h)}


def map_text(doc: dict, limit: int) -> str:
    """Render :func:`map_json`'s document."""
    gen = generation_label(doc["generation"], doc.get("compat_tokens"))
    head = f"{gen} map at {hexa(doc['map_phys'])} (FDT from " \
        f"{doc['fdt_source']}"
    head += f", kernel {doc['release']})" if doc["release"] else ")"
    if doc["bitmap_bytes"]:
        head += (f"; {doc['bitmap_bytes']}-byte bitmaps "
                 f"({doc['bitmap_source']})")
    lines = [textwrap.fill(head, 79, subsequent_indent="  ",
                           break_on_hyphens=False)]
    if doc["state"] == "not-finalized":
        from .source import DEBUGFS
        lines.append("state: NOT FINALIZED - preserved-memory-map is 0; "
                     "nothing would be handed over (6.19/7.0: "
                     f"echo 1 > {DEBUGFS}/out/finalize)")
    lines += ["", totals_table(doc["totals"]), ""]
    lines += ranges_lines(doc["ranges"], limit)
    lines += ["", "map itself: " + (pages_summary(doc["map_pages"])
                                    or "no pages")]
    return "\n".join(lines)

"""Human-readable tables (tabulate) and the JSON documents of each command."""

from __future__ import annotations

from tabulate import tabulate

from .. import fdt as fdtmod
from ..abi.common import MAX_PAGE_ORDER
from ..ranges import coalesce, totals_by_order


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    return str(n)


def hexa(n) -> str:
    return "-" if n is None else f"0x{n:x}"


def subnodes_json(h) -> list:
    return [s.as_json() for s in h.subnodes]


def fdt_json(h, tree, origin) -> dict:
    return {"source": origin, "generation": h.generation,
            "fdt_phys": h.fdt_phys, "totalsize": tree.totalsize,
            "root": fdtmod.node_to_json(tree.root),
            "subnodes": subnodes_json(h)}


def _subnode_summary(s) -> str:
    if s.error:
        return f"error: {s.error}"
    c = s.content
    if not c:
        return ""
    if "regions" in c:
        return ", ".join(f"{r['name']} {hexa(r['start'])}+{human_size(r['size'])}"
                         for r in c["regions"]) or "no regions"
    if "folios" in c:
        return f"{c.get('compatible')}: {c['nr_folios']} folios"
    if "previous_release" in c:
        return (f"previous release {c['previous_release']}, kexec count "
                f"{c['kexec_count']}")
    return str(c.get("compatible") or c.get("format"))


def fdt_text(h, tree, origin) -> str:
    root = [(p.name, ", ".join(p.strings()) if p.name == "compatible"
             else hexa(int.from_bytes(p.value, "little"))
             if len(p.value) == 8 else p.value.hex())
            for p in tree.root.props.values()]
    lines = [f"KHO root FDT from {origin}: {h.generation}, "
             f"{tree.totalsize} bytes"
             + (f", at phys {hexa(h.fdt_phys)}" if h.fdt_phys is not None
                else ""),
             tabulate(root, headers=["property", "value"]), ""]
    rows = [(s.name, hexa(s.phys), "-" if s.size is None else s.size,
             _subnode_summary(s)) for s in h.subnodes]
    lines.append(tabulate(rows, headers=["sub-node", "phys", "size",
                                         "content"]) if rows
                 else "no sub-nodes")
    return "\n".join(lines)


def map_json(h, origin, release) -> dict:
    m = h.map
    runs = coalesce(m.runs)
    return {"generation": h.generation, "bitmap_bytes": m.bitmap_bytes,
            "bitmap_source": m.bitmap_source, "map_phys": m.map_phys,
            "state": m.state, "fdt_source": origin, "release": release,
            "ranges": [r.as_json() for r in runs],
            "totals": {str(o): t for o, t in totals_by_order(runs).items()},
            "map_pages": [p.as_json() for p in m.pages],
            "subnodes": subnodes_json(h)}


def map_text(h, origin, release, limit: int) -> str:
    m = h.map
    runs = coalesce(m.runs)
    head = f"{h.generation} map at {hexa(m.map_phys)} (FDT from {origin}"
    head += f", kernel {release})" if release else ")"
    if m.bitmap_bytes:
        head += f"; {m.bitmap_bytes}-byte bitmaps ({m.bitmap_source})"
    lines = [head]
    if m.state == "not-finalized":
        lines.append("state: NOT FINALIZED - preserved-memory-map is 0; "
                     "nothing would be handed over (6.19/7.0: "
                     "echo 1 > /sys/kernel/debug/kho/out/finalize)")
    totals = totals_by_order(runs)
    trows = [(o, t["blocks"], human_size(t["bytes"]),
              "above MAX_PAGE_ORDER" if o > MAX_PAGE_ORDER else "")
             for o, t in totals.items()]
    allb = sum(t["bytes"] for t in totals.values())
    trows.append(("all", sum(t["blocks"] for t in totals.values()),
                  human_size(allb), ""))
    lines += ["", tabulate(trows, headers=["order", "blocks", "bytes", ""])]
    shown = runs if limit <= 0 else runs[:limit]
    rrows = [(hexa(r.phys), hexa(r.end), r.order, r.count, human_size(r.size))
             for r in shown]
    lines += ["", tabulate(rrows, headers=["phys", "end", "order", "count",
                                           "size"])]
    if len(shown) < len(runs):
        lines.append(f"... {len(runs) - len(shown)} more ranges "
                     "(--limit 0 shows all)")
    kinds: dict = {}
    for p in m.pages:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    lines += ["", "map itself: " + (", ".join(f"{n} {k} page(s)"
                                              for k, n in kinds.items())
                                    or "no pages")]
    return "\n".join(lines)

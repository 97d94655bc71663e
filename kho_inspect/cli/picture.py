"""kho-inspect picture: physical memory at a glance - System RAM, preserved
blocks by order, scratch areas, the handover's own pages, holes - as
character cells in the terminal (80 columns) or as SVG (``-o FILE.svg``).

Computation and rendering are apart: :func:`choose_cell` and :func:`grid`
turn classified ranges (:class:`Area`) into rows of cells, pure functions
of their arguments; :func:`picture_text` and :func:`picture_svg` draw the
JSON document :func:`picture_json` builds from them.

A cell is a fixed power-of-two span of physical memory and shows the
highest-priority class (:data:`CLASSES`, first wins) of anything in it,
however little of the cell that covers.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import textwrap
from collections import Counter
from xml.sax.saxutils import escape

from ..abi.common import MAX_PAGE_ORDER, PAGE_SIZE
from ..errors import KhoError
from .report import emit, hexa, human_size

EPILOG = """\
examples:
  kho-inspect picture                      # the running kernel (root)
  kho-inspect picture --sample 7.3         # a bundled handover image
  kho-inspect picture -o memory.svg        # the same cells as SVG
  kho-inspect picture --range 0x2000000-0x4000000   # zoom in
  kho-inspect picture --core vmcore -s vmlinux --json
"""

#: Widest line the terminal picture draws.
WIDTH = 79
#: Lines of cells (and "..." gaps) the automatic cell size aims at.
MAX_LINES = 24
CELLS_PER_ROW = 64


@dataclasses.dataclass(frozen=True)
class Area:
    """A physical range [start, end) and what it is: ``kind`` is "ram"
    (System RAM), "scratch" (a KHO scratch area), "preserved" (a run of
    ``count`` blocks of ``order``) or "handover" (a page of the handover
    itself: root FDT, map chunks/bitmaps/radix nodes, sub-node data;
    ``detail`` names which)."""

    start: int
    end: int
    kind: str
    order: int | None = None
    count: int | None = None
    detail: str | None = None

    def as_json(self) -> dict:
        d = {"start": self.start, "end": self.end, "kind": self.kind}
        if self.order is not None:
            d["order"], d["count"] = self.order, self.count
        if self.detail is not None:
            d["detail"] = self.detail
        return d


@dataclasses.dataclass(frozen=True)
class CellClass:
    key: str
    char: str
    label: str
    color: str


#: What a cell can show, highest priority first. A block above
#: MAX_PAGE_ORDER is never hidden; the handover's own pages come next (few
#: and small); then preserved blocks, larger orders first; scratch; RAM;
#: and "empty" (not System RAM, or nothing known when the source has no
#: RAM information).
CLASSES = (
    CellClass("above-max-order", "!",
              f"preserved, order > {MAX_PAGE_ORDER} (MAX_PAGE_ORDER)",
              "#d62728"),
    CellClass("handover", "#", "handover's own pages (FDT, map, data)",
              "#222222"),
    CellClass(f"order-{MAX_PAGE_ORDER}", "L",
              f"preserved, order {MAX_PAGE_ORDER} (4 MiB blocks)", "#1c3f94"),
    CellClass("order-5-9", "m", "preserved, orders 5-9 (128 KiB-2 MiB)",
              "#3a74d9"),
    CellClass("order-1-4", "s", "preserved, orders 1-4 (8-64 KiB)",
              "#7fb0f5"),
    CellClass("order-0", "p", "preserved, order 0 (4 KiB pages)", "#21a8a0"),
    CellClass("scratch", "~", "KHO scratch area", "#f2b134"),
    CellClass("ram", ".", "System RAM", "#cfe8c6"),
    CellClass("empty", " ", "not System RAM", "#f4f4f4"),
)
PRIORITY = {c.key: i for i, c in enumerate(CLASSES)}
BY_KEY = {c.key: c for c in CLASSES}
EMPTY = PRIORITY["empty"]
#: The label of "empty" when the source says nothing about RAM.
UNKNOWN_LABEL = "nothing known (no RAM information)"


def class_of(area: Area) -> str:
    """The :data:`CLASSES` key an area's bytes show as."""
    if area.kind == "preserved":
        o = area.order
        return ("above-max-order" if o > MAX_PAGE_ORDER else
                f"order-{MAX_PAGE_ORDER}" if o == MAX_PAGE_ORDER else
                "order-5-9" if o >= 5 else "order-1-4" if o >= 1 else
                "order-0")
    if area.kind in ("handover", "scratch", "ram"):
        return area.kind
    raise ValueError(f"unknown area kind {area.kind!r}")


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of cells: ``cells`` holds one class key per cell, the first
    cell starting at physical address ``start``."""

    start: int
    cells: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Gap:
    """Rows [start, end) with nothing in them, drawn as one line."""

    start: int
    end: int


def _touched_rows(areas, row_bytes: int) -> list[tuple[int, int]]:
    """Row indices [first, last] any area touches, merged, sorted."""
    spans = sorted((a.start // row_bytes, (a.end - 1) // row_bytes)
                   for a in areas if a.end > a.start)
    out: list[list[int]] = []
    for lo, hi in spans:
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def lines_needed(areas, cell_bytes: int,
                 cells_per_row: int = CELLS_PER_ROW) -> int:
    """Lines :func:`grid` draws: rows with something in them, plus one line
    per run of empty rows between them."""
    touched = _touched_rows(areas, cell_bytes * cells_per_row)
    return sum(hi - lo + 1 for lo, hi in touched) + max(len(touched) - 1, 0)


def choose_cell(areas, cells_per_row: int = CELLS_PER_ROW,
                max_lines: int = MAX_LINES) -> int:
    """The smallest power-of-two cell size, at least a page, for which
    :func:`grid` draws at most *max_lines* lines (or the largest tried,
    2^64). Doubling the cell never adds a line (rows and gaps only merge),
    so the exponent is found by bisection."""
    lo, hi = PAGE_SIZE.bit_length() - 1, 64
    while lo < hi:
        mid = (lo + hi) // 2
        if lines_needed(areas, 1 << mid, cells_per_row) > max_lines:
            lo = mid + 1
        else:
            hi = mid
    return 1 << lo


def grid(areas, cell_bytes: int,
         cells_per_row: int = CELLS_PER_ROW) -> list[Row | Gap]:
    """Rows of cells for *areas*: a row covers ``cell_bytes *
    cells_per_row`` bytes from an address aligned to that, from the row of
    the lowest area to the row of the highest. A cell holds the key of the
    highest-priority class any area puts in it ("empty" if none). A single
    empty row between rows is drawn; two or more become one :class:`Gap`."""
    row_bytes = cell_bytes * cells_per_row
    touched = _touched_rows(areas, row_bytes)
    rows: dict[int, list[int]] = {}
    for lo, hi in touched:
        for r in range(lo, hi + 1):
            rows[r] = [EMPTY] * cells_per_row
    for a in areas:
        if a.end <= a.start:
            continue
        prio = PRIORITY[class_of(a)]
        for idx in range(a.start // cell_bytes, (a.end - 1) // cell_bytes + 1):
            r, c = divmod(idx, cells_per_row)
            cells = rows[r]
            if prio < cells[c]:
                cells[c] = prio
    out: list[Row | Gap] = []
    for i, (lo, hi) in enumerate(touched):
        if i:
            plo = touched[i - 1][1] + 1      # first empty row
            if lo - plo == 1:
                out.append(Row(plo * row_bytes, ("empty",) * cells_per_row))
            else:
                out.append(Gap(plo * row_bytes, lo * row_bytes))
        for r in range(lo, hi + 1):
            out.append(Row(r * row_bytes,
                           tuple(CLASSES[p].key for p in rows[r])))
    return out


def legend(areas, rows) -> list[dict]:
    """Per class present (in the areas or the cells): how many ranges
    (preserved: also blocks), their bytes, and the cells showing it.
    Preserved bytes are summed as the map lists them; RAM, scratch and
    handover bytes are those of their union."""
    cells: Counter = Counter()
    for r in rows:
        if isinstance(r, Row):
            cells.update(r.cells)
    by: dict[str, list[Area]] = {}
    for a in areas:
        by.setdefault(class_of(a), []).append(a)
    out = []
    for c in CLASSES:
        mine = by.get(c.key, [])
        if not mine and not cells[c.key]:
            continue
        d = {"class": c.key, "char": c.char, "label": c.label,
             "color": c.color, "ranges": len(mine), "cells": cells[c.key]}
        if c.key == "empty":
            d["bytes"] = None
        elif mine and mine[0].kind == "preserved":
            d["blocks"] = sum(a.count for a in mine)
            d["bytes"] = sum(a.end - a.start for a in mine)
        else:
            d["bytes"] = sum(e - s for s, e in
                             _union((a.start, a.end) for a in mine))
        out.append(d)
    return out


def clip(areas, lo: int, hi: int) -> list[Area]:
    """The parts of *areas* inside [lo, hi); a preserved run keeps the
    blocks that overlap the window (its ``count`` says how many)."""
    out = []
    for a in areas:
        s, e = max(a.start, lo), min(a.end, hi)
        if s >= e:
            continue
        if a.kind == "preserved" and (s, e) != (a.start, a.end):
            block = (a.end - a.start) // a.count
            first, last = (s - a.start) // block, (e - 1 - a.start) // block
            a = dataclasses.replace(a, count=last - first + 1)
        out.append(dataclasses.replace(a, start=s, end=e))
    return out


def _union(ranges) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out


# -- the data --------------------------------------------------------------

def handover_areas(h) -> list[Area]:
    """Preserved runs (coalesced, as ``map`` lists them) and the handover's
    own pages of a decoded :class:`~kho_inspect.decode.model.Handover`."""
    from ..ranges import coalesce
    areas = [Area(r.phys, r.end, "preserved", order=r.order, count=r.count)
             for r in coalesce(h.map.runs)]
    seen = set()
    for p in h.pages:
        if p.size and (p.phys, p.size, p.kind) not in seen:
            seen.add((p.phys, p.size, p.kind))
            areas.append(Area(p.phys, p.phys + p.size, "handover",
                              detail=p.kind))
    return areas


def kernel_areas(prog) -> tuple[list[Area], list[str]]:
    """System RAM and scratch areas read with the kernel's DWARF, and a
    note for each that could not be read."""
    from ..walk.layout import system_ram
    from ..walk.state import scratch_areas
    areas, notes = [], []
    try:
        areas += [Area(s, e, "ram") for s, e in system_ram(prog)]
    except KhoError as e:
        notes.append(f"System RAM unknown: {e}")
    try:
        areas += [Area(a.addr, a.addr + a.size, "scratch", detail=a.role)
                  for a in scratch_areas(prog) if a.size]
    except KhoError as e:
        notes.append(f"scratch areas unknown: {e}")
    return areas, notes


def picture_json(areas, *, source: str, release: str | None,
                 ram_known: bool, notes=(), cells_per_row: int | None = None,
                 extra: dict | None = None) -> dict:
    """The document ``picture --json`` prints, and :func:`picture_text` and
    :func:`picture_svg` draw."""
    areas = sorted(areas, key=lambda a: (a.start, a.end, a.kind))
    if not areas:
        raise KhoError("nothing to draw: no preserved ranges, no handover "
                       "pages and no System RAM known")
    if cells_per_row is None:
        top = max(a.end for a in areas)
        # the address column, " |", the cells and "|" within WIDTH
        cells_per_row = CELLS_PER_ROW if len(hexa(top)) + 3 + CELLS_PER_ROW \
            <= WIDTH else CELLS_PER_ROW // 2
    cell = choose_cell(areas, cells_per_row)
    rows = grid(areas, cell, cells_per_row)
    leg = legend(areas, rows)
    for d in leg:
        if d["class"] == "empty" and not ram_known:
            d["label"] = UNKNOWN_LABEL
    pres = [a for a in areas if a.kind == "preserved"]
    return dict({
        "source": source, "release": release, "cell_bytes": cell,
        "cells_per_row": cells_per_row, "row_bytes": cell * cells_per_row,
        "ram_known": ram_known,
        "span": [areas[0].start, max(a.end for a in areas)],
        "ranges": [a.as_json() for a in areas], "legend": leg,
        "preserved": {"ranges": len(pres),
                      "blocks": sum(a.count for a in pres),
                      "bytes": sum(a.end - a.start for a in pres)},
        "rows": [{"start": r.start, "cells": "".join(
            BY_KEY[k].char for k in r.cells)} if isinstance(r, Row) else
            {"start": r.start, "end": r.end, "gap": True} for r in rows],
        "notes": list(notes)}, **(extra or {}))


# -- rendering ---------------------------------------------------------------

def _addr_width(doc) -> int:
    return max(len(hexa(r["start"])) for r in doc["rows"])


def picture_text(doc: dict) -> str:
    """The character-cell picture, its legend and notes (79 columns)."""
    w = _addr_width(doc)
    empty = "not RAM" if doc["ram_known"] else "nothing known"
    head = (f"physical memory of {doc['source']}"
            + (f", kernel {doc['release']}" if doc["release"] else "")
            + f": 1 cell = {human_size(doc['cell_bytes'])}, 1 row = "
            f"{human_size(doc['row_bytes'])}")
    out = textwrap.wrap(head, WIDTH, subsequent_indent="  ",
                        break_on_hyphens=False)
    for n in doc["notes"]:
        out += textwrap.wrap(f"note: {n}", WIDTH, subsequent_indent="  ",
                             break_on_hyphens=False)
    out.append("")
    for r in doc["rows"]:
        if r.get("gap"):
            out.append(f"{'...':>{w}}  {hexa(r['start'])}-{hexa(r['end'])}:"
                       f" {human_size(r['end'] - r['start'])} {empty}")
        else:
            out.append(f"{hexa(r['start']):>{w}} |{r['cells']}|")
    out.append("")
    out.append(f"    {'':<40} {'ranges':>6} {'blocks':>6} {'bytes':>10} "
               f"{'cells':>6}")
    for d in doc["legend"]:
        size = "" if d["bytes"] is None else human_size(d["bytes"])
        out.append(f" {d['char']}  {d['label']:<40} "
                   f"{d['ranges'] or '':>6} {d.get('blocks', ''):>6} "
                   f"{size:>10} {d['cells']:>6}")
    p = doc["preserved"]
    out.append(f"preserved in all: {p['ranges']} ranges, {p['blocks']} "
               f"blocks, {human_size(p['bytes'])} ({p['bytes']} bytes)")
    return "\n".join(out)


#: SVG geometry, in pixels.
CELL_W, CELL_H, ROW_GAP, FONT = 10, 14, 2, 12


def picture_svg(doc: dict) -> str:
    """The same cells as :func:`picture_text`, as an SVG document: one
    ``<rect class="cell KEY">`` per cell that is not "empty", a background
    ``<rect class="row">`` per row, address labels, and the legend
    (``<rect class="swatch KEY">``)."""
    w = _addr_width(doc)
    left = 16 + w * 7 + 8
    cpr = doc["cells_per_row"]
    width = max(left + cpr * CELL_W + 16, 720)
    chars = (width - 32) * 10 // (FONT * 6)     # monospace: 0.6 em wide
    y, body = 4, []
    for n, text in enumerate([_title(doc)] + [f"note: {n}"
                                              for n in doc["notes"]]):
        for line in textwrap.wrap(text, chars, subsequent_indent="  ",
                                  break_on_hyphens=False):
            y += 16
            body.append(f'<text x="16" y="{y}" class="'
                        f'{"note" if n else "title"}">{escape(line)}</text>')
    y += 12
    by_char = {c.char: c for c in CLASSES}
    empty = BY_KEY["empty"]
    for r in doc["rows"]:
        ty = y + CELL_H - 3
        if r.get("gap"):
            body.append(f'<text x="{left}" y="{ty}" class="gap">... '
                        f'{hexa(r["start"])}-{hexa(r["end"])}: '
                        f'{human_size(r["end"] - r["start"])} '
                        f'{"not RAM" if doc["ram_known"] else "nothing known"}'
                        '</text>')
        else:
            body.append(f'<text x="{left - 6}" y="{ty}" text-anchor="end" '
                        f'class="addr">{hexa(r["start"])}</text>')
            body.append(f'<rect class="row" x="{left}" y="{y}" '
                        f'width="{cpr * CELL_W}" height="{CELL_H}" '
                        f'fill="{empty.color}"/>')
            for i, ch in enumerate(r["cells"]):
                c = by_char[ch]
                if c is empty:
                    continue
                a = r["start"] + i * doc["cell_bytes"]
                body.append(f'<rect class="cell {c.key}" x="{left + i * CELL_W}"'
                            f' y="{y}" width="{CELL_W - 1}" height="{CELL_H}"'
                            f' fill="{c.color}"><title>{hexa(a)}: '
                            f'{escape(c.label)}</title></rect>')
        y += CELL_H + ROW_GAP
    y += 12
    for d in doc["legend"]:
        y += CELL_H + 4
        size = "" if d["bytes"] is None else f", {human_size(d['bytes'])}"
        count = (_n(d["blocks"], "block") if "blocks" in d else
                 _n(d["ranges"], "range"))
        body.append(f'<rect class="swatch {d["class"]}" x="16" y="{y}" '
                    f'width="{CELL_W}" height="{CELL_H}" fill="{d["color"]}" '
                    'stroke="#999"/>')
        body.append(f'<text x="{16 + CELL_W + 8}" y="{y + CELL_H - 3}">'
                    f'{escape(d["label"])}: {count}{size}, '
                    f'{_n(d["cells"], "cell")}</text>')
    y += CELL_H + 16
    p = doc["preserved"]
    body.append(f'<text x="16" y="{y}">preserved in all: {p["ranges"]} '
                f'ranges, {p["blocks"]} blocks, {human_size(p["bytes"])} '
                f'({p["bytes"]} bytes)</text>')
    y += 12
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{y}" viewBox="0 0 {width} {y}" '
        f'font-family="monospace" font-size="{FONT}">',
        f'<rect class="background" width="{width}" height="{y}" '
        'fill="#ffffff"/>', *body, "</svg>", ""])


def _n(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _title(doc) -> str:
    return (f"physical memory of {doc['source']}"
            + (f", kernel {doc['release']}" if doc["release"] else "")
            + f": 1 cell = {human_size(doc['cell_bytes'])}")


def check_svg_name(path: str) -> None:
    """Refuse an ``-o`` that is not ``*.svg`` or is not a regular file."""
    from ..image import check_output
    if not path.lower().endswith(".svg") or os.path.isdir(path):
        if os.path.isdir(path):
            raise KhoError(f"-o {path}: is a directory; give a FILE.svg")
        raise KhoError(f"-o {path}: the picture is written as SVG; name "
                       "the file *.svg")
    check_output(path)


def write_text_file(path: str, text: str) -> None:
    """Write *text* to *path* whole or not at all (a temporary file in the
    same directory, renamed over it), with the umask's permissions."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kho-picture-",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- the command -------------------------------------------------------------

def cmd_picture(args) -> int:
    """Draw physical memory: preserved blocks and the handover's pages
    (reference decoder), System RAM and scratch areas (DWARF, when the
    source has it)."""
    from . import _decode
    if getattr(args, "incoming", False):
        raise KhoError("picture --incoming: the incoming map's pages are "
                       "free memory once the new kernel has booted (see "
                       "'map --incoming')")
    if args.output:
        check_svg_name(args.output)         # before the work, not after
    src, root, h = _decode(args, with_map=True)
    areas = handover_areas(h)
    notes = []
    if h.map.state == "not-finalized":
        notes.append("the map is not finalized (map value 0): nothing "
                     "preserved would be handed over yet")
    ram_known = False
    if src.meta is not None:
        why = "a handover image holds no kernel state"
    else:
        try:
            prog = src.debug_program()
        except KhoError as e:
            why = str(e)
        else:
            more, problems = kernel_areas(prog)
            areas += more
            notes += problems
            ram_known = any(a.kind == "ram" for a in more)
            why = None if ram_known else "no System RAM in the resource tree"
    if not ram_known:
        notes.insert(0, f"System RAM and scratch areas unknown for this "
                     f"source ({why}): drawn from the lowest to the highest "
                     "preserved or handover address")
    window = None
    if args.range:
        window = list(args.range)
        areas = clip(areas, *window)
        if not areas:
            raise KhoError(f"--range {hexa(window[0])}-{hexa(window[1])}: "
                           "nothing known in it (no RAM, preserved or "
                           "handover memory)")
        notes.append(f"only {hexa(window[0])}-{hexa(window[1])} (--range): "
                     "the legend counts what lies inside it")
    doc = picture_json(areas, source=src.description, release=src.release(),
                       ram_known=ram_known, notes=notes,
                       extra={"generation": h.generation,
                              "fdt_source": root.origin, "range": window})
    if args.output:
        svg = picture_svg(doc)
        write_text_file(args.output, svg)
        doc["output"] = args.output
        nrows = sum(1 for r in doc["rows"] if not r.get("gap"))
        emit(args, doc, f"wrote {args.output}: SVG, {nrows} rows of "
             f"{doc['cells_per_row']} cells of "
             f"{human_size(doc['cell_bytes'])} ({human_size(len(svg))})")
    else:
        emit(args, doc, picture_text(doc))
    return 0


def _window(text: str) -> tuple[int, int]:
    """``START-END`` (numbers as Python spells them: 0x..., decimal)."""
    try:
        lo, hi = (int(x, 0) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not START-END (e.g. 0x2000000-0x4000000): {text!r}") from None
    if not 0 <= lo < hi <= 1 << 64:
        raise argparse.ArgumentTypeError(
            f"not a range of physical addresses, START < END: {text!r}")
    return lo, hi


def register(sub) -> None:
    """Add ``picture`` to *sub* (subparsers)."""
    from . import (add_bitmap_option, add_command, add_fdt_options,
                   add_source_options)
    p = add_command(sub, "picture", "physical memory at a glance: RAM, "
                    "preserved blocks, scratch", cmd_picture, EPILOG)
    add_source_options(p)
    add_fdt_options(p)
    add_bitmap_option(p)
    p.add_argument("--range", type=_window, metavar="START-END",
                   help="draw only physical addresses [START, END) (zoom "
                        "in: the cell size follows the window)")
    p.add_argument("-o", "--output", metavar="FILE.svg",
                   help="write the picture as SVG to FILE.svg instead")

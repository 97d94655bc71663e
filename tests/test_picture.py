"""kho-inspect picture: the cell grid on hand-made ranges (expected cells
written out by hand), the priority rules, the 79-column limit, the SVG, the
JSON schema, every bundled sample against ``map --json`` (the independent
oracle for the preserved bytes), one-line errors, and ``system_ram`` over a
hand-built resource tree with a real kernel's DWARF."""

import json
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import drgn
import pytest

from kho_inspect import samples
from kho_inspect.cli import main
from kho_inspect.cli.picture import (Area, Gap, Row, choose_cell, grid,
                                     picture_json, picture_svg, picture_text)
from kho_inspect.errors import KhoError
from kho_inspect.walk.layout import system_ram

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

#: The characters the README's legend documents, written out here.
CHAR = {"above-max-order": "!", "handover": "#", "order-10": "L",
        "order-5-9": "m", "order-1-4": "s", "order-0": "p", "scratch": "~",
        "ram": ".", "empty": " "}
KEY = {c: k for k, c in CHAR.items()}


def pres(phys, order, count=1):
    return Area(phys, phys + (count << (12 + order)), "preserved",
                order=order, count=count)


def cells(row):
    return "".join(CHAR[k] for k in row.cells)


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# -- the grid ---------------------------------------------------------------

def test_grid_by_hand():
    areas = [Area(0, 0x10000, "ram"),
             pres(0x2000, 0),                       # cell 2
             pres(0x4000, 1),                       # cells 4-5
             Area(0x5000, 0x5100, "handover"),      # cell 5: beats order 1
             Area(0x8000, 0xa000, "scratch"),       # row 1, cells 0-1
             Area(0x40000, 0x42000, "ram"),         # row 8, after a gap
             Area(0x50000, 0x51000, "handover")]    # row 10: row 9 drawn
    rows = grid(areas, 0x1000, cells_per_row=8)
    assert [type(r) for r in rows] == [Row, Row, Gap, Row, Row, Row]
    assert [r.start for r in rows] == [0, 0x8000, 0x10000, 0x40000,
                                       0x48000, 0x50000]
    assert rows[2].end == 0x40000
    assert [cells(r) for r in rows if isinstance(r, Row)] == [
        "..p.s#..",
        "~~......",
        "..      ",
        "        ",
        "#       "]


def test_grid_partial_cells_and_order_classes():
    # 16 KiB cells: one 4 KiB page at the end of a cell marks the whole cell
    areas = [pres(0x3000, 0), pres(0x8000, 3), pres(0x20000, 5),
             pres(0x400000, 10)]
    rows = grid(areas, 0x4000, cells_per_row=16)
    assert cells(rows[0]) == "p.ss....mmmmmmmm".replace(".", " ")
    assert isinstance(rows[1], Gap)
    assert (rows[1].start, rows[1].end) == (0x40000, 0x400000)
    assert all(cells(r) == "L" * 16 for r in rows[2:])
    assert len(rows) == 2 + 4 * MiB // (0x4000 * 16)


PRIORITY = ["above-max-order", "handover", "order-10", "order-5-9",
            "order-1-4", "order-0", "scratch", "ram", "empty"]


def test_priority_order():
    """One 16 MiB cell holding a bit of every class: it shows the highest;
    take that away and the next shows, in the documented order."""
    layers = [pres(0, 11), Area(14 * MiB, 14 * MiB + 300, "handover"),
              pres(8 * MiB, 10), pres(12 * MiB, 5), pres(13 * MiB, 1),
              pres(13 * MiB + 512 * KiB, 0),
              Area(14 * MiB + 512 * KiB, 15 * MiB, "scratch"),
              Area(0, 16 * MiB, "ram")]
    shown = []
    for i in range(len(layers)):
        (row,) = grid(layers[i:], 16 * MiB, cells_per_row=1)
        shown.append(row.cells[0])
    assert shown == PRIORITY[:-1]
    # ...and a cell nothing touches is empty
    (row,) = grid([pres(0, 0)], 4096, cells_per_row=2)
    assert row.cells == ("order-0", "empty")


def test_choose_cell():
    assert choose_cell([pres(0x1000, 0)]) == 4096
    # 2 GiB of RAM: 1 MiB cells need 32 rows of 64 MiB; 2 MiB cells 16
    assert choose_cell([Area(0, 2 * GiB, "ram")]) == 2 * MiB
    # two 1 GiB blocks 3 GiB apart: with 1 MiB cells 16 + gap + 16 = 33
    # lines; with 2 MiB 8 + 1 + 8 = 17
    two = [Area(0, GiB, "ram"), Area(4 * GiB, 5 * GiB, "ram")]
    assert choose_cell(two) == 2 * MiB
    assert choose_cell(two, max_lines=33) == MiB


# -- rendering --------------------------------------------------------------

def _doc(areas, ram_known=True):
    return picture_json(areas, source="test", release="7.3.4",
                        ram_known=ram_known)


def test_text_fits_79_columns_even_at_high_addresses():
    for top in (1 << 30, 1 << 40, 1 << 46, (1 << 64) - (1 << 30)):
        areas = [Area(top - GiB, top, "ram"), pres(top - 8 * MiB, 11),
                 Area(top - 64 * MiB, top - 32 * MiB, "scratch")]
        text = picture_text(_doc(areas))
        assert max(len(line) for line in text.splitlines()) <= 79, top
        assert "!" in text and "~" in text


def test_svg_one_rect_per_non_empty_cell(tmp_path):
    areas = [Area(0, 64 * MiB, "ram"), pres(2 * MiB, 9), pres(16 * MiB, 0),
             Area(32 * MiB, 40 * MiB, "scratch"),
             Area(8 * MiB, 8 * MiB + 4096, "handover"),
             Area(GiB, GiB + 4 * MiB, "ram")]
    doc = _doc(areas)
    root = ET.fromstring(picture_svg(doc))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    rects = root.iter("{http://www.w3.org/2000/svg}rect")
    classes = [r.get("class", "").split() for r in rects]
    cell_keys = [c[1] for c in classes if c and c[0] == "cell"]
    grid_chars = "".join(r["cells"] for r in doc["rows"] if "cells" in r)
    assert len(cell_keys) == len(grid_chars.replace(" ", ""))
    assert sorted(cell_keys) == sorted(KEY[c] for c in grid_chars
                                       if c != " ")
    assert set(cell_keys) == {"ram", "order-5-9", "order-0", "scratch",
                              "handover"}
    swatches = {c[1] for c in classes if c and c[0] == "swatch"}
    assert swatches == {d["class"] for d in doc["legend"]}


def test_json_schema(capsys):
    rc, out, err = run(capsys, "picture", "--sample", "7.3", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert {"source", "release", "cell_bytes", "ranges", "legend",
            "rows", "ram_known", "preserved"} <= set(doc)
    assert doc["release"] == "7.3.4" and doc["ram_known"] is False
    c = doc["cell_bytes"]
    assert c >= 4096 and c & (c - 1) == 0
    for r in doc["ranges"]:
        assert r["kind"] in ("preserved", "handover", "ram", "scratch")
        assert r["end"] > r["start"]
        assert ("order" in r) == (r["kind"] == "preserved")
    for d in doc["legend"]:
        assert {"class", "char", "label", "ranges", "bytes",
                "cells"} <= set(d)
        assert CHAR[d["class"]] == d["char"]
    rows = [r for r in doc["rows"] if not r.get("gap")]
    assert 0 < len(doc["rows"]) <= 24
    assert all(len(r["cells"]) == doc["cells_per_row"] for r in rows)


# -- every sample against map --json -----------------------------------------

def order_class(order):
    if order > 10:
        return "above-max-order"
    if order == 10:
        return "order-10"
    if order >= 5:
        return "order-5-9"
    if order >= 1:
        return "order-1-4"
    return "order-0"


def cli(*argv):
    p = subprocess.run([sys.executable, "-m", "kho_inspect", *argv],
                       capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("kernel", samples.available())
def test_sample_preserved_bytes_equal_map(kernel):
    rc, out, err = cli("map", "--sample", kernel, "--json", "--limit", "0")
    assert rc == 0, err
    m = json.loads(out)
    rc, out, err = cli("picture", "--sample", kernel, "--json")
    assert rc == 0, err
    p = json.loads(out)
    want: dict = {}
    for r in m["ranges"]:
        k = order_class(r["order"])
        want[k] = want.get(k, 0) + r["size"]
    got = {d["class"]: d["bytes"] for d in p["legend"]
           if d["class"] in want or d["class"].startswith("order")
           or d["class"] == "above-max-order"}
    assert got == want
    assert p["preserved"]["bytes"] == sum(r["size"] for r in m["ranges"])
    assert sorted((r["start"], r["order"], r["count"]) for r in p["ranges"]
                  if r["kind"] == "preserved") == \
        sorted((r["phys"], r["order"], r["count"]) for r in m["ranges"])
    # the terminal picture says the same and fits
    rc, text, err = cli("picture", "--sample", kernel)
    assert rc == 0, err
    assert f"({p['preserved']['bytes']} bytes)" in text
    assert "unknown for this source" in text
    assert max(len(line) for line in text.splitlines()) <= 79
    lines = [ln for ln in text.splitlines() if ln.endswith("|")]
    assert 0 < len(lines) <= 24


# -- errors -------------------------------------------------------------------

def one_line_error(rc, out, err, *words):
    assert rc == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("kho-inspect: error: ")
    for w in words:
        assert w in err


def test_bad_output_names(tmp_path, capsys):
    one_line_error(*run(capsys, "picture", "--sample", "-o",
                        str(tmp_path / "p.png")), "p.png", "svg")
    d = tmp_path / "d.svg"
    d.mkdir()
    one_line_error(*run(capsys, "picture", "--sample", "-o", str(d)),
                   "directory")
    one_line_error(*run(capsys, "picture", "--sample", "-o",
                        str(tmp_path / "nodir" / "p.svg")), "nodir")
    assert os.listdir(tmp_path) == ["d.svg"]


def test_core_missing(tmp_path, capsys):
    one_line_error(*run(capsys, "picture", "--core",
                        str(tmp_path / "nope.core")), "nope.core")


def test_svg_written(tmp_path, capsys):
    out_svg = tmp_path / "p.svg"
    rc, out, err = run(capsys, "picture", "--sample", "6.18", "-o",
                       str(out_svg))
    assert rc == 0, err
    assert out.startswith(f"wrote {out_svg}: SVG")
    root = ET.parse(out_svg).getroot()
    texts = "".join(t.text or "" for t in
                    root.iter("{http://www.w3.org/2000/svg}text"))
    assert "8409088 bytes" in texts     # map --sample 6.18's sum
    assert [p.name for p in tmp_path.iterdir()] == ["p.svg"]


# -- system_ram over a hand-built resource tree ---------------------------

sys.path.insert(0, os.path.dirname(__file__))
import variants  # noqa: E402
from walk_synth import SynthKernel  # noqa: E402


#: struct resource (include/linux/ioport.h) is the same in every kernel of
#: the matrix: the newest synthetic variant, and the newest build.
@pytest.fixture(scope="module", params=variants.params(
    variants.newest(variants.SYNTH)[:1] + variants.newest(variants.BUILDS)))
def synth(request, kdwarf, tmp_path_factory):
    d = variants.resolve(request.param, kdwarf)
    return SynthKernel.of(d, tmp_path_factory.mktemp("k"))


def _resources(k, spec):
    """Write ``struct resource``s: spec = {id: (name, start, end, sibling,
    child)}; returns {id: kernel address}. Root's child is id 'A'."""
    t = k.prog.type("struct resource")
    size = drgn.sizeof(t)
    off = {m: drgn.offsetof(t, m) for m in ("start", "end", "name",
                                             "sibling", "child")}
    addr = {i: k.virt(k.alloc(size=size)) for i in spec}
    for i, (name, start, end, sib, child) in spec.items():
        body = bytearray(size)
        nptr = k.virt(k.alloc(name.encode() + b"\0")) if name else 0
        for m, v in (("start", start), ("end", end), ("name", nptr),
                     ("sibling", addr.get(sib, 0)),
                     ("child", addr.get(child, 0))):
            struct.pack_into("<Q", body, off[m], v)
        k.write_phys(addr[i] - k.virt(0), bytes(body))
    root = bytearray(size)
    struct.pack_into("<Q", root, off["child"], addr["A"])
    struct.pack_into("<Q", root, off["end"], (1 << 64) - 1)
    k.set("iomem_resource", bytes(root))
    return addr


TREE = {
    "A": ("Reserved", 0, 0xfff, "B", None),
    "B": ("System RAM", 0x1000, 0x9fbff, "C", "K"),
    "K": ("Kernel code", 0x1000000, 0x1ffffff, None, None),
    "C": ("PCI Bus 0000:00", 0xa0000, 0xbffff, "D", "E"),
    "E": ("System RAM", 0xc0000, 0xfffff, None, None),      # nested
    "D": ("System RAM", 0x100000, 0x7ffdffff, "F", None),   # touches E
    "F": ("System RAM (kmem)", 1 << 32, (1 << 33) - 1, "G", None),
    "G": (None, 0x80000000, 0x8fffffff, None, None),
}


def test_system_ram_walks_the_tree(synth):
    _resources(synth, TREE)
    assert system_ram(synth.prog) == [(0x1000, 0x9fc00),
                                      (0xc0000, 0x7ffe0000)]


def test_system_ram_loop_is_one_line(synth):
    tree = dict(TREE, G=(None, 0, 0, "A", None))     # G -> A -> ... -> G
    _resources(synth, tree)
    with pytest.raises(KhoError, match="loops"):
        system_ram(synth.prog)


def test_system_ram_without_the_symbol():
    with pytest.raises(KhoError, match="iomem_resource"):
        system_ram(drgn.Program())


def test_kernel_areas_draw_ram_and_scratch(synth):
    """System RAM and the scratch areas, read with DWARF as the command
    reads them, come out as '.' and '~' cells, RAM known."""
    from kho_inspect.cli.picture import kernel_areas
    _resources(synth, TREE)
    arr = synth.alloc(struct.pack("<QQQQ", 0x60000000, 0x10000000,
                                  0, 0))        # [0] lowmem, [1] empty
    synth.set_u64("kho_scratch", synth.virt(arr))
    synth.set("kho_scratch_cnt", struct.pack("<I", 2))
    areas, notes = kernel_areas(synth.prog)
    assert notes == []
    assert sorted((a.start, a.end, a.kind) for a in areas) == [
        (0x1000, 0x9fc00, "ram"), (0xc0000, 0x7ffe0000, "ram"),
        (0x60000000, 0x70000000, "scratch")]
    doc = picture_json(areas + [pres(0x2000000, 10)], source="synthetic",
                       release=None, ram_known=True)
    # 2 GiB span: 2 MiB cells, 128 MiB rows; scratch = rows 12-13 whole
    assert doc["cell_bytes"] == 2 * MiB
    rows = {r["start"]: r["cells"] for r in doc["rows"]}
    assert rows[0x60000000] == rows[0x68000000] == "~" * 64
    assert rows[0] == "." * 16 + "LL" + "." * 46
    # RAM ends at 0x7ffe0000: the last cell is partly RAM, so RAM
    assert rows[0x78000000] == "." * 64
    text = picture_text(doc)
    assert "not System RAM" not in text and "unknown" not in text


def test_lines_needed_and_the_smallest_cell():
    from hypothesis import given, strategies as st
    from kho_inspect.cli.picture import lines_needed
    # test_grid_by_hand's areas: rows 0-1, 8, 10 -> 4 rows + 2 gap lines
    areas = [Area(0, 0x10000, "ram"), Area(0x40000, 0x42000, "ram"),
             Area(0x50000, 0x51000, "handover")]
    assert lines_needed(areas, 0x1000, 8) == 6

    @given(st.lists(st.tuples(st.integers(0, 1 << 50),
                              st.integers(1, 1 << 36)), min_size=1,
                    max_size=20))
    def smallest(spans):
        areas = [Area(s, s + n, "ram") for s, n in spans]
        c = choose_cell(areas)
        assert lines_needed(areas, c) <= 24
        assert c == 4096 or lines_needed(areas, c // 2) > 24
    smallest()


def test_clip_to_a_window():
    from kho_inspect.cli.picture import clip
    areas = [Area(0, 1 << 30, "ram"), pres(0x200000, 9, 4),   # 4 x 2 MiB
             Area(0x900000, 0xa00000, "scratch")]
    got = clip(areas, 0x500000, 0x980000)
    assert got == [Area(0x500000, 0x980000, "ram"),
                   # blocks 1 (0x400000-0x600000) to 3 (0x800000-0xa00000)
                   Area(0x500000, 0xa00000 - 0x20000 - 0x60000, "preserved",
                        order=9, count=3),
                   Area(0x900000, 0x980000, "scratch")]


def test_range_option(capsys):
    rc, out, err = run(capsys, "picture", "--sample", "7.3", "--json",
                       "--range", "0x3000000-0x3400000")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["range"] == [0x3000000, 0x3400000]
    # map --sample 7.3: the one order-10 block at 0x3000000 fills it
    assert [(r["start"], r["end"], r["order"]) for r in doc["ranges"]] == \
        [(0x3000000, 0x3400000, 10)]
    assert doc["preserved"]["bytes"] == 4 * MiB
    rc, out, err = cli("picture", "--sample", "--range", "9-3")
    one_line_error(rc, out, err, "--range")
    one_line_error(*run(capsys, "picture", "--sample", "--range",
                        "0-0x1000"), "nothing known")

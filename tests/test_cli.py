"""The CLI on handover images and files: output, round trips, and every
bad-input class answered with one line and exit status 2."""

import json
from pathlib import Path

import pytest

from conftest import run_dtc
from helpers import PAGE, bitmap, chunk_page, kho_dts, table
from kho_inspect import samples
from kho_inspect.cli import main
from kho_inspect.image import read_image_meta, write_image
from test_decode import radix_hand_map


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def v3_image(tmp_path, dtc, segs=None, fdt_phys=0x400000, root=0x100000,
             subnodes="", meta_extra=None):
    blob = run_dtc(dtc, kho_dts("kho-v3", root, subnodes))
    segs = (radix_hand_map() if segs is None else segs) + [
        (fdt_phys, blob.ljust(PAGE, b"\0"))]
    path = str(tmp_path / "img.core")
    write_image(path, segs, dict({"generation": "kho-v3",
                                  "fdt_phys": fdt_phys, "release": "test"},
                                 **(meta_extra or {})))
    return path


def test_map_json_schema(tmp_path, dtc, capsys):
    path = v3_image(tmp_path, dtc)
    rc, out, err = run(capsys, "map", "--core", path, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["generation"] == "kho-v3"
    assert doc["ranges"] == [
        {"phys": 0x1000000, "order": 0, "count": 3, "size": 3 * 4096},
        {"phys": 0x40000000, "order": 9, "count": 1, "size": 2 << 20}]
    assert doc["totals"]["9"] == {"blocks": 1, "bytes": 2 << 20}


def test_map_table(tmp_path, dtc, capsys):
    rc, out, _ = run(capsys, "map", "--core", v3_image(tmp_path, dtc))
    assert rc == 0
    assert "0x1000000" in out and "order" in out and "radix-leaf" in out


def test_capture_round_trip(tmp_path, dtc, capsys):
    path = v3_image(tmp_path, dtc)
    out_img = str(tmp_path / "again.core")
    rc, _, err = run(capsys, "capture", "--core", path, "-o", out_img)
    assert rc == 0, err
    assert read_image_meta(out_img)["generation"] == "kho-v3"
    a = json.loads(run(capsys, "map", "--core", path, "--json")[1])
    b = json.loads(run(capsys, "map", "--core", out_img, "--json")[1])
    for k in ("ranges", "map_pages", "generation", "totals"):
        assert a[k] == b[k]


def test_fdt_file_without_memory(tmp_path, dtc, capsys):
    f = tmp_path / "fdt"
    f.write_bytes(run_dtc(dtc, kho_dts("kho-v4", 0x1000,
                                       "memblock { preserved-data = "
                                       "[00 10 00 00 00 00 00 00]; "
                                       "blob-size = [00 10 00 00 00 00 00 00];"
                                       " };")))
    rc, out, err = run(capsys, "fdt", "--fdt", str(f), "--json",
                       "--core", v3_image(tmp_path, dtc))
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["generation"] == "kho-v4"
    assert doc["subnodes"][0]["name"] == "memblock"


def one_line_error(rc, out, err, pattern):
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kho-inspect: error: ")
    assert pattern in lines[0], lines[0]


@pytest.mark.parametrize("segs, root, pattern", [
    ([(0x100000, table({0: 0x100000}))], 0x100000, "reached twice"),
    ([(0x100000, table({5: 0x101000}))], 0x100000, "entry 5 is set"),
    ([], 0x100000, "cannot read"),
    ([], 0, "preserved-memory-map is 0"),
])
def test_bad_maps(tmp_path, dtc, capsys, segs, root, pattern):
    path = v3_image(tmp_path, dtc, segs=segs, root=root)
    one_line_error(*run(capsys, "map", "--core", path), pattern)


def test_bad_v1_cycle_image(tmp_path, dtc, capsys):
    blob = run_dtc(dtc, kho_dts("kho-v1", 0x10000))
    segs = [(0x10000, chunk_page(0x11000, 0, [(0, 0x20000)])),
            (0x11000, chunk_page(0x10000, 0, [])),
            (0x20000, bitmap({0}, PAGE)), (0x400000, blob.ljust(PAGE, b"\0"))]
    path = str(tmp_path / "v1.core")
    write_image(path, segs, {"generation": "kho-v1", "fdt_phys": 0x400000,
                             "bitmap_bytes": 4096})
    one_line_error(*run(capsys, "map", "--core", path), "loops back")


@pytest.mark.parametrize("content, pattern", [
    (b"", "too short"),
    (b"\x12\x34\x56\x78" + bytes(60), "bad magic"),
    (None, "truncated"),
    ("kho-v7", "unknown KHO compatible 'kho-v7'"),
])
def test_bad_fdt_files(tmp_path, dtc, capsys, content, pattern):
    if content is None:
        content = run_dtc(dtc, kho_dts("kho-v3", 0x1000))[:60]
    elif isinstance(content, str):
        content = run_dtc(dtc, kho_dts(content, 0x1000))
    f = tmp_path / "fdt"
    f.write_bytes(content)
    one_line_error(*run(capsys, "fdt", "--fdt", str(f)), pattern)


def test_bad_core_files(tmp_path, capsys):
    one_line_error(*run(capsys, "map", "--core", str(tmp_path / "nope")),
                   "No such file")
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world" * 10)
    one_line_error(*run(capsys, "map", "--core", str(junk)), "not an ELF")


def test_fdt_phys_outside_source(tmp_path, dtc, capsys):
    path = v3_image(tmp_path, dtc)
    one_line_error(*run(capsys, "fdt", "--core", path, "--fdt-phys",
                        "0x7777000"), "phys 0x7777000")


def test_incoming_map_refused(capsys):
    one_line_error(*run(capsys, "map", "--incoming", "--bitmap-bytes",
                        "4096"), "free memory")


@pytest.mark.parametrize("sample, given, noted", [("6.18", "512", 4096),
                                                  ("6.17", "4096", 512)])
def test_bitmap_bytes_contradicting_the_note_is_refused(capsys, sample,
                                                        given, noted):
    one_line_error(*run(capsys, "map", "--sample", sample, "--bitmap-bytes",
                        given),
                   f"--bitmap-bytes {given} contradicts the image note")
    err = run(capsys, "map", "--sample", sample, "--bitmap-bytes", given)[2]
    assert f"{noted}-byte" in err


def test_bitmap_bytes_agreeing_with_the_note(capsys):
    rc, out, err = run(capsys, "map", "--sample", "6.18", "--bitmap-bytes",
                       "4096", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert (doc["bitmap_bytes"], doc["bitmap_source"]) == (4096,
                                                           "--bitmap-bytes")


def _oversized_root_fdt(dtc, claim=2 * PAGE):
    """A kho-v3 root FDT whose header claims *claim* bytes (free space after
    the blocks is legal padding), padded to that size."""
    blob = bytearray(run_dtc(dtc, kho_dts("kho-v3", 0x100000)))
    blob[4:8] = claim.to_bytes(4, "big")
    return bytes(blob).ljust(claim, b"\0")


def test_root_fdt_in_memory_larger_than_a_page(tmp_path, dtc, capsys):
    # the image holds only the FDT's first page: the header is refused
    # before anything past the one page a root FDT may occupy is read
    blob = _oversized_root_fdt(dtc)
    path = str(tmp_path / "img.core")
    write_image(path, radix_hand_map() + [(0x400000, blob[:PAGE])],
                {"generation": "kho-v3", "fdt_phys": 0x400000,
                 "release": "test"})
    for cmd in ("fdt", "map"):
        one_line_error(*run(capsys, cmd, "--core", path),
                       "header totalsize 8192 exceeds 4096 bytes")


def test_root_fdt_file_larger_than_a_page(tmp_path, dtc, capsys):
    f = tmp_path / "big.dtb"
    f.write_bytes(_oversized_root_fdt(dtc))
    rc, out, err = run(capsys, "fdt", "--fdt", str(f))
    one_line_error(rc, out, err, "totalsize 8192 exceeds 4096 bytes")
    assert str(f) in err


def test_incoming_fdt_phys_0_is_not_a_kho_boot(monkeypatch, capsys):
    from kho_inspect import walk
    from kho_inspect.cli import source
    monkeypatch.setattr(source.Source, "debug_program", lambda self: None)
    monkeypatch.setattr(walk, "incoming_fdt_phys", lambda prog: 0)
    rc, out, err = run(capsys, "fdt", "--incoming", "--fdt-from", "dwarf")
    one_line_error(rc, out, err, "kho_in.fdt_phys is 0: this kernel was not "
                   "booted through a KHO kexec (nothing incoming)")


def test_composite_compatible_tokens_in_map_and_fdt(tmp_path, dtc, capsys):
    blob = run_dtc(dtc, kho_dts("kho-v4;radix-v1;vmalloc-v1", 0x100000))
    path = str(tmp_path / "img.core")
    write_image(path, radix_hand_map() + [(0x400000, blob.ljust(PAGE, b"\0"))],
                {"generation": "kho-v4", "fdt_phys": 0x400000,
                 "release": "test"})
    for cmd in ("map", "fdt"):
        rc, out, err = run(capsys, cmd, "--core", path, "--json")
        assert rc == 0, err
        doc = json.loads(out)
        assert (doc["generation"], doc["compat_tokens"]) == (
            "kho-v4", ["radix-v1", "vmalloc-v1"])
        rc, out, err = run(capsys, cmd, "--core", path)
        assert rc == 0, err
        assert "kho-v4 (tokens: radix-v1, vmalloc-v1)" in out.splitlines()[0]


def test_plain_compatible_has_no_tokens_in_map_and_fdt(tmp_path, dtc, capsys):
    path = v3_image(tmp_path, dtc)
    for cmd in ("map", "fdt"):
        doc = json.loads(run(capsys, cmd, "--core", path, "--json")[1])
        assert doc["compat_tokens"] == []
        assert "tokens" not in run(capsys, cmd, "--core", path)[1]


def _head(out: str) -> str:
    """fdt's head line, unwrapped (it ends where the property table
    starts)."""
    lines = out.splitlines()
    return " ".join(x.strip() for x in lines[:lines.index(
        next(x for x in lines if x.startswith("property ")))])


def test_a_path_is_never_split_at_its_hyphens(tmp_path, capsys):
    """Head lines wrap between words: a path with hyphens stays whole
    (textwrap breaks at hyphens by default; seen in a checkout under
    /tmp/cold-ci.XXXX)."""
    import shutil
    import tempfile
    # short enough to fit a line: only the hyphens could split it
    where = Path(tempfile.mkdtemp(prefix="cold-ci."))
    try:
        core = where / "main-kho-inspect-6-17-8.core"
        shutil.copy(samples.path("6.17.8"), core)
        for cmd in ("fdt", "map", "check"):
            rc, out, err = run(capsys, cmd, "--core", str(core))
            assert rc in (0, 1), err
            assert str(core) in out.replace("\n  ", " "), (cmd, out)
    finally:
        shutil.rmtree(where)


@pytest.mark.parametrize("kernel", samples.available())
def test_fdt_text_within_80_columns(capsys, kernel):
    rc, out, err = run(capsys, "fdt", "--sample", kernel)
    assert rc == 0, err
    assert [x for x in out.splitlines() if len(x) > 79] == []
    doc = json.loads(run(capsys, "fdt", "--sample", kernel, "--json")[1])
    assert _head(out) == (f"{doc['generation']} root FDT, "
                          f"{doc['totalsize']} bytes, at phys "
                          f"0x{doc['fdt_phys']:x} (from {doc['source']})")


def test_fdt_text_wraps_a_long_path_and_value(tmp_path, dtc, capsys):
    d = tmp_path / ("a-directory-with-a-long-name" * 3)
    d.mkdir()
    f = d / "fdt"
    value = bytes(range(48))
    f.write_bytes(run_dtc(dtc, kho_dts("kho-v4", 0x1000).replace(
        b" compatible", f" x-long = [{value.hex()}];\n compatible"
        .encode())))
    rc, out, err = run(capsys, "fdt", "--fdt", str(f))
    assert rc == 0, err
    assert [x for x in out.splitlines() if len(x) > 79] == []
    assert _head(out).startswith("kho-v4 root FDT, ")
    assert _head(out).replace(" ", "").endswith(f"(from{f})")
    rows = out.splitlines()
    at = next(i for i, x in enumerate(rows) if x.startswith("x-long "))
    cont = [x.split()[0] for x in rows[at + 1:] if x.startswith(" ")]
    assert rows[at].split()[1] + "".join(cont) == value.hex()

"""Bad input and hostile paths through the whole CLI (issue #9 sections 3 and
6): every class answers with one line on stderr and exit status 2, or, for a
damaged client blob, with that sub-node's error while the rest decodes.

The damaged files are laid out here by hand (an ELF writer of our own, not
kho_inspect.image), so a test cannot pass by sharing a bug with the code."""

import json
import os
import struct
import time

import pytest

from conftest import run_dtc
from helpers import PAGE, bitmap, chunk_page, kho_dts, table, u64le
from kho_inspect import samples
from kho_inspect.cli import main
from test_decode import radix_hand_map

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
PT_LOAD, PT_NOTE = 1, 4
FDT_PHYS = 0x400000


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, out, err, *patterns):
    assert rc == 2, (rc, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kho-inspect: error: "), err
    for p in patterns:
        assert p in lines[0], lines[0]
    return lines[0]


def elf_note(name: bytes, ntype: int, desc: bytes) -> bytes:
    def pad(b):
        return b + bytes(-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + \
        pad(desc)


def kho_note(desc: bytes) -> bytes:
    """The KHO_INSPECT note (name, type "KHO1") around raw JSON *desc*."""
    return elf_note(b"KHO_INSPECT\0", 0x4B484F31, desc)


def elf_core(loads, note=b"", phoff=None, offsets=None) -> bytes:
    """An ELF64 x86-64 core: one PT_NOTE (if *note*), then a PT_LOAD per
    ``(phys, data)``. *offsets* ({phys: p_offset}) overrides where a
    segment says its data is; *phoff* overrides e_phoff (the table stays at
    64)."""
    n = (1 if note else 0) + len(loads)
    off = EHDR.size + PHDR.size * n
    phdrs, body = [], b""
    if note:
        phdrs.append(PHDR.pack(PT_NOTE, 0, off, 0, 0, len(note), 0, 4))
        body += note
        off += len(note)
    for phys, data in loads:
        o = (offsets or {}).get(phys, off)
        phdrs.append(PHDR.pack(PT_LOAD, 4, o, phys, phys, len(data),
                               len(data), PAGE))
        body += data
        off += len(data)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = EHDR.pack(ident, 4, 62, 1, 0, EHDR.size if phoff is None else
                     phoff, 0, 0, EHDR.size, PHDR.size, n, 0, 0, 0)
    return ehdr + b"".join(phdrs) + body


def meta_json(**kw) -> bytes:
    return json.dumps(dict({"generation": "kho-v3", "fdt_phys": FDT_PHYS,
                            "release": "test", "image_format": 1},
                           **kw)).encode()


def v3_core(tmp_path, dtc, segs=None, subnodes="", note=None, name="i.core",
            offsets=None, fdt=None):
    blob = fdt if fdt is not None else \
        run_dtc(dtc, kho_dts("kho-v3", 0x100000, subnodes))
    loads = (radix_hand_map() if segs is None else segs) + [
        (FDT_PHYS, blob.ljust(PAGE, b"\0"))]
    path = tmp_path / name
    path.write_bytes(elf_core(loads, kho_note(meta_json()) if note is None
                              else note, offsets=offsets))
    return str(path)


# -- opening cores: drgn and the OS ------------------------------------------

def test_core_that_is_no_kernel_and_no_image(tmp_path, capsys):
    # No VMCOREINFO, no KHO note: drgn takes it for a user-space core and
    # used to fail with "BadDataError: core file is missing NT_AUXV" once the
    # decoder fell back to DWARF.
    path = tmp_path / "plain.core"
    path.write_bytes(elf_core([(0x1000, bytes(PAGE))],
                              note=elf_note(b"CORE\0", 1, bytes(336))))
    for cmd in ("map", "fdt", "status", "tracker"):
        one_line_error(*run(capsys, cmd, "--core", str(path)),
                       "not a Linux kernel core dump")


def test_truncated_samples(tmp_path, capsys):
    """Every sample cut at header, table, note and data boundaries."""
    results = []
    for name in samples.available():
        data = open(samples.path(name), "rb").read()
        cuts = {1, 4, 16, 63, 64, 65, 100, 119, 120, 121, 176, 177, 300, 600,
                1000, 4095, 4096, len(data) // 3, len(data) // 2,
                len(data) - 4097, len(data) - 1}
        for n in sorted(cuts):
            path = tmp_path / f"{name}-{n}.core"
            path.write_bytes(data[:n])
            for cmd in ("map", "fdt"):
                rc, out, err = run(capsys, cmd, "--core", str(path))
                if rc == 2:
                    one_line_error(rc, out, err)
                else:
                    assert rc == 0 and err == "", (n, err)
                results.append(rc)
    assert results.count(2) > len(results) // 2


def test_segment_file_offset_beyond_2_63(tmp_path, dtc, capsys):
    # pread() fails with EINVAL: an OSError from drgn, not a FaultError.
    path = v3_core(tmp_path, dtc, offsets={FDT_PHYS: 1 << 63})
    one_line_error(*run(capsys, "map", "--core", path),
                   f"cannot read root FDT at phys 0x{FDT_PHYS:x}")


@pytest.mark.parametrize("phoff", [1 << 63, (1 << 64) - 1, 1 << 40, 65])
def test_program_header_table_beyond_the_file(tmp_path, capsys, phoff):
    path = tmp_path / "phoff.core"
    data = elf_core([(0x1000, bytes(PAGE))], note=kho_note(meta_json()),
                    phoff=phoff)
    path.write_bytes(data)
    rc, out, err = run(capsys, "map", "--core", str(path))
    one_line_error(rc, out, err, str(path))


def test_segment_claiming_terabytes(tmp_path, capsys):
    # A PT_LOAD whose sizes say 1 TiB in a 200-byte file.
    path = tmp_path / "huge.core"
    data = bytearray(elf_core([(FDT_PHYS, bytes(64))],
                              note=kho_note(meta_json())))
    off = EHDR.size + PHDR.size        # the PT_LOAD's header
    struct.pack_into("<QQ", data, off + 32, 1 << 40, 1 << 40)
    path.write_bytes(data)
    for cmd in ("map", "fdt"):
        one_line_error(*run(capsys, cmd, "--core", str(path)))


# -- the image note is input -------------------------------------------------

@pytest.mark.parametrize("desc, pattern", [
    (b"{}", "no 'fdt_phys'"),
    (b'{"generation": "kho-v3"}', "no 'fdt_phys'"),
    (b'{"fdt_phys": 1e999}', "'fdt_phys' is inf"),
    (b'{"fdt_phys": 4194304.0}', "'fdt_phys' is 4194304.0"),
    (b'{"fdt_phys": "0x400000"}', "'fdt_phys' is '0x400000'"),
    (b'{"fdt_phys": null}', "'fdt_phys' is None"),
    (b'{"fdt_phys": [4194304]}', "'fdt_phys' is [4194304]"),
    (b'{"fdt_phys": {"a": {"b": 1}}}', "'fdt_phys' is {"),
    (b'{"fdt_phys": true}', "'fdt_phys' is True"),
    (b'{"fdt_phys": -4096}', "'fdt_phys' is -4096"),
    (b'{"fdt_phys": 18446744073709551616}', "'fdt_phys' is"),
    pytest.param(b'{"fdt_phys": ' + b"9" * 5000 + b"}", "not valid JSON",
                 id="5000-digits"),
    (b'{"fdt_phys": 4194304, "bitmap_bytes": 1e999}', "'bitmap_bytes'"),
    (b'{"fdt_phys": 4194304, "bitmap_bytes": 7}', "'bitmap_bytes' is 7"),
    (b'{"fdt_phys": 4194304, "release": ["6.18"]}', "'release'"),
    (b'{"fdt_phys": 4194304, "release": "6.18\\nkho-inspect: ok"}',
     "'release'"),
    (b'{"fdt_phys": 4194304, "image_format": 99}', "'image_format' is 99"),
    pytest.param(b"[" * 100000 + b"]" * 100000, "not valid JSON",
                 id="deep-list"),
    pytest.param(b'{"a": ' * 50000 + b"1" + b"}" * 50000, "not valid JSON",
                 id="deep-object"),
    (b'"fdt_phys"', "not a JSON object"),
    (b"null", "not a JSON object"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_bad_image_notes(tmp_path, dtc, capsys, desc, pattern):
    path = v3_core(tmp_path, dtc, note=kho_note(desc))
    for cmd in ("map", "fdt"):
        one_line_error(*run(capsys, cmd, "--core", path), "handover image "
                       "note", pattern)


def test_good_note_still_decodes(tmp_path, dtc, capsys):
    # The control for the cases above: the same image with a sound note.
    rc, out, err = run(capsys, "map", "--json", "--core",
                       v3_core(tmp_path, dtc))
    assert rc == 0, err
    assert json.loads(out)["ranges"][0]["phys"] == 0x1000000


# -- work bounded by the input -----------------------------------------------

def _test_kho_fdt(dtc, nr, folios_info: bytes) -> bytes:
    hexb = " ".join(f"{b:02x}" for b in folios_info)
    return run_dtc(dtc, (
        '/dts-v1/;\n/ {\n compatible = "kho-test-v1";\n'
        ' magic = [21 4f 48 4b];\n data {\n'
        f'  nr_folios = [{" ".join(f"{b:02x}" for b in nr.to_bytes(4, "little"))}];\n'
        f'  folios_info = [{hexb}];\n }};\n}};\n').encode())


def _v3_with_test_kho(tmp_path, dtc, nr, desc, extra_segs=()):
    blob = _test_kho_fdt(dtc, nr, desc)
    sub = (f"kho_test {{ preserved-data = {u64le(0x800000)}; "
           f"blob-size = {u64le(len(blob))}; }};")
    segs = radix_hand_map() + [(0x800000, blob.ljust(PAGE, b"\0"))] + \
        list(extra_segs)
    return v3_core(tmp_path, dtc, segs=segs, subnodes=sub)


def _subnode(capsys, path):
    t = time.monotonic()
    rc, out, err = run(capsys, "fdt", "--json", "--core", path)
    assert time.monotonic() - t < 10
    assert rc == 0, err
    (sub,) = json.loads(out)["subnodes"]
    return sub


def vmalloc_desc(first, total, order, flags=1):
    return struct.pack("<QIHH", first, total, flags, order)


def vmalloc_chunk(entries, nxt=0):
    """A kho_vmalloc_chunk page: next, then the block addresses."""
    return (struct.pack("<Q", nxt) + b"".join(struct.pack("<Q", e)
                                              for e in entries)
            ).ljust(PAGE, b"\0")


def test_test_kho_sound_vmalloc_list(tmp_path, dtc, capsys):
    # Control: 3 folios (phys | order) in one vmalloc page.
    folios = struct.pack("<3Q", 0x1000000, 0x2000001, 0x3000000)
    path = _v3_with_test_kho(tmp_path, dtc, 3, vmalloc_desc(0x900000, 1, 0),
                             [(0x900000, vmalloc_chunk([0xa00000])),
                              (0xa00000, folios.ljust(PAGE, b"\0"))])
    sub = _subnode(capsys, path)
    assert sub.get("error") is None, sub
    assert sub["content"]["folios"] == [
        {"phys": 0x1000000, "order": 0}, {"phys": 0x2000000, "order": 1},
        {"phys": 0x3000000, "order": 0}]


def test_test_kho_nr_folios_beyond_its_vmalloc_data(tmp_path, dtc, capsys):
    # One vmalloc page holds 512 entries; nr_folios claims a million. The
    # decoder used to invent the rest as zero folios and exit 0.
    path = _v3_with_test_kho(tmp_path, dtc, 1_000_000,
                             vmalloc_desc(0x900000, 1, 0),
                             [(0x900000, vmalloc_chunk([0xa00000])),
                              (0xa00000, bytes(PAGE))])
    sub = _subnode(capsys, path)
    assert "nr_folios 1000000" in sub["error"]
    assert "folios" not in (sub.get("content") or {})


def test_test_kho_vmalloc_claiming_gibs(tmp_path, dtc, capsys):
    # order 20: one block of 4 GiB, none of it in the image. Used to end in
    # MemoryError (one read of the whole block).
    path = _v3_with_test_kho(tmp_path, dtc, 1 << 28,
                             vmalloc_desc(0x900000, 1 << 20, 20),
                             [(0x900000, vmalloc_chunk([1 << 40]))])
    sub = _subnode(capsys, path)
    assert "cannot read" in sub["error"] and "vmalloc data" in sub["error"]


@pytest.mark.parametrize("chunk, first, pattern", [
    (vmalloc_chunk([0xa00000, 0xa00000]), 0x900000, "overlap"),
    (vmalloc_chunk([0xa00800, 0xa00000]), 0x900000, "not a page-aligned"),
    (vmalloc_chunk([0xa00000]), 0x900008, "not page-aligned"),
])
def test_vmalloc_blocks_decoded_once(tmp_path, dtc, capsys, chunk, first,
                                     pattern):
    segs = [(0x900000, chunk), (0xa00000, bytes(2 * PAGE))]
    path = _v3_with_test_kho(tmp_path, dtc, 2, vmalloc_desc(first, 2, 0),
                             segs)
    assert pattern in _subnode(capsys, path)["error"]


def v1_core(tmp_path, dtc, segs, map_phys=0x10000, bitmap_bytes=4096):
    blob = run_dtc(dtc, kho_dts("kho-v1", map_phys))
    path = tmp_path / "v1.core"
    note = kho_note(json.dumps({"generation": "kho-v1", "fdt_phys": FDT_PHYS,
                                "bitmap_bytes": bitmap_bytes}).encode())
    path.write_bytes(elf_core(segs + [(FDT_PHYS, blob.ljust(PAGE, b"\0"))],
                              note=note))
    return str(path)


def test_v1_512_byte_bitmaps_share_a_page(tmp_path, dtc, capsys):
    # Control: 512-byte bitmaps are 512-byte kzalloc objects, several to a
    # page: 0x20000 and 0x20200 are both fine.
    segs = [(0x10000, chunk_page(0, 0, [(0, 0x20000), (1 << 24, 0x20200)])),
            (0x20000, bitmap({0}, 512) + bitmap({1}, 512) + bytes(3072))]
    rc, out, err = run(capsys, "map", "--json", "--core",
                       v1_core(tmp_path, dtc, segs, bitmap_bytes=512))
    assert rc == 0, err
    assert [r["phys"] for r in json.loads(out)["ranges"]] == [
        0, (1 << 24) + PAGE]


@pytest.mark.parametrize("segs, map_phys, nbytes, pattern", [
    # 4 KiB bitmaps at 0x20000, 0x20001, ... 0x201ff: 512 overlapping
    # decodes of one page (the 3.5 GB blow-up class).
    ([(0x10000, chunk_page(0, 0, [(i << 27, 0x20000 + i)
                                  for i in range(255)])),
      (0x20000, bytes(2 * PAGE))], 0x10000, 4096, "not 4096-byte aligned"),
    ([(0x10000, chunk_page(0, 0, [(0, 0x20100)])),
      (0x20000, bytes(PAGE))], 0x10000, 512, "not 512-byte aligned"),
    ([(0x10000, chunk_page(0, 0, [(0, 0x10200)]))], 0x10000, 512,
     "lies in a chunk page"),
    ([(0x10000, chunk_page(0, 0, []).ljust(2 * PAGE, b"\0"))], 0x10008, 4096,
     "not page-aligned"),
])
def test_v1_pointers_must_be_aligned(tmp_path, dtc, capsys, segs, map_phys,
                                     nbytes, pattern):
    one_line_error(*run(capsys, "map", "--core",
                        v1_core(tmp_path, dtc, segs, map_phys, nbytes)),
                   pattern)


def test_radix_unaligned_node(tmp_path, dtc, capsys):
    # A table entry one byte into a page: overlapping nodes multiply work.
    segs = [(0x100000, table({2: 0x101001})), (0x101000, bytes(2 * PAGE))]
    one_line_error(*run(capsys, "map", "--core",
                        v3_core(tmp_path, dtc, segs=segs)), "aligned")


# -- one line, and where -----------------------------------------------------

def test_root_fdt_bad_token_names_where(tmp_path, dtc, capsys):
    blob = bytearray(run_dtc(dtc, kho_dts("kho-v3", 0x100000)))
    off_struct = int.from_bytes(blob[8:12], "big")
    blob[off_struct:off_struct + 4] = (7).to_bytes(4, "big")   # no such token
    path = v3_core(tmp_path, dtc, fdt=bytes(blob))
    one_line_error(*run(capsys, "map", "--core", path),
                   f"root FDT from handover image {path} (note) at phys "
                   f"0x{FDT_PHYS:x}")
    f = tmp_path / "bad.dtb"
    f.write_bytes(blob)
    one_line_error(*run(capsys, "fdt", "--fdt", str(f)),
                   f"root FDT from {f}:")
    one_line_error(*run(capsys, "fdt", "--core", path, "--fdt-phys",
                        hex(FDT_PHYS)), f"root FDT from phys 0x{FDT_PHYS:x}:")


@pytest.mark.parametrize("value", ["-1", "-0x1000", "0x10000000000000000",
                                   "zero"])
def test_fdt_phys_must_be_an_address(capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["fdt", "--sample", f"--fdt-phys={value}"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--fdt-phys" in lines[0], err
    assert "0x-" not in err


def test_symbols_checked_by_every_command(tmp_path, capsys):
    core = samples.path("6.19")
    missing = str(tmp_path / "nope")
    notelf = tmp_path / "notelf"
    notelf.write_text("not a vmlinux\n")
    for cmd in ("map", "fdt", "status"):
        one_line_error(*run(capsys, cmd, "--core", core, "-s", missing),
                       f"-s {missing}: no such file")
        one_line_error(*run(capsys, cmd, "--core", core, "-s",
                            str(tmp_path)), "is a directory")
        one_line_error(*run(capsys, cmd, "--core", core, "-s", str(notelf)),
                       "not an ELF file")


def test_options_that_would_be_ignored(tmp_path, capsys):
    for argv in (["map", "--sample", "--core", "/nonexistent"],
                 ["fdt", "--fdt", "x", "--fdt-phys", "0x1000"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        out, err = capsys.readouterr()
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert "not allowed with" in err
    one_line_error(*run(capsys, "fdt", "--sample", "--fdt-from", "debugfs"),
                   "--fdt-from debugfs")
    one_line_error(*run(capsys, "map", "--core", samples.path("6.19"),
                        "--fdt-from", "setup-data"), "--fdt-from setup-data")


def test_live_fdt_fallback_is_one_line(monkeypatch, tmp_path, capsys):
    from kho_inspect.cli import source
    monkeypatch.setattr(source, "DEBUGFS", str(tmp_path / "kho"))
    monkeypatch.setattr(source.memory, "open_live", _no_kcore)
    line = one_line_error(*run(capsys, "map", "--fdt-from", "debugfs"),
                          "--fdt-from debugfs:")
    assert "own pointer" not in line
    for cmd in ("map", "fdt"):
        line = one_line_error(*run(capsys, cmd), "kernel's own pointer",
                              "no /proc/kcore")


def _no_kcore(*a, **kw):
    from kho_inspect.errors import KhoError
    raise KhoError("this system has no /proc/kcore")


def test_no_kcore_is_not_a_root_problem(monkeypatch, capsys):
    real = os.path.exists
    monkeypatch.setattr(os.path, "exists",
                        lambda p: False if p == "/proc/kcore" else real(p))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    line = one_line_error(*run(capsys, "status"), "no /proc/kcore")
    assert "needs root" not in line


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("argv", [["fdt", "--sample"],
                                  ["map", "--sample", "--json"]])
def test_output_to_a_full_disk_is_one_line(argv):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "kho_inspect", *argv],
                           stdout=full, stderr=subprocess.PIPE, cwd=root,
                           env=dict(os.environ, PYTHONPATH=root), timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.decode() == ("kho-inspect: error: No space left on "
                                 "device\n")


def test_root_fdt_of_unknown_generation_names_where(tmp_path, dtc, capsys):
    blob = run_dtc(dtc, kho_dts("kho-v9", 0x100000))
    path = v3_core(tmp_path, dtc, fdt=blob)
    one_line_error(*run(capsys, "map", "--core", path),
                   f"root FDT from handover image {path} (note) at phys "
                   f"0x{FDT_PHYS:x}: ", "kho-v9")

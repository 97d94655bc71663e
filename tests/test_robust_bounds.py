"""Bad input still unanswered (issue #16 section 6): each class a fuzz of
the CLI found ends in one line (exit 2) or in a finding or not-checked
note, within bounded time and memory.

The inputs are laid out here by hand from the layouts' own text
(vmtests/kmod/kho_workload.c's table, lib/test_kho.c's folios_info, the x86
boot protocol, the hashes note of kho_inspect/image.py's docstring)."""

import struct
import time

import pytest

from helpers import u64le
from kho_inspect.errors import KhoError
from test_check import findings, image, _workload_table
from test_robust import _v3_with_test_kho, one_line_error, run

#: Seconds any of these inputs may take (they took minutes or forever).
QUICK = 10


def timed(fn, *a, **kw):
    t = time.monotonic()
    out = fn(*a, **kw)
    assert time.monotonic() - t < QUICK, "took too long"
    return out


# -- kho_workload's item table (decode/clients.py, check/owners.py) -----------

TABLE = 0x500000
GOOD_FOLIO = (7, 2, 0x600000, 1, 0, 1, bytes(16))     # id 7: folio, order 0


def _workload_check(tmp_path, dtc, capsys, bad):
    """``check`` over a table of item *bad* (id 3) then a sound folio:
    the bad item's error is one subnode finding naming it, the folio is
    still attributed."""
    table = _workload_table([bad, GOOD_FOLIO])
    sub = (f" kho_workload {{ PROP = {u64le(TABLE)}; "
           f"blob-size = {u64le(len(table))}; }};\n")
    p = image(tmp_path, dtc, {(TABLE, 0), (0x600000, 0)}, subnodes=sub,
              extra_segs=[(TABLE, table.ljust(4096, b"\0"))])
    rc, doc, ids = timed(findings, capsys, "--core", p)
    assert rc == 1
    errs = [f["message"] for f in doc["findings"] if f["id"] == "subnode"]
    assert len(errs) == 1 and "item 3" in errs[0], errs
    assert "\n" not in errs[0] and len(errs[0]) < 300, errs[0]
    assert ("unclaimed", 0x600000) not in ids     # item 7 still owned
    # the text report and the fdt summary take the same table
    rc, out, err = timed(run, capsys, "check", "--core", p)
    assert rc == 1 and "Traceback" not in err, err
    rc, out, err = timed(run, capsys, "fdt", "--core", p)
    assert rc == 0, err
    return errs[0]


def test_workload_undecodable_vmalloc_then_another_item(tmp_path, dtc,
                                                        capsys):
    # An unaligned kho_vmalloc descriptor, then a folio: the next item was
    # read with a name the except clause had unbound (UnboundLocalError).
    bad_desc = (0x9000001).to_bytes(8, "little") + bytes(8)
    msg = _workload_check(tmp_path, dtc, capsys,
                          (3, 5, 0x900000, 1, -1, 1, bad_desc))
    assert "vmalloc" in msg or "0x9000001" in msg, msg


@pytest.mark.parametrize("order", [-1, -2**31, 52, 4095, 2**31 - 1])
@pytest.mark.parametrize("kind", [1, 2])                # blob, folio
def test_workload_order_out_of_range(tmp_path, dtc, capsys, kind, order):
    # A negative shift, an OverflowError in human_size, seconds of
    # big-integer work: now the item's error, naming the field and value.
    msg = _workload_check(tmp_path, dtc, capsys,
                          (3, kind, 0x700000, 1, order, 1, bytes(16)))
    assert f"order {order}" in msg, msg


@pytest.mark.parametrize("nr_pages, stride", [
    (2**64 - 1, 2), (2**64 - 1, 1), ((1 << 20) + 1, 1), (1 << 19, 4),
    (0, 1)])
def test_workload_scatter_page_count(tmp_path, dtc, capsys, nr_pages,
                                     stride):
    # range(nr_pages) over a 64-bit count never ended; the module's own
    # reader refuses more than KW_MAX_PAGES pages (nr_pages * stride).
    msg = _workload_check(tmp_path, dtc, capsys,
                          (3, 6, 0x700000, nr_pages, 0, 1, bytes(16),
                           stride))
    assert f"nr_pages {nr_pages}" in msg, msg


@pytest.mark.parametrize("kind", [3, 4, 7])             # pages, phys, numa
def test_workload_page_run_of_64_bit_count(tmp_path, dtc, capsys, kind):
    msg = _workload_check(tmp_path, dtc, capsys,
                          (3, kind, 0x700000, 2**64 - 1, -1, 1, bytes(16)))
    assert f"nr_pages {2**64 - 1}" in msg, msg


# -- test_kho's folios (decode/clients.py) ------------------------------------

@pytest.mark.parametrize("order", [0xFFF, 52])
def test_test_kho_folio_order_bits_all_set(tmp_path, dtc, capsys, order):
    # folios_info entries are phys | order in the low 12 bits: 4095 made
    # 4 KiB << 4095 claims (OverflowError in human_size).
    # three inline entries (16 bytes would be a kho_vmalloc descriptor)
    info = struct.pack("<3Q", 0x2000000, 0x1000000 | order, 0x3000000)
    path = _v3_with_test_kho(tmp_path, dtc, 3, info)
    rc, doc, ids = timed(findings, capsys, "--core", path)
    errs = [f["message"] for f in doc["findings"] if f["id"] == "subnode"]
    assert len(errs) == 1, errs
    assert "folio #1" in errs[0] and f"order {order}" in errs[0], errs
    assert "0x1000000" in errs[0], errs
    rc, out, err = timed(run, capsys, "check", "--core", path)
    assert rc == 1 and "Traceback" not in err, err


# -- check --next / --next-vmlinux (check/next_kernel.py, abi/releases.py) ---

LONG = "9" * 5000


@pytest.mark.parametrize("release", [
    LONG + ".1", "7.3" + LONG, "7.3." + LONG, "6.18.15-" + "x" * 60],
    ids=["major", "minor", "tail", "65-chars"])
def test_next_release_longer_than_uname(capsys, release):
    # int() of thousands of digits raised ValueError; a long tail after
    # "7.3." went into every finding. uname -r holds at most 64 characters.
    line = one_line_error(*timed(run, capsys, "check", "--sample", "6.18",
                                 "--next", release),
                          f"{len(release)} characters", "64")
    assert len(line) < 200, line


def _bzimage(version: bytes) -> bytes:
    bz = bytearray(0x1000)
    bz[0x202:0x206] = b"HdrS"
    bz[0x20E:0x210] = (0x300).to_bytes(2, "little")   # string at 0x500
    bz[0x500:0x500 + len(version)] = version
    return bytes(bz)


@pytest.mark.parametrize("version, pattern", [
    (b"   \t \0", "blank"),
    (b"\0", "neither a bzImage"),
    (b"7.3." + b"9" * 250 + b"\0", "characters"),
], ids=["blank", "empty", "long"])
def test_next_vmlinux_bzimage_version(tmp_path, capsys, version, pattern):
    # a version string of blanks: IndexError from split()[0]
    p = tmp_path / "bz"
    p.write_bytes(_bzimage(version))
    line = one_line_error(*run(capsys, "check", "--sample", "6.18",
                               "--next-vmlinux", str(p)), str(p), pattern)
    assert len(line) < 300, line


def test_next_vmlinux_banner_too_long(tmp_path, capsys):
    p = tmp_path / "vmlinux"
    p.write_bytes(b"\x7fELF" + bytes(100) + b"Linux version 7.3."
                  + b"1" * 100_000 + b" (gcc)\0")
    one_line_error(*timed(run, capsys, "check", "--sample", "6.18",
                          "--next-vmlinux", str(p)), "characters")


def test_next_vmlinux_scan_is_bounded(tmp_path, capsys, monkeypatch):
    # A sparse file of 3 GiB whose banner sits at 2.5 GiB: it was read
    # whole. The scan stops at the bound (KERNEL_IMAGE_SIZE, 1 GiB; set
    # lower here to keep the test quick) and says so.
    from kho_inspect.walk import kexec
    monkeypatch.setattr(kexec, "KERNEL_IMAGE_SIZE", 64 << 20, raising=False)
    p = tmp_path / "vmlinux"
    with open(p, "wb") as f:
        f.write(b"\x7fELF")
        f.seek(5 << 29)
        f.write(b"Linux version 7.3.4 (gcc) #1\0")
        f.truncate(3 << 30)
    one_line_error(*timed(run, capsys, "check", "--sample", "6.18",
                          "--next-vmlinux", str(p)),
                   "no 'Linux version' banner in its first 64 MiB")


# -- the loaded kexec image's payload (walk/kexec.py) --------------------------

def _bomb(name: str, mib: int) -> bytes:
    """*mib* MiB of zeros and no banner, compressed the kernel's ways."""
    import bz2
    import lzma
    import zlib
    c = {"gzip": lambda: zlib.compressobj(9, zlib.DEFLATED, 31),
         "bzip2": lambda: bz2.BZ2Compressor(9),
         "xz": lambda: lzma.LZMACompressor(lzma.FORMAT_XZ, preset=0,
                                           check=lzma.CHECK_CRC32),
         "lzma": lambda: lzma.LZMACompressor(lzma.FORMAT_ALONE,
                                             preset=0)}[name]()
    zeros = bytes(16 << 20)
    return b"".join(c.compress(zeros) for _ in range(mib // 16)) + c.flush()


@pytest.mark.parametrize("name", ["gzip", "bzip2", "xz", "lzma"])
def test_payload_bomb_has_an_output_budget(monkeypatch, name):
    # 256 MiB of zeros: one step of input expanded to all of it (bzip2:
    # 208 bytes), a real bomb to GiBs. The output is now read 4 MiB at a
    # time, up to KERNEL_IMAGE_SIZE (1 GiB; 32 MiB here, to keep it quick).
    import tracemalloc
    from kho_inspect.walk import kexec
    blob = _bomb(name, 256)
    monkeypatch.setattr(kexec, "KERNEL_IMAGE_SIZE", 32 << 20, raising=False)
    tracemalloc.start()
    try:
        with pytest.raises(KhoError, match=r"no 'Linux version' banner in "
                           r"its first 32 MiB of output"):
            timed(kexec.payload_release, lambda o, n: blob[o:o + n],
                  len(blob))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"peak {peak >> 20} MiB"


def test_payload_lzma_dictionary_of_4_gib():
    # "5d 00 00 ff ff": the lzma header's dictionary size is 0xffff0000
    from kho_inspect.walk.kexec import payload_release
    blob = b"\x5d\x00\x00\xff\xff" + b"\xff" * 8 + bytes(4096)
    with pytest.raises(KhoError, match=r"^the kernel payload \(lzma\) header "
                       r"asks for a 4 GiB dictionary; the kernel's builds use "
                       r"at most 64 MiB$"):
        payload_release(lambda o, n: blob[o:o + n], len(blob))


def test_payload_out_of_memory_is_a_khoerror(monkeypatch):
    # check turns the KhoError into a not-checked note (test_walk_kexec)
    import zlib
    from kho_inspect.walk import kexec

    class Starved:
        eof = False
        unconsumed_tail = b""

        def decompress(self, data, max_length=0):
            raise MemoryError
    monkeypatch.setattr(kexec, "_CODECS", [(b"\x1f\x8b", "gzip", Starved)]
                        + kexec._CODECS[1:])
    blob = b"\x1f\x8b" + zlib.compress(b"x")
    with pytest.raises(KhoError, match=r"\(gzip\): out of memory"):
        kexec.payload_release(lambda o, n: blob[o:o + n], len(blob))


# -- the hashes note (image.py, verify) ----------------------------------------

def test_hashes_note_with_millions_of_entries(tmp_path, capsys):
    # A note of 700,000 [phys, 0, [null]] entries (13 MB: both notes share
    # one PT_NOTE here, which a reader takes up to 16 MiB) over an image
    # holding one page: json.loads and the checks built objects of ~20
    # times the note's size (GBs for a note of millions) before any check.
    # One page of map can mark 32768 blocks at most.
    import json
    import tracemalloc
    from test_robust import elf_core, elf_note
    n = 700_000
    desc = (b'{"algorithm":"blake2b-128","blocks":['
            + b",".join(b"[%d,0,[null]]" % (i << 12) for i in range(n))
            + b'],"chunk_bytes":2097152}')
    meta = json.dumps({"generation": "kho-v3", "fdt_phys": 0x400000,
                       "release": "test", "image_format": 1}).encode()
    note = elf_note(b"KHO_INSPECT\0", 0x4B484F31, meta) + \
        elf_note(b"KHO_INSPECT\0", 0x4B484F32, desc)
    path = tmp_path / "h.core"
    path.write_bytes(elf_core([(0x400000, bytes(4096))], note=note))
    del desc, note
    tracemalloc.start()
    try:
        res = timed(run, capsys, "verify", str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line_error(*res, f"lists about {n} blocks",
                   "can mark at most 32768")
    assert peak < 100 << 20, f"peak {peak >> 20} MiB"

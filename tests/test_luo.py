"""LUO's sessions: the decoder follows the ``LUO`` blob to its sessions,
files and memfd folios, and ``check`` gives their blocks to LUO.

The bytes are built here from the kernel's own layouts, read in the 7.3.4
and 7.1.13 trees (include/linux/kho/abi/luo.h, block.h, memfd.h,
kernel/liveupdate/luo_session.c, luo_file.c), not from kho_inspect.abi.
"""

import struct

import json

import pytest

from conftest import run_dtc
from helpers import PAGE, u64le
from test_check import findings, image, run

# struct luo_ser (packed): char compatible[8]; u64 liveupdate_num,
# sessions_pa, flbs_pa
LUO_SER = "<8sQQQ"
# struct kho_block_header_ser {u64 next; u64 count}, entries follow
BLOCK_HDR = "<QQ"
# struct luo_session_ser: char name[64]; struct luo_file_set_ser {u64 files,
# u64 count}
SESSION = "<64sQQ"
# struct luo_file_ser: char compatible[48]; u64 data; u64 token
FILE = "<48sQQ"
# struct memfd_luo_ser (memfd-v2): u64 pos, size; u32 seals, flags;
# u64 nr_folios; struct kho_vmalloc {u64 first; u32 total_pages; u16 flags;
# u16 order}
MEMFD_V2 = "<QQIIQQIHH"
# struct memfd_luo_folio_ser {u64 pfn:52, flags:12; u64 index}
FOLIO = "<QQ"
# struct luo_flb_header_ser {u64 pgcnt, count}
FLB_HDR = "<QQ"


def block(nxt, fmt, entries):
    b = struct.pack(BLOCK_HDR, nxt, len(entries))
    for e in entries:
        b += struct.pack(fmt, *e)
    return b.ljust(PAGE, b"\0")


def folio_ser(phys, index, flags=3):
    return struct.pack(FOLIO, (phys // PAGE) | (flags << 52), index)


def memfd_pages(ser_at, chunk_at, list_at, folios):
    """memfd_luo_ser at *ser_at*, its kho_vmalloc's one chunk at
    *chunk_at* naming one order-0 page at *list_at* holding *folios*
    (``(phys, index)``; phys 0: an empty slot the kernel skips)."""
    ser = struct.pack(MEMFD_V2, 0, len(folios) * PAGE, 0, 0, len(folios),
                      chunk_at, 1, 1, 0)
    chunk = struct.pack("<QQ", 0, list_at)        # next, then block phys
    arr = b"".join(folio_ser(p, i, 3 if p else 0) for p, i in folios)
    return [(ser_at, ser.ljust(PAGE, b"\0")),
            (chunk_at, chunk.ljust(PAGE, b"\0")),
            (list_at, arr.ljust(PAGE, b"\0"))]


def luo73(tmp_path, dtc, *, files_block=None, sessions_next=0):
    """A 7.3 handover: a LUO blob with one session "vm-a" holding one
    memfd (token 7) of three folio slots: 0x600000 (order 0), 0x604000
    (an order-2 folio) and an empty one. Plus an unrelated block at
    0x700000 that nobody claims."""
    luo = struct.pack(LUO_SER, b"luo-v5", 2, 0x510000, 0x520000)
    segs = [(0x500000, luo.ljust(PAGE, b"\0")),
            (0x520000, struct.pack(FLB_HDR, 1, 0).ljust(PAGE, b"\0")),
            (0x510000, block(sessions_next, SESSION,
                             [(b"vm-a", 0x530000, 1)])),
            (0x530000, files_block or block(0, FILE,
                                            [(b"memfd-v2", 0x540000, 7)]))]
    segs += memfd_pages(0x540000, 0x550000, 0x560000,
                        [(0x600000, 0), (0x604000, 1), (0, 5)])
    blocks = {(p, 0) for p, _ in segs} | {(0x600000, 0), (0x604000, 2),
                                          (0x700000, 0)}
    sub = (f' LUO {{ PROP = {u64le(0x500000)}; blob-size = '
           f'{u64le(len(luo))}; }};\n')
    return image(tmp_path, dtc, blocks, compatible="kho-v4", subnodes=sub,
                 extra_segs=segs, release="7.3.4")


def test_luo_v5_sessions_owned(tmp_path, dtc, capsys):
    p = luo73(tmp_path, dtc)
    rc, doc, ids = findings(capsys, "--core", p)
    # the blob, FLB header, session block, file block, memfd record,
    # vmalloc chunk, folio array page, and the two folios
    assert doc["owners"]["LUO"]["blocks"] == 9
    assert doc["owners"]["LUO"]["bytes"] == 8 * PAGE + 4 * PAGE
    assert [i for i in ids if i[0] == "unclaimed"] == [("unclaimed",
                                                        0x700000)]
    assert not [i for i in ids if i[0] in ("claim-preserved", "subnode")]
    rc, out, _ = run(capsys, "fdt", "--core", p, "--json")
    c = next(s for s in json.loads(out)["subnodes"]
             if s["name"] == "LUO")["content"]
    (s,) = c["sessions"]
    assert s["name"] == "vm-a" and s["file_blocks"] == [0x530000]
    (f,) = s["files"]
    assert f["compatible"] == "memfd-v2" and f["token"] == 7
    assert [(x["phys"], x["index"]) for x in f["memfd"]["folios"]] == \
        [(0x600000, 0), (0x604000, 1)]
    assert c["flb"]["phys"] == 0x520000


def test_luo_owners_name_the_session(tmp_path, dtc):
    from kho_inspect.check.owners import claims
    from kho_inspect.decode import decode_handover
    from kho_inspect.cli import build_parser
    from kho_inspect.cli.source import open_source, root_fdt
    args = build_parser().parse_args(["fdt", "--core",
                                      luo73(tmp_path, dtc)])
    src = open_source(args)
    h = decode_handover(root_fdt(src, args).blob, src.memory(),
                        with_map=False)
    whats = {(c.phys, c.what) for c in claims(h) if c.owner == "LUO"}
    assert (0x604000, "session vm-a memfd 7 folio") in whats
    assert (0x540000, "session vm-a memfd 7 record") in whats
    assert (0x530000, "session vm-a files") in whats


def test_luo_bad_file_chain_is_one_error(tmp_path, dtc, capsys):
    """A file block whose count is 0 (kho_block_set_restore refuses it):
    the session says so in one line; the FLB header and the session block
    are still LUO's, the memfd's pages are not."""
    bad = struct.pack(BLOCK_HDR, 0, 0).ljust(PAGE, b"\0")
    p = luo73(tmp_path, dtc, files_block=bad)
    rc, doc, ids = findings(capsys, "--core", p)
    assert doc["owners"]["LUO"]["blocks"] == 3      # blob, FLB, sessions
    unclaimed = {i[1] for i in ids if i[0] == "unclaimed"}
    assert {0x530000, 0x540000, 0x600000, 0x604000} <= unclaimed
    rc, out, _ = run(capsys, "fdt", "--core", p, "--json")
    c = next(s for s in json.loads(out)["subnodes"]
             if s["name"] == "LUO")["content"]
    err = c["sessions"][0]["error"]
    assert "0x530000" in err and "\n" not in err
    # check reports it: one subnode error owned by LUO, at the file list
    sub = [f for f in doc["findings"] if f["id"] == "subnode"]
    assert [(f["owner"], f["phys"], f["severity"]) for f in sub] == [
        ("LUO", 0x530000, "error")] and doc["counts"]["error"] == 1


def test_luo_session_chain_loop(tmp_path, dtc, capsys):
    """A session chain whose block points at itself: sessions_error, and
    the FLB header is still claimed."""
    p = luo73(tmp_path, dtc, sessions_next=0x510000)
    rc, out, _ = run(capsys, "fdt", "--core", p, "--json")
    c = next(s for s in json.loads(out)["subnodes"]
             if s["name"] == "LUO")["content"]
    assert "loops" in c["sessions_error"] and c["sessions"] == []
    rc, doc, ids = findings(capsys, "--core", p)
    assert doc["owners"]["LUO"]["blocks"] == 2      # blob, FLB
    sub = [f for f in doc["findings"] if f["id"] == "subnode"]
    assert len(sub) == 1 and "loops" in sub[0]["message"] and rc == 1


def test_luo_fdt_71(tmp_path, dtc, capsys):
    """7.1's luo-v1 FDT: the 16-page session header (order 4, preserved
    from boot), a session's 2-page file array (order 1), the FLB page."""
    hdr = struct.pack("<Q", 1) + struct.pack(SESSION, b"s71", 0x5a0000, 1)
    files = struct.pack(FILE, b"memfd-v2", 0x540000, 9)
    segs = [(0x580000, hdr.ljust(16 * PAGE, b"\0")),
            (0x5a0000, files.ljust(2 * PAGE, b"\0")),
            (0x520000, struct.pack(FLB_HDR, 1, 0).ljust(PAGE, b"\0"))]
    segs += memfd_pages(0x540000, 0x550000, 0x560000, [(0x600000, 0)])
    luo = run_dtc(dtc, (
        '/dts-v1/;\n/ {\n compatible = "luo-v1";\n'
        f' liveupdate-number = {u64le(1)};\n'
        ' luo-session { compatible = "luo-session-v2";\n'
        f'  luo-session-header = {u64le(0x580000)}; }};\n'
        ' luo-flb { compatible = "luo-flb-v1";\n'
        f'  luo-flb-header = {u64le(0x520000)}; }};\n}};\n').encode())
    segs.append((0x500000, luo.ljust(PAGE, b"\0")))
    blocks = {(0x580000, 4), (0x5a0000, 1), (0x520000, 0), (0x500000, 0),
              (0x540000, 0), (0x550000, 0), (0x560000, 0), (0x600000, 0),
              (0x700000, 0)}
    sub = (f' LUO {{ PROP = {u64le(0x500000)}; blob-size = '
           f'{u64le(len(luo))}; }};\n')
    p = image(tmp_path, dtc, blocks, compatible="kho-v3", subnodes=sub,
              extra_segs=segs, release="7.1.13")
    rc, doc, ids = findings(capsys, "--core", p)
    assert doc["owners"]["LUO"]["blocks"] == 8
    assert [i for i in ids if i[0] == "unclaimed"] == [("unclaimed",
                                                        0x700000)]
    assert not [i for i in ids if i[0] == "claim-preserved"]


def test_luo_claim_wants_the_order(tmp_path, dtc, capsys):
    """A session block preserved as order 1 (kho_alloc_preserve of one
    page makes an order-0 folio): claim-preserved says so."""
    luo = struct.pack(LUO_SER, b"luo-v5", 2, 0x510000, 0)
    segs = [(0x500000, luo.ljust(PAGE, b"\0")),
            (0x510000, block(0, SESSION, [(b"x", 0, 0)]))]
    sub = (f' LUO {{ PROP = {u64le(0x500000)}; blob-size = '
           f'{u64le(len(luo))}; }};\n')
    p = image(tmp_path, dtc, {(0x500000, 0), (0x510000, 1)},
              compatible="kho-v4", subnodes=sub, extra_segs=segs,
              release="7.3.4")
    rc, doc, ids = findings(capsys, "--core", p)
    assert ("claim-preserved", 0x510000) in ids


def test_real_luo_records_7_3_4(tmp_path, dtc, capsys):
    """Records a 7.3.4 kernel serialized at kexec (a devboot guest booted
    with liveupdate=1: session "kho-inspect-demo", a 96-page memfd with
    token 0x1234), read in the next kernel before /dev/liveupdate was
    opened: the session block, file block, memfd_luo_ser, vmalloc chunk and
    folio array. The oracle is the previous kernel's /proc/self/pagemap of
    a mapping of the memfd, taken after the preserve. The luo_ser is built
    here (the real one is freed at boot) pointing at the real chain."""
    import base64
    import os
    d = json.load(open(os.path.join(os.path.dirname(__file__), "data",
                                    "luo-7.3.4-incoming.json")))
    pages = [(int(p, 16), base64.b64decode(b)) for p, b in d["pages"].items()]
    luo = struct.pack(LUO_SER, b"luo-v5", 1, d["sessions_pa"], 0)
    segs = pages + [(0x500000, luo.ljust(PAGE, b"\0"))]
    blocks = {(p, 0) for p, _ in segs} | {(p, 0) for p in d["pagemap_phys"]}
    sub = (f' LUO {{ PROP = {u64le(0x500000)}; blob-size = '
           f'{u64le(len(luo))}; }};\n')
    p = image(tmp_path, dtc, blocks, compatible="kho-v4", subnodes=sub,
              extra_segs=segs, release="7.3.4")
    rc, out, _ = run(capsys, "fdt", "--core", p, "--json")
    c = next(s for s in json.loads(out)["subnodes"]
             if s["name"] == "LUO")["content"]
    (s,) = c["sessions"]
    assert s["name"] == d["session"] == "kho-inspect-demo"
    (f,) = s["files"]
    assert (f["compatible"], f["token"]) == ("memfd-v2", d["token"])
    m = f["memfd"]
    assert m["size"] == 96 * PAGE and m["nr_folios"] == 96
    assert [(x["phys"], x["index"]) for x in m["folios"]] == \
        [(ph, i) for i, ph in enumerate(d["pagemap_phys"])]
    rc, doc, ids = findings(capsys, "--core", p)
    assert rc == 0 and "(unclaimed)" not in doc["owners"]
    assert doc["owners"]["LUO"]["blocks"] == 1 + 5 + 96


@pytest.mark.parametrize("release,memfd", [("7.1.13", "memfd-v2"),
                                           ("6.19.11", "memfd-v1")])
def test_real_luo_records_fdt(tmp_path, dtc, capsys, release, memfd):
    """The same on 7.1.13 and 6.19.11 (memfd-v1: no seals, 40 bytes),
    where the records are a 16-page session header (order 4, from boot)
    and a session's 2-page file array (order 1): the first page of each,
    as the next kernel found them. The luo-v1 FDT is built here pointing
    at the real header."""
    import base64
    import os
    d = json.load(open(os.path.join(os.path.dirname(__file__), "data",
                                    f"luo-{release}-incoming.json")))
    assert d["release"] == release
    pages = {int(p, 16): base64.b64decode(b) for p, b in d["pages"].items()}
    # the session header: {u64 count = 1} then the session's name
    (header,) = [p for p, b in pages.items()
                 if b[8:8 + len(d["session"])] == d["session"].encode()]
    # {u64 count} + luo_session_ser: its file array
    files = struct.unpack_from(SESSION, pages[header], 8)[1]
    assert files in pages
    luo = run_dtc(dtc, (
        '/dts-v1/;\n/ {\n compatible = "luo-v1";\n'
        f' liveupdate-number = {u64le(1)};\n'
        ' luo-session { compatible = "luo-session-v2";\n'
        f'  luo-session-header = {u64le(header)}; }};\n}};\n').encode())
    segs = list(pages.items()) + [(0x500000, luo.ljust(PAGE, b"\0"))]
    blocks = {(header, 4), (files, 1)} | \
        {(p, 0) for p in pages if p not in (header, files)} | \
        {(0x500000, 0)} | {(p, 0) for p in d["pagemap_phys"]}
    sub = (f' LUO {{ PROP = {u64le(0x500000)}; blob-size = '
           f'{u64le(len(luo))}; }};\n')
    p = image(tmp_path, dtc, blocks, compatible="kho-v3", subnodes=sub,
              extra_segs=segs, release="7.1.13")
    rc, out, _ = run(capsys, "fdt", "--core", p, "--json")
    c = next(s for s in json.loads(out)["subnodes"]
             if s["name"] == "LUO")["content"]
    (s,) = c["sessions"]
    assert s["name"] == d["session"] and s["file_blocks"] == [files]
    (f,) = s["files"]
    assert (f["compatible"], f["token"]) == (memfd, d["token"])
    assert f["memfd"]["size"] == 96 * PAGE
    assert [(x["phys"], x["index"]) for x in f["memfd"]["folios"]] == \
        [(ph, i) for i, ph in enumerate(d["pagemap_phys"])]
    rc, doc, ids = findings(capsys, "--core", p)
    assert rc == 0 and "(unclaimed)" not in doc["owners"]
    assert not [i for i in ids if i[0] == "claim-preserved"]
    assert doc["owners"]["LUO"]["blocks"] == 1 + 5 + 96


@pytest.mark.parametrize("count, ok", [(63, True), (64, False), (0, False)])
def test_kho_block_cap_counts_the_header(count, ok):
    """kho_block_set_restore: 1 <= count <= (4096 - 16) / entry size. A
    block of 64-byte luo_file_ser entries holds 63 (the 16-byte header
    takes the room of a 64th); 64 is a corrupt block."""
    from helpers import mem
    from kho_inspect.decode.clients import block_chain
    from kho_inspect.errors import KhoError
    entries = [(f"e{i}".encode(), 0x700000 + i * PAGE, i)
               for i in range(count)]
    raw = struct.pack(BLOCK_HDR, 0, count) + b"".join(
        struct.pack(FILE, *e) for e in entries)
    m = mem([(0x800000, raw[:PAGE].ljust(PAGE, b"\0"))])
    if ok:
        got, blocks = block_chain(m, 0x800000, 64, "t")
        assert blocks == [0x800000] and len(got) == count
        assert struct.unpack(FILE, got[-1])[1:] == (0x700000 + 62 * PAGE,
                                                    62)
    else:
        with pytest.raises(KhoError, match=f"holds {count} entries, "
                           "not 1..63"):
            block_chain(m, 0x800000, 64, "t")

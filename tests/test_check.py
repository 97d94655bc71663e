"""``check``: invariants, owners and the next kernel, on the bundled samples
(real kernels) and on handovers built by the ABI-text encoder
(tests/abi_encode.py), with expectations written by hand."""

import json

import pytest

from abi_encode import encode_radix, encode_v1
from conftest import run_dtc
from helpers import PAGE, u64le
from kho_inspect import samples
from kho_inspect.check.owners import Claim, attribute, uncovered
from kho_inspect.check.next_kernel import release_of_image
from kho_inspect.cli import main
from kho_inspect.errors import KhoError
from kho_inspect.image import write_image
from kho_inspect.ranges import Run

FDT_PHYS = 0x400000


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def image(tmp_path, dtc, blocks, *, compatible="kho-v3", subnodes="",
          extra_segs=(), release="7.1.13", bitmap_bytes=None,
          fdt_phys=FDT_PHYS, preserve_fdt=True):
    """A handover image: *blocks* (plus the root FDT page, unless told
    not to) encoded by the ABI-text encoder."""
    blocks = set(blocks) | ({(fdt_phys, 0)} if preserve_fdt else set())
    if compatible == "kho-v1":
        segs, root = encode_v1(blocks, bitmap_bytes, base=0x100000)
    else:
        segs, root = encode_radix(blocks, base=0x100000)
    prop = "fdt" if compatible == "kho-v1" else "preserved-data"
    blob = run_dtc(dtc, (
        f'/dts-v1/;\n/ {{\n compatible = "{compatible}";\n'
        f' preserved-memory-map = {u64le(root)};\n'
        + subnodes.replace("PROP", prop) + '};\n').encode())
    segs = segs + [(fdt_phys, blob.ljust(PAGE, b"\0"))] + list(extra_segs)
    path = str(tmp_path / "h.core")
    meta = {"generation": compatible, "fdt_phys": fdt_phys,
            "release": release}
    if bitmap_bytes:
        meta["bitmap_bytes"] = bitmap_bytes
    write_image(path, segs, meta)
    return path


def findings(capsys, *argv):
    rc, out, err = run(capsys, "check", *argv, "--json")
    assert rc in (0, 1), err
    doc = json.loads(out)
    return rc, doc, {(f["id"], f["phys"]) for f in doc["findings"]}


# -- the bundled samples: real kernels' handovers ---------------------------

@pytest.mark.parametrize("sample", samples.available())
def test_samples_are_clean_and_fully_owned(capsys, sample):
    rc, doc, _ = findings(capsys, "--sample", sample)
    assert rc == 0
    assert doc["counts"]["error"] == 0 and doc["counts"]["warning"] == 0
    # every block has an owner: KHO's root FDT, test_kho (its FDT, folios,
    # folios_info), kexec-metadata on 7.1+
    assert "(unclaimed)" not in doc["owners"]
    assert {"kho", "kho_test"} <= set(doc["owners"])
    # the owners account for exactly what the map holds
    rc, out, _ = run(capsys, "map", "--sample", sample, "--json")
    m = json.loads(out)
    assert sum(o["bytes"] for o in doc["owners"].values()) == \
        sum(r["size"] for r in m["ranges"])
    # and test_kho owns each of its folios (the sub-node's own list)
    rc, out, _ = run(capsys, "fdt", "--sample", sample, "--json")
    folios = next(s for s in json.loads(out)["subnodes"]
                  if s["name"] == "kho_test")["content"]["folios"]
    owned = {(r["phys"] + i * (PAGE << r["order"]), r["order"]): r["owner"]
             for r in doc["ranges"] for i in range(r["count"])}
    for f in folios:
        assert owned.get((f["phys"], f["order"])) == "kho_test", f


def test_map_owners_column(capsys):
    rc, out, _ = run(capsys, "map", "--sample", "7.3", "--owners", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert all("owner" in r for r in doc["ranges"])
    rc, out, _ = run(capsys, "map", "--sample", "7.3", "--owners")
    assert "kexec-metadata" in out and "owner" in out
    assert max(len(ln) for ln in out.splitlines()) <= 79


@pytest.mark.parametrize("sample, nxt, ids", [
    # 6.17 writes 512-byte bitmaps, 6.18 reads 4096-byte ones (both
    # "kho-v1"); test_kho's folios_info changed form too
    ("6.17", "6.18.15", {"next-bitmap", "next-client"}),
    ("6.18", "6.17.8", {"next-bitmap", "next-client"}),
    # 7.3 accepts only kho-v4
    ("6.18", "7.3.4", {"next-compatible"}),
    ("7.1", "7.3.4", {"next-compatible"}),
    ("7.3", "6.19.11", {"next-compatible"}),
    ("6.18", "6.19.11", set()),
    ("7.3", "7.3.4", set()),
])
def test_next_kernel_on_samples(capsys, sample, nxt, ids):
    rc, doc, _ = findings(capsys, "--sample", sample, "--next", nxt)
    got = {f["id"] for f in doc["findings"] if f["id"].startswith("next-")}
    assert got == ids
    assert rc == (1 if ids & {"next-bitmap", "next-compatible"} else 0)
    assert doc["next"] == nxt


# -- handovers with a problem -----------------------------------------------

def test_order_11_block(tmp_path, dtc, capsys):
    p = image(tmp_path, dtc, {(0x800000, 11)})
    rc, doc, ids = findings(capsys, "--core", p)
    assert rc == 0                     # a warning: reserve_mem does this
    assert ("order", 0x800000) in ids
    assert ("unclaimed", 0x800000) in ids
    rc, doc, ids = findings(capsys, "--core", p, "--next", "7.1.13")
    f = next(f for f in doc["findings"] if f["id"] == "next-order")
    assert f["phys"] == 0x800000 and f["order"] == 11
    assert "no order check" in f["message"]
    p = image(tmp_path, dtc, {(0x800000, 11)}, compatible="kho-v1",
              bitmap_bytes=4096, release="6.18.15")
    rc, doc, ids = findings(capsys, "--core", p, "--next", "6.19.11")
    f = next(f for f in doc["findings"] if f["id"] == "next-order")
    assert "refuses to restore" in f["message"] and rc == 0


def test_overlapping_blocks(tmp_path, dtc, capsys):
    # order 1 at 0x600000 covers the order-0 block at 0x601000
    p = image(tmp_path, dtc, {(0x600000, 1), (0x601000, 0)})
    rc, doc, ids = findings(capsys, "--core", p)
    assert rc == 1 and ("overlap", 0x601000) in ids


def test_root_fdt_not_preserved(tmp_path, dtc, capsys):
    p = image(tmp_path, dtc, {(0x600000, 0)}, preserve_fdt=False)
    rc, doc, ids = findings(capsys, "--core", p)
    assert rc == 1 and ("blob-preserved", FDT_PHYS) in ids


def _test_kho_node(folios, phys=0x500000):
    """6.17-style test_kho FDT: inline folios_info (phys | order)."""
    info = b"".join((p | o).to_bytes(8, "little") for p, o in folios)
    hexb = " ".join(f"{b:02x}" for b in info)
    le32 = " ".join(f"{b:02x}" for b in len(folios).to_bytes(4, "little"))
    # raw little-endian u32s, as the kernel writes them (not FDT cells)
    return (f'/dts-v1/;\n/ {{\n compatible = "kho-test-v1";\n'
            f' magic = [21 4f 48 4b];\n data {{\n  nr_folios = '
            f'[{le32}];\n  folios_info = [{hexb}];\n }};\n}};\n')


def test_client_folio_missing_or_of_another_order(tmp_path, dtc, capsys):
    blob = run_dtc(dtc, _test_kho_node(
        [(0x600000, 2), (0x700000, 0), (0x800000, 1)]).encode())
    sub = (f' kho_test {{ PROP = {u64le(0x500000)}; blob-size = '
           f'{u64le(len(blob))}; }};\n')
    # 0x600000 order 2: preserved as such; 0x700000: not preserved at all;
    # 0x800000 order 1: preserved as two order-0 blocks
    p = image(tmp_path, dtc, {(0x500000, 0), (0x600000, 2), (0x800000, 0),
                              (0x801000, 0)}, subnodes=sub,
              extra_segs=[(0x500000, blob.ljust(PAGE, b"\0"))])
    rc, doc, ids = findings(capsys, "--core", p)
    assert rc == 1
    claims = {p for i, p in ids if i == "claim-preserved"}
    assert claims == {0x700000, 0x800000}
    # owners: test_kho has its blob, 0x600000 and the two halves of 0x800000
    assert doc["owners"]["kho_test"]["blocks"] == 4
    assert "(unclaimed)" not in doc["owners"]


def test_unknown_next_release_is_one_line(capsys):
    rc, out, err = run(capsys, "check", "--sample", "7.3", "--next", "5.10")
    assert rc == 2 and err.count("\n") == 1 and "5.10" in err


def test_next_with_incoming_is_refused(capsys):
    rc, _, err = run(capsys, "check", "--incoming", "--next", "7.3.4")
    assert rc == 2 and "--incoming" in err


def test_views_required_without_debug_info(capsys):
    rc, _, err = run(capsys, "check", "--sample", "7.3", "--views",
                     "tracker,map")
    assert rc == 2 and "debug info" in err


def test_views_difference_is_an_error(monkeypatch, tmp_path, dtc, capsys):
    from kho_inspect.check.blocks import Difference
    from kho_inspect.check.tracker_map import CheckResult, ViewRuns
    from kho_inspect.cli import check as clic
    p = image(tmp_path, dtc, {(0x600000, 0)})
    res = CheckResult([ViewRuns("tracker", [], "t"), ViewRuns("map", [], "m")],
                      [Difference("tracker", Run(0x1000, 0, 1))], [])
    monkeypatch.setattr(clic, "_kernel_state", lambda src, args, extra: 1)
    # the stand-in program has no LUO for owners' live walk to read, and no
    # kexec image loaded
    monkeypatch.setattr("kho_inspect.walk.luo.luo_sessions", lambda prog: [])
    monkeypatch.setattr("kho_inspect.walk.kexec.loaded_kernel_release",
                        lambda prog: None)
    monkeypatch.setattr("kho_inspect.walk.layout.system_ram",
                        lambda prog: [(0, 1 << 30)])
    monkeypatch.setattr("kho_inspect.walk.state.scratch_areas",
                        lambda prog: [])
    monkeypatch.setattr("kho_inspect.check.compare_views",
                        lambda prog, views: res)
    rc, out, _ = run(capsys, "check", "--core", p)
    assert rc == 1 and "only in tracker: phys 0x1000 order 0" in out
    res.differences.clear()
    rc, out, _ = run(capsys, "check", "--core", p)
    assert rc == 0
    # RAM and scratch were known: no not-checked notes about them
    assert "not-checked" not in out


def test_ram_and_scratch(monkeypatch, tmp_path, dtc, capsys):
    from kho_inspect.check.tracker_map import CheckResult
    from kho_inspect.cli import check as clic
    from kho_inspect.walk.state import ScratchArea
    p = image(tmp_path, dtc, {(0x600000, 0), (0x10000000, 0)})
    monkeypatch.setattr(clic, "_kernel_state", lambda src, args, extra: 1)
    # the stand-in program has no LUO for owners' live walk to read, and no
    # kexec image loaded
    monkeypatch.setattr("kho_inspect.walk.luo.luo_sessions", lambda prog: [])
    monkeypatch.setattr("kho_inspect.walk.kexec.loaded_kernel_release",
                        lambda prog: None)
    # RAM ends at 256 MiB: 0x10000000 is outside; scratch covers 0x600000
    monkeypatch.setattr("kho_inspect.walk.layout.system_ram",
                        lambda prog: [(0, 0x10000000)])
    monkeypatch.setattr("kho_inspect.walk.state.scratch_areas",
                        lambda prog: [ScratchArea(0, 0x400000, 0x400000),
                                      ScratchArea(1, 0x700000, 0x300000)])
    monkeypatch.setattr("kho_inspect.check.compare_views",
                        lambda prog, views: CheckResult([], [], []))
    rc, doc, ids = findings(capsys, "--core", p)
    assert rc == 1
    assert ("ram", 0x10000000) in ids and ("scratch", 0x600000) in ids
    # 0x700000 + 3 MiB is not 2 MiB-aligned in size; the areas overlap
    sl = [f for f in doc["findings"] if f["id"] == "scratch-list"]
    assert {f["phys"] for f in sl} == {0x700000}
    assert len(sl) == 2


# -- pure parts ---------------------------------------------------------------

def test_attribute_by_hand():
    cl = [Claim(0x1000, 0x1000, "a", "x"), Claim(0x1800, 0x2000, "b", "y"),
          Claim(0x10000, 0x100, "c", "z")]
    got = attribute([(0x0, 0, 8), (0x10000, 4, 2)], cl)
    assert [(o.run, o.owners) for o in got] == [
        (Run(0x0, 0, 1), ()),
        (Run(0x1000, 0, 1), ("a", "b")),     # 0x1800 lies in this page
        (Run(0x2000, 0, 2), ("b",)),         # b ends at 0x3800
        (Run(0x4000, 0, 4), ()),
        (Run(0x10000, 4, 1), ("c",)),
        (Run(0x20000, 4, 1), ()),
    ]


def test_attribute_keeps_a_huge_unclaimed_run_whole():
    got = attribute([(0x100000000, 0, 1 << 20)], [])
    assert [(o.run, o.owners) for o in got] == [
        (Run(0x100000000, 0, 1 << 20), ())]


def test_uncovered_by_hand():
    cl = [Claim(0x1000, 0x3000, "a", "x")]
    assert [(s, e) for _, s, e in uncovered(cl, [(0x2000, 0, 1)])] == [
        (0x1000, 0x2000), (0x3000, 0x4000)]
    assert uncovered(cl, [(0x0, 2, 1)]) == []        # 0x0-0x4000


def test_release_of_bzimage_and_vmlinux(tmp_path):
    bz = bytearray(0x1000)
    bz[0x202:0x206] = b"HdrS"
    bz[0x20E:0x210] = (0x300).to_bytes(2, "little")   # string at 0x500
    bz[0x500:0x520] = b"7.3.4 (root@host) #1 SMP\0"
    (tmp_path / "bz").write_bytes(bytes(bz))
    assert release_of_image(str(tmp_path / "bz")) == "7.3.4"
    elf = b"\x7fELF" + b"\0" * 100 + b"Linux version 6.18.15 (gcc) #1\0"
    (tmp_path / "vmlinux").write_bytes(elf)
    assert release_of_image(str(tmp_path / "vmlinux")) == "6.18.15"
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(KhoError, match="neither a bzImage"):
        release_of_image(str(tmp_path / "junk"))


def test_next_vmlinux_on_cli(tmp_path, capsys):
    elf = b"\x7fELF" + b"\0" * 100 + b"Linux version 7.3.4 (gcc) #1\0"
    (tmp_path / "vmlinux").write_bytes(elf)
    rc, doc, ids = findings(capsys, "--sample", "6.18", "--next-vmlinux",
                            str(tmp_path / "vmlinux"))
    assert rc == 1 and doc["next"] == "7.3.4"
    assert ("next-compatible", None) in ids


def _workload_table(items) -> bytes:
    """The kho_workload item table as vmtests/kmod/README.md defines it
    (written here from that text): "KHOWLD01", u32 version 1, u32 nr, then
    64-byte entries {u32 id, u32 kind, u64 phys, u64 nr_pages, i32 order,
    u32 state, u64 csum, u8 vmalloc_desc[16], u32 stride, u8 pad[4]}."""
    import struct
    out = b"KHOWLD01" + struct.pack("<II", 1, len(items))
    for iid, kind, phys, nr, order, state, desc, *stride in items:
        out += struct.pack("<IIQQiIQ16sI4x", iid, kind, phys, nr, order,
                           state, 0, desc, stride[0] if stride else 0)
    return out


def test_kho_workload_owners(tmp_path, dtc, capsys):
    # kinds: 1 blob, 2 folio, 3 pages, 5 vmalloc; states: 1 preserved,
    # 2 unpreserved
    bad_desc = (0x9000001).to_bytes(8, "little") + bytes(8)  # unaligned
    table = _workload_table([
        (0, 1, 0x500000, 4, 2, 1, bytes(16)),
        (1, 2, 0x600000, 8, 3, 1, bytes(16)),
        (2, 3, 0x700000, 24, -1, 1, bytes(16)),
        (3, 2, 0x800000, 1, 0, 2, bytes(16)),       # unpreserved: no claim
        (4, 5, 0x900000, 1, 0, 1, bad_desc),
    ])
    sub = (f' kho_workload {{ PROP = {u64le(0x500000)}; blob-size = '
           f'{u64le(len(table))}; }};\n')
    # the 24-page run at 0x700000 splits into order 4 + order 3 blocks
    p = image(tmp_path, dtc, {(0x500000, 2), (0x600000, 3), (0x700000, 4),
                              (0x710000, 3), (0x800000, 0)}, subnodes=sub,
              extra_segs=[(0x500000, table.ljust(PAGE, b"\0"))])
    rc, doc, ids = findings(capsys, "--core", p)
    assert doc["owners"]["kho_workload"]["blocks"] == 4
    # the unpreserved item's block is preserved, yet nobody claims it
    assert ("unclaimed", 0x800000) in ids
    # the vmalloc item's descriptor does not decode: an error naming it,
    # the other items still attributed
    sub_err = [f for f in doc["findings"] if f["id"] == "subnode"]
    assert len(sub_err) == 1 and "item 4" in sub_err[0]["message"]
    assert rc == 1


def test_kho_workload_scatter_owners(tmp_path, dtc, capsys):
    # kind 6 scatter: nr_pages order-0 blocks, one every `stride` pages
    table = _workload_table([
        (0, 1, 0x500000, 4, 2, 1, bytes(16)),
        (1, 6, 0x600000, 3, 0, 1, bytes(16), 2),    # 0x600000, 602000, 604000
        (2, 6, 0x700000, 4, 0, 1, bytes(16), 1),    # 0x700000 - 0x703fff
    ])
    sub = (f' kho_workload {{ PROP = {u64le(0x500000)}; blob-size = '
           f'{u64le(len(table))}; }};\n')
    blocks = {(0x500000, 2), (0x600000, 0), (0x602000, 0), (0x604000, 0),
              (0x601000, 0)}                         # a hole block: nobody's
    blocks |= {(0x700000 + i * PAGE, 0) for i in range(4)}
    p = image(tmp_path, dtc, blocks, subnodes=sub,
              extra_segs=[(0x500000, table.ljust(PAGE, b"\0"))])
    rc, doc, ids = findings(capsys, "--core", p)
    assert doc["owners"]["kho_workload"]["blocks"] == 1 + 3 + 4
    assert ("unclaimed", 0x601000) in ids
    assert not [i for i in ids if i[0] == "unclaimed" and i[1] != 0x601000]


def test_fdt_from_a_file_is_located_and_owned(tmp_path, dtc, capsys):
    """An FDT read from a file (as debugfs gives it) has no address: the
    preserved page holding it is found, and owned by "kho"."""
    p = image(tmp_path, dtc, {(0x600000, 0)})
    rc, out, _ = run(capsys, "fdt", "--core", p, "--json")
    from kho_inspect.image import read_image_meta
    from kho_inspect.memory import open_core
    prog = open_core(p)
    blob = prog.read(FDT_PHYS, json.loads(out)["totalsize"], True)
    (tmp_path / "fdt").write_bytes(blob)
    rc, doc, ids = findings(capsys, "--core", p, "--fdt",
                            str(tmp_path / "fdt"))
    assert doc["owners"].get("kho") == {"blocks": 1, "bytes": PAGE}
    assert ("unclaimed", FDT_PHYS) not in ids
    assert read_image_meta(p)["fdt_phys"] == FDT_PHYS


# -- next-numa: a page run across a node boundary (docs/abi.md section 5.4)

MIB = 1 << 20
#: node 0 ends at 1028 MiB, node 1 goes on to 2 GiB (pfns)
NODES = [(0, 1, (1028 * MIB) >> 12), (1, (1028 * MIB) >> 12, (2048 * MIB) >> 12)]


def test_split_pages_by_node():
    from kho_inspect.abi.common import split_pages
    pfn = (1024 * MIB) >> 12                   # 2048 pages from 1024 MiB

    def node_of(p):
        return 0 if p < (1028 * MIB) >> 12 else 1
    # the natural split: one order-11 block across the boundary
    assert split_pages(pfn, 2048) == [(pfn, 11)]
    # 7.1+ kho_preserve_pages: two order-10 blocks, one per node
    assert split_pages(pfn, 2048, node_of) == [(pfn, 10), (pfn + 1024, 10)]
    assert split_pages(3, 5) == [(3, 0), (4, 2)]


def _numa(runs, claim_pages=2048):
    from kho_inspect.check.next_kernel import numa_findings
    from kho_inspect.check.owners import Claim
    c = Claim(1024 * MIB, claim_pages << 12, "kho_workload", "item 3 numa")
    return numa_findings("7.3.4", [c], runs, NODES)


def test_next_numa_names_the_block_the_restore_steps_over():
    # what 7.3's kho_preserve_pages leaves in the map for that run
    (f,) = _numa([(1024 * MIB, 10, 1), (1028 * MIB, 10, 1)])
    assert (f.id, f.phys, f.order, f.count, f.owner) == (
        "next-numa", 1028 * MIB, 10, 1, "kho_workload")
    assert "steps over 0x40400000 order 10" in f.message


def test_next_numa_quiet_when_the_walk_finds_every_block():
    # a map holding the natural split (6.18's preserve) restores whole
    assert _numa([(1024 * MIB, 11, 1)]) == []
    # a run that stays on one node is not looked at
    from kho_inspect.check.next_kernel import numa_findings
    from kho_inspect.check.owners import Claim
    assert numa_findings("7.3.4", [Claim(512 * MIB, 8 << 20, "x", "y")],
                         [(512 * MIB, 11, 1)], NODES) == []


def test_next_numa_walk_that_misses_a_head_fails():
    # 1022-1030 MiB: the restore's walk goes 1022 MiB order 9, then 1024
    # MiB order 10 (6 MiB left); a map without a block head at 1024 MiB
    # (here: nothing there) makes kho_restore_page return NULL there
    runs = [(1022 * MIB, 9, 1), (1028 * MIB, 10, 1)]
    from kho_inspect.check.next_kernel import numa_findings
    from kho_inspect.check.owners import Claim
    c = Claim(1022 * MIB, (1030 - 1022) * MIB, "kho_workload", "item 4")
    (f,) = numa_findings("7.3.4", [c], runs, NODES)
    assert f.phys == 1024 * MIB and "no block head" in f.message


def test_overlap_sweep_nested_blocks():
    """A big block holding two small ones that are not adjacent: both are
    overlaps of the big one (the sweep keeps the farthest end, not the last
    block's), and a block that starts where another ends is not one."""
    from kho_inspect.check.invariants import OwnerIndex, block_findings
    big = 0x1000000                             # order 4: 16 pages
    runs = [(big, 4, 1), (big + 0x2000, 0, 1), (big + 0x9000, 0, 1),
            (big + 0x10000, 0, 1)]              # the last one: adjacent
    got = [(f.phys, f.order) for f in block_findings(runs, OwnerIndex([]))
           if f.id == "overlap"]
    assert got == [(big + 0x2000, 0), (big + 0x9000, 0)]
    f = [f for f in block_findings(runs, OwnerIndex([]))
         if f.id == "overlap"][-1]
    assert f"order 4 ending at 0x{big + 0x10000:x}" in f.message


def test_overlap_sweep_counts_every_block_of_a_run():
    # 3 order-1 blocks from 0x2000000 reach 0x2006000: 0x2005000 is inside
    # the run's third block; 0x2006000 is past it
    from kho_inspect.check.invariants import OwnerIndex, block_findings
    runs = [(0x2000000, 1, 3), (0x2005000, 0, 1), (0x2006000, 0, 2)]
    got = [f.phys for f in block_findings(runs, OwnerIndex([]))
           if f.id == "overlap"]
    assert got == [0x2005000]


def test_next_numa_run_starting_inside_a_map_run():
    # the map holds 1020-1032 MiB as three order-10 blocks (1020, 1024,
    # 1028); a client claims 1024-1032 MiB, across the node boundary at
    # 1028: the restore's walk takes one order-11 step from 1024 MiB and
    # steps over 1028 MiB. The block at 1020 MiB, before the claim, is
    # not the claim's and is not named.
    (f,) = _numa([(1020 * MIB, 10, 3)])
    assert (f.phys, f.order, f.count) == (1028 * MIB, 10, 1)
    assert "steps over 0x40400000 order 10: it stays" in f.message
    assert "0x3fc00000" not in f.message


def test_next_numa_claim_starting_between_heads_fails():
    # a claim from 1022 MiB, inside the order-10 block at 1020 MiB: the
    # walk's first step finds no block head there (NULL)
    from kho_inspect.check.next_kernel import numa_findings
    from kho_inspect.check.owners import Claim
    c = Claim(1022 * MIB, 8 * MIB, "kho_workload", "item 5")
    (f,) = numa_findings("7.3.4", [c], [(1020 * MIB, 10, 3)], NODES)
    assert f.phys == 1022 * MIB and "no block head" in f.message


def test_next_numa_quiet_when_the_last_page_is_a_block_of_its_own():
    # 2047 pages from 1024 MiB: order 10 on node 0, then 1023 pages from
    # 1028 MiB as orders 9, 8, ... 0, the last one on the claim's last
    # page; the restore's walk takes the same steps: nothing to report
    runs, p = [(1024 * MIB, 10, 1)], 1028 * MIB
    for o in range(9, -1, -1):
        runs.append((p, o, 1))
        p += 4096 << o
    assert p == 1024 * MIB + 2047 * 4096
    assert _numa(runs, claim_pages=2047) == []


def test_next_numa_message_names_nodes_and_where_it_crosses():
    (f,) = _numa([(1024 * MIB, 10, 1), (1028 * MIB, 10, 1)])
    assert f.message.startswith(
        "0x40000000 +2048 pages (kho_workload item 3 numa) crosses from "
        "node 0 to node 1 at 0x40400000: 7.3.4's kho_restore_pages walks "
        "it without the node split: it steps over 0x40400000 order 10: it "
        "stays reserved and marked")


def test_next_numa_lists_four_blocks_and_counts_the_rest():
    # past the boundary the map holds eight order-7 blocks (512 KiB):
    # the walk's one order-11 step goes over all of them
    (f,) = _numa([(1024 * MIB, 10, 1), (1028 * MIB, 7, 8)])
    assert (f.phys, f.order, f.count) == (1028 * MIB, 7, 8)
    assert ("steps over 0x40400000 order 7, 0x40480000 order 7, "
            "0x40500000 order 7, 0x40580000 order 7 and 4 more: they stay "
            "reserved") in f.message
    (f,) = _numa([(1024 * MIB, 10, 1), (1028 * MIB, 8, 4)])
    assert f.count == 4 and " more" not in f.message
    assert "order 8: they stay" in f.message


def test_next_numa_only_the_claims_pages():
    # the map run goes on past the claim (1024-1040 MiB): the heads at
    # 1032 and 1036 MiB are not the claim's and are not named
    (f,) = _numa([(1024 * MIB, 10, 4)])
    assert (f.phys, f.count) == (1028 * MIB, 1)
    assert "0x40800000" not in f.message


def test_next_numa_skips_what_does_not_cross_or_is_a_folio():
    from kho_inspect.check.next_kernel import numa_findings
    from kho_inspect.check.owners import Claim
    runs = [(1020 * MIB, 10, 3)]
    # ends exactly at the boundary (1020-1028 MiB): one node
    assert numa_findings("7.3.4", [Claim(1020 * MIB, 8 * MIB, "x", "y")],
                         runs, NODES) == []
    # a folio (a claim with an order) is restored whole by
    # kho_restore_folio, not walked page run by page run
    assert numa_findings("7.3.4", [Claim(1024 * MIB, 8 * MIB, "x", "y",
                                         11)], runs, NODES) == []

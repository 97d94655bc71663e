"""Hand-checked maps of every generation, decoded from drgn programs built
over hand-laid physical memory. The expected values are worked out in the
comments, not produced by an encoder."""

import pytest
from hypothesis import given, strategies as st

from conftest import run_dtc
from abi_encode import encode_radix, encode_v1
from helpers import PAGE, bitmap, chunk_page, kho_dts, mem, table, u64le
from kho_inspect.decode import decode_handover, read_fdt_at
from kho_inspect.decode.handover import check_bitmap_bytes
from kho_inspect.decode.chunks import decode_chunks
from kho_inspect.decode.radix import decode_radix
from kho_inspect.errors import KhoError, MemoryFault
from kho_inspect.ranges import Run, blocks, coalesce


def v1_hand_map(bitmap_bytes):
    # chunk A (0x10000): order 0, one entry: phys_start 0, bitmap at 0x20000
    #   bits 0,1,2 -> pfns 0-2 -> Run(0x0, 0, 3); bit 100 -> 0x64000
    #   bit 4101 sits beyond 512 bytes: only a 4 KiB bitmap sees it:
    #   4101 * 4096 = 0x1005000
    # chunk B (0x11000): order 9, phys_start 0x1000000000 (= 32768 bits *
    #   4096 << 9 = 2^36: index 1 of 4 KiB bitmaps, index 8 of 512-byte
    #   ones, so valid for both sizes), bitmap at 0x21000
    #   bits 1 and 3 -> 0x1000000000 + 1<<21 = 0x1000200000,
    #   + 3<<21 = 0x1000600000
    segs = [
        (0x10000, chunk_page(0x11000, 0, [(0, 0x20000)])),
        (0x11000, chunk_page(0, 9, [(0x1000000000, 0x21000)])),
        (0x20000, bitmap({0, 1, 2, 100, 4101}, PAGE)),
        (0x21000, bitmap({1, 3}, PAGE)),
    ]
    return decode_chunks(mem(segs), 0x10000, bitmap_bytes)


def test_v1_512_byte_bitmaps():
    m = v1_hand_map(512)
    assert coalesce(m.runs) == [Run(0x0, 0, 3), Run(0x64000, 0, 1),
                                Run(0x1000200000, 9, 1),
                                Run(0x1000600000, 9, 1)]
    assert [(p.phys, p.kind) for p in m.pages] == [
        (0x10000, "chunk"), (0x20000, "bitmap"), (0x11000, "chunk"),
        (0x21000, "bitmap")]


def test_v1_4k_bitmaps_see_more_bits():
    m = v1_hand_map(4096)
    assert Run(0x1005000, 0, 1) in coalesce(m.runs)
    assert len(coalesce(m.runs)) == 5


@pytest.mark.parametrize("order, phys_start, nbytes, ok", [
    # 512-byte bitmaps: 4096 bits, so multiples of 4096 << (order + 12)
    (0, 1 << 24, 512, True), (9, 1 << 33, 512, True),
    (0, 1 << 23, 512, False), (0, (1 << 24) + PAGE, 512, False),
    # 4 KiB bitmaps: 32768 bits, so multiples of 32768 << (order + 12)
    (0, 1 << 27, 4096, True), (9, 1 << 36, 4096, True),
    (0, 1 << 24, 4096, False), (9, 1 << 33, 4096, False),
    # order 40, 4 KiB bitmaps: the only multiple of 2^67 below 2^64 is 0
    (40, 0, 4096, True), (40, 1 << 63, 4096, False),
])
def test_v1_phys_start_alignment(order, phys_start, nbytes, ok):
    # kho_mem_serialize writes phys_start = (xa index * PRESERVE_BITS)
    # << (order + 12) (docs/abi.md section 4.2)
    segs = [(0x10000, chunk_page(0, order, [(phys_start, 0x20000)])),
            (0x20000, bitmap({0}, PAGE))]
    if ok:
        m = decode_chunks(mem(segs), 0x10000, nbytes)
        assert m.runs == [Run(phys_start, order, 1)]
        return
    with pytest.raises(KhoError, match=f"kho-v1 chunk #0 at phys 0x10000: "
                       f"entry 0: phys_start 0x{phys_start:x} is not a "
                       "multiple of") as e:
        decode_chunks(mem(segs), 0x10000, nbytes)
    assert "\n" not in str(e.value)


def test_v1_512_byte_era_map_read_as_4k_is_refused():
    # a map a 6.16/6.17 kernel wrote: order 9, xa index 1 of 512-byte
    # bitmaps -> phys_start 4096 << 21 = 0x200000000, not a multiple of
    # 32768 << 21 = 0x1000000000
    segs = [(0x10000, chunk_page(0, 9, [(0x200000000, 0x20000)])),
            (0x20000, bitmap({1}, 512).ljust(PAGE, b"\0"))]
    assert decode_chunks(mem(segs), 0x10000, 512).runs == [
        Run(0x200200000, 9, 1)]
    with pytest.raises(KhoError, match="phys_start 0x200000000 is not a "
                       "multiple of 0x1000000000"):
        decode_chunks(mem(segs), 0x10000, 4096)


def test_v1_zero_map_is_not_finalized():
    m = decode_chunks(mem([]), 0, 4096)
    assert m.state == "not-finalized" and m.runs == []


def radix_hand_map():
    # block (0x1000000, order 0): key = 1<<52 | 0x1000
    #   level 5 index = key>>51 = 2; levels 4..1 = 0; leaf bit = 0x1000 = 4096
    #   bits 4096,4097,4098 -> Run(0x1000000, 0, 3)
    # block (0x40000000, order 9): key = 1<<43 | (0x40000000>>21 = 512)
    #   level 5 = 0; level 4 = (key>>42)&511 = 2; levels 3..1 = 0; bit 512
    segs = [
        (0x100000, table({2: 0x101000, 0: 0x201000})),     # root (level 5)
        (0x101000, table({0: 0x102000})),                  # L4
        (0x102000, table({0: 0x103000})),                  # L3
        (0x103000, table({0: 0x104000})),                  # L2
        (0x104000, table({0: 0x105000})),                  # L1
        (0x105000, bitmap({4096, 4097, 4098}, PAGE)),      # leaf
        (0x201000, table({2: 0x202000})),
        (0x202000, table({0: 0x203000})),
        (0x203000, table({0: 0x204000})),
        (0x204000, table({0: 0x205000})),
        (0x205000, bitmap({512}, PAGE)),
    ]
    return segs


def test_radix_hand_checked():
    m = decode_radix(mem(radix_hand_map()), 0x100000, "kho-v3")
    assert coalesce(m.runs) == [Run(0x1000000, 0, 3), Run(0x40000000, 9, 1)]
    assert sum(p.kind == "radix-leaf" for p in m.pages) == 2
    assert sum(p.kind == "radix-table" for p in m.pages) == 9


def test_radix_huge_orders_in_zero_prefix_leaf():
    # order 40 block at 0: key = 1<<12 -> all table indices 0, leaf bit 4096
    # order 52 would be key 1 (bit 1 = 4096<<52 overflows) - tested below
    segs = [(0x100000, table({0: 0x101000})), (0x101000, table({0: 0x102000})),
            (0x102000, table({0: 0x103000})), (0x103000, table({0: 0x104000})),
            (0x104000, table({0: 0x105000})),
            (0x105000, bitmap({1 << 12, (1 << 12) | 1}, PAGE))]
    m = decode_radix(mem(segs), 0x100000, "kho-v4")
    assert m.runs == [Run(0, 40, 1), Run(1 << 52, 40, 1)]


@pytest.mark.parametrize("case, msg", [
    ("cycle", "loops back"),
    ("num_elms", "num_elms 256 exceeds"),
    ("order", "order 52"),
    ("repeat", "referenced twice"),
    ("missing", "cannot read bitmap"),
])
def test_v1_bad_input(case, msg):
    segs = {
        "cycle": [(0x10000, chunk_page(0x10000, 0, []))],
        "num_elms": [(0x10000, chunk_page(0, 0, [], num=256))],
        "order": [(0x10000, chunk_page(0, 52, [(0, 0x20000)])),
                  (0x20000, bitmap({0}, PAGE))],
        "repeat": [(0x10000, chunk_page(0, 0, [(0, 0x20000), (0, 0x20000)])),
                   (0x20000, bitmap({0}, PAGE))],
        "missing": [(0x10000, chunk_page(0, 0, [(0, 0x90000)]))],
    }[case]
    with pytest.raises(KhoError, match=msg):
        decode_chunks(mem(segs), 0x10000, 4096)


def test_v1_overflowing_range():
    # order 40, phys_start 0 (the only aligned one): bit 4096 is 4096 << 52
    # = 2^64
    segs = [(0x10000, chunk_page(0, 40, [(0, 0x20000)])),
            (0x20000, bitmap({4095, 4096}, PAGE))]
    with pytest.raises(KhoError, match="beyond 2"):
        decode_chunks(mem(segs), 0x10000, 4096)


@pytest.mark.parametrize("case, msg", [
    ("wide", "entry 4 is set"),
    ("shared", "reached twice"),
    ("key1", "order 52"),
    ("key0", "key 0"),
    ("outside", "cannot read"),
    ("unaligned", r"root at phys 0x100000: entry 2 -> 0x101008 is not "
                  "page-aligned"),
    ("shared-leaf", r"radix-table 2/0/0/1 at phys 0x106000: entry 0 -> "
                    "0x105000 is a node reached twice"),
    ("cycle", r"radix-table 0/0 at phys 0x102000: entry 3 -> 0x100000 is a "
              "node reached twice"),
])
def test_radix_bad_input(case, msg):
    chain = [(0x101000, table({0: 0x102000})), (0x102000, table({0: 0x103000})),
             (0x103000, table({0: 0x104000})), (0x104000, table({0: 0x105000}))]
    segs = {
        "wide": [(0x100000, table({4: 0x101000}))],
        "shared": [(0x100000, table({0: 0x100000}))],
        "key1": [(0x100000, table({0: 0x101000}))] + chain
                + [(0x105000, bitmap({1}, PAGE))],
        "key0": [(0x100000, table({0: 0x101000}))] + chain
                + [(0x105000, bitmap({0}, PAGE))],
        "outside": [(0x100000, table({1: 0xdead000}))],
        # a table pointer 8 bytes into a page: an unaligned node would
        # overlap two pages and let one page be decoded many times
        "unaligned": [(0x100000, table({2: 0x101008})),
                      (0x101000, bytes(PAGE))],
        # L2 0x103000 has two L1 tables (entries 0, 1) whose entry 0 is the
        # same leaf page 0x105000
        "shared-leaf": [(0x100000, table({2: 0x101000})),
                        (0x101000, table({0: 0x102000})),
                        (0x102000, table({0: 0x103000})),
                        (0x103000, table({0: 0x104000, 1: 0x106000})),
                        (0x104000, table({0: 0x105000})),
                        (0x106000, table({0: 0x105000})),
                        (0x105000, bitmap({7}, PAGE))],
        # L3 points back at the root
        "cycle": [(0x100000, table({0: 0x101000})),
                  (0x101000, table({0: 0x102000})),
                  (0x102000, table({3: 0x100000}))],
    }[case]
    with pytest.raises(KhoError, match=msg):
        decode_radix(mem(segs), 0x100000, "kho-v3")


def test_radix_unaligned_root():
    segs = [(0x100000, table({}))]
    with pytest.raises(KhoError, match="radix root 0x100800 is not 4096-byte "
                                       "aligned"):
        decode_radix(mem(segs), 0x100800, "kho-v3")


def test_radix_work_is_bounded_by_distinct_pages():
    # every entry of an L4 table names the same L3 page: a walk that
    # followed them would decode that subtree 512 times from 4 pages
    segs = [(0x100000, table({2: 0x101000})),
            (0x101000, table({i: 0x102000 for i in range(512)})),
            (0x102000, table({0: 0x103000})),
            (0x103000, bitmap(range(4096), PAGE))]
    reads = []
    m = mem(segs)
    real = m.read

    def counting(phys, size, what):
        reads.append(phys)
        return real(phys, size, what)
    m.read = counting
    with pytest.raises(KhoError, match="entry 510 -> 0x102000 is a node "
                                       "reached twice"):
        decode_radix(m, 0x100000, "kho-v3")
    assert reads == [0x100000, 0x101000]   # refused before any descent


def test_fault_names_address():
    with pytest.raises(MemoryFault, match="0x123000"):
        decode_radix(mem([]), 0x123000, "kho-v3")


def test_handover_end_to_end(dtc):
    segs = radix_hand_map()
    blob = run_dtc(dtc, kho_dts("kho-v3", 0x100000, f"""
     kho_test {{ preserved-data = {u64le(0x300000)}; blob-size = {u64le(4096)}; }};
     kexec-metadata {{ preserved-data = {u64le(0x301000)}; blob-size = {u64le(73)}; }};
    """))
    meta = (1).to_bytes(4, "little") + b"7.1.13".ljust(65, b"\0") + \
        (3).to_bytes(4, "little")
    segs = segs + [(0x301000, meta.ljust(PAGE, b"\0"))]
    h = decode_handover(blob, mem(segs))
    assert h.generation == "kho-v3"
    assert coalesce(h.map.runs)[0] == Run(0x1000000, 0, 3)
    t, m = h.subnodes
    assert (t.name, t.phys, t.size) == ("kho_test", 0x300000, 4096)
    assert "cannot read" in t.error          # blob not in memory: recorded
    assert m.content == {"format": "raw", "version": 1,
                         "previous_release": "7.1.13", "kexec_count": 3}


def test_unknown_compatible(dtc):
    blob = run_dtc(dtc, kho_dts("kho-v9", 0))
    with pytest.raises(KhoError, match="unknown KHO compatible 'kho-v9'.*"
                                       "kho-v1, kho-v2, kho-v3, kho-v4"):
        decode_handover(blob)


def test_v1_needs_bitmap_size(dtc):
    blob = run_dtc(dtc, kho_dts("kho-v1", 0x10000))
    with pytest.raises(KhoError, match="bitmap size"):
        decode_handover(blob, mem([]))


block_sets = st.sets(st.tuples(st.integers(0, (1 << 40) - 1),
                               st.integers(0, 18)), max_size=60).map(
    lambda s: {((p >> (12 + o)) << (12 + o), o) for p, o in s})


@given(block_sets, st.sampled_from([512, 4096]))
def test_property_v1_roundtrip(bset, nbytes):
    segs, phys = encode_v1(bset, nbytes)
    m = decode_chunks(mem(segs), phys, nbytes)
    assert set(blocks(m.runs)) == bset


@given(block_sets)
def test_property_radix_roundtrip(bset):
    segs, root = encode_radix(bset)
    m = decode_radix(mem(segs), root, "kho-v4")
    assert set(blocks(m.runs)) == bset
    assert len(list(blocks(coalesce(m.runs)))) == len(bset)


def test_memblock_reserve_mem_blob(dtc):
    """memblock's sub-FDT (memblock-v1, one reserve-mem-v1 child per
    reserve_mem= region, start/size as raw LE u64), built by dtc."""
    sub = run_dtc(dtc, f'''/dts-v1/; / {{ compatible = "memblock-v1";
        trace {{ compatible = "reserve-mem-v1"; start = {u64le(0x7f000000)};
                 size = {u64le(0x100000)}; }}; }};'''.encode())
    blob = run_dtc(dtc, kho_dts("kho-v1", 0, f"memblock {{ fdt = "
                                              f"{u64le(0x500000)}; }};"))
    h = decode_handover(blob, mem([(0x500000, sub.ljust(PAGE, b"\0"))]),
                        bitmap_bytes=4096)
    (m,) = h.subnodes
    assert (m.name, m.phys, m.size) == ("memblock", 0x500000, len(sub))
    assert m.content == {"format": "fdt", "compatible": "memblock-v1",
                         "regions": [{"name": "trace", "start": 0x7f000000,
                                      "size": 0x100000}]}
    assert h.map.state == "not-finalized"


# -- composite compatibles, the root FDT size, client compatibles ----------

def test_composite_compatible_decodes_base_and_lists_tokens(dtc):
    # newer trees append ";token" features to the base (docs/abi.md 2.4)
    blob = run_dtc(dtc, kho_dts("kho-v4;radix-v1;vmalloc-v1", 0x100000))
    h = decode_handover(blob, mem(radix_hand_map()))
    assert h.generation == "kho-v4"
    assert h.compat_tokens == ["radix-v1", "vmalloc-v1"]
    assert coalesce(h.map.runs) == [Run(0x1000000, 0, 3),
                                    Run(0x40000000, 9, 1)]


def test_plain_compatible_has_no_tokens(dtc):
    h = decode_handover(run_dtc(dtc, kho_dts("kho-v3", 0x100000)))
    assert (h.generation, h.compat_tokens) == ("kho-v3", [])


@pytest.mark.parametrize("compat, msg", [
    ("kho-v9;radix-v1", "unknown KHO compatible 'kho-v9;radix-v1' "
                        r"\(base 'kho-v9'; known: kho-v1, kho-v2"),
    # a known token does not rescue an unknown base
    ("radix-v1;kho-v4", "base 'radix-v1'"),
    ("kho-v4radix", "unknown KHO compatible 'kho-v4radix' \\(known:"),
])
def test_unknown_base_is_refused(dtc, compat, msg):
    blob = run_dtc(dtc, kho_dts(compat, 0x100000))
    with pytest.raises(KhoError, match=msg) as e:
        decode_handover(blob, mem(radix_hand_map()))
    assert "\n" not in str(e.value)


def test_cli_composite_compatible_and_unknown_base(tmp_path, dtc, capsys):
    import json
    from kho_inspect.cli import main
    from kho_inspect.image import write_image
    fdt_phys = 0x400000
    img = str(tmp_path / "img.core")
    blob = run_dtc(dtc, kho_dts("kho-v4;radix-v1", 0x100000))
    write_image(img, radix_hand_map() + [(fdt_phys, blob.ljust(PAGE, b"\0"))],
                {"generation": "kho-v4", "fdt_phys": fdt_phys,
                 "release": "test"})
    assert main(["map", "--core", img, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["generation"] == "kho-v4"
    assert [(r["phys"], r["order"], r["count"]) for r in doc["ranges"]] == [
        (0x1000000, 0, 3), (0x40000000, 9, 1)]
    bad = tmp_path / "bad.dtb"
    bad.write_bytes(run_dtc(dtc, kho_dts("kho-v9;radix-v1", 0x100000)))
    assert main(["fdt", "--fdt", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "unknown KHO compatible 'kho-v9;radix-v1'" in err


def test_root_fdt_larger_than_a_page_is_refused(dtc):
    blob = bytearray(run_dtc(dtc, kho_dts("kho-v3", 0x100000)))
    # claim 8 KiB (free space after the blocks is legal FDT padding)
    blob[4:8] = (2 * PAGE).to_bytes(4, "big")
    blob = bytes(blob).ljust(2 * PAGE, b"\0")
    with pytest.raises(KhoError, match="totalsize 8192 exceeds 4096 bytes"):
        decode_handover(blob)
    with pytest.raises(KhoError, match="totalsize 8192 exceeds 4096"):
        read_fdt_at(mem([(0x400000, blob)]), 0x400000, "root FDT")


def test_client_fdt_with_another_compatible_is_not_decoded(dtc):
    sub = run_dtc(dtc, b'/dts-v1/; / { compatible = "kho-test-v2"; '
                       b'magic = <0x21484f4b>; };')
    blob = run_dtc(dtc, kho_dts("kho-v1", 0, f"kho_test {{ fdt = "
                                             f"{u64le(0x500000)}; }};"))
    h = decode_handover(blob, mem([(0x500000, sub.ljust(PAGE, b"\0"))]),
                        bitmap_bytes=4096)
    (t,) = h.subnodes
    assert "FDT compatible 'kho-test-v2', not 'kho-test-v1'" in t.error
    assert t.content["compatible"] == "kho-test-v2"
    assert t.content["tree"]["props"]["magic"]["hex"] == "21484f4b"


@pytest.mark.parametrize("given, noted, ok", [
    (512, 4096, False), (4096, 512, False), (512, 512, True),
    (4096, None, True)])
def test_explicit_bitmap_size_must_match_the_image_note(given, noted, ok):
    if ok:
        assert check_bitmap_bytes(given, noted) == given
        return
    with pytest.raises(KhoError, match=f"--bitmap-bytes {given} contradicts "
                                       f"the image note.*{noted}-byte") as e:
        check_bitmap_bytes(given, noted)
    assert "\n" not in str(e.value)


def test_512_byte_sample_decoded_as_4k_is_refused():
    # 6.17.8 wrote 512-byte bitmaps (its image note and tests/releases.py say
    # so); read as 4096 its first order-0 entry, xa index 2 -> phys_start
    # 2 * 4096 << 12 = 0x2000000, is not a multiple of 32768 << 12
    from kho_inspect import samples
    from kho_inspect.cli.source import open_source

    class A:
        core, symbols, sample = None, None, "6.17"
    src = open_source(A)
    blob = read_fdt_at(src.memory(), src.meta["fdt_phys"], "root FDT")
    assert decode_handover(blob, src.memory(), bitmap_bytes=512).map.runs
    with pytest.raises(KhoError, match="phys_start 0x2000000 is not a "
                       "multiple of 0x8000000"):
        decode_handover(blob, src.memory(), bitmap_bytes=4096)
    assert samples.path("6.17").endswith("6.17.8.core")


# -- client blobs: the identifiers their readers check -----------------------

def _memblock_handover(dtc, child_compat):
    sub = run_dtc(dtc, f'''/dts-v1/; / {{ compatible = "memblock-v1";
        good {{ compatible = "reserve-mem-v1"; start = {u64le(0x7f000000)};
                size = {u64le(0x100000)}; }};
        odd {{ {child_compat} start = {u64le(0x7e000000)};
               size = {u64le(0x1000)}; }}; }};'''.encode())
    blob = run_dtc(dtc, kho_dts("kho-v1", 0, f"memblock {{ fdt = "
                                              f"{u64le(0x500000)}; }};"))
    return decode_handover(blob, mem([(0x500000, sub.ljust(PAGE, b"\0"))]),
                           bitmap_bytes=4096)


@pytest.mark.parametrize("child_compat, error", [
    ('compatible = "reserve-mem-v1";', None),
    ('compatible = "reserve-mem-v2";', "sub-node 'memblock' blob at phys "
     "0x500000/odd: compatible 'reserve-mem-v2', not 'reserve-mem-v1'"),
    ("", "sub-node 'memblock' blob at phys 0x500000/odd: no compatible, "
     "not 'reserve-mem-v1'"),
])
def test_memblock_child_compatible_is_checked(dtc, child_compat, error):
    (m,) = _memblock_handover(dtc, child_compat).subnodes
    assert m.error == error
    if error is None:
        assert [r["name"] for r in m.content["regions"]] == ["good", "odd"]


def _test_kho_handover(dtc, magic):
    # 6.17 layout: folios_info inline, one entry: phys 0x600000 | order 2
    sub = run_dtc(dtc, f'''/dts-v1/; / {{ compatible = "kho-test-v1";
        magic = [{magic}];
        data {{ nr_folios = [01 00 00 00]; csum = [00 00 00 00];
                folios_info = {u64le(0x600002)}; }}; }};'''.encode())
    blob = run_dtc(dtc, kho_dts("kho-v1", 0, f"kho_test {{ fdt = "
                                              f"{u64le(0x500000)}; }};"))
    return decode_handover(blob, mem([(0x500000, sub.ljust(PAGE, b"\0"))]),
                           bitmap_bytes=4096)


def test_test_kho_magic_is_checked(dtc):
    # "KHO!" = 0x4b484f21, a u32 in the kernel's (little-endian) order
    (t,) = _test_kho_handover(dtc, "21 4f 48 4b").subnodes
    assert t.error is None
    assert t.content["magic"] == 0x4B484F21
    assert t.content["folios"] == [{"phys": 0x600000, "order": 2}]
    (t,) = _test_kho_handover(dtc, "4b 48 4f 21").subnodes
    assert t.error == ("sub-node 'kho_test' blob at phys 0x500000: magic "
                       "0x214f484b, not 0x4b484f21 (\"KHO!\")")


def _kexec_metadata(version: int) -> bytes:
    # packed {u32 version; char previous_release[65]; u32 kexec_count}
    return (version.to_bytes(4, "little") + b"7.3.4".ljust(65, b"\0")
            + (2).to_bytes(4, "little"))


@pytest.mark.parametrize("version, error", [
    (1, None),
    (2, "sub-node 'kexec-metadata' blob at phys 0x500000: version 2, not 1"),
    (0, "sub-node 'kexec-metadata' blob at phys 0x500000: version 0, not 1"),
])
def test_kexec_metadata_version_is_checked(dtc, version, error):
    blob = run_dtc(dtc, kho_dts("kho-v3", 0x100000,
                                f"kexec-metadata {{ preserved-data = "
                                f"{u64le(0x500000)}; blob-size = "
                                f"{u64le(73)}; }};"))
    h = decode_handover(blob, mem([(0x500000, _kexec_metadata(version)
                                    .ljust(PAGE, b"\0"))]), with_map=False)
    (k,) = h.subnodes
    assert k.error == error
    if error is None:
        assert (k.content["previous_release"], k.content["kexec_count"]) == (
            "7.3.4", 2)


def test_merge_intervals_by_hand():
    from kho_inspect.ranges import merge_intervals
    assert merge_intervals([]) == []
    # unsorted; touching and overlapping merge; a gap does not; a span
    # inside another disappears
    assert merge_intervals([(10, 20), (0, 5), (5, 8), (15, 30), (31, 40),
                            (32, 33)]) == [(0, 8), (10, 30), (31, 40)]


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 20)),
                max_size=30))
def test_merge_intervals_covers_the_same_points(spans):
    from kho_inspect.ranges import merge_intervals
    spans = [(s, s + n) for s, n in spans]
    out = merge_intervals(spans)
    points = {x for s, e in spans for x in range(s, e)}
    assert {x for s, e in out for x in range(s, e)} == points
    # sorted, disjoint and not touching
    assert all(a[1] < b[0] for a, b in zip(out, out[1:]))

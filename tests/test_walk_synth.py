"""The walker against kernel DWARF over hand-made memory.

For every kernel of tests/variants.py - the synthetic variants compiled
from tests/kdwarf/kernel.c (always), and the vmtest builds (a skip naming
the build when the cache lacks it): the tracker of that generation is
built by hand from known blocks, walked with the walker, and cross-checked
against the reference decoder.
"""

import struct

import drgn
import pytest

from conftest import run_dtc
from abi_encode import encode_v1
from helpers import kho_dts
from releases import release as abi_release
import variants
from walk_synth import PAGE_OFFSET, SynthKernel

from kho_inspect.abi.common import KHO_PAGE_MAGIC
from kho_inspect.check import compare_views
from kho_inspect.errors import KhoError
from kho_inspect.ranges import coalesce
from kho_inspect.walk import incoming as inc
from kho_inspect.walk.state import (incoming_state, kexec_image_kho,
                                    kho_enabled, scratch_areas)
from kho_inspect.walk.tracker import outgoing_tracker, tracker_layout
from kho_inspect.walk.views import status_view, tracker_view

BLOCKS = [(0x20000000, 0), (0x20001000, 0), (0x20002000, 0),
          (0x20200000, 9), (0x20400000, 10), (0x40000000, 18),
          (0x21000000, 3)]


@pytest.fixture(params=variants.params(), scope="module")
def dwarf(request, kdwarf):
    return variants.resolve(request.param, kdwarf)


@pytest.fixture
def kernel(dwarf, tmp_path):
    k = SynthKernel.of(dwarf, tmp_path)
    k.abi = abi_release(dwarf.release)  # what the ABI text says (the oracle)
    k.dwarf = dwarf
    return k


def _generation(k):
    return k.abi.generation


def _radix(k):
    return k.abi.generation != "kho-v1"


def _map_phys(k):
    """Serialize the tracker as the FDT map: radix = the tracker itself;
    kho-v1 = a chunk list built from the same blocks."""
    if _radix(k):
        return k.prog["kho_out"].radix_tree.root.value_() - PAGE_OFFSET
    nbytes = drgn.sizeof(k.prog.type("struct kho_mem_phys_bits"))
    segs, mphys = encode_v1(BLOCKS, nbytes, base=0x70000000)
    for phys, data in segs:
        k.write_phys(phys, data)
    return mphys


def test_layout_probe(kernel):
    """The walker finds the tracker where the ABI text says this release
    keeps it (tests/releases.py), and so does the synthetic kernel."""
    layout, _, expr = tracker_layout(kernel.prog)
    assert expr == kernel.abi.tracker
    assert layout == ("radix" if _radix(kernel) else "xarray")
    assert "kho_out." + kernel.tracker_member() == kernel.abi.tracker


def test_tracker_walk(kernel):
    kernel.preserve(BLOCKS)
    t = outgoing_tracker(kernel.prog)
    assert coalesce(t.runs) == coalesce([(p, o, 1) for p, o in BLOCKS])
    if t.layout == "xarray":
        assert t.bitmap_bytes == drgn.sizeof(
            kernel.prog.type("struct kho_mem_phys_bits"))
        assert all(k == "bitmap" for _, _, k in t.pages)


def test_check_agrees_with_decoder(kernel, dtc):
    kernel.preserve(BLOCKS)
    kernel.set_finalized(True) if _generation(kernel) == "kho-v1" else None
    blob = run_dtc(dtc, kho_dts(_generation(kernel), _map_phys(kernel)))
    kernel.set_fdt(blob)
    res = compare_views(kernel.prog, ["tracker", "map"])
    assert res.ok, [str(d) for d in res.differences]
    doc = tracker_view(kernel.prog)
    assert doc["generation"] == _generation(kernel)
    # same schema and same ranges as `map --json`
    from kho_inspect.cli.report import map_json
    from kho_inspect.walk.views import outgoing_handover
    h, _ = outgoing_handover(kernel.prog, with_map=True,
                             bitmap_bytes=doc["bitmap_bytes"])
    mj = map_json(h, "test", None)
    assert set(mj) <= set(doc)
    assert doc["ranges"] == mj["ranges"]
    assert doc["bitmap_bytes"] == mj["bitmap_bytes"]
    assert {(r["phys"], r["order"]) for r in doc["ranges"]} >= {
        (0x20000000, 0), (0x40000000, 18)}


def test_check_reports_differences(kernel, dtc):
    kernel.preserve(BLOCKS)
    gen = _generation(kernel)
    if gen == "kho-v1":
        kernel.set_finalized(True)
        nbytes = drgn.sizeof(kernel.prog.type("struct kho_mem_phys_bits"))
        segs, mphys = encode_v1(BLOCKS[1:] + [(0x30000000, 1)], nbytes,
                                base=0x70000000)
        for phys, data in segs:
            kernel.write_phys(phys, data)
    else:
        mphys = kernel.radix_tree(BLOCKS[1:] + [(0x30000000, 1)])
    kernel.set_fdt(run_dtc(dtc, kho_dts(gen, mphys)))
    res = compare_views(kernel.prog, ["tracker", "map"])
    got = {(d.only_in, d.run.phys, d.run.order, d.run.count)
           for d in res.differences}
    assert got == {("tracker", 0x20000000, 0, 1), ("map", 0x30000000, 1, 1)}


def test_check_unfinalized_v1_is_refused(kernel, dtc):
    if _generation(kernel) != "kho-v1":
        pytest.skip(f"{kernel.dwarf.release}: no finalize step in "
                    f"{_generation(kernel)} (kho-v1 only)")
    kernel.preserve(BLOCKS)
    kernel.set_finalized(False)
    with pytest.raises(KhoError, match="not finalized"):
        compare_views(kernel.prog, ["tracker", "map"])


def test_unreadable_node_is_named(kernel):
    kernel.preserve(BLOCKS)
    t = outgoing_tracker(kernel.prog)
    victim = t.pages[-1][0]
    if victim >= PAGE_OFFSET:
        del kernel.phys[(victim - PAGE_OFFSET) // 4096]
    with pytest.raises(KhoError, match=r"cannot read .*(radix|bitmap|kho_mem"
                                       r"|xarray).* at 0x"):
        outgoing_tracker(kernel.prog)


def test_null_radix_root(kernel):
    if not _radix(kernel):
        pytest.skip(f"{kernel.dwarf.release}: kho-v1, no radix tree (7.1+)")
    with pytest.raises(KhoError, match="cannot read kho_out.radix_tree.root"):
        outgoing_tracker(kernel.prog)        # kho_out not in the dump
    kernel.zero("kho_out")
    with pytest.raises(KhoError, match="NULL"):
        outgoing_tracker(kernel.prog)


@pytest.mark.parametrize("entry, points_to, msg", [
    # root entry 3 (order-0 keys above 2^63) names the L4 of entry 2
    (3, 0, r"radix-table root at phys 0x[0-9a-f]+: entry 2 -> 0x[0-9a-f]+ "
           "is a node reached twice"),
    # root entry 2 points 8 bytes into its L4 page
    (2, 8, r"radix-table root at phys 0x[0-9a-f]+: entry 2 -> 0x[0-9a-f]+8 "
           "is not page-aligned"),
])
def test_radix_walk_refuses_shared_and_unaligned_nodes(kernel, dtc, entry,
                                                       points_to, msg):
    """The walker goes through the decoder's traversal: a hostile tree in
    the kernel's memory is refused by both, with the same words."""
    if not _radix(kernel):
        pytest.skip(f"{kernel.dwarf.release}: kho-v1, no radix tree (7.1+)")
    # order-0 blocks: key 1<<52 | pfn, so root index key>>51 = 2
    kernel.preserve([(0x20000000, 0)])
    root = _map_phys(kernel)
    (l4,) = struct.unpack("<Q", kernel.prog.read(root + 8 * 2, 8, True))
    kernel.write_phys(root + 8 * entry, struct.pack("<Q", l4 + points_to))
    with pytest.raises(KhoError, match=msg):
        outgoing_tracker(kernel.prog)
    from kho_inspect.walk.views import outgoing_handover
    kernel.set_fdt(run_dtc(dtc, kho_dts(_generation(kernel), root)))
    with pytest.raises(KhoError, match=f"{_generation(kernel)} {msg}"):
        outgoing_handover(kernel.prog, with_map=True)     # the decoder


def test_state(kernel):
    kernel.set("kho_enable", b"\x01")
    arr = kernel.alloc(struct.pack("<4Q", 0x1000000, 0x400000,
                                   0x2000000, 0x800000))
    kernel.set_u64("kho_scratch", kernel.virt(arr))
    kernel.set("kho_scratch_cnt", struct.pack("<I", 2))
    assert kho_enabled(kernel.prog) is True
    areas = scratch_areas(kernel.prog)
    assert [(a.addr, a.size, a.role) for a in areas] == [
        (0x1000000, 0x400000, "lowmem"), (0x2000000, 0x800000, "global")]
    kernel.zero("kexec_image")
    assert kexec_image_kho(kernel.prog) is None


def test_kexec_image_fields(kernel):
    t = kernel.prog.type("struct kimage")
    img = bytearray(drgn.sizeof(t))
    seg_t = kernel.prog.type("struct kexec_segment")
    seg = bytearray(drgn.sizeof(seg_t))
    struct.pack_into("<Q", seg, drgn.offsetof(seg_t, "mem"), 0x5000000)
    struct.pack_into("<Q", seg, drgn.offsetof(seg_t, "bufsz"), 64)
    segp = kernel.alloc(bytes(seg))
    struct.pack_into("<Q", img, drgn.offsetof(t, "kho.fdt"), 0x6000000)
    struct.pack_into("<Q", img, drgn.offsetof(t, "kho.scratch"),
                     kernel.virt(segp))
    imgp = kernel.alloc(bytes(img), size=len(img))
    kernel.set_u64("kexec_image", kernel.virt(imgp))
    got = kexec_image_kho(kernel.prog)
    assert got["fdt"] == 0x6000000
    assert got["scratch"] == {"mem": 0x5000000, "bufsz": 64}


def test_status_without_fdt_reports_problem(kernel):
    kernel.set("kho_enable", b"\x01")
    kernel.preserve(BLOCKS)
    kernel.zero("kho_scratch")
    kernel.zero("kho_scratch_cnt")
    kernel.zero("kexec_image")
    kernel.zero("kho_in")
    doc = status_view(kernel.prog)
    assert doc["enabled"] is True
    assert doc["tracker"]["ranges"] >= 1
    assert doc["fdt"] is None and any("FDT" in p for p in doc["problems"])
    assert doc["incoming"]["kho_boot"] is False


def test_incoming_state(kernel):
    kernel.zero("kho_in")
    kernel.set_u64("kho_in", 0x7000000, "fdt_phys")
    st = incoming_state(kernel.prog)
    assert st.kho_boot and st.fdt_phys == 0x7000000
    try:
        drgn.offsetof(kernel.prog.type("struct kho_in"), "previous_release")
    except (LookupError, ValueError):
        assert st.previous_release is None
    else:
        kernel.set("kho_in", b"6.99.1\0", "previous_release")
        kernel.set("kho_in", struct.pack("<I", 3), "kexec_count")
        st = incoming_state(kernel.prog)
        assert (st.previous_release, st.kexec_count) == ("6.99.1", 3)


def test_marker_scan(kernel):
    magic = kernel.abi.page_magic          # the ABI text: 6.18+
    assert inc.has_page_magic(kernel.prog) is magic
    kernel.memmap(0x20000, 0x20000 + 3 * inc.CHUNK_PAGES)
    if magic:
        kernel.page_private(0x20000, KHO_PAGE_MAGIC << 32 | 0)
        kernel.page_private(0x20200, KHO_PAGE_MAGIC << 32 | 9)
        kernel.page_private(0x20300, 5)      # no magic: not a marker
        want = [(0x20000000, 0, 1), (0x20200000, 9, 1)]
    else:
        kernel.page_private(0x20200, 9)
        kernel.page_private(0x20301, 3)      # misaligned: not a marker
        want = [(0x20200000, 9, 1)]
    # a hole the dump filtered out
    ranges = [(0x20000, 0x20000 + 3 * inc.CHUNK_PAGES),
              (0x90000, 0x90000 + 16)]
    scan = inc.scan_markers(kernel.prog, ranges, "test", magic=magic)
    assert [tuple(r) for r in scan.markers] == want
    assert scan.unreadable == [(0x90000, 0x90010)]
    assert scan.pages == 3 * inc.CHUNK_PAGES
    bounded = inc.scan_markers(kernel.prog, ranges, "test", magic=magic,
                               max_pages=inc.CHUNK_PAGES)
    assert bounded.truncated_at_pfn == 0x20000 + inc.CHUNK_PAGES


def test_memblock_freed_after_boot_is_not_trusted(kernel):
    # The vmtest kernels keep no memblock (x86 without memory hotplug or
    # TDX): memblock lives in .init.data, freed after boot.
    assert inc.memblock_reserved(kernel.prog) is None


def test_xa_entries_matches_xa_for_each(kernel):
    if _radix(kernel):
        pytest.skip(f"{kernel.dwarf.release}: radix tree, no xarray "
                    "tracker (kho-v1 only)")
    from kho_inspect.walk.tracker import (walk_xarray_tracker,
                                          xa_for_each_values)
    # indices beyond 64 need a second xa_node level
    blocks = BLOCKS + [(0x3F000000 + (i << 24), 0) for i in range(8)] + \
        [(0x7F000000, 1), (0x240000000, 0), (0x1000000000, 2)]
    kernel.preserve(blocks)
    _, track, expr = tracker_layout(kernel.prog)
    fast = walk_xarray_tracker(kernel.prog, track, expr)
    ref = walk_xarray_tracker(kernel.prog, track, expr,
                              iterate=xa_for_each_values)
    assert sorted(fast.runs) == sorted(ref.runs)
    assert coalesce(fast.runs) == coalesce([(p, o, 1) for p, o in blocks])

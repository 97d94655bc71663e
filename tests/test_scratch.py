"""Scratch accounting in ``status``: each scratch area's share of RAM, its
free and used part (from the MIGRATE_CMA buddy free lists), and the
/proc/meminfo CmaFree/CmaTotal puzzle.

The pure parts are tested with hand-written inputs; the free-list walk runs
over hand-built zones with kernel DWARF: the synthetic 7.3 variants of
tests/variants.py, flat (``contig_page_data``) and NUMA (``node_data[]``),
always, and every vmtest build the cache holds (a skip naming the build
otherwise). Expected figures are worked out by hand here.
"""

import struct

import drgn
import pytest

import variants
from walk_synth import VMEMMAP, SynthKernel

from kho_inspect.cli import walker as cliw
from kho_inspect.walk.state import (bin_free_blocks, cma_mismatch,
                                    free_blocks)
from kho_inspect.walk.views import status_view

MiB = 1 << 20
KiB = 1 << 10


# -- binning free blocks into areas (pure) ------------------------------------

def test_bin_blocks_inside_outside_and_straddling():
    areas = [(0x1000000, 0x300000),        # 16 MiB .. 19 MiB
             (0x1300000, 0x100000),        # 19 MiB .. 20 MiB (adjacent)
             (0x1400000, 0)]               # empty (a "global" of size 0)
    blocks = [(0x1000, 10),                # 16..20 MiB: 3 MiB + 1 MiB
              (0x1000, 0),                 # 4 KiB in area 0
              (0x1300, 1),                 # 8 KiB in area 1
              (0x5000, 2),                 # 16 KiB outside everything
              (0x13ff, 0)]                 # last page of area 1
    inside, outside = bin_free_blocks(blocks, areas, 4096)
    assert inside == [3 * MiB + 4 * KiB, 1 * MiB + 8 * KiB + 4 * KiB, 0]
    assert outside == 16 * KiB


def test_bin_block_overhanging_an_area_end():
    # an order-9 block (2 MiB) starting 1 MiB before the area's end
    inside, outside = bin_free_blocks([(0x100, 9)], [(0, 0x200000)], 4096)
    assert inside == [1 * MiB] and outside == 1 * MiB


def test_bin_nothing():
    assert bin_free_blocks([], [(0, 4096)], 4096) == ([0], 0)
    assert bin_free_blocks([(1, 0)], [], 4096) == ([], 4096)


def test_bin_uses_the_page_size():
    # 16 KiB pages: pfn 4 order 1 is 64 KiB + 32 KiB; the area holds half
    inside, outside = bin_free_blocks([(4, 1)], [(0x10000, 0x4000)], 16384)
    assert inside == [0x4000] and outside == 0x4000


# -- the explanation rule (pure) -----------------------------------------------

@pytest.mark.parametrize("free, total, scratch, want", [
    (8 * MiB, 0, 64 * MiB, True),          # the reported case
    (8 * MiB, 0, 0, False),                # no scratch: not KHO's doing
    (0, 0, 64 * MiB, False),               # nothing free to explain
    (4 * MiB, 16 * MiB, 64 * MiB, False),  # real CMA can explain it
    (16 * MiB, 16 * MiB, 64 * MiB, False),
    (20 * MiB, 16 * MiB, 64 * MiB, True),  # more free than CMA holds
    (None, None, 64 * MiB, False),         # no CONFIG_CMA: no Cma lines
    (8 * MiB, None, 64 * MiB, True),
])
def test_mismatch_rule(free, total, scratch, want):
    assert cma_mismatch(free, total, scratch) is want


def _acc(**kw):
    acc = {"cma_free": 300 * MiB, "cma_total": 0, "scratch_free": 300 * MiB,
           "scratch_size": 480 * MiB, "origin": "this kernel, at boot",
           "ram": 2048 * MiB, "ram_source": "MemTotal (_totalram_pages)",
           "mismatch": True,
           "walk": {"migratetype": "MIGRATE_CMA", "lists": 44, "blocks": 75,
                    "free": 300 * MiB, "outside_scratch": 0,
                    "truncated": False},
           "areas": [{"index": 0, "free": 100 * MiB, "in_use": 20 * MiB,
                      "ram_percent": 5.86},
                     {"index": 1, "free": 0, "in_use": 0, "ram_percent": 0.0},
                     {"index": 2, "free": 200 * MiB, "in_use": 160 * MiB,
                      "ram_percent": 17.58}]}
    acc.update(kw)
    return acc


AREAS = [{"index": 0, "role": "lowmem", "addr": 0x76000000,
          "size": 120 * MiB},
         {"index": 1, "role": "global", "addr": 0x7d800000, "size": 0},
         {"index": 2, "role": "node #0", "addr": 0x105f800000,
          "size": 360 * MiB}]


def _status(acc):
    return {"release": "7.3.4", "source": "test", "enabled": True,
            "kexec_image": None, "problems": [], "scratch": AREAS,
            "scratch_accounting": acc}


def test_text_explains_the_mismatch_in_meminfo_units():
    text = cliw.status_text(_status(_acc()))
    flat = " ".join(text.split())
    # 300 MiB = 307200 kB, as /proc/meminfo prints it
    assert ("/proc/meminfo shows CmaFree 307200 kB with CmaTotal 0 kB"
            in flat)
    assert "300 MiB of 480 MiB in 3 areas" in flat
    assert "kho=off" in flat and "not a CMA reservation" in flat
    assert "previous kernel" not in flat
    assert max(len(line) for line in text.splitlines()) <= 79, text


def test_text_on_a_kho_boot_names_the_previous_kernel():
    acc = _acc(origin="the previous kernel (kho_in.scratch_phys)")
    flat = " ".join(cliw.status_text(_status(acc)).split())
    assert "handed over by the previous kernel" in flat


def test_text_without_mismatch_has_no_explanation():
    acc = _acc(mismatch=False, cma_total=512 * MiB)
    text = cliw.status_text(_status(acc))
    assert "shows CmaFree" not in text
    assert "/proc/meminfo: CmaTotal 524288 kB, CmaFree 307200 kB" in text


def test_text_table_rows():
    lines = cliw.status_text(_status(_acc())).splitlines()
    row = next(ln for ln in lines if "node #0" in ln).split()
    # index, role (2 words), addr, size (2), % RAM, in use (2), free (2)
    assert row == ["2", "node", "#0", "0x105f800000", "360", "MiB", "17.6",
                   "160", "MiB", "200", "MiB"]
    assert max(len(line) for line in lines) <= 79


def test_text_without_accounting_still_lists_areas():
    text = cliw.status_text(_status(None))
    row = next(ln for ln in text.splitlines() if "lowmem" in ln).split()
    assert row[:5] == ["0", "lowmem", "0x76000000", "120", "MiB"]
    assert "?" in row


# -- the free-list walk over kernel DWARF ----------------------------------

@pytest.fixture(params=variants.params(variants.PGDATS), scope="module")
def dwarf(request, kdwarf):
    return variants.resolve(request.param, kdwarf)


@pytest.fixture
def kernel(dwarf, tmp_path):
    return SynthKernel.of(dwarf, tmp_path)


def _page_addr(k, pfn):
    return VMEMMAP + pfn * drgn.sizeof(k.prog.type("struct page"))


def _free_list(k, zone, order, mt, pfns):
    """Link the struct pages of *pfns* into node 0's
    ``node_zones[zone].free_area[order].free_list[mt]`` (a circular
    list_head chain through ``page->buddy_list``): ``contig_page_data`` or
    ``node_data[0]``, as the kernel's configuration has it."""
    pgdat = k.pgdat(0)
    head = pgdat.node_zones[zone].free_area[order].free_list[mt].address_
    off = drgn.offsetof(k.prog.type("struct page"), "buddy_list")
    nodes = [head] + [_page_addr(k, p) + off for p in pfns]
    for p in pfns:
        k.memmap(p, p + 1)
    for i, n in enumerate(nodes):
        nxt, prv = nodes[(i + 1) % len(nodes)], nodes[i - 1]
        k.write(n, struct.pack("<QQ", nxt, prv))


def _setup(k, cma_free_pages, cma_total_pages, ram_pages, areas):
    k.set("kho_enable", b"\x01")
    arr = k.alloc(b"".join(struct.pack("<QQ", a, s) for a, s in areas))
    k.set_u64("kho_scratch", k.virt(arr))
    k.set("kho_scratch_cnt", struct.pack("<I", len(areas)))
    k.zero("kexec_image")
    k.zero("kho_in")
    pgdat = k.pgdat(0)
    k.write(pgdat.address_, bytes(drgn.sizeof(pgdat.type_)))
    k.set_u64("totalcma_pages", cma_total_pages)
    k.set_u64("_totalram_pages", ram_pages)
    k.zero("vm_zone_stat")
    item = k.prog["NR_FREE_CMA_PAGES"].value_()
    k.write_kvirt(k.prog["vm_zone_stat"][item].address_,
                  struct.pack("<Q", cma_free_pages))
    # zone 1 (DMA32 on x86-64) present; zone 0 present with empty lists
    for z in (0, 1):
        k.write(pgdat.node_zones[z].present_pages.address_,
                struct.pack("<Q", 1 << 18))


def test_walk_bins_cma_free_blocks(kernel):
    k = kernel
    mt = k.prog["MIGRATE_CMA"].value_()
    movable = k.prog["MIGRATE_MOVABLE"].value_()
    # lowmem 0x30000000 + 8 MiB, global empty, node #0 0x40000000 + 4 MiB
    areas = [(0x30000000, 8 * MiB), (0x40000000, 0), (0x40000000, 4 * MiB)]
    _setup(k, cma_free_pages=2048 + 3 + 512, cma_total_pages=0,
           ram_pages=(1 << 30) // 4096, areas=areas)
    _free_list(k, 1, 10, mt, [0x30000, 0x30400])    # 2 x 4 MiB: lowmem
    _free_list(k, 1, 0, mt, [0x40003, 0x40005, 0x40007])    # node #0
    _free_list(k, 1, 9, mt, [0x50000])              # 2 MiB real CMA
    _free_list(k, 1, 3, movable, [0x30100])         # not MIGRATE_CMA
    w = free_blocks(k.prog)
    assert sorted(w.blocks) == sorted([(0x30000, 10), (0x30400, 10),
                                       (0x40003, 0), (0x40005, 0),
                                       (0x40007, 0), (0x50000, 9)])
    assert not w.truncated
    doc = status_view(k.prog)
    acc = doc["scratch_accounting"]
    assert acc["ram"] == 1 << 30
    assert acc["cma_total"] == 0
    assert acc["cma_free"] == (2048 + 3 + 512) * 4096
    assert acc["scratch_size"] == 12 * MiB
    assert acc["scratch_free"] == 8 * MiB + 3 * 4096
    assert acc["walk"]["outside_scratch"] == 2 * MiB
    assert acc["walk"]["truncated"] is False
    assert [(a["index"], a["free"], a["in_use"]) for a in acc["areas"]] == [
        (0, 8 * MiB, 0), (1, 0, 0), (2, 3 * 4096, 4 * MiB - 3 * 4096)]
    assert [a["ram_percent"] for a in acc["areas"]] == [0.78, 0.0, 0.39]
    assert acc["mismatch"] is True
    assert acc["origin"].startswith("this kernel")
    # the scratch entries themselves keep their stable schema
    assert set(doc["scratch"][0]) == {"index", "addr", "size", "role"}
    text = cliw.status_text(doc)
    assert "shows CmaFree 10252 kB with CmaTotal 0 kB" in " ".join(
        text.split())


def test_walk_stops_at_the_bound_and_on_loops(kernel):
    k = kernel
    mt = k.prog["MIGRATE_CMA"].value_()
    _setup(k, 4, 0, 1 << 18, [(0x30000000, 8 * MiB)])
    _free_list(k, 1, 0, mt, [0x30000, 0x30001, 0x30002, 0x30003])
    w = free_blocks(k.prog, max_blocks=2)
    assert w.truncated and len(w.blocks) == 2
    # a list whose last entry points back to the second, not to the head
    off = drgn.offsetof(k.prog.type("struct page"), "buddy_list")
    last = _page_addr(k, 0x30003) + off
    k._write(k.vmemmap, VMEMMAP, last,
             struct.pack("<Q", _page_addr(k, 0x30001) + off))
    w = free_blocks(k.prog, max_blocks=100)
    assert not w.truncated and w.loops == 1
    assert w.blocks == [(0x30000, 0), (0x30001, 0), (0x30002, 0),
                        (0x30003, 0)]
    doc = status_view(k.prog)
    assert any("repeat an entry" in p for p in doc["problems"])
    assert doc["scratch_accounting"]["walk"]["loops"] == 1


def test_unreadable_free_list_is_a_problem_not_a_zero(kernel):
    k = kernel
    mt = k.prog["MIGRATE_CMA"].value_()
    _setup(k, 1024, 0, 1 << 18, [(0x30000000, 8 * MiB)])
    head = k.pgdat(0).node_zones[1].free_area[10].free_list[mt].address_
    # points into a struct page the "dump" does not have
    k.write(head, struct.pack("<Q", _page_addr(k, 0x77700) + 8))
    doc = status_view(k.prog)
    acc = doc["scratch_accounting"]
    assert acc["walk"] is None and acc["scratch_free"] is None
    assert acc["areas"][0]["free"] is None
    assert any("MIGRATE_CMA free lists" in p for p in doc["problems"])
    # meminfo's figures are still there, and still explained
    assert acc["cma_free"] == 1024 * 4096 and acc["mismatch"] is True


# -- the guest-side check judges (vmtests/guest/scratch_checks.py) ----------------

def _guest_check():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "vmtests" / "guest" / \
        "scratch_checks.py"
    spec = importlib.util.spec_from_file_location("scratch_checks", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _guest_doc(cma_free_kb=307200, mismatch=True, free0=100 * MiB):
    acc = _acc(cma_free=cma_free_kb * 1024, mismatch=mismatch)
    acc["walk"]["free"] = cma_free_kb * 1024
    acc["areas"][0]["free"] = free0
    return dict(_status(acc), incoming={"kho_boot": False})


def _judge(monkeypatch, doc, meminfo_kb=(307200, 0), debugfs="same"):
    import json
    import subprocess
    sc = _guest_check()
    free, total = meminfo_kb
    monkeypatch.setattr(sc, "meminfo", lambda: {
        "MemTotal": 2 << 20, "CmaTotal": total, "CmaFree": free})
    areas = [(a["addr"], a["size"]) for a in AREAS]
    monkeypatch.setattr(sc, "debugfs_scratch",
                        lambda: areas if debugfs == "same" else debugfs)

    def run(cmd, timeout=None, **kw):
        out = (json.dumps(doc) if "--json" in cmd
               else cliw.status_text(doc))
        return subprocess.CompletedProcess(cmd, 0, out, "")
    return sc.check_scratch(run)


def test_guest_check_passes_a_consistent_status(monkeypatch):
    res = _judge(monkeypatch, _guest_doc())
    assert res["verdict"] == "pass", res["detail"]


@pytest.mark.parametrize("doc, meminfo, debugfs, want", [
    (_guest_doc(cma_free_kb=100000), (307200, 0), "same", "CmaFree"),
    (_guest_doc(), (307200, 4096), "same", "CmaTotal"),
    (_guest_doc(free0=130 * MiB), (307200, 0), "same", "area 0"),
    (_guest_doc(mismatch=False), (307200, 0), "same", "mismatch"),
    (_guest_doc(), (307200, 0), [(0x76000000, 4096)], "debugfs"),
])
def test_guest_check_fails(monkeypatch, doc, meminfo, debugfs, want):
    res = _judge(monkeypatch, doc, meminfo, debugfs)
    assert res["verdict"] == "fail" and want in res["detail"], res["detail"]

"""``check --next``'s judgement (check/next_kernel.next_findings) on
hand-made handovers, one receiving release at a time: every finding's id,
place, owner and severity, and the facts its message must state. The
expectations come from docs/abi.md 6.4 and 7 (what each release reads),
written here by hand."""

from types import SimpleNamespace as NS

import pytest

from test_check import MIB, NODES          # node 0 ends at 1028 MiB
from kho_inspect.check.invariants import OwnerIndex
from kho_inspect.check.next_kernel import next_findings
from kho_inspect.ranges import Run


def handover(generation="kho-v4", bitmap_bytes=None, subnodes=()):
    m = NS(bitmap_bytes=bitmap_bytes, map_phys=0x5000)
    return NS(generation=generation, map=m,
              subnodes=[NS(name=n, content=c, phys=p) for n, c, p in subnodes])


def owners(*runs_owner):
    return OwnerIndex([NS(run=Run(p, o, c), owners={who})
                       for (p, o, c), who in runs_owner])


def found(fs):
    return [(f.id, f.phys, f.order, f.count, f.owner, f.severity)
            for f in fs]


def test_another_compatible_is_refused_whole_and_nothing_else_is_read():
    runs = [(8 * MIB, 11, 1)]
    fs = next_findings(handover("kho-v1", 4096), "7.3.4", runs)
    assert found(fs) == [("next-compatible", None, None, 1, None, "error")]
    assert "'kho-v4'" in fs[0].message and "'kho-v1'" in fs[0].message
    fs = next_findings(handover("kho-v3"), "6.19.11", runs)
    assert found(fs) == [("next-compatible", None, None, 1, None, "error")]


@pytest.mark.parametrize("written, release, flagged", [
    (512, "6.18.15", True), (4096, "6.17.8", True), (512, "6.16.1", False),
    (4096, "7.0.2", False), (None, "6.18.15", False)])
def test_kho_v1_bitmap_size(written, release, flagged):
    fs = next_findings(handover("kho-v1", written), release, [])
    if not flagged:
        assert fs == []
        return
    assert found(fs) == [("next-bitmap", 0x5000, None, 1, None, "error")]
    reads = 512 if release.startswith(("6.16", "6.17")) else 4096
    assert f"{reads} bytes" in fs[0].message
    assert f"{written}-byte" in fs[0].message


def test_orders_above_max_page_order():
    runs = [(0x400000, 10, 5), (8 * MIB, 11, 2), (64 * MIB, 12, 1)]
    idx = owners(((8 * MIB, 11, 2), "kho_workload"))
    fs = next_findings(handover("kho-v1", 4096), "6.19.11", runs, idx)
    assert found(fs) == [
        ("next-order", 8 * MIB, 11, 2, "kho_workload", "warning"),
        ("next-order", 64 * MIB, 12, 1, None, "warning")]
    assert "(x2): 8 MiB blocks" in fs[0].message
    assert "(x1)" not in fs[1].message and "16 MiB blocks" in fs[1].message
    assert all("refuses to restore" in f.message for f in fs)
    fs = next_findings(handover("kho-v3"), "7.1.13", runs, idx, nodes=[])
    assert [f.phys for f in fs] == [8 * MIB, 64 * MIB]
    assert all("no order check" in f.message for f in fs)


CLAIM = NS(phys=1024 * MIB, size=8 * MIB, owner="kho_workload",
           what="item 3 numa", order=None)
NUMA_RUNS = [(1024 * MIB, 10, 1), (1028 * MIB, 10, 1)]


def test_numa_only_where_restore_skips_the_split_and_nodes_are_known():
    h = handover()
    # unknown boundaries: said, not guessed
    fs = next_findings(h, "7.3.4", NUMA_RUNS, claims=[CLAIM], nodes=None)
    assert found(fs) == [("not-checked", None, None, 1, None, "info")]
    # one node: nothing to cross
    assert next_findings(h, "7.3.4", NUMA_RUNS, claims=[CLAIM],
                         nodes=[(0, 0, 1 << 20)]) == []
    fs = next_findings(h, "7.3.4", NUMA_RUNS, claims=[CLAIM], nodes=NODES)
    # a block left reserved: memory lost until reboot, not corrupted
    assert found(fs) == [("next-numa", 1028 * MIB, 10, 1, "kho_workload",
                          "warning")]
    # 6.18's restore splits as its preserve does: no question to ask
    h1 = handover("kho-v1", 4096)
    assert next_findings(h1, "6.18.15", NUMA_RUNS, claims=[CLAIM],
                         nodes=None) == []


@pytest.mark.parametrize("sub, release, want", [
    # test_kho's folios_info: inline array up to 6.17, kho_vmalloc from 6.18
    (("kho_test", {"folios_info_vmalloc": {}, "folios": [1]}, 0x7000),
     "6.17.8", [("next-client", 0x7000, None, 1, "kho_test", "warning")]),
    (("kho_test", {"folios_info_vmalloc": {}, "folios": [1]}, 0x7000),
     "6.18.15", []),
    (("kho_test", {"folios": [1]}, 0x7000), "6.18.15",
     [("next-client", 0x7000, None, 1, "kho_test", "warning")]),
    (("kho_test", {"folios": [1]}, 0x7000), "6.17.8", []),
    (("kho_test", {}, 0x7000), "6.18.15", []),
    # LUO: an FDT blob 6.19-7.1, raw luo-v5 from 7.2, none before 6.19
    (("LUO", {"format": "raw"}, 0x8000), "7.3.4", []),
    (("LUO", {"format": "fdt"}, 0x8000), "7.1.13", []),
    (("LUO", {"format": "fdt"}, 0x8000), "7.2.1",
     [("next-client", 0x8000, None, 1, "LUO", "warning")]),
    (("LUO", {"format": "raw"}, 0x8000), "6.19.11",
     [("next-client", 0x8000, None, 1, "LUO", "warning")]),
    (("LUO", {"format": "fdt"}, 0x8000), "6.18.15",
     [("next-client", 0x8000, None, 1, "LUO", "warning")]),
    (("LUO", {}, 0x8000), "6.18.15", []),
    # kexec-metadata: read from 7.1, ignored before
    (("kexec-metadata", {"version": 1}, 0x9000), "7.0.2",
     [("next-client", 0x9000, None, 1, "kexec-metadata", "info")]),
    (("kexec-metadata", {"version": 1}, 0x9000), "7.1.13", []),
])
def test_client_formats(sub, release, want):
    gen = {"6.1": "kho-v1", "7.0": "kho-v1", "7.1": "kho-v3"}.get(
        release[:3], "kho-v4")
    bitmaps = {"6.16": 512, "6.17": 512}.get(release[:4], 4096)
    fs = next_findings(handover(gen, bitmaps if gen == "kho-v1" else None,
                                [sub]), release, [], nodes=[])
    assert found(fs) == want


def test_luo_messages_name_both_formats():
    h = handover("kho-v4", None, [("LUO", {"format": "fdt"}, 0x8000)])
    (f,) = next_findings(h, "7.3.4", [], nodes=[])
    assert "fdt blob" in f.message and "reads a luo-v5 blob" in f.message
    h = handover("kho-v1", 4096, [("LUO", {"format": "fdt"}, 0x8000)])
    (f,) = next_findings(h, "6.18.15", [])
    assert "6.18.15 has no LUO" in f.message

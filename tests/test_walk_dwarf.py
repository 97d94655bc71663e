"""Every type, member and symbol the walker probes, against the DWARF of
every kernel in the vmtest build cache (skipped, loudly, when none is built).

``python3 tests/test_walk_dwarf.py`` prints the table per kernel.
"""

import os
import sys

import drgn
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from walk_synth import built_kernels, types_program  # noqa: E402

KERNELS = built_kernels()

#: name -> how to probe it
PROBES = {
    "var kho_out": lambda p: p["kho_out"],
    "var kho_in": lambda p: p["kho_in"],
    "var kho_enable": lambda p: p["kho_enable"],
    "var kho_scratch": lambda p: p["kho_scratch"],
    "var kho_scratch_cnt": lambda p: p["kho_scratch_cnt"],
    "var kexec_image": lambda p: p["kexec_image"],
    "kho_out.radix_tree.root": lambda p: p["kho_out"].radix_tree.root,
    "kho_out.track.orders": lambda p: p["kho_out"].track.orders,
    "kho_out.ser.track.orders": lambda p: p["kho_out"].ser.track.orders,
    "kho_out.fdt": lambda p: p["kho_out"].fdt,
    "kho_out.ser.fdt": lambda p: p["kho_out"].ser.fdt,
    "kho_out.finalized": lambda p: p["kho_out"].finalized,
    "kho_in.fdt_phys": lambda p: p["kho_in"].fdt_phys,
    "kho_in.scratch_phys": lambda p: p["kho_in"].scratch_phys,
    "kho_in.mem_map_phys": lambda p: p["kho_in"].mem_map_phys,
    "kho_in.previous_release": lambda p: p["kho_in"].previous_release,
    "kho_in.kexec_count": lambda p: p["kho_in"].kexec_count,
    "kho_in.radix_tree": lambda p: p["kho_in"].radix_tree,
    "kimage.kho.fdt": lambda p: p.type("struct kimage").member("kho")
    .type.member("fdt"),
    "kimage.kho.scratch": lambda p: p.type("struct kimage").member("kho")
    .type.member("scratch"),
    "kexec_segment.mem/bufsz": lambda p: (
        p.type("struct kexec_segment").member("mem"),
        p.type("struct kexec_segment").member("bufsz")),
    "struct kho_mem_phys.phys_bits": lambda p: p.type(
        "struct kho_mem_phys").member("phys_bits"),
    "sizeof kho_mem_phys_bits": lambda p: drgn.sizeof(
        p.type("struct kho_mem_phys_bits")),
    "xa_node.slots entries": lambda p: (
        drgn.offsetof(p.type("struct xa_node"), "shift"),
        p.type("struct xa_node").member("slots").type.length)[1],
    "sizeof kho_radix_node": lambda p: drgn.sizeof(
        p.type("struct kho_radix_node")),
    "sizeof kho_scratch": lambda p: drgn.sizeof(p.type("struct kho_scratch")),
    "union kho_page_info": lambda p: p.type("union kho_page_info"),
    "page.private offset": lambda p: drgn.offsetof(p.type("struct page"),
                                                   "private"),
    "sym memblock_discard": lambda p: p.symbol("memblock_discard"),
    "var memblock in .init": lambda p: (
        p.symbol("__init_begin").address <= p["memblock"].address_
        < p.symbol("__init_end").address) or None,
}


def probe(prog) -> dict:
    out = {}
    for name, fn in PROBES.items():
        try:
            v = fn(prog)
        except (LookupError, AttributeError, ValueError):
            out[name] = None
            continue
        out[name] = v if isinstance(v, (int, bool)) else True
    return out


@pytest.fixture(scope="module", params=sorted(KERNELS) or ["none"])
def found(request, tmp_path_factory):
    if request.param == "none":
        pytest.skip("no built kernel in the vmtest cache: DWARF probes "
                    "not verified")
    return probe(types_program(KERNELS[request.param],
                               str(tmp_path_factory.mktemp("k"))))


def test_common_names_exist(found):
    for name in ("var kho_out", "var kho_in", "var kho_enable",
                 "var kho_scratch", "var kho_scratch_cnt", "var kexec_image",
                 "kho_in.fdt_phys", "kho_in.scratch_phys", "kimage.kho.fdt",
                 "kimage.kho.scratch", "kexec_segment.mem/bufsz",
                 "page.private offset"):
        assert found[name], name
    assert found["sizeof kho_scratch"] == 16
    assert found["xa_node.slots entries"] == 64


def test_exactly_one_tracker_layout(found):
    layouts = [n for n in ("kho_out.radix_tree.root", "kho_out.track.orders",
                           "kho_out.ser.track.orders") if found[n]]
    assert len(layouts) == 1, layouts
    if layouts[0] == "kho_out.radix_tree.root":
        assert found["sizeof kho_radix_node"] == 4096
        assert found["kho_out.fdt"] and not found["kho_out.finalized"]
    else:
        assert found["struct kho_mem_phys.phys_bits"]
        assert found["sizeof kho_mem_phys_bits"] in (512, 4096)
        assert found["kho_out.finalized"]
        assert found["kho_out.fdt"] or found["kho_out.ser.fdt"]
        # 4 KiB bitmaps and the page magic came together (6.18)
        assert (found["sizeof kho_mem_phys_bits"] == 4096) == \
            bool(found["union kho_page_info"])


if __name__ == "__main__":
    import tempfile
    rows = {rel: probe(types_program(vm, tempfile.mkdtemp()))
            for rel, vm in sorted(KERNELS.items())}
    rels = list(rows)
    w = max(map(len, PROBES))
    print(" " * w + "  " + "  ".join(f"{r:>8}" for r in rels))
    for name in PROBES:
        cells = []
        for r in rels:
            v = rows[r][name]
            cells.append(f"{'-' if v is None else 'yes' if v is True else v:>8}")
        print(f"{name:<{w}}  " + "  ".join(cells))

"""Every type, member and symbol the walker probes, against the DWARF of
every vmtest build (a skip naming the build when the cache lacks it): the
point is the real kernels' names and sizes. The same probes run on the
synthetic variants (tests/kdwarf/kernel.c) as a self-check of that file,
and where a build is cached, its synthetic twin must have the build's
layouts.

``python3 tests/test_walk_dwarf.py`` prints the table per kernel.
"""

import os
import subprocess
import sys

import drgn
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import variants  # noqa: E402
from walk_synth import types_program  # noqa: E402

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


@pytest.fixture(scope="module",
                params=variants.params(variants.BUILDS + variants.SYNTH))
def found(request, kdwarf, tmp_path_factory):
    d = variants.resolve(request.param, kdwarf)
    return probe(types_program(d.vmlinux, str(tmp_path_factory.mktemp("k"))))


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


# -- the synthetic DWARF itself ---------------------------------------------

#: Variables the walker or the tests read, by kernel-image address.
VARIABLES = ("kho_out", "kho_in", "kho_enable", "kho_scratch",
             "kho_scratch_cnt", "kexec_image", "iomem_resource",
             "vm_zone_stat", "_totalram_pages", "totalcma_pages",
             "page_offset_base", "vmemmap_base", "node_states", "memblock",
             "node_data", "nr_node_ids", "contig_page_data",
             "luo_session_global", "luo_flb_global")

#: Image addresses SynthKernel serves (tests/walk_synth.py).
KIMAGE_SEGMENT = (0xFFFFFFFF80000000, 0xFFFFFFFF80000000 + (1 << 31))


@pytest.mark.parametrize("variant", variants.params(variants.SYNTH))
def test_synthetic_variables_at_their_symbols(variant, kdwarf, tmp_path):
    """drgn finds each variable of the synthetic vmlinux where its ELF
    symbol is, inside the kernel-image segment, and the symbols fake_core
    and SynthKernel need exist."""
    vm = kdwarf.vmlinux(variant)
    nm = {f[2]: int(f[0], 16) for f in (
        line.split() for line in subprocess.run(
            ["nm", vm], capture_output=True, text=True,
            check=True).stdout.splitlines()) if len(f) == 3}
    prog = types_program(vm, str(tmp_path))
    seen = 0
    for name in VARIABLES:
        try:
            obj = prog[name]
        except KeyError:
            assert name not in nm, name
            continue
        seen += 1
        assert obj.address_ == nm[name], name
        assert KIMAGE_SEGMENT[0] <= obj.address_ and \
            obj.address_ + drgn.sizeof(obj.type_) <= KIMAGE_SEGMENT[1], name
    assert seen >= 14
    assert "init_top_pgt" in nm
    numa = "node_data" in nm
    assert numa == bool(variant.numa)
    assert ("contig_page_data" in nm) == (not numa)


#: Types tests/kdwarf/kernel.c declares with all their members (for the
#: vmtest configurations): member for member the build's.
COMPLETE = (
    "struct list_head", "struct xarray", "struct xa_node", "struct page",
    "struct mutex", "struct rw_semaphore", "struct blocking_notifier_head",
    "struct free_area", "struct resource", "struct memblock_region",
    "struct memblock_type", "struct memblock", "struct kexec_segment",
    "struct kimage", "struct kho_scratch", "struct kho_mem_phys_bits",
    "struct kho_mem_phys", "struct kho_mem_track",
    "struct kho_serialization", "union kho_page_info", "struct kho_vmalloc",
    "struct kho_debugfs", "struct kho_radix_node", "struct kho_radix_leaf",
    "struct kho_radix_tree", "struct kho_out", "struct kho_in",
    "struct luo_file_ser", "struct luo_file_set_ser",
    "struct luo_session_header_ser", "struct luo_session_ser",
    "struct luo_flb_header_ser", "struct luo_flb_ser",
    "struct kho_block_header_ser", "struct luo_ser", "struct kho_block",
    "struct kho_block_set", "struct memfd_luo_folio_ser",
    "struct memfd_luo_ser", "struct liveupdate_file_handler",
    "struct luo_file_set", "struct luo_session", "struct luo_file",
    "struct luo_session_header", "struct luo_session_global",
    "struct luo_flb_header", "struct luo_flb_global")
#: Declared with some of their members, in the kernel's order.
PARTIAL = ("struct zone", "struct pglist_data")
#: Enumerators the walker and the tests read.
ENUMERATORS = ("MIGRATE_MOVABLE", "MIGRATE_CMA", "MIGRATE_TYPES",
               "NR_FREE_CMA_PAGES", "NR_VM_ZONE_STAT_ITEMS", "N_ONLINE",
               "NR_NODE_STATES", "ZONE_DMA32", "__MAX_NR_ZONES")


def _type(prog, name):
    try:
        return prog.type(name)
    except LookupError:
        return None


def _size(t):
    try:
        return drgn.sizeof(t)
    except TypeError:
        return None


def _members(t, base=0):
    """(name, bit offset, bit-field size, size, kind) of every member,
    anonymous structs and unions flattened into their members."""
    out = []
    for m in t.unqualified().members:
        mt = m.type.unqualified()
        while mt.kind == drgn.TypeKind.TYPEDEF:
            mt = mt.type.unqualified()
        if m.name is None and mt.kind in (drgn.TypeKind.STRUCT,
                                          drgn.TypeKind.UNION):
            out.append((None, base + m.bit_offset, None, _size(mt),
                        mt.kind))
            out += _members(mt, base + m.bit_offset)
        else:
            out.append((m.name, base + m.bit_offset, m.bit_field_size,
                        _size(mt), mt.kind))
    return out


def _twin(d):
    """The synthetic variant modelling build *d* (same series and NUMA)."""
    for v in variants.SYNTH:
        if v.series == d.variant.series and bool(v.numa) == d.numa:
            return v
    pytest.fail(f"{d.id} ({d.release}, NUMA {d.numa}): no synthetic "
                "variant in tests/variants.py models it")


@pytest.mark.parametrize("build", variants.params(variants.BUILDS))
def test_synthetic_twin_matches_build(build, kdwarf, tmp_path):
    """tests/kdwarf/kernel.c checked against the kernel it models: for a
    cached build, the synthetic variant of the same series and pgdat has
    the same types, members, offsets and sizes, the same variables (sizes
    too) and enumerators, and the same probe table."""
    d = variants.resolve(build, kdwarf)
    twin = _twin(d)
    (tmp_path / "real").mkdir()
    (tmp_path / "synth").mkdir()
    real = types_program(d.vmlinux, str(tmp_path / "real"))
    synth = types_program(kdwarf.vmlinux(twin), str(tmp_path / "synth"))
    bad = []
    for name in COMPLETE + PARTIAL:
        rt, st = _type(real, name), _type(synth, name)
        if (rt is None) != (st is None):
            bad.append(f"{name}: {'only in' if rt is None else 'not in'} "
                       f"{twin.id}")
            continue
        if rt is None:
            continue
        if name in COMPLETE:
            if drgn.sizeof(rt) != drgn.sizeof(st):
                bad.append(f"sizeof({name}): {drgn.sizeof(st)}, build "
                           f"{drgn.sizeof(rt)}")
            if _members(rt) != _members(st):
                bad.append(f"{name} members: {_members(st)}, build "
                           f"{_members(rt)}")
            continue
        last = -1
        for m in st.members:
            try:
                rm = rt.member(m.name)
            except LookupError:
                bad.append(f"{name}.{m.name}: not in the build")
                continue
            if rm.bit_offset < last:
                bad.append(f"{name}.{m.name}: out of order")
            last = rm.bit_offset
            et = m.type.unqualified()
            while et.kind == drgn.TypeKind.ARRAY:
                et = et.type.unqualified()
            if et.type_name() not in PARTIAL and \
                    _size(rm.type) != _size(m.type):
                bad.append(f"{name}.{m.name}: {_size(m.type)} bytes, "
                           f"build {_size(rm.type)}")
    for name in VARIABLES:
        try:
            ro = real[name]
        except KeyError:
            ro = None
        try:
            so = synth[name]
        except KeyError:
            so = None
        if (ro is None) != (so is None):
            bad.append(f"variable {name}: only in "
                       f"{'the build' if so is None else twin.id}")
        elif ro is not None and name != "contig_page_data" and \
                drgn.sizeof(ro.type_) != drgn.sizeof(so.type_):
            bad.append(f"sizeof {name}: {drgn.sizeof(so.type_)}, build "
                       f"{drgn.sizeof(ro.type_)}")
    for name in ENUMERATORS:
        if real[name].value_() != synth[name].value_():
            bad.append(f"{name}: {synth[name].value_()}, build "
                       f"{real[name].value_()}")
    if probe(real) != probe(synth):
        bad.append(f"probes: {probe(synth)}, build {probe(real)}")
    assert not bad, "\n".join(bad)


if __name__ == "__main__":
    import tempfile
    from pathlib import Path
    comp = variants.Compiler(Path(tempfile.mkdtemp()))
    rows = {}
    for v in variants.BUILDS + variants.SYNTH:
        b = variants.cached_build(v.series) if not v.synthetic else None
        vm = comp.vmlinux(v) if v.synthetic else b and str(b.vmlinux)
        if vm:
            rows[v.id] = probe(types_program(vm, tempfile.mkdtemp()))
    rels = list(rows)
    w = max(map(len, PROBES))
    print(" " * w + "  " + "  ".join(f"{r:>14}" for r in rels))
    for name in PROBES:
        cells = []
        for r in rels:
            v = rows[r][name]
            v = '-' if v is None else 'yes' if v is True else v
            cells.append(f"{v:>14}")
        print(f"{name:<{w}}  " + "  ".join(cells))

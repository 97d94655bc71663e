"""Decode the blobs of the KHO clients kho_inspect knows.

Each decoder takes the sub-node's blob (a parsed FDT for FDT_CLIENTS, bytes
for RAW_CLIENTS), the memory source and a place name for messages, and
returns a JSON-friendly dict plus the extra pages it read.
"""

from __future__ import annotations

from .. import fdt as fdtmod
from ..abi import clients as abi
from ..abi.common import PAGE_SIZE, u64le
from ..errors import KhoError
from .vmalloc import decode_vmalloc, read_vmalloc


def _u64(node, name, where):
    p = node.props.get(name)
    if p is None:
        raise KhoError(f"{where}: property {name!r} is missing")
    try:
        return u64le(p.value)
    except ValueError as e:
        raise KhoError(f"{where}: property {name!r}: {e}") from None


def _u32(node, name, where):
    p = node.props.get(name)
    if p is None or len(p.value) != 4:
        raise KhoError(f"{where}: property {name!r} is missing or not 4 "
                       "bytes")
    return int.from_bytes(p.value, "little")


def memblock(tree: fdtmod.Fdt, mem, where: str):
    """memblock's reserve_mem regions: ``memblock-v1`` FDT, one child per
    region, each ``reserve-mem-v1`` (the next kernel's reader skips a child
    with another compatible)."""
    regions = []
    for c in tree.root.children:
        compat = c.props.get("compatible")
        if compat is None or \
                abi.RESERVE_MEM_COMPATIBLE not in compat.strings():
            raise KhoError(f"{where}/{c.name}: "
                           + (f"compatible {compat.string()!r}" if compat
                              else "no compatible")
                           + f", not {abi.RESERVE_MEM_COMPATIBLE!r}")
        regions.append({"name": c.name,
                        "start": _u64(c, "start", f"{where}/{c.name}"),
                        "size": _u64(c, "size", f"{where}/{c.name}")})
    return {"regions": regions}, []


def test_kho(tree: fdtmod.Fdt, mem, where: str):
    """lib/test_kho.c: magic, folio count, checksum and the folio list.

    ``folios_info`` is an inline array of ``phys | order`` in 6.16/6.17 and
    a ``struct kho_vmalloc`` pointing at that array from 6.18.
    """
    root = tree.root
    out = {"magic": _u32(root, "magic", where)}
    if out["magic"] != abi.TEST_KHO_MAGIC:
        # test_kho's restore refuses it (-EINVAL)
        raise KhoError(f"{where}: magic 0x{out['magic']:08x}, not "
                       f"0x{abi.TEST_KHO_MAGIC:08x} (\"KHO!\")")
    data = root.child("data") or root
    nr = _u32(data, "nr_folios", where)
    out["nr_folios"] = nr
    if "csum" in data.props:
        out["csum"] = int.from_bytes(data.props["csum"].value, "little")
    info = data.props.get("folios_info")
    pages = []
    if info is None:
        raise KhoError(f"{where}: property 'folios_info' is missing")
    if len(info.value) == nr * 8 and len(info.value) != 16:
        raw = info.value
    else:
        vinfo, blocks, pages = decode_vmalloc(mem, info.value,
                                              f"{where} folios_info")
        # nr_folios is input too: the list must fit in the vmalloc area.
        if nr * 8 > vinfo["total_pages"] * PAGE_SIZE:
            raise KhoError(f"{where}: nr_folios {nr} needs {nr * 8} bytes; "
                           f"its vmalloc area holds {vinfo['total_pages']} "
                           "page(s)")
        raw, more = read_vmalloc(mem, blocks, vinfo["order"], nr * 8, where)
        pages = pages + more
        out["folios_info_vmalloc"] = vinfo
    if len(raw) != nr * 8:
        raise KhoError(f"{where}: nr_folios {nr} needs {nr * 8} bytes of "
                       f"folios_info, found {len(raw)}")
    entries = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, nr * 8, 8)]
    out["folios"] = [{"phys": e & ~abi.TEST_KHO_ORDER_MASK,
                      "order": e & abi.TEST_KHO_ORDER_MASK} for e in entries]
    return out, pages


def kexec_metadata(blob: bytes, mem, where: str):
    """7.1+ ``struct kho_kexec_metadata``."""
    if len(blob) < abi.KEXEC_METADATA.size:
        raise KhoError(f"{where}: {len(blob)} bytes, need "
                       f"{abi.KEXEC_METADATA.size}")
    version, rel, count = abi.KEXEC_METADATA.unpack_from(blob)
    if version != abi.KEXEC_METADATA_VERSION:
        # the next kernel's reader refuses it (docs/abi.md section 7.4)
        raise KhoError(f"{where}: version {version}, not "
                       f"{abi.KEXEC_METADATA_VERSION}")
    return {"version": version,
            "previous_release": rel.split(b"\0", 1)[0].decode(errors="replace"),
            "kexec_count": count}, []


def luo_ser(blob: bytes, mem, where: str):
    """7.2+ raw ``struct luo_ser``."""
    if len(blob) < abi.LUO_SER.size:
        raise KhoError(f"{where}: {len(blob)} bytes, need {abi.LUO_SER.size}")
    compat, num, sessions, flbs = abi.LUO_SER.unpack_from(blob)
    return {"compatible": compat.split(b"\0", 1)[0].decode(errors="replace"),
            "liveupdate_num": num, "sessions_pa": sessions,
            "flbs_pa": flbs}, []


def workload_table(raw: bytes, mem, where: str):
    """The vmtests' ``kho_workload`` module's item table (its contract:
    vmtests/kmod/README.md): every item with kind, state, phys, order or
    nr_pages and checksum; a vmalloc item's descriptor is followed, so that
    ``blocks`` lists every page it preserved (chunk pages in ``pages``)."""
    h = abi.WORKLOAD_HEADER
    if len(raw) < h.size:
        raise KhoError(f"{where}: item table of {len(raw)} bytes, need "
                       f"{h.size}")
    magic, version, nr = h.unpack_from(raw)
    if magic != abi.WORKLOAD_MAGIC:
        raise KhoError(f"{where}: item table magic {magic!r}, not "
                       f"{abi.WORKLOAD_MAGIC!r}")
    e = abi.WORKLOAD_ENTRY
    if len(raw) < h.size + nr * e.size:
        raise KhoError(f"{where}: {nr} items need {h.size + nr * e.size} "
                       f"bytes, the table has {len(raw)}")
    items, pages = [], []
    for i in range(nr):
        (iid, kind, phys, nr_pages, order, state, csum,
         desc, ) = e.unpack_from(raw, h.size + i * e.size)
        item = {"id": iid, "kind": abi.WORKLOAD_KINDS.get(kind, str(kind)),
                "state": abi.WORKLOAD_STATES.get(state, str(state)),
                "phys": phys, "nr_pages": nr_pages, "order": order,
                "csum": csum}
        if item["kind"] == "vmalloc" and item["state"] == "preserved":
            try:
                vinfo, blocks, vpages = decode_vmalloc(
                    mem, desc, f"{where} item {iid}")
            except KhoError as e:
                # one item's chunk list (freed once the module restored
                # it, in the next kernel) must not hide the others
                item["error"] = str(e)
                items.append(item)
                continue
            item.update(vmalloc=vinfo, blocks=blocks)
            pages += vpages
        items.append(item)
    return {"version": version, "items": items}, pages


def workload_fdt(tree: fdtmod.Fdt, mem, where: str):
    """``kho_workload`` before 7.1: an FDT whose ``items`` property is the
    table (:func:`workload_table`)."""
    p = tree.root.props.get(abi.WORKLOAD_PROP_ITEMS)
    if p is None:
        raise KhoError(f"{where}: property "
                       f"{abi.WORKLOAD_PROP_ITEMS!r} is missing")
    return workload_table(p.value, mem, where)


#: FDT blobs recognised by the sub-node name.
FDT_CLIENTS = {abi.MEMBLOCK_NODE: memblock, abi.TEST_KHO_NODE: test_kho,
               abi.WORKLOAD_NODE: workload_fdt}
#: Raw (non-FDT) blobs recognised by the sub-node name.
RAW_CLIENTS = {abi.KEXEC_METADATA_NODE: kexec_metadata, abi.LUO_NODE: luo_ser,
               abi.WORKLOAD_NODE: workload_table}

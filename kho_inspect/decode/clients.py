"""Decode the blobs of the KHO clients kho_inspect knows.

Each decoder takes the sub-node's blob (a parsed FDT for FDT_CLIENTS, bytes
for RAW_CLIENTS), the memory source and a place name for messages, and
returns a JSON-friendly dict plus the extra pages it read.
"""

from __future__ import annotations

from .. import fdt as fdtmod
from ..abi import clients as abi
from ..abi.common import MAX_REPRESENTABLE_ORDER, PAGE_SIZE, u64le
from ..errors import KhoError
from .model import MapPage
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
    for i, f in enumerate(out["folios"]):
        # 12 order bits reach 4095; a folio is a block of 4 KiB << order
        if f["order"] > MAX_REPRESENTABLE_ORDER:
            raise KhoError(f"{where}: folio #{i} at phys 0x{f['phys']:x}: "
                           f"order {f['order']} is not "
                           f"0..{MAX_REPRESENTABLE_ORDER}: no block of 4 KiB "
                           "pages that large fits in 64 bits")
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


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _page(phys: int, where: str) -> None:
    if not phys or phys % PAGE_SIZE:
        raise KhoError(f"{where}: phys 0x{phys:x} is not a page address")


def block_chain(mem, head: int, entry_size: int, where: str):
    """The entries of a 7.2+ ``kho_block`` chain starting at *head*, as
    ``(entries, blocks)``: each entry's bytes, and the phys of every block.
    The checks are ``kho_block_set_restore``'s: no cycle, at most
    KHO_MAX_BLOCKS blocks, ``1 <= count <= (block size - 16) / entry_size``.
    """
    cap = (abi.KHO_BLOCK_SIZE - abi.KHO_BLOCK_HEADER.size) // entry_size
    entries, blocks, seen, phys = [], [], set(), head
    while phys:
        if phys in seen:
            raise KhoError(f"{where}: kho_block chain loops at phys "
                           f"0x{phys:x}")
        if len(blocks) >= abi.KHO_MAX_BLOCKS:
            raise KhoError(f"{where}: kho_block chain longer than "
                           f"{abi.KHO_MAX_BLOCKS} blocks")
        _page(phys, f"{where} kho_block")
        seen.add(phys)
        raw = mem.read(phys, abi.KHO_BLOCK_SIZE, f"{where} kho_block")
        nxt, count = abi.KHO_BLOCK_HEADER.unpack_from(raw)
        if not 1 <= count <= cap:
            raise KhoError(f"{where}: kho_block at phys 0x{phys:x} holds "
                           f"{count} entries, not 1..{cap}")
        blocks.append(phys)
        off = abi.KHO_BLOCK_HEADER.size
        entries += [raw[off + i * entry_size:off + (i + 1) * entry_size]
                    for i in range(count)]
        phys = nxt
    return entries, blocks


def memfd_ser(mem, phys: int, compatible: str, where: str):
    """memfd's ``struct memfd_luo_ser`` at *phys* (its own page, preserved
    by ``kho_alloc_preserve``) and the folios its ``kho_vmalloc`` lists.

    :returns: ``(info, pages)``; ``info["folios"]`` lists each preserved
        folio's ``phys``, ``index`` (page offset in the file) and ``flags``
        (entries with pfn 0 are skipped, as memfd_luo skips them).
    """
    st = abi.MEMFD_SER[compatible]
    _page(phys, f"{where} memfd_luo_ser")
    raw = mem.read(phys, st.size, f"{where} memfd_luo_ser")
    if compatible == "memfd-v1":
        pos, size, nr, desc = st.unpack(raw)
        info = {"phys": phys, "pos": pos, "size": size, "nr_folios": nr}
    else:
        pos, size, seals, flags, nr, desc = st.unpack(raw)
        info = {"phys": phys, "pos": pos, "size": size, "seals": seals,
                "flags": flags, "nr_folios": nr}
    pages = [MapPage(phys, PAGE_SIZE, "memfd-ser")]
    if not nr:                          # an empty memfd lists nothing
        info["folios"] = []
        return info, pages
    fs = abi.MEMFD_FOLIO_SER
    vinfo, blocks, chunks = decode_vmalloc(mem, desc, f"{where} folios")
    if nr * fs.size > vinfo["total_pages"] * PAGE_SIZE:
        raise KhoError(f"{where}: nr_folios {nr} needs {nr * fs.size} bytes;"
                       f" its vmalloc area holds {vinfo['total_pages']} "
                       "page(s)")
    info.update(vmalloc=vinfo, list_chunks=[p.phys for p in chunks],
                list_blocks=blocks)
    pages += chunks + [MapPage(b, PAGE_SIZE << vinfo["order"],
                               "vmalloc-data") for b in blocks]
    data, _ = read_vmalloc(mem, blocks, vinfo["order"], nr * fs.size, where)
    mask = (1 << abi.MEMFD_PFN_BITS) - 1
    folios = []
    for i in range(nr):
        word, index = fs.unpack_from(data, i * fs.size)
        if word & mask:
            folios.append({"phys": (word & mask) * PAGE_SIZE, "index": index,
                           "flags": word >> abi.MEMFD_PFN_BITS})
    info["folios"] = folios
    return info, pages


def _luo_files(mem, files: list, where: str):
    """Decode each ``luo_file_ser`` (bytes) of one session: the handler's
    compatible, token and data; a memfd's record and folios. A file that
    does not decode gets an ``error`` and hides nothing else."""
    out, pages = [], []
    for raw in files:
        compat, data, token = abi.LUO_FILE_SER.unpack(raw)
        f = {"compatible": _cstr(compat), "token": token, "data": data}
        if f["compatible"] in abi.MEMFD_SER:
            try:
                f["memfd"], more = memfd_ser(mem, data, f["compatible"],
                                             f"{where} file {token}")
                pages += more
            except KhoError as e:
                f["error"] = str(e)
        out.append(f)
    return out, pages


def luo_session(mem, raw: bytes, chained: bool, where: str):
    """One ``luo_session_ser``: its name and files (a kho_block chain when
    *chained*, 7.2+; else an array of LUO_FILE_PGCNT pages)."""
    name, files_pa, count = abi.LUO_SESSION_SER.unpack(raw)
    s = {"name": _cstr(name), "files_pa": files_pa, "count": count,
         "file_blocks": [], "files": []}
    where = f"{where} session {s['name']!r}"
    pages = []
    try:
        if not files_pa:
            if count:
                raise KhoError(f"{where}: {count} files and no file list")
            return s, pages
        fs = abi.LUO_FILE_SER.size
        if chained:
            entries, s["file_blocks"] = block_chain(mem, files_pa, fs, where)
            s["file_block_pages"] = 1
            if len(entries) != count:
                raise KhoError(f"{where}: {len(entries)} files in its "
                               f"blocks, count says {count}")
        else:
            size = abi.LUO_FILE_PGCNT * PAGE_SIZE
            if count > size // fs:
                raise KhoError(f"{where}: {count} files, the array holds "
                               f"{size // fs}")
            _page(files_pa, f"{where} file array")
            arr = mem.read(files_pa, count * fs, f"{where} file array")
            entries = [arr[i * fs:(i + 1) * fs] for i in range(count)]
            s["file_blocks"] = [files_pa]
            s["file_block_pages"] = abi.LUO_FILE_PGCNT
        pages += [MapPage(b, s["file_block_pages"] * PAGE_SIZE, "luo-files")
                  for b in s["file_blocks"]]
        s["files"], more = _luo_files(mem, entries, where)
        pages += more
    except KhoError as e:
        s["error"] = str(e)
    return s, pages


def luo_flb(mem, phys: int, where: str):
    """The FLB header page(s): ``luo_flb_header_ser`` + ``luo_flb_ser``."""
    _page(phys, f"{where} FLB header")
    head = mem.read(phys, abi.LUO_FLB_HEADER.size, f"{where} FLB header")
    pgcnt, count = abi.LUO_FLB_HEADER.unpack(head)
    cap = (pgcnt * PAGE_SIZE - abi.LUO_FLB_HEADER.size) // abi.LUO_FLB_SER.size
    if not 1 <= pgcnt <= 1024 or count > cap:
        raise KhoError(f"{where}: FLB header at phys 0x{phys:x}: pgcnt "
                       f"{pgcnt}, count {count}")
    raw = mem.read(phys + abi.LUO_FLB_HEADER.size,
                   count * abi.LUO_FLB_SER.size, f"{where} FLB entries")
    entries = []
    for i in range(count):
        n, data, c = abi.LUO_FLB_SER.unpack_from(raw, i * abi.LUO_FLB_SER.size)
        entries.append({"name": _cstr(n), "data": data, "count": c})
    return ({"phys": phys, "pgcnt": pgcnt, "entries": entries},
            [MapPage(phys, pgcnt * PAGE_SIZE, "luo-flb")])


def _luo_follow(out: dict, mem, where: str, flb_pa: int, sessions):
    """Fill *out* with the FLB header and the sessions; *sessions* is a
    callable giving ``(session entries, chained, session pages)``. A part
    that does not decode leaves a one-line error (``flb_error``,
    ``sessions_error``, or the session's or file's ``error``) and hides
    nothing else."""
    pages = []
    if flb_pa:
        try:
            out["flb"], more = luo_flb(mem, flb_pa, where)
            pages += more
        except KhoError as e:
            out["flb_error"] = str(e)
    out["sessions"] = []
    try:
        entries, chained, more = sessions()
    except KhoError as e:
        out["sessions_error"] = str(e)
        return pages
    pages += more
    for raw in entries:
        s, more = luo_session(mem, raw, chained, where)
        out["sessions"].append(s)
        pages += more
    return pages


def luo_ser(blob: bytes, mem, where: str):
    """7.2+ raw ``struct luo_ser``; with a ``luo-v5`` compatible, its FLB
    header and the sessions' kho_block chain, each session's file chain
    and each memfd's record and folios (``sessions_pa`` is 0 until the
    reboot path serializes: then no session is listed)."""
    if len(blob) < abi.LUO_SER.size:
        raise KhoError(f"{where}: {len(blob)} bytes, need {abi.LUO_SER.size}")
    compat, num, sessions, flbs = abi.LUO_SER.unpack_from(blob)
    out = {"compatible": _cstr(compat), "liveupdate_num": num,
           "sessions_pa": sessions, "flbs_pa": flbs}
    if out["compatible"] != abi.LUO_SER_COMPATIBLE:
        return out, []                  # not a layout we know: not followed

    def chain():
        if not sessions:
            return [], True, []
        entries, blocks = block_chain(mem, sessions,
                                      abi.LUO_SESSION_SER.size,
                                      f"{where} sessions")
        out["session_blocks"], out["session_block_pages"] = blocks, 1
        return entries, True, [MapPage(b, PAGE_SIZE, "luo-sessions")
                               for b in blocks]
    return out, _luo_follow(out, mem, where, flbs, chain)


def luo_fdt(tree: fdtmod.Fdt, mem, where: str):
    """6.19-7.1 ``luo-v1`` FDT: ``liveupdate-number``; ``luo-session``'s
    header (``{u64 count}`` + sessions, LUO_SESSION_PGCNT pages, preserved
    from boot; count is 0 until the reboot path serializes); 7.1's
    ``luo-flb`` header; each session's file array and memfds."""
    root = tree.root
    out = {"liveupdate_num": _u64(root, abi.LUO_FDT_LIVEUPDATE_NUM, where)}
    fl = root.child(abi.LUO_FLB_NODE)
    flb_pa = _u64(fl, abi.LUO_FLB_HEADER_PROP, f"{where}/{abi.LUO_FLB_NODE}") \
        if fl is not None else 0

    def header():
        sn = root.child(abi.LUO_SESSION_NODE)
        w = f"{where}/{abi.LUO_SESSION_NODE}"
        if sn is None:
            raise KhoError(f"{where}: no {abi.LUO_SESSION_NODE!r} node")
        compat = sn.props.get("compatible")
        if compat is None or \
                abi.LUO_SESSION_COMPATIBLE not in compat.strings():
            raise KhoError(f"{w}: compatible "
                           f"{compat.string() if compat else None!r}, not "
                           f"{abi.LUO_SESSION_COMPATIBLE!r}")
        phys = _u64(sn, abi.LUO_SESSION_HEADER, w)
        _page(phys, f"{w} header")
        out["session_blocks"] = [phys]
        out["session_block_pages"] = abi.LUO_SESSION_PGCNT
        pages = [MapPage(phys, abi.LUO_SESSION_PGCNT * PAGE_SIZE,
                         "luo-sessions")]
        return session_array(mem, phys, w), False, pages
    return out, _luo_follow(out, mem, where, flb_pa, header)


def session_array(mem, phys: int, where: str) -> list[bytes]:
    """6.19/7.1: the ``luo_session_ser`` entries after the ``{u64 count}``
    header at *phys* (LUO_SESSION_PGCNT pages)."""
    count = u64le(mem.read(phys, 8, f"{where} header"))
    ss = abi.LUO_SESSION_SER.size
    if count > (abi.LUO_SESSION_PGCNT * PAGE_SIZE - 8) // ss:
        raise KhoError(f"{where}: header at phys 0x{phys:x}: count {count} "
                       "does not fit its pages")
    raw = mem.read(phys + 8, count * ss, f"{where} sessions")
    return [raw[i * ss:(i + 1) * ss] for i in range(count)]


def _workload_item_fields(item: dict, where: str) -> None:
    """The bounds the module's reader puts on an item (kw_read_table), and
    an order that is a block's: else a one-line KhoError naming the field.
    A scatter item without a stride (tables from before the field) counts
    as stride 1."""
    kind, nr = item["kind"], item["nr_pages"]
    span = nr * (item.get("stride") or 1)
    if not 1 <= nr or span > abi.WORKLOAD_MAX_PAGES:
        raise KhoError(f"{where}: {kind} nr_pages {nr}"
                       + (f" x stride {item['stride']}" if "stride" in item
                          else "")
                       + f" is not 1..{abi.WORKLOAD_MAX_PAGES} pages "
                       "(KW_MAX_PAGES): the module's reader refuses the "
                       "table")
    if kind in abi.WORKLOAD_ORDERED and \
            not 0 <= item["order"] <= MAX_REPRESENTABLE_ORDER:
        raise KhoError(f"{where}: {kind} order {item['order']} is not "
                       f"0..{MAX_REPRESENTABLE_ORDER}: no block of 4 KiB "
                       "pages that large fits in 64 bits")


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
    ent = abi.WORKLOAD_ENTRY
    if len(raw) < h.size + nr * ent.size:
        raise KhoError(f"{where}: {nr} items need {h.size + nr * ent.size} "
                       f"bytes, the table has {len(raw)}")
    items, pages = [], []
    for i in range(nr):
        (iid, kind, phys, nr_pages, order, state, csum,
         desc, stride) = ent.unpack_from(raw, h.size + i * ent.size)
        item = {"id": iid, "kind": abi.WORKLOAD_KINDS.get(kind, str(kind)),
                "state": abi.WORKLOAD_STATES.get(state, str(state)),
                "phys": phys, "nr_pages": nr_pages, "order": order,
                "csum": csum}
        if item["kind"] == "scatter":
            item["stride"] = stride
        # one item's bad field or chunk list (freed once the module
        # restored it, in the next kernel) must not hide the others
        try:
            _workload_item_fields(item, f"{where} item {iid}")
            if item["kind"] == "vmalloc" and item["state"] == "preserved":
                vinfo, blocks, vpages = decode_vmalloc(
                    mem, desc, f"{where} item {iid}")
                item.update(vmalloc=vinfo, blocks=blocks)
                pages += vpages
        except KhoError as err:
            item["error"] = str(err)
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
               abi.LUO_NODE: luo_fdt,
               abi.WORKLOAD_NODE: workload_fdt}
#: Raw (non-FDT) blobs recognised by the sub-node name.
RAW_CLIENTS = {abi.KEXEC_METADATA_NODE: kexec_metadata, abi.LUO_NODE: luo_ser,
               abi.WORKLOAD_NODE: workload_table}

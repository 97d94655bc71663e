"""kho_inspect/walk/luo.py against kernel DWARF over hand-made memory: a
LUO session with one memfd, laid out as each kernel's own types say
(struct luo_session, luo_file, kho_block_set or the 6.19/7.1 arrays), at
addresses chosen here; the walker's claims must be exactly those pages.
Run on every kernel with LUO (6.19+) of tests/variants.py: the synthetic
6.19, 7.1 and 7.3 variants always, the vmtest builds when cached."""

import struct

import drgn
import pytest

import variants
from walk_synth import PAGE, SynthKernel

from kho_inspect.check.owners import live_claims
from kho_inspect.walk.luo import luo_sessions


class Obj:
    """Bytes of one kernel object, written member by member."""

    def __init__(self, k, tname):
        self.k, self.t = k, k.prog.type(tname)
        self.b = bytearray(drgn.sizeof(self.t))

    def put(self, member, value, fmt="<Q"):
        struct.pack_into(fmt, self.b, drgn.offsetof(self.t, member), value)
        return self

    def raw(self, member, data):
        o = drgn.offsetof(self.t, member)
        self.b[o:o + len(data)] = data
        return self

    def at(self, phys):
        self.k.write_phys(phys, bytes(self.b))
        return self.k.virt(phys)


def _list(k, head_virt, entries):
    """Link *entries* (virtual addresses of their list_heads) into a
    circular list headed at *head_virt*; returns the bytes of the head."""
    ring = [head_virt] + entries
    for i, node in enumerate(entries, 1):
        nxt, prv = ring[(i + 1) % len(ring)], ring[i - 1]
        k.write_phys(node - k.virt(0), struct.pack("<QQ", nxt, prv))
    return struct.pack("<QQ", ring[1 % len(ring)], ring[-1])


def _memfd(k, where):
    """memfd_luo_ser (memfd-v2 layout when the kernel has seals) at
    *where*, its kho_vmalloc naming one chunk and one page of two folio
    entries: 0x31000000 and 0x31004000."""
    chunk, arr = where + PAGE, where + 2 * PAGE
    seals = "seals" in [m.name for m in
                        k.prog.type("struct memfd_luo_ser").members]
    desc = struct.pack("<QIHH", chunk, 1, 1, 0)
    ser = (struct.pack("<QQIIQ", 0, 2 * PAGE, 0, 0, 2) if seals else
           struct.pack("<QQQ", 0, 2 * PAGE, 2)) + desc
    k.write_phys(where, ser)
    k.write_phys(chunk, struct.pack("<QQ", 0, arr))
    k.write_phys(arr, struct.pack("<QQQQ", (0x31000000 >> 12) | 3 << 52, 0,
                                  (0x31004000 >> 12) | 3 << 52, 1))
    return "memfd-v2" if seals else "memfd-v1", {where, chunk, arr,
                                                 0x31000000, 0x31004000}


#: LUO arrived in 6.19 (kernel/liveupdate/luo_*.c)
@pytest.fixture(params=variants.params(variants.since("6.19")),
                scope="module")
def luo_dwarf(request, kdwarf):
    return variants.resolve(request.param, kdwarf)


def test_walker_claims_the_session(luo_dwarf, tmp_path):
    k = SynthKernel.of(luo_dwarf, tmp_path)
    g = k.prog["luo_session_global"]
    chained = "block_set" in [m.name for m in g.outgoing.type_.members]
    base = 0x30000000
    compat, want = _memfd(k, base + 0x10000)
    fh = Obj(k, "struct liveupdate_file_handler").raw(
        "compatible", compat.encode()).at(base + 0x20000)
    f_virt = k.virt(base + 0x21000)
    lf = Obj(k, "struct luo_file").put("fh", fh).put(
        "serialized_data", base + 0x10000).put("token", 77)
    s_phys = base + 0x22000
    s_virt = k.virt(s_phys)
    sess = Obj(k, "struct luo_session").raw("name", b"synth-s")
    fl_off = drgn.offsetof(sess.t, "file_set.files_list")
    lf_list = f_virt + drgn.offsetof(lf.t, "list")
    lf.at(base + 0x21000)
    sess.raw("file_set.files_list", _list(k, s_virt + fl_off, [lf_list]))
    kb_t = k.prog.type("struct kho_block") if chained else None
    if chained:
        # the session's file block and the outgoing session block: a
        # struct kho_block each, its ser a preserved page
        files_page, sessions_page = base + 0x40000, base + 0x41000
        kb1 = Obj(k, "struct kho_block").put("ser", k.virt(files_page))
        kb1.at(base + 0x23000)
        bs = drgn.offsetof(sess.t, "file_set.block_set.blocks")
        sess.raw("file_set.block_set.blocks", _list(
            k, s_virt + bs, [k.virt(base + 0x23000)
                             + drgn.offsetof(kb_t, "list")]))
    else:
        files_page, sessions_page = base + 0x40000, base + 0x50000
        sess.put("file_set.files", k.virt(files_page))
    sess.put("file_set.count", 1)
    sess.at(s_phys)
    # luo_session_global: outgoing holds the session; incoming is empty
    gaddr = g.address_
    out_off = drgn.offsetof(g.type_, "outgoing")
    in_off = drgn.offsetof(g.type_, "incoming")
    sh_t = g.outgoing.type_
    head = gaddr + out_off + drgn.offsetof(sh_t, "list")
    k.write_kvirt(head, _list(k, head, [s_virt + drgn.offsetof(sess.t,
                                                               "list")]))
    ihead = gaddr + in_off + drgn.offsetof(sh_t, "list")
    k.write_kvirt(ihead, struct.pack("<QQ", ihead, ihead))
    if chained:
        kb2 = Obj(k, "struct kho_block").put("ser", k.virt(sessions_page))
        kb2.at(base + 0x24000)
        bl = gaddr + out_off + drgn.offsetof(sh_t, "block_set.blocks")
        k.write_kvirt(bl, _list(k, bl, [k.virt(base + 0x24000)
                                        + drgn.offsetof(kb_t, "list")]))
        ibl = gaddr + in_off + drgn.offsetof(sh_t, "block_set.blocks")
        k.write_kvirt(ibl, struct.pack("<QQ", ibl, ibl))
    else:
        k.write_kvirt(gaddr + out_off + drgn.offsetof(sh_t, "header_ser"),
                      struct.pack("<Q", k.virt(sessions_page)))
    want |= {files_page, sessions_page}
    try:
        flb = k.prog["luo_flb_global"]
    except KeyError:
        flb = None
    if flb is not None:
        flb_page = base + 0x60000
        k.write_phys(flb_page, struct.pack("<QQ", 1, 0))
        k.write_kvirt(flb.address_ + drgn.offsetof(
            flb.type_, "outgoing.header_ser"),
            struct.pack("<Q", k.virt(flb_page)))
        want.add(flb_page)

    st = luo_sessions(k.prog)
    out = next(s for s in st if s["direction"] == "outgoing")
    (s,) = out["sessions"]
    assert s["name"] == "synth-s" and s["file_blocks"] == [files_page]
    (f,) = s["files"]
    assert (f["compatible"], f["token"]) == (compat, 77)
    assert [x["phys"] for x in f["memfd"]["folios"]] == [0x31000000,
                                                        0x31004000]
    cls = live_claims(k.prog)
    assert {c.phys for c in cls} == want
    assert all(c.owner == "LUO" for c in cls)
    whats = {c.phys: c.what for c in cls}
    assert whats[0x31004000] == "session synth-s memfd 77 folio"
    assert whats[files_page] == "session synth-s files"
    orders = {c.phys: c.order for c in cls}
    # kho_alloc_preserve: one page (7.2+ blocks) is order 0; 6.19/7.1's
    # 16-page session header order 4, 2-page file array order 1
    assert (orders[sessions_page], orders[files_page]) == \
        ((0, 0) if chained else (4, 1))


@pytest.mark.parametrize("variant", variants.params(variants.before("6.19")))
def test_no_luo_no_claims(variant, kdwarf, tmp_path):
    """A kernel without luo_session_global (6.17, 6.18): nothing,
    silently."""
    d = variants.resolve(variant, kdwarf)
    k = SynthKernel.of(d, tmp_path)
    assert luo_sessions(k.prog) == [] and live_claims(k.prog) == []

"""LUO's sessions as the running kernel holds them (drgn, DWARF).

The Live Update Orchestrator (kernel/liveupdate/luo_*.c, 6.19+) preserves
its records through KHO as soon as userspace creates a session or preserves
a file, but writes where they are into its ``LUO`` sub-node only when the
reboot path serializes (7.2+: ``luo_ser.sessions_pa`` is 0 until then;
6.19/7.1: the session header's count is 0). Before that only the kernel's
own lists say which preserved blocks are LUO's: ``luo_session_global``
(outgoing: the sessions of this kernel; incoming: those handed over and not
yet finished), each ``struct luo_session``'s ``file_set`` and each
``struct luo_file``.

:func:`luo_sessions` returns them in the form the decoder gives for a
serialized ``LUO`` blob (kho_inspect.decode.clients.luo_ser/luo_fdt), so
that one function (check/owners.py) turns both into claims. A memfd's
record and folio list are read with the decoder's
:func:`~kho_inspect.decode.clients.memfd_ser` (they are in preserved memory
from the moment the file is preserved).

Layouts are probed by type and member, never by release:

- ``struct kho_block_set`` (``block_set`` members; 7.2, with the kho_block
  ABI, include/linux/kho_block.h): the session and file records live in a
  list of ``struct kho_block`` whose ``ser`` is a preserved page.
- 6.19/7.1: ``luo_session_header.header_ser`` (LUO_SESSION_PGCNT pages) and
  ``luo_file_set.files`` (LUO_FILE_PGCNT pages).
- ``luo_flb_global`` (7.1+): its FLB header pages (outgoing, incoming).
"""

from __future__ import annotations

import drgn
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.mm import virt_to_phys

from ..abi import clients as abi
from ..decode.clients import (block_chain, luo_flb, luo_session, memfd_ser,
                              session_array)
from ..errors import KhoError
from ..memory import PhysMemory
from ._read import reading


def _has_member(obj: drgn.Object, name: str) -> bool:
    try:
        obj.member_(name)
        return True
    except LookupError:
        return False


def _phys(ptr: drgn.Object) -> int:
    return virt_to_phys(ptr).value_() if ptr.value_() else 0


def _blocks(bs: drgn.Object) -> list[int]:
    """The phys of every page of a ``struct kho_block_set``."""
    return [_phys(b.ser) for b in
            list_for_each_entry("struct kho_block", bs.blocks.address_of_(),
                                "list")]


def _files(mem, fset: drgn.Object, where: str) -> dict:
    """A session's ``luo_file_set``: the pages of its file records and each
    ``struct luo_file`` (handler compatible, token, and a memfd's record and
    folios)."""
    out: dict = {}
    if _has_member(fset, "block_set"):                  # 7.2+
        out["file_blocks"] = _blocks(fset.block_set)
        out["file_block_pages"] = 1
    else:                                               # 6.19/7.1
        p = _phys(fset.files)
        out["file_blocks"] = [p] if p else []
        out["file_block_pages"] = abi.LUO_FILE_PGCNT
    files = []
    for f in list_for_each_entry("struct luo_file",
                                 fset.files_list.address_of_(), "list"):
        compat = f.fh.compatible.string_().decode(errors="replace")
        d = {"compatible": compat, "token": f.token.value_(),
             "data": f.serialized_data.value_()}
        # an incoming file already retrieved has handed its record back
        # (memfd_luo_retrieve: kho_restore_free)
        done = _has_member(f, "retrieve_status") and \
            f.retrieve_status.value_() != 0
        if compat in abi.MEMFD_SER and d["data"] and not done:
            try:
                d["memfd"], _ = memfd_ser(mem, d["data"], compat,
                                          f"{where} file {d['token']}")
            except KhoError as e:
                d["error"] = str(e)
        files.append(d)
    out["files"] = files
    return out


def _header(mem, sh: drgn.Object, direction: str) -> dict:
    where = f"LUO {direction} sessions"
    out: dict = {"direction": direction, "sessions": []}
    if _has_member(sh, "block_set"):                    # 7.2+
        out["session_blocks"] = _blocks(sh.block_set)
        out["session_block_pages"] = 1
        head = sh.block_set.head_pa.value_()
        chained = True
    else:                                               # 6.19/7.1
        head = _phys(sh.header_ser)
        out["session_blocks"] = [head] if head else []
        out["session_block_pages"] = abi.LUO_SESSION_PGCNT
        chained = False
    listed = False
    for s in list_for_each_entry("struct luo_session", sh.list.address_of_(),
                                 "list"):
        listed = True
        name = s.name.string_().decode(errors="replace")
        d = {"name": name}
        try:
            with reading(mem.prog, f"{where} {name!r}: its files"):
                d.update(_files(mem, s.file_set, f"{where} {name!r}"))
        except KhoError as e:
            d["error"] = str(e)
        out["sessions"].append(d)
    if direction == "incoming" and not listed and head:
        # handed over, not yet deserialized (/dev/liveupdate not opened):
        # the records are still only in the blocks
        try:
            entries = block_chain(mem, head, abi.LUO_SESSION_SER.size,
                                  where)[0] if chained else \
                session_array(mem, head, where)
            for raw in entries:
                out["sessions"].append(
                    luo_session(mem, raw, chained, where)[0])
        except KhoError as e:
            out["sessions_error"] = str(e)
    return out


def luo_sessions(prog: drgn.Program) -> list[dict]:
    """LUO's outgoing and incoming state, each a dict shaped like the
    decoded ``LUO`` content plus ``direction``. Empty when the kernel has
    no LUO (no ``luo_session_global``)."""
    try:
        glob = prog["luo_session_global"]
    except KeyError:
        return []
    mem = PhysMemory(prog, "the kernel's LUO sessions")
    out = []
    for direction in ("outgoing", "incoming"):
        with reading(prog, f"luo_session_global.{direction}"):
            st = _header(mem, glob.member_(direction), direction)
        out.append(st)
    # The FLB header page (7.1+): the incoming one is never handed back
    # (7.3.4's luo_flb.c only reads it), so it stays preserved.
    try:
        flbs = prog["luo_flb_global"]
    except KeyError:
        return out
    for st in out:
        where = f"luo_flb_global.{st['direction']}.header_ser"
        with reading(prog, where):
            p = _phys(flbs.member_(st["direction"]).header_ser)
        if p:
            try:
                st["flb"], _ = luo_flb(mem, p, f"LUO {st['direction']}")
            except KhoError as e:
                st["flb_error"] = str(e)
    return out

"""What kho_inspect/walk/luo.py probes, and the record sizes the decoder
assumes (kho_inspect/abi/clients.py), against the DWARF of every vmtest
build with LUO (6.19+; a skip naming the build when the cache lacks it).
The synthetic LUO variants (tests/kdwarf/kernel.c) run the same checks as a
self-check of that file.

The sizes here are the kernel's, from its DWARF: an oracle independent of
the sizes written in kho_inspect.abi."""

import os
import sys

import drgn
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import variants  # noqa: E402
from walk_synth import types_program  # noqa: E402

from kho_inspect.abi import clients as abi  # noqa: E402


def _size(prog, name):
    try:
        return drgn.sizeof(prog.type(name))
    except LookupError:
        return None


def _member(prog, tname, member):
    try:
        prog.type(tname).member(member)
        return True
    except LookupError:
        return False


#: LUO arrived in 6.19: every build and synthetic variant from there on
@pytest.fixture(scope="module", params=variants.params(
    variants.since("6.19", variants.BUILDS + variants.SYNTH)))
def prog(request, kdwarf, tmp_path_factory):
    d = variants.resolve(request.param, kdwarf)
    p = types_program(d.vmlinux, str(tmp_path_factory.mktemp("luo")))
    try:
        p["luo_session_global"]
    except KeyError:
        pytest.fail(f"{d.id} ({d.release}): no luo_session_global, but LUO "
                    "is in every kernel since 6.19 (CONFIG_LIVEUPDATE is in "
                    "vmtests/kho.config)")
    return p


def test_record_sizes(prog):
    assert _size(prog, "struct luo_session_ser") == abi.LUO_SESSION_SER.size
    assert _size(prog, "struct luo_file_ser") == abi.LUO_FILE_SER.size
    if _size(prog, "struct luo_flb_ser") is not None:
        assert _size(prog, "struct luo_flb_ser") == abi.LUO_FLB_SER.size
        assert _size(prog, "struct luo_flb_header_ser") == \
            abi.LUO_FLB_HEADER.size
    if _size(prog, "struct luo_ser") is not None:          # 7.2+
        assert _size(prog, "struct luo_ser") == abi.LUO_SER.size
        assert _size(prog, "struct kho_block_header_ser") == \
            abi.KHO_BLOCK_HEADER.size
    m = _size(prog, "struct memfd_luo_ser")
    if m is not None:
        # memfd-v2 has seals and flags
        v = "memfd-v2" if _member(prog, "struct memfd_luo_ser", "seals") \
            else "memfd-v1"
        assert m == abi.MEMFD_SER[v].size
        assert _size(prog, "struct memfd_luo_folio_ser") == \
            abi.MEMFD_FOLIO_SER.size


def test_walker_members(prog):
    """One session layout and one file-set layout, as walk/luo.py probes."""
    sh = prog["luo_session_global"].outgoing
    blocks = _member(prog, "struct luo_file_set", "block_set")
    assert blocks == any(m.name == "block_set" for m in sh.type_.members)
    if not blocks:
        assert _member(prog, "struct luo_file_set", "files")
        assert any(m.name == "header_ser" for m in sh.type_.members)
    else:
        assert _member(prog, "struct kho_block_set", "blocks")
        assert _member(prog, "struct kho_block", "ser")
        assert _member(prog, "struct kho_block_set", "head_pa")
    for t, mm in (("struct luo_session", ("name", "list", "file_set")),
                  ("struct luo_file_set", ("files_list",)),
                  ("struct luo_file", ("fh", "serialized_data", "token",
                                       "list", "retrieve_status")),
                  ("struct liveupdate_file_handler", ("compatible",))):
        for m in mm:
            assert _member(prog, t, m), (t, m)

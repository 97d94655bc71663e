"""One policy for memory faults (issue #9 section 3): the decoder, the walker,
walk/fdt.py, the CLI and the drgn scripts all turn what drgn raises for
memory it cannot deliver into one line naming what was read, where, and in
which source; nothing reaches the user as a traceback."""

import os
import re
import subprocess
import sys

import drgn
import pytest

from helpers import mem
from kho_inspect import memory, walk
from kho_inspect.cli import main
from kho_inspect.errors import KhoError, MemoryFault

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KHO_OUT = 0xffffffff82000000


def synthetic_kernel(filtered=True):
    """A drgn program with a hand-made ``struct kho_out`` (6.19+ layout:
    ``void *fdt; bool finalized``) whose memory is absent, as in a dump
    whose pages makedumpfile filtered out."""
    prog = drgn.Program(memory.x86_64_platform())
    ptr = prog.pointer_type(prog.void_type())
    kho_out = prog.struct_type("kho_out", 16, [
        drgn.TypeMember(ptr, "fdt", 0),
        drgn.TypeMember(prog.bool_type("_Bool", 1), "finalized", 64)])

    def finder(prog, name, flags, filename):
        if name == "kho_out":
            return drgn.Object(prog, kho_out, address=KHO_OUT)
        return None
    prog.register_object_finder("test", finder, enable_index=0)
    memory.name_source(prog, "core /x/vmcore", filtered=filtered)
    return prog


def test_walk_fdt_reads_go_through_the_policy():
    prog = synthetic_kernel()
    with pytest.raises(KhoError) as e:
        walk.outgoing_fdt_phys(prog)
    msg = str(e.value)
    assert msg.startswith(f"cannot read kho_out.fdt at 0x{KHO_OUT:x}: ")
    assert "in core /x/vmcore" in msg and "makedumpfile" in msg
    with pytest.raises(KhoError, match=r"cannot read kho_out.finalized at "
                       f"0x{KHO_OUT + 8:x}"):
        walk.is_finalized(prog)


def test_message_says_filtered_only_where_pages_can_be():
    e = drgn.FaultError("could not find memory segment", 0x1000)
    dump = memory.fault_message(synthetic_kernel(True), "x", e)
    image = memory.fault_message(synthetic_kernel(False), "x", e)
    assert "makedumpfile" in dump and "makedumpfile" not in image


def test_decoder_reads_name_phys_and_source():
    with pytest.raises(MemoryFault) as e:
        mem([]).read(0x123000, 0x1000, "radix-table root")
    assert str(e.value).startswith("cannot read radix-table root at phys "
                                   "0x123000 (+0x1000): ")
    assert str(e.value).endswith(" in test")


@pytest.mark.parametrize("exc, why", [
    (OSError(22, "Invalid argument"), "cannot be read there (Invalid "
     "argument)"),
    (MemoryError(), "more than this machine can allocate"),
])
def test_os_and_allocation_failures_are_faults_too(exc, why):
    class Prog:
        flags = drgn.ProgramFlags(0)
        cache: dict = {}

        def read(self, *a):
            raise exc
    with pytest.raises(KhoError, match=re.escape(why)):
        memory.read(Prog(), 0x1000, 8, "a page")
    with pytest.raises(MemoryFault, match=re.escape(why)):
        memory.PhysMemory(Prog(), "test").read(0x1000, 8, "a page")


def test_decoder_dwarf_fallback_on_a_filtered_dump(tmp_path, monkeypatch,
                                                   capsys):
    # map -c VMCORE -s VMLINUX: no image note, so the root FDT comes from
    # kho_out.fdt, whose page the dump lacks. Used to be a traceback.
    from kho_inspect.cli import source
    core = tmp_path / "vmcore"
    core.write_bytes(_tiny_core())
    prog = synthetic_kernel()
    monkeypatch.setattr(source.Source, "debug_program", lambda self: prog)
    for cmd in ("map", "fdt", "capture"):
        argv = [cmd, "--core", str(core)]
        if cmd == "capture":
            argv += ["-o", str(tmp_path / "h.core")]
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 2 and out == "", err
        assert err.count("\n") == 1
        assert err.startswith("kho-inspect: error: cannot read kho_out.fdt "
                              f"at 0x{KHO_OUT:x}")
    assert os.listdir(tmp_path) == ["vmcore"]


def _tiny_core() -> bytes:
    import struct
    eh = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9),
                     4, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 4, 120, 0x1000, 0x1000, 4096, 4096,
                     4096)
    return eh + ph + bytes(4096)


@pytest.mark.parametrize("exc, pattern", [
    (drgn.FaultError("could not find memory segment", 0xdead000),
     "cannot read kernel memory at 0xdead000: could not find memory "
     "segment"),
    (OSError(5, "Input/output error"), "Input/output error"),
    (MemoryError(), "out of memory"),
])
def test_stray_faults_in_any_command_are_one_line(monkeypatch, capsys, exc,
                                                  pattern):
    # A read outside every reading() block (a drgn helper deep in a view).
    from kho_inspect.cli import walker

    def view(*a, **kw):
        raise exc
    monkeypatch.setattr(walker, "_program", lambda args: None)
    monkeypatch.setattr("kho_inspect.walk.views.status_view", view)
    monkeypatch.setattr("kho_inspect.walk.views.tracker_view", view)
    for cmd in ("status", "tracker"):
        rc = main([cmd])
        out, err = capsys.readouterr()
        assert rc == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith("kho-inspect: error: ") and pattern in err


def test_drgn_scripts_use_the_same_policy():
    # scripts/_common.run, as drgn runs kho_status.py: a fault in the view
    # is one line and exit 2, worded like the CLI's.
    code = """
import sys
sys.path.insert(0, "scripts")
sys.path.insert(0, "tests")
import drgn
import _common
from test_robust_faults import synthetic_kernel
def view(prog):
    from kho_inspect import walk
    return {"phys": walk.outgoing_fdt_phys(prog)}
_common.run(view, str, ["kho_status.py"], prog=synthetic_kernel())
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 2 and p.stdout == "", p.stderr
    assert p.stderr.count("\n") == 1
    assert p.stderr.startswith("kho_status.py: error: cannot read "
                               f"kho_out.fdt at 0x{KHO_OUT:x}")


def test_stray_fault_in_a_drgn_script():
    code = """
import sys
sys.path.insert(0, "scripts")
import drgn
import _common
from kho_inspect import memory
prog = drgn.Program(memory.x86_64_platform())
def view(prog):
    prog.read(0xffff888000100000, 8)
_common.run(view, str, ["kho_tracker.py"], prog=prog)
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 2 and p.stdout == "", p.stderr
    assert p.stderr.count("\n") == 1
    assert p.stderr.startswith("kho_tracker.py: error: cannot read kernel "
                               "memory at 0xffff888000100000")


def test_one_place_turns_faults_into_errors():
    """Only kho_inspect/memory.py converts drgn's faults; other code may
    catch FaultError only to record what it could not read (the memmap
    scan), never to word its own message."""
    found = []
    for top in ("kho_inspect", "scripts"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.relpath(os.path.join(d, f), ROOT)
                text = open(os.path.join(ROOT, path)).read()
                if re.search(r"except[^:\n]*FaultError", text):
                    found.append(path)
    assert set(found) <= {"kho_inspect/memory.py",
                          "kho_inspect/walk/incoming.py"}, found

"""The dumps users really have: makedumpfile's kdump-compressed files and its
filtered ELF files (issue #9 section 2; the vmtest is S7, vmtests/run).

The files here are built by hand from the formats' own descriptions (an ELF
core whose PT_LOAD declares more memory than it holds, as ``makedumpfile -E
-d 31`` writes; the ``KDUMP   `` signature of ``makedumpfile -c``), not with
kho_inspect's writers.
"""

import functools
import json
import struct
import subprocess
import sys

import pytest

from kho_inspect.cli import main
from kho_inspect.image import read_image_meta
from kho_inspect.memory import elf_holes

PT_LOAD, PT_NOTE = 1, 4


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    def pad(b):
        return b + bytes(-len(b) % 4)
    return (struct.pack("<III", len(name) + 1, len(desc), ntype)
            + pad(name + b"\0") + pad(desc))


def elf_core(loads, vmcoreinfo=True) -> bytes:
    """An x86-64 ELF core: *loads* is a list of (paddr, data, memsz); a
    VMCOREINFO note makes drgn take it for a kernel dump (and zero-fill
    memory past a segment's file data, as it does for makedumpfile -E)."""
    notes = note(b"VMCOREINFO", 0, b"OSRELEASE=6.17.8\nPAGESIZE=4096\n"
                 b"KERNELOFFSET=0\nSYMBOL(swapper_pg_dir)=ffffffff82000000\n"
                 ) if vmcoreinfo else b""
    phnum = len(loads) + 1
    off = 64 + 56 * phnum
    ehdr = struct.pack("<4s5B7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0,
                       bytes(7), 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0,
                       0)
    phdrs = [struct.pack("<IIQQQQQQ", PT_NOTE, 0, off, 0, 0, len(notes), 0,
                         4)]
    off += len(notes)
    body = notes
    for paddr, data, memsz in loads:
        phdrs.append(struct.pack("<IIQQQQQQ", PT_LOAD, 4, off,
                                 0xffff888000000000 + paddr, paddr,
                                 len(data), memsz, 4096))
        off += len(data)
        body += data
    return ehdr + b"".join(phdrs) + body


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, out, err):
    assert rc == 2, (rc, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kho-inspect: error: "), err
    return lines[0]


def test_elf_holes_are_memory_past_file_data_not_held_elsewhere(tmp_path):
    core = tmp_path / "vmcore"
    core.write_bytes(elf_core([
        (0x100000, bytes(0x1000), 0x10000),    # hole 0x101000-0x110000
        (0x104000, bytes(0x2000), 0x2000),     # ... but 0x104000-6000 held
        (0x200000, bytes(0x1000), 0x1000),     # whole: no hole
    ]))
    assert elf_holes(str(core)) == [(0x101000, 0x104000),
                                    (0x106000, 0x110000)]
    assert elf_holes(str(tmp_path / "missing")) == []
    (tmp_path / "junk").write_bytes(b"KDUMP   " + bytes(100))
    assert elf_holes(str(tmp_path / "junk")) == []


def test_filtered_elf_page_is_one_line_naming_it(tmp_path, capsys):
    """drgn reads memory past a kernel core segment's file data as zeros;
    the decoder must say the page was filtered, not decode the zeros
    ("bad magic 0x00000000")."""
    core = tmp_path / "kdump-E-d31.elf"
    core.write_bytes(elf_core([(0x100000, b"\xd0\x0d\xfe\xed".ljust(0x1000,
                                                                 b"\0"),
                                0x10000)]))
    import drgn
    prog = drgn.Program()
    prog.set_core_dump(str(core))
    assert prog.read(0x108000, 8, True) == bytes(8)     # drgn's zero fill
    line = one_line_error(*run(capsys, "map", "--core", str(core),
                               "--fdt-phys", "0x108000"))
    assert "0x108000" in line and "filtered" in line, line
    assert "magic" not in line


def test_missing_page_of_a_dump_names_filtering(tmp_path, capsys):
    core = tmp_path / "vmcore"
    core.write_bytes(elf_core([(0x100000, bytes(0x1000), 0x1000)]))
    line = one_line_error(*run(capsys, "map", "--core", str(core),
                               "--fdt-phys", "0x300000"))
    assert "0x300000" in line and "filtered" in line, line


@pytest.mark.parametrize("magic", [b"KDUMP   ", b"DISKDUMP"])
def test_kdump_compressed_is_a_vmcore_not_a_bad_elf(tmp_path, capsys, magic):
    """makedumpfile -c (the distributions' default) writes the kdump
    format: drgn opens it (libkdumpfile), so kho_inspect must hand it to
    drgn rather than refuse it as "not an ELF file"."""
    f = tmp_path / "kdump-c-d31"
    f.write_bytes(magic + bytes(4088))          # a header and nothing else
    assert read_image_meta(str(f)) is None
    line = one_line_error(*run(capsys, "map", "--core", str(f)))
    assert "drgn cannot open it as a core" in line, line    # drgn's verdict


def test_kdump_compressed_through_the_console_script(tmp_path):
    f = tmp_path / "kdump-c-d31"
    f.write_bytes(b"KDUMP   " + bytes(100))
    r = subprocess.run([sys.executable, "-m", "kho_inspect", "status",
                        "--core", str(f)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- the S7 judge (vmtests/postmortem.py) -------------------------------------

LIVE = {
    "status": {"source": "the running kernel (/proc/kcore)", "enabled": True,
               "tracker": {"ranges": 2}, "problems": []},
    "map": {"generation": "kho-v1", "map_phys": 0x5000, "bitmap_bytes": 512,
            "fdt_source": "debugfs",
            "ranges": [{"phys": 0x200000, "order": 9, "count": 1,
                        "size": 0x200000},
                       {"phys": 0x7000, "order": 0, "count": 3,
                        "size": 0x3000}]},
    "tracker": {"layout": "xarray", "finalized": True, "source": "live",
                "ranges": [{"phys": 0x200000, "order": 9, "count": 1,
                            "size": 0x200000},
                           {"phys": 0x7000, "order": 0, "count": 3,
                            "size": 0x3000}]},
    "check": {"ok": True, "differences": []},
}
COLD = ("kho-inspect: error: kho_in.fdt_phys is 0: this kernel was not "
        "booted through a KHO kexec (nothing incoming)")


@pytest.fixture
def pm(monkeypatch):
    import pathlib
    vm = pathlib.Path(__file__).resolve().parent.parent / "vmtests"
    monkeypatch.syspath_prepend(str(vm))
    import postmortem
    return postmortem


def guest_files(tmp_path, makedumpfile_rc=0):
    """What guest/kdump.py leaves in results/: the live views, kdump.json,
    crash.json and the two dumps (an ELF one with a 1 MiB hole)."""
    res = tmp_path / "results"
    res.mkdir()
    for view, doc in LIVE.items():
        (res / f"s7-live-{view}.json").write_text(json.dumps(doc))
    live = {v: {"rc": 0, "stderr": ""} for v in LIVE}
    live["incoming"] = {"rc": 2, "stderr": COLD}
    (res / "kdump.json").write_text(json.dumps({
        "scenarios": {}, "live": live, "kexec_crash_loaded": "1",
        "ram": [[0x1000, 0x9f000], [0x100000, 0x40000000]]}))
    (res / "crash.json").write_text(json.dumps({"dumps": {
        "kdump-c-d31": {"rc": makedumpfile_rc, "options": "-c -d 31",
                        "output": "makedumpfile Completed."},
        "kdump-E-d31.elf": {"rc": 0, "options": "-E -d 31",
                            "output": "makedumpfile Completed."}}}))
    (res / "kdump-c-d31").write_bytes(b"KDUMP   " + bytes(100))
    (res / "kdump-E-d31.elf").write_bytes(elf_core(
        [(0x100000, bytes(0x1000), 0x100000)]))
    return tmp_path


def fake_cli(override=None):
    """A host CLI answering like the real one on a dump that holds every
    KHO page; *override(view, dump, argv)* may return (rc, stdout, stderr)."""
    def cli(*argv):
        view, dump = argv[0], argv[argv.index("--core") + 1]
        got = override(view, dump, argv) if override else None
        if got is None:
            if "--fdt-phys" in argv:
                phys = argv[argv.index("--fdt-phys") + 1]
                got = (2, "", f"kho-inspect: error: cannot read root FDT at "
                       f"phys {phys} (+0x8): could not read memory from "
                       f"kdump: Excluded page in core {dump} (page "
                       f"filtered out of the dump, e.g. by makedumpfile -d: "
                       f"re-take it with -d 0)\n")
            elif view == "incoming":
                got = (2, "", COLD + "\n")
            else:
                doc = dict(LIVE[view])
                if "source" in doc:
                    doc["source"] = f"core {dump}"
                got = (0, json.dumps(doc), "")
        return subprocess.CompletedProcess(argv, *got)
    return cli


def judge(pm, tmp_path, override=None, **kw):
    work = guest_files(tmp_path, **kw)
    return pm.judge(work, tmp_path / "vmlinux", fake_cli(override),
                    lambda: None, None)


def test_s7_judge_passes_equal_views(pm, tmp_path):
    status, reason, details = judge(pm, tmp_path)
    assert status == "pass", reason
    assert "status, map, tracker, check == live" in reason
    assert "incoming n/a (cold boot)" in reason
    # the probe is inside the ELF dump's hole (0x101000-0x200000)
    assert 0x101000 <= details["filtered_page"] < 0x200000


@pytest.mark.parametrize("override, want", [
    # a range lost in one dump
    (lambda v, d, a: (0, json.dumps(dict(LIVE["map"], ranges=LIVE["map"][
        "ranges"][:1])), "") if v == "map" and d.endswith(".elf") else None,
     "map: ranges differ"),
    # a one-line error that does not say what the filtering removed
    (lambda v, d, a: (2, "", "kho-inspect: error: cannot read tracker at "
                      "0xffff888000123000\n") if v == "tracker" else None,
     "tracker rc=2"),
    # a traceback
    (lambda v, d, a: (1, "", "Traceback (most recent call last):\n  File "
                      "x\nValueError: filtered 0x1234\n")
     if v == "check" else None, "check rc=1: traceback"),
    # the filtered page decoded as zeros instead of refused
    (lambda v, d, a: (2, "", "kho-inspect: error: root FDT at phys 0x150000:"
                      " offset 0: bad magic 0x00000000\n")
     if "--fdt-phys" in a else None, "a page the filtering removed"),
    # incoming answered on a dump of a cold boot
    (lambda v, d, a: (0, "{}", "") if v == "incoming" else None,
     "incoming rc=0"),
    # status with a problem the live view did not have, not explained
    (lambda v, d, a: (0, json.dumps(dict(LIVE["status"], problems=[
        "scratch: cannot read kho_scratch"])), "") if v == "status" else None,
     "status: problem not in the live view"),
])
def test_s7_judge_fails(pm, tmp_path, override, want):
    status, reason, _ = judge(pm, tmp_path, override)
    assert status == "fail" and want in reason, reason


def test_s7_judge_accepts_one_line_naming_the_filtered_page(pm, tmp_path):
    line = ("kho-inspect: error: cannot read kho-v1 bitmap at phys 0x7000 "
            "(+0x200): could not read memory from kdump: Excluded page in "
            "core x (page filtered out of the dump, e.g. by makedumpfile -d:"
            " re-take it with -d 0)")
    status, reason, _ = judge(pm, tmp_path, lambda v, d, a: (
        2, "", line + "\n") if v == "map" and not d.endswith(".elf")
        and "--fdt-phys" not in a else None)
    assert status == "pass", reason
    assert "kdump-c-d31 map: " + line in reason
    assert "status, tracker, check == live" in reason


def test_s7_judge_fails_without_the_dumps(pm, tmp_path):
    status, reason, _ = judge(pm, tmp_path, makedumpfile_rc=1)
    assert status == "fail" and "makedumpfile -c -d 31 rc=1" in reason


def test_s7_judge_subnode_lost_to_filtering(pm, tmp_path):
    """A KHO boot's incoming sub-node whose blob points at memory its client
    freed after restoring it (kho_restore_vmalloc, seen on 7.3.4): live the
    freed page still decodes, the -d 31 dump dropped it. The dump's view
    must name the page and the filtering there; anything else fails."""
    fdt = {"phys": 0x5000, "subnodes": [
        {"name": "kexec-metadata", "content": {"kexec_count": 1}},
        {"name": "kho_test", "content": {"nr_folios": 2, "folios": [1, 2]}}]}
    live_inc = {"kho_in": {"fdt_phys": 0x5000}, "fdt": fdt,
                "notes": ["map pages are free"], "scan": {"markers": []}}
    err = ("cannot read sub-node 'kho_test' blob at phys 0x8000 folios_info "
           "vmalloc chunk at phys 0x9000 (+0x1000): could not read memory "
           "from kdump: Excluded page in core x (page filtered out of the "
           "dump, e.g. by makedumpfile -d)")

    def dump_inc(error):
        sub = {"name": "kho_test", "content": {}, "error": error}
        return dict(live_inc, fdt=dict(fdt, subnodes=[fdt["subnodes"][0],
                                                      sub]),
                    notes=live_inc["notes"] + ["errors expected after "
                                               "restore"])

    def run_with(error):
        case = tmp_path / f"case{len(error)}"
        case.mkdir()
        work = guest_files(case)
        res = work / "results"
        (res / "s7-live-incoming.json").write_text(json.dumps(live_inc))
        kd = json.loads((res / "kdump.json").read_text())
        kd["live"]["incoming"] = {"rc": 0, "stderr": ""}
        (res / "kdump.json").write_text(json.dumps(kd))
        return pm.judge(work, tmp_path / "vmlinux", fake_cli(
            lambda v, d, a: (0, json.dumps(dump_inc(error)), "")
            if v == "incoming" else None), lambda: None, None)

    status, reason, _ = run_with(err)
    assert status == "pass", reason
    assert "incoming: /fdt/kho_test: cannot read sub-node" in reason
    status, reason, _ = run_with("cannot read sub-node 'kho_test': bad "
                                 "magic 0x0")
    assert status == "fail" and "incoming: fdt, notes differ" in reason


def test_check_view_a_filtered_not_checked_note_is_explained(pm):
    """A check the dump cannot make (its page filtered out) is a not-checked
    note only there: explained, not a difference; any other finding the
    live view lacks is."""
    live = {"counts": {"error": 0, "warning": 0, "info": 0},
            "findings": [], "source": "live"}
    note_ = {"id": "not-checked", "severity": "info", "message":
             "ram: cannot read the iomem resource tree at 0xff11000100: "
             "Excluded page (page filtered out of the dump)"}
    got = {"counts": {"error": 0, "warning": 0, "info": 1},
           "findings": [note_], "source": "dump"}
    # a dump that holds nothing of RAM up to 1 TiB: the note's page is lost
    why = functools.partial(pm.filtered_why, held=[], ram=[(0, 1 << 40)])
    diff, lines = pm.same("check", live, got, why)
    assert diff is None and len(lines) == 1 and "iomem" in lines[0]
    other = dict(note_, message="ram: not System RAM, no address named")
    got = {"counts": {"error": 0, "warning": 0, "info": 1},
           "findings": [other], "source": "dump"}
    assert pm.same("check", live, got, why)[0] == (
        "check: counts, findings differ from the live view")

"""S7's judge of the errors that blame makedumpfile's filtering
(vmtests/postmortem.py ``filtered_why``, issue #16 section 3): such an error
counts only if the System RAM it names is what the dump lacks, by the dump's
own headers (ELF PT_LOADs, the kdump-compressed page bitmap), read by the
rig, not by kho_inspect.

The dumps here are built by hand from the formats' descriptions (ELF64
program headers; makedumpfile's diskdump_mod.h), not with postmortem's
readers; libkdumpfile (drgn's) cross-checks the kdump-compressed one. The
error lines are in kho_inspect's wording (memory.fault_message), some copied
from past runs.
"""

import functools
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "vmtests"))
import postmortem  # noqa: E402

PAGE = 0x1000
DIRECT = 0xff11000000000000     # x86-64's direct map (5-level), as in runs
HINT = (" (page filtered out of the dump, e.g. by makedumpfile -d: re-take "
        "it with -d 0 or a QEMU dump-guest-memory core)")
ELF_WHY = "not in the dump (past its ELF segment's file data) in core x.elf"
KDUMP_WHY = "could not read memory from kdump: Excluded page in core x"


def elf_core(loads) -> bytes:
    """The headers of an ELF64 little-endian x86-64 core: a PT_NOTE, then a
    PT_LOAD per (paddr, filesz, memsz) of *loads* (p_vaddr: the direct
    map's; p_offset as makedumpfile sets it), without the file data (the
    rig reads only the headers)."""
    phoff, n = 64, 1 + len(loads)
    off = phoff + 56 * n
    ph = struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, 0, 0, 4)     # PT_NOTE
    for paddr, filesz, memsz in loads:
        ph += struct.pack("<IIQQQQQQ", 1, 7, off if filesz else 0,
                          DIRECT + paddr, paddr, filesz, memsz, 0)
        off += filesz
    eh = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\2\1\1", 4, 62, 1, 0,
                     phoff, 0, 0, 64, 56, n, 64, 0, 0)
    return eh + ph


def kdump_file(pfns, max_pfn=0x8000) -> bytes:
    """A kdump-compressed file (makedumpfile -c, header version 3, pages
    stored raw) holding the pages *pfns* (each filled with its pfn's low
    byte), 4 KiB blocks: header, sub-header, one block per bitmap."""
    bm1, bm2 = bytearray(PAGE), bytearray(PAGE)
    for p in range(max_pfn):
        bm1[p // 8] |= 1 << p % 8
    for p in pfns:
        bm2[p // 8] |= 1 << p % 8
    head = bytearray(PAGE)
    head[:8] = b"KDUMP   "
    struct.pack_into("<i", head, 8, 3)
    for i, s in enumerate((b"Linux", b"guest", b"7.3.4", b"#1", b"x86_64")):
        head[12 + 65 * i:12 + 65 * i + len(s)] = s
    # after the utsname (6 x 65) and 6 bytes of padding, a timeval (16)
    struct.pack_into("<IiiIIIIIIi", head, 424, 0, PAGE, 1, 2, max_pfn,
                     0, 0, 0, 0, 1)
    descs = 4 * PAGE
    data = -(-(descs + 24 * len(pfns)) // PAGE) * PAGE
    vmcoreinfo = (b"OSRELEASE=7.3.4\nPAGESIZE=4096\nKERNELOFFSET=0\n"
                  b"SYMBOL(swapper_pg_dir)=ffffffff82a0a000\n"
                  b"NUMBER(pgtable_l5_enabled)=0\n")
    sub = bytearray(PAGE)
    struct.pack_into("<QiiQQqQ", sub, 0, 0, 31, 0, 0, max_pfn,
                     data + PAGE * len(pfns), len(vmcoreinfo))
    out = bytearray(head + sub + bm1 + bm2)
    for i, _ in enumerate(sorted(pfns)):
        out += struct.pack("<QIIQ", data + i * PAGE, PAGE, 0, 0)
    out = out.ljust(data, b"\0")
    for p in sorted(pfns):
        out += bytes([p & 0xff]) * PAGE
    return bytes(out + vmcoreinfo)


def fault(addr: str, why: str = ELF_WHY, what: str = "root FDT") -> str:
    """kho_inspect's one-line error for a read that hit a missing page."""
    return f"kho-inspect: error: cannot read {what} at {addr}: {why}{HINT}"


#: System RAM: 4 KiB to just below 640 KiB, then 1 MiB to 34 MiB
RAM = [(0x1000, 0x9fc00), (0x100000, 0x2200000)]
#: (paddr, filesz, memsz): as makedumpfile -E leaves them, a segment whose
#: tail was filtered, one that holds nothing (filtered from its start), one
#: that holds all
LOADS = [(0x100000, 0x1000, 0x100000), (0x200000, 0, 0x10000),
         (0x210000, 0x10000, 0x10000)]


@pytest.fixture
def elf(tmp_path):
    """filtered_why for the ELF dump of :data:`LOADS` (read by postmortem's
    reader from the file) and :data:`RAM`."""
    path = tmp_path / "kdump-E-d31.elf"
    path.write_bytes(elf_core(LOADS))
    loads = postmortem.elf_loads(path)
    return functools.partial(
        postmortem.filtered_why, held=postmortem.elf_held(loads), ram=RAM,
        virt=[(v, p, m) for p, v, _, m in loads])


def test_elf_reader_takes_the_pt_loads_only(tmp_path):
    path = tmp_path / "core"
    path.write_bytes(elf_core(LOADS))
    loads = postmortem.elf_loads(path)
    assert loads == [(p, DIRECT + p, f, m) for p, f, m in LOADS]
    assert postmortem.elf_held(loads) == [(0x100000, 0x101000),
                                          (0x210000, 0x220000)]
    assert postmortem.elf_holes(path) == [(0x101000, 0x200000),
                                          (0x200000, 0x210000)]
    assert postmortem.elf_loads(tmp_path / "missing") == []
    (tmp_path / "junk").write_bytes(b"KDUMP   " + bytes(600))
    assert postmortem.elf_loads(tmp_path / "junk") == []


@pytest.mark.parametrize("line", [
    # the first byte past a segment's file data, the last page of its tail
    fault("phys 0x101000 (+0x8)"),
    fault("phys 0x1ff000 (+0x1000)"),
    # a read that starts in held data and runs into the filtered tail
    fault("phys 0x100ff8 (+0x10)"),
    # a segment makedumpfile left with no file data at all
    fault("phys 0x200000 (+0x8)"),
    fault("phys 0x20f000 (+0x1000)"),
    # RAM no PT_LOAD declares is not in the dump either
    fault("phys 0x5000 (+0x8)"),
    # drgn's address of a virtual read, placed by the PT_LOADs' p_vaddr
    fault(f"{DIRECT + 0x150a90:#x}", KDUMP_WHY,
          "the iomem resource tree (iomem_resource)"),
    # the sub-node's own address (held) is not the read that failed
    "cannot read sub-node 'kho_test' blob at phys 0x210000 folios_info "
    "vmalloc chunk at phys 0x180000 (+0x1000): " + ELF_WHY + HINT,
    # a check's not-checked note
    "ram: cannot read the iomem resource tree (iomem_resource) at "
    f"{DIRECT + 0x1ffff8:#x}: {KDUMP_WHY}{HINT}",
])
def test_a_page_the_dump_lacks_is_explained(elf, line):
    assert elf(line) is None
    assert postmortem.filtered_explained(line, elf.keywords["held"], RAM,
                                         elf.keywords["virt"])


@pytest.mark.parametrize("line, why", [
    # pages the dump holds: the first, the last bytes of held data, a
    # whole held segment, its last page
    (fault("phys 0x100000 (+0x8)"), "the dump holds [0x100000, 0x100008)"),
    (fault("phys 0x100ff8 (+0x8)"), "the dump holds"),
    (fault("phys 0x210000 (+0x10000)"), "the dump holds"),
    (fault("phys 0x21f000 (+0x1000)"), "the dump holds"),
    (fault(f"{DIRECT + 0x210040:#x}", KDUMP_WHY), "the dump holds"),
    (fault("0x100010"), "the dump holds [0x100010, 0x100011)"),
    # not RAM: past its end (nothing declares it), its last byte + 1 below
    # 640 KiB, far beyond
    (fault("phys 0x2200000 (+0x8)"), "is not RAM"),
    (fault("phys 0x9fc00 (+0x8)"), "is not RAM"),
    (fault("phys 0x40000000"), "is not RAM"),
    # no address, or only one that is not the failed read's
    ("kho-inspect: error: cannot read root FDT: " + ELF_WHY + HINT,
     "names no address"),
    ("cannot read sub-node 'kho_test' blob at phys 0x180000 folios_info: "
     "bad size" + HINT, "names no address"),
    # a virtual address no PT_LOAD maps (vmalloc; the direct map's first
    # byte past the last PT_LOAD)
    (fault("0xffffc90000123000", KDUMP_WHY), "no PT_LOAD of the ELF dump"),
    (fault(f"{DIRECT + 0x220000:#x}", KDUMP_WHY), "no PT_LOAD of the ELF"),
    # an error that does not blame the filtering
    ("kho-inspect: error: cannot read root FDT at phys 0x101000 (+0x8): "
     "bad magic", "does not blame the filtering"),
    (None, "does not blame the filtering"),
])
def test_a_page_the_dump_holds_or_no_ram_or_no_address_fails(elf, line,
                                                             why):
    got = elf(line)
    assert got is not None and why in got, got
    assert not postmortem.filtered_explained(
        line, elf.keywords["held"], RAM, elf.keywords["virt"])


@pytest.mark.parametrize("first, then", [("0x101000", "0x100000"),
                                         ("0x100000", "0x101000")])
def test_every_read_named_must_be_explained(elf, first, then):
    line = (f"cannot read x at phys {first} (+0x8): y at phys {then} "
            "(+0x8): " + ELF_WHY + HINT)
    assert "the dump holds [0x100000" in elf(line)


def test_unknown_holdings_explain_nothing():
    assert postmortem.filtered_why(fault("phys 0x101000 (+0x8)"), None,
                                   RAM) == "what the dump holds is unknown"


#: pfns a kdump-compressed dump holds: 0x100-0x10f but 0x105 (one page
#: filtered alone: makedumpfile -E keeps runs of < 256 such pages, -c
#: drops each), and the last pfn its bitmap covers
KDUMP_PFNS = [p for p in range(0x100, 0x110) if p != 0x105] + [0x7fff]


def test_kdump_reader_takes_the_second_bitmap(tmp_path):
    path = tmp_path / "kdump-c-d31"
    path.write_bytes(kdump_file(KDUMP_PFNS))
    assert postmortem.kdump_held(path) == [
        (0x100000, 0x105000), (0x106000, 0x110000), (0x7fff000, 0x8000000)]
    path.write_bytes(kdump_file(KDUMP_PFNS)[:3 * PAGE + 100])  # truncated
    assert postmortem.kdump_held(path) is None
    path.write_bytes(elf_core(LOADS))
    assert postmortem.kdump_held(path) is None
    assert postmortem.kdump_held(tmp_path / "missing") is None


def test_kdump_reader_agrees_with_libkdumpfile(tmp_path):
    """What drgn (libkdumpfile) reads of the same file: the pages the
    reader calls held, and "Excluded page" for every other."""
    drgn = pytest.importorskip("drgn")
    path = tmp_path / "kdump-c-d31"
    path.write_bytes(kdump_file(KDUMP_PFNS))
    prog = drgn.Program()
    try:
        prog.set_core_dump(str(path))
    except Exception as e:          # noqa: BLE001 - drgn without libkdumpfile
        pytest.skip(f"drgn cannot open kdump files here: {e}")
    held = postmortem.kdump_held(path)
    for pfn in list(range(0xfe, 0x112)) + [0x7ffe, 0x7fff]:
        inside = any(a <= pfn * PAGE < b for a, b in held)
        try:
            assert prog.read(pfn * PAGE, 4, True) == bytes([pfn & 0xff]) * 4
            assert inside, hex(pfn)
        except drgn.FaultError as e:
            assert "Excluded page" in str(e) and not inside, hex(pfn)


def test_kdump_page_filtered_alone(tmp_path):
    """A page the -c dump dropped alone (the ELF one keeps it): explained
    there by its bitmap; its neighbour, held, is not."""
    path = tmp_path / "kdump-c-d31"
    path.write_bytes(kdump_file(KDUMP_PFNS))
    held = postmortem.kdump_held(path)
    assert postmortem.filtered_explained(
        fault("phys 0x105000 (+0x1000)", KDUMP_WHY), held, RAM)
    assert not postmortem.filtered_explained(
        fault("phys 0x104000 (+0x1000)", KDUMP_WHY), held, RAM)
    assert not postmortem.filtered_explained(
        fault("phys 0x106000 (+0x8)", KDUMP_WHY), held, RAM)


# -- real errors (run 20261207-232825 and -203827, their vmcores deleted) ----

#: /proc/iomem's System RAM of those guests (6 GiB), from kdump.json
REAL_RAM = [[0x1000, 0x9fc00], [0x100000, 0xbffe0000],
            [0x100000000, 0x1c0000000]]
#: 7.3.4, KHO-booted: incoming's sub-node kho_test, from the ELF dump
REAL_ELF = ("cannot read sub-node 'kho_test' blob at phys 0x100860000 "
            "folios_info vmalloc chunk at phys 0x100365000 (+0x1000): not in "
            "the dump (past its ELF segment's file data) in core /root/.cache"
            "/kho-inspect/runs/20261207-232825/7.3/kdump-kho/results/kdump-E-"
            "d31.elf (page filtered out of the dump, e.g. by makedumpfile -d:"
            " re-take it with -d 0 or a QEMU dump-guest-memory core)")
#: 7.3.4, cold-booted: check's not-checked note, from the -c dump
REAL_CHECK = ("ram: cannot read the iomem resource tree (iomem_resource) at "
              "0xff11000100809a90: could not read memory from kdump: "
              "Excluded page in core /root/.cache/kho-inspect/runs/20261207-"
              "232825/7.3/kdump/results/kdump-c-d31 (page filtered out of the"
              " dump, e.g. by makedumpfile -d: re-take it with -d 0 or a QEMU"
              " dump-guest-memory core)")


def test_real_errors(tmp_path):
    """The lines are real; the PT_LOADs are made up around their pages (a
    filtered tail from 0x100365000, held data below it)."""
    path = tmp_path / "kdump-E-d31.elf"
    path.write_bytes(elf_core([(0x100000000, 0x365000, 0xc0000000)]))
    loads = postmortem.elf_loads(path)
    why = functools.partial(postmortem.filtered_why,
                            held=postmortem.elf_held(loads), ram=REAL_RAM,
                            virt=[(v, p, m) for p, v, _, m in loads])
    assert why(REAL_ELF) is None
    assert why(REAL_CHECK) is None              # 0x100809a90: filtered too
    # the same lines, had the dump held their pages
    assert "the dump holds [0x100364000, 0x100365000)" in why(
        REAL_ELF.replace("0x100365000", "0x100364000"))
    path.write_bytes(elf_core([(0x100000000, 0x900000, 0xc0000000)]))
    loads = postmortem.elf_loads(path)
    assert "the dump holds [0x100809a90" in postmortem.filtered_why(
        REAL_CHECK, postmortem.elf_held(loads), REAL_RAM,
        [(v, p, m) for p, v, _, m in loads])


# -- the judge: S7 on files like the guest's, with a stand-in host CLI -------

LIVE = {"status": {"source": "live", "problems": []},
        "map": {"generation": "kho-v1", "map_phys": 0x5000,
                "bitmap_bytes": 512, "ranges": []},
        "tracker": {"layout": "xarray", "finalized": True, "ranges": []},
        "check": {"findings": [], "counts": {"info": 0}, "source": "live"}}
COLD = ("kho-inspect: error: kho_in.fdt_phys is 0: this kernel was not "
        "booted through a KHO kexec (nothing incoming)")


def judge(tmp_path, answer, incoming=None,
          kdump_pfns=tuple(p for p in range(0x100, 0x110) if p != 0x105)):
    """postmortem.judge on an ELF dump holding 0x100000-0x110000 (its tail
    to 0x300000 filtered) and a -c dump holding the same but pfn 0x105;
    *answer(view, dump_name, argv)* may replace the CLI's (rc, out, err);
    *incoming*: the live view of a KHO boot (else a cold boot's error);
    *kdump_pfns*: what the -c dump holds instead."""
    res = tmp_path / "results"
    res.mkdir()
    for view, doc in dict(LIVE, incoming=incoming).items():
        if doc is not None:
            (res / f"s7-live-{view}.json").write_text(json.dumps(doc))
    live = {v: {"rc": 0} for v in LIVE}
    live["incoming"] = ({"rc": 2, "stderr": COLD} if incoming is None
                        else {"rc": 0})
    (res / "kdump.json").write_text(json.dumps({
        "scenarios": {}, "live": live, "ram": RAM}))
    (res / "crash.json").write_text(json.dumps({"dumps": {
        n: {"rc": 0} for n in postmortem.DUMPS}}))
    (res / "kdump-E-d31.elf").write_bytes(elf_core(
        [(0x100000, 0x10000, 0x200000)]))
    (res / "kdump-c-d31").write_bytes(kdump_file(kdump_pfns))

    def cli(*argv):
        view, dump = argv[0], Path(argv[argv.index("--core") + 1]).name
        got = answer(view, dump, argv)
        if got is None and "--fdt-phys" in argv:
            phys = argv[argv.index("--fdt-phys") + 1]
            got = (2, "", fault(f"phys {phys} (+0x8)", KDUMP_WHY) + "\n")
        elif got is None:
            got = ((2, "", COLD + "\n") if view == "incoming" else
                   (0, json.dumps(LIVE[view]), ""))
        return subprocess.CompletedProcess(argv, *got)
    return postmortem.judge(tmp_path, tmp_path / "vmlinux", cli,
                            lambda: None, None)


def test_judge_takes_each_dump_by_its_own_pages(tmp_path):
    """A map error at pfn 0x105 from the -c dump (it lacks the page, the
    ELF holds it: seen on 6.18, run 20261207-203827) passes."""
    status, reason, det = judge(tmp_path, lambda v, d, a: (
        2, "", fault("phys 0x105000 (+0x200)", KDUMP_WHY, "kho-v1 bitmap"))
        if v == "map" and d == "kdump-c-d31" and "--fdt-phys" not in a
        else None)
    assert status == "pass", reason
    assert "kdump-c-d31 map: kho-inspect: error: cannot read kho-v1" in reason
    assert det["dumps"]["kdump-c-d31"]["held_from"] == "its page bitmap"
    assert 0x110000 <= det["filtered_page"] < 0x300000


@pytest.mark.parametrize("dump, addr", [
    ("kdump-c-d31", "phys 0x106000 (+0x200)"),      # -c holds it
    ("kdump-E-d31.elf", "phys 0x105000 (+0x200)"),  # the ELF holds it
    ("kdump-c-d31", "phys 0x2200000 (+0x200)"),     # not RAM
])
def test_judge_fails_a_filtered_error_the_dump_does_not_explain(
        tmp_path, dump, addr):
    status, reason, _ = judge(tmp_path, lambda v, d, a: (
        2, "", fault(addr, KDUMP_WHY, "kho-v1 bitmap"))
        if v == "map" and d == dump and "--fdt-phys" not in a else None)
    assert status == "fail", reason
    assert f"{dump}: map rc=2: " in reason
    assert "the filtering does not explain it" in reason


def test_judge_sub_node_error_on_a_held_page_fails(tmp_path):
    """filtered_parts: a sub-node whose blob the dump holds is a difference,
    and the reason says which error the filtering does not explain."""
    fdt = {"subnodes": [{"name": "kho_test", "content": {"n": 1}}]}
    live = {"fdt": fdt}

    def answer(view, dump, argv):
        if view != "incoming":
            return None
        sub = {"name": "kho_test", "content": {}, "error": (
            "cannot read sub-node 'kho_test' blob at phys 0x100000 "
            f"(+0x1000): {KDUMP_WHY}{HINT}")}
        return 0, json.dumps({"fdt": {"subnodes": [sub]}}), ""

    status, reason, _ = judge(tmp_path, answer, incoming=live)
    assert status == "fail", reason
    assert ("incoming: fdt differ from the live view; the filtering does "
            "not explain /fdt/kho_test: cannot read sub-node") in reason
    assert "the dump holds [0x100000, 0x101000)" in reason


def test_judge_probe_of_a_page_the_dump_holds_fails(tmp_path):
    """The probe's page is in a hole of the ELF dump; a -c dump that holds
    it (its bitmap set there) cannot have filtered it."""
    status, reason, det = judge(tmp_path, lambda v, d, a: None,
                                kdump_pfns=range(0x100, 0x300))
    page = det["filtered_page"]
    assert status == "fail", reason
    assert (f"kdump-c-d31: map --fdt-phys {page:#x} (a page the filtering "
            "removed) rc=2: ") in reason
    assert "the filtering; the dump holds" in reason
    assert "kdump-E-d31.elf: map --fdt-phys" not in reason


def test_check_note_and_status_problem_on_a_held_page_differ():
    """same(): a not-checked note or a status problem that blames the
    filtering for a page the dump holds is a difference, and says so."""
    why = functools.partial(postmortem.filtered_why,
                            held=[(0x100000, 0x200000)], ram=RAM)
    note = {"id": "not-checked", "severity": "info",
            "message": "ram: " + fault("phys 0x1ff000 (+0x8)")[20:]}
    live = {"findings": [], "counts": {"info": 0}}
    got = {"findings": [note], "counts": {"info": 1}}
    diff, lines = postmortem.same("check", live, got, why)
    assert diff.startswith("check: counts, findings differ from the live "
                           "view; the filtering does not explain check: "
                           "ram: cannot read root FDT"), diff
    assert diff.endswith("(the dump holds [0x1ff000, 0x1ff008))")
    assert lines == []
    moved = dict(note, message=note["message"].replace("0x1ff000",
                                                       "0x200000"))
    assert postmortem.same("check", live, dict(got, findings=[moved]),
                           why) == (None, [f"check: {moved['message']}"])
    problem = fault("phys 0x1ff000 (+0x8)")[20:]
    diff, _ = postmortem.same("status", {"problems": []},
                              {"problems": [problem]}, why)
    assert diff == (f"status: problem not in the live view: {problem} (the "
                    "filtering does not explain it: the dump holds "
                    "[0x1ff000, 0x1ff008))")
    problem = problem.replace("0x1ff000", "0x200000")
    assert postmortem.same("status", {"problems": []},
                           {"problems": [problem]}, why) == (None, [problem])

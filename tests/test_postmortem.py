"""The dumps users really have: makedumpfile's kdump-compressed files and its
filtered ELF files (issue #9 section 2; the vmtest is S7, vmtests/run).

The files here are built by hand from the formats' own descriptions (an ELF
core whose PT_LOAD declares more memory than it holds, as ``makedumpfile -E
-d 31`` writes; the ``KDUMP   `` signature of ``makedumpfile -c``), not with
kho_inspect's writers.
"""

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

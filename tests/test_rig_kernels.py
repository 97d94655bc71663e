"""vmtests/kernels.py: which kernels CI builds, and where a build's time
goes (kbuild's quiet output, timed line by line)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "vmtests"))
import kernels  # noqa: E402

#: (seconds, line) as kbuild prints them (from a 7.3.4 build, shortened)
BUILD = [(0.5, "  CC      arch/x86/boot/startup/gdt_idt.o"),
         (1.0, "  CC      init/main.o"),
         (300.0, "  AR      built-in.a"),
         (301.5, "  LD      vmlinux.o"),
         (302.8, "  MODPOST Module.symvers"),
         (303.8, "  LD      .tmp_vmlinux1"),
         (305.4, "  BTF     .tmp_vmlinux1"),
         (307.1, "  NM      .tmp_vmlinux1.syms"),
         (310.0, "  BTFIDS  vmlinux.unstripped"),
         (311.0, "  OBJCOPY vmlinux"),
         (312.0, "  CC      arch/x86/boot/a20.o"),
         (315.5, "Kernel: arch/x86/boot/bzImage is ready  (#1)"),
         (316.0, "  MODPOST Module.symvers"),
         (318.5, "  LD [M]  drivers/foo.ko")]


def test_phases_of_a_build():
    assert kernels.make_phases(BUILD) == {
        "compile": 301.5, "link": 10.5, "btf": 1.7, "bzimage": 3.5,
        "modules": 3.0, "make": 318.5}


def test_a_build_cut_short_names_only_what_it_saw():
    assert kernels.make_phases(BUILD[:4]) == {"compile": 301.5,
                                              "make": 301.5}
    assert kernels.make_phases(BUILD[:2]) == {"make": 1.0}


def test_the_ci_set_is_the_oldest_and_the_newest_layout():
    ci = kernels.select("ci")
    assert [k.name for k in ci] == ["6.17", "7.3"]
    assert "512-byte" in ci[0].layout and "kho-numa.config" in ci[1].extra
    assert [k.name for k in kernels.select("all")] == [
        k.name for k in kernels.KERNELS]
    assert [k.name for k in kernels.select("7.1.13,6.18")] == ["7.1", "6.18"]
    with pytest.raises(SystemExit, match="unknown kernel '5.10'.*all, ci"):
        kernels.select("5.10")

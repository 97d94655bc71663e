"""vmtests/selftests.py: which KHO/LUO selftest programs a kernel tree
ships and how each is built, the configs they ask for, and the cache (its
key follows the sources). No kernel and no gcc: the trees are synthetic
(modelled on 6.17, 6.19 and 7.3), the compiler a stand-in script."""

import json
import struct
import subprocess
import sys
import tarfile
import textwrap
from fnmatch import fnmatch
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "vmtests"))
import kernels  # noqa: E402
import selftests  # noqa: E402

SEL = selftests.SEL

KHO_VMTEST = textwrap.dedent("""\
    function usage() {
    \tcat <<EOF
    $0 [-d build_dir]
    EOF
    }
    function build_kernel() {
    \ttee "$kconfig" > "$kho_config" <<EOF
    CONFIG_BLK_DEV_INITRD=y
    CONFIG_KEXEC_HANDOVER=y
    CONFIG_TEST_KEXEC_HANDOVER=y
    CONFIG_DEBUG_VM=y
    $arch_kconfig
    EOF
    }
    """)

MK_619 = textwrap.dedent("""\
    # SPDX-License-Identifier: GPL-2.0-only

    LIB_C += luo_test_utils.c

    TEST_GEN_PROGS += liveupdate

    TEST_GEN_PROGS_EXTENDED += luo_kexec_simple
    TEST_GEN_PROGS_EXTENDED += luo_multi_session

    TEST_FILES += do_kexec.sh

    include ../lib.mk

    CFLAGS += $(KHDR_INCLUDES)
    LIB_O := $(patsubst %.c, $(OUTPUT)/%.o, $(LIB_C))
    """)

MK_73 = textwrap.dedent("""\
    TEST_GEN_PROGS += liveupdate

    TEST_GEN_PROGS_EXTENDED += luo_kexec_simple
    TEST_GEN_PROGS_EXTENDED += luo_stress_files

    include ../lib.mk
    include lib/libliveupdate.mk

    CFLAGS += $(KHDR_INCLUDES)
    """)

LIBMK_73 = textwrap.dedent("""\
    include $(top_srcdir)/scripts/subarch.include
    ARCH ?= $(SUBARCH)

    LIBLIVEUPDATE_SRCDIR := $(selfdir)/liveupdate/lib

    LIBLIVEUPDATE_C := lu_utils.c

    LIBLIVEUPDATE_OUTPUT := $(OUTPUT)/libliveupdate

    LIBLIVEUPDATE_O := $(patsubst %.c, $(LIBLIVEUPDATE_OUTPUT)/%.o, $(LIBLIVEUPDATE_C))

    CFLAGS += -I$(LIBLIVEUPDATE_SRCDIR)/include
    """)


def put(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def tree_617(root: Path) -> Path:
    return put(root, {
        f"{SEL}/kho/init.c": "int main(void) { return 0; }\n",
        f"{SEL}/kho/vmtest.sh": KHO_VMTEST,
        f"{SEL}/kho/x86.conf": 'QEMU_KCONFIG="\nCONFIG_SERIAL_8250=y\n"\n',
        f"{SEL}/kselftest.h": "/* ksft */\n",
        "lib/test_kho.c": "/* test_kho */\n",
        "kernel/Kconfig.kexec": "config KEXEC_HANDOVER\n\tbool\n"
                                "config TEST_KEXEC_HANDOVER\n\tbool\n"})


def tree_619(root: Path) -> Path:
    tree_617(root)
    lu = f"{SEL}/liveupdate"
    return put(root, {
        f"{lu}/Makefile": MK_619,
        f"{lu}/config": "CONFIG_LIVEUPDATE=y\nCONFIG_LIVEUPDATE_TEST=y\n"
                        "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y\n",
        **{f"{lu}/{n}.c": f"/* {n} */\n" for n in (
            "liveupdate", "luo_kexec_simple", "luo_multi_session",
            "luo_test_utils")},
        "include/uapi/linux/liveupdate.h": "/* uapi */\n",
        "kernel/liveupdate/Kconfig": "config LIVEUPDATE\n\tbool\n"})


def tree_73(root: Path) -> Path:
    tree_617(root)
    lu = f"{SEL}/liveupdate"
    return put(root, {
        f"{lu}/Makefile": MK_73,
        f"{lu}/lib/libliveupdate.mk": LIBMK_73,
        f"{lu}/lib/lu_utils.c": "/* lib */\n",
        f"{lu}/lib/include/libliveupdate.h": "/* lib */\n",
        f"{lu}/init.c": "/* PID 1 */\n",
        f"{lu}/config": "CONFIG_LIVEUPDATE=y\nCONFIG_LIVEUPDATE_TEST=y\n",
        **{f"{lu}/{n}.c": f"/* {n} */\n" for n in (
            "liveupdate", "luo_kexec_simple", "luo_stress_files")},
        "lib/tests/liveupdate.c": "/* in-kernel LUO test */\n",
        "lib/Kconfig.debug": "config LIVEUPDATE_TEST\n\tbool\n"})


# --------------------------------------------------------------------------
# which programs, from which sources


def test_a_kernel_without_luo_ships_only_the_kho_init(tmp_path):
    progs = selftests.programs(tree_617(tmp_path))
    assert list(progs) == ["kho_init"]
    assert progs["kho_init"].sources == (f"{SEL}/kho/init.c",)


def test_619_programs_are_the_makefiles_each_with_lib_c(tmp_path):
    progs = selftests.programs(tree_619(tmp_path))
    assert list(progs) == ["kho_init", "liveupdate", "luo_kexec_simple",
                           "luo_multi_session"]
    lib = f"{SEL}/liveupdate/luo_test_utils.c"
    for n in ("liveupdate", "luo_kexec_simple", "luo_multi_session"):
        assert progs[n].sources == (f"{SEL}/liveupdate/{n}.c", lib)
        assert progs[n].includes == ()


def test_73_programs_link_libliveupdate_and_see_its_headers(tmp_path):
    progs = selftests.programs(tree_73(tmp_path))
    assert list(progs) == ["kho_init", "liveupdate", "luo_kexec_simple",
                           "luo_stress_files", "luo_init"]
    assert progs["luo_stress_files"].sources == (
        f"{SEL}/liveupdate/luo_stress_files.c",
        f"{SEL}/liveupdate/lib/lu_utils.c")
    assert progs["liveupdate"].includes == (
        f"{SEL}/liveupdate/lib/include",)
    assert progs["luo_init"].sources == (f"{SEL}/liveupdate/init.c",)


def test_every_source_a_recipe_names_is_an_extracted_member(tmp_path):
    progs = selftests.programs(tree_73(tmp_path))
    files = {s for r in progs.values() for s in r.sources} | {
        f"{SEL}/kselftest.h", f"{SEL}/kselftest_harness.h",
        "include/uapi/linux/liveupdate.h", "include/uapi/linux/kexec.h"}
    for f in files:
        assert any(f == m or f.startswith(m + "/") or fnmatch(f, m)
                   for m in selftests.MEMBERS), f


def test_the_command_is_the_makefiles_plus_static(tmp_path):
    tree = tree_73(tmp_path / "t")
    r = selftests.programs(tree)["luo_kexec_simple"]
    cmd = selftests.command(tree, r, tmp_path / "out")
    assert cmd[0] == "gcc" and "-static" in cmd and "-D_GNU_SOURCE=" in cmd
    assert f"-I{tree / SEL}" in cmd
    i = cmd.index("-isystem")
    assert cmd[i + 1] == str(tree / "include" / "uapi")
    assert f"-I{tree / SEL / 'liveupdate/lib/include'}" in cmd
    assert cmd[cmd.index("-o") + 1] == str(tmp_path / "out")
    assert cmd[-2:] == [str(tree / s) for s in r.sources]


# --------------------------------------------------------------------------
# the cache key


def test_the_key_follows_the_sources_not_their_mtimes(tmp_path):
    tree = tree_619(tmp_path)
    h = selftests.source_hash(tree, "gcc 12")
    assert h == selftests.source_hash(tree, "gcc 12")
    assert h != selftests.source_hash(tree, "gcc 14")
    f = tree / SEL / "liveupdate" / "luo_test_utils.c"
    f.touch()
    (tree / selftests.STAMP).write_text("another tarball identity\n")
    assert selftests.source_hash(tree, "gcc 12") == h
    f.write_text(f.read_text() + "/* changed */\n")
    h2 = selftests.source_hash(tree, "gcc 12")
    assert h2 != h
    put(tree, {f"{SEL}/liveupdate/luo_new.c": ""})
    assert selftests.source_hash(tree, "gcc 12") not in (h, h2)


def test_the_key_follows_the_flags(tmp_path, monkeypatch):
    tree = tree_617(tmp_path)
    h = selftests.source_hash(tree)
    monkeypatch.setattr(selftests, "CFLAGS", selftests.CFLAGS + ("-g",))
    assert selftests.source_hash(tree) != h


# --------------------------------------------------------------------------
# configs


def test_wanted_configs_per_suite(tmp_path):
    w = selftests.wanted_config(tree_619(tmp_path / "619"))
    assert w["kho"] == ["CONFIG_BLK_DEV_INITRD", "CONFIG_KEXEC_HANDOVER",
                        "CONFIG_TEST_KEXEC_HANDOVER", "CONFIG_DEBUG_VM",
                        "CONFIG_SERIAL_8250"]
    # 6.19 asks for CONFIG_LIVEUPDATE_TEST without having it
    assert "CONFIG_LIVEUPDATE_TEST" not in w["liveupdate"]
    assert "liveupdate_test" not in w
    w73 = selftests.wanted_config(tree_73(tmp_path / "73"))
    assert w73["liveupdate_test"] == ["CONFIG_LIVEUPDATE_TEST"]


def test_config_gaps_name_only_what_a_test_needs(tmp_path):
    tree = tree_73(tmp_path)
    config = ("CONFIG_KEXEC_HANDOVER=y\nCONFIG_TEST_KEXEC_HANDOVER=y\n"
              "CONFIG_LIVEUPDATE=y\nCONFIG_SERIAL_8250=y\n"
              "# CONFIG_BLK_DEV_INITRD is not set\n"
              "# CONFIG_DEBUG_VM is not set\n")
    gaps = selftests.config_gaps(selftests.wanted_config(tree), config,
                                 selftests.kconfig_symbols(tree))
    assert gaps["kho"] == {"missing": [], "unknown": [], "not_needed": [
        "CONFIG_BLK_DEV_INITRD", "CONFIG_DEBUG_VM"]}
    assert gaps["liveupdate"]["missing"] == []
    assert gaps["liveupdate_test"]["missing"] == ["CONFIG_LIVEUPDATE_TEST"]
    # neither the config nor the Kconfig files know it: not "missing"
    gaps = selftests.config_gaps({"x": ["CONFIG_NO_SUCH"]}, config)
    assert gaps["x"]["unknown"] == ["CONFIG_NO_SUCH"]


# --------------------------------------------------------------------------
# host checks


def elf(machine=62, etype=2, interp=False) -> bytes:
    """An ELF64 header and its program headers (PT_LOAD, PT_INTERP)."""
    phdrs = [1] + ([3] if interp else [])
    hdr = bytearray(64)
    hdr[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HH", hdr, 16, etype, machine)
    struct.pack_into("<Q", hdr, 32, 64)               # e_phoff
    struct.pack_into("<HH", hdr, 54, 56, len(phdrs))  # phentsize, phnum
    return bytes(hdr) + b"".join(struct.pack("<I", t) + bytes(52)
                                 for t in phdrs)


def test_static_x86_64_executables_only():
    assert selftests.elf_static_x86_64(elf()) is None
    assert "dynamically" in selftests.elf_static_x86_64(elf(interp=True))
    assert "x86-64" in selftests.elf_static_x86_64(elf(machine=183))
    assert selftests.elf_static_x86_64(b"#!/bin/sh\n") == "not ELF"


def test_tar_may_miss_members_and_nothing_else():
    assert selftests.tar_missing_only(
        "tar: */lib/tests/liveupdate.c: Not found in archive\n"
        "tar: Exiting with failure status due to previous errors\n")
    assert not selftests.tar_missing_only(
        "xz: (stdin): Compressed data is corrupt\n"
        "tar: Exiting with failure status due to previous errors\n")


def test_no_compiler_is_a_reason():
    assert "no no-such-cc-here" in selftests.static_libc("no-such-cc-here")


# --------------------------------------------------------------------------
# the cache, end to end with a stand-in compiler


FAKE_CC = """\
#!{python}
import struct, sys
a = sys.argv[1:]
if a == ["--version"]:
    print("fakecc 1.0")
elif a == ["-print-file-name=libc.a"]:
    print({libc!r})
else:
    with open({log!r}, "a") as f:
        f.write(" ".join(a) + "\\n")
    if any("broken" in x for x in a):
        sys.exit("broken.c:1: error: nope")
    open(a[a.index("-o") + 1], "wb").write({elf!r})
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache holding one synthetic 6.19 tarball, and a stand-in cc."""
    monkeypatch.setattr(kernels, "CACHE", tmp_path / "cache")
    src = tmp_path / "cache" / "src"
    src.mkdir(parents=True)
    top = tree_619(tmp_path / "linux-9.9.1")
    put(top, {"drivers/unrelated.c": "", f"{SEL}/other/x.c": ""})
    with tarfile.open(src / "linux_9.9.1.orig.tar.xz", "w:xz") as t:
        t.add(top, arcname="linux-9.9.1")
    cc = tmp_path / "fakecc"
    cc.write_text(FAKE_CC.format(python=sys.executable, libc=str(cc),
                                 log=str(tmp_path / "cc.log"), elf=elf()))
    cc.chmod(0o755)
    return {"cc": str(cc), "log": tmp_path / "cc.log", "top": top,
            "tar": src / "linux_9.9.1.orig.tar.xz"}


def test_build_extracts_only_the_members_and_builds_each_program(cache):
    res = selftests.build("9.9.1", cc=cache["cc"])
    assert sorted(k for k in res if k != "why") == [
        "kho_init", "liveupdate", "luo_kexec_simple", "luo_multi_session"]
    assert res["why"] == {}
    assert all(res[k].read_bytes() == elf() for k in res if k != "why")
    tree = kernels.CACHE / "selftests" / "src" / "linux_9.9.1.orig"
    assert (tree / SEL / "liveupdate" / "luo_test_utils.c").exists()
    assert not (tree / "drivers").exists()
    assert not (tree / SEL / "other").exists()
    assert len(cache["log"].read_text().splitlines()) == 4


def test_a_second_build_is_the_cache(cache):
    first = selftests.build("9.9.1", cc=cache["cc"])
    assert selftests.build("9.9.1", cc=cache["cc"]) == first
    assert len(cache["log"].read_text().splitlines()) == 4    # no cc run


def test_changed_sources_are_a_new_key(cache, tmp_path):
    first = selftests.build("9.9.1", cc=cache["cc"])
    put(cache["top"], {f"{SEL}/liveupdate/luo_kexec_simple.c": "/* v2 */\n"})
    with tarfile.open(cache["tar"], "w:xz") as t:
        t.add(cache["top"], arcname="linux-9.9.1")
    second = selftests.build("9.9.1", cc=cache["cc"])
    assert second["liveupdate"].parent != first["liveupdate"].parent
    assert len(cache["log"].read_text().splitlines()) == 8


def test_a_program_that_does_not_build_is_none_with_why(cache):
    put(cache["top"], {f"{SEL}/liveupdate/Makefile": MK_619.replace(
        "luo_multi_session", "broken")})
    (cache["top"] / SEL / "liveupdate" / "broken.c").write_text("x")
    with tarfile.open(cache["tar"], "w:xz") as t:
        t.add(cache["top"], arcname="linux-9.9.1")
    res = selftests.build("9.9.1", cc=cache["cc"])
    assert res["broken"] is None and "error: nope" in res["why"]["broken"]
    assert res["liveupdate"] is not None
    rec = json.loads((res["liveupdate"].parent / "build.json").read_text())
    assert "-static" in rec["programs"]["liveupdate"]["cmd"]


def test_without_static_libc_nothing_is_built(cache, tmp_path):
    cc = tmp_path / "nolibc-cc"
    cc.write_text("#!/bin/sh\necho libc.a\n")
    cc.chmod(0o755)
    res = selftests.build("9.9.1", cc=str(cc))
    assert res["liveupdate"] is None
    assert "libc.a" in res["why"]["liveupdate"]
    assert not (kernels.CACHE / "selftests" / "bin").exists()


def test_copy_to_a_results_share(cache, tmp_path):
    res = selftests.build("9.9.1", cc=cache["cc"])
    names = selftests.copy_to(res, tmp_path / "results" / "selftests")
    assert sorted(names) == sorted(k for k in res if k != "why")
    p = tmp_path / "results" / "selftests" / "liveupdate"
    assert p.stat().st_mode & 0o111


def test_the_module_runs_as_a_script():
    r = subprocess.run([sys.executable, str(Path(selftests.__file__)),
                        "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--kernel" in r.stdout

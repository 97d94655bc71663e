"""Build the kernel's own KHO/LUO selftests as guest-ready static binaries.

For each kernel the rig builds, :func:`build` takes from that kernel's source
tarball (``<cache>/src``) only the members in :data:`MEMBERS` (the KHO and
LUO selftest directories, the kselftest headers, the two uapi headers they
use, the in-kernel tests and the Kconfig files that define what they need),
and compiles each userspace program with the host's gcc as a static x86-64
binary, the way the selftests' Makefiles do (``lib.mk``: ``-D_GNU_SOURCE=
-I tools/testing/selftests``; ``KHDR_INCLUDES``, the kernel's uapi headers,
is ``-isystem include/uapi`` here, holding just the headers extracted;
``liveupdate/Makefile``: ``-Wall -O2 -Wno-unused-function`` and its
library, ``LIB_C`` up to 7.1, ``lib/libliveupdate.mk`` on 7.3), plus
``-static``: the host (Debian stable) builds, the guest (sid) runs.
Nothing is built inside the kernel tree or the repository.

Cache: the extracted members under ``<cache>/selftests/src/<tarball>``
(stamped with the tarball's name, size and mtime), the binaries under
``<cache>/selftests/bin/<tarball>-<hash>``, the hash covering the extracted
sources, the compiler and the flags; ``build.json`` there records each
program's command, seconds and size, or why it was not built. The
lock ``selftests-<tarball>`` is held while extracting or building. A
cached call costs a stat and the hashing of ~30 small files; a cold one
the xz decompression of the tarball (10-25 s) and 0.1-0.8 s of gcc per
program.

    python3 vmtests/selftests.py --kernel all     # builds, prints a table

Programs (``programs()`` finds them in the tree; one a kernel does not ship
is absent from the result), what each needs, and how a guest must run it:

``kho_init`` (``tools/testing/selftests/kho/init.c``, every kernel): the
  PID 1 of the upstream ``kho/vmtest.sh`` initramfs. It mounts debugfs on
  ``/debugfs`` and proc on ``/proc`` (relative to its root), writes ``1``
  to ``/debugfs/kho/out/finalize`` (6.17-6.19 only: 7.1+ has no finalize),
  ``kexec_file_load``s ``/kernel`` with *this boot's* ``/proc/cmdline``
  (``KEXEC_FILE_NO_INITRAMFS``) and calls ``reboot(RB_KEXEC)``; any failure
  is ``reboot(RB_AUTOBOOT)`` (under QEMU ``-no-reboot``: QEMU exits). It
  reports nothing itself: the verdict is the *next* kernel's
  ``test_kho: KHO restore succeeded`` (lib/test_kho.c,
  ``CONFIG_TEST_KEXEC_HANDOVER``; 6.19+ prints ``KHO restore failed`` on a
  mismatch, 6.17/6.18 print nothing then). Needs ``kho=1`` and, being an
  init, a root of its own: run it as ``unshare -m chroot DIR /init`` with
  DIR a tmpfs holding ``init``, ``kernel`` (a copy of /kernel/bzImage),
  empty ``debugfs/``, ``proc/``, ``dev/``, after ``sync`` (it does not),
  and on 6.17/6.18 never while finalized (a second finalize fails with
  EEXIST and it reboots: write 0 to abort first; 6.19 finalizes again
  happily and refuses 0). The kexec'd kernel boots with the same command
  line, so the second stage cannot be told by ``stage=``: it is the boot
  where ``/sys/kernel/debug/kho/in/fdt`` exists.

``liveupdate`` (``liveupdate/liveupdate.c``, 6.19+): kselftest_harness
  tests of ``/dev/liveupdate`` in one boot, no kexec: open/close, exclusive
  open (EBUSY), duplicate/distinct session names, preserving memfds (one,
  several, empty ones, an unsupported fd: ENOENT), 7.1+ double preservation
  (EBUSY), unterminated and empty names (EINVAL), 7.3 also session names
  (GET_NAME), 2000 sessions, 500 preserved files (8/11/15 tests on
  6.19/7.1/7.3). Every session is closed
  again (closing a session fd unpreserves). KTAP on stdout; exit 0 when
  every test passed *or skipped*: without ``/dev/liveupdate`` (no
  ``liveupdate=1``) every test is ``ok N ... # SKIP`` and it still exits
  0, so a scenario must also require no ``# SKIP``. It must run while no
  one else holds ``/dev/liveupdate`` (exclusive open), i.e. first.

``luo_kexec_simple``, ``luo_multi_session`` (6.19+), ``luo_stress_files``,
  ``luo_stress_sessions`` (7.3): two stages around one kexec, run as
  ``PROG -s 1`` before and ``PROG -s 2`` after (6.19/7.1 also take
  ``--stage``; 7.3 only ``-s``; no argument means stage 1). The program
  checks the stage itself: its state session (``kexec_simple_state``,
  ``kexec_multi_state``, ``kexec_many_files_state``, ``kexec_many_state``)
  is absent before the kexec and retrievable after; a mismatch is ``Bail
  out! Stage mismatch`` (exit 1). Stage 1 creates the state session (a
  memfd holding "2") and its sessions (simple: ``test-session``, one memfd;
  multi: two empty sessions and two with one and two memfds; files: one
  session with 500 one-page memfds; sessions: 2000 empty sessions), closes
  ``/dev/liveupdate``, forks a child that ``setsid``s, closes 0-2 and
  sleeps forever holding the session fds (the parent prints ``Child PID:
  N`` and exits 0): that child must be left alive until the kexec. The
  kexec itself is the caller's: upstream ``do_kexec.sh`` is ``kexec -l -s
  --reuse-cmdline $KERNEL`` (default ``/boot/bzImage``, absent in our
  guest: ``/kernel/bzImage``) and ``kexec -e``; ``kexec -e`` serializes
  the sessions (``liveupdate_reboot``; 6.19 also finalizes KHO there).
  Stage 2 retrieves every session and memfd, compares the contents,
  ``SESSION_FINISH``es them all and prints ``--- ... TEST PASSED ---``;
  exit 0. Output is ``# ...`` lines (no KTAP plan); failures are ``Bail
  out! ...`` and exit 1; no ``/dev/liveupdate`` is ``1..0 # SKIP`` and
  exit 4. Their session names differ, so all of them can share one stage
  1 and one kexec. Need ``kho=1 liveupdate=1``, ``CONFIG_LIVEUPDATE`` and
  the memfd handler (``CONFIG_LIVEUPDATE_MEMFD`` 7.1+, part of LIVEUPDATE
  on 6.19).

``luo_init`` (``liveupdate/init.c``, 7.3): the PID 1 of the upstream
  ``liveupdate/vmtest.sh`` initramfs (runs ``/test_binary -s N``, kexecs
  with ``/initrd.img`` and `` luo_stage=2`` appended). Built for
  completeness; useless in our guests (no ``CONFIG_BLK_DEV_INITRD``, a 9p
  root): drive the luo_* programs directly.

``lib/tests/liveupdate.c`` (7.1+, ``CONFIG_LIVEUPDATE_TEST``, built in, not
  a program): registers three test FLBs (``liveupdate-test-flb-v0..2``)
  with every LUO file handler (memfd) at registration, on boots with
  ``liveupdate=1``. Its verdict is dmesg, prefix ``liveupdate test: ``:
  ``Registered 3 FLBs with file handler: [...]`` at boot; ``preserve was
  triggered`` when the first memfd is preserved; after the kexec, at boot
  (memfd handler registration), ``found flb data from the previous boot``
  and, once every preserved memfd is retrieved and its session finished,
  ``finish was triggered``; failures say ``ERROR`` or ``Failed``. None of the vmtest kernels sets it today (see
  :func:`config_gaps`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cachelock  # noqa: E402
import kernels  # noqa: E402

SEL = "tools/testing/selftests"

#: Tarball members extracted (below its top directory); a member a kernel
#: does not have is simply not extracted.
MEMBERS = (
    f"{SEL}/kho",
    f"{SEL}/liveupdate",
    f"{SEL}/kselftest*.h",          # kselftest.h, kselftest_harness.h
    f"{SEL}/lib.mk",                # the flags, for reference
    "include/uapi/linux/liveupdate.h",
    "include/uapi/linux/kexec.h",   # kho/init.c 6.18+
    "lib/tests/liveupdate.c",       # CONFIG_LIVEUPDATE_TEST (7.1+)
    "lib/test_kho.c",               # CONFIG_TEST_KEXEC_HANDOVER
    "lib/Kconfig.debug",
    "kernel/Kconfig.kexec",
    "kernel/liveupdate/Kconfig",
)

#: lib.mk + liveupdate/Makefile, and -static; KHDR_INCLUDES is
#: -isystem include/uapi (see :func:`command`)
CFLAGS = ("-D_GNU_SOURCE=", "-Wall", "-O2", "-Wno-unused-function",
          "-static")
#: Bump when the way programs are built changes (it is part of the key).
RECIPE = "2"
STAMP = ".tarball"
CACHE_DIR = "selftests"


def log(msg: str) -> None:
    kernels.log(f"selftests: {msg}")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to build one program: sources and extra include directories,
    relative to the extracted tree."""

    name: str
    sources: tuple
    includes: tuple = ()


# --------------------------------------------------------------------------
# what a tree ships (pure: reads the extracted files only)


def _mk_vars(text: str, selfdir: str) -> dict[str, list[str]]:
    """``NAME = / := / += words`` of a Makefile, ``$(selfdir)`` expanded
    to *selfdir* and ``$(NAME)`` to earlier values; appends accumulate."""
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"^([A-Za-z_]\w*)\s*(\+?|:|\?)=[ \t]*(.*)$", text,
                         re.M):
        name, op, val = m.groups()
        val = val.replace("$(selfdir)", selfdir)
        val = re.sub(r"\$\((\w+)\)",
                     lambda v: " ".join(out.get(v.group(1), [v.group(0)])),
                     val)
        words = val.split()
        if op == "+":
            out.setdefault(name, []).extend(words)
        elif op == "?" and name in out:
            pass
        else:
            out[name] = words
    return out


def _liveupdate(tree: Path) -> dict[str, Recipe]:
    d = tree / SEL / "liveupdate"
    mk = d / "Makefile"
    if not mk.exists():
        return {}
    text = mk.read_text(errors="replace")
    v = _mk_vars(text, SEL)
    names = v.get("TEST_GEN_PROGS", []) + v.get("TEST_GEN_PROGS_EXTENDED",
                                                 [])
    lib = [f"{SEL}/liveupdate/{c}" for c in v.get("LIB_C", [])]
    incs: list[str] = []
    # 7.3: "include lib/libliveupdate.mk" (LIBLIVEUPDATE_C in
    # LIBLIVEUPDATE_SRCDIR, -I$(LIBLIVEUPDATE_SRCDIR)/include)
    for inc in re.findall(r"^include\s+(\S+\.mk)\s*$", text, re.M):
        if inc.startswith(("..", "$")):
            continue                    # ../lib.mk, $(top_srcdir)/...
        sub = d / inc
        if not sub.exists():
            continue
        stext = sub.read_text(errors="replace")
        sv = _mk_vars(stext, SEL)
        for var, cs in sv.items():
            if not var.endswith("_C"):
                continue
            srcdir = sv.get(var[:-2] + "_SRCDIR", [f"{SEL}/liveupdate"])[0]
            lib += [f"{srcdir}/{c}" for c in cs if c.endswith(".c")]
        for flag in sv.get("CFLAGS", []):
            if flag.startswith("-I"):
                incs.append(flag[2:])
    out = {}
    for n in names:
        out[n] = Recipe(n, (f"{SEL}/liveupdate/{n}.c", *lib), tuple(incs))
    if (d / "init.c").exists():         # upstream vmtest.sh's PID 1 (7.3)
        out["luo_init"] = Recipe("luo_init", (f"{SEL}/liveupdate/init.c",))
    return out


def programs(tree: Path) -> dict[str, Recipe]:
    """The userspace selftest programs the extracted *tree* ships, by the
    name :func:`build` gives them: ``kho_init`` (kho/init.c) and those of
    liveupdate/Makefile (``TEST_GEN_PROGS`` and ``_EXTENDED``, each
    linked with its library), ``luo_init`` (liveupdate/init.c)."""
    out = {}
    if (tree / SEL / "kho" / "init.c").exists():
        out["kho_init"] = Recipe("kho_init", (f"{SEL}/kho/init.c",))
    out.update(_liveupdate(tree))
    return out


def command(tree: Path, r: Recipe, out: Path, cc: str = "gcc") -> list[str]:
    """The gcc command line building *r* from *tree* into *out*."""
    return [cc, *CFLAGS, f"-I{tree / SEL}",
            "-isystem", str(tree / "include" / "uapi"),
            *[f"-I{tree / i}" for i in r.includes],
            "-o", str(out), *[str(tree / s) for s in r.sources]]


def compiler_id(cc: str = "gcc") -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True,
                              text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return ""


def source_hash(tree: Path, compiler: str = "") -> str:
    """Hash of every extracted file (path and contents, not mtimes), the
    compiler, :data:`CFLAGS` and :data:`RECIPE`."""
    h = hashlib.sha256()
    h.update(f"{RECIPE}\0{compiler}\0{' '.join(CFLAGS)}\0".encode())
    for p in sorted(q for q in tree.rglob("*")
                    if q.is_file() and q.name != STAMP):
        h.update(p.relative_to(tree).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------
# configs the selftests ask for, against a kernel's .config (pure)

#: Options the upstream rigs set that our guests do without, and why.
NOT_NEEDED = {
    "CONFIG_BLK_DEV_INITRD": "the upstream rigs boot an initramfs; ours "
                             "a 9p root",
    "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT": "qemu.py passes kho=1",
    "CONFIG_DEBUG_VM": "extra VM_BUG_ON checks only (no verdict depends "
                       "on it)",
    "CONFIG_DEBUG_VM_PGFLAGS": "extra checks only",
    "CONFIG_DEFERRED_STRUCT_PAGE_INIT": "coverage of KHO with deferred "
                                        "struct pages (7.3 kho/vmtest.sh), "
                                        "not needed by the test",
    "CONFIG_SMP": "upstream runs -smp 2; nothing in the tests needs it",
    "CONFIG_SERIAL_8250": "console (our fragment sets it)",
    "CONFIG_SERIAL_8250_CONSOLE": "console (our fragment sets it)",
}


def wanted_config(tree: Path) -> dict[str, list[str]]:
    """``CONFIG_X`` the upstream rigs set for each suite: ``kho`` (the
    options kho/vmtest.sh writes, x86.conf's included), ``liveupdate``
    (liveupdate/config and config.x86_64, but CONFIG_LIVEUPDATE_TEST),
    ``liveupdate_test`` (``CONFIG_LIVEUPDATE_TEST`` where
    lib/tests/liveupdate.c exists)."""
    opt = re.compile(r"^(CONFIG_\w+)=[ym]\s*$", re.M)
    out: dict[str, list[str]] = {}
    kho = tree / SEL / "kho"
    if (kho / "vmtest.sh").exists():
        text = (kho / "vmtest.sh").read_text(errors="replace")
        want = [o for m in re.finditer(r"<<EOF\n(.*?)^EOF", text,
                                       re.M | re.S)
                for o in opt.findall(m.group(1))]
        if (kho / "x86.conf").exists():
            want += opt.findall((kho / "x86.conf").read_text())
        out["kho"] = list(dict.fromkeys(want))
    lu = tree / SEL / "liveupdate"
    want = []
    for name in ("config", "config.x86_64"):
        if (lu / name).exists():
            want += opt.findall((lu / name).read_text(errors="replace"))
    # the in-kernel test is its own suite below (6.19's config names it
    # although 6.19 has no such option)
    want = [o for o in want if o != "CONFIG_LIVEUPDATE_TEST"]
    if want:
        out["liveupdate"] = list(dict.fromkeys(want))
    if (tree / "lib" / "tests" / "liveupdate.c").exists():
        out["liveupdate_test"] = ["CONFIG_LIVEUPDATE_TEST"]
    return out


def kconfig_symbols(tree: Path) -> set[str]:
    """``CONFIG_X`` the extracted Kconfig files define (the KHO, LUO and
    test options; not all of the kernel's)."""
    pat = re.compile(r"^\s*(?:menu)?config\s+(\w+)", re.M)
    return {f"CONFIG_{s}" for p in tree.rglob("Kconfig*")
            for s in pat.findall(p.read_text(errors="replace"))}


def config_gaps(wanted: dict[str, list[str]], config: str,
                known: set[str] = frozenset()
                ) -> dict[str, dict[str, list[str]]]:
    """For each suite of :func:`wanted_config`, the options *config* (a
    ``.config``'s text) does not set to y: ``missing`` (a test needs it),
    ``not_needed`` (:data:`NOT_NEEDED`) and ``unknown`` (neither the
    config, as ``# CONFIG_X is not set``, nor *known* names it: this
    kernel has no such option, or one invisible in its config)."""
    have = set(re.findall(r"^(CONFIG_\w+)=y$", config, re.M))
    named = set(re.findall(r"^# (CONFIG_\w+) is not set$", config, re.M))
    out = {}
    for suite, opts in wanted.items():
        g: dict[str, list[str]] = {"missing": [], "not_needed": [],
                                   "unknown": []}
        for o in opts:
            if o in have:
                continue
            g["not_needed" if o in NOT_NEEDED else
              "missing" if o in named or o in known else
              "unknown"].append(o)
        out[suite] = g
    return out


# --------------------------------------------------------------------------
# host checks (pure on their inputs)


def static_libc(cc: str = "gcc") -> str | None:
    """None when *cc* can link statically; else why not."""
    if not shutil.which(cc):
        return f"no {cc} on this host"
    r = subprocess.run([cc, "-print-file-name=libc.a"], capture_output=True,
                       text=True)
    p = Path(r.stdout.strip())
    if r.returncode or not p.is_absolute() or not p.exists():
        return (f"{cc} finds no libc.a (static C library): static linking "
                "is impossible here; Debian ships it in libc6-dev")
    return None


def elf_static_x86_64(data: bytes) -> str | None:
    """None when *data* (the start of a file, its program headers
    included) is a static x86-64 ELF executable; else what it is not."""
    if data[:4] != b"\x7fELF":
        return "not ELF"
    if data[4] != 2 or data[5] != 1:
        return "not ELF64 little-endian"
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != 62:
        return f"machine {e_machine}, not x86-64 (62)"
    if e_type not in (2, 3):
        return f"ELF type {e_type}, not an executable"
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(data):
            return "program headers beyond the data read"
        if struct.unpack_from("<I", data, off)[0] == 3:     # PT_INTERP
            return "dynamically linked (has an interpreter)"
    return None


def tar_missing_only(stderr: str) -> bool:
    """Whether tar's *stderr* (exit 2) complains only of members the
    archive lacks (an older kernel without liveupdate/)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return all(ln.endswith("Not found in archive")
               or "Exiting with failure status due to previous errors" in ln
               for ln in lines)


# --------------------------------------------------------------------------
# cache


def tarball(version: str) -> Path:
    """The source tarball of *version* (``6.17.8``, ``7.3.4``) in the
    cache, or of a matrix name (``6.17``) as kernels.py fetches it."""
    src = kernels.CACHE / "src"
    for p in [src / f"linux_{version}.orig.tar.xz",
              *sorted(src.glob(f"linux-source-*_{version}.tar.xz"))]:
        if p.exists():
            return p
    for k in kernels.KERNELS:
        if k.name == version:
            return kernels.fetch_source(k)[1]
    raise RuntimeError(f"no source tarball for {version} in {src}")


def _stem(tar: Path) -> str:
    return tar.name.removesuffix(".xz").removesuffix(".tar")


def _ident(tar: Path) -> str:
    st = tar.stat()
    return f"{tar.name} {st.st_size} {st.st_mtime_ns}\n"


def _src_dir(tar: Path) -> Path:
    return kernels.CACHE / CACHE_DIR / "src" / _stem(tar)


def _extracted(tar: Path) -> Path | None:
    d = _src_dir(tar)
    try:
        return d if (d / STAMP).read_text() == _ident(tar) else None
    except OSError:
        return None


def extract(tar: Path) -> Path:
    """:data:`MEMBERS` of *tar*, top directory stripped, in the cache
    (call with the lock held)."""
    d = _extracted(tar)
    if d:
        return d
    d = _src_dir(tar)
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t = time.monotonic()
    log(f"extracting the selftests of {tar.name}")
    r = subprocess.run(
        ["tar", "-xf", str(tar), "-C", str(tmp), "--strip-components=1",
         "--wildcards", "--no-wildcards-match-slash",
         *[f"*/{m}" for m in MEMBERS]], capture_output=True, text=True)
    if r.returncode and not (r.returncode == 2
                             and tar_missing_only(r.stderr)):
        raise RuntimeError(f"extracting {tar}: tar rc={r.returncode}: "
                           + r.stderr.strip()[-500:])
    (tmp / STAMP).write_text(_ident(tar))
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    log(f"extracted in {time.monotonic() - t:.0f} s")
    return d


def _result(out: Path) -> dict:
    rec = json.loads((out / "build.json").read_text())
    res: dict = {"why": {}}
    for name, p in rec["programs"].items():
        res[name] = out / name if p.get("bytes") else None
        if p.get("why"):
            res["why"][name] = p["why"]
    return res


def _bin_dir(tar: Path, tree: Path, compiler: str) -> Path:
    return (kernels.CACHE / CACHE_DIR / "bin"
            / f"{_stem(tar)}-{source_hash(tree, compiler)}")


def build(version: str, cc: str = "gcc") -> dict:
    """Build (or find cached) the selftests of kernel *version* (a version
    or a matrix name). Returns ``{program: Path or None, "why": {program:
    reason}}``; programs the kernel does not ship are absent."""
    why_not = static_libc(cc)
    if why_not:                     # the host's fault: nothing cached
        log(why_not)
        tar = tarball(version)
        with cachelock.locked(kernels.CACHE, f"selftests-{_stem(tar)}"):
            tree = extract(tar)
        names = programs(tree)
        return {**{n: None for n in names},
                "why": {n: why_not for n in names}}
    tar = tarball(version)
    compiler = compiler_id(cc)
    tree = _extracted(tar)
    if tree:
        out = _bin_dir(tar, tree, compiler)
        if (out / "done").exists():
            return _result(out)
    with cachelock.locked(kernels.CACHE, f"selftests-{_stem(tar)}"):
        tree = extract(tar)
        out = _bin_dir(tar, tree, compiler)
        if not (out / "done").exists():
            _build_locked(tree, out, cc, compiler)
    return _result(out)


def _build_locked(tree: Path, out: Path, cc: str, compiler: str) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rec = {"tree": str(tree), "compiler": compiler, "programs": {}}
    for name, r in programs(tree).items():
        p: dict = {"sources": list(r.sources)}
        rec["programs"][name] = p
        missing = [s for s in r.sources if not (tree / s).exists()]
        if missing:
            p["why"] = f"source missing from the tarball: {missing[0]}"
            continue
        cmd = command(tree, r, tmp / name, cc)
        p["cmd"] = " ".join(cmd).replace(str(tree) + "/", "").replace(
            str(tmp) + "/", "")
        t = time.monotonic()
        c = subprocess.run(cmd, capture_output=True, text=True)
        p["seconds"] = round(time.monotonic() - t, 2)
        if c.stderr.strip():
            p["warnings"] = c.stderr.strip()[-2000:]
        if c.returncode or not (tmp / name).exists():
            p["why"] = (f"gcc rc={c.returncode}: "
                        + c.stderr.strip()[-800:])
            (tmp / name).unlink(missing_ok=True)
            continue
        with open(tmp / name, "rb") as f:
            bad = elf_static_x86_64(f.read(8192))
        if bad:
            p["why"] = f"built, but {bad}"
            (tmp / name).unlink()
            continue
        (tmp / name).chmod(0o755)
        p["bytes"] = (tmp / name).stat().st_size
        log(f"{tree.name}: {name} {p['bytes']} bytes in {p['seconds']} s")
    (tmp / "build.json").write_text(json.dumps(rec, indent=1) + "\n")
    (tmp / "done").write_text("")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def copy_to(built: dict, dest: Path) -> list[str]:
    """Copy the built programs of *built* (a :func:`build` result) into
    *dest* (e.g. a guest's results share, ``/results/selftests`` in the
    guest), executable; returns their names."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for name, p in built.items():
        if name != "why" and p:
            shutil.copy2(p, dest / name)
            (dest / name).chmod(0o755)
            names.append(name)
    return names


#: S14's boot (guest/selftests.py): both stages, the selftests' own
#: stress tests included (7.3: 2000 sessions, 500 files) under TCG
TIMEOUT = 1200


def run(build_, rootfs: Path, project: Path, workdir: Path
        ) -> tuple[str, str, float]:
    """S14: the kernel's own LUO selftests, built from *build_*'s tree,
    run in one boot of their own (``liveupdate=1``) around a KHO kexec
    under ``trace --check`` and ``check`` (guest/selftests.py, which judges
    each stage). Returns (status, reason, seconds)."""
    import qemu
    from results import read_json
    t = time.monotonic()
    res = workdir / "results"
    res.mkdir(parents=True, exist_ok=True)
    built = build(build_.version)
    names = copy_to(built, res / "selftests")
    if "liveupdate" not in names:
        why = built.get("why", {})
        return "fail", (f"the LUO selftests did not build: {why or names}"
                        ), round(time.monotonic() - t, 1)
    g = qemu.Guest(bzimage=build_.bzimage, rootfs=rootfs, project=project,
                   kernel_dir=build_.dir, results=res, workdir=workdir,
                   init_args=["stage=selftests-1"] + (
                       ["lutest=1"] if build_.config_has(
                           "CONFIG_LIVEUPDATE_TEST") else []),
                   extra_append="liveupdate=1")
    try:
        rc = g.wait_exit(TIMEOUT)
        why = None if rc is not None else f"timeout after {TIMEOUT}s"
    finally:
        g.kill()
    secs = round(time.monotonic() - t, 1)
    tail = f" (console: {workdir}/console.log)"
    v1 = read_json(res / "selftests-1.result.json")
    v2 = read_json(res / "selftests-2.result.json")
    if not v1:
        return "fail", f"stage 1 wrote nothing ({why or 'QEMU exited'})" \
            + tail, secs
    if v1["status"] != "pass":
        return "fail", f"stage 1: {v1['reason']}" + tail, secs
    if not v2:
        return "fail", (f"stage 1: {v1['reason']}; stage 2 wrote nothing "
                        f"({why or 'QEMU exited'})") + tail, secs
    if v2["status"] != "pass":
        return "fail", f"stage 2: {v2['reason']}" + tail, secs
    return "pass", (f"{v1['uname']}: stage 1: {v1['reason']}; stage 2: "
                    f"{v2['reason']}"), secs


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(
        description="build the kernel's KHO/LUO selftests for vmtest guests")
    ap.add_argument("--kernel", default="all",
                    help="all, ci, matrix names or versions, e.g. 6.17,7.3")
    args = ap.parse_args()
    try:
        for k in kernels.select(args.kernel):
            t = time.monotonic()
            res = build(k.name)
            secs = time.monotonic() - t
            tree = _extracted(tarball(k.name))
            print(f"{k.name}: {secs:.1f} s")
            for name, p in res.items():
                if name == "why":
                    continue
                print(f"  {name:22} " + (f"{p.stat().st_size:>8} {p}" if p
                                         else f"not built: {res['why'][name]}"))
            b = kernels.cached_build(k)
            if tree and b:
                gaps = config_gaps(wanted_config(tree),
                                   (b.dir / "config").read_text(),
                                   kconfig_symbols(tree))
                for suite, g in gaps.items():
                    if g["missing"]:
                        print(f"  {suite}: {b.dir.name}/config lacks "
                              + " ".join(g["missing"]))
    except RuntimeError as e:
        sys.exit(f"vmtests: {e}")


if __name__ == "__main__":
    main()

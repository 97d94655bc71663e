"""Fetch and build the vmtest kernels, one per reachable KHO layout.

Sources come from Debian only (trixie-backports): the ``orig.tar.xz`` of source
package ``linux`` for 6.17-7.1 and the ``linux-source-7.3`` binary package.
They are found through a private apt index of that suite on the host's own
Debian mirror (:mod:`mirror`; the host's sources are read, never changed)
and downloaded through apt's proxy, if it has one; downloads and builds are cached
under :data:`CACHE`, keyed by kernel version, config-fragment hash and
compiler, so a second run only checks stamps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cachelock
import mirror

HERE = Path(__file__).resolve().parent
FRAGMENT = HERE / "kho.config"
CACHE = Path(os.environ.get("KHO_VMTEST_CACHE",
                            Path.home() / ".cache" / "kho-inspect"))
APT_SUITE = "trixie-backports"


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One row of the vmtest matrix."""

    name: str           # matrix key, e.g. "6.18"
    layout: str         # KHO layout it exercises (docs/abi.md section 2.1)
    versions: tuple     # upstream versions to try, in order (orig tarballs)
    binary: str = ""    # or: a Debian binary package shipping the source
    extra: tuple = ()   # config fragments (in vmtests/) for this one only

    def fragments(self) -> list[Path]:
        """The config fragments of this kernel, in the order applied."""
        return [FRAGMENT] + [HERE / e for e in self.extra]


KERNELS = [
    Kernel("6.17", "kho-v1, 512-byte bitmaps", ("6.17.8",)),
    Kernel("6.18", "kho-v1, 4 KiB bitmaps, page magic",
           ("6.18.15", "6.18.12", "6.18.9", "6.18.5")),
    Kernel("6.19", "kho-v1, finalize from debugfs/LUO",
           ("6.19.11", "6.19.10", "6.19.6")),
    # the kernel's own LUO test (kho-luo-test.config) where the tree has it
    # (lib/tests/liveupdate.c, 7.1+): scenario S14 judges its verdict
    Kernel("7.1", "kho-v3 radix tree", ("7.1.13", "7.1.3"),
           extra=("kho-luo-test.config",)),
    # NUMA (kho-numa.config) on the newest kernel only: scenario S12 needs
    # two nodes, and one rebuild keeps the other four builds cached
    Kernel("7.3", "kho-v4 radix tree", (), binary="linux-source-7.3",
           extra=("kho-numa.config", "kho-luo-test.config")),
]


#: The kernels CI builds and runs (``./run-tests`` with ``CI`` set, or
#: ``--kernel ci``): the oldest layout (kho-v1, 512-byte bitmaps, no page
#: magic) and the newest (kho-v4, LUO, NUMA), so that a cold CI run - the
#: builds first - fits its budget. ``all`` is the full matrix, run before
#: resolving an issue that touches the rig, decoders or walkers.
CI_SET = ("6.17", "7.3")


def log(msg: str) -> None:
    print(f"vmtests: {msg}", file=sys.stderr, flush=True)


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# --------------------------------------------------------------------------
# apt, privately


def apt_options() -> list[str]:
    """apt-get/apt-cache options for a private trixie-backports index."""
    root = CACHE / "apt"
    for d in ("lists/partial", "archives/partial", "etc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    sources = root / "etc" / "sources.list"
    uri = mirror.require_mirror()
    text = (f"deb {uri} {APT_SUITE} main\n"
            f"deb-src {uri} {APT_SUITE} main\n")
    if not sources.exists() or sources.read_text() != text:
        sources.write_text(text)
    return ["-o", f"Dir::Etc::SourceList={sources}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root}",
            "-o", f"Dir::Cache::Archives={root / 'archives'}",
            "-o", "APT::Sandbox::User=root",
            "-o", "Acquire::Check-Valid-Until=false"]


_apt_updated = False


def _apt_update() -> None:
    global _apt_updated
    if not _apt_updated:
        _run(["apt-get", *apt_options(), "-qq", "update"],
             stdout=subprocess.DEVNULL)
        _apt_updated = True


def _source_versions() -> list[str]:
    _apt_update()
    out = subprocess.run(["apt-cache", *apt_options(), "showsrc", "linux"],
                         check=True, capture_output=True, text=True).stdout
    return re.findall(r"^Version: (\S+)", out, re.M)


def _apt_proxy(url: str) -> dict:
    """The proxy apt itself would use for *url* (``Acquire::http::Proxy``
    or ``Acquire::https::Proxy`` in the host's apt configuration), as a
    urllib ProxyHandler mapping; empty when apt uses none (urllib then
    follows http_proxy/https_proxy from the environment)."""
    scheme = url.split(":", 1)[0]
    r = subprocess.run(["apt-config", "shell", "P", f"Acquire::{scheme}::Proxy"],
                       capture_output=True, text=True)
    m = re.match(r"P='(.*)'", r.stdout.strip())
    return {scheme: m.group(1)} if m and m.group(1) not in ("", "DIRECT") \
        else {}


def _download(url: str, dest: Path) -> bool:
    """Download *url* to *dest* atomically, through apt's proxy if it has
    one; False on HTTP 404."""
    part = dest.with_suffix(dest.suffix + ".part")
    handlers = [urllib.request.ProxyHandler(p)] if (p := _apt_proxy(url)) \
        else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=120) as r, open(part, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except urllib.error.HTTPError as e:
        part.unlink(missing_ok=True)
        if e.code == 404:
            return False
        raise
    part.rename(dest)
    return True


def fetch_source(k: Kernel) -> tuple[str, Path]:
    """Return (upstream version, path of the cached source tarball)."""
    src = CACHE / "src"
    src.mkdir(parents=True, exist_ok=True)
    if k.binary:
        debs = sorted(src.glob(f"{k.binary}_*_all.deb"))
        if not debs:
            _apt_update()
            log(f"downloading {k.binary}")
            _run(["apt-get", *apt_options(), "-qq", "download", k.binary],
                 cwd=src)
            debs = sorted(src.glob(f"{k.binary}_*_all.deb"))
        deb = debs[-1]
        version = deb.name.split("_")[1].split("-")[0]
        tar = src / f"{k.binary}_{version}.tar.xz"
        if not tar.exists():
            log(f"unpacking {deb.name}")
            inner = f"./usr/src/{k.binary}.tar.xz"
            with open(tar.with_suffix(".part"), "wb") as out:
                p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb],
                                      stdout=subprocess.PIPE)
                _run(["tar", "-xO", inner], stdin=p1.stdout, stdout=out)
                if p1.wait():
                    raise RuntimeError(f"dpkg-deb failed on {deb}")
            tar.with_suffix(".part").rename(tar)
        return version, tar
    for version in k.versions:
        tar = src / f"linux_{version}.orig.tar.xz"
        if tar.exists():
            return version, tar
    debvers = _source_versions()
    for version in k.versions:
        tar = src / f"linux_{version}.orig.tar.xz"
        cand = [v for v in debvers if v.split("-")[0] == version]
        if not cand:
            log(f"{version}: not in the {APT_SUITE} index, trying the next")
            continue
        out = subprocess.run(
            ["apt-get", *apt_options(), "source", "--download-only",
             "--print-uris", f"linux={cand[-1]}"],
            check=True, capture_output=True, text=True, cwd=src).stdout
        urls = re.findall(r"'(\S+orig\.tar\.xz)'", out)
        if not urls:
            continue
        log(f"downloading {urls[0]}")
        if _download(urls[0], tar):
            return version, tar
        log(f"{version}: 404, trying the next")
    raise RuntimeError(f"no source reachable for kernel {k.name} "
                       f"(tried {', '.join(k.versions)})")


# --------------------------------------------------------------------------
# build


@dataclasses.dataclass(frozen=True)
class Build:
    """A finished build: bzImage and the vmlinux of the same build."""

    kernel: Kernel
    version: str
    dir: Path

    @property
    def bzimage(self) -> Path:
        return self.dir / "bzImage"

    @property
    def vmlinux(self) -> Path:
        return self.dir / "vmlinux"

    def config_has(self, option: str) -> bool:
        """Whether this build's .config sets *option* (``CONFIG_X``) to y."""
        try:
            return f"\n{option}=y\n" in (self.dir / "config").read_text()
        except OSError:
            return False


def _compiler_id() -> str:
    return subprocess.run(["gcc", "--version"], capture_output=True,
                          text=True, check=True).stdout.splitlines()[0]


def build_key(version: str, k: Kernel | None = None) -> str:
    """The cache key of *version* built with *k*'s fragments (the common
    fragment alone, so the key of a kernel without an extra fragment does
    not change when another kernel gains one) and this compiler."""
    h = hashlib.sha256()
    for frag in (k.fragments() if k else [FRAGMENT]):
        h.update(frag.read_bytes())
    h.update(_compiler_id().encode())
    return f"{version}-{h.hexdigest()[:12]}"


def cached_build(k: Kernel) -> Build | None:
    """The finished build of *k* for the current fragment, if cached."""
    for version in ((k.versions or ()) + tuple(
            p.name.split("_")[1][:-len(".tar.xz")]
            for p in sorted((CACHE / "src").glob(f"{k.binary}_*.tar.xz"))
            if k.binary)):
        d = CACHE / "kernels" / build_key(version, k)
        if (d / "done").exists():
            return Build(k, version, d)
    return None


def kconfig_symbols(tree: Path) -> set[str]:
    """Every symbol some Kconfig file in *tree* defines."""
    syms = set()
    pat = re.compile(r"^\s*(?:menu)?config\s+(\w+)", re.M)
    for path in tree.rglob("Kconfig*"):
        try:
            syms.update(pat.findall(path.read_text(errors="replace")))
        except OSError:
            pass
    return syms


def verify_config(tree: Path, fragment: Path = FRAGMENT) -> list[str]:
    """Options of *fragment* that this tree knows but did not set.

    Returns the list of problems (empty when the config is right).
    """
    want = re.findall(r"^CONFIG_(\w+)=y", fragment.read_text(), re.M)
    have = set(re.findall(r"^CONFIG_(\w+)=y",
                          (tree / ".config").read_text(), re.M))
    known = kconfig_symbols(tree)
    return [f"CONFIG_{s}" for s in want if s in known and s not in have]


def compiler(tree: Path) -> tuple[str, dict]:
    """``(CC, environment)`` for building in *tree*: the kernels and the
    out-of-tree module are built the same way.

    ccache only when asked (``KHO_VMTEST_CCACHE`` set): a build is cached
    whole (by version, fragment and compiler), so ccache helps only a
    rebuild of the same version with another fragment, and on a miss it
    costs a second preprocessor run and the compression (7.3.4: 30% more
    CPU with it, a cold CI run's builds all miss).
    """
    env = dict(os.environ)
    if not os.environ.get("KHO_VMTEST_CCACHE"):
        return "gcc", env
    env.update(CCACHE_DIR=str(CACHE / "ccache"), CCACHE_BASEDIR=str(tree),
               CCACHE_MAXSIZE="8G")
    return "ccache gcc", env


def build(k: Kernel, jobs: int | None = None) -> Build:
    """Fetch and build kernel *k* unless a cached build exists."""
    b = cached_build(k)
    if b:
        return b
    with cachelock.locked(CACHE, f"kernel-{k.name}"):
        return _build_locked(k, jobs)


def _build_locked(k: Kernel, jobs: int | None) -> Build:
    b = cached_build(k)
    if b:
        return b
    version, tar = fetch_source(k)
    out = CACHE / "kernels" / build_key(version, k)
    if (out / "done").exists():
        return Build(k, version, out)
    tree = CACHE / "trees" / f"linux-{version}"
    times = {}
    if not (tree / "Makefile").exists():
        t = time.monotonic()
        log(f"extracting {tar.name}")
        tmp = tree.with_name(tree.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _run(["tar", "-xf", tar, "-C", tmp, "--strip-components=1"])
        shutil.rmtree(tree, ignore_errors=True)
        tmp.rename(tree)
        times["extract"] = round(time.monotonic() - t, 1)
    fragment = CACHE / "kernels" / f"fragment-{k.name}.config"
    fragment.parent.mkdir(parents=True, exist_ok=True)
    fragment.write_text("".join(f.read_text() for f in k.fragments()))
    cc, env = compiler(tree)
    env["KCONFIG_ALLCONFIG"] = str(fragment)
    jobs = jobs or os.cpu_count() or 2
    logf = CACHE / "kernels" / f"build-{version}.log"
    logf.parent.mkdir(parents=True, exist_ok=True)
    log(f"building {version} ({k.layout}) -j{jobs}, log: {logf}")
    t = time.monotonic()
    with open(logf, "w") as lf:
        try:
            _run(["make", f"CC={cc}", "HOSTCC=gcc", "allnoconfig"], cwd=tree,
                 env=env, stdout=lf, stderr=subprocess.STDOUT)
            missing = verify_config(tree, fragment)
            if missing:
                raise RuntimeError(
                    f"{version}: the config did not take these options: "
                    f"{' '.join(missing)} (see {tree / '.config'})")
            times["config"] = round(time.monotonic() - t, 1)
            # "modules" too: it writes Module.symvers, which out-of-tree
            # modules (vmtests/kmod) are built against.
            times.update(timed_make(
                ["make", f"-j{jobs}", f"CC={cc}", "HOSTCC=gcc", "bzImage",
                 "vmlinux", "modules"], tree, env, lf))
        except subprocess.CalledProcessError as e:
            lf.flush()
            tail = logf.read_text(errors="replace").splitlines()[-25:]
            raise RuntimeError(f"building {version} failed ({e.cmd[1]}):\n"
                               + "\n".join(tail)) from None
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(tree / "arch/x86/boot/bzImage", tmp / "bzImage")
    shutil.copy2(tree / "vmlinux", tmp / "vmlinux")
    shutil.copy2(tree / ".config", tmp / "config")
    (tmp / "release").write_text(
        (tree / "include/config/kernel.release").read_text())
    (tmp / "times.json").write_text(json.dumps(times) + "\n")
    (tmp / "done").write_text(version + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"built {version} in {out}: "
        + ", ".join(f"{p} {v:.0f} s" for p, v in times.items()))
    return Build(k, version, out)


#: kbuild's quiet output: the lines that end one phase of a build
_LINK_START = re.compile(r"^\s*LD\s+vmlinux\.o$")
_BOOT_LINE = re.compile(r"\barch/x86/boot/")
_BZIMAGE_READY = re.compile(r"^Kernel: arch/x86/boot/bzImage is ready")
_BTF_LINE = re.compile(r"^\s*BTF\s")


def make_phases(lines) -> dict:
    """Where a build's seconds went, from its ``(seconds, line)`` output:
    ``compile`` (every object, until ``LD vmlinux.o``), ``link`` (vmlinux:
    kallsyms passes, BTF, ...), of which ``btf`` (pahole: from each ``BTF``
    line to the next line), ``bzimage`` and ``modules`` (after the bzImage,
    to the end), ``make`` (all). A phase whose marker never came is left
    out."""
    out: dict = {}
    t_link = t_boot = t_ready = t_btf = None
    btf = 0.0
    end = 0.0
    for t, line in lines:
        end = t
        if t_btf is not None:
            btf += t - t_btf
            t_btf = None
        if _BTF_LINE.match(line):
            t_btf = t
        if t_link is None:
            if _LINK_START.match(line):
                t_link = t
        elif t_boot is None and _BOOT_LINE.search(line):
            t_boot = t
        if t_ready is None and _BZIMAGE_READY.match(line):
            t_ready = t
    if t_link is not None:
        out["compile"] = t_link
        if t_boot is not None:
            out["link"] = t_boot - t_link
            out["btf"] = btf
            if t_ready is not None:
                out["bzimage"] = t_ready - t_boot
                out["modules"] = end - t_ready
    out["make"] = end
    return {k: round(v, 1) for k, v in out.items()}


def timed_make(cmd: list[str], tree: Path, env: dict, lf) -> dict:
    """Run *cmd* in *tree*, its output to *lf* with each line's seconds
    since the start; returns :func:`make_phases` of it.

    :raises subprocess.CalledProcessError: when make fails.
    """
    t0 = time.monotonic()
    lines = []
    with subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          errors="replace") as p:
        for line in p.stdout:
            t = time.monotonic() - t0
            lf.write(f"{t:7.1f} {line}")
            lines.append((t, line.rstrip("\n")))
    if p.returncode:
        raise subprocess.CalledProcessError(p.returncode, cmd)
    return make_phases(lines)


def select(names: str) -> list[Kernel]:
    """Kernels matching ``all``, ``ci`` (:data:`CI_SET`) or a
    comma-separated list of names/versions (in the order given)."""
    if names in ("", "all"):
        return list(KERNELS)
    if names == "ci":
        names = ",".join(CI_SET)
    chosen = []
    for n in names.split(","):
        m = [k for k in KERNELS
             if n == k.name or n in k.versions or n.startswith(k.name + ".")]
        if not m:
            raise SystemExit(f"vmtests: unknown kernel {n!r}; known: "
                             + ", ".join(k.name for k in KERNELS)
                             + ", all, ci")
        chosen += m
    return chosen


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="fetch and build vmtest kernels")
    ap.add_argument("--kernel", default="all")
    args = ap.parse_args()
    for k in select(args.kernel):
        try:
            b = build(k)
        except RuntimeError as e:
            sys.exit(f"vmtests: {e}")
        print(k.name, b.version, b.dir)

"""The kernels whose DWARF the walker tests load.

Two kinds, always the same list whatever the build cache holds:

* **synthetic** variants, compiled in the test session from
  ``tests/kdwarf/kernel.c`` (one ``-D`` flag set per KHO layout, written
  from the kernel sources): always available, so every layout and every
  feature (kho-v1 finalize, page magic, radix, LUO, flat or NUMA pgdat) is
  exercised on any machine with gcc;
* the **vmtest builds** of the matrix (``vmtests/kernels.py``: ``KERNELS``,
  ``cached_build``): the real vmlinux of each kernel when the cache holds a
  build of the current config fragment, else a skip naming the build
  (``./run-tests`` builds them). Stale cache directories never count.

Tests parametrize with :func:`params` and turn a :class:`Variant` into a
:class:`Dwarf` (vmlinux path, release, NUMA or not) with :func:`resolve`;
the session-wide compiler is conftest's ``kdwarf`` fixture.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
KDWARF = HERE / "kdwarf"
sys.path.insert(0, str(HERE.parent / "vmtests"))
import kernels as vmkernels  # noqa: E402  (vmtests/kernels.py)

#: The prefix of every skip for a missing build (conftest counts them).
NEEDS_BUILD = "needs the {} vmtest build"


def _series(release: str) -> tuple[int, int]:
    return tuple(int(x) for x in release.split(".")[:2])


@dataclasses.dataclass(frozen=True)
class Variant:
    """One kernel the DWARF tests run against (not resolved yet)."""

    id: str                 # test id: synth-6.17, synth-7.3-numa, build-7.1
    kind: str               # "synth" or "build"
    series: str             # the vmtest matrix row: "6.17" ... "7.3"
    release: str = ""       # synth: the release whose sources it copies
    flags: tuple = ()       # synth: -D flags for kernel.c
    numa: bool | None = None  # synth: CONFIG_NUMA (builds: from .config)

    @property
    def synthetic(self) -> bool:
        return self.kind == "synth"

    def since(self, series: str) -> bool:
        """Whether this variant's kernel is *series* or newer."""
        return _series(self.series) >= _series(series)


@dataclasses.dataclass(frozen=True)
class Dwarf:
    """A resolved variant: a vmlinux drgn can load."""

    variant: Variant
    vmlinux: str
    release: str            # e.g. "7.3.4"
    numa: bool              # node_data[] (CONFIG_NUMA), else contig_page_data
    bzimage: str | None = None   # builds only

    @property
    def id(self) -> str:
        return self.variant.id


#: One per layout the project supports (docs/abi.md 2.1), 7.3 twice: the
#: vmtest 7.3 is a NUMA build, the others are flat.
SYNTH = [
    Variant("synth-6.17", "synth", "6.17", "6.17.8", ("-DKV=617",), False),
    Variant("synth-6.18", "synth", "6.18", "6.18.15", ("-DKV=618",), False),
    Variant("synth-6.19", "synth", "6.19", "6.19.11", ("-DKV=619",), False),
    Variant("synth-7.1", "synth", "7.1", "7.1.13", ("-DKV=701",), False),
    Variant("synth-7.3-flat", "synth", "7.3", "7.3.4", ("-DKV=703",), False),
    Variant("synth-7.3-numa", "synth", "7.3", "7.3.4",
            ("-DKV=703", "-DCONFIG_NUMA"), True),
]

#: The vmtest matrix, in its own order.
BUILDS = [Variant(f"build-{k.name}", "build", k.name)
          for k in vmkernels.KERNELS]

ALL = SYNTH + BUILDS

#: Both pglist_data layouts, flat (``contig_page_data``) and NUMA
#: (``node_data[]``): the synthetic 7.3 pair, and every build.
PGDATS = [v for v in SYNTH if v.series == "7.3"] + BUILDS


def params(variants=None) -> list:
    """``pytest.param`` of each variant (default: all), with its id."""
    return [pytest.param(v, id=v.id) for v in (ALL if variants is None
                                               else variants)]


def since(series: str, variants=None) -> list[Variant]:
    """The variants (default: all) of *series* or newer."""
    return [v for v in (ALL if variants is None else variants)
            if v.since(series)]


def before(series: str, variants=None) -> list[Variant]:
    return [v for v in (ALL if variants is None else variants)
            if not v.since(series)]


def newest(variants=None) -> list[Variant]:
    """The variants of the newest series (7.3: both synthetic pgdats and
    the build)."""
    vs = ALL if variants is None else variants
    top = max(_series(v.series) for v in vs)
    return [v for v in vs if _series(v.series) == top]


# -- vmtest builds -----------------------------------------------------------

def _kernel(series: str) -> vmkernels.Kernel:
    return next(k for k in vmkernels.KERNELS if k.name == series)


def needs_build(series: str) -> str:
    """The skip reason of a test that needs the build of *series*."""
    k = _kernel(series)
    name = k.versions[0] if k.versions else k.name
    src = f"{k.binary}, " if k.binary else ""
    return (NEEDS_BUILD.format(name) + f" ({src}vmtests/kernels.py, current "
            "config fragment); ./run-tests builds it")


@functools.cache
def cached_build(series: str):
    """The current build of *series* (``vmtests.kernels.Build``) or None;
    looked up once per session."""
    return vmkernels.cached_build(_kernel(series))


# -- synthetic variants ------------------------------------------------------

class Compiler:
    """Compiles ``tests/kdwarf/kernel.c`` once per variant into *outdir*
    (one per session: conftest's ``kdwarf`` fixture)."""

    SOURCES = ("kernel.c", "kernel.lds")

    def __init__(self, outdir: Path):
        self.outdir = Path(outdir)
        self.built: dict[tuple, str] = {}
        h = hashlib.sha256()
        for name in self.SOURCES:
            h.update((KDWARF / name).read_bytes())
        self.digest = h.hexdigest()[:12]

    def command(self, flags, out: str) -> list[str]:
        return ["gcc", "-g", "-O0", "-fno-eliminate-unused-debug-types",
                "-ffreestanding", "-fno-pic", "-no-pie", "-mcmodel=kernel",
                "-fno-asynchronous-unwind-tables", "-nostdlib", "-static",
                "-Wall", f"-Wl,-T,{KDWARF / 'kernel.lds'}",
                "-Wl,--build-id=none", "-Wl,--no-warn-rwx-segments",
                *flags, "-o", out, str(KDWARF / "kernel.c")]

    def vmlinux(self, variant: Variant) -> str:
        """The ELF of *variant*, compiled on first use."""
        key = tuple(variant.flags)
        if key in self.built:
            return self.built[key]
        out = str(self.outdir / f"vmlinux-{variant.id}-{self.digest}")
        try:
            p = subprocess.run(self.command(variant.flags, out),
                               capture_output=True, text=True)
        except FileNotFoundError:
            pytest.fail("gcc is not installed: the synthetic kernel DWARF "
                        "(tests/kdwarf/kernel.c) needs gcc and binutils")
        if p.returncode:
            pytest.fail(f"compiling tests/kdwarf/kernel.c for {variant.id} "
                        f"failed:\n{p.stderr}")
        self.built[key] = out
        return out


def resolve(variant: Variant, compiler: Compiler) -> Dwarf:
    """The :class:`Dwarf` of *variant*: compiled (synthetic) or the cached
    build; a missing build is a skip naming it."""
    if variant.synthetic:
        return Dwarf(variant, compiler.vmlinux(variant), variant.release,
                     bool(variant.numa))
    b = cached_build(variant.series)
    if b is None or not b.vmlinux.exists():
        pytest.skip(needs_build(variant.series))
    bz = str(b.bzimage) if b.bzimage.exists() else None
    return Dwarf(variant, str(b.vmlinux), b.version,
                 b.config_has("CONFIG_NUMA"), bz)


if __name__ == "__main__":
    # python3 tests/variants.py: which builds are current, where the
    # synthetic ELFs would go
    for v in BUILDS:
        b = cached_build(v.series)
        print(f"{v.id:<16} {b.dir if b else needs_build(v.series)}")
    import tempfile
    c = Compiler(Path(tempfile.mkdtemp()))
    for v in SYNTH:
        print(f"{v.id:<16} {c.vmlinux(v)}")

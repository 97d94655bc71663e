"""Build the vmtests' KHO workload module (vmtests/kmod) for a cached kernel.

The module is built against the kernel's own build tree
(``<cache>/trees/linux-<version>``, which has its ``Module.symvers``) with
``make -C <tree> M=<out> modules``, on a copy of the sources, so nothing is
written into the repository.  Results are cached under
``<cache>/kmod/<build key>-<source hash>``; the kernel's lock is held while
building because the tree is shared with kernel builds.

    python3 vmtests/kmod.py --kernel 6.17     # prints the .ko path
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cachelock  # noqa: E402
import kernels  # noqa: E402

SRC = HERE / "kmod"
SOURCES = ("kho_workload.c", "Kbuild")
MODULE = "kho_workload.ko"


def source_hash() -> str:
    """Hash of the module sources (names and contents)."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0")
        h.update((SRC / name).read_bytes())
    return h.hexdigest()[:12]


def build_module(build: kernels.Build) -> Path:
    """Return the path of kho_workload.ko built for *build*, building it if needed."""
    out = kernels.CACHE / "kmod" / f"{build.dir.name}-{source_hash()}"
    ko = out / MODULE
    if ko.exists():
        return ko
    with cachelock.locked(kernels.CACHE, f"kernel-{build.kernel.name}"):
        if ko.exists():
            return ko
        return _build_locked(build, out)


def _build_locked(build: kernels.Build, out: Path) -> Path:
    tree = kernels.CACHE / "trees" / f"linux-{build.version}"
    config = tree / ".config"
    if not config.exists() or not (tree / "Module.symvers").exists():
        raise RuntimeError(f"{tree} is not a finished kernel build tree "
                           f"(no .config or Module.symvers)")
    if config.read_bytes() != (build.dir / "config").read_bytes():
        raise RuntimeError(f"{config} differs from {build.dir / 'config'}: "
                           f"the tree was reconfigured after the build; "
                           f"rebuild kernel {build.kernel.name}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in SOURCES:
        shutil.copy2(SRC / name, tmp / name)
    cc, env = kernels.compiler(tree)
    log = tmp / "build.log"
    with open(log, "w") as lf:
        r = subprocess.run(["make", "-C", str(tree), f"M={tmp}", f"CC={cc}",
                            "HOSTCC=gcc", "modules"], env=env, stdout=lf,
                           stderr=subprocess.STDOUT)
    if r.returncode or not (tmp / MODULE).exists():
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(f"building {MODULE} for {build.version} failed "
                           f"(log: {log}):\n" + "\n".join(tail))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out / MODULE


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(
        description="build the KHO workload module for a vmtest kernel")
    ap.add_argument("--kernel", required=True,
                    help="a matrix name or version, e.g. 6.17")
    args = ap.parse_args()
    try:
        for k in kernels.select(args.kernel):
            print(build_module(kernels.build(k)))
    except RuntimeError as e:
        sys.exit(f"vmtests: {e}")


if __name__ == "__main__":
    main()

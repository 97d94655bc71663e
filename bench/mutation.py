#!/usr/bin/env python3
"""How many realistic one-point bugs the unit suite catches: mutation
testing with mutmut over the code whose verdicts users act on.

mutmut 3 plants one change at a time inside a function (an operator
flipped, a constant moved by one, a condition negated, an argument
dropped...) and runs the unit tests that reach that function; a mutant the
tests do not fail on "survived". Printed per package: mutants, killed,
survived, reached by no test, the equivalent mutants listed by hand in
bench/mutation-equivalent.txt (a change no input can observe), other
(not run), and the kill ratio killed / (mutants - equivalent); a mutant
that makes the tests hang (timeout) or crash counts as killed, one that no
test reaches does not. Issue #16's goal is >= 90% for each package.

mutmut 3 does not mutate module-level tables (abi/releases.py's rows):
tests/test_releases_table.py checks every cell against docs/abi.md.

usage: bench/mutation.py [--package PKG ...] [-j N] [--keep] [--json]
  PKG: decode, check, abi, trace.model (default: all four; decode holds
  the LUO decoders, decode/clients.py)
examples:
  bench/mutation.py --package abi --package trace.model   # 227: 4 min
  bench/mutation.py -j 2     # all: hours here (check/ ran 1,148 of its
                             # 2,644 mutants in 25 min)

mutmut (pinned below) is installed into its own virtual environment under
~/.cache/kho-inspect/bench (it sees this Python's packages: drgn, pytest,
hypothesis); the work happens in a copy of the tree's tracked files, which
--keep leaves behind (`mutmut show NAME` there prints a mutant).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import venv

MUTMUT = "mutmut==3.8.1"
ROOT = pathlib.Path(__file__).resolve().parent.parent
EQUIVALENT = pathlib.Path(__file__).with_name("mutation-equivalent.txt")
PACKAGES = {"decode": "kho_inspect/decode/*", "check": "kho_inspect/check/*",
            "abi": "kho_inspect/abi/*",
            "trace.model": "kho_inspect/trace/model.py"}
#: mutmut's exit-code classes (mutmut/stats.py): a test failed (1, 3), or
#: the mutant made the tests hang or crash (timeout, segfault): caught
KILLED = {1, 3, 36, -24, 24, 152, 255, -11, -9}
SURVIVED, NO_TESTS = {0}, {5, 33}


def progress(msg: str) -> None:
    print(f"mutation: {msg}", file=sys.stderr, flush=True)


def mutmut_env() -> pathlib.Path:
    """The virtual environment holding mutmut (created once)."""
    home = pathlib.Path(os.environ.get("XDG_CACHE_HOME",
                                       pathlib.Path.home() / ".cache"))
    d = home / "kho-inspect" / "bench" / ("venv-" + MUTMUT.replace("=", ""))
    py = d / "bin" / "python"
    if not (d / "bin" / "mutmut").exists():
        progress(f"installing {MUTMUT} into {d}")
        venv.create(d, system_site_packages=True, with_pip=True)
        subprocess.run([py, "-m", "pip", "install", "-q", MUTMUT],
                       check=True)
    return d


def workdir(packages, keep: bool) -> pathlib.Path:
    """A copy of the tracked files with mutmut's configuration appended."""
    w = pathlib.Path(tempfile.mkdtemp(prefix="kho-mutation."))
    files = subprocess.run(["git", "-C", ROOT, "ls-files"], check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        (w / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, w / f)
    others = sorted({f.split("/")[0] for f in files}
                    - {"kho_inspect", "pyproject.toml"})
    with open(w / "pyproject.toml", "a") as f:
        f.write("\n[tool.mutmut]\n"
                'source_paths = ["kho_inspect"]\n'
                f"only_mutate = {json.dumps([PACKAGES[p] for p in packages])}\n"
                f"also_copy = {json.dumps(others)}\n"
                'pytest_add_cli_args_test_selection = ["tests/"]\n'
                'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
                # a hanging mutant is caught after 3x its tests' time, not
                # mutmut's 15x: minutes each for the functions most tests
                # reach
                "timeout_multiplier = 3.0\ntimeout_constant = 5.0\n")
    if keep:
        progress(f"work tree kept: {w}")
    return w


def results(w: pathlib.Path) -> dict:
    """{mutant name: exit code or None} from mutmut's .meta files."""
    out = {}
    for meta in (w / "mutants").rglob("*.py.meta"):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def package_of(name: str) -> str:
    mod = name.split(".x_")[0].split(".xǁ")[0]   # function or method
    for p in PACKAGES:
        if mod == "kho_inspect." + p or mod.startswith(f"kho_inspect.{p}."):
            return p
    return "?"


def equivalent() -> dict:
    """{mutant name: why} from bench/mutation-equivalent.txt."""
    out = {}
    for line in EQUIVALENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, why = line.partition(" ")
            out[name] = why.strip()
    return out


def table(codes: dict, packages, eq: dict) -> list[dict]:
    rows = []
    for p in packages:
        mine = {k: v for k, v in codes.items() if package_of(k) == p}
        killed = sum(v in KILLED for v in mine.values())
        survived = [k for k, v in mine.items() if v in SURVIVED]
        equiv = [k for k in survived if k in eq]
        untested = sum(v in NO_TESTS for v in mine.values())
        judged = len(mine) - len(equiv)
        rows.append({"package": p, "mutants": len(mine), "killed": killed,
                     "survived": len(survived) - len(equiv),
                     "no_tests": untested, "equivalent": len(equiv),
                     "other": len(mine) - killed - len(survived) - untested,
                     "ratio": killed / judged if judged else None,
                     "survivors": sorted(set(survived) - set(equiv))})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[3:]))
    ap.add_argument("--package", action="append", choices=PACKAGES,
                    help="mutate this package only (repeatable)")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 1,
                    help="test processes (default: the cores)")
    ap.add_argument("--keep", action="store_true",
                    help="leave the work tree (and mutmut's state) behind")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    try:
        return run(a)
    except KeyboardInterrupt:
        return 130


def run(a) -> int:
    packages = a.package or list(PACKAGES)
    env_dir = mutmut_env()
    w = workdir(packages, a.keep)
    try:
        progress(f"mutmut run -j {a.j} over {', '.join(packages)} in {w}")
        # the mutated copy first, for the tests' child processes too; no
        # kernel builds (tests on real DWARF take seconds each: the
        # hermetic kernels of tests/kdwarf stand in for them)
        (w / "no-builds").mkdir()
        # made now: a PYTHONPATH entry missing at start-up is cached as
        # absent, and the tree's own install would be imported instead
        (w / "mutants").mkdir()
        env = dict(os.environ, PYTHONPATH=str(w / "mutants"),
                   KHO_VMTEST_CACHE=str(w / "no-builds"))
        rc = subprocess.run([env_dir / "bin" / "mutmut", "run",
                             "--max-children", str(a.j)], cwd=w, env=env,
                            stdout=sys.stderr).returncode
        if rc:
            print(f"mutation: mutmut run failed (exit {rc})",
                  file=sys.stderr)
            return 1
        rows = table(results(w), packages, equivalent())
    finally:
        if not a.keep:
            shutil.rmtree(w, ignore_errors=True)
    if a.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    from tabulate import tabulate
    print(tabulate([[r["package"], r["mutants"], r["killed"], r["survived"],
                     r["no_tests"], r["equivalent"], r["other"],
                     "-" if r["ratio"] is None else f"{r['ratio']:.1%}"]
                    for r in rows],
                   ["package", "mutants", "killed", "survived", "no test",
                    "equiv.", "other", "killed/judged"]))
    for r in rows:
        for name in r["survivors"]:
            print(f"survived: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

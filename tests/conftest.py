import os
import shutil
import subprocess

import pytest
from hypothesis import settings


def pytest_addoption(parser):
    parser.addoption("--fuzz-examples", type=int, default=200,
                     help="hypothesis examples per property test "
                          "(default 200; e.g. 20000 for a long run)")


def pytest_configure(config):
    n = config.getoption("--fuzz-examples")
    # CI runs the same examples every time (CI=true): a failure there is
    # reproducible; local runs explore new ones.
    settings.register_profile("kho", max_examples=n, deadline=None,
                              derandomize=bool(os.environ.get("CI")))
    settings.load_profile("kho")


@pytest.fixture(scope="session")
def dtc():
    """Path of dtc (Debian device-tree-compiler), the independent FDT oracle.
    The README's test command installs it; its absence is a failure."""
    path = shutil.which("dtc")
    if not path:
        pytest.fail("dtc is not installed: run the README's test command "
                    "(it installs device-tree-compiler), or apt-get install "
                    "device-tree-compiler")
    return path


def run_dtc(dtc, src: bytes, inform="dts", outform="dtb") -> bytes:
    p = subprocess.run([dtc, "-q", "-I", inform, "-O", outform, "-"],
                       input=src, capture_output=True)
    if p.returncode:
        raise AssertionError(f"dtc failed: {p.stderr.decode()}")
    return p.stdout


# -- kernel DWARF: synthetic variants and vmtest builds (tests/variants.py) --

@pytest.fixture(scope="session")
def kdwarf(tmp_path_factory):
    """Compiles tests/kdwarf/kernel.c once per variant and session."""
    import variants
    return variants.Compiler(tmp_path_factory.mktemp("kdwarf"))


def pytest_terminal_summary(terminalreporter):
    """One line, when kernel-DWARF tests ran: how many tests need a vmtest
    build the cache lacks, and which builds."""
    import re
    import variants
    ran = [r for key in ("passed", "failed", "skipped")
           for r in terminalreporter.stats.get(key, [])
           if re.search(r"\[(synth|build)-", r.nodeid)]
    if not ran:
        return
    pat = re.compile(re.escape(variants.NEEDS_BUILD).replace(
        r"\{\}", r"(\S+)"))
    builds: dict[str, set] = {}
    for rep in terminalreporter.stats.get("skipped", []):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else ""
        m = pat.search(str(reason))
        if m:
            builds.setdefault(m.group(1), set()).add(rep.nodeid)
    n = len(set().union(*builds.values())) if builds else 0
    if n:
        terminalreporter.write_line(
            f"{n} tests need a vmtest build the cache lacks: "
            + ", ".join(f"{b} ({len(builds[b])})" for b in sorted(
                builds, key=lambda b: tuple(map(int, b.split(".")))))
            + "; ./run-tests builds them")
    else:
        terminalreporter.write_line(
            "kernel DWARF: every vmtest build these tests use is in the "
            "cache")

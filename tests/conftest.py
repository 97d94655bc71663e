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

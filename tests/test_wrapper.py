"""./kho-inspect's choice of Python (scripts/python-env.sh), run for real on
a throwaway checkout: the wrapper and its helper copied beside a stub
kho_inspect that prints where it runs from, a stub dependency
(``khostubdep``) and an in-tree build backend, so that pip installs it
without a network (PIP_NO_INDEX) in a few seconds."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PYPROJECT = """\
[build-system]
requires = []
build-backend = "stub_backend"
backend-path = ["_build"]

[project]
name = "kho_inspect"
version = "0"
dependencies = ["khostubdep>=1"]

[project.optional-dependencies]
test = []
"""

MAIN = """\
import json, os, sys
import khostubdep
print(json.dumps({"file": os.path.realpath(__file__), "argv": sys.argv[1:],
                  "exe": sys.executable, "dep": khostubdep.__file__}))
"""

# PEP 660 editable wheel: a .pth naming the checkout and its deps/ (where
# khostubdep lives); each build is logged, to count pip's runs.
BACKEND = """\
import os, zipfile
CO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def get_requires_for_build_editable(config_settings=None):
    return []
def build_editable(wheel_directory, config_settings=None,
                   metadata_directory=None):
    with open(os.path.join(CO, "builds.log"), "a") as f:
        f.write("build\\n")
    name = "kho_inspect-0-py3-none-any.whl"
    di = "kho_inspect-0.dist-info"
    files = {"kho_inspect_stub.pth": CO + "\\n" + CO + "/deps\\n",
             di + "/METADATA": "Metadata-Version: 2.1\\nName: kho_inspect\\n"
                               "Version: 0\\n",
             di + "/WHEEL": "Wheel-Version: 1.0\\nGenerator: stub\\n"
                            "Root-Is-Purelib: true\\nTag: py3-none-any\\n"}
    files[di + "/RECORD"] = "".join(f"{p},,\\n" for p in
                                    list(files) + [di + "/RECORD"])
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
    return name
"""


@pytest.fixture
def checkout(tmp_path):
    co = tmp_path / "co"
    (co / "scripts").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "kho-inspect"), co)
    shutil.copy(os.path.join(ROOT, "scripts", "python-env.sh"),
                co / "scripts")
    (co / "pyproject.toml").write_text(PYPROJECT)
    (co / "kho_inspect").mkdir()
    (co / "kho_inspect" / "__init__.py").write_text("")
    (co / "kho_inspect" / "__main__.py").write_text(MAIN)
    (co / "_build").mkdir()
    (co / "_build" / "stub_backend.py").write_text(BACKEND)
    (co / "deps").mkdir()
    (co / "deps" / "khostubdep.py").write_text("")
    # the current directory holds another kho_inspect: never the one run
    decoy = tmp_path / "elsewhere"
    (decoy / "kho_inspect").mkdir(parents=True)
    (decoy / "kho_inspect" / "__init__.py").write_text("")
    (decoy / "kho_inspect" / "__main__.py").write_text("print('decoy')\n")
    return co


def wrapper(co, *argv, python=sys.executable, pythonpath=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHON=python, PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    r = subprocess.run([str(co / "kho-inspect"), *argv], env=env,
                       cwd=co.parent / "elsewhere", capture_output=True,
                       text=True, timeout=120)
    out = json.loads(r.stdout) if r.returncode == 0 else None
    return r, out


def builds(co) -> int:
    log = co / "builds.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_in_place_when_the_python_has_everything(checkout):
    """The dependency importable as it is: no venv, no pip, this checkout's
    kho_inspect (not the current directory's) with the arguments given."""
    r, out = wrapper(checkout, "map", "--sample",
                     pythonpath=str(checkout / "deps"))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert out["file"] == str(checkout / "kho_inspect" / "__main__.py")
    assert out["argv"] == ["map", "--sample"]
    assert not (checkout / ".venv").exists() and builds(checkout) == 0


def test_venv_made_once_and_installed_once(checkout):
    """The dependency missing: .venv with the system's site packages,
    pip install -e once; the second run installs nothing."""
    r, out = wrapper(checkout, "fdt")
    assert r.returncode == 0, r.stderr
    venv = checkout / ".venv"
    assert out["exe"] == str(venv / "bin" / "python")
    assert out["file"] == str(checkout / "kho_inspect" / "__main__.py")
    assert out["dep"] == str(checkout / "deps" / "khostubdep.py")
    assert out["argv"] == ["fdt"]
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    assert f"lacks khostubdep: making {venv}" in r.stderr
    n = builds(checkout)
    assert n >= 1
    r, out = wrapper(checkout, "fdt")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert out["exe"] == str(venv / "bin" / "python")
    assert builds(checkout) == n


def test_venv_of_another_python_is_refused(checkout):
    """A .venv made from another interpreter: one line, exit 2, the venv
    left as it is."""
    fake = checkout / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho /opt/other/python3.11\n")
    fake.chmod(0o755)
    r, _ = wrapper(checkout, "fdt")
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    assert r.returncode == 2
    assert r.stderr == (
        f"kho-inspect: error: {checkout}/.venv was made from "
        f"/opt/other/python3.11, not {base} (PYTHON): use "
        f"PYTHON=/opt/other/python3.11, or remove {checkout}/.venv\n")
    assert fake.read_text().startswith("#!/bin/sh")


def test_no_venv_module_is_one_line(checkout, tmp_path):
    """A Python without ensurepip (Debian's without python3-venv): one
    line naming what to do, nothing made."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if base.startswith("/usr/bin/"):
        pytest.skip("Debian's own Python: the wrapper would apt-get install "
                    "its venv package as root")
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "ensurepip.py").write_text("raise ImportError('hidden')\n")
    r, _ = wrapper(checkout, "fdt", pythonpath=str(hide))
    assert r.returncode == 2
    assert r.stderr == (
        f"kho-inspect: error: {sys.executable} cannot make a venv (no "
        "ensurepip): set PYTHON to a Python that has drgn and tabulate, or "
        "one with venv\n")
    assert not (checkout / ".venv").exists()

"""The CLI's own surface: --version, the one-line summaries in --help, help
within 80 columns, and option values refused in one line (exit 2)."""

import os
import tomllib

import pytest

import kho_inspect
from kho_inspect.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *argv):
    """main(argv), also when argparse exits (--help, --version, errors)."""
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_version(capsys):
    rc, out, err = run(capsys, "--version")
    assert (rc, out, err) == (0, f"kho-inspect {kho_inspect.__version__}\n",
                              "")


def test_version_has_one_place():
    """The package metadata takes the version from kho_inspect.__version__:
    pyproject.toml names none of its own."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        doc = tomllib.load(f)
    assert "version" not in doc["project"]
    assert doc["project"]["dynamic"] == ["version"]
    assert doc["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "kho_inspect.__version__"}

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


COMMANDS = ("fdt", "map", "capture", "status", "tracker", "incoming",
            "trace", "picture", "verify", "check")


def _help(capsys, monkeypatch, *argv):
    monkeypatch.setenv("COLUMNS", "80")     # argparse wraps to the terminal
    rc, out, err = run(capsys, *argv, "--help")
    assert (rc, err) == (0, ""), err
    return out


def test_every_command_has_a_one_line_summary(capsys, monkeypatch):
    """Each command's summary is its one line in 'kho-inspect --help' and
    the paragraph under the usage of its own --help."""
    top = _help(capsys, monkeypatch).splitlines()
    listed = {}
    for line in top[top.index("  COMMAND") + 1:]:
        if not line.strip():
            break
        assert line.startswith("    ") and not line.startswith("     "), \
            f"a summary on two lines: {line!r}"
        name, summary = line.split(None, 1)
        listed[name] = summary
    assert tuple(listed) == COMMANDS
    for name, summary in listed.items():
        own = _help(capsys, monkeypatch, name)
        paragraphs = own.split("\n\n")
        assert paragraphs[0].startswith(f"usage: kho-inspect {name} ")
        assert paragraphs[1] == summary, name


@pytest.mark.parametrize("argv", [()] + [(c,) for c in COMMANDS])
def test_help_within_80_columns(capsys, monkeypatch, argv):
    out = _help(capsys, monkeypatch, *argv)
    assert [x for x in out.splitlines() if len(x) > 80] == []


def _usage(cmd: str, arg: str, why: str) -> str:
    return (f"kho-inspect: error: argument {arg}: {why} (see kho-inspect "
            f"{cmd} --help)\n")


NOT_A_COUNT = "not a count (0 or more): "
NOT_POSITIVE = "not a positive integer: "


@pytest.mark.parametrize("argv, err", [
    (["map", "--sample", "--limit", "-3"],
     _usage("map", "--limit", NOT_A_COUNT + "'-3'")),
    (["tracker", "--limit", "-1"],
     _usage("tracker", "--limit", NOT_A_COUNT + "'-1'")),
    (["incoming", "--limit", "x"],
     _usage("incoming", "--limit", NOT_A_COUNT + "'x'")),
    (["incoming", "--scan-limit", "-1"],
     _usage("incoming", "--scan-limit", NOT_A_COUNT + "'-1'")),
    (["check", "--limit", "-5"],
     _usage("check", "--limit", NOT_A_COUNT + "'-5'")),
    (["check", "--incoming", "--scan-limit", "-2"],
     _usage("check", "--scan-limit", NOT_A_COUNT + "'-2'")),
    (["verify", "x.core", "--limit", "-1"],
     _usage("verify", "--limit", NOT_A_COUNT + "'-1'")),
    (["verify", "x.core", "--scan-limit", "-1"],
     _usage("verify", "--scan-limit", NOT_A_COUNT + "'-1'")),
    (["trace", "-d", "0"], _usage("trace", "-d/--duration",
                                  NOT_POSITIVE + "'0'")),
    (["trace", "-p", "-4"], _usage("trace", "-p/--pid",
                                   NOT_POSITIVE + "'-4'")),
    (["trace", "--summary", "0"], _usage("trace", "interval",
                                         NOT_POSITIVE + "'0'")),
    (["trace", "--summary", "1", "0"], _usage("trace", "count",
                                              NOT_POSITIVE + "'0'")),
    # before any source is opened: the running kernel here has no KHO
    (["check", "--views", "foo"],
     "kho-inspect: error: --views foo: unknown view 'foo' (known: tracker, "
     "map; give two or more, comma-separated)\n"),
    (["check", "--views", "map,tracker,trace"],
     "kho-inspect: error: --views map,tracker,trace: unknown view 'trace' "
     "(known: tracker, map; give two or more, comma-separated)\n"),
    (["check", "--views", "map,map"],
     "kho-inspect: error: --views map,map: give two or more of tracker, "
     "map, comma-separated\n"),
])
def test_option_values_refused_in_one_line(capsys, argv, err):
    assert run(capsys, *argv) == (2, "", err)


def test_limit_0_lists_all_and_1_one(capsys):
    rc, out, err = run(capsys, "map", "--sample", "7.3", "--limit", "0")
    assert rc == 0, err
    assert "more ranges" not in out
    rc, out, err = run(capsys, "map", "--sample", "7.3", "--limit", "1")
    assert rc == 0, err
    assert "more ranges (--limit 0 shows all)" in out

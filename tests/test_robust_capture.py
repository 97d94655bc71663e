"""capture -o writes nothing but the regular file asked for, and Ctrl-C or a
signal never leaves a traceback or a half-written file (issue #9 section 6).
"""

import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from kho_inspect import samples
from kho_inspect.cli import main
from kho_inspect.image import check_output, read_image_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = samples.path("7.3")


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, out, err, pattern):
    assert rc == 2 and out == "", (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kho-inspect: error: "), err
    assert pattern in lines[0], lines[0]


def capture(capsys, out):
    return run(capsys, "capture", "--core", SAMPLE, "-o", out)


def test_capture_writes_the_file_and_nothing_else(tmp_path, capsys):
    before = set(os.listdir(tmp_path))
    rc, out, err = capture(capsys, str(tmp_path / "h.core"))
    assert rc == 0, err
    assert set(os.listdir(tmp_path)) - before == {"h.core"}
    st = os.lstat(tmp_path / "h.core")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0     # kernel memory: 0600
    assert read_image_meta(str(tmp_path / "h.core"))["release"] == "7.3.4"


def test_capture_replaces_a_regular_file(tmp_path, capsys):
    target = tmp_path / "h.core"
    target.write_bytes(b"old")
    rc, _, err = capture(capsys, str(target))
    assert rc == 0, err
    assert target.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.parametrize("make, pattern", [
    (lambda p: os.mkfifo(p), "device or special file"),
    (lambda p: os.mkdir(p), "is a directory"),
    (lambda p: os.symlink(os.path.join(os.path.dirname(p), "victim"), p),
     "symbolic link"),
])
def test_capture_refuses_what_is_not_a_regular_file(tmp_path, capsys, make,
                                                    pattern):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = str(tmp_path / "out")
    make(out)
    kind = stat.S_IFMT(os.lstat(out).st_mode)
    one_line_error(*capture(capsys, out), pattern)
    assert stat.S_IFMT(os.lstat(out).st_mode) == kind     # left as it was
    assert victim.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["out", "victim"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_capture_refuses_a_device_node(tmp_path, capsys):
    # A null device of our own (char 1:3), so a regression cannot destroy
    # the system's /dev/null.
    dev = str(tmp_path / "null")
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    one_line_error(*capture(capsys, dev), "device or special file")
    assert stat.S_ISCHR(os.lstat(dev).st_mode)
    assert os.listdir(tmp_path) == ["null"]


def test_dev_null_itself_is_refused():
    # check_output runs before anything is written; /dev/null is untouched.
    from kho_inspect.errors import KhoError
    st = os.lstat("/dev/null")
    with pytest.raises(KhoError, match="device or special file"):
        check_output("/dev/null")
    assert os.lstat("/dev/null").st_ino == st.st_ino


@pytest.mark.parametrize("out, pattern", [
    ("", "empty"),
    ("/nonexistent-dir-kho/x.core", "no such directory"),
    ("/proc/version", "/proc/version"),
])
def test_capture_bad_output_names(capsys, out, pattern):
    one_line_error(*capture(capsys, out), pattern)


def test_capture_into_a_trailing_slash(tmp_path, capsys):
    one_line_error(*capture(capsys, str(tmp_path) + "/"), "names a directory")


def test_planted_temporary_link_is_not_followed(tmp_path, capsys):
    # The old temporary name was OUT.tmp<pid>; a link planted there made
    # capture overwrite the link's target.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "h.core"
    link = tmp_path / f"h.core.tmp{os.getpid()}"
    link.symlink_to(victim)
    rc, _, err = capture(capsys, str(out))
    assert rc == 0, err
    assert victim.read_bytes() == b"precious"
    assert os.path.islink(link)
    assert sorted(os.listdir(tmp_path)) == sorted(["victim", "h.core",
                                                    link.name])


def _default_signals():
    """In the child before exec: the dispositions of a terminal's shell,
    whatever this test run inherited (nohup ignores SIGHUP; a background
    job of a script ignores SIGINT)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _child(code: str, *args, timeout=60):
    """Run *code* in a fresh interpreter with the tree importable and the
    ending signals at their default dispositions."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code),
                           *args], env=env, cwd=ROOT, capture_output=True,
                          timeout=timeout, preexec_fn=_default_signals)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT,
                                 signal.SIGHUP])
def test_signal_while_writing_leaves_no_temporary(tmp_path, sig):
    """The signal arrives while the image is being written (patched into
    fsync, the last step before the rename): the process dies of it, the
    temporary is gone and an existing target is untouched."""
    out = tmp_path / "h.core"
    out.write_bytes(b"previous capture")
    p = _child(f"""
        import os, sys, time
        def fsync(fd):
            os.kill(os.getpid(), {int(sig)})
            time.sleep(5)
            raise SystemExit("signal {int(sig)} was swallowed")
        os.fsync = fsync
        from kho_inspect.cli import entry
        sys.argv = ["kho-inspect", "capture", "--core", sys.argv[1],
                    "-o", sys.argv[2]]
        entry()
        """, SAMPLE, str(out))
    assert p.returncode == -sig, (p.returncode, p.stderr)
    assert b"Traceback" not in p.stderr and p.stdout == b""
    assert os.listdir(tmp_path) == ["h.core"]
    assert out.read_bytes() == b"previous capture"


def test_an_ignored_signal_does_not_stop_the_capture(tmp_path):
    """Under nohup (SIGHUP ignored) a hang-up during the write is ignored,
    as the user asked: the capture completes and replaces the target."""
    out = tmp_path / "h.core"
    out.write_bytes(b"previous capture")
    p = _child("""
        import os, signal, sys
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        real = os.fsync
        def fsync(fd):
            os.kill(os.getpid(), signal.SIGHUP)
            real(fd)
        os.fsync = fsync
        from kho_inspect.cli import entry
        sys.argv = ["kho-inspect", "capture", "--core", sys.argv[1],
                    "-o", sys.argv[2]]
        entry()
        """, SAMPLE, str(out))
    assert p.returncode == 0, p.stderr
    assert os.listdir(tmp_path) == ["h.core"]
    assert read_image_meta(str(out))["release"] == "7.3.4"


def test_keyboard_interrupt_in_process_removes_the_temporary(tmp_path,
                                                             monkeypatch,
                                                             capsys):
    # main() called from Python (SIGINT raises KeyboardInterrupt): exit 130
    # and no temporary left.
    def fsync(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", fsync)
    rc, out, err = capture(capsys, str(tmp_path / "h.core"))
    assert rc == 130 and out == "" and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_ctrl_c_while_drgn_opens_the_core_is_not_swallowed():
    """Ctrl-C while drgn is busy (opening a core, loading its plugins) used to
    print a traceback or be swallowed while the command went on."""
    p = _child("""
        import os, signal, sys, time
        from kho_inspect import memory
        real = memory.open_core
        def open_core(*a, **kw):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)               # as if inside drgn's C code
            return real(*a, **kw)
        memory.open_core = open_core
        from kho_inspect.cli import entry
        sys.argv = ["kho-inspect", "map", "--core", sys.argv[1]]
        entry()
        """, SAMPLE)
    assert p.returncode == -signal.SIGINT, (p.returncode, p.stderr)
    assert p.stdout == b"" and p.stderr == b""


def test_ctrl_c_at_start_up_is_quiet():
    # The moment entry() starts: no traceback, no output.
    p = _child("""
        import os, signal, sys
        from kho_inspect import cli
        real = cli.build_parser
        def build_parser():
            os.kill(os.getpid(), signal.SIGINT)
            return real()
        cli.build_parser = build_parser
        sys.argv = ["kho-inspect", "map", "--sample"]
        cli.entry()
        """)
    assert p.returncode == -signal.SIGINT, (p.returncode, p.stderr)
    assert p.stdout == b"" and p.stderr == b""


def test_signal_with_a_handler_that_returns_does_not_spoil_the_write(
        tmp_path, monkeypatch, capsys):
    # A caller's own handler (it does not end the process): the capture
    # completes, the handler ran.
    seen = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    real = os.fsync

    def fsync(fd):
        os.kill(os.getpid(), signal.SIGUSR1)
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    try:
        rc, _, err = capture(capsys, str(tmp_path / "h.core"))
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert rc == 0, err
    assert seen == [signal.SIGUSR1]
    assert os.listdir(tmp_path) == ["h.core"]
    assert read_image_meta(str(tmp_path / "h.core"))["release"] == "7.3.4"


def test_ctrl_c_while_python_m_imports_the_cli_is_quiet(tmp_path):
    """`python3 -m kho_inspect`: Ctrl-C while the CLI is still being
    imported (before entry() runs) ends the process quietly too."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import os, signal, sys
        class CtrlC:
            def find_spec(self, name, path=None, target=None):
                if name == "kho_inspect.cli":
                    os.kill(os.getpid(), signal.SIGINT)
                return None
        sys.meta_path.insert(0, CtrlC())
        """))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    p = subprocess.run([sys.executable, "-m", "kho_inspect", "map",
                        "--sample"], env=env, cwd=ROOT, capture_output=True,
                       timeout=60, preexec_fn=_default_signals)
    assert p.returncode == -signal.SIGINT, (p.returncode, p.stderr)
    assert p.stdout == b"" and p.stderr == b""


def test_python_m_runs_the_cli():
    p = _child("""
        import runpy, sys
        sys.argv = ["kho_inspect", "map", "--sample", "7.3", "--json"]
        runpy.run_module("kho_inspect", run_name="__main__")
        """)
    assert p.returncode == 0, p.stderr
    assert b'"generation": "kho-v4"' in p.stdout

"""kho_inspect.progress: silent unless stderr is a terminal; the line it
draws is erased at the end, however the operation ends."""

import io

import pytest

from kho_inspect.progress import Progress


class TTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def test_silent_when_not_a_tty():
    out = io.StringIO()
    with Progress("scanning", 100, "pages", stream=out, delay=0,
                  interval=0) as p:
        for _ in range(10):
            p.advance(10)
    assert out.getvalue() == ""


def test_default_stream_is_stderr_and_silent_under_capture(capsys):
    with Progress("scanning", 10, delay=0, interval=0) as p:
        p.advance(5)
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""


def test_draws_on_a_tty_and_clears_the_line():
    out = TTY()
    with Progress("scanning the memmap", 2000, "pages", stream=out, delay=0,
                  interval=0) as p:
        p.advance(1000)
        first = out.getvalue()
        p.advance(1000)
    text = out.getvalue()
    assert first.startswith("\r") and "scanning the memmap" in first
    assert "1.00k/2.00k pages (50%)" in first
    assert "(100%)" in text
    assert "\n" not in text
    # ends by blanking what was drawn and returning to column 0
    last = text.rsplit("\r", 2)
    assert last[-1] == "" and set(last[-2]) == {" "}
    assert len(last[-2]) >= len(first) - 1


def test_nothing_before_the_delay():
    out = TTY()
    with Progress("quick", 10, stream=out, delay=60, interval=0) as p:
        p.advance(10)
    assert out.getvalue() == ""


def test_throttled():
    out = TTY()
    with Progress("walking", stream=out, delay=0, interval=60) as p:
        for _ in range(1000):
            p.advance()
    # one line drawn (the first advance), then nothing until the clear
    assert out.getvalue().count("walking") == 1
    assert out.getvalue().endswith("\r")


def test_cleared_on_ctrl_c():
    out = TTY()
    with pytest.raises(KeyboardInterrupt):
        with Progress("walking", unit="nodes", stream=out, delay=0,
                      interval=0) as p:
            p.advance(3)
            raise KeyboardInterrupt
    assert "3 nodes" in out.getvalue()
    assert out.getvalue().endswith("\r")
    assert set(out.getvalue().rsplit("\r", 2)[-2]) == {" "}


def test_broken_stream_does_not_fail_the_operation():
    class Broken(TTY):
        def write(self, s):
            raise BrokenPipeError

    with Progress("walking", stream=Broken(), delay=0, interval=0) as p:
        p.advance()
        p.advance()
    assert p.done == 2


def test_callback_for_done_total_apis():
    out = TTY()
    with Progress("hashing", unit="bytes", stream=out, delay=0,
                  interval=0) as p:
        p.callback(512, 2048)
    assert "512/2.05k bytes (25%)" in out.getvalue()

"""Progress of long operations, on stderr, only when stderr is a terminal.

stdout stays quiet (drgn and bcc users pipe it); stderr gets one line,
rewritten in place with ``\\r`` at most a few times a second, and erased when
the operation ends, however it ends (``with`` block: normal exit, an error
or Ctrl-C). Nothing is written when the stream is not a terminal, nor for
operations that finish within the first *delay* seconds.

>>> with Progress("scanning the memmap", total=n, unit="pages") as p:
...     for chunk in chunks:
...         work(chunk)
...         p.advance(len(chunk))

Only the standard library; usable from any layer (it knows nothing of KHO).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds between two redraws.
INTERVAL = 0.2
#: Seconds of silence before the first line (short operations show none).
DELAY = 0.5


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False          # no isatty, or a closed stream


def _count(n: float) -> str:
    """1234567 -> '1.23M': short enough for one 79-column line."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{n:.0f}"


class Progress:
    """A throttled one-line progress reporter.

    :param what: what is being done (``"scanning the memmap"``).
    :param total: the amount of work, if known (then a percentage is shown).
    :param unit: what is counted (``"pages"``, ``"nodes"``).
    :param stream: where to write; default ``sys.stderr`` at construction.
    :param enabled: None (default): only if *stream* is a terminal.
    :param interval: seconds between redraws (default :data:`INTERVAL`).
    :param delay: seconds before the first line (default :data:`DELAY`).
    """

    def __init__(self, what: str, total: int | None = None, unit: str = "",
                 *, stream: TextIO | None = None,
                 enabled: bool | None = None,
                 interval: float | None = None,
                 delay: float | None = None):
        self.what = what
        self.total = total
        self.unit = unit
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.interval = INTERVAL if interval is None else interval
        self._start = time.monotonic()
        self._next = self._start + (DELAY if delay is None else delay)
        self._width = 0            # length of the line on screen

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        """Count *n* more units done; redraw if the interval has passed."""
        self.done += n
        if self.enabled and time.monotonic() >= self._next:
            self._draw()

    def update(self, done: int) -> None:
        """Set the amount done so far; redraw if the interval has passed."""
        self.done = done
        if self.enabled and time.monotonic() >= self._next:
            self._draw()

    def callback(self, done: int, total: int | None = None) -> None:
        """For APIs taking a ``progress(done, total)`` callable (such as
        :func:`kho_inspect.check.verify.verify`): pass ``p.callback``."""
        if total is not None:
            self.total = total
        self.update(done)

    def line(self) -> str:
        """The text shown now (without ``\\r``)."""
        unit = f" {self.unit}" if self.unit else ""
        text = f"{self.what}: {_count(self.done)}"
        if self.total:
            pct = min(100.0, 100.0 * self.done / self.total)
            text += f"/{_count(self.total)}{unit} ({pct:.0f}%)"
        else:
            text += unit
        elapsed = time.monotonic() - self._start
        text += f" {elapsed:.0f}s"
        return text[:79]

    def _draw(self) -> None:
        text = self.line()
        pad = " " * max(0, self._width - len(text))
        self._write("\r" + text + pad)
        self._width = len(text)
        self._next = time.monotonic() + self.interval

    def _write(self, s: str) -> None:
        # one write per redraw, so Ctrl-C cannot split a line; a failing
        # stream (closed, broken pipe) turns the reporter off, never fails
        # the operation it reports on
        try:
            self.stream.write(s)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False

    def close(self) -> None:
        """Erase the line, if one was drawn. Idempotent."""
        if self.enabled and self._width:
            self._write("\r" + " " * self._width + "\r")
        self._width = 0
        self.enabled = False

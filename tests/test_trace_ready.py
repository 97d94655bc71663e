"""`trace`'s ready line means ready: the "start" record and "Tracing ...
Hit Ctrl-C to end." come only once the event buffer is open (a preserve
issued the moment the line appears must be seen, issue #16 section 5)."""

import io
import types

from kho_inspect.cli import trace as ctrace
from kho_inspect.trace import probes
from kho_inspect.trace import session as tsession

#: a 6.19-like function list (names only matter to resolve())
FUNCS = {"kho_preserve_folio", "kho_unpreserve_folio", "kho_restore_folio",
         "kho_preserve_pages", "kho_restore_pages"}


class Log(io.StringIO):
    """A stream that notes, in the shared *order*, each line written."""

    def __init__(self, order, name):
        super().__init__()
        self.order, self.name = order, name

    def write(self, s):
        for line in s.splitlines():
            if line.strip():
                self.order.append((self.name, line))
        return super().write(s)


def _fake_session(order):
    class FakeSession:
        def __init__(self, plan, opts, mechanism):
            self.attached = [(p.symbol, "fentry") for p in plan.probes]
            self.compile_seconds = 0.0
            self.events, self.lost = [], 0
            order.append(("session", "attached"))

        def open_events(self, callback):
            order.append(("session", "buffer open"))

        def poll(self, ms):
            pass

        def close(self):
            order.append(("session", "closed"))
    return FakeSession


def test_ready_line_after_the_buffer_opens(monkeypatch):
    order = []
    monkeypatch.setattr(probes, "available_functions",
                        lambda: (FUNCS, "test"))
    monkeypatch.setattr(tsession, "import_bcc", lambda: None)
    monkeypatch.setattr(tsession, "preflight", lambda: None)
    monkeypatch.setattr(tsession, "Session", _fake_session(order))
    monkeypatch.setattr(ctrace, "_incoming_blocks", lambda args: None)
    args = types.SimpleNamespace(
        list=False, interval=None, count=None, summary=False, hist=False,
        check=False, stack=False, pid=None, mechanism="auto", json=True,
        duration=1, symbols=None)
    monkeypatch.setattr(ctrace.time, "monotonic",
                        iter(range(0, 10**6, 5)).__next__)
    out, err = Log(order, "out"), Log(order, "err")
    assert ctrace.run(args, out, err) == 0
    opened = order.index(("session", "buffer open"))
    start = next(i for i, (w, ln) in enumerate(order)
                 if w == "out" and '"type": "start"' in ln)
    ready = next(i for i, (w, ln) in enumerate(order)
                 if w == "err" and "Hit Ctrl-C to end" in ln)
    assert order.index(("session", "attached")) < opened < start
    assert opened < ready

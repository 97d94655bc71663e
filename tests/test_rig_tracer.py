"""vmtests/guest/trace_checks.py's Tracer: the tracer's JSON lines copied as
they come, and the call S6 makes "the moment the ready line appears"
issued from the line itself (issue #16 section 5), before anything else."""

import sys
import time
from pathlib import Path

import pytest

GUEST = Path(__file__).resolve().parent.parent / "vmtests" / "guest"

#: a stand-in `python3 -m kho_inspect trace`: the start record, then (50 ms
#: later) an event saying whether the marker the start callback writes was
#: there by then, then the end record when interrupted
STAND_IN = """\
import json, os, signal, sys, time
marker = os.environ["MARKER"]
print(json.dumps({"type": "start", "probes": []}), flush=True)
time.sleep(0.05)
print(json.dumps({"type": "event", "saw": os.path.exists(marker)}),
      flush=True)
signal.sigwait({signal.SIGINT})
print(json.dumps({"type": "end", "lost": 0}), flush=True)
"""


@pytest.fixture
def trace_checks(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(GUEST))
    monkeypatch.delitem(sys.modules, "trace_checks", raising=False)
    import trace_checks
    pkg = tmp_path / "cli" / "kho_inspect"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, "
        "{signal.SIGINT})\n" + STAND_IN)
    monkeypatch.chdir(tmp_path / "cli")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "cli"))
    monkeypatch.setenv("MARKER", str(tmp_path / "marker"))
    return trace_checks


def test_the_start_callback_runs_when_the_line_arrives(trace_checks,
                                                        tmp_path):
    seen = []

    def on_start():
        (tmp_path / "marker").write_text("x")
        seen.append(time.monotonic())
        return 0
    tr = trace_checks.Tracer(tmp_path, "t", on_start=on_start)
    assert tr.wait_started() is None
    # started means the start record can be read (S6's stage 2 reads it)
    assert tr.lines()[0]["type"] == "start"
    assert seen and tr.on_start_result == 0
    deadline = time.monotonic() + 20
    while len(tr.lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tr.stop() == 0
    lines = tr.lines()
    assert [d["type"] for d in lines] == ["start", "event", "end"]
    assert lines[1]["saw"] is True      # issued within the 50 ms


def test_a_tracer_that_dies_before_its_start_is_named(trace_checks,
                                                       tmp_path):
    pkg = tmp_path / "cli" / "kho_inspect" / "__main__.py"
    pkg.write_text("import sys\nsys.exit('kho-inspect: error: no bcc')\n")
    called = []
    tr = trace_checks.Tracer(tmp_path, "t", on_start=lambda: called.append(1))
    why = tr.wait_started()
    assert why.startswith("tracer exited rc=1 before attaching: ")
    assert "no bcc" in why and not called
    assert tr.lines() == []

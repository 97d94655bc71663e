"""vmtests/run's kernels side by side (``-j``): each kernel's run in a
process of its own, its verdicts brought back; a run that dies fails its
scenarios instead of vanishing."""

import importlib.machinery
import importlib.util
import os
import sys
import time
import types
from pathlib import Path

import pytest

VMTESTS = Path(__file__).resolve().parent.parent / "vmtests"


@pytest.fixture
def run_mod(monkeypatch):
    monkeypatch.syspath_prepend(str(VMTESTS))
    loader = importlib.machinery.SourceFileLoader("vmtests_run_j",
                                                  str(VMTESTS / "run"))
    mod = importlib.util.module_from_spec(
        importlib.util.spec_from_loader("vmtests_run_j", loader))
    loader.exec_module(mod)
    return mod


def _runs(run_mod, tmp_path, behaviours):
    """One KernelRun per behaviour(kr) callable, run() replaced by it."""
    out = []
    for i, fn in enumerate(behaviours):
        k = types.SimpleNamespace(name=f"k{i}")
        b = types.SimpleNamespace(version=f"0.{i}")
        kr = run_mod.KernelRun(k, b, tmp_path, tmp_path, ["S1", "S2"], False)
        kr.run = types.MethodType(fn, kr)
        out.append(kr)
    return out


def _meet(tmp_path, me, other):
    """Say I started, then wait (bounded) for the other run to start: only
    runs that are under way at the same time both see each other."""
    def run(kr):
        (tmp_path / me).write_text(str(os.getpid()))
        deadline = time.monotonic() + 20
        while not (tmp_path / other).exists():
            if time.monotonic() > deadline:
                kr.out = {"S1": ("fail", f"{other} never ran beside {me}")}
                return
            time.sleep(0.02)
        kr.out = {"S1": ("pass", f"met {other}"), "S2": ("pass", "")}
        kr.times = {"total": 1.0}
        kr.console_tail = f"console of {me}"
    return run


def test_two_kernels_run_at_once_in_their_own_processes(run_mod, tmp_path):
    todo = _runs(run_mod, tmp_path, [_meet(tmp_path, "a", "b"),
                                     _meet(tmp_path, "b", "a")])
    got = run_mod.run_kernels(todo, 2)
    assert [kr.out["S1"] for kr in got] == [("pass", "met b"),
                                            ("pass", "met a")]
    assert [kr.console_tail for kr in got] == ["console of a",
                                               "console of b"]
    pids = {int((tmp_path / n).read_text()) for n in "ab"}
    assert len(pids) == 2 and os.getpid() not in pids


def test_one_job_runs_in_this_process(run_mod, tmp_path):
    def run(kr):
        kr.out = {"S1": ("pass", str(os.getpid()))}
    todo = _runs(run_mod, tmp_path, [run, run])
    got = run_mod.run_kernels(todo, 1)
    assert [kr.out["S1"][1] for kr in got] == [str(os.getpid())] * 2


def test_a_run_that_dies_fails_its_scenarios(run_mod, tmp_path):
    def raises(kr):
        kr.out = {"S1": ("pass", "before the crash")}
        raise RuntimeError("host ran out of disk")

    def exits(kr):
        sys.stdout.flush()
        os._exit(3)

    def fine(kr):
        kr.out = {"S1": ("pass", "ok"), "S2": ("pass", "ok")}
    todo = _runs(run_mod, tmp_path, [raises, exits, fine])
    got = run_mod.run_kernels(todo, 2)
    # the state of a run that raised is not taken: it died
    assert got[0].out == {s: ("fail", "the kernel's run died: "
                              "RuntimeError: host ran out of disk")
                          for s in ("S1", "S2")}
    assert got[1].out == {s: ("fail", "the kernel's run died: exit code 3")
                          for s in ("S1", "S2")}
    assert got[2].out == {"S1": ("pass", "ok"), "S2": ("pass", "ok")}


def test_default_jobs_bounded_by_cpus_and_memory(run_mod, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": (24 << 30) // 4096}
    monkeypatch.setattr(os, "sysconf", lambda n: pages[n])
    assert run_mod.default_jobs() == 3          # 24 GiB / 8 GiB
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert run_mod.default_jobs() == 2
    pages["SC_PHYS_PAGES"] = (4 << 30) // 4096
    assert run_mod.default_jobs() == 1

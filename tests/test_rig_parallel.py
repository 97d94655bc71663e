"""vmtests/run's boots side by side (``-j``): each boot (a kernel's main
boot, one of its own boots, an S10 pair) runs in a process of its own,
longest first; the verdicts it sets come back to its kernel's run; a boot
whose process dies fails what it would have judged."""

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


def _kr(run_mod, tmp_path, name="7.3", scen=("S1", "S5", "S11", "S13")):
    k = types.SimpleNamespace(name=name)
    b = types.SimpleNamespace(version=name + ".4")
    return run_mod.KernelRun(k, b, tmp_path, tmp_path, list(scen), False)


def _meet(tmp_path, kr, me, other, scen):
    """Say I started, then wait (bounded) for the other boot to start:
    only boots under way at the same time both see each other."""
    def fn():
        (tmp_path / me).write_text(str(os.getpid()))
        deadline = time.monotonic() + 20
        while not (tmp_path / other).exists():
            if time.monotonic() > deadline:
                kr.set(scen, "fail", f"{other} never ran beside {me}")
                return
            time.sleep(0.02)
        kr.set(scen, "pass", f"met {other}")
        kr.times[me] = 1.5
        kr.console_tail += f"[console of {me}]"
    return fn


def test_two_boots_of_one_kernel_at_once(run_mod, tmp_path):
    kr = _kr(run_mod, tmp_path)
    units = [run_mod.Unit("7.3 S11", _meet(tmp_path, kr, "a", "b", "S11"),
                          330, kr),
             run_mod.Unit("7.3 S13", _meet(tmp_path, kr, "b", "a", "S13"),
                          50, kr)]
    assert run_mod.run_units(units, 2) == []
    assert kr.out == {"S11": ("pass", "met b"), "S13": ("pass", "met a")}
    assert kr.times["a"] == kr.times["b"] == 1.5
    assert sorted(kr.console_tail.split("]")) == [
        "", "[console of a", "[console of b"]
    pids = {int((tmp_path / n).read_text()) for n in "ab"}
    assert len(pids) == 2 and os.getpid() not in pids
    assert kr.times["total"] >= 0


def test_one_job_runs_here_longest_first(run_mod, tmp_path):
    kr = _kr(run_mod, tmp_path)
    ran = []

    def unit(name, w):
        def fn():
            ran.append((name, os.getpid()))
            kr.set(name, "pass", "here")
        return run_mod.Unit(f"7.3 {name}", fn, w, kr)
    rows = run_mod.run_units([unit("S13", 50), unit("S1", 340),
                              unit("S11", 330)], 1)
    assert rows == []
    assert ran == [("S1", os.getpid()), ("S11", os.getpid()),
                   ("S13", os.getpid())]
    assert kr.out == {s: ("pass", "here") for s in ("S1", "S11", "S13")}


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_boot_that_dies_fails_what_it_judges(run_mod, tmp_path, jobs):
    kr = _kr(run_mod, tmp_path, scen=("S1", "S5", "S7", "S11", "S13"))

    def main():
        kr.set("S1", "pass", "before the crash")
        raise RuntimeError("host ran out of disk")

    def exits():
        sys.stdout.flush()
        os._exit(3)

    def fine():
        kr.set("S13", "pass", "ok")
    units = [run_mod.Unit("7.3 main", main, 340, kr),
             run_mod.Unit("7.3 S13", fine, 50, kr),
             run_mod.Unit("S10 6.17->7.3", lambda: [["6.17->7.3", "S10",
                                                     "pass", 1, "ok"]], 60)]
    if jobs > 1:        # a process that exits without a word
        units.append(run_mod.Unit("7.3 S7 kdump-kho", exits, 250, kr))
        units.append(run_mod.Unit("7.3 S11", exits, 330, kr))
    rows = run_mod.run_units(units, jobs)
    kr.finish()
    died = "the run died: RuntimeError: host ran out of disk"
    # a unit that raised sends nothing of what it set before
    want = {"S5": ("fail", died), "S13": ("pass", "ok")}
    want["S1"] = ("fail", died) if jobs > 1 else ("pass", "before the crash")
    if jobs > 1:
        want["S7"] = ("fail", "kdump-kho: the run died: exit code 3")
        want["S11"] = ("fail", "the run died: exit code 3")
    else:
        want["S7"] = ("fail", "no kdump boot reported")
    assert kr.out == want
    assert rows == [["6.17->7.3", "S10", "pass", 1, "ok"]]


def test_default_jobs_bounded_by_cpus_and_memory(run_mod, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": (24 << 30) // 4096}
    monkeypatch.setattr(os, "sysconf", lambda n: pages[n])
    assert run_mod.default_jobs() == 3          # 24 GiB / 8 GiB
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert run_mod.default_jobs() == 2
    pages["SC_PHYS_PAGES"] = (4 << 30) // 4096
    assert run_mod.default_jobs() == 1

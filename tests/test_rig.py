"""The vmtest rig's verdicts, without QEMU.

``vmtests/run`` is driven through its ``main()`` with the QEMU boot replaced
by the guest's own ``stage.py`` run in this process: the kernel side (drgn's
test_kho truth, debugfs, dmesg, kexec, the walker) is faked, the
``kho_inspect`` CLI the rig calls (``python3 -m kho_inspect``, in the guest
and on the host) is a stand-in package: one that answers like a working CLI
(the control: everything passes, exit 0), and one whose import fails, as a
broken CLI would. A broken CLI must fail every scenario that needs it and
make ``vmtests/run``, hence ``./run-tests``, exit non-zero.
"""

import importlib.machinery
import importlib.util
import json
import struct
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VMTESTS = ROOT / "vmtests"
GUEST = VMTESTS / "guest"
SCENARIOS = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9"]

# What the fake kernel preserved: test_kho's folios (and its FDT folio),
# plus a block of another client at 0x2000000.
TRUTH = {"members": ["fake"], "nr_folios": 2, "bitmap_bytes": None,
         "source": "fake", "nr_folios_preserved": 2, "folios_info_checked": 0,
         "folios": [{"phys": 0x2001000, "order": 0, "what": "folio[0]"},
                    {"phys": 0x2200000, "order": 9, "what": "folio[1]"},
                    {"phys": 0x2400000, "order": 1, "what": "fdt"}]}
MAP = {"generation": "kho-v4", "bitmap_bytes": None, "map_phys": 0x1000000,
       "ranges": [{"phys": 0x2000000, "order": 0, "count": 2, "size": 8192},
                  {"phys": 0x2200000, "order": 9, "count": 1,
                   "size": 0x200000},
                  {"phys": 0x2400000, "order": 1, "count": 1, "size": 8192}]}
#: MAP's blocks as runs, as the naive reader writes them (guest/naive.py)
NAIVE_RUNS = [[0x2000000, 0, 2], [0x2200000, 9, 1], [0x2400000, 1, 1]]
FDT = {"generation": "kho-v4", "root": {"compatible": "kho-v4"},
       "subnodes": [{"name": "kho_test", "phys": 0x2400000}]}

WORKING_MAIN = """\
import json, sys
from pathlib import Path
data = json.loads(Path(__file__).with_name("data.json").read_text())
argv = sys.argv[1:]
if "--help" in argv:
    print("usage: kho-inspect {map,fdt,capture,status,tracker,incoming,check}")
elif "--fdt-phys" in argv:      # S7 asks for a page the filtering removed
    print("kho-inspect: error: cannot read root FDT at phys "
          + argv[argv.index("--fdt-phys") + 1] + ": Excluded page in the "
          "core dump (page filtered out of the dump)", file=sys.stderr)
    sys.exit(2)
elif argv[0] == "incoming":     # a cold boot
    print("kho-inspect: error: this kernel was not booted through a KHO "
          "kexec (nothing incoming)", file=sys.stderr)
    sys.exit(2)
elif argv[0] == "status":
    print(json.dumps({"source": argv[-1], "enabled": True, "problems": []}))
elif argv[0] == "check" and "--json" in argv:
    print(json.dumps({"ok": True}))
elif argv[0] in ("map", "tracker"):
    print(json.dumps(data["map"]))
elif argv[0] == "fdt":
    print(json.dumps(data["fdt"]))
elif argv[0] == "check":
    print("OK: tracker == map")
elif argv[0] == "capture":
    Path(argv[argv.index("-o") + 1]).write_bytes(b"stand-in handover image")
else:
    sys.exit(f"kho-inspect: unknown command {argv[0]}")
"""

BROKEN_MAIN = """\
raise ImportError("deliberately broken kho_inspect CLI")
"""


def _load(name: str, path: Path):
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    mod = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(name, loader))
    loader.exec_module(mod)
    return mod


@pytest.fixture
def rig(monkeypatch):
    """(vmtests/run, stage, walker_checks, trace_checks, check_checks,
    verify_checks) modules, imported fresh."""
    monkeypatch.syspath_prepend(str(GUEST))
    monkeypatch.syspath_prepend(str(VMTESTS))
    for name in ("stage", "walker_checks", "trace_checks", "check_checks",
                 "verify_checks"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import check_checks
    import stage
    import trace_checks
    import verify_checks
    import walker_checks
    return (_load("vmtests_run", VMTESTS / "run"), stage, walker_checks,
            trace_checks, check_checks, verify_checks)


def elf_with_hole() -> bytes:
    """An ELF core whose one PT_LOAD holds 4 KiB of the 1 MiB it declares at
    0x100000: how makedumpfile -E leaves out the pages it filtered."""
    ehdr = struct.pack("<4s5B7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0,
                       bytes(7), 4, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 4, 120, 0, 0x100000, 0x1000,
                       0x100000, 0x1000)
    return ehdr + phdr + bytes(0x1000)


def stand_in_cli(where: Path, main: str) -> Path:
    """A directory holding a ``kho_inspect`` package with this __main__."""
    pkg = where / "kho_inspect"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(main)
    (pkg / "data.json").write_text(json.dumps({"map": MAP, "fdt": FDT}))
    return where


def run_rig(rig, monkeypatch, tmp_path, guest_cli: Path, host_cli: Path,
            naive_runs=NAIVE_RUNS):
    """vmtests/run main() on one fake kernel, whose map read naively holds
    *naive_runs* (None: not read); returns (exit status, {scenario:
    (status, reason)})."""
    run_mod, stage, walker_checks, trace_checks, check_checks, \
        verify_checks = rig
    debugfs = tmp_path / "debugfs"
    (debugfs / "in" / "sub_fdts").mkdir(parents=True)
    (debugfs / "in" / "fdt").write_bytes(b"\xd0\x0d\xfe\xed stand-in")
    (debugfs / "in" / "sub_fdts" / "kho_test").write_bytes(b"")
    real_run = stage.run

    def guest_run(cmd, *a, **kw):
        if cmd[0] == "kexec":           # no kexec here: stage 2 is called
            r = subprocess.CompletedProcess(cmd, 0, "", "")
            r.elapsed = 0.0
            return r
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(stage, "DEBUGFS_KHO", debugfs)
    monkeypatch.setattr(stage, "dmesg", lambda: (
        "[    1.0] KHO: test_kho: KHO restore succeeded\n"))
    monkeypatch.setattr(stage, "drgn_program", lambda: None)
    monkeypatch.setattr(stage, "test_kho_truth", lambda prog: TRUTH)
    # the kernel's map read naively: the blocks MAP says, as the guest holds
    monkeypatch.setattr(stage, "naive_truth", lambda prog, res: (
        naive_runs is not None and stage.write_json(
            "map-naive.json", {"runs": naive_runs})))
    monkeypatch.setattr(stage, "run", guest_run)
    monkeypatch.setattr(walker_checks, "run", lambda results: {
        "status": "pass", "reason": "stand-in walker checks"})
    monkeypatch.setattr(trace_checks, "run", lambda results, stage: {
        "status": "pass", "reason": "stand-in tracer checks"})
    monkeypatch.setattr(check_checks, "run", lambda results, stage: {
        "status": "pass", "reason": "stand-in check checks"})
    monkeypatch.setattr(verify_checks, "run", lambda results, stage: {
        "status": "pass", "reason": "stand-in verify checks"})
    monkeypatch.setattr(verify_checks, "after_restore",
                        lambda results, res: res)
    # the guest runs `python3 -m kho_inspect` from its cwd and PYTHONPATH
    monkeypatch.chdir(guest_cli)
    monkeypatch.setenv("PYTHONPATH", str(guest_cli))

    import kdump                    # S7's guest side (vmtests/guest)
    real_kdump_run = kdump.run

    def kdump_run(cmd, timeout):
        """kexec, insmod and makedumpfile faked; the CLI runs."""
        if cmd[0] == sys.executable:
            return real_kdump_run(cmd, timeout)
        if cmd[0] == "makedumpfile":
            Path(cmd[-1]).write_bytes(elf_with_hole() if "-E" in cmd
                                      else b"KDUMP   " + bytes(4088))
        r = subprocess.CompletedProcess(cmd, 0, "", "")
        r.elapsed = 0.0
        return r

    def kdump_boot(build, rootfs, project, workdir, module, stage):
        """postmortem.boot without QEMU: (the KHO kexec's stage, its kexec
        -e a no-op), the kdump stage (its panic a no-op), then the crash
        kernel's."""
        res = workdir / "results"
        res.mkdir(parents=True)
        monkeypatch.setattr(kdump, "RESULTS", res)
        if stage == "stage=kdump-kexec":
            kdump.kexec_stage({"stage": "kdump-kexec"})
        kdump.kdump_stage({"stage": "kdump"})
        kdump.crash_stage({"stage": "crash"})
        return None, "(stand-in console)"

    (tmp_path / "vmcore").write_bytes(b"")
    monkeypatch.setattr(kdump, "VMCORE", tmp_path / "vmcore")
    monkeypatch.setattr(kdump, "DEBUGFS_KHO", debugfs)
    monkeypatch.setattr(kdump, "run", kdump_run)
    monkeypatch.setattr(kdump, "read_sys", lambda name: "1")
    monkeypatch.setattr(kdump, "system_ram", lambda: [[0x100000,
                                                       0x40000000]])
    monkeypatch.setattr(kdump, "panic", lambda: None)
    monkeypatch.setattr(kdump, "crash_image_kho", lambda: None)
    monkeypatch.setattr(run_mod.postmortem, "boot", kdump_boot)

    def boot(kr):
        """KernelRun.run_main without QEMU: both guest stages, then the
        judge."""
        kr.results.mkdir(parents=True)
        monkeypatch.setattr(stage, "RESULTS", kr.results)
        scen = ",".join(kr.scen)
        (kr.results / "dump-done").write_text("ok\n")   # the host's ack
        stage.stage1({"stage": "1", "dump": "1", "scen": scen})
        vmcore = kr.dir / "vmcore.elf"
        vmcore.write_bytes(b"stand-in vmcore")
        stage.stage2({"stage": "2", "scen": scen})
        kr.qemu_rc, kr.timeout = 0, None
        kr.judge(vmcore, None)

    build = types.SimpleNamespace(version="7.3.4", dir=tmp_path,
                                  vmlinux=tmp_path / "vmlinux",
                                  bzimage=tmp_path / "bzImage")
    monkeypatch.setattr(run_mod, "host_setup", lambda: tmp_path / "rootfs")
    monkeypatch.setattr(run_mod, "PROJECT", host_cli)    # host CLI's cwd
    monkeypatch.setattr(run_mod, "SAMPLES", tmp_path / "samples")
    monkeypatch.setattr(run_mod.kernels, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(run_mod.kernels, "select", lambda spec: [
        types.SimpleNamespace(name="7.3")])
    monkeypatch.setattr(run_mod.kernels, "cached_build", lambda k: build)
    monkeypatch.setattr(run_mod.KernelRun, "run_main", boot)
    monkeypatch.setattr(run_mod.KernelRun, "prepare", lambda kr: None)
    # the scenarios with a boot of their own beyond S7 (S11) need QEMU
    rc = run_mod.main(["--kernel", "7.3", "-k", ",".join(SCENARIOS)])
    (summary,) = (tmp_path / "cache" / "runs").glob("*/summary.json")
    verdicts = json.loads(summary.read_text())["kernels"]["7.3"]["verdicts"]
    return rc, {s: tuple(v) for s, v in verdicts.items()}


def test_working_cli_passes_everything(rig, monkeypatch, tmp_path):
    """The control: with a CLI that answers, the same rig passes."""
    cli = stand_in_cli(tmp_path / "cli", WORKING_MAIN)
    rc, verdicts = run_rig(rig, monkeypatch, tmp_path, cli, cli)
    assert {s: v[0] for s, v in verdicts.items()} == {
        s: "pass" for s in SCENARIOS}, verdicts
    assert rc == 0
    assert (tmp_path / "samples" / "7.3.4.core").exists()


@pytest.mark.parametrize("naive, says", [
    # the kernel's map holds a block the capture's decode lacks
    (NAIVE_RUNS + [[0x3000000, 0, 1]], "!= the naive reading"),
    # ... or lacks one the decode holds
    (NAIVE_RUNS[:2], "!= the naive reading"),
    (None, "no naive reading"),
])
def test_s4_fails_when_the_capture_is_not_the_naive_reading(
        rig, monkeypatch, tmp_path, naive, says):
    cli = stand_in_cli(tmp_path / "cli", WORKING_MAIN)
    rc, verdicts = run_rig(rig, monkeypatch, tmp_path, cli, cli, naive)
    assert verdicts["S4"][0] == "fail" and says in verdicts["S4"][1], \
        verdicts["S4"]
    assert rc == 1


def test_broken_cli_fails_every_scenario(rig, monkeypatch, tmp_path):
    cli = stand_in_cli(tmp_path / "cli", BROKEN_MAIN)
    rc, verdicts = run_rig(rig, monkeypatch, tmp_path, cli, cli)
    assert {s: v[0] for s, v in verdicts.items()} == {
        s: "fail" for s in SCENARIOS}, verdicts
    for s, (_, reason) in verdicts.items():
        assert "kho_inspect CLI broken" in reason, (s, reason)
    assert rc == 1


def test_broken_host_cli_fails_s3_and_s4(rig, monkeypatch, tmp_path):
    """The guest's CLI works; the host's does not: the host's own checks
    (S3 decodes the vmcore, S4 the captured image) fail."""
    good = stand_in_cli(tmp_path / "good", WORKING_MAIN)
    bad = stand_in_cli(tmp_path / "bad", BROKEN_MAIN)
    rc, verdicts = run_rig(rig, monkeypatch, tmp_path, good, bad)
    assert {s: v[0] for s, v in verdicts.items()} == {
        "S1": "pass", "S2": "pass", "S3": "fail", "S4": "fail",
        "S5": "pass", "S6": "pass", "S7": "fail", "S8": "pass",
        "S9": "pass"}, verdicts
    assert "CLI broken on the host" in verdicts["S3"][1]
    assert "CLI broken on the host" in verdicts["S7"][1]
    assert "CLI broken on the host" in verdicts["S4"][1]
    assert rc == 1


def _kernel_run(run_mod, tmp_path, scen=("S1", "S5")):
    k = types.SimpleNamespace(name="7.3")
    b = types.SimpleNamespace(version="7.3.4")
    kr = run_mod.KernelRun(k, b, tmp_path, tmp_path, list(scen), False)
    kr.results.mkdir(parents=True)
    kr.qemu_rc, kr.timeout = 0, None
    return kr


def test_skip_must_name_the_missing_kernel_feature(rig, tmp_path):
    run_mod = rig[0]
    kr = _kernel_run(run_mod, tmp_path)
    (kr.results / "stage1.json").write_text(json.dumps({"scenarios": {
        "S1": {"status": "skip", "reason": "could not tell"},
        "S5": {"status": "pass", "reason": "stage 1 ok"}}}))
    (kr.results / "stage2.json").write_text(json.dumps({"scenarios": {
        "S5": {"status": "skip", "reason": "bare orders",
               "lacks": "KHO_PAGE_MAGIC in page->private (6.18+)"}}}))
    kr.scen.append("S2")
    kr.judge(tmp_path / "no-vmcore", None)
    assert kr.out["S1"][0] == "fail"
    assert "without naming a missing kernel feature" in kr.out["S1"][1]
    # stage 1 checked, stage 2 impossible on this kernel: named, so S5 holds
    assert kr.out["S5"][0] == "pass"
    assert "KHO_PAGE_MAGIC" in kr.out["S5"][1]
    kr.set("S1", "skip", "no finalize", lacks="debugfs out/finalize")
    assert kr.out["S1"] == ("skip", "kernel lacks debugfs out/finalize: "
                                    "no finalize")
    kr.set("S1", "skip", "x", lacks=["a (6.18+)", "b (6.19+)"])
    assert kr.out["S1"] == ("skip", "kernel lacks a (6.18+), b (6.19+): x")
    kr.set("S1", "skip", "x", lacks=[])
    assert kr.out["S1"][0] == "fail"
    kr.set("S1", "maybe", "?")
    assert kr.out["S1"][0] == "fail"


def test_exit_status(rig, tmp_path, capsys):
    run_mod = rig[0]
    kr = _kernel_run(run_mod, tmp_path)

    def rows(*statuses):
        return [[f"7.3 (7.3.4)", f"S{i} x", st, "", "why"]
                for i, st in enumerate(statuses, 1)]
    assert run_mod.finish(rows("pass", "skip"), [kr], tmp_path) == 0
    assert run_mod.finish(rows("pass", "FAIL"), [kr], tmp_path) == 1
    assert run_mod.finish(rows("skip", "skip"), [kr], tmp_path) == 1
    assert run_mod.finish(rows("not run"), [], tmp_path) == 1
    assert "nothing passed" in capsys.readouterr().out


@pytest.mark.parametrize("ranges, want", [
    (MAP["ranges"], []),
    # the map's folio at another order
    ([{"phys": 0x2000000, "order": 0, "count": 2},
      {"phys": 0x2200000, "order": 8, "count": 2},
      {"phys": 0x2400000, "order": 1, "count": 1}],
     ["folio[1] 0x2200000/order 9 missing",
      "map block 0x2200000/order 8 overlaps test_kho's folios",
      "map block 0x2300000/order 8 overlaps test_kho's folios"]),
    # an extra block inside test_kho's FDT folio
    (MAP["ranges"] + [{"phys": 0x2401000, "order": 0, "count": 1}],
     ["map block 0x2401000/order 0 overlaps test_kho's folios"]),
    # a folio missing; other clients' blocks elsewhere are not differences
    ([{"phys": 0x2000000, "order": 0, "count": 1},
      {"phys": 0x2200000, "order": 9, "count": 1},
      {"phys": 0x2400000, "order": 1, "count": 1},
      {"phys": 0x9000000, "order": 3, "count": 5}],
     ["folio[0] 0x2001000/order 0 missing"]),
])
def test_check_map_is_equality_over_test_kho_memory(rig, ranges, want):
    assert rig[1].check_map(TRUTH, {"ranges": ranges}) == want


def test_run_help():
    r = subprocess.run([sys.executable, str(VMTESTS / "run"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--kernel" in r.stdout, r.stderr


@pytest.mark.parametrize("cold,kho,want", [
    # 6.19: the cold boot's crash kernel gets KHO state (a skip naming it)
    (("skip", "crash kernel gets KHO state", "a crash kernel kept out of "
      "KHO"), ("pass", "incoming == live", None), "pass"),
    (("pass", "views == live", None), ("pass", "incoming == live", None),
     "pass"),
    (("fail", "map differs", None), ("pass", "incoming == live", None),
     "fail"),
    (("pass", "views == live", None), ("fail", "incoming differs", None),
     "fail"),
    (("skip", "no KHO", "KHO"), ("skip", "no KHO", "KHO"), "skip"),
])
def test_s7_is_judged_from_both_boots(rig, tmp_path, monkeypatch, cold, kho,
                                      want):
    """S7's two boots run as units of their own (both, under CI too); its
    verdict is made of both: a failure fails it, a skip beside a pass is
    named, never counted as checked."""
    run_mod = rig[0]
    monkeypatch.setenv("CI", "true")
    ran = []

    def boot(b, root, project, kdir, module, stage):
        ran.append(kdir.name)
        return None, ""

    def judge(kdir, vmlinux, cli, broken, why):
        st, reason, lacks = cold if kdir.name == "kdump" else kho
        return st, reason, {"lacks": lacks} if lacks else {}
    monkeypatch.setattr(run_mod.postmortem, "boot", boot)
    monkeypatch.setattr(run_mod.postmortem, "judge", judge)
    kr = _kernel_run(run_mod, tmp_path, scen=("S7",))
    kr.b.vmlinux = tmp_path / "vmlinux"
    assert [n for n, _, _ in kr.units()] == ["S7 kdump", "S7 kdump-kho"]
    for _, fn, _ in reversed(kr.units()):      # in either order
        fn()
    kr.finish()
    assert sorted(ran) == ["kdump", "kdump-kho"]
    assert kr.out["S7"][0] == want, kr.out["S7"]
    if want == "pass" and cold[0] == "skip":
        assert kr.out["S7"][1] == (
            "kdump: crash kernel gets KHO state (not checkable: kernel "
            "lacks a crash kernel kept out of KHO) | kdump-kho: incoming "
            "== live")


def test_s7_with_no_boot_reported_fails(rig, tmp_path):
    kr = _kernel_run(rig[0], tmp_path, scen=("S7",))
    kr.finish()
    assert kr.out["S7"] == ("fail", "no kdump boot reported")


def test_a_dead_unit_fails_what_it_judges(rig, tmp_path):
    kr = _kernel_run(rig[0], tmp_path, scen=("S1", "S5", "S7", "S11"))
    kr.unit_died("main", "exit code 9")
    kr.unit_died("S7 kdump-kho", "exit code 9")
    kr.unit_died("S11", "MemoryError: ")
    kr.finish()
    assert kr.out == {
        "S1": ("fail", "the run died: exit code 9"),
        "S5": ("fail", "the run died: exit code 9"),
        "S7": ("fail", "kdump-kho: the run died: exit code 9"),
        "S11": ("fail", "the run died: MemoryError: ")}


def test_scenario_ids_select_exactly(rig):
    """``-k S1`` is S1, not S10 and S11 as well; names still match by
    substring."""
    run_mod = rig[0]
    assert run_mod.selected("S1") == ["S1"]
    assert run_mod.selected("s1,S11") == ["S1", "S11"]
    assert run_mod.selected("large") == ["S11"]
    assert run_mod.selected("kexec") == ["S2"]


@pytest.mark.parametrize("kernel", ["6.17", "7.3"])
def test_s11_runs_on_every_kernel_under_ci_too(rig, tmp_path, monkeypatch,
                                               kernel):
    """The CI set runs every scenario that applies to its kernels: S11
    included, CI or not."""
    run_mod = rig[0]
    ran = []

    def run(build, root, project, workdir, keep):
        ran.append(workdir.name)
        return "pass", "1064982 blocks", {}
    monkeypatch.setattr(run_mod.large, "run", run)
    kr = _kernel_run(run_mod, tmp_path, scen=("S11",))
    kr.k.name = kernel
    monkeypatch.setenv("CI", "true")
    assert [n for n, _, _ in kr.units()] == ["S11"]
    kr.run_large()
    assert kr.out["S11"][0] == "pass"
    assert ran == ["large"]

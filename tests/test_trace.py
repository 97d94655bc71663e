"""The tracer's pure parts: probe choice, the split rule, the model, the
restore checks, event fields, and its one-line errors. The BPF side runs in
the vmtests (S6) on real kernels."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from kho_inspect.cli import trace as ctrace
from kho_inspect.trace import model, probes, program
from kho_inspect.trace.session import Event

# What each release's available_filter_functions held for KHO (the names of
# the vmtest kernels, written out by hand, not derived from the catalogue).
V617 = {"kho_preserve_folio", "kho_preserve_phys", "kho_restore_folio",
        "kho_add_subtree", "register_kho_notifier", "kho_fill_kimage",
        "__kho_preserve_order.constprop.0", "kho_retrieve_subtree"}
V619 = {"kho_preserve_folio", "kho_preserve_pages", "kho_preserve_vmalloc",
        "kho_unpreserve_folio", "kho_unpreserve_pages",
        "kho_unpreserve_vmalloc", "kho_alloc_preserve",
        "kho_alloc_preserve.part.0", "kho_unpreserve_free",
        "kho_restore_free", "kho_restore_folio", "kho_restore_pages",
        "kho_restore_vmalloc", "kho_add_subtree", "kho_remove_subtree",
        "kho_fill_kimage", "__kho_preserve_order", "__kho_unpreserve_order"}
V73 = (V619 - {"__kho_preserve_order", "__kho_unpreserve_order"}) | {
    "kho_radix_add_key", "kho_radix_del_key", "kho_radix_init_tree"}


def _probed(av):
    return {p.func.name: p.symbol for p in probes.resolve(av).probes}


def test_resolve_617_clone_and_notifier_form():
    plan = probes.resolve(V617)
    got = _probed(V617)
    assert got["__kho_preserve_order"] == "__kho_preserve_order.constprop.0"
    rec = [p for p in plan.probes if p.func.name == "__kho_preserve_order"][0]
    # the clone lost its constant track argument: pfn, order in rdi, rsi
    assert rec.dropped == 1
    text = program.generate(plan, program.Options(), kfunc=set())
    e, _ = program.handler_names(rec)
    # a recording add on a kho-v1 kernel returning int; the dropped track
    # argument is passed as 0
    flags = program.F_RECORD_ADD | program.F_NR32 | program.F_INT_RET
    assert (f"int {e}(struct pt_regs *ctx)\n{{ return on_entry(ctx, "
            f"{rec.index}, {flags}, 0, PT_REGS_PARM1(ctx), "
            "PT_REGS_PARM2(ctx)); }") in text
    assert "kho_preserve_pages" not in got
    add = [p for p in plan.probes if p.func.name == "kho_add_subtree"][0]
    assert add.func.args == ("ser", "name", "ptr")
    assert not plan.radix
    assert {n for n, _ in plan.missing} >= {"kho_preserve_pages",
                                            "__kho_unpreserve_order"}
    # the radix recording functions are not "missing" on a kho-v1 kernel
    assert not any(n.startswith("kho_radix") for n, _ in plan.missing)


def test_resolve_619_counts_a_clone_once():
    got = _probed(V619)
    assert got["kho_alloc_preserve"] == "kho_alloc_preserve"
    add = [p for p in probes.resolve(V619).probes
           if p.func.name == "kho_add_subtree"][0]
    assert add.func.args == ("name", "ptr")


def test_resolve_73_key_recording_and_blob_form():
    plan = probes.resolve(V73)
    got = _probed(V73)
    assert plan.radix
    assert got["kho_radix_add_key"] == "kho_radix_add_key"
    assert "kho_radix_add_page" not in got
    assert not any(n == "kho_radix_add_page" for n, _ in plan.missing)
    add = [p for p in plan.probes if p.func.name == "kho_add_subtree"][0]
    assert add.func.args == ("name", "ptr", "size")


def test_symbol_for_prefers_plain_then_not_part():
    assert probes.symbol_for("f", {"f", "f.constprop.0"}) == "f"
    assert probes.symbol_for("f", {"f.part.0", "f.isra.0"}) == "f.isra.0"
    assert probes.symbol_for("f", {"f.cold"}) is None
    assert probes.symbol_for("f", {"fg.constprop.0"}) is None


@pytest.mark.parametrize("pfn,nr,want", [
    (0x800, 2048, [(0x800, 11)]),              # 8 MiB aligned: one order 11
    (3, 5, [(3, 0), (4, 2)]),
    (0x1008, 24, [(0x1008, 3), (0x1010, 4)]),
    (0, 3, [(0, 1), (2, 0)]),
    (0x400, 1, [(0x400, 0)]),
])
def test_split_run_table(pfn, nr, want):
    assert model.split_run(pfn, nr) == want


def _ev(fn, a0=0, a1=0, a2=0, ret=0, parent=0, ts=0, radix=False,
        available=None):
    """An event of *fn* as probed on a kernel offering *available*
    (default: 7.3's functions if *radix*, else 6.19's)."""
    av = available or (V73 if radix else V619)
    plan = probes.resolve(av)
    p = [x for x in plan.probes if x.func.name == fn][0]
    return Event(ts=ts, lat=1000, probe=p, a0=a0, a1=a1, a2=a2, ret=ret,
                 rec_pfn=None, rec_order=None, rec_n=0, pid=1, tid=1,
                 comm="t", parent=parent, stack=-1)


def test_replay_recording_filters_the_other_tree():
    out, busy = 0xffff1000, 0xffff2000
    key = (1 << (52 - 2)) | (0x40000 >> (12 + 2))    # phys 0x40000 order 2
    evs = [
        # an API call first: the replay goes past it to the recordings
        _ev("kho_preserve_folio", 0xffffea0000010000, ts=0, radix=True),
        _ev("kho_radix_add_key", out, key, parent=1, ts=1, radix=True),
        _ev("kho_radix_add_key", busy, 5, parent=0, ts=2, radix=True),
        _ev("kho_radix_add_key", out, (1 << 52) | 0x99, ts=3, radix=True),
        _ev("kho_radix_del_key", out, (1 << 52) | 0x99, ts=4, radix=True),
    ]
    m = model.replay(evs, True)
    assert m.source == "recording functions"
    assert m.added == {(0x40000, 2)}
    assert m.removed == set()


def test_replay_v1_and_failed_adds():
    evs = [_ev("__kho_preserve_order", 7, 0x10, 1, parent=1, ts=1),
           _ev("__kho_preserve_order", 7, 0x20, 0, ret=-12, parent=1, ts=2),
           _ev("__kho_unpreserve_order", 7, 0x30, 0, parent=1, ts=3)]
    m = model.replay(evs, True)
    assert m.added == {(0x10000, 1)}
    assert m.removed == {(0x30000, 0)}


def test_compare_names_each_difference():
    m = model.Model(added={(0x1000, 0), (0x2000, 1)})
    before = {(0x9000, 0)}
    after = {(0x9000, 0), (0x1000, 0), (0x5000, 0)}
    d = model.compare(m, before, after)
    assert d == ["0x5000 order 0: in the tracker, not traced",
                 "0x2000 order 1: traced, not in the tracker"]
    assert model.compare(model.Model(added={(0x1000, 0), (0x5000, 0)}),
                         before, after) == []


def test_event_fields_and_restore_flags():
    ev = _ev("kho_restore_pages", 0x800000, 2048, ret=0xffff888000000000,
             radix=True)
    f = ctrace.event_fields(ev)
    assert f == {"phys": 0x800000, "order": None, "nr_pages": 2048,
                 "size": 8 << 20}
    chk = ctrace.RestoreCheck({0x800000: 11})
    found = chk.findings(ev, f)
    assert found == ["0x800000 order 11 > MAX_PAGE_ORDER 10 (accepted: "
                     "reaches prep_compound_page)"]
    ev2 = _ev("kho_restore_folio", 0x5000, ret=0)
    f2 = ctrace.event_fields(ev2)
    assert chk.findings(ev2, f2) == [
        "0x5000 was not preserved (no KHO marker)"]
    ev3 = _ev("kho_restore_folio", 0x800000, ret=0)
    assert ctrace.RestoreCheck({0x800000: 11}).findings(
        ev3, ctrace.event_fields(ev3))[0].endswith("(kernel refused)")


def test_generate_mixes_mechanisms():
    plan = probes.resolve(V617)
    text = program.generate(plan, program.Options(summary=True, hist=True),
                            kfunc={"kho_preserve_folio"})
    assert "KFUNC_PROBE(kho_preserve_folio, u64 a0)" in text
    assert "KRETFUNC_PROBE(kho_preserve_folio, u64 a0, long ret)" in text
    clone = [p for p in plan.probes if p.clone][0]
    e, r = program.handler_names(clone)
    assert f"int {e}(struct pt_regs *ctx)" in text
    assert "BPF_HISTOGRAM(hist" in text and "BPF_HASH(summary" in text
    assert "KFUNC_PROBE(__kho_preserve_order" not in text
    # void functions have no return value to read in fexit
    plan9 = probes.resolve(V619)
    t9 = program.generate(plan9, program.Options(),
                          kfunc={"kho_unpreserve_folio"})
    assert "KRETFUNC_PROBE(kho_unpreserve_folio, u64 a0)" in t9


def test_log2_hist_rendering(capsys):
    ctrace.print_log2({3: 4, 5: 2}, "nsecs", sys.stdout)
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["8", "->", "15", ":", "4", "|" + "*" * 40 + "|"]
    assert len(out) == 4 and all(len(ln) <= 80 for ln in out)


def test_cli_one_line_without_kho(tmp_path):
    # this host runs a kernel without KHO: one line, exit 2
    r = subprocess.run([sys.executable, "-m", "kho_inspect", "trace"],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "error:" in r.stderr


def test_missing_bcc_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcc", None)
    from kho_inspect.errors import KhoError
    from kho_inspect.trace import session
    with pytest.raises(KhoError, match="python3-bpfcc"):
        session.import_bcc()


def test_interval_needs_a_mode(monkeypatch):
    monkeypatch.setattr(probes, "available_functions",
                        lambda: (V619, "test"))
    args = types.SimpleNamespace(list=False, interval=5, summary=False,
                                 hist=False)
    from kho_inspect.errors import KhoError
    with pytest.raises(KhoError, match="interval needs"):
        ctrace.run(args)


def test_summary_alone_is_one_fexit_per_fentry_probe():
    plan = probes.resolve(V617)
    kf = {"kho_preserve_folio", "kho_add_subtree"}
    text = program.generate(plan, program.Options(events=False,
                                                  summary=True), kfunc=kf)
    assert "KFUNC_PROBE(kho_preserve_folio" not in text
    assert "KRETFUNC_PROBE(kho_preserve_folio, u64 a0, long ret)" in text
    # the kprobe'd clone still needs its entry program for the arguments
    clone = [p for p in plan.probes if p.clone][0]
    e, r = program.handler_names(clone)
    assert f"int {e}(struct pt_regs *ctx)" in text
    # with events, the full entry/return pair
    full = program.generate(plan, program.Options(summary=True), kfunc=kf)
    assert "KFUNC_PROBE(kho_preserve_folio, u64 a0)" in full


def test_event_lines_fit_80_columns(capsys):
    args = types.SimpleNamespace(json=False, stack=False, summary=False,
                                 hist=False)
    sess = types.SimpleNamespace(plan=probes.resolve(V619))
    pr = ctrace._Printer(args, sess, None, [], {}, sys.stdout)
    pr.t0 = 0
    # a phys just under 16 TiB, 6-digit PID, three hours in, a 100 s call: 79 columns
    ev = _ev("__kho_unpreserve_order", 7, 0xffffffff, 11, ret=0,
             parent=1, ts=9_999_000_000_000)
    ev.comm, ev.pid, ev.lat = "python3", 999999, 99_999_999_999
    pr.event(ev)
    # numbers are never cut: a larger phys makes the line longer instead
    big = _ev("kho_restore_pages", 0x123456789abcd000, 1 << 20, ret=1)
    big.ts = 1_000_000_000
    pr.event(big)
    # a flagged restore's finding is wrapped too
    pr.checker = ctrace.RestoreCheck({0x5e000000: 11})
    flagged = _ev("kho_restore_pages", 0x5e000000, 2048, ret=1)
    flagged.ts = 2_000_000_000
    pr.event(flagged)
    print(ctrace.ROW.format(*ctrace.COLUMNS))
    lines = capsys.readouterr().out.splitlines()
    assert any("!! 0x5e000000 order 11" in ln for ln in lines)
    assert "0x123456789abcd000" in lines[1] and " n1M " in lines[1]
    for line in lines[:1] + lines[2:]:
        assert len(line) < 80, line
    assert ctrace.display_name("__kho_preserve_order") == "__preserve_order"
    assert ctrace.display_name("kho_restore_folio") == "restore_folio"


@pytest.mark.parametrize("fn,value,want", [
    (ctrace.short_size, 4096, "4K"), (ctrace.short_size, 1536 << 10, "1.5M"),
    (ctrace.short_size, 1023 * 1024 + 512, "1024K"),
    (ctrace.short_size, 8 << 20, "8M"), (ctrace.short_size, 100, "100"),
    (ctrace.short_count, 2048, "2048"), (ctrace.short_count, 1 << 20, "1M"),
    (ctrace.short_count, 10000, "10K"), (ctrace.short_count, 1 << 30, "1G"),
    (ctrace.short_us, 1500, "1.5"), (ctrace.short_us, 123_456_000, "123456"),
    (ctrace.short_us, 12_000_000_000, "12s"),
])
def test_short_fields(fn, value, want):
    assert fn(value) == want


#: 6.17 and 6.19 without their recording functions (not probeable): the
#: API-only replay
V617_API = V617 - {"__kho_preserve_order.constprop.0"}
V619_API = V619 - {"__kho_preserve_order", "__kho_unpreserve_order"}


def test_replay_api_only_counts_what_succeeded():
    assert not probes.resolve(V617_API).recording
    evs = [
        # 5 pages from 0x300000: an order-2 block and an order-0 one
        _ev("kho_preserve_phys", 0x300000, 5 << 12, ts=3,
            available=V617_API),
        # -ENOMEM: the kernel recorded nothing
        _ev("kho_preserve_phys", 0x400000, 1 << 12, ret=-12, ts=1,
            available=V617_API),
        # made inside another API call: counted there, not twice
        _ev("kho_preserve_phys", 0x500000, 1 << 12, parent=2, ts=2,
            available=V617_API),
        # a folio: no physical address without a recording function
        _ev("kho_preserve_folio", 0xffffea0000010000, ts=4,
            available=V617_API),
    ]
    m = model.replay(evs, False)
    assert m.source.startswith("API calls")
    assert m.added == {(0x300000, 2), (0x304000, 0)}
    assert m.removed == set()
    assert m.incomplete == ["kho_preserve_folio: no physical address "
                            "without a recording function"]


def test_model_unpreserve_then_preserve_again_is_no_change():
    # a block the tracker held before the trace, unpreserved then
    # preserved again during it: the tracker did not change, nor does
    # the model
    m = model.Model()
    m.remove(0x7000, 0)
    m.add(0x7000, 0)
    assert (m.added, m.removed) == (set(), set())
    assert model.compare(m, {(0x7000, 0)}, {(0x7000, 0)}) == []
    # preserved then unpreserved within the trace: no change either
    m.add(0x9000, 1)
    m.remove(0x9000, 1)
    assert (m.added, m.removed) == (set(), set())
    # unpreserved and gone: a removal the tracker must show
    m.remove(0x7000, 0)
    assert model.compare(m, {(0x7000, 0)}, set()) == []
    assert model.compare(m, {(0x7000, 0)}, {(0x7000, 0)}) == [
        "0x7000 order 0: traced unpreserve, still in the tracker"]
    # gone from the tracker with no unpreserve traced
    assert model.compare(model.Model(), {(0x7000, 0)}, set()) == [
        "0x7000 order 0: left the tracker, no traced unpreserve"]


def test_replay_api_only_names_unpreserves_it_cannot_place():
    # 6.19 without its recording functions: an unpreserve carries a folio
    # or a descriptor, no physical address
    assert not probes.resolve(V619_API).recording
    ev = _ev("kho_unpreserve_folio", 0xffffea0000010000, ts=1,
             available=V619_API)
    m = model.replay([ev], False)
    assert (m.added, m.removed) == (set(), set())
    assert m.incomplete == ["kho_unpreserve_folio: no physical address "
                            "without a recording function"]

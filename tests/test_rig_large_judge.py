"""S11's map judge fed wrong maps (issue #16 section 3): over the memory the
kho_workload module's blocks cover, the map's blocks must be exactly the
module's (same phys and order: none missing, merged, split or reaching in);
elsewhere other clients may preserve anything. vmtests/large.py's
``map_differs`` judges it through guest/stage.py's ``diff_over_truth``, the
rule S1's ``check_map`` applies to test_kho's folios. No guest is booted.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

VMTESTS = Path(__file__).resolve().parent.parent / "vmtests"
PAGE = 4096

# guest/stage.py, for the property test (hypothesis wants no function
# fixture): by path, as vmtests/large.py loads it
_spec = importlib.util.spec_from_file_location(
    "guest_stage_test", VMTESTS / "guest" / "stage.py")
stage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stage)


@pytest.fixture
def large(monkeypatch):
    """vmtests/large.py (the host's S11), imported fresh."""
    monkeypatch.syspath_prepend(str(VMTESTS))
    monkeypatch.delitem(sys.modules, "large", raising=False)
    import large
    return large


# The module's list: two gapless scatter items side by side (one extent,
# 0x10000000-0x10018000), its order-2 blob, a scatter item of one page in
# two (four one-page extents) and an item no longer preserved.
LIST = """\
# kho_workload v1 kernel=7.3.4 items=5 kho_boot=0
id=0 kind=blob state=preserved phys=0x1008a0000 order=2 nr_pages=4 \
csum=0x0000000000000000 ret=0
id=1 kind=scatter state=preserved phys=0x10000000 order=0 nr_pages=16 \
csum=0x0000000000000000 ret=0 stride=1 preserve_ns=10
id=2 kind=scatter state=preserved phys=0x10010000 order=0 nr_pages=8 \
csum=0x0000000000000000 ret=0 stride=1 preserve_ns=10
id=3 kind=scatter state=preserved phys=0x28000000 order=0 nr_pages=4 \
csum=0x0000000000000000 ret=0 stride=2 preserve_ns=10
id=4 kind=scatter state=unpreserved phys=0x30000000 order=0 nr_pages=8 \
csum=0x0000000000000000 ret=0 stride=1 preserve_ns=10
"""
MINE = [(0x1008a0000, 2, 1), (0x10000000, 0, 16), (0x10010000, 0, 8),
        (0x28000000, 0, 1), (0x28002000, 0, 1), (0x28004000, 0, 1),
        (0x28006000, 0, 1)]


def _r(phys, order, count):
    return {"phys": phys, "order": order, "count": count,
            "size": count * (PAGE << order)}


# The right map, as the decoder writes it: the module's blocks, and other
# clients' blocks touching its extents from outside or elsewhere.
GAPLESS = _r(0x10000000, 0, 24)         # items 1 and 2: one run
BLOB = _r(0x1008a0000, 2, 1)
RIGHT = [_r(0x0fff0000, 4, 1),          # ends where item 1 starts
         GAPLESS,
         _r(0x10018000, 0, 2),          # starts where item 2 ends
         _r(0x28000000, 0, 7),          # item 3 and, in its holes, others'
         BLOB,
         _r(0x1008a4000, 2, 1),         # right after the blob
         _r(0x200000000, 10, 3)]        # elsewhere


def _but(drop=(), add=()):
    """RIGHT without the ranges *drop*, with the ranges *add*."""
    return [r for r in RIGHT if r not in drop] + [_r(*a) for a in add]


def test_module_runs(large):
    assert large.module_runs(LIST) == (MINE, 28)
    with pytest.raises(ValueError, match="unexpected item"):
        large.module_runs(LIST + "id=5 kind=pages state=preserved "
                          "phys=0x40000000 order=-1 nr_pages=4\n")
    # a folio in item 1's run: the list contradicts itself
    with pytest.raises(ValueError, match="overlap at 0x10002000"):
        large.module_runs(LIST + "id=5 kind=folio state=preserved "
                          "phys=0x10002000 order=1 nr_pages=2\n")
    # a folio in a hole of item 3 does not
    assert large.module_runs(LIST + "id=5 kind=folio state=preserved "
                             "phys=0x28003000 order=0 nr_pages=1\n") == \
        (MINE + [(0x28003000, 0, 1)], 28)


@pytest.mark.parametrize("ranges", [
    RIGHT,
    # the same blocks in other runs and another order of ranges
    _but([GAPLESS], [(0x10000000, 0, 10), (0x1000a000, 0, 14)])[::-1],
    # nothing but the module's blocks
    [GAPLESS, BLOB] + [_r(0x28000000 + i * 2 * PAGE, 0, 1)
                       for i in range(4)],
])
def test_right_map_passes(large, ranges):
    mine, _ = large.module_runs(LIST)
    assert large.guest_stage.diff_over_truth(
        mine, [(r["phys"], r["order"], r["count"]) for r in ranges]) \
        == ([], [])
    assert large.map_differs(mine, ranges) is None


@pytest.mark.parametrize("ranges, missing, extra", [
    # an extra block inside a module extent: in the blob, in a gapless run
    (_but(add=[(0x1008a1000, 0, 1)]), [], [(0x1008a1000, 0, 1)]),
    (_but(add=[(0x10008000, 3, 1)]), [], [(0x10008000, 3, 1)]),
    # a missing block: the last of item 2, one of item 3's pages
    (_but([GAPLESS], [(0x10000000, 0, 23)]), [(0x10017000, 0, 1)], []),
    (_but([_r(0x28000000, 0, 7)], [(0x28000000, 0, 4), (0x28005000, 0, 2)]),
     [(0x28004000, 0, 1)], []),
    # all of items 1 and 2: one run of 24 (touching extents merged)
    (_but([GAPLESS]), [(0x10000000, 0, 24)], []),
    # the blob at the wrong order, at its phys
    (_but([BLOB], [(0x1008a0000, 1, 1)]),
     [(0x1008a0000, 2, 1)], [(0x1008a0000, 1, 1)]),
    (_but([BLOB], [(0x1008a0000, 3, 1)]),
     [(0x1008a0000, 2, 1)], [(0x1008a0000, 3, 1)]),
    # two module blocks merged into one order-1 block
    (_but([GAPLESS], [(0x10000000, 1, 1), (0x10002000, 0, 22)]),
     [(0x10000000, 0, 2)], [(0x10000000, 1, 1)]),
    # the blob split into its pages
    (_but([BLOB], [(0x1008a0000, 0, 4)]),
     [(0x1008a0000, 2, 1)], [(0x1008a0000, 0, 4)]),
    # a neighbour straddling an extent edge (the module's blocks all there):
    # across item 2's end, across item 1's start (misaligned), across the
    # blob's end, across one of item 3's pages
    (_but(add=[(0x10010000, 4, 1)]), [], [(0x10010000, 4, 1)]),
    (_but(add=[(0x0ffff000, 1, 1)]), [], [(0x0ffff000, 1, 1)]),
    (_but(add=[(0x10017000, 1, 1)]), [], [(0x10017000, 1, 1)]),
    (_but(add=[(0x1008a2000, 2, 1)]), [], [(0x1008a2000, 2, 1)]),
    (_but(add=[(0x28006000, 1, 1)]), [], [(0x28006000, 1, 1)]),
])
def test_wrong_map_fails(large, ranges, missing, extra):
    mine, _ = large.module_runs(LIST)
    assert large.guest_stage.diff_over_truth(
        mine, [(r["phys"], r["order"], r["count"]) for r in ranges]) \
        == (missing, extra)
    why = large.map_differs(mine, ranges)
    assert why and why.startswith("over the module's 29 blocks' memory")
    for runs, what in ((missing, "of its blocks missing"),
                       (extra, "blocks not its own")):
        if runs:
            n = sum(c for *_, c in runs)
            assert (f"{n} {what} (e.g. 0x{runs[0][0]:x} order "
                    f"{runs[0][1]})") in why
        else:
            assert what not in why


def _blocks(runs):
    return {(p + i * (PAGE << o), o) for p, o, n in runs for i in range(n)}


def _oracle(truth, ranges):
    """The rule block by block: (missing, extra) as sets."""
    want = _blocks(truth)
    spans = [(p, p + (PAGE << o)) for p, o in want]
    near = {(p, o) for p, o in _blocks(ranges)
            if any(a < p + (PAGE << o) and p < b for a, b in spans)}
    return want - near, near - want


RUN = st.tuples(st.integers(0, 63).map(lambda i: i * PAGE),
                st.sampled_from([0, 0, 0, 1, 2, 3]), st.integers(0, 4))


@given(st.lists(RUN, max_size=5), st.lists(RUN, max_size=8),
       st.booleans())
def test_diff_over_truth_is_the_rule(truth, ranges, aligned):
    """Against the rule block by block, with blocks misaligned too; the
    runs come sorted, of consecutive blocks, none empty or touching."""
    if aligned:
        truth, ranges = ([(p - p % (PAGE << o), o, n) for p, o, n in x]
                         for x in (truth, ranges))
    missing, extra = stage.diff_over_truth(truth, ranges)
    assert (_blocks(missing), _blocks(extra)) == _oracle(truth, ranges)
    for runs in (missing, extra):
        assert runs == sorted(runs) and all(n > 0 for *_, n in runs)
        ends = {(p + n * (PAGE << o), o) for p, o, n in runs}
        assert not any((p, o) in ends for p, o, _ in runs)


# S11's plan: (phys, blocks, stride) of its scatter items, the last one
# untraced
PLAN = [(0x110000000 + i * 0x10000000, 65536, 1) for i in range(16)]
PLAN += [(0x280000000, 16384, 2), (0x2a0000000, 65536, 1)]


def _right_runs():
    """The runs a kernel holding PLAN and the blob holds, written out by
    hand: the 16 gapless items lie back to back (one run), the stride-2
    item is a run a page."""
    return ([(0x1008a0000, 2, 1), (0x110000000, 0, 16 * 65536)]
            + [(0x280000000 + i * 2 * PAGE, 0, 1) for i in range(16384)]
            + [(0x2a0000000, 0, 65536)])


def _s11(res, out, ranges, naive=None):
    """The files S11's stage-1 judge reads, of a right run of PLAN but for
    the map, tracker and capture's, *ranges*, and the naive reading
    (*naive*: its record in large-1.json and its runs; the right runs by
    default); returns the figures."""
    lines = ["# kho_workload v1 kernel=7.3.4 items=19 kho_boot=0",
             "id=0 kind=blob state=preserved phys=0x1008a0000 order=2 "
             "nr_pages=4 csum=0x0 ret=0"]
    lines += [f"id={i} kind=scatter state=preserved phys={p:#x} order=0 "
              f"nr_pages={n} csum=0x0 ret=0 stride={s} preserve_ns=1000"
              for i, (p, n, s) in enumerate(PLAN, 1)]
    (res / "large-list.txt").write_text("\n".join(lines) + "\n")
    said, runs = naive or ({"blocks": 1 + 17 * 65536 + 16384},
                           _right_runs())
    (res / "large-1.json").write_text(json.dumps({"commands": [],
                                                  "naive": said}))
    if runs is not None:
        (res / "large-naive.json").write_text(json.dumps(runs))
    traced = sum(n for _, n, _ in PLAN[:-1])
    (res / "large-trace.jsonl").write_text(json.dumps(
        {"type": "summary", "rows": [{"function": "kho_preserve_folio",
                                      "count": traced}]}) + "\n")
    doc = json.dumps({"generation": "kho-v4", "ranges": ranges})
    for name in ("map", "tracker", "image-map"):
        (out / f"{name}.json").write_text(doc)
    (out / "check.json").write_text(json.dumps(
        {"findings": [], "owners": {"kho_workload": {
            "blocks": sum(n for _, n, _ in PLAN) + 1}}}))
    fig = {c: {"rc": 0} for c in ("map", "tracker", "check", "capture",
                                  "image_map")}
    fig.update(blocks=sum(r["count"] for r in ranges), runs=len(ranges))
    return fig


def test_s11_judge_uses_the_rule(large, tmp_path):
    """judge1 passes the right map and fails one the former test (the map
    holds every order-0 block of the list) let through."""
    res, out = tmp_path / "results", tmp_path / "host"
    res.mkdir()
    out.mkdir()
    ranges = [_r(0x1008a0000, 2, 1)]
    for p, n, s in PLAN:
        ranges += ([_r(p, 0, n)] if s == 1 else
                   [_r(p + i * s * PAGE, 0, 1) for i in range(n)])
    why, said = large.judge1(res, out, _s11(res, out, ranges))
    assert why is None and "map == its list" in said
    # another client's page in the blob's memory
    fig = _s11(res, out, ranges + [_r(0x1008a3000, 0, 1)])
    why, _ = large.judge1(res, out, fig)
    assert why.startswith("over the module's 1130497 blocks' memory")
    assert "1 blocks not its own (e.g. 0x1008a3000 order 0)" in why


def test_s11_map_against_the_naive_reading(large, tmp_path):
    """The whole map must be what the naive reader read in the guest; where
    it could not read (no debug info) the rest is judged alone."""
    res, out = tmp_path / "results", tmp_path / "host"
    res.mkdir()
    out.mkdir()
    ranges = [_r(p, o, n) for p, o, n in _right_runs()]
    # another client's block, away from the module's memory: only the
    # naive reading tells the map is wrong
    other = ranges + [_r(0x40000000, 0, 1)]
    why, _ = large.judge1(res, out, _s11(res, out, other))
    assert why.startswith("map against the naive reader") and \
        "0x40000000 order 0" in why
    # the same block in both: fine
    with_it = (dict(blocks=1), sorted(_right_runs() + [(0x40000000, 0, 1)]))
    assert large.judge1(res, out, _s11(res, out, other, with_it))[0] is None
    # the reader failed, or never ran
    for said in ({"error": "OSError: read"}, None):
        why, _ = large.judge1(res, out, _s11(res, out, ranges,
                                             (said, None)))
        assert why.startswith("map against the naive reader")
    # no reading (no debug info for kho-v1's bitmap size)
    assert large.judge1(res, out, _s11(res, out, ranges,
                                       ({"blocks": None}, None)))[0] is None

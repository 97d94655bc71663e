"""The tracker (drgn walker) against the map (reference decoder of the
outgoing FDT's ``preserved-memory-map``), on a live kernel or a vmcore.

Where they must agree (docs/abi.md sections 4.4 and 5.5):

* 7.1+ (radix): always; the tracker *is* the map.
* kho-v1 after finalize: the map is a serialization of the tracker. 6.16-6.18
  refuse preservations after finalize (-EBUSY); 6.19/7.0 accept them but do
  not hand them over until the next finalize, so a difference there is a
  real finding.
* kho-v1 before finalize there is no map: the check cannot be made.
"""

from __future__ import annotations

import dataclasses

import drgn

from ..errors import KhoError
from ..ranges import coalesce
from ..walk.tracker import RADIX, outgoing_tracker
from ..walk.views import outgoing_handover
from .blocks import Difference, diff_runs

#: Views this check knows how to produce.
VIEWS = ("tracker", "map")


@dataclasses.dataclass
class ViewRuns:
    name: str
    runs: list
    detail: str


@dataclasses.dataclass
class CheckResult:
    views: list[ViewRuns]
    differences: list[Difference]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences

    def as_json(self) -> dict:
        return {"ok": self.ok,
                "views": {v.name: {"detail": v.detail,
                                   "ranges": len(coalesce(v.runs)),
                                   "blocks": sum(r[2] for r in v.runs)}
                          for v in self.views},
                "differences": [d.as_json() for d in self.differences],
                "notes": self.notes}


def _tracker(prog: drgn.Program, ctx: dict) -> ViewRuns:
    t = outgoing_tracker(prog)
    ctx["tracker"] = t
    return ViewRuns("tracker", t.runs, f"drgn walk of {t.expression} "
                    f"({t.layout}"
                    + (f", {t.bitmap_bytes}-byte bitmaps" if t.bitmap_bytes
                       else "") + ")")


def _map(prog: drgn.Program, ctx: dict) -> ViewRuns:
    t = ctx.get("tracker") or outgoing_tracker(prog)
    ctx["tracker"] = t
    if t.layout != RADIX and t.finalized is False:
        raise KhoError(
            "cannot compare: kho-v1 is not finalized, so the outgoing FDT has "
            "no preserved-memory map yet (echo 1 > "
            "/sys/kernel/debug/kho/out/finalize; on 6.16-6.18 this also "
            "builds the FDT) - check skipped")
    h, phys = outgoing_handover(prog, with_map=True,
                                bitmap_bytes=t.bitmap_bytes)
    m = h.map
    if m.state == "not-finalized":
        raise KhoError("cannot compare: the outgoing FDT's "
                       "preserved-memory-map is 0 although kho_out.finalized "
                       "is set - check skipped")
    if t.layout == RADIX and m.map_phys != t.root_phys:
        ctx.setdefault("notes", []).append(
            f"FDT preserved-memory-map 0x{m.map_phys:x} is not "
            f"virt_to_phys(kho_out.radix_tree.root) 0x{t.root_phys:x}")
    return ViewRuns("map", m.runs, f"reference decoder of the {h.generation} "
                    f"map at 0x{m.map_phys:x} (FDT at 0x{phys:x})")


_PRODUCERS = {"tracker": _tracker, "map": _map}


def check_views(views) -> list[str]:
    """*views* (names, or one comma-separated string as ``--views`` takes
    them) as a list.

    :raises KhoError: naming the unknown views and the known ones, or when
        fewer than two distinct views are named.
    """
    if isinstance(views, str):
        views = views.split(",")
    views = list(views)
    text = ",".join(views)
    unknown = [v for v in views if v not in _PRODUCERS]
    if unknown:
        raise KhoError(f"--views {text}: unknown view"
                       f"{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(repr(v) for v in unknown)} (known: "
                       f"{', '.join(VIEWS)}; give two or more, "
                       "comma-separated)")
    if len(set(views)) < 2:
        raise KhoError(f"--views {text}: give two or more of "
                       f"{', '.join(VIEWS)}, comma-separated")
    return views


def compare_views(prog: drgn.Program, views=VIEWS) -> CheckResult:
    """Produce each named view from *prog* and diff the first against each
    other one as sets of (phys, order) blocks.

    :raises KhoError: for an unknown view, or when a view cannot be produced
        (not finalized, unreadable memory, no KHO...).
    """
    views = check_views(views)
    ctx: dict = {}
    got = [_PRODUCERS[v](prog, ctx) for v in views]
    diffs: list[Difference] = []
    for other in got[1:]:
        diffs += diff_runs(got[0].runs, other.runs, got[0].name, other.name)
    notes = ctx.get("notes", [])
    t = ctx.get("tracker")
    if diffs and t is not None and t.layout != RADIX and t.finalized and \
            "map" in views:
        notes.append("kho-v1 after finalize: on 6.19/7.0 preservations made "
                     "after finalize are in the tracker but not in the map "
                     "until finalize runs again")
    return CheckResult(got, diffs, notes)

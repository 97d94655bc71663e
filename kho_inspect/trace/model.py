"""Replay traced calls into the set of preserved blocks, and compare.

A block is ``(phys, order)``: what the kernel's tracker holds. The model is
built from the recording functions' events when they were probed (they see
every block, KHO's internal ones included); otherwise from the API calls
that carry a physical address, split the way the kernel splits a range.
"""

from __future__ import annotations

import dataclasses

from ..abi import radix as abi_radix
from ..abi.common import split_pages

PAGE_SHIFT = 12


def split_run(pfn: int, nr: int) -> list[tuple[int, int]]:
    """The blocks ``(pfn, order)`` the kernel records for *nr* pages from
    *pfn* (:func:`~kho_inspect.abi.common.split_pages`). 7.1+ also splits
    at NUMA node boundaries; only the recording function's events see
    that."""
    return split_pages(pfn, nr)


@dataclasses.dataclass
class Model:
    """Blocks added and removed during a trace, net of each other."""

    added: set = dataclasses.field(default_factory=set)
    removed: set = dataclasses.field(default_factory=set)
    source: str = ""
    incomplete: list = dataclasses.field(default_factory=list)

    def add(self, phys: int, order: int) -> None:
        b = (phys, order)
        if b in self.removed:
            self.removed.discard(b)
        else:
            self.added.add(b)

    def remove(self, phys: int, order: int) -> None:
        b = (phys, order)
        if b in self.added:
            self.added.discard(b)
        else:
            self.removed.add(b)


def record_block(ev) -> tuple[int, int]:
    """``(phys, order)`` of a recording function's event (see
    :class:`kho_inspect.trace.session.Event`)."""
    if ev.func.args[-1] == "key":
        return abi_radix.decode_key(ev.a1)
    return ev.a1 << PAGE_SHIFT, ev.a2 & 0xffffffff


def replay(events, have_recording: bool) -> Model:
    """Build the :class:`Model` of *events* (in time order).

    With the recording functions, only the tracker the API calls use
    counts: its pointer is learnt from recording calls made inside an API
    call (7.3's ``kho_radix_add_key`` also fills a busy-block tree).
    """
    m = Model()
    events = sorted(events, key=lambda e: e.ts)
    if have_recording:
        m.source = "recording functions"
        trees = {e.a0 for e in events
                 if e.func.role.startswith("record") and e.parent}
        for e in events:
            if not e.func.role.startswith("record") or e.a0 not in trees:
                continue
            if e.func.role == "record-add" and not e.failed:
                m.add(*record_block(e))
            elif e.func.role == "record-del":
                m.remove(*record_block(e))
        return m
    m.source = "API calls (no recording function probed)"
    for e in events:
        if e.failed or e.parent:
            continue
        f = e.func
        if f.args[:2] == ("phys", "size") and f.role == "preserve":
            for pfn, o in split_run(e.a0 >> PAGE_SHIFT, e.a1 >> PAGE_SHIFT):
                m.add(pfn << PAGE_SHIFT, o)
        elif f.role in ("preserve", "unpreserve"):
            m.incomplete.append(f"{f.name}: no physical address without "
                                "a recording function")
    return m


def compare(model: Model, before: set, after: set) -> list[str]:
    """Differences between the model and tracker(after) - tracker(before),
    one line each (empty: they agree)."""
    out = []
    grown, shrunk = after - before, before - after
    for phys, order in sorted(grown - model.added):
        out.append(f"0x{phys:x} order {order}: in the tracker, not traced")
    for phys, order in sorted(model.added - grown):
        out.append(f"0x{phys:x} order {order}: traced, not in the tracker")
    for phys, order in sorted(shrunk - model.removed):
        out.append(f"0x{phys:x} order {order}: left the tracker, no "
                   "traced unpreserve")
    for phys, order in sorted(model.removed - shrunk):
        out.append(f"0x{phys:x} order {order}: traced unpreserve, still "
                   "in the tracker")
    return out

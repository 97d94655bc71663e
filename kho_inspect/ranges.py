"""The common currency of every view: runs of preserved blocks.

A :class:`Run` is ``count`` naturally aligned blocks of ``4096 << order``
bytes starting at ``phys``. The decoder, the drgn walker and the tracer all
produce runs; checks compare them as sets of (phys, order) blocks.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from .abi.common import PAGE_SHIFT


@dataclasses.dataclass(frozen=True, order=True)
class Run:
    phys: int
    order: int
    count: int

    @property
    def block(self) -> int:
        return 1 << (PAGE_SHIFT + self.order)

    @property
    def size(self) -> int:
        return self.count << (PAGE_SHIFT + self.order)

    @property
    def end(self) -> int:
        return self.phys + self.size

    def as_json(self) -> dict:
        return {"phys": self.phys, "order": self.order, "count": self.count,
                "size": self.size}


def coalesce(runs) -> list[Run]:
    """Sort *runs* by (order, phys) and merge adjacent runs of one order.

    Runs of different orders are never merged: the order is what the next
    kernel restores. Duplicate or overlapping runs are kept apart so that
    checks can see them.
    """
    out: list[Run] = []
    for r in sorted(runs, key=lambda r: (r.order, r.phys)):
        if out:
            last = out[-1]
            if last.order == r.order and last.end == r.phys:
                out[-1] = Run(last.phys, last.order, last.count + r.count)
                continue
        out.append(r)
    out.sort(key=lambda r: (r.phys, r.order))
    return out


def totals_by_order(runs) -> dict[int, dict[str, int]]:
    """{order: {"blocks": n, "bytes": b}} over *runs*."""
    blocks: Counter = Counter()
    for r in runs:
        blocks[r.order] += r.count
    return {o: {"blocks": n, "bytes": n << (PAGE_SHIFT + o)}
            for o, n in sorted(blocks.items())}


def blocks(runs):
    """Expand runs into (phys, order) blocks (for set comparisons)."""
    for r in runs:
        step = r.block
        for i in range(r.count):
            yield (r.phys + i * step, r.order)


def runs_from_json(items) -> list[Run]:
    """Inverse of :meth:`Run.as_json` over a list."""
    return [Run(int(i["phys"]), int(i["order"]), int(i["count"]))
            for i in items]

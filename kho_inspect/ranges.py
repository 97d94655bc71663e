"""The common currency of every view: runs of preserved blocks.

A :class:`Run` is ``count`` naturally aligned blocks of ``4096 << order``
bytes starting at ``phys``. The decoder, the drgn walker and the tracer all
produce runs; checks compare them as sets of (phys, order) blocks.
"""

from __future__ import annotations

from collections import Counter
from operator import itemgetter
from typing import NamedTuple

from .abi.common import PAGE_SHIFT


class Run(NamedTuple):
    """A run of blocks. Decoders may produce plain ``(phys, order, count)``
    tuples for speed; they compare equal to Runs."""

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


def merge_intervals(spans) -> list[tuple[int, int]]:
    """Sort ``[start, end)`` *spans* and merge those that overlap or touch:
    the one interval merge every view and check uses."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def coalesce(runs) -> list[Run]:
    """Sort *runs* by (order, phys) and merge adjacent runs of one order.

    Runs of different orders are never merged: the order is what the next
    kernel restores. Duplicate or overlapping runs are kept apart so that
    checks can see them.
    """
    out: list[Run] = []
    lphys = lorder = lcount = lend = None
    for phys, order, count in sorted(runs, key=itemgetter(1, 0)):
        if order == lorder and phys == lend:
            lcount += count
            lend += count << (PAGE_SHIFT + order)
            continue
        if lorder is not None:
            out.append(Run(lphys, lorder, lcount))
        lphys, lorder, lcount = phys, order, count
        lend = phys + (count << (PAGE_SHIFT + order))
    if lorder is not None:
        out.append(Run(lphys, lorder, lcount))
    out.sort()
    return out


def totals_by_order(runs) -> dict[int, dict[str, int]]:
    """{order: {"blocks": n, "bytes": b}} over *runs*."""
    blocks: Counter = Counter()
    for _, order, count in runs:
        blocks[order] += count
    return {o: {"blocks": n, "bytes": n << (PAGE_SHIFT + o)}
            for o, n in sorted(blocks.items())}


def blocks(runs):
    """Expand runs into (phys, order) blocks (for set comparisons)."""
    for phys, order, count in runs:
        step = 1 << (PAGE_SHIFT + order)
        for i in range(count):
            yield (phys + i * step, order)


def human_size(n: int) -> str:
    """``12288`` -> ``"12 KiB"``: binary units, 4 significant digits."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    return str(n)


def runs_from_json(items) -> list[Run]:
    """Inverse of :meth:`Run.as_json` over a list."""
    return [Run(int(i["phys"]), int(i["order"]), int(i["count"]))
            for i in items]

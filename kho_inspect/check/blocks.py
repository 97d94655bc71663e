"""Compare two collections of runs as sets of (phys, order) blocks, without
expanding them block by block: per order, an interval sweep over the
coalesced runs."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from ..abi.common import PAGE_SHIFT
from ..ranges import Run, merge_intervals


@dataclasses.dataclass(frozen=True)
class Difference:
    """Blocks present in one view and missing from the other."""

    only_in: str        # name of the view that has them
    run: Run

    def as_json(self) -> dict:
        return {"only_in": self.only_in, **self.run.as_json()}

    def __str__(self) -> str:
        r = self.run
        return (f"only in {self.only_in}: phys 0x{r.phys:x} order {r.order}"
                + (f" (x{r.count}, to 0x{r.end:x})" if r.count > 1 else ""))


def _intervals(runs) -> dict[int, list[tuple[int, int]]]:
    """{order: [(start, end)...]} merged, sorted (overlaps merged too)."""
    spans: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for phys, order, count in runs:
        spans[order].append((phys, phys + (count << (PAGE_SHIFT + order))))
    return {o: merge_intervals(iv) for o, iv in spans.items()}


def _minus(a: list[tuple[int, int]], b: list[tuple[int, int]]):
    """Intervals of *a* not covered by *b* (both sorted and merged)."""
    out, j = [], 0
    for s, e in a:
        cur = s
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < e:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def diff_runs(a, b, name_a: str = "a", name_b: str = "b") -> list[Difference]:
    """Every block of one side missing from the other, as runs, sorted by
    (phys, order). Empty when the two describe the same set of (phys, order)
    blocks, however they are split into runs."""
    ia, ib = _intervals(a), _intervals(b)
    diffs = []
    for order in sorted(set(ia) | set(ib)):
        shift = PAGE_SHIFT + order
        for name, x, y in ((name_a, ia.get(order, []), ib.get(order, [])),
                           (name_b, ib.get(order, []), ia.get(order, []))):
            for s, e in _minus(x, y):
                diffs.append(Difference(name, Run(s, order, (e - s) >> shift)))
    diffs.sort(key=lambda d: (d.run.phys, d.run.order, d.only_in))
    return diffs

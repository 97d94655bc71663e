"""The invariants of a handover (docs/abi.md section 9), each a function
returning :class:`~.findings.Finding` objects.

They take what the views produce: the decoded
:class:`~kho_inspect.decode.model.Handover` (FDT, map runs, sub-nodes), the
owners (:mod:`.owners`) and, where the source has kernel state, System RAM
and the scratch areas. A check that needs what the source lacks says so
with a ``not-checked`` finding instead of passing silently.
"""

from __future__ import annotations

import bisect

from ..abi.common import MAX_PAGE_ORDER, PAGE_SHIFT
from ..ranges import Run, human_size
from . import owners as own
from .findings import Finding

#: Scratch areas are allocated with this alignment (2 MiB up to 7.1, 4 MiB
#: from 7.2: the smaller bound holds for every version).
SCRATCH_ALIGN = 2 << 20


class OwnerIndex:
    """Owner lookup by address over :func:`~.owners.attribute`'s result."""

    def __init__(self, owned):
        self.owned = sorted(owned, key=lambda o: o.run.phys)
        self.starts = [o.run.phys for o in self.owned]

    def of(self, phys: int, end: int | None = None) -> str | None:
        """The owners of ``[phys, end)`` joined with ``,``, or None."""
        end = phys + 1 if end is None else end
        i = max(bisect.bisect_right(self.starts, phys) - 1, 0)
        names: set = set()
        while i < len(self.owned) and self.owned[i].run.phys < end:
            o = self.owned[i]
            if o.run.end > phys:
                names.update(o.owners)
            i += 1
        return ",".join(sorted(names)) or None


def _where(run: Run) -> str:
    return (f"0x{run.phys:x} order {run.order}"
            + (f" (x{run.count})" if run.count > 1 else ""))


def block_findings(runs, index: OwnerIndex) -> list[Finding]:
    """``order``, ``align`` and ``overlap`` over the map's runs."""
    out = []
    for r in sorted(Run(*r) for r in runs):
        owner = index.of(r.phys, r.end)
        if r.order > MAX_PAGE_ORDER:
            out.append(Finding(
                "order", f"{_where(r)}: {human_size(r.block)} blocks, above "
                f"MAX_PAGE_ORDER {MAX_PAGE_ORDER}: 6.16-7.0 refuse to "
                "restore them through kho_restore_*, 7.1-7.3 restore them "
                "unchecked (reserved either way)", r.phys, r.order, r.count,
                owner))
        if r.phys % r.block:
            out.append(Finding(
                "align", f"{_where(r)}: phys not aligned to the block size "
                f"{human_size(r.block)}", r.phys, r.order, r.count, owner))
    # Overlaps, across orders: sweep blocks sorted by start.
    ivs = sorted((r[0], r[0] + (r[2] << (PAGE_SHIFT + r[1])), r[1])
                 for r in runs)
    reach, reach_order = None, None
    for s, e, order in ivs:
        if reach is not None and s < reach:
            out.append(Finding(
                "overlap", f"0x{s:x} order {order} overlaps a block of "
                f"order {reach_order} ending at 0x{reach:x}: the next "
                "kernel reserves and restores the same memory twice",
                s, order, 1, index.of(s, min(e, reach))))
        if reach is None or e > reach:
            reach, reach_order = e, order
    return out


def _outside(runs, ranges):
    """Parts of *runs* outside the union of ``(start, end)`` *ranges*, as
    ``(run, start, end)``."""
    cl = [own.Claim(p, c << (PAGE_SHIFT + o), "", "", o)
          for p, o, c in runs]
    fake = [(s, 0, (e - s) >> PAGE_SHIFT) for s, e in ranges]
    return [(Run(c.phys, c.order, c.size >> (PAGE_SHIFT + c.order)), s, e)
            for c, s, e in own.uncovered(cl, fake)]


def ram_findings(runs, ram, index: OwnerIndex) -> list[Finding]:
    """``ram``: preserved memory outside System RAM (*ram*: ``(start,
    end)`` ranges)."""
    return [Finding("ram", f"{_where(r)}: 0x{s:x}-0x{e:x} is not System "
                    "RAM: the next kernel reserves memory that is not there",
                    r.phys, r.order, r.count, index.of(s, e))
            for r, s, e in _outside(runs, ram)]


def scratch_findings(runs, scratch, index: OwnerIndex) -> list[Finding]:
    """``scratch``: preserved memory inside a scratch area (*scratch*:
    ``(addr, size)``); the next kernel allocates from scratch before it
    knows what is preserved."""
    out = []
    areas = sorted((a, a + s) for a, s in scratch if s)
    starts = [a for a, _ in areas]
    for p, o, c in sorted(runs):
        end = p + (c << (PAGE_SHIFT + o))
        i = max(bisect.bisect_right(starts, p) - 1, 0)
        while i < len(areas) and areas[i][0] < end:
            a, b = areas[i]
            if b > p:
                s, e = max(a, p), min(b, end)
                out.append(Finding(
                    "scratch", f"{_where(Run(p, o, c))}: 0x{s:x}-0x{e:x} "
                    f"lies in the scratch area 0x{a:x}-0x{b:x}, which the "
                    "next kernel uses for its own early allocations",
                    p, o, c, index.of(s, e)))
            i += 1
    return out


def scratch_list_findings(scratch, ram) -> list[Finding]:
    """``scratch-list``: alignment, disjointness, inside RAM (*ram* may be
    None)."""
    out = []
    areas = sorted((a, s) for a, s in scratch)
    for a, s in areas:
        if a % SCRATCH_ALIGN or s % SCRATCH_ALIGN:
            out.append(Finding("scratch-list", f"scratch area 0x{a:x}+"
                               f"{human_size(s)} is not 2 MiB-aligned", a))
    for (a, s), (b, _) in zip(areas, areas[1:]):
        if a + s > b:
            out.append(Finding("scratch-list", f"scratch areas at 0x{a:x} "
                               f"and 0x{b:x} overlap", b))
    if ram is not None:
        for r, s, e in _outside([(a, 0, sz >> PAGE_SHIFT)
                                 for a, sz in areas if sz], ram):
            out.append(Finding("scratch-list", f"scratch area 0x{r.phys:x}:"
                               f" 0x{s:x}-0x{e:x} is not System RAM", s))
    return out


def _content_errors(c: dict):
    """``(error, phys)`` of every part of a decoded blob's content that did
    not decode: an item's ``error`` (kho_workload), LUO's ``flb_error``,
    ``sessions_error`` and each session's or file's ``error``."""
    for it in c.get("items", []):
        if it.get("error"):
            yield it["error"], it.get("phys")
    for key in ("flb_error", "sessions_error"):
        if c.get(key):
            yield c[key], None
    for s in c.get("sessions", []):
        if s.get("error"):
            yield s["error"], s.get("files_pa")
        for f in s.get("files", []):
            if f.get("error"):
                yield f["error"], f.get("data")


def subnode_findings(h, severity: str | None = None) -> list[Finding]:
    """``subnode``: every sub-node whose pointer or blob did not decode, and
    every part of a decoded blob that did not (:func:`_content_errors`)."""
    out = []
    for s in h.subnodes:
        if s.error:
            named = s.error.startswith(f"sub-node {s.name!r}")
            out.append(Finding("subnode", s.error if named else
                               f"sub-node {s.name!r}: {s.error}",
                               s.phys, owner=s.name, severity=severity))
        for err, phys in _content_errors(s.content or {}):
            named = err.startswith(f"sub-node {s.name!r}")
            out.append(Finding("subnode", err if named else
                               f"sub-node {s.name!r}: {err}", phys or None,
                               owner=s.name, severity=severity))
    return out


def claim_findings(cls, runs) -> list[Finding]:
    """``blob-preserved`` and ``claim-preserved``: every claimed byte is
    preserved, and a folio a client will restore is a block of its order."""
    out = []
    for c, s, e in own.uncovered(cls, runs):
        fid = "blob-preserved" if c.what in ("blob", "root FDT") \
            else "claim-preserved"
        out.append(Finding(fid, f"{c.owner} {c.what} 0x{c.phys:x}+"
                           f"{human_size(c.size)}: 0x{s:x}-0x{e:x} is not "
                           "preserved: the next kernel may reuse it before "
                           "the client reads it", c.phys, c.order,
                           owner=c.owner))
    # Folios: the exact block must be in the map with that order (runs of
    # one order hold blocks at start + k * block size).
    want = [c for c in cls if c.order is not None]
    by_order: dict[int, list] = {}
    for p, o, n in runs:
        by_order.setdefault(o, []).append((p, p + (n << (PAGE_SHIFT + o))))
    for iv in by_order.values():
        iv.sort()
    missing = {(c.phys, c.end) for c, _, _ in own.uncovered(want, runs)}
    for c in want:
        if (c.phys, c.end) in missing:
            continue            # already reported as not preserved
        iv = by_order.get(c.order, [])
        i = bisect.bisect_right(iv, (c.phys, float("inf"))) - 1
        if i >= 0 and iv[i][0] <= c.phys < iv[i][1] and \
                not (c.phys - iv[i][0]) % c.size:
            continue
        out.append(Finding(
            "claim-preserved", f"{c.owner} {c.what} 0x{c.phys:x} order "
            f"{c.order} is preserved, but not as one order-{c.order} "
            "block: its restore will fail or get another order",
            c.phys, c.order, owner=c.owner))
    return out


def owner_findings(owned) -> list[Finding]:
    """``unclaimed`` and ``claimed-twice`` over
    :func:`~.owners.attribute`'s result."""
    out = []
    for o in owned:
        r = o.run
        if not o.owners:
            out.append(Finding(
                "unclaimed", f"{_where(r)}: unclaimed: leaked, or a client "
                "kho_inspect does not know", r.phys, r.order, r.count))
        elif len(o.owners) > 1:
            out.append(Finding(
                "claimed-twice", f"{_where(r)}: claimed by "
                f"{' and '.join(o.owners)}", r.phys, r.order, r.count,
                ",".join(o.owners)))
    return out


__all__ = ["OwnerIndex", "block_findings", "claim_findings",
           "owner_findings", "ram_findings", "scratch_findings",
           "scratch_list_findings", "subnode_findings"]

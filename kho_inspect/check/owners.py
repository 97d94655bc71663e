"""Who owns each preserved block: the clients' own lists, read from the
handover's sub-nodes.

A :class:`Claim` is memory a client says it preserved: its blob, the folios
it lists, its vmalloc pages, its ``reserve_mem`` regions. The root FDT page
belongs to KHO itself. :func:`attribute` splits the preserved runs by the
claims that cover them; blocks nobody claims are "leaked, or a client
kho_inspect does not know".
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter

from ..abi.common import PAGE_SHIFT, PAGE_SIZE
from ..ranges import Run, merge_intervals

#: The owner name of KHO's own root FDT page.
KHO = "kho"


@dataclasses.dataclass(frozen=True)
class Claim:
    """``[phys, phys + size)`` claimed by *owner*. *order* is set when the
    client restores it as one block of that order (a folio): the map must
    then hold exactly that block."""

    phys: int
    size: int
    owner: str
    what: str
    order: int | None = None

    @property
    def end(self) -> int:
        return self.phys + self.size


def _subnode_claims(sub) -> list[Claim]:
    out = []
    if sub.phys is not None and sub.size:
        out.append(Claim(sub.phys, sub.size, sub.name, "blob"))
    for p in sub.pages:
        if p.kind != "blob":
            out.append(Claim(p.phys, p.size, sub.name, p.kind))
    c = sub.content or {}
    for f in c.get("folios", []):
        out.append(Claim(f["phys"], PAGE_SIZE << f["order"], sub.name,
                         "folio", f["order"]))
    for r in c.get("regions", []):
        out.append(Claim(r["start"], r["size"], sub.name,
                         f"reserve_mem {r['name']}"))
    for it in c.get("items", []):
        if it["state"] != "preserved" or it.get("error"):
            continue                # an item that did not decode: a finding
        what = f"item {it['id']} {it['kind']}"
        if it["kind"] in ("folio", "blob"):
            out.append(Claim(it["phys"], PAGE_SIZE << it["order"], sub.name,
                             what, it["order"]))
        elif it["kind"] == "vmalloc":
            vorder = it["vmalloc"]["order"]
            out += [Claim(b, PAGE_SIZE << vorder, sub.name, what)
                    for b in it.get("blocks", [])]
        elif it["kind"] == "scatter":
            # order-0 folios one every `stride` pages; a gapless one is a
            # single claim (a million blocks are one interval)
            stride = it.get("stride") or 1
            if stride == 1:
                out.append(Claim(it["phys"], it["nr_pages"] << PAGE_SHIFT,
                                 sub.name, what))
            else:
                out += [Claim(it["phys"] + (i * stride << PAGE_SHIFT),
                              PAGE_SIZE, sub.name, what, 0)
                        for i in range(it["nr_pages"])]
        else:                                       # pages, phys
            out.append(Claim(it["phys"], it["nr_pages"] << PAGE_SHIFT,
                             sub.name, what))
    return out


def _pages_order(n: int) -> int | None:
    """The folio order of a ``kho_alloc_preserve`` of *n* pages."""
    return (n - 1).bit_length() if n > 0 else None


def luo_claims(owner: str, c: dict) -> list[Claim]:
    """LUO's records and what its sessions hold, from a decoded ``LUO``
    blob or the walker's view of the kernel's sessions (the same shape:
    kho_inspect.decode.clients.luo_ser / luo_fdt, kho_inspect.walk.luo):
    the session blocks, the FLB header, per session its file blocks and
    per memfd its record, folio list (vmalloc chunks and data) and folios.
    A memfd folio is claimed by its first page: the restore takes the
    order from the map."""
    out = []
    n = c.get("session_block_pages", 1)
    for b in c.get("session_blocks", []):
        out.append(Claim(b, n * PAGE_SIZE, owner, "sessions",
                         _pages_order(n)))
    f = c.get("flb")
    if f:
        out.append(Claim(f["phys"], f["pgcnt"] * PAGE_SIZE, owner,
                         "FLB header", _pages_order(f["pgcnt"])))
    for s in c.get("sessions", []):
        what = f"session {s['name']}"
        n = s.get("file_block_pages", 1)
        for b in s.get("file_blocks", []):
            out.append(Claim(b, n * PAGE_SIZE, owner, f"{what} files",
                             _pages_order(n)))
        for fl in s.get("files", []):
            m = fl.get("memfd")
            if not m:
                continue
            w = f"{what} memfd {fl['token']}"
            out.append(Claim(m["phys"], PAGE_SIZE, owner, f"{w} record", 0))
            out += [Claim(p, PAGE_SIZE, owner, f"{w} folio list")
                    for p in m.get("list_chunks", [])]
            if "vmalloc" in m:
                size = PAGE_SIZE << m["vmalloc"]["order"]
                out += [Claim(p, size, owner, f"{w} folio list")
                        for p in m.get("list_blocks", [])]
            # one claim per run of adjacent folio pages (a big memfd's
            # folios are often contiguous): the same blocks are claimed
            start = end = None
            for p in sorted(x["phys"] for x in m.get("folios", [])):
                if p != end:
                    if start is not None:
                        out.append(Claim(start, end - start, owner,
                                         f"{w} folio"))
                    start = p
                end = p + PAGE_SIZE
            if start is not None:
                out.append(Claim(start, end - start, owner, f"{w} folio"))
    return out


def live_claims(prog) -> list[Claim]:
    """What the running kernel's LUO holds (kho_inspect.walk.luo): its
    sessions' blocks, files and memfd folios, also before the reboot path
    has written them into the ``LUO`` sub-node. None when the kernel has
    no LUO or its lists cannot be read."""
    from ..abi.clients import LUO_NODE
    from ..errors import KhoError
    from ..walk.luo import luo_sessions
    try:
        states = luo_sessions(prog)
    except KhoError:
        return []
    return [c for st in states for c in luo_claims(LUO_NODE, st)]


def claims(h, prog=None) -> list[Claim]:
    """Every claim the decoded :class:`~kho_inspect.decode.model.Handover`
    *h* makes: KHO's root FDT page, and per sub-node its blob, the pages
    its decoder read (vmalloc chunks and data) and what its content lists
    (test_kho folios, memblock regions, kho_workload items still
    preserved, LUO's sessions). With *prog* (a program with the kernel's
    DWARF), also what the kernel's LUO holds (:func:`live_claims`)."""
    from ..abi.clients import LUO_NODE
    out = []
    if h.fdt_phys is not None:
        out.append(Claim(h.fdt_phys, h.fdt_size, KHO, "root FDT"))
    for sub in h.subnodes:
        out += _subnode_claims(sub)
        if sub.name == LUO_NODE and sub.content:
            out += luo_claims(sub.name, sub.content)
    if prog is not None:
        out += live_claims(prog)
    return out


@dataclasses.dataclass(frozen=True)
class Owned:
    """A run of blocks and the owners claiming every one of them (empty:
    unclaimed)."""

    run: Run
    owners: tuple[str, ...]

    def as_json(self) -> dict:
        return {**self.run.as_json(), "owner": ",".join(self.owners) or None}


def _segments(cls) -> list[tuple[int, int, tuple[str, ...]]]:
    """Disjoint, sorted ``(start, end, owners)`` pieces of the claims."""
    events = []
    for c in cls:
        if c.size > 0:
            events.append((c.phys, 1, c.owner))
            events.append((c.end, -1, c.owner))
    events.sort(key=lambda e: (e[0], e[1]))
    out, live, prev = [], Counter(), None
    for pos, delta, owner in events:
        if prev is not None and pos > prev and live:
            owners = tuple(sorted(live))
            if out and out[-1][1] == prev and out[-1][2] == owners:
                out[-1] = (out[-1][0], pos, owners)
            else:
                out.append((prev, pos, owners))
        live[owner] += delta
        if not live[owner]:
            del live[owner]
        prev = pos
    return out


def attribute(runs, cls) -> list[Owned]:
    """Split *runs* (``(phys, order, count)``) into :class:`Owned` runs: a
    block belongs to every owner whose claim intersects it. Runs are never
    expanded block by block: each is cut only where the claims' owners
    change, so a million-block run with no claims stays one piece."""
    segs = _segments(cls)
    starts = [s[0] for s in segs]
    out: list[Owned] = []
    for phys, order, count in sorted(runs):
        bs = 1 << (PAGE_SHIFT + order)
        end = phys + count * bs
        # (first block, end block, owners) of every segment meeting the run
        pieces = []
        i = max(bisect.bisect_right(starts, phys) - 1, 0)
        while i < len(segs) and segs[i][0] < end:
            s, e, owners = segs[i]
            i += 1
            if e <= phys:
                continue
            a = (max(s, phys) - phys) // bs
            b = -(-(min(e, end) - phys) // bs)
            pieces.append((a, b, owners))
        # Sweep over block indices: a block met by two pieces gets both.
        cuts = sorted({0, count} | {a for a, _, _ in pieces}
                      | {b for _, b, _ in pieces})
        for a, b in zip(cuts, cuts[1:]):
            owners = tuple(sorted({o for pa, pb, os in pieces
                                   if pa < b and pb > a for o in os}))
            if out and out[-1].owners == owners and \
                    out[-1].run.order == order and \
                    out[-1].run.end == phys + a * bs:
                prev = out[-1].run
                out[-1] = Owned(Run(prev.phys, order, prev.count + b - a),
                                owners)
            else:
                out.append(Owned(Run(phys + a * bs, order, b - a), owners))
    return out


def uncovered(cls, runs) -> list[tuple[Claim, int, int]]:
    """``(claim, start, end)`` for every part of a claim that no preserved
    block covers."""
    merged = merge_intervals((p, p + (c << (PAGE_SHIFT + o)))
                             for p, o, c in runs)
    starts = [m[0] for m in merged]
    out = []
    for c in cls:
        cur = c.phys
        i = max(bisect.bisect_right(starts, cur) - 1, 0)
        while cur < c.end:
            if i < len(merged) and merged[i][1] <= cur:
                i += 1
            elif i < len(merged) and merged[i][0] <= cur:
                cur = merged[i][1]
                i += 1
            else:
                stop = min(merged[i][0] if i < len(merged) else c.end, c.end)
                out.append((c, cur, stop))
                cur = stop
    return out

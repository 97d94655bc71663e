"""Every check of one handover, in one call: :func:`check_handover`."""

from __future__ import annotations

import dataclasses

from ..ranges import coalesce
from . import invariants as inv
from . import owners as own
from .findings import SEVERITIES, Finding, worst
from .next_kernel import next_findings


@dataclasses.dataclass
class Report:
    findings: list[Finding]
    owned: list[own.Owned]
    claims: list[own.Claim]
    next_release: str | None = None

    @property
    def worst(self) -> str | None:
        return worst(self.findings)

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings)
                for s in SEVERITIES}

    def owners_summary(self) -> dict[str, dict[str, int]]:
        """{owner: {"blocks", "bytes"}}, "(unclaimed)" for no owner."""
        out: dict[str, dict[str, int]] = {}
        for o in self.owned:
            for name in o.owners or ("(unclaimed)",):
                t = out.setdefault(name, {"blocks": 0, "bytes": 0})
                t["blocks"] += o.run.count
                t["bytes"] += o.run.size
        return dict(sorted(out.items()))


def check_handover(h, *, map_error: str | None = None, ram=None,
                   scratch=None, next_release: str | None = None,
                   extra=(), state_why: str | None = None, prog=None,
                   nodes=None) -> Report:
    """Check the decoded handover *h*.

    :param map_error: why the map could not be decoded (``h.map`` is then
        None): becomes a ``map`` error and the block checks are skipped.
    :param ram: System RAM as ``(start, end)`` ranges, or None when the
        source does not tell (a handover image): ``ram`` is not checked.
    :param scratch: scratch areas as ``(addr, size)``, or None.
    :param state_why: why *ram*/*scratch* are missing when the caller
        already said so in *extra* (then not said again).
    :param next_release: the receiving kernel's release for the ``next-*``
        checks.
    :param nodes: the memory nodes ``(nid, start_pfn, end_pfn)``, or None
        when the source does not tell (for ``next-numa``).
    :param prog: the kernel's drgn program with DWARF, when there is one:
        clients' claims only the kernel's own state holds (LUO's sessions
        before the reboot path serializes them) come from it.
    :param extra: findings the caller made (e.g. the tracker/map diff).
    :returns: a :class:`Report`; findings sorted by severity, then phys.
    """
    out: list[Finding] = list(extra)
    cls = own.claims(h, prog)
    if h.map is None:
        out.append(Finding("map", map_error or "the map was not decoded"))
        runs = []
    else:
        runs = coalesce(h.map.runs)
        if h.map.state == "not-finalized":
            out.append(Finding(
                "map-unset", "preserved-memory-map is 0: kho-v1 was not "
                "finalized (6.19/7.0: echo 1 > /sys/kernel/debug/kho/out/"
                "finalize, or a LUO reboot); the next kernel rejects the "
                "handover"))
    owned = own.attribute(runs, cls)
    index = inv.OwnerIndex(owned)
    out += inv.subnode_findings(h)
    if h.map is not None:
        out += inv.block_findings(runs, index)
        out += inv.claim_findings(cls, runs)
        out += inv.owner_findings(owned)
        if ram is not None:
            out += inv.ram_findings(runs, ram, index)
        elif not state_why:
            out.append(Finding("not-checked", "ram: this source does not "
                               "tell where System RAM is (a handover image; "
                               "a vmcore or the live kernel with debug info "
                               "does)"))
        if scratch is not None:
            out += inv.scratch_findings(runs, scratch, index)
        elif not state_why:
            out.append(Finding("not-checked", "scratch: the scratch areas "
                               "are known only with the kernel's debug info "
                               "(live or vmcore)"))
    if scratch is not None:
        out += inv.scratch_list_findings(scratch, ram)
    if next_release:
        out += next_findings(h, next_release, runs, index, cls, nodes)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    out.sort(key=lambda f: (order[f.severity], f.phys is None, f.phys or 0,
                            f.id))
    return Report(out, owned, cls, next_release)

"""Findings, and the catalogue of what ``check`` looks for.

Every finding carries the id of one :class:`Check` of :data:`CATALOGUE`,
which says how severe it is and which kernels check the same thing
themselves (docs/abi.md section 9: **K** the kernel checks it at handover
or boot, **P** only the producer with ``CONFIG_KEXEC_HANDOVER_DEBUG``).
"""

from __future__ import annotations

import dataclasses

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)


@dataclasses.dataclass(frozen=True)
class Check:
    id: str
    severity: str
    title: str
    #: which kernels enforce it themselves (docs/abi.md section 9)
    enforced_by: str


CATALOGUE = {c.id: c for c in (
    Check("fdt", ERROR, "root FDT valid, compatible known, one page, "
          "preserved-memory-map present and 8 bytes",
          "K every version (totalsize: none)"),
    Check("map-unset", ERROR, "preserved-memory-map is not 0",
          "K 6.19+ (0 means 'nothing' on 6.16-6.18)"),
    Check("map", ERROR, "the map decodes: kho-v1 chunks (num_elms, no cycle, "
          "aligned, phys_start alignment), radix tables (aligned, no node "
          "twice, key width)", "none"),
    Check("order", WARNING, "block order <= MAX_PAGE_ORDER (10)",
          "K at restore 6.16-7.0; none from 7.1"),
    Check("align", ERROR, "block phys aligned to its size", "by "
          "construction; the page magic (6.18+) at restore"),
    Check("ram", ERROR, "preserved block inside System RAM", "none"),
    Check("scratch", ERROR, "preserved block outside every scratch area",
          "P 6.18+ (CONFIG_KEXEC_HANDOVER_DEBUG)"),
    Check("overlap", ERROR, "preserved blocks do not overlap", "none"),
    Check("blob-preserved", ERROR, "root FDT page and every sub-node blob "
          "are themselves preserved", "none"),
    Check("scratch-list", ERROR, "scratch areas 2 MiB-aligned, disjoint, "
          "inside RAM", "none"),
    Check("subnode", ERROR, "sub-node pointers 8 bytes; known client blobs "
          "decode (vmalloc descriptors, test_kho, memblock, kexec-metadata, "
          "LUO, kho_workload)", "K on retrieve; vmalloc count 6.18+; "
          "kexec-metadata 7.1+, luo_ser 7.2+"),
    Check("claim-preserved", ERROR, "every block a client lists is "
          "preserved, with the order the client will restore",
          "the client's restore fails (6.18+: no magic)"),
    Check("unclaimed", WARNING, "every preserved block has an owner",
          "none"),
    Check("claimed-twice", WARNING, "no block claimed by two clients",
          "none"),
    Check("unrestored", WARNING, "after a KHO boot: a block still "
          "preserved (marked) that its owner has not restored", "none "
          "(stays reserved: leaked until the next kexec)"),
    Check("views", ERROR, "the kernel's tracker equals the map it hands "
          "over", "none"),
    Check("not-checked", INFO, "a check that could not be made on this "
          "source", "-"),
    Check("next-compatible", ERROR, "the next kernel accepts this root "
          "compatible", "K every version (refuses the whole handover)"),
    Check("next-bitmap", ERROR, "kho-v1 bitmap size the next kernel assumes "
          "equals the writer's", "none (both say kho-v1)"),
    Check("next-order", WARNING, "what the next kernel does with order > "
          "MAX_PAGE_ORDER at restore", "6.16-7.0 refuse; 7.1-7.3 none"),
    Check("next-client", WARNING, "the next kernel's clients read these "
          "sub-node formats", "the client's own reader"),
    Check("next-numa", WARNING, "a page run across a NUMA node boundary: "
          "the next kernel's kho_restore_pages walks it without the node "
          "split kho_preserve_pages made", "none (7.1-7.3)"),
)}


@dataclasses.dataclass
class Finding:
    """One thing ``check`` found. ``phys``/``order``/``count`` name the
    blocks (None when the finding is about the handover as a whole)."""

    id: str
    message: str
    phys: int | None = None
    order: int | None = None
    count: int = 1
    owner: str | None = None
    severity: str | None = None     # default: the catalogue's

    def __post_init__(self):
        if self.severity is None:
            self.severity = CATALOGUE[self.id].severity

    def as_json(self) -> dict:
        return {"id": self.id, "severity": self.severity, "phys": self.phys,
                "order": self.order, "count": self.count,
                "owner": self.owner, "message": self.message,
                "enforced_by": CATALOGUE[self.id].enforced_by}


def worst(findings) -> str | None:
    """The most severe level among *findings*, or None when empty."""
    levels = {f.severity for f in findings}
    return next((s for s in SEVERITIES if s in levels), None)

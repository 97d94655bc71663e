"""Map a root ``compatible`` string to what a decoder needs to know."""

import dataclasses

from . import radix, v1


@dataclasses.dataclass(frozen=True)
class Generation:
    """One KHO ABI generation as seen in its FDT."""

    compatible: str
    map_kind: str          # "chunks" (v1) or "radix" (v2+)
    blob_prop: str         # sub-node property holding the blob's phys
    size_prop: str | None  # sub-node property holding its size, if any
    kernels: str


GENERATIONS = {
    g.compatible: g for g in (
        Generation(v1.COMPATIBLE, "chunks", v1.SUBNODE_PROP_BLOB, None,
                   "6.16-7.0"),
        Generation("kho-v2", "radix", radix.SUBNODE_PROP_BLOB, None,
                   "unreleased 7.1-rc commits"),
        Generation("kho-v3", "radix", radix.SUBNODE_PROP_BLOB,
                   radix.SUBNODE_PROP_SIZE, "7.1"),
        Generation("kho-v4", "radix", radix.SUBNODE_PROP_BLOB,
                   radix.SUBNODE_PROP_SIZE, "7.2-7.3"),
    )
}


def known() -> str:
    """The known compatibles, for error messages."""
    return ", ".join(GENERATIONS)

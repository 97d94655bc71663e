"""Map a root ``compatible`` string to what a decoder needs to know.

One entry per generation, each naming the kernels that write it (docs/abi.md
section 2). Newer trees append feature tokens to the base, separated by
``;`` (``kho-v4;radix-v1;...``): :func:`split_compatible` separates them.
"""

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


_V2, _V3, _V4 = radix.COMPATIBLES

GENERATIONS = {
    g.compatible: g for g in (
        # Since Linux 6.16 (commit fc33e4b44b27, "kexec: enable KHO support
        # for memory preservation").
        Generation(v1.COMPATIBLE, "chunks", v1.SUBNODE_PROP_BLOB, None,
                   "6.16-7.0"),
        # Commit 3f2ad90060 ("kho: adopt radix tree for preserved memory
        # tracking"), in the 7.1 merge window; no release carries it.
        Generation(_V2, "radix", radix.SUBNODE_PROP_BLOB, None,
                   "unreleased 7.1-rc commits"),
        # Since Linux 7.1 ("kho: persist blob size in KHO FDT").
        Generation(_V3, "radix", radix.SUBNODE_PROP_BLOB,
                   radix.SUBNODE_PROP_SIZE, "7.1"),
        # Since Linux 7.2 (bumped with the kho_block ABI; same map as v3).
        Generation(_V4, "radix", radix.SUBNODE_PROP_BLOB,
                   radix.SUBNODE_PROP_SIZE, "7.2-7.3"),
    )
}

#: Separates the base compatible from the feature tokens newer trees append
#: (``KHO_SUB_COMPAT``, posted after 7.3; docs/abi.md section 2.4).
TOKEN_SEPARATOR = ";"


def split_compatible(value: str) -> tuple[str, list[str]]:
    """Split one root compatible string into its base and the tokens after
    it: ``"kho-v4;radix-v1"`` -> ``("kho-v4", ["radix-v1"])``; a plain
    ``"kho-v3"`` has no tokens. Empty tokens are
    dropped."""
    base, *tokens = value.split(TOKEN_SEPARATOR)
    return base, [t for t in tokens if t]


def known() -> str:
    """The known compatibles, for error messages."""
    return ", ".join(GENERATIONS)

"""Results of the reference decoder."""

from __future__ import annotations

import dataclasses

from ..ranges import Run


@dataclasses.dataclass(frozen=True)
class MapPage:
    """Memory the handover itself occupies (not a preserved range)."""

    phys: int
    size: int
    kind: str   # fdt, chunk, bitmap, radix-table, radix-leaf, blob, vmalloc-*

    def as_json(self) -> dict:
        return {"phys": self.phys, "size": self.size, "kind": self.kind}


@dataclasses.dataclass
class PreservedMap:
    """A decoded preserved-memory map."""

    generation: str
    map_phys: int
    runs: list[Run]
    pages: list[MapPage]
    #: "ok", or "not-finalized" (kho-v1 map value 0 on 6.19/7.0).
    state: str = "ok"
    bitmap_bytes: int | None = None
    bitmap_source: str | None = None


@dataclasses.dataclass
class Subnode:
    """One client sub-node of the root FDT."""

    name: str
    phys: int | None
    size: int | None
    content: dict | None = None     # decoded blob, when kho_inspect knows it
    error: str | None = None        # why the blob could not be decoded
    pages: list[MapPage] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict:
        d = {"name": self.name, "phys": self.phys, "size": self.size}
        if self.content is not None:
            d["content"] = self.content
        if self.error:
            d["error"] = self.error
        return d


@dataclasses.dataclass
class Handover:
    """Everything decoded from one root FDT."""

    generation: str                 # the base compatible, e.g. "kho-v4"
    fdt_phys: int | None
    fdt_size: int
    map: PreservedMap | None
    subnodes: list[Subnode]
    #: tokens after the base of a composite compatible
    #: (``kho-v4;radix-v1`` -> ``["radix-v1"]``), in order; usually empty
    compat_tokens: list[str] = dataclasses.field(default_factory=list)

    @property
    def pages(self) -> list[MapPage]:
        """Every page the handover itself occupies that was read."""
        out = []
        if self.fdt_phys is not None:
            out.append(MapPage(self.fdt_phys, self.fdt_size, "fdt"))
        if self.map:
            out += self.map.pages
        for s in self.subnodes:
            out += s.pages
        return out

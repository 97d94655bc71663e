"""A strict, bounds-checked reader of flattened device trees (FDT/DTB).

Every malformation raises :class:`FdtError` naming the byte offset where it
was found. Nothing here knows about KHO: property values stay raw ``bytes``
(KHO's u64 properties are little-endian, see :func:`abi.common.u64le`).
"""

from __future__ import annotations

import dataclasses
import struct

from .errors import KhoError

FDT_MAGIC = 0xD00DFEED
_MAGIC_BYTES = FDT_MAGIC.to_bytes(4, "big")
HEADER = struct.Struct(">10I")
HEADER_SIZE = HEADER.size  # 40 (version 17)
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
MAX_DEPTH = 64
#: The oldest header version with every field used here (size_dt_struct).
MIN_VERSION = 17


class FdtError(KhoError):
    """The blob is not a well-formed FDT; the message names the offset."""


@dataclasses.dataclass
class Property:
    name: str
    value: bytes
    offset: int        # of the FDT_PROP token, from the start of the blob

    def string(self) -> str:
        """The value as one NUL-terminated string (the first of a list)."""
        return self.value.split(b"\0", 1)[0].decode("utf-8", "replace")

    def strings(self) -> list[str]:
        """The value as a list of NUL-terminated strings."""
        if not self.value:
            return []
        return [s.decode("utf-8", "replace")
                for s in self.value.rstrip(b"\0").split(b"\0")]


@dataclasses.dataclass
class Node:
    name: str
    offset: int        # of the FDT_BEGIN_NODE token
    props: dict[str, Property] = dataclasses.field(default_factory=dict)
    children: list[Node] = dataclasses.field(default_factory=list)

    def child(self, name: str) -> Node | None:
        for c in self.children:
            if c.name == name:
                return c
        return None

    def walk(self, path: str = ""):
        """Yield (path, node) for this node and every descendant, in order."""
        here = path + "/" + self.name if path or self.name else "/"
        yield here, self
        for c in self.children:
            yield from c.walk("" if here == "/" else here)


@dataclasses.dataclass
class Fdt:
    root: Node
    totalsize: int
    version: int
    last_comp_version: int
    boot_cpuid_phys: int
    reservations: list[tuple[int, int]]


def has_magic(blob: bytes) -> bool:
    """True if *blob* starts with the FDT magic (a cheap test of a blob's
    format before reading all of it)."""
    return blob[:4] == _MAGIC_BYTES


def header_totalsize(blob: bytes) -> int:
    """Validate the magic and return the header's totalsize field."""
    if len(blob) < 8:
        raise FdtError(f"offset 0: {len(blob)} bytes is too short for an FDT "
                       "header")
    magic, total = struct.unpack_from(">II", blob, 0)
    if magic != FDT_MAGIC:
        raise FdtError(f"offset 0: bad magic 0x{magic:08x} "
                       f"(expected 0x{FDT_MAGIC:08x})")
    return total


def _cstring(blob: bytes, start: int, end: int, what: str) -> tuple[str, int]:
    nul = blob.find(b"\0", start, end)
    if nul < 0:
        raise FdtError(f"offset {start}: {what} is not NUL-terminated "
                       f"within its block")
    try:
        return blob[start:nul].decode("ascii"), nul
    except UnicodeDecodeError:
        raise FdtError(f"offset {start}: {what} is not ASCII") from None


def parse(blob: bytes) -> Fdt:
    """Parse a DTB; raise :class:`FdtError` on any malformation.

    Trailing bytes after ``totalsize`` are ignored (a blob read from a
    page usually has them).
    """
    total = header_totalsize(blob)
    if len(blob) < HEADER_SIZE:
        raise FdtError(f"offset 0: {len(blob)} bytes is too short for an FDT "
                       f"header ({HEADER_SIZE})")
    (_, total, off_struct, off_strings, off_rsv, version, last_comp,
     cpuid, size_strings, size_struct) = HEADER.unpack_from(blob, 0)
    if total > len(blob):
        raise FdtError(f"offset 4: totalsize {total} exceeds the {len(blob)} "
                       "bytes available (truncated blob?)")
    if total < HEADER_SIZE:
        raise FdtError(f"offset 4: totalsize {total} is smaller than the "
                       "header")
    if version < MIN_VERSION or last_comp > MIN_VERSION:
        raise FdtError(f"offset 20: unsupported FDT version {version} "
                       f"(last compatible {last_comp}); need 17")
    for name, off, size, field in (("structure block", off_struct,
                                    size_struct, 8),
                                   ("strings block", off_strings,
                                    size_strings, 12)):
        if off < HEADER_SIZE or off > total or size > total - off:
            raise FdtError(f"offset {field}: {name} [{off}, +{size}) lies "
                           f"outside the blob (totalsize {total})")
    if off_struct % 4:
        raise FdtError(f"offset 8: structure block offset {off_struct} is "
                       "not 4-byte aligned")
    if off_rsv < HEADER_SIZE or off_rsv % 8 or off_rsv > total:
        raise FdtError(f"offset 16: memory reservation map offset {off_rsv} "
                       "is out of range or misaligned")

    reservations = []
    pos = off_rsv
    while True:
        if pos + 16 > total:
            raise FdtError(f"offset {pos}: memory reservation map runs past "
                           "the end of the blob")
        addr, size = struct.unpack_from(">QQ", blob, pos)
        pos += 16
        if addr == 0 and size == 0:
            break
        reservations.append((addr, size))

    s_end = off_strings + size_strings
    end = off_struct + size_struct
    pos = off_struct
    stack: list[Node] = []
    root = None

    def u32(at: int) -> int:
        if at + 4 > end:
            raise FdtError(f"offset {at}: structure block ends inside a "
                           "token")
        return struct.unpack_from(">I", blob, at)[0]

    while True:
        token = u32(pos)
        tok_at = pos
        pos += 4
        if token == FDT_BEGIN_NODE:
            name, nul = _cstring(blob, pos, end, "node name")
            pos = (nul + 4) & ~3
            if root is not None and not stack:
                raise FdtError(f"offset {tok_at}: second root node")
            if not stack and name:
                raise FdtError(f"offset {tok_at}: root node has name {name!r}")
            if len(stack) >= MAX_DEPTH:
                raise FdtError(f"offset {tok_at}: nodes nested deeper than "
                               f"{MAX_DEPTH}")
            node = Node(name, tok_at)
            if stack:
                stack[-1].children.append(node)
            else:
                root = node
            stack.append(node)
        elif token == FDT_END_NODE:
            if not stack:
                raise FdtError(f"offset {tok_at}: END_NODE without a node")
            stack.pop()
        elif token == FDT_PROP:
            if not stack:
                raise FdtError(f"offset {tok_at}: property outside any node")
            length, nameoff = u32(pos), u32(pos + 4)
            pos += 8
            if length > end - pos:
                raise FdtError(f"offset {tok_at}: property length {length} "
                               "runs past the structure block")
            if nameoff >= size_strings:
                raise FdtError(f"offset {tok_at}: property name offset "
                               f"{nameoff} is outside the strings block "
                               f"({size_strings} bytes)")
            pname, _ = _cstring(blob, off_strings + nameoff, s_end,
                                "property name")
            if pname in stack[-1].props:
                raise FdtError(f"offset {tok_at}: duplicate property {pname!r}")
            stack[-1].props[pname] = Property(pname, bytes(
                blob[pos:pos + length]), tok_at)
            pos = (pos + length + 3) & ~3
        elif token == FDT_NOP:
            pass
        elif token == FDT_END:
            if stack:
                raise FdtError(f"offset {tok_at}: END with {len(stack)} "
                               "unclosed node(s)")
            if root is None:
                raise FdtError(f"offset {tok_at}: no root node")
            break
        else:
            raise FdtError(f"offset {tok_at}: unknown token 0x{token:x}")
    return Fdt(root, total, version, last_comp, cpuid, reservations)


def _printable(value: bytes) -> list[str] | None:
    if not value or value[-1] != 0:
        return None
    parts = value[:-1].split(b"\0")
    if not all(p and all(32 <= c < 127 for c in p) for p in parts):
        return None
    return [p.decode() for p in parts]


def node_to_json(node: Node) -> dict:
    """A JSON-friendly rendering of *node*: each property as hex, plus the
    string list or the raw little-endian u64 (KHO's convention) when the
    value looks like one."""
    props = {}
    for p in node.props.values():
        d: dict = {"hex": p.value.hex()}
        s = _printable(p.value)
        if s is not None:
            d["strings"] = s
        elif len(p.value) == 8:
            d["u64le"] = int.from_bytes(p.value, "little")
        elif len(p.value) == 4:
            d["u32le"] = int.from_bytes(p.value, "little")
        props[p.name] = d
    return {"name": node.name, "props": props,
            "children": [node_to_json(c) for c in node.children]}

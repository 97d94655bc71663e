"""Root FDT -> generation, preserved-memory map and sub-nodes.

See docs/abi.md section 3 for the root FDT, section 2 for the generations
and section 7 for the client blobs.
"""

from __future__ import annotations

from .. import fdt as fdtmod
from ..abi import common
from ..abi import clients as client_abi
from ..abi.generations import GENERATIONS, Generation, known, split_compatible
from ..errors import KhoError
from . import clients
from .chunks import decode_chunks
from .model import Handover, MapPage, Subnode
from .radix import decode_radix

#: Sub-node blobs larger than this are refused as absurd.
MAX_BLOB = 64 << 20


def read_fdt_at(mem, phys: int, what: str,
                limit: int = common.ROOT_FDT_MAX) -> bytes:
    """Read the FDT at *phys*, sized by its own header: at most *limit*
    bytes (by default :data:`~kho_inspect.abi.common.ROOT_FDT_MAX`, the one
    page a root FDT may occupy)."""
    head = mem.read(phys, 8, what)
    try:
        total = fdtmod.header_totalsize(head)
    except fdtmod.FdtError as e:
        raise KhoError(f"{what} at phys 0x{phys:x}: {e}") from None
    if total > limit:
        raise KhoError(f"{what} at phys 0x{phys:x}: header totalsize "
                       f"{total} exceeds {limit} bytes")
    return mem.read(phys, total, what)


def identify(tree: fdtmod.Fdt) -> tuple[Generation, list[str]]:
    """The generation named by the root ``compatible``, and the feature
    tokens after its base (``kho-v4;radix-v1`` is kho-v4 with the token
    ``radix-v1``; docs/abi.md section 2.4). The
    tokens are listed, not interpreted: only an unknown base is refused."""
    p = tree.root.props.get(common.PROP_COMPATIBLE)
    if p is None:
        raise KhoError("root FDT has no 'compatible' property: not a KHO FDT")
    for c in p.strings():
        base, tokens = split_compatible(c)
        if base in GENERATIONS:
            return GENERATIONS[base], tokens
    full = p.string()
    base = split_compatible(full)[0]
    raise KhoError(f"unknown KHO compatible {full!r} ("
                   + (f"base {base!r}; " if base != full else "")
                   + f"known: {known()})")


def map_phys(tree: fdtmod.Fdt) -> int:
    """The root ``preserved-memory-map`` value."""
    p = tree.root.props.get(common.PROP_MEM_MAP)
    if p is None:
        raise KhoError(f"root FDT has no '{common.PROP_MEM_MAP}' property "
                       f"(FDT offset of root node {tree.root.offset})")
    try:
        return common.u64le(p.value)
    except ValueError as e:
        raise KhoError(f"root property '{common.PROP_MEM_MAP}' at FDT offset "
                       f"{p.offset}: {e}") from None


def _prop_u64(node, name):
    p = node.props.get(name)
    if p is None:
        return None
    try:
        return common.u64le(p.value)
    except ValueError as e:
        raise KhoError(f"property {name!r} at FDT offset {p.offset}: "
                       f"{e}") from None


def decode_subnode(node: fdtmod.Node, gen: Generation, mem) -> Subnode:
    """Name, phys and size of a client sub-node, and its decoded blob when
    *mem* is given and the client is known. Problems with the blob itself are
    recorded in ``error`` rather than raised: one bad client must not hide
    the rest of the handover."""
    sub = Subnode(node.name, None, None)
    try:
        sub.phys = _prop_u64(node, gen.blob_prop)
        if gen.size_prop:
            sub.size = _prop_u64(node, gen.size_prop)
        if sub.phys is None:
            raise KhoError(f"no '{gen.blob_prop}' property")
        if mem is None:
            return sub
        where = f"sub-node {node.name!r} blob at phys 0x{sub.phys:x}"
        head = mem.read(sub.phys, 8, f"sub-node {node.name!r} blob")
        if fdtmod.has_magic(head):
            blob = read_fdt_at(mem, sub.phys, f"sub-node {node.name!r} FDT",
                               min(sub.size or MAX_BLOB, MAX_BLOB))
            if sub.size is None:
                sub.size = len(blob)
            tree = fdtmod.parse(blob)
            sub.pages.append(MapPage(sub.phys, sub.size, "blob"))
            compat = tree.root.props.get(common.PROP_COMPATIBLE)
            content = {"format": "fdt",
                       "compatible": compat.string() if compat else None}
            sub.content = content
            dec = clients.FDT_CLIENTS.get(node.name)
            want = client_abi.FDT_COMPATIBLE.get(node.name)
            if dec and want not in (compat.strings() if compat else []):
                # the client's reader would refuse it: show it as a tree
                content["tree"] = fdtmod.node_to_json(tree.root)
                raise KhoError(f"{where}: FDT compatible "
                               f"{content['compatible']!r}, not {want!r}: "
                               f"not decoded as {node.name}")
            if dec:
                extra, pages = dec(tree, mem, where)
                content.update(extra)
                sub.pages += pages
            else:
                content["tree"] = fdtmod.node_to_json(tree.root)
        elif node.name in clients.RAW_CLIENTS and sub.size is not None:
            if sub.size > MAX_BLOB:
                raise KhoError(f"blob-size {sub.size} is absurd")
            blob = mem.read(sub.phys, sub.size, f"sub-node {node.name!r} blob")
            sub.pages.append(MapPage(sub.phys, sub.size, "blob"))
            content, pages = clients.RAW_CLIENTS[node.name](blob, mem, where)
            sub.content = {"format": "raw", **content}
            sub.pages += pages
    except KhoError as e:
        sub.error = str(e)
    return sub


def decode_handover(blob: bytes, mem=None, *, fdt_phys: int | None = None,
                    bitmap_bytes: int | None = None,
                    bitmap_source: str | None = None,
                    with_map: bool = True) -> Handover:
    """Decode a KHO root FDT and, given *mem*, what it points at.

    :param blob: the root FDT.
    :param mem: a :class:`~kho_inspect.memory.PhysMemory`, or None to decode
        the FDT alone.
    :param bitmap_bytes: kho-v1 only: the writer's bitmap size (512/4096).
    :raises KhoError: on a malformed FDT, an unknown compatible, or a map
        that cannot be decoded.
    """
    tree = fdtmod.parse(blob)
    if tree.totalsize > common.ROOT_FDT_MAX:
        raise KhoError(f"root FDT totalsize {tree.totalsize} exceeds "
                       f"{common.ROOT_FDT_MAX} bytes: the kernel hands over "
                       "exactly one page")
    gen, tokens = identify(tree)
    mphys = map_phys(tree)
    pmap = None
    if mem is not None and with_map:
        if gen.map_kind == "chunks":
            if bitmap_bytes is None:
                raise KhoError("kho-v1: the bitmap size (512 bytes on "
                               "6.16/6.17, 4096 from 6.18) is unknown; pass "
                               "--bitmap-bytes, -s VMLINUX, or a core with "
                               "VMCOREINFO")
            pmap = decode_chunks(mem, mphys, bitmap_bytes,
                                 bitmap_source or "caller")
        else:
            pmap = decode_radix(mem, mphys, gen.compatible)
    subnodes = [decode_subnode(n, gen, mem) for n in tree.root.children]
    return Handover(gen.compatible, fdt_phys, tree.totalsize, pmap, subnodes,
                    compat_tokens=tokens)


def check_bitmap_bytes(given: int, noted: int | None,
                       option: str = "--bitmap-bytes") -> int:
    """Return *given*, a kho-v1 bitmap size the user chose, unless *noted*
    (what a handover image's note recorded from the kernel that wrote the
    map) differs: then refuse. A wrong size decodes without error but
    wrongly: 512 on a map written with 4096-byte bitmaps reads only the first
    eighth of every bitmap, 4096 on 512-byte bitmaps reads the 3.5 KiB after
    each as preservation bits (docs/abi.md section 4.2).

    :raises KhoError: when *noted* is set and differs from *given*.
    """
    if noted is not None and noted != given:
        raise KhoError(f"{option} {given} contradicts the image note: the "
                       f"kernel that wrote this map used {noted}-byte kho-v1 "
                       f"bitmaps (decoding with {given} would give wrong "
                       f"ranges); drop {option}")
    return given


def find_preserved_copy(mem, runs, blob: bytes, limit: int = 1 << 16):
    """Physical address of a preserved order-0 page whose content starts with
    *blob*, or None. The root FDT page is itself preserved (every
    generation), so this locates an FDT read from a file or from debugfs
    without debug info. At most *limit* pages are compared."""
    head = blob[:64]
    tried = 0
    for phys, order, count in runs:
        if order != 0:
            continue
        for i in range(count):
            if tried >= limit:
                return None
            tried += 1
            p = phys + (i << common.PAGE_SHIFT)
            try:
                if mem.read(p, len(head), "preserved page") == head and \
                        mem.read(p, len(blob), "preserved page") == blob:
                    return p
            except KhoError:
                continue
    return None

"""kho-v2/v3/v4: decode the page-sized radix tree."""

from __future__ import annotations


import struct

from .. import bits
from ..abi import radix
from ..abi.common import MAX_REPRESENTABLE_ORDER, PAGE_SHIFT
from ..errors import KhoError
from ..ranges import Run
from .model import MapPage, PreservedMap

_TABLE = struct.Struct(f"<{radix.TABLE_ENTRIES}Q")
_ZERO = bytes(radix.NODE_SIZE)


def decode_radix(mem, root_phys: int, generation: str) -> PreservedMap:
    """Decode the radix tree whose level-5 root is at *root_phys*.

    :returns: the runs in key order (not yet coalesced) and every table and
        leaf page of the tree.
    :raises KhoError: on a node reachable twice, a root entry that needs a key
        wider than 53 bits, a key that encodes no block or an overflowing
        order, or memory the source does not hold.
    """
    result = PreservedMap(generation, root_phys, [], [])
    if root_phys == 0:
        raise KhoError(f"{generation}: preserved-memory-map is 0; a radix "
                       "tree root always exists (corrupt FDT)")
    runs, pages = result.runs, result.pages
    seen: set[int] = set()

    def visit(phys: int, level: int, prefix: int, path: str) -> None:
        kind = "radix-leaf" if level == 0 else "radix-table"
        where = f"{generation} {kind} {path or 'root'} at phys 0x{phys:x}"
        if phys in seen:
            raise KhoError(f"{where}: node reached twice (cycle or shared "
                           "node)")
        seen.add(phys)
        data = mem.read(phys, radix.NODE_SIZE, f"{generation} {kind} "
                        f"{path or 'root'}")
        pages.append(MapPage(phys, radix.NODE_SIZE, kind))
        if level == 0:
            runs.extend(leaf_runs(data, prefix, where))
            return
        if data == _ZERO:
            return
        table = _TABLE.unpack(data)
        shift = radix.level_shift(level)
        for i, child in enumerate(table):
            if not child:
                continue
            if level == radix.ROOT_LEVEL and i >= radix.ROOT_MAX_INDEX:
                raise KhoError(f"{where}: entry {i} is set, but keys are "
                               f"{radix.KEY_WIDTH} bits wide (only entries "
                               f"0-{radix.ROOT_MAX_INDEX - 1} can be used)")
            visit(child, level - 1, prefix | (i << shift),
                  f"{path}/{i}" if path else str(i))

    visit(root_phys, radix.ROOT_LEVEL, 0, "")
    return result


def leaf_runs(data: bytes, prefix: int, where: str) -> list:
    """Decode one leaf bitmap whose keys start at *prefix* (the key bits the
    tables above it index).

    :returns: ``(phys, order, count)`` runs, ascending.
    :raises KhoError: for key 0 or an order whose blocks overflow 64 bits;
        *where* names the leaf.
    """
    if prefix == 0:
        # Orders >= 38: the order bit falls inside this leaf, so each bit
        # may carry its own order. Decode bit by bit (at most 32768).
        out = []
        for key in bits.set_bits(data):
            if key == 0:
                raise KhoError(f"{where}: bit 0 is set; key 0 encodes no "
                               "block")
            phys, order = radix.decode_key(key)
            if order > MAX_REPRESENTABLE_ORDER:
                raise KhoError(f"{where}: bit {key} encodes order {order}: "
                               f"a block of 4096 << {order} bytes does not "
                               "fit in 64 bits")
            out.append(Run(phys, order, 1))
        return out
    base, order = radix.decode_key(prefix)
    return bits.block_runs(data, base, PAGE_SHIFT + order, order)

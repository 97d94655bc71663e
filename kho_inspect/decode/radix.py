"""kho-v2/v3/v4: the page-sized radix tree, walked once for everyone.

:func:`walk_radix` is the one traversal of the tree. It takes a callable that
reads one node by physical address, so the reference decoder (physical
reads, :func:`decode_radix`) and the drgn walker (reads through the kernel's
direct map, :func:`kho_inspect.walk.tracker.walk_radix_tree`) share every
rule: see docs/abi.md sections 5.1-5.3 for the layout, 5.4 for what the
kernel checks, and section 9 (invariants 9 and 10) for what is refused.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

from .. import bits
from ..abi import radix
from ..abi.common import MAX_REPRESENTABLE_ORDER, PAGE_SHIFT
from ..errors import KhoError
from ..ranges import Run
from .model import MapPage, PreservedMap

_ZERO = bytes(radix.NODE_SIZE)
_ALIGN = radix.NODE_SIZE - 1

#: ``read_node(phys, what) -> bytes``: the NODE_SIZE bytes of the node at
#: *phys*; *what* names it for an error (raise KhoError when unreadable).
ReadNode = Callable[[int, str], bytes]


@dataclasses.dataclass
class RadixWalk:
    """What :func:`walk_radix` found.

    ``runs`` are ``(phys, order, count)`` in key order, not coalesced;
    ``pages`` the ``(phys, kind)`` of every node read (kind ``radix-table``
    or ``radix-leaf``), in visiting order; ``zero_nodes`` how many of them
    below the root were all zero (legitimate: the kernel never frees nodes
    emptied by unpreserve).
    """

    runs: list
    pages: list[tuple[int, str]]
    zero_nodes: int = 0


def walk_radix(read_node: ReadNode, root_phys: int, label: str) -> RadixWalk:
    """Walk the radix tree whose level-5 root is at physical *root_phys*.

    Every node is read once, with one call of *read_node*; a table entry is
    followed only if it is page-aligned and names a page not visited yet, so
    the work is bounded by the number of distinct pages the source holds.

    :param label: names the tree in errors (a generation such as
        ``kho-v3``, or the C expression of the kernel's root).
    :returns: a :class:`RadixWalk`.
    :raises KhoError: on a table entry (or root) that is not page-aligned, a
        node reachable twice (cycle or shared node), a root entry that needs
        a key wider than 53 bits, a key that encodes no block or an order
        whose blocks overflow 64 bits, or a node *read_node* cannot read.
    """
    if root_phys & _ALIGN:
        raise KhoError(f"{label}: radix root 0x{root_phys:x} is not "
                       f"{radix.NODE_SIZE}-byte aligned (radix nodes are "
                       "whole pages)")
    out = RadixWalk([], [])
    runs, pages = out.runs, out.pages
    seen = {root_phys}
    # (phys, level, key prefix, path): popped in key order because the
    # children of a table are pushed highest index first
    stack = [(root_phys, radix.ROOT_LEVEL, 0, "root")]
    pop, push = stack.pop, stack.append
    while stack:
        phys, level, prefix, path = pop()
        kind = "radix-leaf" if level == 0 else "radix-table"
        data = read_node(phys, f"{label} {kind} {path}")
        pages.append((phys, kind))
        if level == 0:
            try:
                found = leaf_runs(data, prefix)
            except KhoError as e:
                raise KhoError(f"{label} {kind} {path} at phys 0x{phys:x}: "
                               f"{e}") from None
            if found:
                runs.extend(found)
            else:
                out.zero_nodes += 1
            continue
        if data == _ZERO:
            out.zero_nodes += level != radix.ROOT_LEVEL
            continue
        # only the span between the first and the last non-zero byte can
        # hold entries: a sparse table costs a few C calls, not 512 steps
        lo = (radix.NODE_SIZE - len(data.lstrip(b"\0"))) >> 3
        hi = (len(data.rstrip(b"\0")) + 7) >> 3
        table = struct.unpack_from(f"<{hi - lo}Q", data, lo << 3)
        used = [i for i, child in enumerate(table, lo) if child]
        shift = radix.level_shift(level)
        if level == radix.ROOT_LEVEL and used[-1] >= radix.ROOT_MAX_INDEX:
            bad = next(i for i in used if i >= radix.ROOT_MAX_INDEX)
            raise KhoError(f"{label} {kind} {path} at phys 0x{phys:x}: entry "
                           f"{bad} is set, but keys are "
                           f"{radix.KEY_WIDTH} bits wide (only entries "
                           f"0-{radix.ROOT_MAX_INDEX - 1} can be used)")
        for i in reversed(used):
            child = table[i - lo]
            if child & _ALIGN or child in seen:
                why = ("is not page-aligned (radix nodes are whole pages)"
                       if child & _ALIGN else
                       "is a node reached twice (cycle or shared node)")
                raise KhoError(f"{label} {kind} {path} at phys 0x{phys:x}: "
                               f"entry {i} -> 0x{child:x} {why}")
            seen.add(child)
            push((child, level - 1, prefix | (i << shift),
                  str(i) if level == radix.ROOT_LEVEL else f"{path}/{i}"))
    return out


def decode_radix(mem, root_phys: int, generation: str) -> PreservedMap:
    """Decode the radix tree whose level-5 root is at *root_phys*, reading
    physical memory (:func:`walk_radix` over *mem*).

    :param mem: a :class:`~kho_inspect.memory.PhysMemory`.
    :returns: the runs in key order (not yet coalesced) and every table and
        leaf page of the tree.
    :raises KhoError: as :func:`walk_radix`, and for a map value of 0 (a
        radix root always exists).
    """
    if root_phys == 0:
        raise KhoError(f"{generation}: preserved-memory-map is 0; a radix "
                       "tree root always exists (corrupt FDT)")

    def read_node(phys: int, what: str) -> bytes:
        return mem.read(phys, radix.NODE_SIZE, what)
    w = walk_radix(read_node, root_phys, generation)
    return PreservedMap(generation, root_phys, w.runs,
                        [MapPage(p, radix.NODE_SIZE, k) for p, k in w.pages])


def leaf_runs(data: bytes, prefix: int) -> list:
    """Decode one leaf bitmap whose keys start at *prefix* (the key bits the
    tables above it index).

    :returns: ``(phys, order, count)`` runs, ascending.
    :raises KhoError: for key 0 or an order whose blocks overflow 64 bits
        (the caller names the leaf).
    """
    if prefix == 0:
        # Orders >= 38: the order bit falls inside this leaf, so each bit
        # may carry its own order. Decode bit by bit (at most 32768).
        out = []
        for key in bits.set_bits(data):
            if key == 0:
                raise KhoError("bit 0 is set; key 0 encodes no block")
            phys, order = radix.decode_key(key)
            if order > MAX_REPRESENTABLE_ORDER:
                raise KhoError(f"bit {key} encodes order {order}: a block "
                               f"of 4096 << {order} bytes does not fit in "
                               "64 bits")
            out.append(Run(phys, order, 1))
        return out
    base, order = radix.decode_key(prefix)
    return bits.block_runs(data, base, PAGE_SHIFT + order, order)

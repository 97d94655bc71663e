"""The outgoing tracker: what the running kernel will hand over.

Two in-kernel representations, told apart by probing ``struct kho_out``:

* kho-v1 xarrays (6.16-7.0): ``kho_out.ser.track`` (6.16-6.18, inside
  ``struct kho_serialization``) or ``kho_out.track`` (6.19/7.0, after
  "kho: drop notifiers"), a ``struct kho_mem_track``: ``orders`` xarray
  (index = order) -> ``struct kho_mem_phys`` -> ``phys_bits`` xarray
  (index = i) -> ``struct kho_mem_phys_bits`` bitmap of
  ``sizeof(struct kho_mem_phys_bits) * 8`` bits; bit *b* preserves
  pfn ``(i * bits + b) << order``.
* the radix tree (7.1+, "kho: adopt radix tree for preserved memory
  tracking"): ``kho_out.radix_tree.root``, a ``struct kho_radix_node``;
  the tree is also the handed-over map (see :mod:`kho_inspect.abi.radix`).

Every bitmap and every radix node is read with one ``prog.read``; bitmaps
are decoded with :func:`kho_inspect.bits.block_runs`, and the radix tree is
walked by the decoder's own traversal,
:func:`kho_inspect.decode.radix.walk_radix`, given a reader through the
direct map (one traversal, one set of refusals).
"""

from __future__ import annotations

import dataclasses
import struct
import drgn
from drgn.helpers.linux.xarray import xa_for_each

from .. import bits
from ..abi import radix
from ..abi.common import MAX_REPRESENTABLE_ORDER, PAGE_SHIFT
from ..errors import KhoError
from ..decode.radix import walk_radix
from ..progress import Progress
from ..ranges import Run
from ._read import direct_map_base, read, reading
from .fdt import is_finalized, kho_out

#: Layout names, as reported.
XARRAY = "xarray"
RADIX = "radix"


@dataclasses.dataclass
class Tracker:
    """The outgoing tracker as walked.

    ``runs`` are not coalesced (plain ``(phys, order, count)`` tuples or
    :class:`~kho_inspect.ranges.Run`, which compare equal). ``pages`` lists the (address, size, kind) of
    every bitmap or node read (kernel virtual addresses), ``zero_pages`` how
    many of them read as all zero (legitimate after unpreserve, since nodes
    and bitmaps are never freed; suspicious in a dump that zero-fills
    filtered pages).
    """

    layout: str                 # XARRAY or RADIX
    expression: str             # the C expression walked
    bitmap_bytes: int | None    # kho-v1 only: sizeof(struct kho_mem_phys_bits)
    runs: list[Run]
    pages: list[tuple[int, int, str]]
    zero_pages: int = 0
    finalized: bool | None = None
    root_phys: int | None = None  # radix: virt_to_phys(root)


def tracker_layout(prog: drgn.Program) -> tuple[str, drgn.Object, str]:
    """Find the tracker of this kernel.

    :returns: ``(layout, object, expression)``: for :data:`RADIX` the
        ``struct kho_radix_node *`` root, for :data:`XARRAY` the
        ``struct kho_mem_track`` object.

    >>> tracker_layout(prog)[0]
    'radix'
    """
    out = kho_out(prog)
    try:
        # Since Linux 7.1 (commit 3f2ad90060, "kho: adopt radix tree for
        # preserved memory tracking").
        return RADIX, out.radix_tree.root, "kho_out.radix_tree.root"
    except AttributeError:
        pass
    try:
        # Linux 6.19 and 7.0: struct kho_serialization is gone.
        return XARRAY, out.track, "kho_out.track"
    except AttributeError:
        pass
    try:
        # Linux 6.16-6.18 (since commit fc33e4b44b27, "kexec: enable KHO
        # support for memory preservation").
        return XARRAY, out.ser.track, "kho_out.ser.track"
    except AttributeError:
        raise KhoError("struct kho_out has none of radix_tree, track or "
                       "ser.track: a KHO layout kho_inspect does not know") \
            from None


def _sizeof(prog: drgn.Program, name: str) -> int:
    key = f"kho_inspect_sizeof {name}"
    try:
        return prog.cache[key]
    except KeyError:
        pass
    try:
        n = drgn.sizeof(prog.type(name))
    except LookupError:
        raise KhoError(f"the debug info has no '{name}' although kho_out "
                       "uses it") from None
    prog.cache[key] = n
    return n


#: xa_mk_internal(257), skipped like drgn's xa_for_each (advanced=False)
_XA_ZERO_ENTRY = 257 << 2 | 2


def _xa_layout(prog: drgn.Program) -> tuple[int, int, int, int]:
    """(sizeof, offsetof shift, offsetof slots, number of slots) of
    ``struct xa_node``, cached per program."""
    try:
        return prog.cache["kho_inspect_xa_node"]
    except KeyError:
        pass
    t = prog.type("struct xa_node")
    slots = t.member("slots").type
    lay = (drgn.sizeof(t), drgn.offsetof(t, "shift"),
           drgn.offsetof(t, "slots"), slots.length)
    prog.cache["kho_inspect_xa_node"] = lay
    return lay


def xa_entries(prog: drgn.Program, xa: drgn.Object):
    """``(index, entry value)`` of every entry of ``struct xarray *`` *xa*,
    like :func:`drgn.helpers.linux.xarray.xa_for_each` (same handling of
    nodes, sibling and zero entries), but reading each ``struct xa_node``
    with one ``prog.read`` instead of one read per slot: the tracker's
    xarrays are sparse (a few entries in 64-slot nodes), where per-slot reads
    cost 10x the bitmaps themselves. The tests check it against
    ``xa_for_each`` on every generation. Entries come depth first, not
    necessarily in index order.
    """
    size, shift_off, slots_off, nslots = _xa_layout(prog)
    head = xa.xa_head.value_()
    if not ((head & 3) == 2 and head > 4096):
        if head and head != _XA_ZERO_ENTRY and not (
                (head & 3) == 2 and head < 256):
            yield 0, head
        return
    fmt = struct.Struct(f"<{nslots}Q")
    stack = [(head - 2, 0)]
    while stack:
        node, base = stack.pop()
        data = prog.read(node, size)
        shift = data[shift_off]
        for i, v in enumerate(fmt.unpack_from(data, slots_off)):
            if not v or v == _XA_ZERO_ENTRY:
                continue
            index = base + (i << shift)
            if (v & 3) == 2:
                if v > 4096:
                    stack.append((v - 2, index))
                    continue
                if v < 256:
                    continue               # sibling entry
            yield index, v


def walk_xarray_tracker(prog: drgn.Program, track: drgn.Object,
                        expression: str = "track", *,
                        iterate=None) -> Tracker:
    """Walk a kho-v1 ``struct kho_mem_track``.

    :param iterate: ``f(prog, struct xarray *)`` yielding ``(index, entry
        value)``; default :func:`xa_entries` (one read per node). Pass
        :func:`xa_for_each_values` for drgn's own helper.
    :returns: a :class:`Tracker` whose runs come from every set bit.
    """
    iterate = iterate or xa_entries
    nbytes = _sizeof(prog, "struct kho_mem_phys_bits")
    runs: list[Run] = []
    pages: list[tuple[int, int, str]] = []
    with reading(prog, f"the xarray {expression}.orders"):
        orders = sorted(iterate(prog, track.orders.address_of_()))
    with Progress(f"walking {expression}", unit="bitmaps") as progress:
        zero = _walk_orders(prog, expression, orders, iterate, nbytes,
                            runs, pages, progress)
    return Tracker(XARRAY, expression, nbytes, runs, pages, zero)


def _walk_orders(prog: drgn.Program, expression: str, orders, iterate,
                 nbytes: int, runs: list, pages: list,
                 progress: Progress) -> int:
    """The bitmaps of every ``(order, struct kho_mem_phys *)`` in *orders*,
    decoded into *runs* (their pages into *pages*); returns how many were
    all zero."""
    nbits = nbytes * 8
    physxa_type = prog.type("struct kho_mem_phys *")
    zero = 0
    for order, entry in orders:
        if order > MAX_REPRESENTABLE_ORDER:
            raise KhoError(f"{expression}.orders has index {order}: a block "
                           f"of 4096 << {order} bytes does not fit in 64 bits")
        physxa = drgn.Object(prog, physxa_type, entry)
        with reading(prog, f"the phys_bits xarray of order {order}"):
            elems = sorted(iterate(prog, physxa.phys_bits.address_of_()))
        shift = PAGE_SHIFT + order
        for i, addr in elems:
            data = read(prog, addr, nbytes, f"struct kho_mem_phys_bits "
                        f"#{i} of order {order}")
            pages.append((addr, nbytes, "bitmap"))
            found = bits.block_runs(data, (i * nbits) << shift, shift,
                                    order)
            runs.extend(found)
            zero += not found
            progress.advance()
    return zero


def xa_for_each_values(prog: drgn.Program, xa: drgn.Object):
    """:func:`drgn.helpers.linux.xarray.xa_for_each` as ``(index, entry
    value)`` pairs (the reference for :func:`xa_entries`)."""
    for i, e in xa_for_each(xa):
        yield i, e.value_()


def walk_radix_tree(prog: drgn.Program, root: drgn.Object,
                    expression: str = "root") -> Tracker:
    """Walk a ``struct kho_radix_node *`` tree (levels 5..1 tables of
    physical addresses, level 0 leaf bitmaps) with the decoder's traversal,
    :func:`kho_inspect.decode.radix.walk_radix`, reading each node with one
    ``prog.read`` through the kernel's direct map.

    :returns: a :class:`Tracker` whose runs come from every leaf bit and
        whose ``pages`` are kernel virtual addresses.
    :raises KhoError: as :func:`~kho_inspect.decode.radix.walk_radix`
        (unaligned or repeated node, key wider than 53 bits, unreadable
        node), or for a NULL root.
    """
    node_size = _sizeof(prog, "struct kho_radix_node")
    if node_size != radix.NODE_SIZE:
        raise KhoError(f"sizeof(struct kho_radix_node) is {node_size}, but "
                       f"the kho-v2+ ABI has {radix.NODE_SIZE}-byte nodes")
    with reading(prog, expression):
        root_addr = root.value_()
    if not root_addr:
        raise KhoError(f"{expression} is NULL: KHO was not initialised "
                       "(boot with kho=on)")
    dm = direct_map_base(prog)
    if root_addr < dm:
        raise KhoError(f"{expression} is 0x{root_addr:x}, not a direct-map "
                       f"address (the direct map starts at 0x{dm:x})")

    def read_node(phys: int, what: str) -> bytes:
        if dm + phys + radix.NODE_SIZE > 1 << 64:
            raise KhoError(f"cannot read {what} at phys 0x{phys:x}: beyond "
                           "the end of the direct map")
        progress.advance()
        return read(prog, dm + phys, radix.NODE_SIZE, what)
    with Progress(f"walking {expression}", unit="nodes") as progress:
        w = walk_radix(read_node, root_addr - dm, expression)
    return Tracker(RADIX, expression, None, w.runs,
                   [(dm + p, radix.NODE_SIZE, k) for p, k in w.pages],
                   w.zero_nodes, root_phys=root_addr - dm)


def outgoing_tracker(prog: drgn.Program) -> Tracker:
    """Walk the running kernel's outgoing tracker, whatever its layout.

    :returns: a :class:`Tracker` with the preserved runs (uncoalesced), the
        bitmap size (kho-v1) and the finalize state (None on 7.1+).

    >>> t = outgoing_tracker(prog)
    >>> t.layout, len(t.runs)
    ('radix', 12)
    """
    layout, obj, expr = tracker_layout(prog)
    if layout == RADIX:
        t = walk_radix_tree(prog, obj, expr)
    else:
        t = walk_xarray_tracker(prog, obj, expr)
    t.finalized = is_finalized(prog)
    return t

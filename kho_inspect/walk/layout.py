"""Physical memory layout as the kernel itself records it: the "System RAM"
ranges of its resource tree (what ``/proc/iomem`` prints).

Works the same on ``/proc/kcore`` and on a vmcore: the tree is read from
kernel memory with the kernel's DWARF, not from ``/proc/iomem``.
"""

from __future__ import annotations

import drgn

from ..errors import KhoError
from ..ranges import merge_intervals
from ._read import reading

#: The name the kernel gives boot RAM (``e820__resource_init()`` and the
#: generic ``add_memory_resource()`` both use it).
SYSTEM_RAM = "System RAM"

#: Refuse a tree larger than this: a loop in a damaged dump, not a machine.
MAX_RESOURCES = 1 << 20


def system_ram(prog: drgn.Program) -> list[tuple[int, int]]:
    """The physical ranges of System RAM, from the kernel's resource tree:
    every ``struct resource`` under ``iomem_resource`` (children walked
    recursively through ``child``/``sibling``) whose ``name`` is exactly
    ``"System RAM"``. A resource's ``end`` is inclusive; the ranges returned
    are half-open.

    Hot-plugged memory a driver names otherwise (``"System RAM (kmem)"``)
    is not included.

    :returns: ``[(start, end), ...]`` sorted, overlapping or adjacent
        ranges merged; empty if the tree has no System RAM.
    :raises KhoError: if the debug info has no ``iomem_resource``, the tree
        cannot be read, or it loops.

    >>> [(hex(a), hex(b)) for a, b in system_ram(prog)]
    [('0x1000', '0x9fc00'), ('0x100000', '0x7ffe0000')]
    """
    try:
        root = prog["iomem_resource"]
    except KeyError:
        raise KhoError("the kernel's debug info has no 'iomem_resource' "
                       "(the resource tree /proc/iomem prints): the debug "
                       "info (-s VMLINUX) does not match a Linux kernel"
                       ) from None
    found = []
    seen: set[int] = set()
    with reading(prog, "the iomem resource tree (iomem_resource)"):
        stack = [root.child.value_()]
        rtype = root.type_
        while stack:
            addr = stack.pop()
            if not addr:
                continue
            if addr in seen or len(seen) >= MAX_RESOURCES:
                raise KhoError(f"the iomem resource tree loops (struct "
                               f"resource at 0x{addr:x} reached twice, or "
                               f"more than {MAX_RESOURCES} resources)")
            seen.add(addr)
            r = drgn.Object(prog, rtype, address=addr).read_()
            name = r.name.value_()
            if name and r.name.string_() == SYSTEM_RAM.encode():
                start, end = r.start.value_(), r.end.value_()
                if end >= start:
                    found.append((start, end + 1))
            stack.append(r.sibling.value_())
            stack.append(r.child.value_())
    return merge_intervals(found)


def numa_nodes(prog: drgn.Program) -> list[tuple[int, int, int]]:
    """The memory nodes as the kernel spans them: ``(nid, start_pfn,
    end_pfn)`` of every online node with pages, from ``NODE_DATA(nid)``'s
    ``node_start_pfn`` and ``node_spanned_pages``, sorted by start.

    A kernel built without ``CONFIG_NUMA`` has no ``node_data`` array, only
    ``contig_page_data``: its one node is returned (no boundary to cross).

    :raises KhoError: if neither symbol is in the debug info, or a node's
        ``pglist_data`` cannot be read.
    """
    from drgn.helpers.linux.nodemask import for_each_online_node

    with reading(prog, "the memory nodes (node_data)"):
        try:
            table = prog["node_data"]
            pgdats = [(nid, table[nid]) for nid in for_each_online_node(prog)]
        except KeyError:
            try:
                pgdats = [(0, prog["contig_page_data"].address_of_())]
            except KeyError:
                raise KhoError("the kernel's debug info has neither "
                               "'node_data' nor 'contig_page_data'") from None
        out = []
        for nid, pgdat in pgdats:
            if not pgdat.value_():
                continue
            start = pgdat.node_start_pfn.value_()
            spanned = pgdat.node_spanned_pages.value_()
            if spanned:
                out.append((nid, start, start + spanned))
    return sorted(out, key=lambda n: n[1])

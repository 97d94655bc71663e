"""Decode a ``struct kho_vmalloc`` descriptor and its chunk list."""

from __future__ import annotations

import struct

from ..abi import vmalloc as abi
from ..abi.common import PAGE_SIZE
from ..errors import KhoError
from .model import MapPage

_ENTRIES = struct.Struct(f"<{abi.CHUNK_ENTRIES}Q")


def decode_vmalloc(mem, desc: bytes, where: str):
    """Follow a 16-byte ``struct kho_vmalloc``.

    :returns: ``(info, blocks, pages)``: the descriptor fields, the list of
        ``phys`` of each ``1 << order``-page block in vmalloc order, and the
        chunk pages read.
    :raises KhoError: on a bad descriptor, a cycle, or a page count that
        disagrees with ``total_pages`` (the checks ``kho_restore_vmalloc``
        makes); on a chunk or block that is not page-aligned, or a block
        that overlaps another (the pages of one vmalloc area are distinct),
        so that no page is decoded twice.
    """
    if len(desc) != abi.DESCRIPTOR.size:
        raise KhoError(f"{where}: a kho_vmalloc descriptor is "
                       f"{abi.DESCRIPTOR.size} bytes, not {len(desc)}")
    first, total, flags, order = abi.DESCRIPTOR.unpack(desc)
    info = {"first": first, "total_pages": total, "flags": flags,
            "order": order}
    if flags & ~abi.KNOWN_FLAGS:
        raise KhoError(f"{where}: unknown kho_vmalloc flags 0x{flags:x}")
    if order > 20:
        raise KhoError(f"{where}: kho_vmalloc order {order} is absurd")
    blocks, pages, seen, pages_counted = [], [], set(), 0
    phys = first
    block_size = PAGE_SIZE << order
    while phys:
        if phys in seen:
            raise KhoError(f"{where}: vmalloc chunk list loops at phys "
                           f"0x{phys:x}")
        if phys % PAGE_SIZE:
            raise KhoError(f"{where}: vmalloc chunk at phys 0x{phys:x} is "
                           "not page-aligned")
        seen.add(phys)
        page = mem.read(phys, abi.CHUNK_SIZE, f"{where} vmalloc chunk")
        pages.append(MapPage(phys, abi.CHUNK_SIZE, "vmalloc-chunk"))
        nxt = abi.CHUNK_NEXT.unpack_from(page)[0]
        for p in _ENTRIES.unpack_from(page, abi.CHUNK_NEXT.size):
            if not p:
                break
            pages_counted += 1 << order
            if pages_counted > total:
                raise KhoError(f"{where}: vmalloc chunks hold more than "
                               f"total_pages={total} pages")
            if p % PAGE_SIZE or p + block_size > 1 << 64:
                raise KhoError(f"{where}: vmalloc block at phys 0x{p:x} is "
                               "not a page-aligned address")
            blocks.append(p)
        phys = nxt
    if pages_counted != total:
        raise KhoError(f"{where}: vmalloc chunks hold {pages_counted} pages, "
                       f"total_pages says {total}")
    ordered = sorted(blocks)
    for a, b in zip(ordered, ordered[1:]):
        if b < a + block_size:
            raise KhoError(f"{where}: vmalloc blocks at phys 0x{a:x} and "
                           f"0x{b:x} overlap ({block_size} bytes each)")
    return info, blocks, pages


def read_vmalloc(mem, blocks, order: int, size: int, where: str):
    """Read the first *size* bytes of the vmalloc area made of *blocks*
    (as :func:`decode_vmalloc` returns them).

    :returns: ``(data, pages)``.
    :raises KhoError: if the blocks hold fewer than *size* bytes, or one
        cannot be read (read a page at a time: a huge block that is not in
        the source fails at its first missing page, not after allocating
        its whole size).
    """
    step = PAGE_SIZE << order
    if size > len(blocks) * step:
        raise KhoError(f"{where}: {size} bytes wanted from a vmalloc area of "
                       f"{len(blocks)} block(s) of {step} bytes")
    out, pages = bytearray(), []
    for p in blocks:
        if len(out) >= size:
            break
        n = min(step, size - len(out))
        for off in range(0, n, PAGE_SIZE):
            out += mem.read(p + off, min(PAGE_SIZE, n - off),
                            f"{where} vmalloc data")
        pages.append(MapPage(p, n, "vmalloc-data"))
    return bytes(out), pages

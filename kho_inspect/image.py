"""Handover images: a small ELF core holding one handover.

The image holds the root FDT page, every page the map references (chunks,
bitmaps or radix nodes), the sub-node blobs and what they point at, as
``PT_LOAD`` segments at their physical addresses (so ``drgn -c IMAGE`` and
every kho_inspect command open it), plus a ``KHO_INSPECT`` note: JSON with
the generation, the kho-v1 bitmap size, the FDT's phys and the kernel release.
"""

from __future__ import annotations

import json
import os
import struct

from .abi.common import PAGE_SIZE
from .errors import KhoError

NOTE_NAME = b"KHO_INSPECT\0"
NOTE_TYPE = 0x4B484F31          # "KHO1"
IMAGE_FORMAT = 1

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_PT_LOAD, _PT_NOTE, _ET_CORE, _EM_X86_64 = 1, 4, 4, 62


def page_ranges(pages) -> list[tuple[int, int]]:
    """Merge (phys, size) items into sorted, page-aligned [start, end)."""
    spans = sorted(((p.phys & ~(PAGE_SIZE - 1),
                     (p.phys + p.size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
                    for p in pages if p.size > 0))
    out: list[list[int]] = []
    for s, e in spans:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _note(meta: dict) -> bytes:
    desc = json.dumps(meta, sort_keys=True).encode()
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return (struct.pack("<III", len(NOTE_NAME), len(desc), NOTE_TYPE)
            + pad(NOTE_NAME) + pad(desc))


def write_image(path: str, segments, meta: dict) -> None:
    """Write *segments* (list of (phys, bytes)) and *meta* as an ELF core.

    The file appears complete or not at all (written aside, then renamed).
    """
    meta = dict(meta, image_format=IMAGE_FORMAT)
    note = _note(meta)
    phnum = 1 + len(segments)
    off = _EHDR.size + _PHDR.size * phnum
    phdrs = [_PHDR.pack(_PT_NOTE, 0, off, 0, 0, len(note), 0, 4)]
    off += len(note)
    for phys, data in segments:
        phdrs.append(_PHDR.pack(_PT_LOAD, 4, off, phys, phys, len(data),
                                len(data), PAGE_SIZE))
        off += len(data)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = _EHDR.pack(ident, _ET_CORE, _EM_X86_64, 1, 0, _EHDR.size, 0, 0,
                      _EHDR.size, _PHDR.size, phnum, 0, 0, 0)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(ehdr)
            f.writelines(phdrs)
            f.write(note)
            for _, data in segments:
                f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_image_meta(path: str) -> dict | None:
    """The KHO_INSPECT note of the ELF core at *path*, or None if the file is
    an ELF core without one (a vmcore). Raises KhoError if it is not ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(_EHDR.size)
            if len(head) < _EHDR.size or head[:4] != b"\x7fELF":
                raise KhoError(f"{path}: not an ELF file")
            if head[4] != 2 or head[5] != 1:
                raise KhoError(f"{path}: not a 64-bit little-endian ELF")
            fields = _EHDR.unpack(head)
            phoff, phentsize, phnum = fields[5], fields[9], fields[10]
            if phentsize != _PHDR.size or phnum > 1 << 20:
                raise KhoError(f"{path}: bad ELF program header table")
            size = os.fstat(f.fileno()).st_size
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(len(table) // _PHDR.size):
                ptype, _, off, _, _, filesz, _, _ = _PHDR.unpack_from(
                    table, i * _PHDR.size)
                if ptype != _PT_NOTE or filesz > 1 << 24 or off + filesz > size:
                    continue
                f.seek(off)
                meta = _find_note(f.read(filesz))
                if meta is not None:
                    return meta
    except OSError as e:
        raise KhoError(f"{path}: {e.strerror}") from None
    return None


def _find_note(data: bytes) -> dict | None:
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name = data[pos:pos + namesz]
        pos += (namesz + 3) & ~3
        desc = data[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if name == NOTE_NAME and ntype == NOTE_TYPE:
            try:
                return json.loads(desc)
            except ValueError:
                raise KhoError("handover image note is not valid JSON") \
                    from None
    return None

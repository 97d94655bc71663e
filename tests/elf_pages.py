"""Bytes at physical addresses of an ELF64 core (PT_LOAD segments by
``p_paddr``), for the naive readers: a few lines of ``struct``, nothing from
kho_inspect."""

import struct


def reader(path):
    """``read(phys, size)`` over the PT_LOADs of the ELF core at *path*;
    KeyError for bytes no segment holds."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{path}: not an ELF64 file")
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    loads = []
    for i in range(phnum):
        (ptype, _, off, _, paddr, filesz, _, _) = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize)
        if ptype == 1:
            loads.append((paddr, filesz, off))

    def read(phys, size):
        for paddr, filesz, off in loads:
            if paddr <= phys and phys + size <= paddr + filesz:
                return data[off + phys - paddr:off + phys - paddr + size]
        raise KeyError(f"0x{phys:x}+{size} not in {path}")
    return read


def note(path, name: bytes, ntype: int) -> bytes | None:
    """The descriptor of the first ELF note named *name* (without its NUL)
    of type *ntype* in the core at *path*, or None."""
    with open(path, "rb") as f:
        data = f.read()
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        (ptype, _, off, _, _, filesz, _, _) = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize)
        pos, end = off, off + filesz
        while ptype == 4 and pos + 12 <= end:
            nsz, dsz, typ = struct.unpack_from("<III", data, pos)
            nm = data[pos + 12:pos + 12 + nsz].rstrip(b"\0")
            dpos = pos + 12 + (nsz + 3) // 4 * 4
            if nm == name and typ == ntype:
                return data[dpos:dpos + dsz]
            pos = dpos + (dsz + 3) // 4 * 4
    return None

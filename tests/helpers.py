"""Test helpers: drgn programs over hand-made physical memory and the pieces
of hand-made maps (chunk pages, bitmaps, radix tables). Whole maps come from
tests/abi_encode.py, written from the ABI text."""

import struct

from kho_inspect import memory

PAGE = 4096


def u64le(n: int) -> str:
    """dtc bytestring for a raw little-endian u64 (KHO's encoding)."""
    return "[" + " ".join(f"{b:02x}" for b in n.to_bytes(8, "little")) + "]"


def mem(segments):
    return memory.PhysMemory(memory.program_from_segments(segments), "test")


def kho_dts(compatible: str, map_phys: int, subnodes: str = "") -> bytes:
    return (f'/dts-v1/;\n/ {{\n compatible = "{compatible}";\n'
            f' preserved-memory-map = {u64le(map_phys)};\n{subnodes}}};\n'
            ).encode()


def chunk_page(nxt: int, order: int, entries, num=None) -> bytes:
    """A kho-v1 chunk page with (phys_start, bitmap_phys) entries."""
    b = struct.pack("<QII", nxt, order, len(entries) if num is None else num)
    for ps, bm in entries:
        b += struct.pack("<QQ", ps, bm)
    return b.ljust(PAGE, b"\0")


def bitmap(bits, nbytes: int) -> bytes:
    x = 0
    for b in bits:
        x |= 1 << b
    return x.to_bytes(nbytes, "little")


def table(entries: dict) -> bytes:
    t = [0] * 512
    for i, v in entries.items():
        t[i] = v
    return struct.pack("<512Q", *t)

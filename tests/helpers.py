"""Test helpers: drgn programs over hand-made physical memory, images, and a
small test-only encoder used by property tests (hand-checked tests and real
kernel samples are the primary oracles)."""

import struct

from kho_inspect import memory
from kho_inspect.abi import radix, v1

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


# -- test-only encoders for property tests --------------------------------

def encode_v1(blocks, bitmap_bytes, base=0x100000):
    """Segments and map phys for a set of (phys, order) blocks, laid out the
    way __kho_preserve_order/kho_mem_serialize do."""
    nbits = bitmap_bytes * 8
    per_order = {}
    for phys, order in blocks:
        pfn_high = (phys >> 12) >> order
        per_order.setdefault(order, {}).setdefault(
            pfn_high // nbits, set()).add(pfn_high % nbits)
    segs, chunks, addr = [], [], base
    for order in sorted(per_order):
        items = sorted(per_order[order].items())
        for i in range(0, len(items), v1.KHOSER_BITMAP_SIZE):
            entries = []
            for idx, bitset in items[i:i + v1.KHOSER_BITMAP_SIZE]:
                bm_phys = addr
                addr += PAGE
                segs.append((bm_phys, bitmap(bitset, bitmap_bytes)
                             .ljust(PAGE, b"\0")))
                entries.append(((idx * nbits) << (order + 12), bm_phys))
            chunks.append((order, entries))
    if not chunks:
        return segs, 0
    chunk_addrs = [addr + i * PAGE for i in range(len(chunks))]
    for i, (order, entries) in enumerate(chunks):
        nxt = chunk_addrs[i + 1] if i + 1 < len(chunks) else 0
        segs.append((chunk_addrs[i], chunk_page(nxt, order, entries)))
    return segs, chunk_addrs[0]


def encode_radix(blocks, base=0x100000):
    nodes = {}          # path tuple -> dict or set (leaf)
    for phys, order in blocks:
        key = radix.encode_key(phys, order)
        path = tuple((key >> radix.level_shift(lv)) & 511
                     for lv in range(radix.ROOT_LEVEL, 0, -1))
        nodes.setdefault(path, set()).add(key & (radix.LEAF_BITS - 1))
    addr = [base]

    def alloc():
        a = addr[0]
        addr[0] += PAGE
        return a
    root = alloc()
    tables = {(): (root, {})}
    leaves = []
    for path, bitset in sorted(nodes.items()):
        for depth in range(1, len(path)):
            pre = path[:depth]
            if pre not in tables:
                tables[pre] = (alloc(), {})
                tables[pre[:-1]][1][pre[-1]] = tables[pre][0]
        leaf = alloc()
        tables[path[:-1]][1][path[-1]] = leaf
        leaves.append((leaf, bitmap(bitset, PAGE)))
    segs = [(a, table(e)) for a, e in tables.values()] + leaves
    return segs, root

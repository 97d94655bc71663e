"""The memmap scan's byte-column search against a plain look at every
``page->private`` (the definition of a marker), on adversarial struct pages."""

import random
import struct

import pytest

from kho_inspect.abi.common import KHO_PAGE_MAGIC, MAX_REPRESENTABLE_ORDER
from kho_inspect.walk import incoming as inc

MAGIC = struct.pack("<I", KHO_PAGE_MAGIC)


def reference(data, pfn0, psize, poff, magic):
    out = []
    for i in range(len(data) // psize):
        (v,) = struct.unpack_from("<Q", data, i * psize + poff)
        pfn = pfn0 + i
        if magic:
            if v >> 32 == 0x4B484F50:
                out.append((pfn << 12, v & 0xFFFFFFFF, 1))
        elif v and v <= 51 and pfn % (1 << v) == 0:
            out.append((pfn << 12, v, 1))
    return out


def memmap(rnd, n, psize, poff):
    data = bytearray(rnd.randbytes(n * psize))
    for i in range(n):
        at = i * psize + poff
        kind = rnd.randrange(8)
        if kind == 0:      # a marker, any order
            struct.pack_into("<II", data, at, rnd.randrange(1 << 32),
                             KHO_PAGE_MAGIC)
        elif kind == 1:    # the magic's top byte only
            data[at + 7] = KHO_PAGE_MAGIC >> 24
        elif kind == 2:    # the magic, shifted by a byte or in another field
            off = rnd.choice([at + 3, at + 5, at - 8, at + 8 - psize])
            if 0 <= off <= len(data) - 4:
                data[off:off + 4] = MAGIC
        elif kind == 3:    # a small value: a bare order, aligned or not
            struct.pack_into("<Q", data, at, rnd.randrange(0, 60))
        elif kind == 4:    # small low byte, junk above it
            struct.pack_into("<Q", data, at,
                             rnd.randrange(1, 52) | rnd.randrange(1, 256) << 8)
        elif kind == 5:
            struct.pack_into("<Q", data, at, 0)
    return bytes(data)


@pytest.mark.parametrize("psize,poff", [(64, 40), (80, 48), (64, 0), (64, 56)])
@pytest.mark.parametrize("magic", [True, False])
def test_column_search_matches_every_page(psize, poff, magic):
    rnd = random.Random(psize * 1000 + poff + magic)
    for pfn0 in (0, 0x100000, 0x1FFFF0):
        data = memmap(rnd, 4096, psize, poff)
        out = []
        find = inc._find_magic if magic else inc._find_orders
        find(data, pfn0, psize, poff, out)
        want = reference(data, pfn0, psize, poff, magic)
        assert [tuple(r) for r in out] == want
        assert want      # the data had markers to find


def test_reference_orders_bound():
    # the reference's bound is the ABI's: blocks of 4096 << order bytes
    assert MAX_REPRESENTABLE_ORDER == 51


@pytest.fixture
def synth_memmap(tmp_path, kdwarf):
    """A synthetic kernel (the newest synthetic DWARF, tests/variants.py)
    with 2 memmap sections of zeroed struct pages from pfn 0x20000."""
    import variants
    from walk_synth import SynthKernel
    d = variants.resolve(variants.newest(variants.SYNTH)[0], kdwarf)
    k = SynthKernel.of(d, tmp_path)
    pages = 2 * inc.CHUNK_PAGES
    k.memmap(0x20000, 0x20000 + pages)
    return k.prog, pages


def test_scan_reports_progress_on_a_tty_only(synth_memmap, monkeypatch):
    import io
    import sys

    from kho_inspect import progress

    prog, pages = synth_memmap
    monkeypatch.setattr(progress, "DELAY", 0)
    monkeypatch.setattr(progress, "INTERVAL", 0)

    class TTY(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((io.StringIO(), False), (TTY(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        scan = inc.scan_markers(prog, [(0x20000, 0x20000 + pages)], "test",
                                magic=inc.has_page_magic(prog))
        assert scan.pages == pages
        text = stream.getvalue()
        assert ("scanning the memmap" in text) == shown
        assert "\n" not in text
        if shown:
            assert text.endswith("\r") and "(100%)" in text

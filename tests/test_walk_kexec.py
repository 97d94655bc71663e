"""The loaded kexec image's release (walk/kexec.py) and ``check``'s use of
it when neither --next nor --next-vmlinux is given.

The kimage is built by hand here from the kernel's description of it
(include/linux/kexec.h, kernel/kexec_core.c: ``image->head`` starts a list
of ``kimage_entry_t`` words, phys | IND_DESTINATION 0x1 / IND_INDIRECTION
0x2 / IND_DONE 0x4 / IND_SOURCE 0x8, 511 entries and a link per page) and
from arch/x86/kernel/kexec-bzimage64.c's segments (boot_params with a copy
of the setup header, the protected-mode part of the bzImage); the expected
release of a real bzImage is its setup header's version string
(release_of_image), not the payload the walker decompresses.
"""

import bz2
import gzip
import json
import lzma
import os
import random
import struct

import drgn
import pytest

import variants
from walk_synth import PAGE, SynthKernel

from kho_inspect.check.next_kernel import release_of_image
from kho_inspect.cli import main
from kho_inspect.errors import KhoError
from kho_inspect.walk.kexec import loaded_kernel_release, payload_release

BANNER = b"Linux version 9.8.7-synth (nobody@nowhere) (gcc 1.0) #1 SMP\n"


# -- the payload: codecs, without a kernel ---------------------------------

def _reader(blob: bytes):
    return lambda off, n: blob[off:off + n]


def _plain(banner_at: int) -> bytes:
    rnd = random.Random(7)
    head = bytes(rnd.getrandbits(8) for _ in range(banner_at))
    return head + BANNER + bytes(rnd.getrandbits(8) for _ in range(3000))


@pytest.mark.parametrize("name,compress", [
    ("gzip", lambda d: gzip.compress(d, 9)),
    ("xz", lambda d: lzma.compress(d, lzma.FORMAT_XZ,
                                    check=lzma.CHECK_CRC32)),
    ("lzma", lambda d: lzma.compress(d, lzma.FORMAT_ALONE)),
    ("bzip2", bz2.compress)])
def test_payload_codecs(name, compress):
    blob = compress(_plain(200_000)) + b"\x00\x10\x00\x00"   # size_append
    assert payload_release(_reader(blob), len(blob)) == "9.8.7-synth"


def test_payload_banner_across_steps():
    """Stored gzip blocks: the banner straddles the 64 KiB step."""
    blob = gzip.compress(_plain((64 << 10) - 30), 0)
    assert payload_release(_reader(blob), len(blob)) == "9.8.7-synth"


@pytest.mark.parametrize("blob,msg", [
    (b"\x02\x21\x4c\x18" + bytes(100), "lz4-compressed"),
    (b"\x89LZO\0" + bytes(100), "lzo-compressed"),
    (b"MZ\0\0\0\0" + bytes(100), "not a compression"),
    (gzip.compress(b"no banner here" * 1000), "no 'Linux version' banner"),
    (gzip.compress(BANNER)[:10] + b"\xff" * 40, "does not decompress"),
])
def test_payload_refusals(blob, msg):
    with pytest.raises(KhoError, match=msg):
        payload_release(_reader(blob), len(blob))


def test_payload_zstd_without_stdlib_support():
    from kho_inspect.walk.kexec import _zstd
    if _zstd() is not None:
        pytest.skip("this Python decompresses zstd")
    blob = b"\x28\xb5\x2f\xfd" + bytes(100)
    with pytest.raises(KhoError, match="zstd-compressed: Python's standard"):
        payload_release(_reader(blob), len(blob))


# -- the kimage over hand-made memory ---------------------------------------

IND_DEST, IND_IND, IND_DONE, IND_SRC = 1, 2, 4, 8


def _put(k: SynthKernel, phys: int, data: bytes) -> None:
    """Page-at-a-time write (SynthKernel.write_phys goes byte by byte)."""
    assert phys % PAGE == 0
    for i in range(0, len(data), PAGE):
        k.phys[(phys + i) // PAGE] = bytearray(
            data[i:i + PAGE].ljust(PAGE, b"\0"))


class Loader:
    """Builds ``kexec_image`` the way kimage_load_normal_segment does:
    per segment an IND_DESTINATION, then one IND_SOURCE per page; source
    pages come from a scattered pool (not in destination order)."""

    def __init__(self, k: SynthKernel, src_base=0x200000000):
        self.k, self.entries, self.segs = k, [], []
        self.src_next = src_base
        self.cma: dict[int, int] = {}

    def segment(self, mem: int, data: bytes, memsz: int | None = None,
                cma: bool = False):
        memsz = memsz or (len(data) + PAGE - 1) // PAGE * PAGE
        self.segs.append((mem, len(data), memsz))
        if cma:
            self.cma[len(self.segs) - 1] = 0xFFFFEA0000000000 + mem // PAGE
            _put(self.k, mem, data.ljust(memsz, b"\0"))
            return
        n = memsz // PAGE
        # the pool hands pages out from its top: reversed in phys
        srcs = [self.src_next + (n - 1 - i) * PAGE for i in range(n)]
        self.src_next += n * PAGE + 0x100000
        self.entries.append(mem | IND_DEST)
        padded = data.ljust(memsz, b"\0")
        for i, s in enumerate(srcs):
            _put(self.k, s, padded[i * PAGE:(i + 1) * PAGE])
            self.entries.append(s | IND_SRC)

    def install(self, entries=None, head=None) -> None:
        k = self.k
        ents = list(self.entries if entries is None else entries)
        pages = []
        while True:
            pages.append(k.alloc())
            chunk, ents = ents[:511], ents[511:]
            words = chunk + ([IND_DONE] if not ents else [])
            if ents:
                words += [0] * (511 - len(chunk))
            pages_data = struct.pack(f"<{len(words)}Q", *words)
            _put(k, pages[-1], pages_data)
            if not ents:
                break
        for a, b in zip(pages, pages[1:]):
            k.write_phys(a + 511 * 8, struct.pack("<Q", b | IND_IND))
        t = k.prog.type("struct kimage")
        img = bytearray(drgn.sizeof(t))

        def put(member, value):
            struct.pack_into("<Q", img, drgn.offsetof(t, member), value)
        put("head", pages[0] | IND_IND if head is None else head)
        put("nr_segments", len(self.segs))
        for i, (mem, bufsz, memsz) in enumerate(self.segs):
            put(f"segment[{i}].mem", mem)
            put(f"segment[{i}].memsz", memsz)
            put(f"segment[{i}].bufsz", bufsz)
        for i, p in self.cma.items():
            put(f"segment_cma[{i}]", p)
        phys = k.alloc(bytes(img), size=len(img))
        k.set_u64("kexec_image", k.virt(phys))
        self.ind_pages = pages


@pytest.fixture(params=variants.params(), scope="module")
def dwarf(request, kdwarf):
    return variants.resolve(request.param, kdwarf)


@pytest.fixture
def kernel(dwarf, tmp_path):
    return SynthKernel.of(dwarf, tmp_path)


def _bzimage_segments(ld: Loader, bz: bytes) -> None:
    """kexec-bzimage64's segments: purgatory, boot_params (a zero page with
    the setup header copied to 0x1f1), the protected-mode part."""
    ld.segment(0x7FFF0000, os.urandom(3 * PAGE))            # purgatory
    params = bytearray(PAGE)
    end = 0x202 + bz[0x201]
    params[0x1F1:end] = bz[0x1F1:end]
    ld.segment(0x5000, bytes(params) + b"console=ttyS0\0")
    kern16 = ((bz[0x1F1] or 4) + 1) * 512
    ld.segment(0x1000000, bz[kern16:])


def test_nothing_loaded(kernel):
    kernel.zero("kexec_image")
    assert loaded_kernel_release(kernel.prog) is None


@pytest.mark.parametrize("build", variants.params(variants.BUILDS))
def test_real_bzimage_through_indirection_pages(build, kdwarf, tmp_path):
    """A vmtest build's own bzImage, loaded into a kimage of its own DWARF
    (builds only: a real payload)."""
    d = variants.resolve(build, kdwarf)
    if d.bzimage is None:
        pytest.skip(variants.needs_build(build.series) + " (no bzImage)")
    kernel = SynthKernel.of(d, tmp_path)
    path = d.bzimage
    bz = open(path, "rb").read()
    ld = Loader(kernel)
    _bzimage_segments(ld, bz)
    ld.install()
    assert len(ld.ind_pages) > 3            # the list spans linked pages
    want = release_of_image(path)           # the setup header's string
    assert want and loaded_kernel_release(kernel.prog) == want


def test_synthetic_bzimage_and_cma(kernel):
    """A made-up bzImage: header at 0x1f1, payload at 0x100 of the
    protected-mode part; the kernel segment in CMA (data at its mem)."""
    payload = gzip.compress(_plain(5000))
    hdr = bytearray(0x250)
    hdr[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", hdr, 0x248, 0x100, len(payload))
    kpart = bytes(0x100) + payload + b"\0" * 64
    for cma in (False, True):
        kernel.zero("kexec_image")
        ld = Loader(kernel)
        ld.segment(0x5000, bytes(hdr))
        ld.segment(0x3000000, kpart, cma=cma)
        ld.install()
        assert loaded_kernel_release(kernel.prog) == "9.8.7-synth", cma


def test_a_swapped_source_page_is_followed(kernel):
    """Destination order, not source order, decides the bytes: swapping
    two source entries swaps the pages the walker reads."""
    hdr = bytearray(2 * PAGE)
    hdr[0x202:0x206] = b"HdrS"
    payload = gzip.compress(b"x" * 50 + BANNER, 0)
    struct.pack_into("<II", hdr, 0x248, PAGE + 10, len(payload))
    kpart = bytes(PAGE + 10) + payload
    ld = Loader(kernel)
    ld.segment(0x5000, bytes(hdr[:PAGE]))
    ld.segment(0x3000000, kpart)
    ents = list(ld.entries)
    ld.install(ents)
    assert loaded_kernel_release(kernel.prog) == "9.8.7-synth"
    i = ents.index(0x3000000 | IND_DEST)
    ents[i + 1], ents[i + 2] = ents[i + 2], ents[i + 1]
    ld.install(ents)
    with pytest.raises(KhoError, match="no segment holds a compressed"):
        loaded_kernel_release(kernel.prog)


@pytest.mark.parametrize("damage,msg", [
    ("loop", "loops"),
    ("source-first", "source page before any destination"),
    ("short", "no source page for destination 0x3001000"),
    ("bad-head", "not an indirection entry"),
    ("unmapped-head", "indirection page 0x7770000"),
    ("no-header", "holds an x86 setup header"),
])
def test_malformed_images(kernel, damage, msg):
    hdr = bytearray(PAGE)
    hdr[0x202:0x206] = b"HdrS"
    payload = gzip.compress(BANNER)
    struct.pack_into("<II", hdr, 0x248, PAGE - 20, len(payload))
    ld = Loader(kernel)
    if damage != "no-header":
        ld.segment(0x5000, bytes(hdr))
    ld.segment(0x3000000, (bytes(PAGE - 20) + payload).ljust(2 * PAGE,
                                                             b"\0"))
    ents = list(ld.entries)
    head = None
    if damage == "source-first":
        ents = [e for e in ents if not e & IND_DEST]
    elif damage == "short":
        ents = ents[:-1]
    elif damage == "bad-head":
        head = 0x5000 | IND_SRC
    elif damage == "unmapped-head":
        head = 0x7770000 | IND_IND
    ld.install(ents, head=head)
    if damage == "loop":
        page = ld.ind_pages[0]
        kernel.write_phys(page + len(ents) * 8,
                          struct.pack("<Q", page | IND_IND))
    with pytest.raises(KhoError, match=msg):
        loaded_kernel_release(kernel.prog)


# -- check: where the next kernel's release comes from ----------------------

@pytest.fixture
def live(monkeypatch):
    """check on the 6.17 sample (kho-v1) as if a kernel with DWARF were at
    hand: the kernel-state walkers are stand-ins; *live.loaded* is what
    the loaded-image walker returns (an exception: raised)."""
    from kho_inspect.cli import check as clic
    from kho_inspect.check.tracker_map import CheckResult

    class Live:
        loaded = None
        asked = 0
        numa = 0
    st = Live()

    def loaded(prog):
        st.asked += 1
        if isinstance(st.loaded, Exception):
            raise st.loaded
        return st.loaded

    def nodes(prog):
        st.numa += 1
        return []
    monkeypatch.setattr(clic, "_kernel_state",
                        lambda src, args, extra: drgn.Program())
    monkeypatch.setattr("kho_inspect.walk.kexec.loaded_kernel_release",
                        loaded)
    monkeypatch.setattr("kho_inspect.walk.luo.luo_sessions", lambda p: [])
    monkeypatch.setattr("kho_inspect.walk.layout.system_ram",
                        lambda p: [(0, 1 << 40)])
    monkeypatch.setattr("kho_inspect.walk.layout.numa_nodes", nodes)
    monkeypatch.setattr("kho_inspect.walk.state.scratch_areas", lambda p: [])
    monkeypatch.setattr("kho_inspect.check.compare_views",
                        lambda p, v: CheckResult([], [], []))
    return st


def _check(capsys, *argv):
    rc = main(["check", "--sample", "6.17", *argv])
    out, err = capsys.readouterr()
    assert rc in (0, 1), err
    return rc, out


def _doc(capsys, *argv):
    rc, out = _check(capsys, *argv, "--json")
    doc = json.loads(out)
    return rc, doc, {f["id"] for f in doc["findings"]}


def test_check_uses_the_loaded_image(live, capsys):
    live.loaded = "7.3.4"
    rc, doc, ids = _doc(capsys)
    assert (doc["next"], doc["next_source"]) == ("7.3.4",
                                                 "loaded kexec image")
    assert "next-compatible" in ids and rc == 1     # kho-v1 into 7.3
    assert live.numa == 1                           # next-numa is asked
    _, out = _check(capsys)
    assert "next kernel 7.3.4 (the loaded kexec image)" in \
        " ".join(out.split())


def test_check_next_wins(live, capsys):
    live.loaded = "7.3.4"
    rc, doc, ids = _doc(capsys, "--next", "6.18.15")
    assert (doc["next"], doc["next_source"]) == ("6.18.15", "--next")
    assert "next-bitmap" in ids and "next-compatible" not in ids
    assert live.asked == 0


def test_check_next_vmlinux_wins(live, capsys, tmp_path):
    live.loaded = "7.3.4"
    vm = tmp_path / "vmlinux"
    vm.write_bytes(b"\x7fELF" + bytes(5000)
                   + b"Linux version 6.18.15 (x@y) #1\0")
    _, doc, ids = _doc(capsys, "--next-vmlinux", str(vm))
    assert (doc["next"], doc["next_source"]) == ("6.18.15",
                                                 "--next-vmlinux")
    assert "next-bitmap" in ids and live.asked == 0


def test_check_nothing_loaded(live, capsys):
    live.loaded = None
    rc, doc, ids = _doc(capsys)
    assert live.asked == 1
    assert doc["next"] is None and doc["next_source"] is None
    assert not {i for i in ids if i.startswith("next")}
    assert not any("next kernel" in f["message"] for f in doc["findings"])
    assert live.numa == 0 and rc == 0


@pytest.mark.parametrize("loaded,says", [
    (KhoError("the kernel payload is lz4-compressed: Python's standard "
              "library cannot decompress it"), "lz4-compressed"),
    ("5.10.0", "the loaded kexec image is 5.10.0"),
    # a banner longer than any uname -r (issue #16 s6): not in the note
    ("7.3." + "1" * 5000, "a release of 5004 characters")])
def test_check_unreadable_or_unknown_image_is_a_note(live, capsys, loaded,
                                                     says):
    live.loaded = loaded
    rc, doc, ids = _doc(capsys)
    notes = [f for f in doc["findings"] if "next kernel" in f["message"]]
    assert len(notes) == 1 and says in notes[0]["message"]
    assert len(notes[0]["message"]) < 300
    assert (notes[0]["id"], notes[0]["severity"]) == ("not-checked", "info")
    assert doc["next"] is None and rc == 0
    assert not {i for i in ids if i.startswith("next")}


def test_check_without_a_kernel_does_not_look(monkeypatch, capsys):
    """A handover image has no kexec_image to read."""
    def boom(prog):
        raise AssertionError("asked without a kernel")
    monkeypatch.setattr("kho_inspect.walk.kexec.loaded_kernel_release", boom)
    _, doc, _ = _doc(capsys)
    assert doc["next"] is None and doc["next_source"] is None

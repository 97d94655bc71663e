"""capture --hashes and verify (issue #8 section 5): the hashes note, its
chunking and round trip, and the classification of blocks from hand-written
evidence. Expected digests come from hashlib over the bytes written here;
expected states are written by hand from the rules in the docs."""

import hashlib
import json

import pytest

from conftest import run_dtc
from helpers import PAGE, kho_dts, mem
import variants
from walk_synth import SynthKernel
from kho_inspect.abi.common import KHO_PAGE_MAGIC
from kho_inspect.check.verify import (INCOMING, NOT_RECEIVED, NOTE_NO_MAGIC,
                                      SAME_KERNEL,
                                      Evidence, classify, verify)
from kho_inspect.cli import main
from kho_inspect.errors import KhoError
from kho_inspect.image import (BlockHashes, ImageHashes, chunk_spans,
                               hash_blocks, hash_span, read_image_hashes,
                               read_image_meta, validate_hashes, write_image)
from kho_inspect.memory import PhysMemory
from kho_inspect.ranges import Run
from kho_inspect.walk import incoming as inc
from test_decode import radix_hand_map

MiB = 1 << 20


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, out, err, pattern):
    assert rc == 2 and out == "", (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kho-inspect: error: "), err
    assert pattern in lines[0], lines[0]


def b2(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def pattern(n: int, seed: int) -> bytes:
    """n bytes that differ from chunk to chunk (a repeating 256-byte ramp
    shifted by *seed*)."""
    ramp = bytes((i + seed) & 0xFF for i in range(256))
    return (ramp * (n // 256 + 1))[:n]


# -- chunking and hashing -------------------------------------------------------

def test_a_9_mib_block_is_5_chunks_of_2_mib():
    spans = list(chunk_spans(0x40000000, 9 * MiB, 2 * MiB))
    assert spans == [(0x40000000, 2 * MiB), (0x40200000, 2 * MiB),
                     (0x40400000, 2 * MiB), (0x40600000, 2 * MiB),
                     (0x40800000, 1 * MiB)]


def test_hash_span_per_chunk_and_unreadable_chunk():
    data = pattern(9 * MiB, 7)
    # 9 MiB readable at 0x40000000, then a hole: the 6th chunk faults
    m = mem([(0x40000000, data)])
    got = hash_span(m, 0x40000000, 9 * MiB, 2 * MiB)
    want = [b2(data[i:i + 2 * MiB]) for i in range(0, 9 * MiB, 2 * MiB)]
    assert got == want and len(got) == 5
    got = hash_span(m, 0x40000000, 10 * MiB + 4096, 2 * MiB)
    assert got[:4] == want[:4]
    assert got[4] is None          # 0x40800000 + 2 MiB runs past the data
    assert got[5] is None


# -- the image: round trip, old images, bad notes --------------------------------

def _source_image(tmp_path, dtc, blocks_data):
    """A kho-v3 image holding the hand-made radix map (blocks 0x1000000,
    0x1001000, 0x1002000 order 0; 0x40000000 order 9) and the blocks'
    contents, as capture would read them from a kernel."""
    blob = run_dtc(dtc, kho_dts("kho-v3", 0x100000))
    segs = radix_hand_map() + [(0x400000, blob.ljust(PAGE, b"\0"))]
    segs += blocks_data
    path = str(tmp_path / "src.core")
    write_image(path, segs, {"generation": "kho-v3", "fdt_phys": 0x400000,
                             "release": "test"})
    return path


def test_capture_hashes_round_trip(tmp_path, dtc, capsys):
    small = pattern(3 * PAGE, 1)
    big = pattern(2 * MiB, 2)
    src = _source_image(tmp_path, dtc, [(0x1000000, small),
                                        (0x40000000, big)])
    out = str(tmp_path / "h.core")
    rc, text, err = run(capsys, "capture", "--core", src, "--hashes",
                        "-o", out)
    assert rc == 0, err
    assert "hashed 4 preserved blocks" in text
    h = read_image_hashes(out)
    assert h.chunk_bytes == 2 * MiB and h.algorithm == "blake2b-128"
    assert [(b.phys, b.order, b.chunks) for b in h.blocks] == [
        (0x1000000, 0, (b2(small[:PAGE]),)),
        (0x1001000, 0, (b2(small[PAGE:2 * PAGE]),)),
        (0x1002000, 0, (b2(small[2 * PAGE:]),)),
        (0x40000000, 9, (b2(big),))]
    # the image note and every other reader are as before
    assert read_image_meta(out)["generation"] == "kho-v3"
    a = json.loads(run(capsys, "map", "--core", src, "--json")[1])
    b = json.loads(run(capsys, "map", "--core", out, "--json")[1])
    assert a["ranges"] == b["ranges"]
    # without --hashes: no hashes note
    plain = str(tmp_path / "plain.core")
    assert run(capsys, "capture", "--core", src, "-o", plain)[0] == 0
    assert read_image_hashes(plain) is None


def test_capture_hashes_json_counts_unreadable_chunks(tmp_path, dtc, capsys):
    # the order-9 block's content is not in the source: one null hash
    src = _source_image(tmp_path, dtc, [(0x1000000, pattern(3 * PAGE, 1))])
    out = str(tmp_path / "h.core")
    rc, text, err = run(capsys, "capture", "--core", src, "--hashes", "-o",
                        out, "--json")
    assert rc == 0, err
    assert json.loads(text)["hashes"]["unreadable_chunks"] == 1
    assert read_image_hashes(out).blocks[-1].chunks == (None,)


def test_verify_refuses_an_image_without_hashes(tmp_path, dtc, capsys):
    src = _source_image(tmp_path, dtc, [])
    one_line_error(*run(capsys, "verify", src), "capture it with --hashes")


@pytest.mark.parametrize("make, pat", [
    (lambda p: p.write_bytes(b"not an elf"), "not an elf file"),
    (lambda p: None, "no such file"),
])
def test_verify_bad_image_is_one_line(tmp_path, capsys, make, pat):
    p = tmp_path / "x.core"
    make(p)
    rc, out, err = run(capsys, "verify", str(p))
    one_line_error(rc, out, err.lower(), pat)


def _with_hashes(tmp_path, hashes):
    path = str(tmp_path / "bad.core")
    write_image(path, [(0x400000, bytes(PAGE))],
                {"generation": "kho-v3", "fdt_phys": 0x400000}, hashes)
    return path


@pytest.mark.parametrize("blocks, pat", [
    ([BlockHashes(0x1000000, 10, ("0" * 32,))], "wants 2 chunk hashes"),
    ([BlockHashes(0x1000800, 0, ("0" * 32,))], "not an address aligned"),
    ([BlockHashes(0x1000000, 0, ("xyz",))], "32 hex digits"),
    ([BlockHashes(0x1000000, 0, ("0" * 32,))] * 2, "listed twice"),
])
def test_verify_damaged_hashes_note_is_one_line(tmp_path, capsys, blocks,
                                                pat):
    path = _with_hashes(tmp_path, ImageHashes(2 * MiB, blocks))
    one_line_error(*run(capsys, "verify", path), pat)


def test_validate_hashes_refuses_other_algorithms_and_chunk_sizes():
    with pytest.raises(KhoError, match="algorithm"):
        validate_hashes({"algorithm": "md5", "chunk_bytes": 4096,
                         "blocks": []}, "note")
    with pytest.raises(KhoError, match="power of two"):
        validate_hashes({"algorithm": "blake2b-128", "chunk_bytes": 5000,
                         "blocks": []}, "note")


# -- classification -----------------------------------------------------------

H0, H1, H2, H3 = "00" * 16, "11" * 16, "22" * 16, "33" * 16

#: The image: (phys, order) -> chunk hashes at capture.
IMAGE = ImageHashes(2 * MiB, [
    BlockHashes(0x1000000, 0, (H0,)),           # A
    BlockHashes(0x1001000, 0, (H0,)),           # B
    BlockHashes(0x1200000, 0, (H1,)),           # C
    BlockHashes(0x1300000, 0, (H1,)),           # D
    BlockHashes(0x1400000, 1, (H2,)),           # E
    BlockHashes(0x40000000, 10, (H2, H3)),      # F: 4 MiB, two chunks
])

#: Content now.
NOW = {0x1000000: [H0], 0x1001000: [H3], 0x1200000: [H1], 0x1300000: [H0],
       0x1400000: [H2], 0x40000000: [H2, H0]}

#: Still marked now: A, B, E (with another order), F, and one block the
#: image does not have.
MARKED = [Run(0x1000000, 0, 2), Run(0x1400000, 0, 1), Run(0x40000000, 10, 1),
          Run(0x2000000, 0, 1)]


def _classify(ev, now=NOW):
    res = classify(IMAGE, ev, lambda b: now[b.phys])
    return res, {(v.phys, v.state, v.matches) for v in res.blocks}


def test_incoming_with_magic():
    res, got = _classify(Evidence(INCOMING, "test", held=MARKED))
    assert got == {(0x1000000, "intact", True),
                   (0x1001000, "corrupted", False),
                   (0x1200000, "restored", True),
                   (0x1300000, "restored", False),
                   (0x1400000, "lost", None),
                   (0x40000000, "corrupted", False),
                   (0x2000000, "extra", None)}
    by = {v.phys: v for v in res.blocks}
    assert by[0x40000000].changed == [0x40200000]      # the second chunk
    assert by[0x1001000].changed == [0x1001000]
    assert by[0x1300000].label == "restored, changed"
    assert not res.ok
    assert {v.phys for v in res.failing} == {0x1001000, 0x1400000,
                                             0x40000000}


def test_incoming_all_well_is_ok():
    now = NOW | {0x1001000: [H0], 0x40000000: [H2, H3]}
    marked = [Run(0x1000000, 0, 2), Run(0x1400000, 1, 1),
              Run(0x40000000, 10, 1)]
    res, got = _classify(Evidence(INCOMING, "test", held=marked), now)
    assert res.ok
    assert got == {(0x1000000, "intact", True), (0x1001000, "intact", True),
                   (0x1200000, "restored", True),
                   (0x1300000, "restored", False),      # normal use
                   (0x1400000, "intact", True),
                   (0x40000000, "intact", True)}


def test_memblock_names_blocks_never_received():
    # reservations cover everything but D (0x1300000)
    reserved = [(0x1000000, 0x300000), (0x1400000, 0x2000),
                (0x40000000, 4 * MiB)]
    res, got = _classify(Evidence(INCOMING, "test", held=MARKED,
                                  reserved=reserved))
    assert (0x1300000, "lost", None) in got
    assert (0x1200000, "restored", True) in got


def test_a_block_half_reserved_is_lost():
    reserved = [(0x40000000, 2 * MiB)]          # F is 4 MiB
    res = classify(ImageHashes(2 * MiB, [IMAGE.blocks[-1]]),
                   Evidence(INCOMING, "t", held=MARKED[2:3],
                            reserved=reserved), lambda b: NOW[b.phys])
    assert [v.state for v in res.blocks] == ["lost"]


def test_same_kernel_unpreserved_is_lost():
    res, got = _classify(Evidence(SAME_KERNEL, "test", held=MARKED))
    states = {p: s for p, s, _ in got}
    assert states[0x1200000] == "lost"          # no longer tracked
    assert states[0x1300000] == "lost"
    assert states[0x1000000] == "intact"
    assert states[0x2000000] == "extra"
    assert "restored" not in states.values()


def test_not_received_everything_lost():
    res, got = _classify(Evidence(NOT_RECEIVED, "x", reason="not a KHO "
                                  "boot"))
    assert {s for _, s, _ in got} == {"lost"}
    assert len(got) == len(IMAGE.blocks)
    assert res.notes == ["not a KHO boot"]


def test_without_magic_nothing_is_told_but_content():
    # 6.16/6.17 without memblock: markers cannot be enumerated
    res, got = _classify(Evidence(INCOMING, "test", held=None))
    assert {s for _, s, _ in got} == {"unknown"}
    assert {p for p, _, m in got if m is False} == {0x1001000, 0x1300000,
                                                    0x40000000}
    assert not res.ok                  # changed, and cannot be ruled out
    assert res.evidence == {"held": None, "exact": None, "memblock": False,
                            "map_same": None}
    same = NOW | {0x1001000: [H0], 0x1300000: [H1],
                       0x40000000: [H2, H3]}
    assert _classify(Evidence(INCOMING, "t", held=None), same)[0].ok


def test_unreadable_memmap_and_content_are_unknown():
    now = NOW | {0x1000000: [None]}
    res, got = _classify(Evidence(INCOMING, "t", held=MARKED,
                                  unscanned=[(0x1200000, 0x1201000)]), now)
    assert (0x1000000, "unknown", None) in got        # content unreadable
    assert (0x1200000, "unknown", True) in got        # marker unreadable


# -- end to end over kernel DWARF and hand-made memory ------------------------

# every kernel of tests/variants.py (synthetic always, builds when cached)
@pytest.fixture(params=variants.params(), scope="module")
def dwarf(request, kdwarf):
    return variants.resolve(request.param, kdwarf)


#: Blocks preserved in the synthetic kernels, with their contents.
SBLOCKS = [(0x20000000, 0), (0x20001000, 0), (0x20004000, 2)]
#: Not in the image: marked in the next kernel all the same.
SEXTRA = (0x20010000, 0)


def _synth(d, tmp_path, dtc):
    """A kernel (a resolved variant *d*) whose outgoing tracker and FDT hold
    SBLOCKS, filled with content; returns (kernel, image meta, image
    hashes)."""
    from releases import release as abi_release
    release = d.release
    k = SynthKernel.of(d, tmp_path)
    gen = abi_release(release).generation
    k.preserve(SBLOCKS)
    if gen == "kho-v1":
        k.set_finalized(True)
        import drgn
        from abi_encode import encode_v1
        nbytes = drgn.sizeof(k.prog.type("struct kho_mem_phys_bits"))
        segs, mphys = encode_v1(SBLOCKS, nbytes, base=0x70000000)
        for phys, data in segs:
            k.write_phys(phys, data)
    else:
        from walk_synth import PAGE_OFFSET
        mphys = k.prog["kho_out"].radix_tree.root.value_() - PAGE_OFFSET
    fdt = k.set_fdt(run_dtc(dtc, kho_dts(gen, mphys)))
    k.mphys = mphys
    for i, (phys, order) in enumerate(SBLOCKS):
        k.write_phys(phys, pattern(PAGE << order, i))
    k.zero("kho_in")
    k.abi = abi_release(release)
    hashes = hash_blocks(PhysMemory(k.prog, "synthetic"),
                         [(p, o) for p, o in SBLOCKS])
    return k, {"fdt_phys": fdt, "release": release}, hashes


def _states(res):
    return {(v.phys, v.order): v.state for v in res.blocks}


def test_verify_in_the_capturing_kernel(dwarf, tmp_path, dtc):
    k, meta, hashes = _synth(dwarf, tmp_path, dtc)
    res = verify(k.prog, meta, hashes)
    assert res.mode == SAME_KERNEL and res.ok
    assert set(_states(res).values()) == {"intact"}
    k.write_phys(0x20004000 + 3 * PAGE, b"\xff" * 64)     # last page of it
    k.preserve(SBLOCKS[1:])                               # first unpreserved
    res = verify(k.prog, meta, hashes)
    assert _states(res) == {(0x20000000, 0): "lost",
                            (0x20001000, 0): "intact",
                            (0x20004000, 2): "corrupted"}
    assert not res.ok


def test_verify_in_the_next_kernel(dwarf, tmp_path, dtc, monkeypatch):
    k, meta, hashes = _synth(dwarf, tmp_path, dtc)
    k.set_fdt(b"")                  # this kernel's own outgoing FDT elsewhere
    k.set_u64("kho_in", meta["fdt_phys"], "fdt_phys")
    magic = k.abi.page_magic              # the ABI text: 6.18+
    assert inc.has_page_magic(k.prog) is magic
    lo, hi = 0x20000, 0x20020
    k.memmap(lo, hi)
    # first block still marked, second corrupted while marked, third
    # restored (marker cleared), and one marked block the image lacks
    for phys, order in (SBLOCKS[0], SBLOCKS[1], SEXTRA):
        k.page_private(phys >> 12, (KHO_PAGE_MAGIC << 32 if magic else 0)
                       | order)
    k.write_phys(0x20001000, b"\0" * 64)
    monkeypatch.setattr("kho_inspect.walk.preserved_markers",
                        lambda prog, max_pages=None: inc.scan_markers(
                            prog, [(lo, hi)], "test", magic=magic))
    res = verify(k.prog, meta, hashes, image_map=k.mphys)
    assert res.mode == INCOMING
    if not magic:
        # 6.16/6.17: bare orders; preserved and restored cannot be told
        assert set(_states(res).values()) == {"unknown"}
        assert [v.phys for v in res.blocks if v.matches is False] == \
            [0x20001000]
        return
    assert res.evidence["map_same"] is True
    assert verify(k.prog, meta, hashes, image_map=k.mphys + PAGE
                  ).evidence["map_same"] is False
    assert _states(res) == {(0x20000000, 0): "intact",
                            (0x20001000, 0): "corrupted",
                            (0x20004000, 2): "restored",
                            SEXTRA: "extra"}
    assert [v.matches for v in res.blocks if v.state == "restored"] == [True]


@pytest.mark.parametrize("variant", variants.params(
    variants.newest(variants.SYNTH)[:1] + variants.newest(variants.BUILDS)))
def test_verify_in_an_unrelated_kernel(variant, kdwarf, tmp_path, dtc):
    k, meta, hashes = _synth(variants.resolve(variant, kdwarf), tmp_path,
                             dtc)
    k.set_fdt(b"")                  # another outgoing FDT, not a KHO boot
    res = verify(k.prog, meta, hashes)
    assert res.mode == NOT_RECEIVED
    assert set(_states(res).values()) == {"lost"}
    assert "not booted through a KHO kexec" in res.notes[0]


def test_markers_without_magic_tell_nothing_but_content():
    # 6.16/6.17: the markers can be enumerated but carry only an order
    # (exact=False): "still marked" proves nothing, so no block is intact,
    # restored, lost or extra, whatever the markers say
    res, got = _classify(Evidence(INCOMING, "test", held=MARKED,
                                  exact=False))
    assert got == {(0x1000000, "unknown", True),
                   (0x1001000, "unknown", False),
                   (0x1200000, "unknown", True),
                   (0x1300000, "unknown", False),
                   (0x1400000, "unknown", True),
                   (0x40000000, "unknown", False)}
    assert NOTE_NO_MAGIC in res.notes
    assert res.evidence["exact"] is False
    assert {v.phys for v in res.failing} == {0x1001000, 0x1300000,
                                             0x40000000}

"""The shipped samples were captured from real kernels by the vmtests.

The oracles are what the kernel said, kept in tests/golden/ when the sample
was captured: test_kho's own folio list, read with drgn and the DWARF in the
guest (complete for the memory those folios cover, not for the whole map:
other clients preserve other memory), and the ABI's facts per release
(tests/releases.py). The guest's live decode in the golden file is the
tool's own earlier output: the capture must decode to it too (two sources
of one map agree), but it is not the oracle; every block of the map is
held against a second, naive reader of the same image (tests/naive_*.py).
"""

import json
import os

import pytest

from kho_inspect import samples
from kho_inspect.cli import main
from releases import release

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
NAMES = samples.available()


def test_every_generation_has_a_sample():
    gens = {release(n).generation for n in NAMES}
    assert {"kho-v1", "kho-v3", "kho-v4"} <= gens
    assert {release(n).bitmap_bytes for n in NAMES} >= {512, 4096}


def _blocks(ranges) -> set:
    """Every (phys, order) block of `map --json` ranges."""
    return {(r["phys"] + i * (4096 << r["order"]), r["order"])
            for r in ranges for i in range(r["count"])}


@pytest.mark.parametrize("name", NAMES)
def test_sample_matches_live_decode_and_test_kho(name, capsys):
    with open(os.path.join(GOLDEN, f"{name}.json")) as f:
        golden = json.load(f)
    assert main(["map", "--sample", name, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    abi = release(name)
    assert doc["generation"] == abi.generation
    assert doc["bitmap_bytes"] == abi.bitmap_bytes
    # test_kho's folios (data and FDT) are exactly the map over their memory:
    # each a block of its order, no other block inside any of them
    truth = {(f["phys"], f["order"]) for f in golden["test_kho_folios"]}
    extents = [(p, p + (4096 << o)) for p, o in truth]
    inside = {(p, o) for p, o in _blocks(doc["ranges"])
              if any(a < p + (4096 << o) and p < b for a, b in extents)}
    assert inside == truth
    # every block == what a naive reader found in the kernel's memory when
    # the capture was taken (samples promoted since it was recorded)
    if "blocks" in golden:
        assert sorted(_blocks(doc["ranges"])) == sorted(
            (p + i * (4096 << o), o) for p, o, n in golden["blocks"]
            for i in range(n))
    # the capture decodes to what the guest decoded live
    assert doc["ranges"] == golden["ranges"]
    # the decoder's reading of test_kho's blob is what test_kho kept, and
    # the blob is test_kho's FDT folio
    assert main(["fdt", "--sample", name, "--json"]) == 0
    sub = {s["name"]: s for s in json.loads(capsys.readouterr().out)
           ["subnodes"]}
    folios = sub["kho_test"]["content"]["folios"]
    want = [{"phys": f["phys"], "order": f["order"]}
            for f in golden["test_kho_folios"] if f["what"].startswith("folio")]
    assert folios == want
    (fdt,) = [f for f in golden["test_kho_folios"] if f["what"] == "fdt"]
    assert sub["kho_test"]["phys"] == fdt["phys"]


def _naive_reading(name, dtc):
    """Every block of the sample's map as the naive readers read it (tests/
    naive_radix.py, naive_v1.py: written from docs/abi.md, nothing from
    kho_inspect): pages from the image's PT_LOADs, the root FDT where the
    image's note says, its ``preserved-memory-map`` as dtc prints it, the
    bitmap size from the release's ABI facts (tests/releases.py)."""
    import re
    import elf_pages
    import naive_radix
    import naive_v1
    from conftest import run_dtc
    path = samples.path(name)
    read = elf_pages.reader(path)
    meta = json.loads(elf_pages.note(path, b"KHO_INSPECT", 0x4B484F31))
    fdt = meta["fdt_phys"]
    blob = read(fdt, int.from_bytes(read(fdt + 4, 4), "big"))
    dts = run_dtc(dtc, blob, "dtb", "dts").decode()
    compat = re.search(r'^\tcompatible = "([^"]*)"', dts, re.M).group(1)
    hi, lo = re.search(r"^\tpreserved-memory-map = <(\S+) (\S+)>;", dts,
                       re.M).groups()      # a little-endian u64, as cells
    root = int.from_bytes(int(hi, 16).to_bytes(4, "big")
                          + int(lo, 16).to_bytes(4, "big"), "little")
    if compat == "kho-v1":
        return naive_v1.read_map(read, root, release(name).bitmap_bytes)
    return naive_radix.read_map(lambda p: read(p, naive_radix.PAGE), root)


@pytest.mark.parametrize("name", NAMES)
def test_sample_decodes_to_the_naive_reading(name, capsys, dtc):
    """Every block of the decoder's map of the sample == what a second,
    naive reader finds in the same image: the whole map, not test_kho's
    part of it."""
    assert main(["map", "--sample", name, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    naive = _naive_reading(name, dtc)
    with open(os.path.join(GOLDEN, f"{name}.json")) as f:
        folios = {(f["phys"], f["order"])
                  for f in json.load(f)["test_kho_folios"]}
    assert folios <= set(naive)         # test_kho's, read with drgn
    assert sorted(_blocks(doc["ranges"])) == naive


@pytest.mark.parametrize("name", NAMES)
def test_capture_finds_a_debugfs_fdt_among_preserved_pages(name, tmp_path,
                                                           capsys):
    """An FDT read from a file (as from debugfs) carries no address; the root
    FDT page is itself preserved, so capture finds it in the map."""
    from kho_inspect.image import read_image_meta
    meta = read_image_meta(samples.path(name))
    assert main(["fdt", "--sample", name, "--json"]) == 0
    capsys.readouterr()
    from kho_inspect.cli.source import open_source
    from kho_inspect.decode import read_fdt_at

    class A:
        core, symbols, sample = None, None, name
    src = open_source(A)
    blob = read_fdt_at(src.memory(), meta["fdt_phys"], "root FDT", 4096)
    f = tmp_path / "fdt"
    f.write_bytes(blob)
    out = tmp_path / "again.core"
    assert main(["capture", "--sample", name, "--fdt", str(f), "-o",
                 str(out)]) == 0
    assert f"preserved page at 0x{meta['fdt_phys']:x}" in \
        capsys.readouterr().err
    assert read_image_meta(str(out))["fdt_phys"] == meta["fdt_phys"]

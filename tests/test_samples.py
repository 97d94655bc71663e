"""The shipped samples were captured from real kernels by the vmtests. Each
must decode to what the guest decoded live, and must contain every folio
test_kho itself (read with drgn and the kernel's DWARF) said it preserved."""

import json
import os

import pytest

from kho_inspect import samples
from kho_inspect.cli import main
from kho_inspect.ranges import blocks, runs_from_json

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
NAMES = samples.available()


def test_every_generation_has_a_sample():
    gens = set()
    for n in NAMES:
        with open(os.path.join(GOLDEN, f"{n}.json")) as f:
            gens.add((json.load(f)["generation"]))
    assert {"kho-v1", "kho-v3", "kho-v4"} <= gens


@pytest.mark.parametrize("name", NAMES)
def test_sample_matches_live_decode_and_test_kho(name, capsys):
    with open(os.path.join(GOLDEN, f"{name}.json")) as f:
        golden = json.load(f)
    assert main(["map", "--sample", name, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["generation"] == golden["generation"]
    assert doc["bitmap_bytes"] == golden["bitmap_bytes"]
    assert doc["ranges"] == golden["ranges"]
    preserved = set(blocks(runs_from_json(doc["ranges"])))
    for f in golden["test_kho_folios"]:
        assert (f["phys"], f["order"]) in preserved, f
    # the decoder's own reading of test_kho's blob agrees with the kernel
    assert main(["fdt", "--sample", name, "--json"]) == 0
    sub = {s["name"]: s for s in json.loads(capsys.readouterr().out)
           ["subnodes"]}
    folios = sub["kho_test"]["content"]["folios"]
    want = [{"phys": f["phys"], "order": f["order"]}
            for f in golden["test_kho_folios"] if f["what"].startswith("folio")]
    assert folios == want


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

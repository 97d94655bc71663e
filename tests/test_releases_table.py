"""``abi/releases.py``, every row and column, against docs/abi.md's text.

The expectation is read from the ABI reference (section 6.4's table, the
"(7.1+)" of section 7.4, the NUMA paragraph under it), written and kept by
hand; nothing here is taken from kho_inspect.
"""

import pathlib
import re

import pytest

from kho_inspect.abi import releases

ABI = (pathlib.Path(__file__).parent.parent / "docs" / "abi.md").read_text()

#: docs/abi.md 6.4's cells -> the table's values
COMPATIBLE = {"`kho-v1`": "kho-v1", "`kho-v3`": "kho-v3",
              "`kho-v4`": "kho-v4"}
BITMAPS = {"512 bytes": 512, "4096 bytes": 4096, "–": None}
BIG_ORDER = {"refused (NULL)": releases.REFUSE,
             "refused (WARN, NULL)": releases.REFUSE,
             "**unchecked**": releases.UNCHECKED}
TEST_KHO = {"inline array": "inline", "`kho_vmalloc`": "vmalloc"}
LUO = {"–": None, "FDT": "fdt", "raw `luo-v5`": "luo-v5"}


def _section(title: str) -> str:
    start = ABI.index(title)
    return ABI[start:ABI.index("\n### ", start + 1)]


def _doc_rows() -> dict:
    """{series: (compatible, bitmaps, big order, test_kho, luo)} from the
    table of section 6.4."""
    sec = _section("### 6.4 What each release accepts")
    rows = [line for line in sec.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    assert head == ["Receiving kernel", "Root compatible", "kho-v1 bitmaps",
                    "Order > 10 at restore", "test_kho `folios_info`",
                    "LUO blob"], "docs/abi.md 6.4 changed its columns"
    out = {}
    for line in rows[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = (COMPATIBLE[cells[1]], BITMAPS[cells[2]], BIG_ORDER[cells[3]],
               TEST_KHO[cells[4]], LUO[cells[5]])
        for s in cells[0].split(","):
            out[s.strip()] = row
    return out


DOC = _doc_rows()


def _since(pattern: str) -> tuple[int, int]:
    m = re.search(pattern, " ".join(ABI.split()))
    assert m, f"docs/abi.md no longer says {pattern!r}"
    return tuple(int(x) for x in m.group(1).split("."))


#: docs/abi.md 7.4's heading and 6.4's NUMA paragraph
KEXEC_METADATA_SINCE = _since(r"### 7\.4 kexec-metadata \((\d+\.\d+)\+\)")
NUMA_SPLIT_SINCE = _since(r"From (\d+\.\d+), `kho_restore_pages` also "
                          r"splits a run without the NUMA adjustment")


def test_the_same_releases_as_the_abi_text():
    assert set(DOC) == set(releases.READERS)
    # every KHO series from the first (6.16) to the last verified (7.3)
    assert set(DOC) == {"6.16", "6.17", "6.18", "6.19", "7.0", "7.1", "7.2",
                        "7.3"}


@pytest.mark.parametrize("series", sorted(DOC))
def test_each_row_as_the_abi_text_says(series):
    r = releases.READERS[series]
    assert r.series == series
    assert (r.compatible, r.bitmap_bytes, r.big_order, r.test_kho_info,
            r.luo) == DOC[series]
    v = tuple(int(x) for x in series.split("."))
    assert r.kexec_metadata == (v >= KEXEC_METADATA_SINCE)
    assert r.restore_skips_numa_split == (v >= NUMA_SPLIT_SINCE)


def test_section_2_1_agrees_on_the_order_check():
    # "Restore refuses order > 10": yes up to kho-v2, no for kho-v3/v4
    line = next(line for line in _section("### 2.1 At a glance")
                .splitlines() if line.startswith("| Restore refuses"))
    cells = [c.strip() for c in line.strip("|").split("|")][1:]
    gens = ["kho-v1", "kho-v1", "kho-v1", "kho-v2", "kho-v3", "kho-v4"]
    refuses = {g: c == "yes" for g, c in zip(gens, cells)}
    for r in releases.READERS.values():
        assert (r.big_order == releases.REFUSE) == refuses[r.compatible]


@pytest.mark.parametrize("release, series", [
    ("7.3.4", "7.3"), ("6.18.15-amd64", "6.18"), ("6.16", "6.16"),
    ("7.0.0-rc1", "7.0"), (" 6.19.11 ", "6.19"), ("10.02.1", "10.2"),
    ("linux-7.3", None), ("", None), ("7", None),
    ("7.3." + "1" * 61, None),                 # 65 characters: no kernel's
])
def test_series(release, series):
    assert releases.series(release) == series


def test_the_longest_release_a_kernel_can_have():
    # struct new_utsname's release is char[65]: 64 characters and the NUL
    r = "7.3.4-" + "x" * 58
    assert len(r) == 64 and releases.series(r) == "7.3"


@pytest.mark.parametrize("release, series", [
    ("6.16.1", "6.16"), ("6.17.8", "6.17"), ("7.0.3", "7.0"),
    ("7.3.4-amd64", "7.3"),
    ("6.15.9", None), ("7.4.1", None), ("5.10.0", None), ("nonsense", None),
])
def test_reader(release, series):
    r = releases.reader(release)
    assert (r.series if r else None) == series

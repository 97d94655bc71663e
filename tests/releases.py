"""What the ABI text says about each kernel release the tests meet.

The independent expectation for tests that would otherwise take it from
kho_inspect's own probing (the walker's tracker layout, the generation and
kho-v1 bitmap size of a sample). Rows are copied from the ABI reference's
comparison table and its "outgoing tracker" sections, not derived from code.
A release without a row fails the test that needs it: add the row from the
ABI text, never from the tool's output.
"""

from typing import NamedTuple


class Release(NamedTuple):
    generation: str            # root FDT compatible
    bitmap_bytes: int | None   # kho-v1 sizeof(struct kho_mem_phys_bits)
    tracker: str               # the outgoing tracker, as a C expression
    page_magic: bool           # head-page marker: KHOP magic + order, or
                               # the order alone (docs/abi.md 2.1, 6.1)


_RADIX = "kho_out.radix_tree.root"

#: Keyed by exact release first, then by series. 6.17 is keyed by release:
#: the 4 KiB-bitmap fix is Cc: stable, so a later 6.17.y may differ.
RELEASES = {
    "6.17.8": Release("kho-v1", 512, "kho_out.ser.track", False),
    "6.18": Release("kho-v1", 4096, "kho_out.ser.track", True),
    "6.19": Release("kho-v1", 4096, "kho_out.track", True),
    "7.0": Release("kho-v1", 4096, "kho_out.track", True),
    "7.1": Release("kho-v3", None, _RADIX, True),
    "7.2": Release("kho-v4", None, _RADIX, True),
    "7.3": Release("kho-v4", None, _RADIX, True),
}


def release(name: str) -> Release:
    """The row for kernel release *name* (``6.18.15``, ``7.3.4``...)."""
    for key in (name, ".".join(name.split(".")[:2])):
        if key in RELEASES:
            return RELEASES[key]
    raise KeyError(f"kernel release {name} has no row in tests/releases.py: "
                   "add one from the ABI text")

"""What each kernel release does with a handover it receives: the facts
``check --next`` needs (docs/abi.md sections 2.3, 6.2, 6.4 and 7).

A release is a *reader* here: which root compatible it accepts, how it
reads kho-v1 bitmaps, what it does with a block of order above
``MAX_PAGE_ORDER`` at restore, and which client formats its own clients
read. Rows are per series (``major.minor``); a point release that got a
stable backport may differ (the kho-v1 bitmap fix is Cc: stable).
"""

from __future__ import annotations

import dataclasses
import re

from . import radix, v1

#: What kho_restore_folio/pages do with order > MAX_PAGE_ORDER.
REFUSE = "refuse"           # 6.16-7.0: NULL (6.18-7.0 also WARN)
UNCHECKED = "unchecked"     # 7.1-7.3: no bound, reaches prep_compound_page


@dataclasses.dataclass(frozen=True)
class Reader:
    """One kernel series as the receiver of a handover."""

    series: str
    #: the only root compatible it accepts (fdt_node_check_compatible)
    compatible: str
    #: REFUSE or UNCHECKED, for order > MAX_PAGE_ORDER at restore
    big_order: str
    #: kho_restore_pages splits runs without the NUMA adjustment that
    #: kho_preserve_pages applies (7.1-7.3, docs/abi.md section 5.4)
    restore_skips_numa_split: bool
    #: test_kho's folios_info: "inline" u64 array (6.16/6.17) or "vmalloc"
    test_kho_info: str
    #: LUO blob it reads: None (no LUO), "fdt" (6.19-7.1), "luo-v5" (7.2+)
    luo: str | None
    #: reads the kexec-metadata node (7.1+)
    kexec_metadata: bool

    @property
    def bitmap_bytes(self) -> int | None:
        """kho-v1 sizeof(struct kho_mem_phys_bits) it assumes (one place:
        :func:`~kho_inspect.abi.v1.bitmap_bytes_for_release`); None for a
        radix reader."""
        return (v1.bitmap_bytes_for_release(self.series)
                if self.compatible == v1.COMPATIBLE else None)


_V3, _V4 = radix.COMPATIBLES[1], radix.COMPATIBLES[2]

READERS = {r.series: r for r in (
    # Since 6.16 (commit fc33e4b44b27): kho-v1, 512-byte bitmaps,
    # kho_restore_folio refuses order > MAX_PAGE_ORDER.
    Reader("6.16", v1.COMPATIBLE, REFUSE, False, "inline", None,
           False),
    Reader("6.17", v1.COMPATIBLE, REFUSE, False, "inline", None,
           False),
    # 6.18: 4 KiB bitmaps ("kho: increase metadata bitmap size to
    # PAGE_SIZE"); test_kho's folios_info becomes a kho_vmalloc.
    Reader("6.18", v1.COMPATIBLE, REFUSE, False, "vmalloc", None,
           False),
    # 6.19: LUO arrives (an FDT blob).
    Reader("6.19", v1.COMPATIBLE, REFUSE, False, "vmalloc", "fdt",
           False),
    Reader("7.0", v1.COMPATIBLE, REFUSE, False, "vmalloc", "fdt",
           False),
    # 7.1: radix map (kho-v3), kexec-metadata; the order check at restore
    # is gone and restore skips the NUMA split.
    Reader("7.1", _V3, UNCHECKED, True, "vmalloc", "fdt", True),
    # 7.2: kho-v4 with the kho_block ABI; LUO becomes a raw luo_ser.
    Reader("7.2", _V4, UNCHECKED, True, "vmalloc", "luo-v5", True),
    Reader("7.3", _V4, UNCHECKED, True, "vmalloc", "luo-v5", True),
)}


#: __NEW_UTS_LEN: ``struct new_utsname``'s release is ``char[65]``, so a
#: kernel's ``uname -r`` (and its linux_banner's release) has at most 64
#: characters; a longer string is no kernel's.
UTS_RELEASE_MAX = 64


def series(release: str) -> str | None:
    """``"7.3.4"`` or ``"6.18.15-amd64"`` -> ``"7.3"``; None if *release*
    does not start with a version, or is longer than any kernel's."""
    if len(release) > UTS_RELEASE_MAX:
        return None
    m = re.match(r"(\d+)\.(\d+)", release.strip())
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


def reader(release: str) -> Reader | None:
    """The :class:`Reader` row for kernel *release*, or None for a series
    this table does not describe (before 6.16 there is no KHO; after 7.3
    nothing was verified)."""
    s = series(release)
    return READERS.get(s) if s else None

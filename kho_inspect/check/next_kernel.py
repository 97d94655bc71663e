"""Will the next kernel take this handover? ``check --next RELEASE``.

The facts per receiving release are :data:`kho_inspect.abi.releases.READERS`;
this module compares a decoded handover against one of them. The release
comes from the user (``--next 7.3.4``), from a kernel image
(:func:`release_of_image`: a bzImage's setup header, or a vmlinux's
``linux_banner``) or from the image loaded with kexec
(:func:`kho_inspect.walk.kexec.loaded_kernel_release`).
"""

from __future__ import annotations

import bisect

from ..abi import releases
from ..abi.common import MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE, split_pages
from ..errors import KhoError
from ..ranges import Run, human_size
from ..walk import kexec as _kexec
from ..walk.kexec import BANNER as _BANNER, HDRS_AT as _HDRS_AT
from .findings import Finding

#: bzImage setup header: a u16 at 0x20e is the offset (from 0x200) of the
#: version string (Documentation/arch/x86/boot.rst).
_VERSION_PTR_AT = 0x20E
#: Bytes of a vmlinux searched at once for its banner.
_SCAN_STEP = 1 << 24


def check_release(release: str, where: str) -> str:
    """*release* if it can be a kernel's ``uname -r``
    (:data:`~kho_inspect.abi.releases.UTS_RELEASE_MAX` characters at most),
    else a one-line KhoError naming *where* it came from, the string cut
    short."""
    if len(release) > releases.UTS_RELEASE_MAX:
        raise KhoError(f"{where}: a release of {len(release)} characters "
                       f"({release[:24]!r}...) is no kernel's: uname -r "
                       f"holds at most {releases.UTS_RELEASE_MAX}")
    return release


def release_of_image(path: str) -> str:
    """The ``uname -r`` of the kernel in *path*: an x86 bzImage (its setup
    header names the version) or an uncompressed vmlinux (its
    ``linux_banner``).

    :raises KhoError: unreadable, or no version found.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(0x10000)
            if head[_HDRS_AT:_HDRS_AT + 4] == b"HdrS":
                ptr = int.from_bytes(head[_VERSION_PTR_AT:_VERSION_PTR_AT + 2],
                                     "little") + 0x200
                ver = head[ptr:ptr + 256].split(b"\0", 1)[0]
                if ver and not ver.split():
                    raise KhoError(f"{path}: the bzImage's setup-header "
                                   f"version string (at 0x{ptr:x}) is blank")
                if ver:
                    return check_release(
                        ver.split()[0].decode(errors="replace"),
                        f"{path}: setup-header version")
            if head[:4] == b"\x7fELF":
                return check_release(_banner_release(f, path),
                                     f"{path}: linux_banner")
    except OSError as e:
        raise KhoError(f"{path}: {e.strerror}") from None
    raise KhoError(f"{path}: neither a bzImage with a version string nor a "
                   "vmlinux with a 'Linux version' banner")


def _banner_release(f, path: str) -> str:
    """The release in the first :data:`~kho_inspect.walk.kexec.
    KERNEL_IMAGE_SIZE` bytes of the vmlinux open as *f* (its loadable part,
    ``linux_banner`` among it, comes before the debug sections)."""
    limit = _kexec.KERNEL_IMAGE_SIZE
    f.seek(0)
    tail, done = b"", 0
    while done < limit and (chunk := f.read(min(_SCAN_STEP, limit - done))):
        m = _BANNER.search(tail + chunk)
        if m:
            return m.group(1).decode(errors="replace")
        tail, done = chunk[-256:], done + len(chunk)
    raise KhoError(f"{path}: an ELF file with no 'Linux version' banner in "
                   f"its first {human_size(limit)} (a kernel image is no "
                   "larger: KERNEL_IMAGE_SIZE)" if done >= limit else
                   f"{path}: an ELF file with no 'Linux version' banner")


def reader_for(release: str) -> releases.Reader:
    """The receiving kernel's row, or a one-line error naming the series
    kho_inspect knows."""
    check_release(release, "--next")
    r = releases.reader(release)
    if r is None:
        raise KhoError(f"--next {release}: kho_inspect knows what "
                       f"{', '.join(releases.READERS)} do with a handover; "
                       f"not {releases.series(release) or release!r}")
    return r


def numa_findings(release: str, claims, runs, nodes) -> list[Finding]:
    """``next-numa``: every page run a client claims (a claim without an
    order: ``kho_preserve_pages``) that crosses a boundary of *nodes*
    (``(nid, start_pfn, end_pfn)``), walked the way *release*'s
    ``kho_restore_pages`` walks it (no node split) over the blocks the map
    really holds: the blocks the walk steps over stay reserved and marked
    while the caller gets the run; a walk that lands on no block head
    fails (NULL)."""
    starts = [n[1] for n in nodes]

    def node_of(pfn: int):
        i = bisect.bisect_right(starts, pfn) - 1
        return nodes[i][0] if i >= 0 and pfn < nodes[i][2] else None

    out = []
    for c in claims:
        if c.order is not None or c.size <= PAGE_SIZE:
            continue
        first, nr = c.phys >> PAGE_SHIFT, c.size >> PAGE_SHIFT
        last = first + nr - 1
        if node_of(first) == node_of(last):
            continue
        heads = {}
        for p, o, n in runs:
            bs = 1 << o
            lo, hi = p >> PAGE_SHIFT, (p >> PAGE_SHIFT) + n * bs
            if hi <= first or lo > last:
                continue
            i = max(0, (first - lo + bs - 1) // bs)
            while i < n and lo + i * bs <= last:
                heads[lo + i * bs] = o
                i += 1
        where = next(pfn for pfn in range(first, last + 1)
                     if node_of(pfn) != node_of(first))
        head = (f"0x{c.phys:x} +{nr} pages ({c.owner} {c.what}) crosses "
                f"from node {node_of(first)} to node {node_of(last)} at "
                f"0x{where << PAGE_SHIFT:x}: {release}'s kho_restore_pages "
                "walks it without the node split")
        visited = []
        for pfn, _ in split_pages(first, nr):
            if pfn not in heads:
                out.append(Finding(
                    "next-numa", f"{head} and lands on 0x"
                    f"{pfn << PAGE_SHIFT:x}, no block head: the restore "
                    "fails (NULL)", pfn << PAGE_SHIFT, owner=c.owner))
                break
            visited.append(pfn)
        else:
            skipped = sorted(set(heads) - set(visited))
            if skipped:
                out.append(Finding(
                    "next-numa", f"{head}: it steps over "
                    + ", ".join(f"0x{p << PAGE_SHIFT:x} order {heads[p]}"
                                for p in skipped[:4])
                    + (f" and {len(skipped) - 4} more" if len(skipped) > 4
                       else "")
                    + (": it stays" if len(skipped) == 1 else ": they stay")
                    + " reserved and marked while the caller gets the whole "
                    "run", skipped[0] << PAGE_SHIFT,
                    heads[skipped[0]], len(skipped), c.owner))
    return out


def next_findings(h, release: str, runs, index=None, claims=(),
                  nodes=None) -> list[Finding]:
    """What kernel *release* will do with handover *h* (its map's *runs*):
    refuse it whole (compatible), misread it (kho-v1 bitmap size), refuse or
    pass unchecked blocks above MAX_PAGE_ORDER, restore a page run across a
    NUMA node boundary incompletely (*claims* and *nodes*, ``(nid,
    start_pfn, end_pfn)``; None: not known), or not understand a client's
    sub-node format."""
    r = reader_for(release)
    own = index.of if index else (lambda p, e=None: None)
    out = []
    if h.generation != r.compatible:
        out.append(Finding(
            "next-compatible", f"{release} accepts only {r.compatible!r}; "
            f"this handover is {h.generation!r}: it will refuse the whole "
            "handover and every preserved block is lost"))
        return out          # nothing else is read
    mine = h.map.bitmap_bytes if h.map else None
    if r.bitmap_bytes and mine and mine != r.bitmap_bytes:
        out.append(Finding(
            "next-bitmap", f"{release} reads kho-v1 bitmaps of "
            f"{r.bitmap_bytes} bytes; this map was written with {mine}-byte "
            "bitmaps: both say 'kho-v1', and it will reserve the wrong "
            "pages", h.map.map_phys))
    for p, o, c in sorted(runs):
        if o <= MAX_PAGE_ORDER:
            continue
        run = Run(p, o, c)
        fate = (f"{release} refuses to restore them (kho_restore_* return "
                "NULL); the memory stays reserved" if r.big_order ==
                releases.REFUSE else f"{release} restores them with no order "
                "check: the order reaches prep_compound_page (folios) or the "
                "page loop (page runs) unchecked")
        out.append(Finding(
            "next-order", f"0x{p:x} order {o}"
            + (f" (x{c})" if c > 1 else "") + f": {human_size(run.block)} "
            f"blocks above MAX_PAGE_ORDER {MAX_PAGE_ORDER}: {fate}",
            p, o, c, own(p, run.end)))
    if r.restore_skips_numa_split:
        if nodes is None:
            out.append(Finding(
                "not-checked", "numa: the node boundaries are known only "
                "with the kernel's debug info (live or vmcore)"))
        elif len(nodes) > 1:
            out += numa_findings(release, claims, runs, nodes)
    for s in h.subnodes:
        c = s.content or {}
        if "folios_info_vmalloc" in c and r.test_kho_info == "inline":
            out.append(Finding(
                "next-client", f"{s.name}: folios_info is a kho_vmalloc "
                f"descriptor; {release}'s test_kho reads an inline array and "
                "will fail its checks", s.phys, owner=s.name))
        elif s.name == "kho_test" and c.get("folios") and \
                "folios_info_vmalloc" not in c and \
                r.test_kho_info == "vmalloc":
            out.append(Finding(
                "next-client", f"{s.name}: folios_info is an inline array; "
                f"{release}'s test_kho reads it as a kho_vmalloc descriptor",
                s.phys, owner=s.name))
        if s.name == "LUO" and c:
            mine = "luo-v5" if c.get("format") == "raw" else "fdt"
            if r.luo != mine:
                out.append(Finding(
                    "next-client", f"LUO: this handover has a {mine} blob; "
                    + (f"{release} has no LUO" if r.luo is None else
                       f"{release}'s LUO reads a {r.luo} blob"), s.phys,
                    owner=s.name))
        if s.name == "kexec-metadata" and not r.kexec_metadata:
            out.append(Finding(
                "next-client", f"kexec-metadata: {release} does not read it "
                "(harmless: the node is ignored)", s.phys, owner=s.name,
                severity="info"))
    return out

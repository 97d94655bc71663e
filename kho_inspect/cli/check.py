"""``kho-inspect check``: the invariants of a handover, its owners, the
next kernel's view of it, and the kernel's tracker against its map.

Works on every source ``map`` reads. With the kernel's DWARF (live, or a
vmcore) it adds System RAM, the scratch areas and the tracker; on a
handover image it checks what the decoder alone can see and says what it
could not check. ``--incoming`` looks at a KHO-booted kernel: what is still
preserved and not restored, and whose it is.
"""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from ..errors import KhoError, MemoryFault
from .report import emit, hexa, human_size, note

EPILOG = """\
examples:
  kho-inspect check                        # before a kexec (root); the
                                           # next kernel: the loaded image
  kho-inspect check --next 7.3.4           # will 7.3.4 take this handover?
  kho-inspect check --next-vmlinux /boot/vmlinuz-7.3.4
  kho-inspect check --sample 6.17 --next 6.18
  kho-inspect check --core vmcore -s vmlinux --json
  kho-inspect check --incoming             # after a KHO boot: unrestored
                                           # blocks and their owners
exit status: 0 nothing at error level, 1 an error-level finding, 2 the
check could not run
"""


def _kernel_state(src, args, extra: list):
    """The program with DWARF, or None (and a not-checked finding) when the
    source has none."""
    from ..check.findings import Finding
    if src.meta is not None:
        return None
    try:
        return src.debug_program()
    except KhoError as e:
        extra.append(Finding("not-checked", f"kernel state (RAM, scratch, "
                             f"tracker): no debug info: {e}"))
        return None


def _views(prog, views, required: bool, extra: list) -> None:
    """The tracker/map diff as ``views`` findings; when the comparison
    cannot be made, a not-checked note, or (*required*: ``--views`` given)
    the error."""
    from ..check import compare_views
    from ..check.findings import Finding
    try:
        res = compare_views(prog, views)
    except KhoError as e:
        if required:
            raise
        extra.append(Finding("not-checked", f"views: tracker vs map: {e}"))
        return
    for d in res.differences:
        r = d.run
        extra.append(Finding("views", f"{d}", r.phys, r.order, r.count))
    for n in res.notes:
        note(n)


def _incoming_findings(prog, h, args, extra: list):
    """Still-marked (preserved, not restored) blocks of a KHO boot, as
    ``unrestored`` findings with their owners."""
    from ..check import owners as own
    from ..check.findings import Finding
    from ..walk.incoming import preserved_markers
    limit = None if args.scan_limit == 0 else args.scan_limit
    scan = preserved_markers(prog, **({} if args.scan_limit is None
                                      else {"max_pages": limit}))
    if scan.markers is None:
        extra.append(Finding("not-checked", f"unrestored: {scan.note}"))
        return [], []
    if scan.truncated_at_pfn is not None:
        extra.append(Finding("not-checked", "unrestored: the scan stopped at "
                             f"pfn 0x{scan.truncated_at_pfn:x} "
                             "(--scan-limit)"))
    owned = own.attribute(scan.markers, own.claims(h, prog))
    for o in owned:
        r = o.run
        where = (f"0x{r.phys:x} order {r.order}"
                 + (f" (x{r.count})" if r.count > 1 else ""))
        if o.owners:
            extra.append(Finding(
                "unrestored", f"{where}: preserved, not restored, owned by "
                f"{' and '.join(o.owners)}", r.phys, r.order, r.count,
                ",".join(o.owners)))
        else:
            extra.append(Finding(
                "unclaimed", f"{where}: preserved, not restored, and no "
                "incoming sub-node claims it", r.phys, r.order, r.count))
    return scan.markers, owned


#: ``next_source`` when the release was read from ``kexec_image``.
LOADED_IMAGE = "loaded kexec image"


def _next_kernel(prog, args, extra: list) -> tuple[str | None, str | None]:
    """The next kernel's release and where it came from: ``--next``,
    ``--next-vmlinux``, or (neither given, the kernel's DWARF at hand) the
    image loaded with ``kexec -l``/``kexec -s -l``; ``(None, None)`` when
    none. A loaded image that cannot be read, or whose release kho_inspect
    does not know, is a not-checked note."""
    from ..check.findings import Finding
    if args.next:
        return args.next, "--next"
    if args.next_vmlinux:
        from ..check.next_kernel import release_of_image
        return release_of_image(args.next_vmlinux), "--next-vmlinux"
    if prog is None:                            # no kernel to ask
        return None, None
    from ..abi import releases
    from ..check.next_kernel import check_release
    from ..walk.kexec import loaded_kernel_release
    try:
        rel = loaded_kernel_release(prog)
        if rel is not None:
            check_release(rel, "its linux_banner")
    except KhoError as e:
        extra.append(Finding("not-checked", f"next kernel: the loaded kexec "
                             f"image: {e}"))
        return None, None
    if rel is not None and releases.reader(rel) is None:
        extra.append(Finding(
            "not-checked", f"next kernel: the loaded kexec image is {rel}; "
            f"kho_inspect knows what {', '.join(releases.READERS)} do with a "
            "handover"))
        return None, None
    return rel, LOADED_IMAGE if rel else None


def run_check(args):
    """Decode, gather kernel state, check: the
    :class:`~kho_inspect.check.handover.Report`, the document's head and
    where the next kernel's release came from."""
    from ..check.handover import Report, check_handover
    from ..check.tracker_map import VIEWS
    from ..decode import decode_handover
    from ..memory import may_be_filtered
    from .source import bitmap_bytes, open_source, root_fdt
    src = open_source(args)
    root = root_fdt(src, args)
    mem = src.memory()
    extra: list = []
    prog = _kernel_state(src, args, extra)
    if args.incoming:
        if prog is None:
            raise KhoError("check --incoming needs the kernel's debug info: "
                           "the preserved blocks left are found by their "
                           "page markers")
        if root.phys is None:           # debugfs gives no address
            from .. import walk
            root.phys = walk.incoming_fdt_phys(prog)
        h = decode_handover(root.blob, mem, fdt_phys=root.phys,
                            with_map=False)
        from ..check.invariants import subnode_findings
        # After boot a client may have freed or reused what it restored:
        # what no longer decodes is a note (its blocks go unattributed).
        extra += subnode_findings(h, severity="info")
        runs, owned = _incoming_findings(prog, h, args, extra)
        rep = Report(extra, owned, [])
        from ..check.findings import SEVERITIES
        order = {s: i for i, s in enumerate(SEVERITIES)}
        rep.findings.sort(key=lambda f: (order[f.severity], f.phys or 0))
        return src, root, h, rep, None
    nbytes, nsource = bitmap_bytes(src, args)
    map_error = None
    try:
        h = decode_handover(root.blob, mem, fdt_phys=root.phys,
                            bitmap_bytes=nbytes, bitmap_source=nsource)
    except KhoError as e:
        if isinstance(e, MemoryFault) and may_be_filtered(src.program()):
            raise       # the dump lacks the page: a limit of the source
        map_error = str(e)
        h = decode_handover(root.blob, mem, fdt_phys=root.phys,
                            with_map=False)
    if h.fdt_phys is None:
        # debugfs and files give no address: the kernel's pointer, else the
        # preserved page holding the same bytes (the root FDT page is
        # preserved in every generation), so that it is claimed by "kho"
        from .. import walk
        from ..decode import find_preserved_copy
        try:
            h.fdt_phys = root.phys = (
                walk.outgoing_fdt_phys(prog) if prog is not None else
                find_preserved_copy(mem, h.map.runs if h.map else [],
                                    root.blob))
        except KhoError:
            pass
    ram = scratch = nodes = None
    nxt, nxt_source = _next_kernel(prog, args, extra)
    if prog is not None:
        from ..walk.layout import numa_nodes, system_ram
        from ..walk.state import scratch_areas
        from ..check.findings import Finding
        try:
            ram = system_ram(prog)
        except KhoError as e:
            extra.append(Finding("not-checked", f"ram: {e}"))
        try:
            scratch = [(a.addr, a.size) for a in scratch_areas(prog)]
        except KhoError as e:
            extra.append(Finding("not-checked", f"scratch: {e}"))
        if nxt:
            try:
                nodes = numa_nodes(prog)
            except KhoError as e:
                extra.append(Finding("not-checked", f"numa: {e}"))
                nodes = []
        if h.map is not None or args.views:
            _views(prog, args.views or VIEWS, bool(args.views), extra)
    elif args.views:
        raise KhoError(f"--views {args.views}: the tracker needs the "
                       "kernel's debug info (a live kernel or a vmcore, "
                       "with -s VMLINUX)")
    rep = check_handover(h, map_error=map_error, ram=ram, scratch=scratch,
                         next_release=nxt, extra=extra, prog=prog,
                         nodes=nodes,
                         state_why="said" if prog is not None or any(
                             f.id == "not-checked" for f in extra) else None)
    return src, root, h, rep, nxt_source


def check_json(src, root, h, rep, incoming: bool,
               next_source: str | None = None) -> dict:
    return {"source": src.description, "release": src.release(),
            "fdt_source": root.origin, "generation": h.generation,
            "incoming": incoming,
            "next": rep.next_release,
            "next_source": next_source if rep.next_release else None,
            "counts": rep.counts(),
            "findings": [f.as_json() for f in rep.findings],
            "owners": rep.owners_summary(),
            "ranges": [o.as_json() for o in rep.owned]}


#: Column where a finding's message starts (severity, id, phys before it).
_MSG_AT = 8 + 16 + 13


def _finding_line(sev: str, fid: str, phys: str, msg: str) -> str:
    return f"{sev:<7} {fid:<15} {phys:<12} {msg}".rstrip()


def check_text(doc: dict, limit: int) -> str:
    head = (f"{doc['generation']} handover from {doc['fdt_source']}, kernel "
            f"{doc['release'] or 'unknown'}"
            + (" (incoming: what is left unrestored)" if doc["incoming"]
               else "")
            + (f"; next kernel {doc['next']}" if doc["next"] else "")
            + (" (the loaded kexec image)" if doc.get("next_source") ==
               LOADED_IMAGE else ""))
    out = [textwrap.fill(head, 79, subsequent_indent="  ",
                         break_on_hyphens=False), ""]
    own = [(k, v["blocks"], human_size(v["bytes"]))
           for k, v in doc["owners"].items()]
    out.append(tabulate(own, headers=["owner", "blocks", "bytes"])
               if own else "no preserved blocks")
    out.append("")
    fs = doc["findings"]
    shown = fs if limit <= 0 else fs[:limit]
    if not fs:
        out.append("no findings: every check that this source allows "
                   "passed")
    if shown:
        out.append(_finding_line("severity", "id", "phys", "finding"))
        out.append(_finding_line("-" * 7, "-" * 15, "-" * 12, "-" * 42))
    for f in shown:
        text = f["message"]
        if f["phys"] is not None and text.startswith(f"{hexa(f['phys'])} "):
            text = text[len(hexa(f["phys"])) + 1:]      # the phys column
        msg = textwrap.wrap(text, 79 - _MSG_AT) or [""]
        out.append(_finding_line(f["severity"], f["id"], hexa(f["phys"]),
                                 msg[0]))
        out += [" " * _MSG_AT + m for m in msg[1:]]
    if len(shown) < len(fs):
        out.append(f"... {len(fs) - len(shown)} more (--limit 0 shows all)")
    c = doc["counts"]
    out.append(f"\n{c['error']} error(s), {c['warning']} warning(s), "
               f"{c['info']} note(s)")
    return "\n".join(out)


def cmd_check(args) -> int:
    if args.next and args.next_vmlinux:
        raise KhoError("--next and --next-vmlinux both name the next kernel: "
                       "give one")
    if args.incoming and (args.next or args.next_vmlinux):
        raise KhoError("--next applies to the outgoing handover, not to "
                       "--incoming")
    if args.next:
        from ..check.next_kernel import reader_for
        reader_for(args.next)               # refuse an unknown one early
    if args.views:
        from ..check.tracker_map import check_views
        check_views(args.views)             # and unknown views
    src, root, h, rep, nxt_source = run_check(args)
    doc = check_json(src, root, h, rep, args.incoming, nxt_source)
    emit(args, doc, check_text(doc, args.limit))
    return 1 if rep.worst == "error" else 0


def register(sub) -> None:
    """Add ``check`` to *sub* (subparsers)."""
    from . import (add_bitmap_option, add_command, add_fdt_options,
                   add_limit_option, add_source_options, count)
    p = add_command(sub, "check", "check invariants, owners, the next "
                    "kernel, tracker vs map", cmd_check, EPILOG)
    add_source_options(p)
    add_fdt_options(p)
    add_bitmap_option(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--next", metavar="RELEASE",
                   help="the kernel that will receive this handover "
                        "(uname -r, e.g. 7.3.4; default: the one loaded "
                        "with kexec -l or -s -l, when the kernel's debug "
                        "info is at hand)")
    g.add_argument("--next-vmlinux", metavar="FILE",
                   help="the same, read from its bzImage or vmlinux")
    p.add_argument("--views", metavar="VIEWS",
                   help="require the comparison of these views (tracker,map;"
                        " made anyway, when possible, without this option)")
    p.add_argument("--scan-limit", type=count, default=None, metavar="PAGES",
                   help="--incoming: struct pages to examine at most when "
                        "memblock is gone (0: no limit)")
    add_limit_option(p, "findings")

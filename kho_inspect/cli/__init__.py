"""kho-inspect: look at Linux Kexec HandOver state.

Each subcommand is a function ``cmd_NAME(args) -> int`` registered in
:data:`COMMANDS`; errors are :class:`~kho_inspect.errors.KhoError` and become
one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

# Importing this module stays cheap (the console script imports it before
# entry() can make Ctrl-C quiet); the commands import what they use.
from .. import __version__, samples
from ..abi import v1
from ..errors import KhoError

DESCRIPTION = """\
Inspect Linux Kexec HandOver (KHO) state: the FDT, the preserved-memory map,
and (with debug info) the kernel's own tracker."""
EPILOG = """\
examples:
  kho-inspect map --sample             # a bundled image from a real kernel
  kho-inspect map                      # the running kernel's outgoing map
  kho-inspect fdt --incoming           # what the previous kernel handed over
  kho-inspect map --core vmcore -s vmlinux --json
  kho-inspect fdt --fdt /sys/kernel/debug/kho/out/fdt
  kho-inspect capture -o handover.core # save this handover for later
  kho-inspect picture -o memory.svg    # physical memory at a glance
"""


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def count(text: str) -> int:
    """A count: 0 or more (for ``--limit``, 0 means all)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"not a count (0 or more): "
                                         f"{text!r}")
    return n


def positive(text: str) -> int:
    """1 or more (an interval, a duration, a PID)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return n


def _addr(text: str) -> int:
    """A physical address: 0 to 2^64 - 1."""
    n = _int(text)
    if not 0 <= n < 1 << 64:
        raise argparse.ArgumentTypeError(f"not a 64-bit physical address: "
                                         f"{text!r}")
    return n


def add_command(sub, name: str, summary: str, func, epilog: str | None = None
                ) -> argparse.ArgumentParser:
    """Add the subcommand *name* running *func*: its one-line *summary* is
    its line in ``kho-inspect --help`` and heads its own ``--help``."""
    p = sub.add_parser(name, help=summary, description=summary,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=epilog)
    p.set_defaults(func=func)
    return p


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (exit 2)."""

    def error(self, message):
        self.exit(2, f"kho-inspect: error: {message} (see {self.prog} "
                  "--help)\n")


def add_source_options(p: argparse.ArgumentParser) -> None:
    """The options every command shares for choosing what to read."""
    g = p.add_argument_group("source (default: the running kernel)")
    g.add_argument("-s", "--symbols", metavar="VMLINUX",
                   help="the kernel's vmlinux (DWARF), as drgn spells it")
    g = g.add_mutually_exclusive_group()
    g.add_argument("-c", "--core", metavar="FILE",
                   help="vmcore, QEMU dump-guest-memory core, or handover "
                        "image")
    g.add_argument("--sample", nargs="?", const="", metavar="KERNEL",
                   help="a bundled image captured from a real kernel "
                        f"(available: {', '.join(samples.available()) or 'none'}"
                        "; default: the newest)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document instead of tables")


def add_fdt_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("root FDT (default: found automatically)")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--fdt", metavar="FILE",
                   help="read the root FDT from FILE (e.g. a copy of "
                        "/sys/kernel/debug/kho/out/fdt)")
    x.add_argument("--fdt-phys", type=_addr, metavar="ADDR",
                   help="read the root FDT at this physical address")
    g.add_argument("--incoming", action="store_true",
                   help="the FDT this kernel received (debugfs in/fdt, "
                        "setup_data, or kho_in) instead of the outgoing one")
    g.add_argument("--fdt-from", choices=("auto", "debugfs", "setup-data",
                                          "dwarf"), default="auto",
                   help="live kernel: where to find the FDT (auto: debugfs, "
                        "then x86 setup_data for --incoming, then the "
                        "kernel's pointer via DWARF)")


def add_limit_option(p: argparse.ArgumentParser, what: str,
                     more: str = "") -> None:
    """``--limit``: how many of *what* a table lists (*more*: the rest of
    the help)."""
    p.add_argument("--limit", type=count, default=40,
                   help=f"{what} to list (0: all; default 40){more}")


def add_bitmap_option(p: argparse.ArgumentParser) -> None:
    """``--bitmap-bytes``, for the commands that decode a kho-v1 map."""
    p.add_argument("--bitmap-bytes", type=int,
                   choices=v1.BITMAP_BYTES_CHOICES,
                   help="kho-v1 bitmap size, when neither the image, the "
                        "DWARF nor the kernel release tells")


def _decode(args, with_map: bool):
    from ..decode import decode_handover
    from .source import bitmap_bytes, open_source, root_fdt
    src = open_source(args)
    root = root_fdt(src, args)
    mem = None
    needs_mem = with_map or root.phys is not None or src.core or \
        not getattr(args, "fdt", None)
    if needs_mem:
        try:
            mem = src.memory()
        except KhoError:
            if with_map:
                raise
            mem = None        # an FDT file alone still decodes
    nbytes, nsource = bitmap_bytes(src, args) if with_map else (None, None)
    h = decode_handover(root.blob, mem, fdt_phys=root.phys,
                        bitmap_bytes=nbytes, bitmap_source=nsource,
                        with_map=with_map)
    return src, root, h


def cmd_fdt(args) -> int:
    """Decode the root FDT and its sub-nodes."""
    from .. import fdt as fdtmod
    from . import report
    src, root, h = _decode(args, with_map=False)
    tree = fdtmod.parse(root.blob)
    report.emit(args, report.fdt_json(h, tree, root.origin),
                report.fdt_text(h, tree, root.origin))
    return 0


def cmd_map(args) -> int:
    """Decode the preserved-memory map into ranges."""
    if getattr(args, "incoming", False):
        raise KhoError("the incoming map's pages (chunks, bitmaps, radix "
                       "nodes) are ordinary free memory once the new kernel "
                       "has booted; decoding them now would read reused "
                       "memory. Use 'kho-inspect fdt --incoming' for the "
                       "sub-nodes, or decode a dump taken before the kexec")
    from . import report
    src, root, h = _decode(args, with_map=True)
    release = src.release()
    doc = report.map_json(h, root.origin, release)
    if args.owners:
        from ..check.owners import attribute, claims
        from ..ranges import coalesce
        try:                # LUO's live sessions need the DWARF
            prog = src.debug_program() if src.meta is None else None
        except KhoError:
            prog = None
        doc["ranges"] = [o.as_json() for o in
                         attribute(coalesce(h.map.runs), claims(h, prog))]
    report.emit(args, doc, report.map_text(doc, args.limit))
    return 0


def cmd_capture(args) -> int:
    """Write the handover (FDT, map pages, sub-node blobs) as an image."""
    from ..decode import find_preserved_copy
    from ..image import check_output, page_ranges, write_image
    from . import report
    check_output(args.output)           # before the work, not after
    src, root, h = _decode(args, with_map=True)
    mem = src.memory()
    if root.phys is None:
        # debugfs and files give no address; the root FDT page is itself
        # preserved, so look for it among the preserved pages.
        phys = find_preserved_copy(mem, h.map.runs, root.blob)
        if phys is None:
            raise KhoError("capture needs the FDT's physical address: it "
                           f"was read from {root.origin} and no preserved "
                           "page holds it; use --fdt-phys, or --fdt-from "
                           "dwarf with -s VMLINUX")
        report.note(f"the FDT from {root.origin} is the preserved page at "
             f"0x{phys:x}")
        root.phys = phys
        h.fdt_phys = phys
    segments = []
    for start, end in page_ranges(h.pages):
        segments.append((start, mem.read(start, end - start,
                                         "page of the handover")))
    meta = {"generation": h.generation, "fdt_phys": root.phys,
            "bitmap_bytes": h.map.bitmap_bytes if h.map else None,
            "release": src.release(), "source": src.description,
            "fdt_source": root.origin}
    hashes = None
    if args.hashes:
        from ..image import hash_blocks
        from ..ranges import blocks
        from ..progress import Progress
        with Progress("hashing preserved blocks", unit="bytes") as p:
            hashes = hash_blocks(mem, blocks(h.map.runs),
                                 progress=p.callback)
    write_image(args.output, segments, meta, hashes)
    total = sum(len(d) for _, d in segments)
    doc = dict(meta, output=args.output, segments=len(segments), bytes=total)
    text = (f"wrote {args.output}: {h.generation}, {len(segments)} "
            f"segments, {report.human_size(total)} (kernel "
            f"{meta['release'] or 'unknown'})")
    if hashes is not None:
        unread = sum(c is None for b in hashes.blocks for c in b.chunks)
        hashed = sum(b.size for b in hashes.blocks)
        doc["hashes"] = {"algorithm": hashes.algorithm,
                         "chunk_bytes": hashes.chunk_bytes,
                         "blocks": len(hashes.blocks), "bytes": hashed,
                         "unreadable_chunks": unread}
        text += (f"\nhashed {len(hashes.blocks)} preserved blocks, "
                 f"{report.human_size(hashed)} ({hashes.algorithm}, per "
                 f"{report.human_size(hashes.chunk_bytes)} chunk)")
        if unread:
            text += (f"; {unread} chunk(s) could not be read and have no "
                     "hash")
    report.emit(args, doc, text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="kho-inspect",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    ap.add_argument("--version", action="version",
                    version=f"kho-inspect {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = add_command(sub, "fdt", "decode the root FDT and its sub-nodes",
                    cmd_fdt, epilog="examples:\n  kho-inspect fdt --sample\n"
                                    "  kho-inspect fdt --incoming --json\n")
    add_source_options(p)
    add_fdt_options(p)

    p = add_command(sub, "map", "decode the preserved-memory map into ranges",
                    cmd_map, epilog="examples:\n  kho-inspect map --sample "
                                    "6.18\n  kho-inspect map --core vmcore "
                                    "-s vmlinux --json\n")
    add_source_options(p)
    add_fdt_options(p)
    add_bitmap_option(p)
    add_limit_option(p, "ranges")
    p.add_argument("--owners", action="store_true",
                   help="name the client owning each range (from the "
                        "sub-nodes: test_kho, memblock, kexec-metadata, "
                        "kho_workload...; 'kho' is the root FDT)")

    p = add_command(sub, "capture", "save one handover (FDT, map, sub-node "
                    "data) as an image", cmd_capture,
                    epilog="examples:\n  kho-inspect capture -o "
                           "handover.core\n  kho-inspect capture "
                           "--hashes -o handover.core   # for verify\n")
    add_source_options(p)
    add_fdt_options(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    add_bitmap_option(p)
    p.add_argument("--hashes", action="store_true",
                   help="also record a content hash of every preserved "
                        "block (per 2 MiB chunk), for 'kho-inspect verify' "
                        "in the next kernel")

    for register in EXTRA_COMMANDS:
        register(sub)
    return ap


#: Functions ``register(subparsers)`` adding more subcommands.
EXTRA_COMMANDS: list = []


def main(argv=None) -> int:
    """Run one command; errors are one line on stderr and exit status 2."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    from .. import memory
    from . import report
    report.flush_notes(keep=False)
    try:
        try:
            rc = args.func(args)
            sys.stdout.flush()          # a full disk is an error here too
            return rc
        except memory.STRAY_FAULT as e:
            # A read outside any memory.reading(): the same policy, naming
            # the source the command opened.
            src = getattr(args, "opened_source", None)
            raise KhoError(memory.fault_message(
                src.prog if src else None, "kernel memory", e)) from None
        except MemoryError:
            raise KhoError("out of memory: the input claims more than this "
                           "machine can allocate") from None
        except OSError as e:
            if isinstance(e, BrokenPipeError):
                raise
            # An OS error no layer below named (drgn reading a damaged file,
            # an unreadable input): one line, not a traceback.
            raise KhoError((f"{e.filename}: " if e.filename else "")
                           + (e.strerror or str(e))) from None
    except KhoError as e:
        report.flush_notes(keep=False)      # one line: the error
        print(f"kho-inspect: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (| head): exit quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        report.flush_notes()


def entry() -> None:
    """The console script. Ctrl-C (and a closed pipe) end the process at
    once, the Unix way: no traceback, and never swallowed by whatever runs
    (drgn loading its plugins, a long read); capture's temporary file is
    removed on its way out (see kho_inspect.image.write_image). The tracer
    installs its own handler while it traces."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())


def _walker(sub):
    from .walker import register
    register(sub)


def _trace(sub):
    from .trace import register
    register(sub)


EXTRA_COMMANDS += [_walker, _trace]     # walker commands, bcc tracer


def _picture(sub):
    from .picture import register
    register(sub)


EXTRA_COMMANDS += [_picture]            # physical memory at a glance


def _verify(sub):
    from .verify import register
    register(sub)


EXTRA_COMMANDS.append(_verify)          # verify an image's content hashes


def _check(sub):
    from .check import register
    register(sub)


EXTRA_COMMANDS += [_check]              # invariants, owners, next kernel

"""``kho-inspect verify IMAGE``: what became of every block an image
captured with ``capture --hashes`` recorded (the logic is
:mod:`kho_inspect.check.verify`). Register with ``register(subparsers)``.
"""

from __future__ import annotations

import textwrap

from ..errors import KhoError
from .report import emit, hexa, human_size

EPILOG = """\
examples:
  kho-inspect capture --hashes -o /var/tmp/h.core   # before the kexec
  kho-inspect verify /var/tmp/h.core                # in the next kernel
  kho-inspect verify h.core --core vmcore -s vmlinux --json
states: intact (still preserved, unchanged), corrupted (still preserved,
changed), restored (with matches/changed: changed after a restore is normal
use), lost (not in this kernel's incoming state), unknown (this kernel cannot
tell), extra (held here, not in the image). In the kernel the image was
captured from, before its kexec, the blocks are checked against its tracker.
exit status: 0 nothing lost or corrupted, 1 otherwise (also content changed
where the kernel cannot tell corruption from use), 2 error
"""


def verify_text(doc: dict, limit: int = 40) -> str:
    """Render the document of :func:`cmd_verify`."""
    img = doc["image"]
    head = [("image", f"{img['path']}: {img['generation']}, kernel "
             f"{img['release'] or 'unknown'}, FDT {hexa(img['fdt_phys'])}, "
             f"{img['blocks']} blocks hashed per "
             f"{human_size(doc['chunk_bytes'])}"),
            ("kernel", f"{doc['kernel'] or 'unknown'} ({doc['source']})"),
            ("against", doc["against"])]
    out = [textwrap.fill(f"{k + ':':9}{v}", 79, subsequent_indent=" " * 9)
           for k, v in head]
    blocks = doc["blocks"]
    quiet = ("intact", "restored, matches")
    shown, hidden = [], 0
    for b in blocks:
        if _label(b) in quiet and limit > 0 and \
                sum(_label(x) in quiet for x in shown) >= limit:
            hidden += 1
            continue
        shown.append(b)
    from tabulate import tabulate
    rows = [(hexa(b["phys"]), b["order"], _label(b), b["detail"])
            for b in shown]
    out += ["", tabulate(rows, headers=["phys", "order", "state",
                                        "detail"])]
    if hidden:
        out.append(f"... {hidden} more intact or restored-and-matching "
                   "blocks (--limit 0 shows all)")
    counts = "; ".join(f"{n} {k}" for k, n in sorted(doc["counts"].items()))
    out += ["", textwrap.fill(f"{'OK' if doc['ok'] else 'FAILED'}: "
                              f"{counts or 'no blocks'}", 79,
                              subsequent_indent="  ")]
    for n in doc["notes"]:
        out.append(textwrap.fill(n, 79, initial_indent="note: ",
                                 subsequent_indent="  "))
    return "\n".join(out)


def _label(b: dict) -> str:
    if b["state"] in ("restored", "unknown") and b["matches"] is not None:
        return f"{b['state']}, {'matches' if b['matches'] else 'changed'}"
    return b["state"]


def cmd_verify(args) -> int:
    from ..check.verify import image_map_phys, verify
    from ..image import read_image_hashes, read_image_meta
    from ..memory import kernel_release
    from .source import open_source
    meta = read_image_meta(args.image)
    if meta is None:
        raise KhoError(f"{args.image}: not a handover image (no KHO_INSPECT "
                       "note): verify takes an image written by 'kho-inspect "
                       "capture --hashes'")
    hashes = read_image_hashes(args.image)
    if hashes is None:
        raise KhoError(f"{args.image}: the image has no content hashes: "
                       "capture it with --hashes")
    src = open_source(args)
    prog = src.debug_program()
    from ..progress import Progress
    with Progress("hashing the image's blocks", unit="bytes") as p:
        res = verify(prog, meta, hashes,
                     image_map=image_map_phys(args.image, meta["fdt_phys"]),
                     max_pages=args.scan_limit or None, progress=p.callback)
    doc = {"image": {"path": args.image, "generation": meta["generation"],
                     "release": meta["release"],
                     "fdt_phys": meta["fdt_phys"],
                     "blocks": len(hashes.blocks)},
           "kernel": kernel_release(prog), "source": src.description,
           **res.as_json()}
    emit(args, doc, verify_text(doc, args.limit))
    return 0 if res.ok else 1


def register(sub) -> None:
    """Add ``verify`` to *sub* (subparsers)."""
    from . import add_command, add_limit_option, count
    p = add_command(sub, "verify", "what became of an image's hashed blocks "
                    "(needs DWARF)", cmd_verify, EPILOG)
    p.add_argument("image", metavar="IMAGE",
                   help="a handover image written by 'capture --hashes'")
    g = p.add_argument_group("kernel to verify against (default: the "
                             "running kernel)")
    g.add_argument("-s", "--symbols", metavar="VMLINUX",
                   help="the kernel's vmlinux (DWARF), as drgn spells it")
    g.add_argument("-c", "--core", metavar="FILE",
                   help="a vmcore of that kernel instead of /proc/kcore")
    p.add_argument("--scan-limit", type=count, default=0, metavar="PAGES",
                   help="struct pages to examine at most for markers when "
                        "memblock is gone (default 0: all)")
    add_limit_option(p, "intact or restored-and-matching blocks",
                     "; the others are always listed")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document instead of tables")


__all__ = ["register", "cmd_verify", "verify_text"]

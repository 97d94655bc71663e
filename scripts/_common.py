"""Shared by the drgn scripts: make kho_inspect importable from a checkout
and run one view on drgn's ``prog`` (the scripts get it as a global)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))

from kho_inspect.errors import KhoError  # noqa: E402


def run(view, render, argv, **kw):
    """Print ``render(view(prog))`` or, with ``--json`` in *argv*, the JSON
    document; a KhoError is one line on stderr and exit status 2."""
    import __main__
    prog = kw.pop("prog", None) or getattr(__main__, "prog", None)
    if prog is None:
        sys.exit("run me with drgn: drgn -k SCRIPT, or drgn -c vmcore -s "
                 "vmlinux SCRIPT")
    from kho_inspect.memory import reading
    try:
        with reading(prog, "kernel memory"):  # the CLI's fault policy
            doc = view(prog)
    except KhoError as e:
        print(f"{os.path.basename(argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        if "--json" in argv:
            json.dump(doc, sys.stdout, indent=1)
            print()
        else:
            print(render(doc))
        sys.stdout.flush()
    except BrokenPipeError:        # | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

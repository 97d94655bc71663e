"""What the previous kernel handed over, as ``kho-inspect incoming`` prints
it: kho_in, the incoming sub-nodes, and preserved head pages still carrying
their marker.

usage: drgn -k scripts/kho_incoming.py [--json]
       drgn -c vmcore -s vmlinux scripts/kho_incoming.py [--json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402

from kho_inspect.cli.walker import incoming_text  # noqa: E402
from kho_inspect.walk.views import incoming_view  # noqa: E402

run(incoming_view, incoming_text, sys.argv, prog=globals().get("prog"))

"""The outgoing tracker, as ``kho-inspect tracker`` prints it (``--json``:
the schema of ``kho-inspect map --json``).

usage: drgn -k scripts/kho_tracker.py [--json]
       drgn -c vmcore -s vmlinux scripts/kho_tracker.py [--json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402

from kho_inspect.cli.walker import tracker_text  # noqa: E402
from kho_inspect.walk.views import tracker_view  # noqa: E402

run(tracker_view, tracker_text, sys.argv, prog=globals().get("prog"))

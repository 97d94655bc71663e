"""One screen of KHO state, as ``kho-inspect status`` prints it.

usage: drgn -k scripts/kho_status.py [--json]
       drgn -c vmcore -s vmlinux scripts/kho_status.py [--json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402

from kho_inspect.cli.walker import status_text  # noqa: E402
from kho_inspect.walk.views import status_view  # noqa: E402

run(status_view, status_text, sys.argv, prog=globals().get("prog"))

"""Reading what a guest left in its results share."""

from __future__ import annotations

import json
from pathlib import Path


def read_json(path: Path):
    """The JSON document in *path*, or None when it is missing or does not
    parse (a guest that died before or while writing it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

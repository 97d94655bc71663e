"""Handover images captured from real kernels by the vmtests (see
vmtests/README and each image's note), shipped for examples and tests."""

from __future__ import annotations

import os
import re

from ..errors import KhoError

HERE = os.path.dirname(os.path.abspath(__file__))


def _key(name: str):
    return tuple(int(x) for x in re.findall(r"\d+", name))


def available() -> list[str]:
    """Names of the shipped images (kernel releases), oldest first."""
    return sorted((f[:-len(".core")] for f in os.listdir(HERE)
                   if f.endswith(".core")), key=_key)


def path(name: str = "") -> str:
    """Path of the shipped image for kernel *name* (a release or a prefix
    such as ``6.18``); the newest when *name* is empty."""
    names = available()
    if not names:
        raise KhoError("this installation ships no sample handover images")
    if not name:
        return os.path.join(HERE, names[-1] + ".core")
    match = [n for n in names if n == name or n.startswith(name + ".")
             or n.startswith(name + "-")]
    if not match:
        raise KhoError(f"no sample for {name!r}; available: "
                       f"{', '.join(names)}")
    return os.path.join(HERE, match[-1] + ".core")

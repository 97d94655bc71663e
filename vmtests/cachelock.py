"""One lock per cache entry (a kernel build tree, a root filesystem).

Two ``vmtests/run`` on one cache once corrupted each other's kernel build
(objtool: "invalid Elf handle").  Whoever builds or modifies an entry holds an
exclusive ``flock`` on ``<cache>/locks/<name>.lock``; a second run waits for it,
saying so on stderr, and then finds the finished entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path


@contextlib.contextmanager
def locked(cache: Path, name: str):
    """Hold the exclusive lock of cache entry *name* for the ``with`` body."""
    d = cache / "locks"
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"vmtests: waiting for {name}: another vmtests run holds "
                  f"{d / (name + '.lock')}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

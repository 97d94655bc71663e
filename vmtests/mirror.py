"""The Debian mirror the rig downloads from: the host's own.

Kernel sources (``kernels.py``'s private trixie-backports index) and the
guest's root file system (``rootfs.py``, debootstrap sid) come from the
Debian archive. Rather than naming a mirror in the tree, the rig takes the
one the host's apt already uses, so a machine behind a local mirror or a
caching proxy runs the rig as it is. ``KHO_VMTEST_MIRROR`` overrides it.

The host's sources are only read here, never changed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Where apt keeps its sources (one-line ``.list`` and deb822 ``.sources``).
APT_ETC = Path("/etc/apt")


def _codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    try:
        m = re.search(r"^VERSION_CODENAME=\"?([\w-]+)", os_release.read_text(),
                      re.M)
    except OSError:
        return None
    return m.group(1) if m else None


def _one_line_entries(text: str):
    """``(uri, suite, components)`` of each ``deb`` line of a .list file."""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line[4:])       # [signed-by=...]
        f = line.split()
        if len(f) >= 2:
            yield f[0], f[1], f[2:]


def _deb822_entries(text: str):
    """``(uri, suite, components)`` of each enabled ``Types: deb`` stanza of
    a .sources file (every URI x every suite)."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:                # continuation
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        comps = fields.get("components", "").split()
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield uri, suite, comps


def host_entries(etc: Path = APT_ETC):
    """Every ``(uri, suite, components)`` the host's apt reads, in apt's
    order (sources.list first, then sources.list.d sorted)."""
    files = [etc / "sources.list"]
    d = etc / "sources.list.d"
    if d.is_dir():
        files += sorted(p for p in d.iterdir()
                        if p.suffix in (".list", ".sources"))
    for p in files:
        try:
            text = p.read_text(errors="replace")
        except OSError:
            continue
        yield from (_deb822_entries(text) if p.suffix == ".sources"
                    else _one_line_entries(text))


def host_mirror(etc: Path = APT_ETC, codename: str | None = None
                ) -> str | None:
    """The URI of the host's Debian archive: the first ``deb`` source of
    the host's own release suite (``VERSION_CODENAME``, e.g. bookworm, not
    its -security or -updates suites) with component ``main``. Third-party
    repositories name suites of their own and are not taken.

    :returns: the URI without a trailing slash, ``$KHO_VMTEST_MIRROR`` when
        set, or None when the host has no such source.
    """
    env = os.environ.get("KHO_VMTEST_MIRROR")
    if env:
        return env.rstrip("/")
    codename = codename or _codename()
    if not codename:
        return None
    for uri, suite, comps in host_entries(etc):
        if suite == codename and "main" in comps and \
                uri.startswith(("http://", "https://", "file:/")):
            return uri.rstrip("/")
    return None


def require_mirror(etc: Path = APT_ETC) -> str:
    """:func:`host_mirror`, or a RuntimeError saying how to name one."""
    m = host_mirror(etc)
    if not m:
        raise RuntimeError(
            f"no Debian mirror found in the host's apt sources "
            f"({etc}/sources.list{{,.d}}: a 'deb' source of the "
            f"host's release suite with 'main'); set KHO_VMTEST_MIRROR to "
            f"a Debian archive URI")
    return m

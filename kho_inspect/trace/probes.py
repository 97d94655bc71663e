"""Which KHO functions a running kernel has, and how to read their arguments.

The catalogue below is the preserve/unpreserve/restore API of every KHO
release (docs/abi.md, "API by release") plus the *recording* functions that
see every block, including KHO's internal ones (vmalloc chunks, sub-blobs).
:func:`resolve` picks, from the kernel's own list of traceable functions,
the ones present, by probing names, never by version number:

- ``register_kho_notifier`` exists only up to 6.18 (removed in 6.19 with the
  stateless ``kho_add_subtree(name, fdt)``), which tells the arity of
  ``kho_add_subtree``; ``kho_radix_add_page`` (7.1, radix tracker) and
  ``kho_radix_add_key`` (7.3) tell the 7.1+ form ``(name, blob, size)``.
- ``__kho_preserve_order`` (6.16 - 7.0) is static: GCC may inline it or emit
  a clone such as ``__kho_preserve_order.constprop.0``; a clone is probed
  only when the plain name is absent, so each call is counted once.

Pure module: no bcc import, testable anywhere.
"""

from __future__ import annotations

import dataclasses
import os
import re

#: Where tracefs may be mounted; bcc itself looks only at the first.
TRACEFS = ("/sys/kernel/debug/tracing", "/sys/kernel/tracing")
#: Compiler clone suffixes of a static function (".constprop.0", ...).
_CLONE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.(constprop|isra|part|cold|"
                    r"llvm)\.\d+.*$")


@dataclasses.dataclass(frozen=True)
class Func:
    """One traceable KHO function.

    ``role``: ``preserve``, ``unpreserve``, ``restore``, ``record-add``,
    ``record-del`` (the recording functions), ``subtree`` or ``kimage``.
    ``args``: argument kinds in order (``folio``, ``page``, ``phys``,
    ``nr``, ``size``, ``ptr``, ``desc``, ``name``, ``track``, ``pfn``,
    ``order``, ``key``, ``ser``). ``ret``: ``int``, ``ptr`` or ``void``.
    """

    name: str
    role: str
    args: tuple
    ret: str
    doc: str = ""

    @property
    def arity(self) -> int:
        return len(self.args)


def _f(name, role, args, ret, doc=""):
    return Func(name, role, tuple(args.split()) if args else (), ret, doc)


#: Every function the tracer knows, newest form first where one name has
#: several signatures (the first whose condition holds is used).
API = [
    _f("kho_preserve_folio", "preserve", "folio", "int"),
    _f("kho_preserve_phys", "preserve", "phys size", "int",
       "6.16-6.17 only"),
    _f("kho_preserve_pages", "preserve", "page nr", "int", "6.18+"),
    _f("kho_preserve_vmalloc", "preserve", "ptr desc", "int", "6.18+"),
    _f("kho_alloc_preserve", "preserve", "size", "ptr", "6.19+"),
    _f("kho_unpreserve_folio", "unpreserve", "folio", "void", "6.19+"),
    _f("kho_unpreserve_pages", "unpreserve", "page nr", "void", "6.19+"),
    _f("kho_unpreserve_vmalloc", "unpreserve", "desc", "void", "6.19+"),
    _f("kho_unpreserve_free", "unpreserve", "ptr", "void", "6.19+"),
    _f("kho_restore_folio", "restore", "phys", "ptr"),
    _f("kho_restore_pages", "restore", "phys nr", "ptr", "6.18+"),
    _f("kho_restore_vmalloc", "restore", "desc", "ptr", "6.18+"),
    _f("kho_restore_free", "restore", "ptr", "void", "6.19+"),
    _f("kho_remove_subtree", "subtree", "ptr", "void", "6.19+"),
    _f("kho_fill_kimage", "kimage", "ptr", "int"),
]
#: kho_add_subtree: (ser, name, fdt) up to 6.18; (name, fdt) in 6.19/7.0;
#: (name, blob, size) from 7.1 (commit "kho: add size parameter to
#: kho_add_subtree", first released in 7.1).
ADD_SUBTREE = {
    "notifier": _f("kho_add_subtree", "subtree", "ser name ptr", "int"),
    "fdt": _f("kho_add_subtree", "subtree", "name ptr", "int"),
    "blob": _f("kho_add_subtree", "subtree", "name ptr size", "int"),
}
#: The recording functions, one per tracker generation.
RECORD = [
    # kho-v1 xarray-of-bitmaps tracker (6.16 - 7.0), static
    _f("__kho_preserve_order", "record-add", "track pfn order", "int"),
    _f("__kho_unpreserve_order", "record-del", "track pfn order", "void",
       "6.19+"),
    # radix tracker, 7.1/7.2 (exported)
    _f("kho_radix_add_page", "record-add", "tree pfn order", "int"),
    _f("kho_radix_del_page", "record-del", "tree pfn order", "void"),
    # radix tracker, 7.3: generic keys (the busy-block tree uses them too:
    # only the tree the API calls use counts, see trace.model)
    _f("kho_radix_add_key", "record-add", "tree key", "int"),
    _f("kho_radix_del_key", "record-del", "tree key", "void"),
]


def available_functions() -> tuple[set[str], str]:
    """Names the kernel can probe, and where they were read from.

    Reads ``available_filter_functions`` under either tracefs mount point
    (bcc reads only ``/sys/kernel/debug/tracing``), else ``/proc/kallsyms``
    text symbols.

    :raises OSError: if neither can be read (not root, no tracefs, no
        kallsyms).
    """
    for base in TRACEFS:
        path = os.path.join(base, "available_filter_functions")
        try:
            with open(path) as f:
                names = {line.split()[0] for line in f if line.strip()}
            if names:
                return names, path
        except OSError:
            continue
    with open("/proc/kallsyms") as f:
        names = {parts[2] for parts in (ln.split() for ln in f)
                 if len(parts) >= 3 and parts[1] in "tT"}
    if names and all(n.startswith("0000") for n in list(names)[:1]):
        raise OSError("kallsyms addresses are hidden (not root?)")
    return names, "/proc/kallsyms"


def symbol_for(name: str, available: set[str]) -> str | None:
    """The symbol to probe for function *name*: the name itself, else one
    compiler clone (``name.constprop.0``...), else None (absent/inlined)."""
    if name in available:
        return name
    clones = sorted(s for s in available
                    if (m := _CLONE.match(s)) and m.group(1) == name
                    and m.group(2) != "cold")
    # a ".part" clone holds only part of the body: prefer any other clone
    clones.sort(key=lambda s: ".part." in s)
    return clones[0] if clones else None


@dataclasses.dataclass(frozen=True)
class Probe:
    """A catalogue function resolved to the symbol this kernel has.

    ``dropped``: leading arguments the compiler removed from a
    ``.constprop`` clone because every caller passes the same constant.
    The kho-v1 recording functions are only ever called with
    ``&kho_out.track`` (``&kho_out.ser.track`` up to 6.18), so in
    ``__kho_preserve_order.constprop.0`` (seen in 6.17.8) pfn and order
    arrive in the first two registers.
    """

    func: Func
    symbol: str
    index: int
    dropped: int = 0

    @property
    def clone(self) -> bool:
        return self.symbol != self.func.name


@dataclasses.dataclass
class Plan:
    """What :func:`resolve` found: the probes, and what is missing."""

    probes: list
    missing: list          # (name, why)
    source: str            # where the function list came from
    radix: bool            # radix tracker (7.1+) vs kho-v1

    @property
    def recording(self) -> list:
        return [p for p in self.probes if p.func.role.startswith("record")]


def resolve(available: set[str], source: str = "",
            roles: set[str] | None = None) -> Plan:
    """Choose the probes for a kernel whose traceable functions are
    *available* (see :func:`available_functions`).

    :param roles: only these roles (None: all).
    """
    radix = bool({"kho_radix_add_page", "kho_radix_add_key"} & available)
    if radix:
        add = ADD_SUBTREE["blob"]
    elif symbol_for("register_kho_notifier", available):
        add = ADD_SUBTREE["notifier"]
    else:
        add = ADD_SUBTREE["fdt"]
    # only the recording functions of this kernel's tracker generation
    # (7.1/7.2 pages or 7.3 keys) are worth reporting when absent
    if radix:
        flavour = ("kho_radix_add_key" if "kho_radix_add_key" in available
                   else "kho_radix_add_page")
        record = [f for f in RECORD if f.name.startswith("kho_radix_")
                  and f.args[-1] == ("key" if flavour.endswith("key")
                                     else "order")]
    else:
        record = [f for f in RECORD if f.name.startswith("__kho_")]
    probes, missing = [], []
    for func in API + [add] + record:
        if roles is not None and func.role not in roles:
            continue
        sym = symbol_for(func.name, available)
        if sym is None:
            missing.append((func.name, func.doc or "absent or inlined"))
            continue
        dropped = int(".constprop." in sym and func.args[:1] == ("track",))
        probes.append(Probe(func, sym, len(probes), dropped))
    return Plan(probes, missing, source, radix)

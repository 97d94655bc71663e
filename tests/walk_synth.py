"""A drgn program with a kernel's DWARF and hand-made memory.

The walker needs the kernel's types. :class:`SynthKernel` loads a vmlinux -
one of the synthetic variants compiled from ``tests/kdwarf/kernel.c`` or a
vmtest build (``tests/variants.py`` lists both) - into a program made from
a minimal ELF core (a VMCOREINFO note only, so drgn treats it as a Linux
kernel), then serves memory from a sparse dict of pages: kernel-image
variables, the direct map and physical addresses. Pages never written raise
:class:`drgn.FaultError`, like pages filtered out of a vmcore.
"""

from __future__ import annotations

import os
import struct
import subprocess

import drgn

PAGE = 4096
PAGE_OFFSET = 0xFFFF888000000000
VMEMMAP = 0xFFFFEA0000000000
KIMAGE = 0xFFFFFFFF80000000


def _symbols(vmlinux: str) -> dict[str, int]:
    nm = subprocess.run(["nm", vmlinux], capture_output=True, text=True,
                        check=True).stdout
    out = {}
    for line in nm.splitlines():
        f = line.split()
        if len(f) == 3:
            out.setdefault(f[2], int(f[0], 16))
    return out


def fake_core(vmlinux: str, path: str, release: str = "synthetic") -> None:
    """Write an ELF core holding only a VMCOREINFO note for *vmlinux*."""
    syms = _symbols(vmlinux)
    pgd = syms.get("init_top_pgt") or syms["swapper_pg_dir"]
    vi = (f"OSRELEASE={release}\nPAGESIZE=4096\nKERNELOFFSET=0\n"
          f"SYMBOL(swapper_pg_dir)={pgd:x}\n").encode()
    name = b"VMCOREINFO\0"

    def pad(b):
        return b + b"\0" * (-len(b) % 4)
    note = struct.pack("<III", len(name), len(vi), 0) + pad(name) + pad(vi)
    off = 64 + 56
    eh = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0,
                     b"\0" * 7, 4, 62, 1, 0, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, len(note), len(note), 4)
    with open(path, "wb") as f:
        f.write(eh + ph + note)


def types_program(vmlinux: str, tmpdir: str, release: str = "synthetic"):
    """A Linux-kernel drgn program with *vmlinux*'s DWARF and no memory."""
    core = os.path.join(tmpdir, "vmcoreinfo.core")
    fake_core(vmlinux, core, release)
    prog = drgn.Program()
    prog.set_core_dump(core)
    mod = prog.main_module("kernel", create=True)
    mod.try_file(vmlinux, force=True)
    if mod.debug_file_status != drgn.ModuleFileStatus.HAVE:
        raise RuntimeError(f"drgn did not take {vmlinux} as debug info")
    return prog


class SynthKernel:
    """Sparse memory behind a types-only program. *numa*: the kernel was
    built with CONFIG_NUMA (``node_data[]``, else ``contig_page_data``), as
    its configuration says (tests/variants.py), not as its DWARF says."""

    def __init__(self, vmlinux: str, tmpdir: str, release="synthetic",
                 numa: bool = False):
        self.prog = types_program(vmlinux, tmpdir, release)
        self.numa = numa
        self.pgdats: dict[int, int] = {}        # nid -> pglist_data address
        self.phys: dict[int, bytearray] = {}     # page frame -> bytes
        self.kvirt: dict[int, bytearray] = {}    # kernel image pages
        self.next_phys = 0x10000000
        p = self.prog
        p.add_memory_segment(0, 1 << 40, self._read_phys, physical=True)
        p.add_memory_segment(PAGE_OFFSET, 1 << 40, self._read_direct)
        p.add_memory_segment(KIMAGE, 1 << 31, self._read_kvirt)
        self.vmemmap: dict[int, bytearray] = {}
        p.add_memory_segment(VMEMMAP, 1 << 40, self._read_vmemmap)
        self.set("page_offset_base", struct.pack("<Q", PAGE_OFFSET))
        self.set("vmemmap_base", struct.pack("<Q", VMEMMAP))

        def vmemmap_finder(prog, name, flags, filename):
            if name == "vmemmap" and flags & drgn.FindObjectFlags.VARIABLE:
                return drgn.Object(prog, "struct page *", VMEMMAP)
            return None
        p.register_object_finder("synthetic vmemmap", vmemmap_finder,
                                 enable_index=0)

    @classmethod
    def of(cls, dwarf, tmpdir) -> "SynthKernel":
        """The SynthKernel of a resolved variant (tests/variants.py's
        ``Dwarf``): its vmlinux, release and NUMA configuration."""
        return cls(dwarf.vmlinux, str(tmpdir), dwarf.release,
                   numa=dwarf.numa)

    # -- memory -----------------------------------------------------------
    @staticmethod
    def _serve(pages, base, address, count):
        out = bytearray()
        a = address
        while len(out) < count:
            pg, off = divmod(a - base, PAGE)
            data = pages.get(pg)
            if data is None:
                raise drgn.FaultError("page not in the synthetic dump", a)
            n = min(PAGE - off, count - len(out))
            out += data[off:off + n]
            a += n
        return bytes(out)

    def _read_phys(self, address, count, offset, physical):
        return self._serve(self.phys, 0, address, count)

    def _read_direct(self, address, count, offset, physical):
        return self._serve(self.phys, PAGE_OFFSET, address, count)

    def _read_kvirt(self, address, count, offset, physical):
        return self._serve(self.kvirt, KIMAGE, address, count)

    def _read_vmemmap(self, address, count, offset, physical):
        return self._serve(self.vmemmap, VMEMMAP, address, count)

    @staticmethod
    def _write(pages, base, address, data):
        for i, b in enumerate(data):
            pg, off = divmod(address + i - base, PAGE)
            pages.setdefault(pg, bytearray(PAGE))[off] = b

    def write_phys(self, phys: int, data: bytes) -> None:
        self._write(self.phys, 0, phys, data)

    def write_kvirt(self, addr: int, data: bytes) -> None:
        self._write(self.kvirt, KIMAGE, addr, data)

    def write(self, addr: int, data: bytes) -> None:
        """Write *data* at kernel virtual address *addr*: the kernel image,
        the vmemmap or the direct map."""
        if addr >= KIMAGE:
            self.write_kvirt(addr, data)
        elif VMEMMAP <= addr < VMEMMAP + (1 << 40):
            self._write(self.vmemmap, VMEMMAP, addr, data)
        elif PAGE_OFFSET <= addr < PAGE_OFFSET + (1 << 40):
            self.write_phys(addr - PAGE_OFFSET, data)
        else:
            raise ValueError(f"0x{addr:x}: not a synthetic kernel address")

    def alloc(self, data: bytes = b"", size: int = PAGE) -> int:
        """A zeroed page-aligned physical allocation, filled with *data*."""
        phys = self.next_phys
        self.next_phys += (size + PAGE - 1) // PAGE * PAGE
        self.write_phys(phys, data.ljust(size, b"\0"))
        return phys

    def virt(self, phys: int) -> int:
        return PAGE_OFFSET + phys

    # -- kernel variables -------------------------------------------------
    def var(self, name: str):
        return self.prog[name]

    def set(self, name: str, data: bytes, member: str | None = None) -> None:
        """Write *data* at variable *name* (or its *member*, a designator
        such as ``radix_tree.root``)."""
        obj = self.prog[name]
        addr = obj.address_
        if member:
            addr += drgn.offsetof(obj.type_, member)
        self.write_kvirt(addr, data)

    def zero(self, name: str) -> None:
        obj = self.prog[name]
        self.write_kvirt(obj.address_, bytes(drgn.sizeof(obj.type_)))

    def set_u64(self, name, value, member=None):
        self.set(name, struct.pack("<Q", value), member)

    # -- kernel structures ------------------------------------------------
    def xarray(self, entries: dict[int, int]) -> bytes:
        """xa_head (8 bytes) of an xarray holding *entries* ({index:
        pointer}), with as many levels of 64-slot ``struct xa_node`` as the
        largest index needs."""
        if not entries:
            return struct.pack("<Q", 0)
        if list(entries) == [0]:
            return struct.pack("<Q", entries[0])
        shift = 0
        while max(entries) >> (shift + 6):
            shift += 6
        return struct.pack("<Q", self._xa_node(entries, shift))

    def _xa_node(self, entries: dict[int, int], shift: int) -> int:
        t = self.prog.type("struct xa_node")
        node = bytearray(drgn.sizeof(t))
        slots = drgn.offsetof(t, "slots")
        groups: dict[int, dict[int, int]] = {}
        for i, ptr in entries.items():
            groups.setdefault((i >> shift) & 63, {})[i & ((1 << shift) - 1)] \
                = ptr
        for slot, sub in groups.items():
            ptr = (sub[0] if shift == 0 else
                   self._xa_node(sub, shift - 6))
            struct.pack_into("<Q", node, slots + 8 * slot, ptr)
        struct.pack_into("<B", node, drgn.offsetof(t, "shift"), shift)
        struct.pack_into("<B", node, drgn.offsetof(t, "count"), len(groups))
        phys = self.alloc(bytes(node), size=max(PAGE, len(node)))
        return self.virt(phys) | 2

    def page_private(self, pfn: int, value: int) -> None:
        """Set ``page->private`` of *pfn* in the vmemmap."""
        t = self.prog.type("struct page")
        addr = VMEMMAP + pfn * drgn.sizeof(t) + drgn.offsetof(t, "private")
        self._write(self.vmemmap, VMEMMAP, addr, struct.pack("<Q", value))

    def memmap(self, start_pfn: int, end_pfn: int) -> None:
        """Make the struct pages of [start_pfn, end_pfn) readable (zeroed)."""
        size = drgn.sizeof(self.prog.type("struct page"))
        a = VMEMMAP + start_pfn * size
        b = VMEMMAP + end_pfn * size
        for pg in range((a - VMEMMAP) // PAGE, (b - VMEMMAP + PAGE - 1) // PAGE):
            self.vmemmap.setdefault(pg, bytearray(PAGE))

    def pgdat(self, nid: int = 0) -> drgn.Object:
        """Node *nid*'s ``struct pglist_data`` where the kernel finds it:
        the static ``contig_page_data`` without CONFIG_NUMA
        (mm/memblock.c; node 0 only), else ``NODE_DATA(nid)`` =
        ``node_data[nid]`` (mm/numa.c), allocated zeroed in the direct map
        on first use, the node put online in ``node_states[N_ONLINE]`` and
        ``nr_node_ids`` raised to cover it (mm/page_alloc.c)."""
        if not self.numa:
            if nid:
                raise ValueError("a kernel without CONFIG_NUMA has node 0 "
                                 "only")
            return self.prog["contig_page_data"]
        t = self.prog.type("struct pglist_data")
        if nid not in self.pgdats:
            if not self.pgdats:
                self.zero("node_data")
                self.zero("node_states")
            self.pgdats[nid] = self.virt(self.alloc(size=drgn.sizeof(t)))
            self.write_kvirt(self.prog["node_data"][nid].address_,
                             struct.pack("<Q", self.pgdats[nid]))
            self.node_online(nid)
            self.set("nr_node_ids", struct.pack("<I", max(self.pgdats) + 1))
        return drgn.Object(self.prog, t, address=self.pgdats[nid])

    def node_online(self, nid: int, online: bool = True) -> None:
        """Set or clear *nid* in ``node_states[N_ONLINE]``."""
        word = self.prog["node_states"][self.prog["N_ONLINE"]].bits[nid // 64]
        v = word.value_() & ~(1 << nid % 64) | (int(online) << nid % 64)
        self.write_kvirt(word.address_, struct.pack("<Q", v))

    # -- KHO trackers -----------------------------------------------------
    def radix_tree(self, blocks) -> int:
        """Build a kho-v2+ radix tree of (phys, order) *blocks*, encoded by
        tests/abi_encode.py (from the ABI text, not kho_inspect.abi);
        returns the root's phys (tables hold phys, like the kernel's)."""
        from abi_encode import encode_radix
        segs, root = encode_radix(blocks, base=self.next_phys)
        for phys, data in segs:
            self.write_phys(phys, data)
        self.next_phys = max(p + len(d) for p, d in segs)
        return root

    def xarray_track(self, blocks) -> bytes:
        """Build a kho-v1 ``struct kho_mem_track`` for *blocks* (bitmaps of
        this kernel's ``sizeof(struct kho_mem_phys_bits)``); returns its
        bytes (the ``orders`` xarray)."""
        nbytes = drgn.sizeof(self.prog.type("struct kho_mem_phys_bits"))
        nbits = nbytes * 8
        per: dict[int, dict[int, int]] = {}
        for phys, order in blocks:
            hi = (phys >> 12) >> order
            d = per.setdefault(order, {})
            d[hi // nbits] = d.get(hi // nbits, 0) | 1 << (hi % nbits)
        xa_t = self.prog.type("struct xarray")
        orders = {}
        for order, bms in per.items():
            ents = {i: self.virt(self.alloc(x.to_bytes(nbytes, "little"),
                                            size=max(nbytes, PAGE)))
                    for i, x in bms.items()}
            xa = bytearray(drgn.sizeof(xa_t))
            head = drgn.offsetof(xa_t, "xa_head")
            xa[head:head + 8] = self.xarray(ents)
            physxa_t = self.prog.type("struct kho_mem_phys")
            body = bytearray(drgn.sizeof(physxa_t))
            off = drgn.offsetof(physxa_t, "phys_bits")
            body[off:off + len(xa)] = xa
            orders[order] = self.virt(self.alloc(bytes(body)))
        track_t = self.prog.type("struct kho_mem_track")
        track = bytearray(drgn.sizeof(track_t))
        off = drgn.offsetof(track_t, "orders") + drgn.offsetof(xa_t, "xa_head")
        track[off:off + 8] = self.xarray(orders)
        return bytes(track)

    def tracker_member(self) -> str:
        """Where this kernel keeps its tracker inside kho_out."""
        t = self.prog.type("struct kho_out")
        for m in ("radix_tree.root", "track", "ser.track"):
            try:
                drgn.offsetof(t, m)
                return m
            except (LookupError, ValueError):
                continue
        raise LookupError("no tracker member in struct kho_out")

    def preserve(self, blocks) -> str:
        """Install *blocks* in this kernel's outgoing tracker; returns the
        member written."""
        m = self.tracker_member()
        if m == "radix_tree.root":
            self.set_u64("kho_out", self.virt(self.radix_tree(blocks)), m)
        else:
            self.set("kho_out", self.xarray_track(blocks), m)
        return m

    def set_fdt(self, blob: bytes) -> int:
        """Place the outgoing root FDT where this kernel keeps it
        (``kho_out.fdt`` or ``kho_out.ser.fdt``); returns its phys."""
        phys = self.alloc(blob)
        t = self.prog.type("struct kho_out")
        try:
            drgn.offsetof(t, "fdt")
            self.set_u64("kho_out", self.virt(phys), "fdt")
        except (LookupError, ValueError):
            size = drgn.sizeof(self.prog.type("struct page"))
            self.set_u64("kho_out", VMEMMAP + (phys >> 12) * size, "ser.fdt")
        return phys

    def set_finalized(self, value: bool) -> None:
        self.set("kho_out", bytes([int(value)]), "finalized")


def built_kernels() -> dict[str, str]:
    """``{release: vmlinux}`` of the vmtest builds of the current config
    fragment (``vmtests/kernels.py``'s ``cached_build``; stale cache
    directories do not count). For bench/; the tests parametrize over
    tests/variants.py instead, synthetic variants included."""
    import variants
    out = {}
    for v in variants.BUILDS:
        b = variants.cached_build(v.series)
        if b is not None and b.vmlinux.exists():
            out[b.version] = str(b.vmlinux)
    return out

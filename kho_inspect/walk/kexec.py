"""The kernel loaded for the next kexec (``kexec_image``) and its release.

``kexec -l`` (kexec_load) and ``kexec -s -l`` (kexec_file_load) leave a
``struct kimage`` in ``kexec_image``. What ``kexec -e`` will copy into place
is listed by its indirection list (kernel/kexec_core.c): ``image->head`` and
the pages it chains hold ``kimage_entry_t`` words, each a physical address
with flags - IND_DESTINATION (the next source pages land here, one page
after another), IND_SOURCE (a page of data), IND_INDIRECTION (the list
continues in this page), IND_DONE (the end). A segment placed in CMA
(``image->segment_cma[i]``, 6.17+) bypasses the list: its data already sits
at ``segment.mem``. :func:`kimage_pages` rebuilds the destination -> source
map, :func:`loaded_kernel_release` reads the next kernel's ``uname -r`` out
of it:

* x86-64 (arch/x86/kernel/kexec-bzimage64.c, and kexec-tools' bzImage64
  loader for kexec_load): one segment carries the bzImage's setup header
  ("HdrS" at 0x202, Documentation/arch/x86/boot.rst), whose
  ``payload_offset``/``payload_length`` locate the compressed vmlinux in the
  segment holding the protected-mode part; its ``linux_banner`` ("Linux
  version X ...") names the release.

The same header facts and banner serve
:func:`kho_inspect.check.next_kernel.release_of_image` (the image file).
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from typing import Callable

import drgn

from ..errors import KhoError
from ..ranges import human_size
from ._read import direct_map_base, read, reading

#: kimage_entry_t flags (include/linux/kexec.h).
IND_DESTINATION, IND_INDIRECTION, IND_DONE, IND_SOURCE = 0x1, 0x2, 0x4, 0x8
_PAGE = 4096
_MASK = ~(_PAGE - 1) & (1 << 64) - 1
#: Refuse a list longer than this many indirection pages (16 GiB of data).
MAX_INDIRECTION_PAGES = 8192

#: x86 boot protocol: "HdrS" at 0x202 of a bzImage and of boot_params; at
#: 0x248/0x24c the compressed payload's offset (from the protected-mode
#: part's start) and length (protocol 2.08+).
HDRS_AT = 0x202
PAYLOAD_AT = 0x248
#: x86-64 KERNEL_IMAGE_SIZE (arch/x86/include/asm/page_64_types.h): 1 GiB
#: with KASLR, 512 MiB without. The kernel's text, data and bss fit in it,
#: so does the vmlinux a bzImage carries, and linux_banner lies within
#: that many bytes of a vmlinux file (its debug sections come after): the
#: most output a payload is decompressed to, the most of a file scanned.
KERNEL_IMAGE_SIZE = 1 << 30
#: ``linux_banner`` in an uncompressed kernel (init/version-timestamp.c).
BANNER = re.compile(rb"Linux version (\d+\.\d+[^\s\0]*)")

#: The largest LZMA dictionary a kernel payload is decompressed with: the
#: kernel's builds use 64 MiB at most (scripts/Makefile.lib: ``lzma -9``;
#: scripts/xz_wrap.sh: ``dict=32MiB``). A header asking for more (up to
#: 4 GiB) is refused rather than allocated; it is also liblzma's memlimit.
LZMA_DICT_MAX = 64 << 20
#: Decompressed bytes one step may produce (memory stays bounded whatever
#: a step of input expands to).
_OUT_STEP = 4 << 20

#: (magic, name, decompressor factory or None: not in the standard library)
#: as scripts/Makefile.lib writes them.
_CODECS: list[tuple[bytes, str, Callable | None]] = [
    (b"\x1f\x8b", "gzip", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
    (b"\xfd7zXZ\0", "xz", lambda: lzma.LZMADecompressor(
        lzma.FORMAT_XZ, memlimit=2 * LZMA_DICT_MAX)),
    (b"\x5d\0\0", "lzma", lambda: lzma.LZMADecompressor(
        lzma.FORMAT_ALONE, memlimit=2 * LZMA_DICT_MAX)),
    (b"BZh", "bzip2", bz2.BZ2Decompressor),
    (b"\x28\xb5\x2f\xfd", "zstd", None),
    (b"\x02\x21\x4c\x18", "lz4", None),
    (b"\x89LZO", "lzo", None),
]
#: Compressed bytes fed per step (bounds what one step can expand to).
_STEP = 64 << 10


def _zstd():
    try:
        from compression import zstd          # Python 3.14+
        return zstd.ZstdDecompressor
    except ImportError:
        return None


def _inflate(dec, data: Callable[[int, int], bytes], length: int):
    """The output of decompressor *dec* over the *length* bytes of
    *data*, in pieces of at most :data:`_OUT_STEP` bytes, until the stream
    ends."""
    off = 0
    while off < length and not getattr(dec, "eof", False):
        chunk = data(off, min(_STEP, length - off))
        off += _STEP
        while True:
            out = dec.decompress(chunk, _OUT_STEP)
            if out:
                yield out
            if hasattr(dec, "unconsumed_tail"):         # zlib
                chunk = dec.unconsumed_tail
                if not chunk and len(out) < _OUT_STEP:
                    break
            else:                                       # bz2, lzma, zstd
                chunk = b""
                if dec.eof or dec.needs_input:
                    break
            if getattr(dec, "eof", False):
                break


def payload_release(data: Callable[[int, int], bytes], length: int) -> str:
    """The release in a compressed kernel payload: *data(offset, size)*
    returns its bytes, *length* is ``payload_length``. Decompressed step by
    step until ``linux_banner`` shows, at most :data:`KERNEL_IMAGE_SIZE`
    bytes of output, :data:`_OUT_STEP` at a time.

    :raises KhoError: an unknown compression, one the standard library
        lacks, a corrupt stream, an LZMA dictionary above
        :data:`LZMA_DICT_MAX`, no banner within the budget, or no memory.
    """
    magic = data(0, min(13, length))
    for m, name, make in _CODECS:
        if magic.startswith(m):
            break
    else:
        raise KhoError(f"the kernel payload starts with {magic[:6].hex()}: "
                       "not a compression the kernel's build writes")
    if name == "zstd":
        make = _zstd()
    if make is None:
        raise KhoError(f"the kernel payload is {name}-compressed: Python's "
                       "standard library cannot decompress it")
    if name == "lzma" and len(magic) >= 5:
        dict_size = int.from_bytes(magic[1:5], "little")
        if dict_size > LZMA_DICT_MAX:
            raise KhoError(f"the kernel payload (lzma) header asks for a "
                           f"{human_size(dict_size)} dictionary; the "
                           f"kernel's builds use at most "
                           f"{human_size(LZMA_DICT_MAX)}")
    tail, done = b"", 0
    try:
        for out in _inflate(make(), data, length):
            m = BANNER.search(tail + out)
            if m:
                return m.group(1).decode(errors="replace")
            tail = (tail + out)[-256:]
            done += len(out)
            if done >= KERNEL_IMAGE_SIZE:
                raise KhoError(
                    f"the kernel payload ({name}) has no 'Linux version' "
                    f"banner in its first {human_size(KERNEL_IMAGE_SIZE)} "
                    "of output (a kernel image is no larger: "
                    "KERNEL_IMAGE_SIZE)")
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as e:
        raise KhoError(f"the kernel payload ({name}) does not decompress: "
                       f"{e}") from None
    except MemoryError:
        raise KhoError(f"the kernel payload ({name}): out of memory after "
                       f"{human_size(done)} of output") from None
    raise KhoError(f"the kernel payload ({name}, {length} bytes) has no "
                   "'Linux version' banner")


def bzimage_payload(head: bytes) -> tuple[int, int] | None:
    """``(payload_offset, payload_length)`` from the first 0x250 bytes of a
    bzImage or of boot_params, or None without "HdrS"."""
    if head[HDRS_AT:HDRS_AT + 4] != b"HdrS" or len(head) < PAYLOAD_AT + 8:
        return None
    return struct.unpack_from("<II", head, PAYLOAD_AT)


def _entries(prog: drgn.Program, head: int):
    """The non-indirection entries of the list that starts at *head*, in
    order (``for_each_kimage_entry``)."""
    if head == 0:
        return
    if not head & IND_INDIRECTION:
        raise KhoError(f"kexec_image->head is 0x{head:x}: not an "
                       "indirection entry")
    base, seen = direct_map_base(prog), set()
    entry = head
    while True:
        page = entry & _MASK
        if page in seen or len(seen) >= MAX_INDIRECTION_PAGES:
            raise KhoError(f"kexec_image's indirection list loops or runs "
                           f"past {len(seen)} pages (at 0x{page:x})")
        seen.add(page)
        words = struct.unpack(f"<{_PAGE // 8}Q", read(
            prog, base + page, _PAGE, f"kexec_image's indirection page "
            f"0x{page:x}"))
        for entry in words:
            if entry == 0 or entry & IND_DONE:
                return
            if entry & IND_INDIRECTION:
                break
            yield entry
        else:
            raise KhoError(f"kexec_image's indirection page 0x{page:x} "
                           "ends without a link or IND_DONE")


def kimage_pages(prog: drgn.Program, head: int) -> dict[int, int]:
    """``{destination page: source page}`` (physical) of the indirection
    list starting at *head* (``image->head``): where ``kexec -e`` will copy
    each page of data.

    >>> kimage_pages(prog, prog["kexec_image"].head.value_())
    {16777216: 4362362880, ...}

    :raises KhoError: a fault, a loop, a malformed list.
    """
    out: dict[int, int] = {}
    dest = None
    for e in _entries(prog, head):
        if e & IND_DESTINATION:
            dest = e & _MASK
        elif e & IND_SOURCE:
            if dest is None:
                raise KhoError("kexec_image's indirection list has a source "
                               "page before any destination")
            out[dest] = e & _MASK
            dest += _PAGE
        else:
            raise KhoError(f"kexec_image's indirection list has entry "
                           f"0x{e:x} with no known flag")
    return out


class LoadedImage:
    """The segments of a loaded ``struct kimage``, readable at their
    destination addresses."""

    def __init__(self, prog: drgn.Program, image: drgn.Object):
        self.prog = prog
        with reading(prog, "kexec_image"):
            n = image.nr_segments.value_()
            segs = image.segment
            if n > len(segs):
                raise KhoError(f"kexec_image->nr_segments is {n}: more than "
                               f"KEXEC_SEGMENT_MAX {len(segs)}")
            try:
                cma = [image.segment_cma[i].value_() for i in range(n)]
            except AttributeError:          # before 6.17: no CMA segments
                cma = [0] * n
            #: (mem, memsz, bufsz, in CMA)
            self.segments = [(segs[i].mem.value_(), segs[i].memsz.value_(),
                              segs[i].bufsz.value_(), bool(cma[i]))
                             for i in range(n)]
            head = image.head.value_()
        self.pages = kimage_pages(prog, head)
        self.base = direct_map_base(prog)

    def read(self, seg: int, offset: int, size: int) -> bytes:
        """*size* bytes at *offset* into segment *seg*, as ``kexec -e`` will
        place them."""
        mem, memsz, _, cma = self.segments[seg]
        if offset + size > memsz:
            raise KhoError(f"segment 0x{mem:x}: 0x{offset:x}+0x{size:x} "
                           f"is past its 0x{memsz:x} bytes")
        addr = mem + offset
        if cma:
            return read(self.prog, self.base + addr, size,
                        f"kexec segment 0x{mem:x} (CMA)")
        out = bytearray()
        while len(out) < size:
            page, off = addr & _MASK, addr & (_PAGE - 1)
            n = min(_PAGE - off, size - len(out))
            src = self.pages.get(page)
            if src is None:
                raise KhoError(f"kexec_image: no source page for "
                               f"destination 0x{page:x} (segment 0x{mem:x})")
            out += read(self.prog, self.base + src + off, n,
                        f"kexec source page 0x{src:x} (for 0x{page:x})")
            addr += n
        return bytes(out)

    def release(self) -> str:
        """The release of the kernel in these segments (an x86 bzImage).

        :raises KhoError: no setup header, no payload, or one that cannot
            be read."""
        hdrs = []
        for i, (mem, memsz, _, _) in enumerate(self.segments):
            if memsz >= PAYLOAD_AT + 8:
                p = bzimage_payload(self.read(i, 0, PAYLOAD_AT + 8))
                if p:
                    hdrs.append((i, p))
        if not hdrs:
            raise KhoError(f"none of the loaded image's "
                           f"{len(self.segments)} segments holds an x86 "
                           "setup header (HdrS): only a bzImage is read")
        for i, (mem, memsz, bufsz, _) in enumerate(self.segments):
            for h, (off, length) in hdrs:
                if h == i or length == 0 or off + length > min(
                        memsz, bufsz or memsz):
                    continue
                magic = self.read(i, off, min(6, length))
                if not any(magic.startswith(m) for m, _, _ in _CODECS):
                    continue
                return payload_release(
                    lambda o, n, i=i, off=off: self.read(i, off + o, n),
                    length)
        raise KhoError(f"the setup header (segment 0x"
                       f"{self.segments[hdrs[0][0]][0]:x}) names a payload "
                       f"at 0x{hdrs[0][1][0]:x}+0x{hdrs[0][1][1]:x}; no "
                       "segment holds a compressed kernel there")


def loaded_image(prog: drgn.Program) -> drgn.Object | None:
    """The image ``kexec -l``/``kexec -s -l`` loaded (``*kexec_image``, a
    ``struct kimage``), or None when nothing is loaded.

    :raises KhoError: the kernel has no kexec, or the pointer cannot be
        read.
    """
    try:
        image = prog["kexec_image"]
    except KeyError:
        raise KhoError("the kernel's debug info has no 'kexec_image': no "
                       "CONFIG_KEXEC_CORE") from None
    with reading(prog, "kexec_image"):
        return image[0].read_() if image.value_() else None


def loaded_kernel_release(prog: drgn.Program) -> str | None:
    """The ``uname -r`` of the kernel loaded with ``kexec -l`` or ``kexec
    -s -l`` (``kexec_image``, a ``struct kimage *``), read from the pages
    ``kexec -e`` will copy; None when nothing is loaded.

    >>> loaded_kernel_release(prog)
    '7.3.4'

    :raises KhoError: the kernel has no kexec, or the image cannot be read
        (a fault, a malformed list, not a bzImage, a compression the
        standard library lacks) - one line, for a not-checked note.
    """
    image = loaded_image(prog)
    return None if image is None else LoadedImage(prog, image).release()

"""Handover images: a small ELF core holding one handover.

The image holds the root FDT page, every page the map references (chunks,
bitmaps or radix nodes), the sub-node blobs and what they point at, as
``PT_LOAD`` segments at their physical addresses (so ``drgn -c IMAGE`` and
every kho_inspect command open it), plus a ``KHO_INSPECT`` note: JSON with
the generation, the kho-v1 bitmap size, the FDT's phys and the kernel release.

``capture --hashes`` adds a second note, name ``KHO_INSPECT``, type
``0x4B484F32`` ("KHO2"; readers that do not know it skip it, so such an
image opens everywhere a plain one does): the content hashes of every
preserved block, taken at capture time, for ``kho-inspect verify`` in the
next kernel. It is a PT_NOTE segment of its own, so that however large it
gets, the first note stays small. Its descriptor is JSON::

    {"algorithm": "blake2b-128",        # hashlib.blake2b(digest_size=16)
     "chunk_bytes": 2097152,            # a power of two, 4 KiB to 1 GiB
     "blocks": [[phys, order, ["<32 hex digits>" | null, ...]], ...]}

one entry per preserved (phys, order) block of the map, sorted by phys;
a block of ``4096 << order`` bytes has one hash per ``chunk_bytes`` slice
(``ceil(size / chunk_bytes)`` of them; the last may be shorter), so a change
is named to the chunk. ``null``: the chunk could not be read when captured.
The blocks' contents are not in the image, only their hashes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import stat
import struct
import tempfile
import threading

from .abi import v1
from .abi.common import PAGE_SIZE
from .errors import KhoError
from .ranges import merge_intervals

NOTE_NAME = b"KHO_INSPECT\0"
NOTE_TYPE = 0x4B484F31          # "KHO1"
HASHES_NOTE_TYPE = 0x4B484F32   # "KHO2": content hashes (capture --hashes)
IMAGE_FORMAT = 1

#: The content hash of ``capture --hashes``: its name in the note, and
#: the digest size of :func:`hashlib.blake2b`.
HASH_ALGORITHM = "blake2b-128"
HASH_DIGEST_BYTES = 16
#: Default hash granularity: blocks above it get one hash per slice.
DEFAULT_CHUNK_BYTES = 2 << 20
#: Bytes read from memory at once while hashing (memory stays bounded).
READ_BYTES = 1 << 20
#: The largest hashes note a reader accepts (a few million blocks).
MAX_HASHES_NOTE = 1 << 28
#: Blocks one byte of an image's memory can account for: every preserved
#: block is one bit of a map page (a kho-v1 bitmap or a radix leaf) the
#: image holds, so a note listing more than 8 blocks per byte of its
#: PT_LOAD data is refused before it is parsed (its objects take ~20 times
#: the note's size).
BLOCKS_PER_IMAGE_BYTE = 8

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_PT_LOAD, _PT_NOTE, _ET_CORE, _EM_X86_64 = 1, 4, 4, 62


def page_ranges(pages) -> list[tuple[int, int]]:
    """Merge (phys, size) items into sorted, page-aligned [start, end)."""
    down = ~(PAGE_SIZE - 1)
    return merge_intervals((p.phys & down,
                            (p.phys + p.size + PAGE_SIZE - 1) & down)
                           for p in pages if p.size > 0)


def _note(meta: dict, ntype: int = NOTE_TYPE) -> bytes:
    desc = json.dumps(meta, sort_keys=True,
                      separators=(",", ":") if ntype != NOTE_TYPE
                      else None).encode()
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return (struct.pack("<III", len(NOTE_NAME), len(desc), ntype)
            + pad(NOTE_NAME) + pad(desc))


# -- content hashes (capture --hashes, verify) --------------------------------

@dataclasses.dataclass(frozen=True)
class BlockHashes:
    """The hashes of one preserved block: one per ``chunk_bytes`` slice,
    None where the slice could not be read."""

    phys: int
    order: int
    chunks: tuple

    @property
    def size(self) -> int:
        return PAGE_SIZE << self.order


@dataclasses.dataclass
class ImageHashes:
    """The hashes note of an image (see the module docstring)."""

    chunk_bytes: int
    blocks: list[BlockHashes]
    algorithm: str = HASH_ALGORITHM

    def as_note(self) -> dict:
        return {"algorithm": self.algorithm, "chunk_bytes": self.chunk_bytes,
                "blocks": [[b.phys, b.order, list(b.chunks)]
                           for b in self.blocks]}


def chunk_spans(phys: int, size: int, chunk_bytes: int):
    """``(phys, size)`` of each hashed slice of ``[phys, phys + size)``:
    ``ceil(size / chunk_bytes)`` slices, the last one possibly shorter."""
    off = 0
    while off < size:
        n = min(chunk_bytes, size - off)
        yield phys + off, n
        off += n


def hash_span(mem, phys: int, size: int, chunk_bytes: int,
              what: str = "preserved block") -> list[str | None]:
    """Hash ``[phys, phys + size)`` of *mem* (anything with
    ``read(phys, size, what)``, e.g. :class:`kho_inspect.memory.PhysMemory`)
    one ``chunk_bytes`` slice at a time, reading at most :data:`READ_BYTES`
    at once: hex digests, None for a slice any part of which could not be
    read."""
    out: list[str | None] = []
    for start, n in chunk_spans(phys, size, chunk_bytes):
        h = hashlib.blake2b(digest_size=HASH_DIGEST_BYTES)
        try:
            for pos, m in chunk_spans(start, n, READ_BYTES):
                h.update(mem.read(pos, m, what))
        except KhoError:
            out.append(None)
            continue
        out.append(h.hexdigest())
    return out


def hash_blocks(mem, blocks, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                progress=None) -> ImageHashes:
    """Hash every ``(phys, order)`` in *blocks*; *progress(done_bytes,
    total_bytes)* is called after each block when given."""
    if chunk_bytes < PAGE_SIZE or chunk_bytes & (chunk_bytes - 1) or \
            chunk_bytes > 1 << 30:
        raise KhoError(f"hash chunk size {chunk_bytes}: not a power of two "
                       "from 4 KiB to 1 GiB")
    blocks = sorted(set(blocks))
    total = sum(PAGE_SIZE << o for _, o in blocks)
    done = 0
    out = []
    for phys, order in blocks:
        size = PAGE_SIZE << order
        out.append(BlockHashes(phys, order, tuple(
            hash_span(mem, phys, size, chunk_bytes))))
        done += size
        if progress is not None:
            progress(done, total)
    return ImageHashes(chunk_bytes, out)


def write_image(path: str, segments, meta: dict,
                hashes: ImageHashes | None = None) -> None:
    """Write *segments* (list of (phys, bytes)) and *meta* as an ELF core,
    with the content *hashes* note when given.

    The file appears complete or not at all: written to a new temporary file
    in the same directory, then renamed over *path*. Only a regular file is
    ever replaced (see :func:`check_output`); the temporary is removed on
    any error and on any signal that ends the process.

    :raises KhoError: for a refused or unwritable *path*.
    """
    meta = dict(meta, image_format=IMAGE_FORMAT)
    # The hashes note gets a PT_NOTE of its own: however large it is, the
    # first one stays within what read_image_meta reads.
    notes = [_note(meta)]
    if hashes is not None:
        notes.append(_note(hashes.as_note(), HASHES_NOTE_TYPE))
    phnum = len(notes) + len(segments)
    off = _EHDR.size + _PHDR.size * phnum
    phdrs = []
    for note in notes:
        phdrs.append(_PHDR.pack(_PT_NOTE, 0, off, 0, 0, len(note), 0, 4))
        off += len(note)
    for phys, data in segments:
        phdrs.append(_PHDR.pack(_PT_LOAD, 4, off, phys, phys, len(data),
                                len(data), PAGE_SIZE))
        off += len(data)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = _EHDR.pack(ident, _ET_CORE, _EM_X86_64, 1, 0, _EHDR.size, 0, 0,
                      _EHDR.size, _PHDR.size, phnum, 0, 0, 0)
    directory = check_output(path)
    tmp = None
    try:
        with _unlinked_on_signal() as pending:
            # Signals wait until the name is known to the handler.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK,
                                             _ENDING_SIGNALS)
            try:
                # O_CREAT|O_EXCL|O_NOFOLLOW, an unpredictable name, mode
                # 0600 (the image holds kernel memory), in the target's own
                # directory.
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                    dir=directory)
                pending.append(tmp)
            except OSError as e:
                raise KhoError(f"{path}: cannot create a file in "
                               f"{directory}: {e.strerror or e}") from None
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            with os.fdopen(fd, "wb") as f:
                f.write(ehdr)
                f.writelines(phdrs)
                f.writelines(notes)
                for _, data in segments:
                    f.write(data)
                f.flush()
                os.fsync(f.fileno())
            check_output(path)          # still not a device, link or dir
            os.replace(tmp, path)
            pending.clear()
            tmp = None
    except BaseException as e:
        if tmp is not None:
            _unlink(tmp)
        if isinstance(e, OSError):
            raise KhoError(f"{path}: {e.strerror or e}") from None
        raise


def check_output(path: str) -> str:
    """Refuse an output name that is empty, names a directory, or an existing
    entry that is not a regular file (a device such as /dev/null, a FIFO, a
    socket, a symbolic link): an image replaces only a regular file.

    :returns: the directory the image goes to (which must exist).
    """
    if not path:
        raise KhoError("the output file name is empty")
    directory, name = os.path.split(path)
    directory = directory or "."
    if not name or name in (".", ".."):
        raise KhoError(f"{path}: names a directory, not a file")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise KhoError(f"{path}: {e.strerror or e}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                "a symbolic link" if stat.S_ISLNK(st.st_mode) else
                "a device or special file")
        raise KhoError(f"{path}: is {kind}; an image is written only as a "
                       "regular file")
    if not os.path.isdir(directory):
        raise KhoError(f"{path}: no such directory {directory}")
    return directory


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


#: Signals whose default action ends the process: the temporary file must
#: not outlive any of them (SIGKILL cannot be caught).
_ENDING_SIGNALS = tuple(getattr(signal, n) for n in (
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGPIPE", "SIGALRM",
    "SIGUSR1", "SIGUSR2", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF")
    if hasattr(signal, n))


@contextlib.contextmanager
def _unlinked_on_signal():
    """Context yielding a list of files (the temporary, once created;
    cleared once it is renamed). A signal whose default action would end
    the process first removes them, then ends it the same way. A signal with
    a Python handler (KeyboardInterrupt) gets that handler; if it raises,
    the caller's cleanup removes the temporary. Signals ignored before stay
    ignored."""
    pending: list[str] = []
    old: dict = {}

    def handler(sig, frame):
        prev = old.get(sig)
        if callable(prev):      # e.g. KeyboardInterrupt: write_image's
            prev(sig, frame)    # cleanup runs if it raises
            return
        if pending:
            _unlink(pending.pop())
        for s, h in old.items():
            signal.signal(s, h)
        os.kill(os.getpid(), sig)         # the default action, as if never
                                          # caught: the process ends here

    if threading.current_thread() is threading.main_thread():
        for sig in _ENDING_SIGNALS:
            prev = signal.getsignal(sig)
            if prev is None or prev == signal.SIG_IGN:
                continue                  # set outside Python, or ignored
            old[sig] = signal.signal(sig, handler)
    try:
        yield pending
    finally:
        for sig, prev in old.items():
            signal.signal(sig, prev)


#: Signatures of the kdump-compressed formats (makedumpfile -c/-l/-p/-z,
#: the distributions' default; diskdump): vmcores drgn reads through
#: libkdumpfile, never handover images.
_KDUMP_MAGICS = (b"KDUMP   ", b"DISKDUMP")


def read_image_meta(path: str) -> dict | None:
    """The KHO_INSPECT note of the ELF core at *path*, or None if the file is
    an ELF core without one (a vmcore) or a kdump-compressed vmcore. Raises
    KhoError if it is neither."""
    desc = _read_note(path, NOTE_TYPE, 1 << 24)
    if desc is None:
        return None
    try:
        meta = json.loads(desc)
    except (ValueError, RecursionError):
        raise KhoError(f"{path}: the handover image note is not "
                       "valid JSON") from None
    return validate_meta(meta, f"{path}: handover image note")


def read_image_hashes(path: str) -> ImageHashes | None:
    """The content hashes note of the image at *path* (``capture
    --hashes``), checked like any input, or None when it has none."""
    desc = _read_note(path, HASHES_NOTE_TYPE, MAX_HASHES_NOTE)
    if desc is None:
        return None
    what = f"{path}: hashes note"
    # each block is "[phys,order,[hashes]]": two brackets, counted at C
    # speed before any object is built
    listed = (desc.count(b"[") - 1) // 2
    most = BLOCKS_PER_IMAGE_BYTE * _load_bytes(path)
    if listed > most:
        raise KhoError(f"{what} lists about {listed} blocks; the image's "
                       f"map pages can mark at most {most} (8 per byte of "
                       "its memory)")
    try:
        doc = json.loads(desc)
    except (ValueError, RecursionError):
        raise KhoError(f"{what} is not valid JSON") from None
    return validate_hashes(doc, what)


def validate_hashes(doc, what: str) -> ImageHashes:
    """Check a hashes note's JSON (see the module docstring)."""
    if not isinstance(doc, dict):
        raise KhoError(f"{what} is not a JSON object")
    if doc.get("algorithm") != HASH_ALGORITHM:
        raise KhoError(f"{what}: algorithm {str(doc.get('algorithm'))[:40]!r}"
                       f" is not {HASH_ALGORITHM!r}")
    cb = doc.get("chunk_bytes")
    if type(cb) is not int or cb < PAGE_SIZE or cb & (cb - 1) or cb > 1 << 30:
        raise KhoError(f"{what}: chunk_bytes {str(cb)[:40]} is not a power "
                       "of two from 4096 to 2^30")
    items = doc.get("blocks")
    if not isinstance(items, list):
        raise KhoError(f"{what}: 'blocks' is not a list")
    blocks = []
    seen = set()
    for i, item in enumerate(items):
        bad = f"{what}: block #{i}"
        if not (isinstance(item, list) and len(item) == 3):
            raise KhoError(f"{bad} is not [phys, order, hashes]")
        phys, order, chunks = item
        if type(order) is not int or not 0 <= order <= 52:
            raise KhoError(f"{bad}: order {str(order)[:20]} is not 0..52")
        size = PAGE_SIZE << order
        if type(phys) is not int or phys < 0 or phys + size > 1 << 64 or \
                phys % size:
            raise KhoError(f"{bad}: phys {str(phys)[:24]} is not an address "
                           f"aligned to its order-{order} block")
        if (phys, order) in seen:
            raise KhoError(f"{bad}: 0x{phys:x} order {order} listed twice")
        seen.add((phys, order))
        want = -(-size // cb)
        if not isinstance(chunks, list) or len(chunks) != want:
            raise KhoError(f"{bad} (0x{phys:x}, order {order}): wants "
                           f"{want} chunk hashes of {cb} bytes")
        for c in chunks:
            if c is not None and not (isinstance(c, str) and
                                      len(c) == 2 * HASH_DIGEST_BYTES and
                                      all(x in "0123456789abcdef" for x in c)):
                raise KhoError(f"{bad} (0x{phys:x}): a hash is not "
                               f"{2 * HASH_DIGEST_BYTES} hex digits or null")
        blocks.append(BlockHashes(phys, order, tuple(chunks)))
    blocks.sort(key=lambda b: (b.phys, b.order))
    return ImageHashes(cb, blocks)


def _read_note(path: str, ntype: int, limit: int) -> bytes | None:
    """The descriptor of the first KHO_INSPECT note of type *ntype* in the
    ELF core at *path* (PT_NOTE segments up to *limit* bytes), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(_EHDR.size)
            if head[:8] in _KDUMP_MAGICS:
                return None             # a vmcore drgn opens itself
            if len(head) < _EHDR.size or head[:4] != b"\x7fELF":
                raise KhoError(f"{path}: not an ELF file")
            if head[4] != 2 or head[5] != 1:
                raise KhoError(f"{path}: not a 64-bit little-endian ELF")
            fields = _EHDR.unpack(head)
            phoff, phentsize, phnum = fields[5], fields[9], fields[10]
            if phentsize != _PHDR.size or phnum > 1 << 20:
                raise KhoError(f"{path}: bad ELF program header table")
            size = os.fstat(f.fileno()).st_size
            if phoff + phentsize * phnum > size:
                raise KhoError(f"{path}: truncated: the ELF program header "
                               f"table (offset {phoff}, {phnum} entries) "
                               f"ends beyond the file's {size} bytes")
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(len(table) // _PHDR.size):
                ptype, _, off, _, _, filesz, _, _ = _PHDR.unpack_from(
                    table, i * _PHDR.size)
                if ptype != _PT_NOTE or filesz > limit or off + filesz > size:
                    continue
                f.seek(off)
                desc = _find_note(f.read(filesz), ntype)
                if desc is not None:
                    return desc
    except OSError as e:
        raise KhoError(f"{path}: {e.strerror or e}") from None
    return None


def _load_bytes(path: str) -> int:
    """The bytes of memory the ELF core at *path* holds (its PT_LOAD
    segments' file sizes, within the file); its program header table was
    checked by :func:`_read_note`."""
    try:
        with open(path, "rb") as f:
            fields = _EHDR.unpack(f.read(_EHDR.size))
            size = os.fstat(f.fileno()).st_size
            f.seek(fields[5])
            table = f.read(_PHDR.size * fields[10])
    except OSError as e:
        raise KhoError(f"{path}: {e.strerror or e}") from None
    total = 0
    for i in range(len(table) // _PHDR.size):
        ptype, _, off, _, _, filesz, _, _ = _PHDR.unpack_from(
            table, i * _PHDR.size)
        if ptype == _PT_LOAD:
            total += max(0, min(filesz, size - off))
    return total


def _find_note(data: bytes, ntype: int = NOTE_TYPE) -> bytes | None:
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, t = struct.unpack_from("<III", data, pos)
        pos += 12
        name = data[pos:pos + namesz]
        pos += (namesz + 3) & ~3
        desc = data[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if name == NOTE_NAME and t == ntype:
            return desc
    return None


def _text(value, limit: int = 256) -> bool:
    return isinstance(value, str) and len(value) <= limit and \
        value.isprintable()


#: The note's fields: name -> (check, what a valid value is). ``fdt_phys``
#: is required; the others may be absent or null.
_FIELDS = {
    "fdt_phys": (lambda v: type(v) is int and 0 <= v < 1 << 64,
                 "an integer from 0 to 2^64-1"),
    "bitmap_bytes": (lambda v: type(v) is int and
                     v in v1.BITMAP_BYTES_CHOICES,
                     f"one of {v1.BITMAP_BYTES_CHOICES}"),
    "image_format": (lambda v: v == IMAGE_FORMAT,
                     f"{IMAGE_FORMAT} (this kho_inspect's image format)"),
    "generation": (lambda v: _text(v, 64), "a short string"),
    "release": (lambda v: _text(v, 64), "a kernel release string"),
    "source": (_text, "a string"),
    "fdt_source": (_text, "a string"),
}


def validate_meta(meta, what: str) -> dict:
    """Check a note's JSON like any other input: *meta* must be an object,
    ``fdt_phys`` an address, every known field of its type (unknown fields
    are dropped). Returns the checked dict; raises KhoError naming *what*."""
    if not isinstance(meta, dict):
        raise KhoError(f"{what} is not a JSON object")
    if "fdt_phys" not in meta:
        raise KhoError(f"{what} has no 'fdt_phys'")
    out = {}
    for key, (ok, valid) in _FIELDS.items():
        value = meta.get(key)
        if value is None and key != "fdt_phys":
            out[key] = None
            continue
        if not ok(value):
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise KhoError(f"{what}: '{key}' is {shown}, not {valid}")
        out[key] = value
    return out

"""Property tests of the whole CLI path, core opening included: damaged
copies of the shipped samples and arbitrary image notes go through
``kho-inspect map/fdt/capture/status`` exactly as a user's file would.

Whatever the input, the command must end in exit 0, or in exit 2 with one
line on stderr; nothing may escape ``main`` (a traceback), no run may take
long, and capture leaves the file asked for or nothing. The examples per
test follow ``--fuzz-examples`` (tests/conftest.py); the default run takes
a few seconds."""

import contextlib
import io
import json
import os
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kho_inspect import samples
from kho_inspect.cli import main

SAMPLES = {n: open(samples.path(n), "rb").read()
           for n in samples.available()}
#: Interesting 64-bit values for pointers, sizes and offsets.
WORDS = [0, 1, 8, 0x1000, 0x1001, 0x200, 0xFFF, 1 << 32, 1 << 40, 1 << 62,
         1 << 63, (1 << 63) + 0x1000, (1 << 64) - 1, (1 << 64) - 0x1000]
COMMANDS = (["map", "--json"], ["map", "--limit", "0"], ["fdt", "--json"],
            ["status"])


def _segments(blob: bytes) -> list:
    """(file offset, size) of each PT_LOAD: the FDTs, map pages and blobs."""
    phoff, = struct.unpack_from("<Q", blob, 32)
    phnum, = struct.unpack_from("<H", blob, 56)
    out = []
    for i in range(phnum):
        ptype, _, off, _, _, filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", blob, phoff + 56 * i)
        if ptype == 1 and filesz:
            out.append((off, filesz))
    return out


SEGMENTS = {n: _segments(b) for n, b in SAMPLES.items()}


def _position(data: st.DataObject, size: int, segments=()) -> int:
    # A third of the edits in the headers, note and first page, a third in
    # the memory the decoders read (FDTs, map pages, client blobs).
    head = min(size, 4096)
    choices = [st.integers(0, head - 1), st.integers(0, size - 1)]
    if segments:
        choices.append(st.sampled_from(segments).flatmap(
            lambda seg: st.integers(seg[0], min(size, sum(seg)) - 1)))
    return data.draw(st.one_of(choices))


def mutate(data: st.DataObject, blob: bytes, segments=()) -> bytes:
    b = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        if len(b) < 16:
            break
        kind = data.draw(st.sampled_from(
            ["truncate", "byte", "word", "copy", "zero-page"]))
        pos = _position(data, len(b), [s for s in segments if s[0] < len(b)])
        if kind == "truncate":
            del b[pos:]
        elif kind == "byte":
            b[pos] = data.draw(st.integers(0, 255))
        elif kind == "word":
            pos = min(pos, len(b) - 8)
            word = data.draw(st.one_of(st.sampled_from(WORDS),
                                       st.integers(0, (1 << 64) - 1)))
            b[pos:pos + 8] = struct.pack("<Q", word)
        elif kind == "copy":
            src = _position(data, len(b), [s for s in segments
                                           if s[0] < len(b)])
            b[pos:pos + 16] = b[src:src + 16]
        else:
            page = pos & ~0xFFF
            b[page:page + 4096] = bytes(len(b[page:page + 4096]))
    return bytes(b)


def run_cli(argv):
    """Run main(); return (rc, stdout, stderr) and the time taken. An
    exception escaping main fails the test (it would be a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    t = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:         # argparse; must not happen here
            rc = e.code
    return rc, out.getvalue(), err.getvalue(), time.monotonic() - t


def check_answer(argv, rc, out, err, seconds):
    assert seconds < 20, (argv, seconds)
    if rc == 0:
        assert err == "", (argv, err)
        return
    assert rc == 2, (argv, rc, err)
    assert out == "", (argv, out)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kho-inspect: error: "), \
        (argv, err)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def run_all(workdir, blob: bytes, capture: bool):
    core = str(workdir / "fuzzed.core")
    with open(core, "wb") as f:
        f.write(blob)
    for cmd in COMMANDS:
        argv = cmd + ["--core", core]
        check_answer(argv, *run_cli(argv))
    if capture:
        outdir = workdir / "out"
        outdir.mkdir(exist_ok=True)
        for name in os.listdir(outdir):
            os.unlink(outdir / name)
        argv = ["capture", "--core", core, "-o", str(outdir / "c.core")]
        rc, out, err, seconds = run_cli(argv)
        check_answer(argv, rc, out, err, seconds)
        assert os.listdir(outdir) == (["c.core"] if rc == 0 else []), err


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_samples_through_the_cli(workdir, data):
    name = data.draw(st.sampled_from(sorted(SAMPLES)), label="sample")
    blob = mutate(data, SAMPLES[name], SEGMENTS[name])
    run_all(workdir, blob, capture=data.draw(st.booleans(), label="capture"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() |
    st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) |
    st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
note_fields = st.fixed_dictionaries({}, optional={
    k: json_values | st.sampled_from(good) for k, good in (
        ("fdt_phys", [0x269e000, 0, (1 << 64) - 1, 1 << 64, -1]),
        ("bitmap_bytes", [512, 4096, 0, None]),
        ("generation", ["kho-v1", "kho-v4", ""]),
        ("release", ["7.3.4", "x" * 100, "a\nb"]),
        ("image_format", [1, 2, None]))})


def _replace_note(blob: bytes, desc: bytes) -> bytes:
    """The sample with its KHO_INSPECT note's JSON replaced by *desc*: the
    note segment and the file offsets after it are laid out again."""
    ehsize = 64
    phoff, = struct.unpack_from("<Q", blob, 32)
    phnum, = struct.unpack_from("<H", blob, 56)
    phdrs = [list(struct.unpack_from("<IIQQQQQQ", blob, phoff + 56 * i))
             for i in range(phnum)]
    (note,) = [p for p in phdrs if p[0] == 4]
    old = note[5]
    name = b"KHO_INSPECT\0"
    new = (struct.pack("<III", len(name), len(desc), 0x4B484F31) + name +
           desc + bytes(-len(desc) % 4))
    delta = len(new) - old
    body = blob[:note[2]] + new + blob[note[2] + old:]
    out = bytearray(body)
    for i, p in enumerate(phdrs):
        if p is note:
            p[5] = len(new)
        elif p[2] > note[2]:
            p[2] += delta
        struct.pack_into("<IIQQQQQQ", out, phoff + 56 * i, *p)
    assert phoff + 56 * phnum <= note[2] and ehsize <= phoff
    return bytes(out)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SAMPLES)), fields=note_fields,
       raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_arbitrary_image_notes_through_the_cli(workdir, name, fields, raw):
    desc = raw if raw is not None else json.dumps(fields).encode()
    run_all(workdir, _replace_note(SAMPLES[name], desc), capture=False)


def test_replace_note_keeps_a_sound_image(workdir):
    # The helper above must itself produce images that decode: the same
    # note JSON again gives the sample's own map.
    from kho_inspect.image import read_image_meta
    name = samples.available()[-1]
    meta = read_image_meta(samples.path(name))
    blob = _replace_note(SAMPLES[name], json.dumps(dict(meta, extra="x" * 9))
                         .encode())
    core = workdir / "renoted.core"
    core.write_bytes(blob)
    a = run_cli(["map", "--json", "--core", samples.path(name)])
    b = run_cli(["map", "--json", "--core", str(core)])
    assert a[0] == b[0] == 0
    assert json.loads(a[1])["ranges"] == json.loads(b[1])["ranges"]

"""The FDT reader against dtc, the independent oracle, both ways."""

import struct

import pytest
from hypothesis import given, strategies as st

from conftest import run_dtc
from helpers import u64le
from kho_inspect import fdt

DTS = b"""/dts-v1/;
/memreserve/ 0x10000000 0x4000;
/ {
    compatible = "kho-v1", "other";
    preserved-memory-map = [00 10 00 00 01 00 00 00];
    empty;
    kho_test {
        fdt = [00 20 00 00 00 00 00 00];
        data { nr_folios = <0x01020304>; };
    };
    memblock { fdt = [00 30 00 00 00 00 00 00]; };
};
"""


def test_dts_to_dtb_by_dtc_then_reader(dtc):
    blob = run_dtc(dtc, DTS)
    t = fdt.parse(blob)
    assert t.totalsize == len(blob)
    assert t.reservations == [(0x10000000, 0x4000)]
    root = t.root
    assert root.props["compatible"].strings() == ["kho-v1", "other"]
    # KHO integers are raw little-endian u64s: 0x1_0000_1000
    assert int.from_bytes(root.props["preserved-memory-map"].value,
                          "little") == 0x100001000
    assert root.props["empty"].value == b""
    assert [c.name for c in root.children] == ["kho_test", "memblock"]
    data = root.child("kho_test").child("data")
    assert data.props["nr_folios"].value == struct.pack(">I", 0x01020304)
    assert [p for p, _ in root.walk()] == ["/", "/kho_test",
                                          "/kho_test/data", "/memblock"]


def _to_dts(node, indent=""):
    """Render our parse as DTS (bytestrings), for dtc to re-compile."""
    out = []
    for p in node.props.values():
        if p.value:
            out.append(f"{indent}  {p.name} = [{p.value.hex(' ')}];")
        else:
            out.append(f"{indent}  {p.name};")
    for c in node.children:
        out.append(f"{indent}  {c.name} {{")
        out.extend(_to_dts(c, indent + "  "))
        out.append(f"{indent}  }};")
    return out


def test_reader_to_dts_back_through_dtc(dtc):
    """The other way: what the reader saw, written back as DTS, compiles
    (by dtc) to a tree dtc itself prints identically to the original."""
    blob = run_dtc(dtc, DTS)
    t = fdt.parse(blob)
    src = "/dts-v1/;\n/ {\n" + "\n".join(_to_dts(t.root)) + "\n};\n"
    again = run_dtc(dtc, src.encode())
    a = run_dtc(dtc, blob, "dtb", "dts")
    b = run_dtc(dtc, again, "dtb", "dts")
    strip = lambda s: [l for l in s.decode().splitlines()  # noqa: E731
                       if "memreserve" not in l]
    assert strip(a) == strip(b)


def test_real_layout_kho_fdt(dtc):
    blob = run_dtc(dtc, f'/dts-v1/; / {{ compatible = "kho-v3"; '
                        f'preserved-memory-map = {u64le(0xdead000)}; }};'
                   .encode())
    t = fdt.parse(blob + bytes(100))       # page padding after totalsize
    assert t.root.props["compatible"].string() == "kho-v3"


@pytest.mark.parametrize("mutate, msg", [
    (lambda b: b[:20], "too short"),
    (lambda b: b"\0\0\0\0" + b[4:], "bad magic"),
    (lambda b: b[:-8], "exceeds"),
    (lambda b: b[:4] + struct.pack(">I", 10) + b[8:], "smaller than the header"),
    (lambda b: b[:20] + struct.pack(">I", 2) + b[24:], "unsupported FDT version"),
    (lambda b: b[:8] + struct.pack(">I", 1 << 30) + b[12:], "structure block"),
    (lambda b: b[:12] + struct.pack(">I", 1 << 30) + b[16:], "strings block"),
])
def test_malformed_headers(dtc, mutate, msg):
    blob = run_dtc(dtc, DTS)
    with pytest.raises(fdt.FdtError, match=msg):
        fdt.parse(mutate(blob))


def _struct_block(blob):
    off = struct.unpack_from(">I", blob, 8)[0]
    return off


def test_bad_name_offset_and_token(dtc):
    blob = bytearray(run_dtc(dtc, b'/dts-v1/; / { a = <1>; };'))
    off = _struct_block(blob)
    # root BEGIN_NODE (4) + name "" padded (4), then PROP len nameoff
    assert struct.unpack_from(">I", blob, off + 8)[0] == fdt.FDT_PROP
    bad = bytearray(blob)
    struct.pack_into(">I", bad, off + 16, 0x7FFFFFFF)
    with pytest.raises(fdt.FdtError, match="name offset"):
        fdt.parse(bytes(bad))
    bad = bytearray(blob)
    struct.pack_into(">I", bad, off + 12, 0x7FFFFFFF)
    with pytest.raises(fdt.FdtError, match="property length"):
        fdt.parse(bytes(bad))
    bad = bytearray(blob)
    struct.pack_into(">I", bad, off + 8, 7)
    with pytest.raises(fdt.FdtError, match="unknown token 0x7"):
        fdt.parse(bytes(bad))


def test_depth_limit(dtc):
    src = "/dts-v1/; / { " + "n { " * 70 + "};" * 70 + " };"
    with pytest.raises(fdt.FdtError, match="deeper"):
        fdt.parse(run_dtc(dtc, src.encode()))


@given(st.data())
def test_fuzz_mutations_only_raise_fdterror(dtc_blob, data):
    """Any corruption of a valid blob parses or raises FdtError: never
    another exception, never a hang."""
    blob = bytearray(dtc_blob)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        fdt.parse(bytes(blob[:cut]))
    except fdt.FdtError:
        pass


@given(st.binary(max_size=512))
def test_fuzz_random_bytes(raw):
    try:
        fdt.parse(struct.pack(">I", fdt.FDT_MAGIC) + raw)
    except fdt.FdtError:
        pass


@pytest.fixture(scope="module")
def dtc_blob(dtc):
    return run_dtc(dtc, DTS)


NOP_DTS = b"""/dts-v1/;
/ {
    compatible = "kho-v1";
    gone = [de ad be ef ca fe];
    kept = <0x11223344>;
    nopnode { x = [aa bb cc dd 11 22 33 44]; };
    stays { y = <1>; };
};
"""


def _nop(blob: bytearray, start: int, nbytes: int) -> None:
    """Overwrite ``[start, start + nbytes)`` with FDT_NOP tokens, as
    libfdt's fdt_nop_property()/fdt_nop_node() do."""
    assert start % 4 == 0 and nbytes % 4 == 0
    for at in range(start, start + nbytes, 4):
        struct.pack_into(">I", blob, at, 4)          # FDT_NOP


def test_nop_tokens_are_skipped(dtc):
    """A property and a whole node overwritten with NOP tokens are gone,
    for dtc and for the reader alike; everything around them is kept."""
    blob = bytearray(run_dtc(dtc, NOP_DTS))
    value = blob.index(bytes.fromhex("deadbeefcafe"))
    _nop(blob, value - 12, 12 + 8)       # PROP, len, nameoff, value + pad
    name = blob.index(b"nopnode\0")
    # BEGIN_NODE, "nopnode\0", PROP x (12 + 8 bytes), END_NODE
    _nop(blob, name - 4, 4 + 8 + 12 + 8 + 4)
    t = fdt.parse(bytes(blob))
    assert sorted(t.root.props) == ["compatible", "kept"]
    assert [c.name for c in t.root.children] == ["stays"]
    src = "/dts-v1/;\n/ {\n" + "\n".join(_to_dts(t.root)) + "\n};\n"
    strip = lambda s: [l for l in s.decode().splitlines()  # noqa: E731
                       if "memreserve" not in l]
    assert strip(run_dtc(dtc, bytes(blob), "dtb", "dts")) == strip(
        run_dtc(dtc, run_dtc(dtc, src.encode()), "dtb", "dts"))


@pytest.mark.parametrize("version, last_comp, ok", [
    (17, 16, True),        # what dtc and the kernel write
    (17, 17, True),
    (18, 16, True),        # a later version readable as 17
    (17, 18, False),       # readable only by a version-18 reader
    (16, 16, False),       # no size_dt_struct before version 17
])
def test_version_and_last_compatible_version(dtc, version, last_comp, ok):
    blob = bytearray(run_dtc(dtc, b'/dts-v1/; / { a = <1>; };'))
    assert struct.unpack_from(">II", blob, 20) == (17, 16)
    struct.pack_into(">II", blob, 20, version, last_comp)
    if ok:
        t = fdt.parse(bytes(blob))
        assert (t.version, t.last_comp_version) == (version, last_comp)
    else:
        with pytest.raises(fdt.FdtError, match="unsupported FDT version"):
            fdt.parse(bytes(blob))

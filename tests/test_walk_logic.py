"""Walker and check logic that needs no kernel: block diffs, marker
detection in memmap bytes, radix leaves, and the one-line errors."""

import struct

import drgn
import pytest

from abi_encode import radix_key       # docs/abi.md 5.2, not kho_inspect
from kho_inspect.decode.radix import leaf_runs
from kho_inspect import cli
from kho_inspect.abi.common import KHO_PAGE_MAGIC
from kho_inspect.check import compare_views, diff_runs
from kho_inspect.cli import walker as cliw
from kho_inspect.errors import KhoError
from kho_inspect.ranges import Run
from kho_inspect.walk import _read, incoming, state, tracker


# -- check.blocks --------------------------------------------------------

def test_diff_same_blocks_split_differently():
    a = [Run(0x100000, 0, 4), Run(0x200000, 9, 1)]
    b = [(0x102000, 0, 2), (0x100000, 0, 2), (0x200000, 9, 1)]
    assert diff_runs(a, b) == []


def test_diff_reports_phys_and_order():
    a = [Run(0x100000, 0, 4), Run(0x200000, 9, 1)]
    b = [Run(0x100000, 0, 2), Run(0x200000, 8, 2), Run(0x900000, 0, 1)]
    got = [(d.only_in, d.run.phys, d.run.order, d.run.count)
           for d in diff_runs(a, b, "tracker", "map")]
    assert got == [("tracker", 0x102000, 0, 2), ("map", 0x200000, 8, 2),
                   ("tracker", 0x200000, 9, 1), ("map", 0x900000, 0, 1)]
    assert "phys 0x102000 order 0 (x2" in str(diff_runs(a, b, "tracker",
                                                        "map")[0])


def test_diff_duplicates_and_overlaps_are_sets():
    a = [Run(0x100000, 0, 4), Run(0x101000, 0, 2)]
    b = [Run(0x100000, 0, 4)]
    assert diff_runs(a, b) == []


def test_diff_huge_orders_without_expanding():
    a = [Run(0, 0, 1 << 30)]                  # 4 TiB of order-0 blocks
    b = [Run(0, 0, (1 << 30) - 1)]
    (d,) = diff_runs(a, b, "a", "b")
    assert (d.only_in, d.run.phys, d.run.count) == ("a", ((1 << 30) - 1)
                                                    << 12, 1)


# -- markers in memmap bytes ------------------------------------------------

PSIZE, POFF = 64, 40


def memmap(privs: dict, n: int = 64) -> bytes:
    b = bytearray(PSIZE * n)
    for i, v in privs.items():
        struct.pack_into("<Q", b, i * PSIZE + POFF, v)
    return bytes(b)


def test_find_magic_only_at_private():
    data = bytearray(memmap({3: KHO_PAGE_MAGIC << 32 | 2,
                             8: KHO_PAGE_MAGIC << 32 | 0}))
    # the magic bytes elsewhere in a struct page are not a marker
    struct.pack_into("<I", data, 5 * PSIZE + 8, KHO_PAGE_MAGIC)
    out = []
    incoming._find_magic(bytes(data), 0x1000, PSIZE, POFF, out)
    assert out == [Run(0x1003 << 12, 2, 1), Run(0x1008 << 12, 0, 1)]


def test_find_orders_needs_alignment():
    out = []
    incoming._find_orders(memmap({4: 2, 6: 2, 9: 0, 16: 70}), 0x1000,
                          PSIZE, POFF, out)
    assert out == [Run(0x1004 << 12, 2, 1)]


def test_chunks_split_at_sections():
    n = incoming.CHUNK_PAGES
    assert list(incoming._chunks(n - 2, 2 * n + 1)) == [
        (n - 2, n), (n, 2 * n), (2 * n, 2 * n + 1)]


# -- radix leaves ------------------------------------------------------------

#: docs/abi.md 5.1-5.3: 4 KiB nodes, a table of 512 u64s, a leaf of 32768
#: bits (key bits 0-14)
NODE_SIZE, TABLE_ENTRIES, LEAF_BITS = 4096, 512, 32768

def _leaf(bits_):
    x = 0
    for b in bits_:
        x |= 1 << b
    return x.to_bytes(NODE_SIZE, "little")


def test_radix_leaf_runs():
    key = radix_key(0x40000000, 0)
    prefix = key & ~(LEAF_BITS - 1)
    low = key & (LEAF_BITS - 1)
    runs = leaf_runs(_leaf([low, low + 1, low + 5]), prefix)
    assert runs
    assert [tuple(r) for r in runs] == [(0x40000000, 0, 2),
                                        (0x40005000, 0, 1)]


def test_radix_leaf_zero_prefix_orders():
    keys = [radix_key(0, 40), radix_key(1 << 52, 40)]
    runs = leaf_runs(_leaf(keys), 0)
    assert sorted(tuple(r) for r in runs) == [(0, 40, 1), (1 << 52, 40, 1)]
    with pytest.raises(KhoError, match="key 0"):
        leaf_runs(_leaf([0]), 0)


def test_radix_leaf_empty():
    assert not leaf_runs(bytes(NODE_SIZE), 1 << 52)


# -- the radix walk through the direct map ---------------------------------

DIRECT_MAP = 0xFFFF888000000000


def _table(entries):
    t = [0] * TABLE_ENTRIES
    for i, v in entries.items():
        t[i] = v
    return struct.pack(f"<{TABLE_ENTRIES}Q", *t)


def _walk(monkeypatch, pages, root=0x100000):
    """walk_radix_tree over *pages* ({phys: bytes}) seen only through a
    direct map at DIRECT_MAP (no physical reads), without DWARF."""
    from kho_inspect.memory import x86_64_platform
    prog = drgn.Program(x86_64_platform())
    for phys, data in pages.items():
        prog.add_memory_segment(DIRECT_MAP + phys, len(data),
                                lambda a, c, o, p, d=data: d[o:o + c])
    monkeypatch.setattr(tracker, "_sizeof", lambda prog, name: 4096)
    monkeypatch.setattr(tracker, "direct_map_base", lambda prog: DIRECT_MAP)
    root_obj = drgn.Object(prog, "unsigned long", DIRECT_MAP + root)
    return tracker.walk_radix_tree(prog, root_obj, "kho_out.radix_tree.root")


# block (0x1000000, order 0): key 1<<52 | 0x1000 -> root entry key>>51 = 2,
# entries 0 at levels 4..1, leaf bits 4096 and 4097 -> Run(0x1000000, 0, 2)
CHAIN = {0x100000: _table({2: 0x101000}), 0x101000: _table({0: 0x102000}),
         0x102000: _table({0: 0x103000}), 0x103000: _table({0: 0x104000}),
         0x104000: _table({0: 0x105000}), 0x105000: _leaf([4096, 4097])}


def test_walker_radix_through_direct_map(monkeypatch):
    t = _walk(monkeypatch, CHAIN)
    assert [tuple(r) for r in t.runs] == [(0x1000000, 0, 2)]
    assert t.root_phys == 0x100000
    assert [(a - DIRECT_MAP, k) for a, _, k in t.pages] == [
        (0x100000, "radix-table"), (0x101000, "radix-table"),
        (0x102000, "radix-table"), (0x103000, "radix-table"),
        (0x104000, "radix-table"), (0x105000, "radix-leaf")]


@pytest.mark.parametrize("change, msg", [
    ({0x104000: _table({0: 0x105010})},
     r"radix-table 2/0/0/0 at phys 0x104000: entry 0 -> 0x105010 is not "
     "page-aligned"),
    # L2 holds a second L1 whose leaf is the first L1's leaf
    ({0x103000: _table({0: 0x104000, 5: 0x106000}),
      0x106000: _table({9: 0x105000})},
     r"radix-table 2/0/0/5 at phys 0x106000: entry 9 -> 0x105000 is a node "
     "reached twice"),
    # L1 points back at L4
    ({0x104000: _table({0: 0x101000})},
     "entry 0 -> 0x101000 is a node reached twice"),
    # a table entry no direct-map address can reach (not an OverflowError)
    ({0x104000: _table({0: 0xFFFFF00000000000})},
     r"cannot read kho_out.radix_tree.root radix-leaf 2/0/0/0/0 at phys "
     "0xfffff00000000000: beyond the end of the direct map"),
    # an address the dump does not hold
    ({0x104000: _table({0: 0x7000000})},
     r"cannot read kho_out.radix_tree.root radix-leaf 2/0/0/0/0 at "
     "0xffff888007000000"),
])
def test_walker_radix_refusals(monkeypatch, change, msg):
    with pytest.raises(KhoError, match=msg):
        _walk(monkeypatch, CHAIN | change)


def test_walker_radix_unaligned_root(monkeypatch):
    with pytest.raises(KhoError, match="root 0x100200 is not 4096-byte "
                                       "aligned"):
        _walk(monkeypatch, CHAIN, root=0x100200)


# -- one-line errors ----------------------------------------------------------

def test_kernel_without_kho():
    prog = drgn.Program()
    for fn in (tracker.outgoing_tracker, state.kho_enabled,
               state.scratch_areas, state.incoming_state):
        with pytest.raises(KhoError, match="CONFIG_KEXEC_HANDOVER"):
            fn(prog)


def test_fault_message_names_what_and_dump_filtering():
    from kho_inspect.memory import x86_64_platform
    prog = drgn.Program(x86_64_platform())
    e = drgn.FaultError("could not read memory", 0x1234000)
    msg = _read.fault_message(prog, "radix-leaf 2/0/0/0/1", e)
    assert "radix-leaf 2/0/0/0/1 at 0x1234000" in msg
    assert "makedumpfile" in msg
    with pytest.raises(KhoError, match="cannot read bitmap #3"):
        _read.read(prog, 0x1234000, 8, "bitmap #3")


def test_unknown_view():
    with pytest.raises(KhoError, match="unknown view 'tracer'"):
        compare_views(drgn.Program(), ["tracker", "tracer"])
    with pytest.raises(KhoError, match="give two or more"):
        compare_views(drgn.Program(), ["tracker"])


def _run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _kcore_exists(monkeypatch, exists: bool):
    """Make /proc/kcore exist or not, whatever this machine has."""
    real = __import__("os").path.exists
    monkeypatch.setattr("os.path.exists", lambda p: exists
                        if p == "/proc/kcore" else real(p))


@pytest.mark.parametrize("cmd", ["status", "tracker", "incoming", "check"])
def test_cli_not_root(monkeypatch, capsys, cmd):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    _kcore_exists(monkeypatch, True)        # not root is then the problem
    rc, out, err = _run(capsys, cmd)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "needs root" in err


@pytest.mark.parametrize("euid", [0, 1000])
def test_cli_no_kcore_is_not_a_root_problem(monkeypatch, capsys, euid):
    monkeypatch.setattr("os.geteuid", lambda: euid)
    _kcore_exists(monkeypatch, False)
    rc, out, err = _run(capsys, "status")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "this kernel has no /proc/kcore (CONFIG_PROC_KCORE" in err
    assert "needs root" not in err


def test_cli_no_kcore(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    _kcore_exists(monkeypatch, False)
    rc, _, err = _run(capsys, "status")
    assert rc == 2 and "/proc/kcore" in err and err.count("\n") == 1


def test_cli_missing_core(capsys, tmp_path):
    rc, _, err = _run(capsys, "tracker", "--core", str(tmp_path / "nope"))
    assert rc == 2 and "no such file" in err.lower()


def test_missing_debug_info_names_files(monkeypatch):
    from kho_inspect.cli import source
    src = source.Source("test")
    src.prog = object()

    def missing(prog, vmlinux):
        raise KhoError("missing kernel debug info: could not find vmlinux")
    monkeypatch.setattr(source.memory, "load_debug_info", missing)
    with pytest.raises(KhoError, match=r"looked for .*/boot/vmlinux-"):
        src.debug_program()


def test_symbols_file_missing(tmp_path):
    from kho_inspect.cli import source
    src = source.Source("test", core="unused", symbols=str(tmp_path / "vmlinux"))

    def program():
        raise AssertionError("must not be reached")
    src.program = program
    with pytest.raises(KhoError, match="-s .*vmlinux: no such file"):
        src.debug_program()


@pytest.mark.parametrize("argv, want", [([], 12345), (["--scan-limit", "0"],
                                                      None),
                                        (["--scan-limit", "7"], 7)])
def test_incoming_scan_limit_default_is_the_walkers(monkeypatch, capsys,
                                                    argv, want):
    got = []

    def view(prog, markers, max_pages):
        got.append(max_pages)
        return {"release": None, "problems": [],
                "kho_in": {"fdt_phys": 0x1000, "scratch_phys": 0x2000}}
    monkeypatch.setattr(incoming, "DEFAULT_SCAN_PAGES", 12345)
    monkeypatch.setattr(cliw, "_program", lambda args: None)
    monkeypatch.setattr("kho_inspect.walk.views.incoming_view", view)
    rc, out, err = _run(capsys, "incoming", "--json", *argv)
    assert rc == 0, err
    assert got == [want]


def test_incoming_scan_limit_help_states_the_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["incoming", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # 1 << 28 struct pages of 4 KiB pages = 1 TiB of RAM
    assert incoming.DEFAULT_SCAN_PAGES == 1 << 28
    assert "default 256M struct pages = 1 TiB of RAM" in text


def test_walker_text_shows_compat_tokens():
    fdt = {"phys": 0x1000, "generation": "kho-v4",
           "compat_tokens": ["radix-v1"], "size": 200, "subnodes": []}
    status = {"release": "7.4", "source": "test", "enabled": True,
              "fdt": fdt, "kexec_image": None, "problems": []}
    assert "kho-v4 (tokens: radix-v1) at 0x1000" in cliw.status_text(status)
    inc = {"release": "7.4", "problems": [], "fdt": fdt,
           "kho_in": {"fdt_phys": 0x1000, "scratch_phys": 0x2000}}
    assert "incoming FDT: kho-v4 (tokens: radix-v1), 200 bytes" in \
        cliw.incoming_text(inc)

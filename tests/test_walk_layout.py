"""walk/layout.py's memory nodes (``numa_nodes``) over kernel DWARF and
hand-made ``pglist_data``: both layouts, ``contig_page_data`` (no
CONFIG_NUMA) and ``node_data[]`` with ``node_states[N_ONLINE]`` (drgn's
for_each_online_node), on the synthetic 7.3 flat and NUMA variants always
and on every vmtest build the cache holds. Expected nodes are written by
hand: every online node with pages, ``(nid, node_start_pfn, node_start_pfn
+ node_spanned_pages)``, sorted by start (include/linux/mmzone.h)."""

import struct

import pytest

import variants
from walk_synth import SynthKernel

from kho_inspect.errors import KhoError
from kho_inspect.walk.layout import numa_nodes


@pytest.fixture(params=variants.params(variants.PGDATS), scope="module")
def dwarf(request, kdwarf):
    return variants.resolve(request.param, kdwarf)


@pytest.fixture
def kernel(dwarf, tmp_path):
    return SynthKernel.of(dwarf, tmp_path)


def _node(k, nid, start_pfn, spanned):
    pg = k.pgdat(nid)
    if not k.numa:
        k.zero("contig_page_data")
    k.write(pg.node_start_pfn.address_, struct.pack("<Q", start_pfn))
    k.write(pg.node_spanned_pages.address_, struct.pack("<Q", spanned))


def test_one_node_without_numa(kernel):
    if kernel.numa:
        pytest.skip("a NUMA kernel: node_data[] (test_nodes_with_numa)")
    _node(kernel, 0, 0x100, 0x7ff00)
    assert numa_nodes(kernel.prog) == [(0, 0x100, 0x80000)]


def test_nodes_with_numa(kernel):
    if not kernel.numa:
        pytest.skip("no CONFIG_NUMA: contig_page_data only "
                    "(test_one_node_without_numa)")
    # node 1 lies below node 0; node 2 has pages but goes offline; node 3
    # is online without pages
    _node(kernel, 0, 0x41000, 0x3f000)
    _node(kernel, 1, 0, 0x41000)
    _node(kernel, 2, 0x80000, 0x1000)
    _node(kernel, 3, 0x90000, 0)
    kernel.node_online(2, False)
    assert numa_nodes(kernel.prog) == [(1, 0, 0x41000),
                                       (0, 0x41000, 0x80000)]
    # an online node whose pglist_data is not in the dump is named
    kernel.node_online(2, True)
    start = kernel.pgdat(2).node_start_pfn.address_
    del kernel.phys[(start - kernel.virt(0)) // 4096]
    with pytest.raises(KhoError, match="memory nodes"):
        numa_nodes(kernel.prog)

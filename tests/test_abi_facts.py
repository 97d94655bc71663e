"""Small ABI facts checked against docs/abi.md's text, by hand-computed
values (the kill list of bench/mutation.py over kho_inspect/abi)."""

import pytest

from kho_inspect.abi import radix, v1
from kho_inspect.abi.common import split_pages


@pytest.mark.parametrize("phys, order, key", [
    # docs/abi.md 5.2: key = (1 << (52 - order)) | (phys >> (12 + order))
    (0x40000000, 0, (1 << 52) | 0x40000),
    (0x40000000, 9, (1 << 43) | 0x200),
    (0x1000, 0, (1 << 52) | 1),
    (0, 40, 1 << 12),
    (1 << 52, 40, (1 << 12) | 1),
])
def test_radix_key(phys, order, key):
    assert radix.encode_key(phys, order) == key
    assert radix.decode_key(key) == (phys, order)


@pytest.mark.parametrize("release, nbytes", [
    # docs/abi.md 4.2: 512-byte bitmaps in 6.16 and 6.17, a page from 6.18
    ("6.16", 512), ("6.17.8", 512), ("6.17-rc3", 512),
    ("6.17.8-amd64", 512), ("6.18", 4096), ("6.18.15", 4096),
    ("6.18-rc1", 4096), ("7.0.1", 4096),
    ("6", None), ("six.17", None), ("", None),
])
def test_kho_v1_bitmap_size_by_release(release, nbytes):
    assert v1.bitmap_bytes_for_release(release) == nbytes


def test_node_split_checks_the_blocks_last_page():
    # 7.1's __kho_preserve_pages_order lowers the order until the block's
    # first and last page share a node. A boundary at pfn 7: the order-3
    # block 0-7 would end on node 1, an order-2 block 0-3 does not; then
    # 4-5, 6 (node 0) and 7 (node 1).
    def node_of(p):
        return 0 if p < 7 else 1
    assert split_pages(0, 8, node_of) == [(0, 2), (4, 1), (6, 0), (7, 0)]
    assert split_pages(0, 8) == [(0, 3)]

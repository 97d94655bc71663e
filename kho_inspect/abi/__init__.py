"""What each KHO ABI generation looks like in memory: constants, layouts and
encodings, with no I/O. Every fact lives in exactly one module here; the
prose, with the kernel sources and observations behind it, is docs/abi.md.

* :mod:`.common` - facts shared by every generation (pages, FDT names, markers).
* :mod:`.v1` - ``kho-v1`` (6.16-7.0): chunk list of bitmaps.
* :mod:`.radix` - ``kho-v2``/``kho-v3``/``kho-v4`` (7.1+): page-sized radix tree.
* :mod:`.vmalloc` - the vmalloc preservation descriptor (6.18+).
* :mod:`.clients` - blobs of known KHO clients (memblock, test_kho, ...).
* :mod:`.generations` - compatible string -> generation.
"""

"""vmalloc preservation: ``struct kho_vmalloc`` and its chunk list.

Since Linux 6.18 (``kho_preserve_vmalloc``); the layout has not changed
since. See docs/abi.md section 7.1.
"""

import struct

#: struct kho_vmalloc { u64 first; u32 total_pages; u16 flags; u16 order; }
DESCRIPTOR = struct.Struct("<QIHH")
FLAG_ALLOC = 1
FLAG_HUGE_VMAP = 2
KNOWN_FLAGS = FLAG_ALLOC | FLAG_HUGE_VMAP

CHUNK_SIZE = 4096
CHUNK_NEXT = struct.Struct("<Q")
#: Entries per chunk: (4096 - 8) / 8.
CHUNK_ENTRIES = (CHUNK_SIZE - CHUNK_NEXT.size) // 8

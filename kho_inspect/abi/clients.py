"""Blobs of the KHO clients kho_inspect knows how to show.

Source: shared/kho-abi.md sections 3.7 and 7.
"""

import struct

FDT_MAGIC = b"\xd0\x0d\xfe\xed"

# memblock reserve_mem: FDT "memblock-v1" with "reserve-mem-v1" children.
MEMBLOCK_NODE = "memblock"
MEMBLOCK_COMPATIBLE = "memblock-v1"
RESERVE_MEM_COMPATIBLE = "reserve-mem-v1"

# lib/test_kho.c
TEST_KHO_NODE = "kho_test"
TEST_KHO_COMPATIBLE = "kho-test-v1"
TEST_KHO_MAGIC = 0x4B484F21            # "KHO!"
#: folios_info entries are (phys | order): the order sits in the page offset.
TEST_KHO_ORDER_MASK = 0xFFF

# kexec-metadata (7.1+): packed {u32 version; char release[65]; u32 count}
KEXEC_METADATA_NODE = "kexec-metadata"
KEXEC_METADATA = struct.Struct("<I65sI")
KEXEC_METADATA_VERSION = 1

# LUO: an FDT before 7.2, a raw struct luo_ser from 7.2.
LUO_NODE = "LUO"
LUO_SER = struct.Struct("<8sQQQ")      # compatible, liveupdate_num, sessions, flbs

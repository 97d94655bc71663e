"""Blobs of the KHO clients kho_inspect knows how to show.

See docs/abi.md section 7.
"""

import struct

# memblock reserve_mem (6.16+): FDT "memblock-v1" with "reserve-mem-v1"
# children (include/linux/kho/abi/memblock.h in 7.1+; not in 6.19).
MEMBLOCK_NODE = "memblock"
MEMBLOCK_COMPATIBLE = "memblock-v1"
RESERVE_MEM_COMPATIBLE = "reserve-mem-v1"

# lib/test_kho.c (6.17+)
TEST_KHO_NODE = "kho_test"
TEST_KHO_COMPATIBLE = "kho-test-v1"
TEST_KHO_MAGIC = 0x4B484F21            # "KHO!"
#: folios_info entries are (phys | order): the order sits in the page offset.
TEST_KHO_ORDER_MASK = 0xFFF

# kexec-metadata, since Linux 7.1 (include/linux/kho/abi/kexec_metadata.h):
# packed {u32 version; char previous_release[65]; u32 kexec_count}
KEXEC_METADATA_NODE = "kexec-metadata"
KEXEC_METADATA = struct.Struct("<I65sI")
KEXEC_METADATA_VERSION = 1

# LUO (6.19+): an FDT up to 7.1, a raw struct luo_ser since Linux 7.2.
LUO_NODE = "LUO"
LUO_SER = struct.Struct("<8sQQQ")      # compatible, liveupdate_num, sessions, flbs


# kho_workload: the vmtests' test module (vmtests/kmod/kho_workload.c, its
# contract in vmtests/kmod/README.md). Before 7.1 an FDT with compatible
# "kho-workload-v1" and property "items"; from 7.1 a raw blob holding the
# same table.
WORKLOAD_NODE = "kho_workload"
WORKLOAD_COMPATIBLE = "kho-workload-v1"
WORKLOAD_PROP_ITEMS = "items"
WORKLOAD_MAGIC = b"KHOWLD01"
WORKLOAD_HEADER = struct.Struct("<8sII")            # magic, version, nr
#: id, kind, phys, nr_pages, order, state, csum, kho_vmalloc, stride, pad
WORKLOAD_ENTRY = struct.Struct("<IIQQiIQ16sI4x")
#: "scatter": nr_pages order-0 blocks, one every ``stride`` pages from phys
WORKLOAD_KINDS = {1: "blob", 2: "folio", 3: "pages", 4: "phys", 5: "vmalloc",
                  6: "scatter"}
WORKLOAD_STATES = {1: "preserved", 2: "unpreserved"}

#: Sub-node name -> the compatible its FDT blob must carry; the client's own
#: reader in the next kernel refuses any other (fdt_node_check_compatible).
FDT_COMPATIBLE = {MEMBLOCK_NODE: MEMBLOCK_COMPATIBLE,
                  TEST_KHO_NODE: TEST_KHO_COMPATIBLE,
                  WORKLOAD_NODE: WORKLOAD_COMPATIBLE}

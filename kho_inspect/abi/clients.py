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
LUO_SER_COMPATIBLE = "luo-v5"           # LUO_ABI_COMPATIBLE, 7.2+

# LUO's records, from include/linux/kho/abi/luo.h and block.h (6.19.11,
# 7.1.13, 7.3.4). Every one is a kho_alloc_preserve() folio of
# get_order(size): restored whole by kho_restore_free().
#: packed luo_session_ser: char name[64]; luo_file_set_ser {files, count}
LUO_SESSION_SER = struct.Struct("<64sQQ")
#: packed luo_file_ser: char compatible[48]; u64 data; u64 token
LUO_FILE_SER = struct.Struct("<48sQQ")
#: packed luo_flb_header_ser {pgcnt, count}, then luo_flb_ser entries
LUO_FLB_HEADER = struct.Struct("<QQ")
#: packed luo_flb_ser: char name[48]; u64 data; u64 count
LUO_FLB_SER = struct.Struct("<48sQQ")
# 7.2+ (block.h): sessions_pa and each session's files head a chain of
# KHO_BLOCK_SIZE (PAGE_SIZE) blocks, each {u64 next; u64 count} + entries.
KHO_BLOCK_HEADER = struct.Struct("<QQ")
KHO_BLOCK_SIZE = 4096
KHO_MAX_BLOCKS = 10000                  # kho_block.c's corruption limit
# 6.19-7.1: the "LUO" blob is an FDT.
LUO_FDT_COMPATIBLE = "luo-v1"
LUO_FDT_LIVEUPDATE_NUM = "liveupdate-number"
LUO_SESSION_NODE = "luo-session"
LUO_SESSION_COMPATIBLE = "luo-session-v2"
LUO_SESSION_HEADER = "luo-session-header"  # u64 phys of {u64 count} + sessions
LUO_SESSION_PGCNT = 16                  # luo_session.c: the session array
LUO_FILE_PGCNT = 2                      # luo_file.c: a session's file array
LUO_FLB_NODE = "luo-flb"                # 7.1 (not in 6.19)
LUO_FLB_HEADER_PROP = "luo-flb-header"  # u64 phys of luo_flb_header_ser

# memfd's LUO file handler (include/linux/kho/abi/memfd.h): luo_file_ser's
# data is the phys of a memfd_luo_ser (its own page); its kho_vmalloc lists
# nr_folios packed memfd_luo_folio_ser {u64 pfn:52, flags:12; u64 index}.
#: memfd-v1 (6.19): pos, size, nr_folios, folios (kho_vmalloc)
#: memfd-v2 (7.1+): pos, size, u32 seals, u32 flags, nr_folios, folios
MEMFD_SER = {"memfd-v1": struct.Struct("<QQQ16s"),
             "memfd-v2": struct.Struct("<QQIIQ16s")}
MEMFD_FOLIO_SER = struct.Struct("<QQ")
MEMFD_PFN_BITS = 52


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
#: "numa": a page run across a NUMA node boundary (kho_preserve_pages)
WORKLOAD_KINDS = {1: "blob", 2: "folio", 3: "pages", 4: "phys", 5: "vmalloc",
                  6: "scatter", 7: "numa"}
WORKLOAD_STATES = {1: "preserved", 2: "unpreserved"}
#: KW_MAX_PAGES: the most pages one item spans (a scatter item: nr_pages *
#: stride). The module's reader refuses a table with a larger item
#: (kw_read_table: -EINVAL), so no real table holds one; it also bounds the
#: claims a scatter item makes (one per block).
WORKLOAD_MAX_PAGES = 1 << 20
#: Kinds whose ``order`` is the one block's order (kho_preserve_folio);
#: the others write -1.
WORKLOAD_ORDERED = ("blob", "folio")

#: Sub-node name -> the compatible its FDT blob must carry; the client's own
#: reader in the next kernel refuses any other (fdt_node_check_compatible).
FDT_COMPATIBLE = {MEMBLOCK_NODE: MEMBLOCK_COMPATIBLE,
                  TEST_KHO_NODE: TEST_KHO_COMPATIBLE,
                  LUO_NODE: LUO_FDT_COMPATIBLE,
                  WORKLOAD_NODE: WORKLOAD_COMPATIBLE}

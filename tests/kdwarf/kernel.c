/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A pretend vmlinux: DWARF for the kernel layouts kho_inspect's walker reads,
 * for the unit tests (tests/variants.py compiles it, tests/walk_synth.py
 * loads it under hand-made memory). It is the tests' oracle, so every layout below
 * is copied from the kernel sources, never from kho_inspect: each block
 * names the file it comes from. Sources read: the Debian orig tarballs of
 * 6.17.8, 6.18.15, 6.19.11, 7.1.13 and linux-source-7.3 (7.3.4), x86-64,
 * with the options of vmtests/kho.config on top of allnoconfig (+
 * kho-numa.config for 7.3 NUMA, which brings SMP): no SMP unless NUMA, no
 * lockdep, no debug locks, no MEMCG, CONFIG_CMA, CONFIG_MEMORY_ISOLATION,
 * CONFIG_KEXEC_FILE, CONFIG_KEXEC_HANDOVER_DEBUGFS, no CRASH_HOTPLUG, no IMA.
 *
 * Every struct is complete for those configurations (same members, offsets
 * and sizes as the kernel's DWARF) except struct zone and struct pglist_data,
 * which keep only the members read here, in the kernel's order. Where a
 * vmtest build is cached, tests/test_walk_dwarf.py compares its synthetic
 * twin with it member by member (done for the 6.17.8 and 7.3.4 NUMA builds
 * when this file was written).
 *
 * One variant per -D flag set (tests/variants.py):
 *   -DKV=617   6.17.8: kho-v1, kho_out.ser.track, 512-byte bitmaps
 *   -DKV=618   6.18.15: same, 4096-byte bitmaps, union kho_page_info
 *   -DKV=619   6.19.11: kho_out.track, kho_in.mem_map_phys, LUO arrays
 *   -DKV=701   7.1.13: radix tree, kho_in.previous_release, LUO FLB
 *   -DKV=703   7.3.4: kho_in.radix_tree, LUO kho_block_set, luo_ser
 *   -DKV=703 -DCONFIG_NUMA
 *              7.3.4 with kho-numa.config (SMP, node_data[])
 *
 * Contents are irrelevant (SynthKernel serves memory from the tests' own
 * pages): only addresses, types and symbols matter. kernel.lds places the
 * image at 0xffffffff81000000 like an x86-64 kernel, with .init.data between
 * __init_begin and __init_end.
 */

#ifndef KV
#error "build with -DKV=617|618|619|701|703"
#endif

#ifdef CONFIG_NUMA
#define CONFIG_SMP 1		/* vmtests/kho-numa.config: x86-64 NUMA needs SMP */
#endif

#define __used __attribute__((used))
#define __packed __attribute__((packed))
#define __aligned(x) __attribute__((aligned(x)))
#define __section(s) __attribute__((section(s)))
#define __initdata __section(".init.data")
#define __ro_after_init __section(".data..ro_after_init")
#define __init __section(".init.text")

#define PAGE_SHIFT 12
#define PAGE_SIZE (1UL << PAGE_SHIFT)
#define BITS_PER_LONG 64
#define BITS_PER_BYTE 8
#define BITS_TO_LONGS(n) (((n) + BITS_PER_LONG - 1) / BITS_PER_LONG)
#define DECLARE_BITMAP(name, bits) unsigned long name[BITS_TO_LONGS(bits)]

/* ---- include/linux/types.h, include/uapi/asm-generic/int-ll64.h ------- */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef _Bool bool;
typedef unsigned long size_t;		/* __kernel_size_t on x86-64 */
typedef u64 phys_addr_t;		/* CONFIG_PHYS_ADDR_T_64BIT */
typedef phys_addr_t resource_size_t;
typedef unsigned int gfp_t;
typedef unsigned long pgoff_t;

typedef struct {
	int counter;
} atomic_t;

typedef struct {
	long counter;			/* s64 */
} atomic64_t;

typedef atomic64_t atomic_long_t;	/* include/linux/atomic/atomic-long.h */

struct list_head {
	struct list_head *next, *prev;
};

struct callback_head {
	struct callback_head *next;
	void (*func)(struct callback_head *head);
} __aligned(sizeof(void *));
#define rcu_head callback_head

/* include/linux/llist.h */
struct llist_node {
	struct llist_node *next;
};

struct llist_head {
	struct llist_node *first;
};

/* ---- locks: include/linux/spinlock_types_raw.h: with CONFIG_SMP (the NUMA
 *      build) arch/x86's asm/spinlock_types.h, i.e.
 *      include/asm-generic/qspinlock_types.h; without it (the flat builds:
 *      allnoconfig leaves SMP off) include/linux/spinlock_types_up.h, an
 *      empty struct. include/linux/spinlock_types.h, osq_lock.h,
 *      mutex_types.h, rwsem.h; kernel/Kconfig.locks: MUTEX_SPIN_ON_OWNER
 *      and RWSEM_SPIN_ON_OWNER (the osq members) need SMP. ---------------- */
#ifdef CONFIG_SMP
typedef struct qspinlock {
	union {
		atomic_t val;
		struct {
			u8 locked;
			u8 pending;
		};
		struct {
			u16 locked_pending;
			u16 tail;
		};
	};
} arch_spinlock_t;
#else
typedef struct { } arch_spinlock_t;
#endif

typedef struct raw_spinlock {
	arch_spinlock_t raw_lock;
} raw_spinlock_t;

typedef struct spinlock {
	union {
		struct raw_spinlock rlock;
	};
} spinlock_t;

struct optimistic_spin_queue {
	atomic_t tail;
};

struct mutex_waiter;
struct rwsem_waiter;

struct mutex {
	atomic_long_t owner;
	raw_spinlock_t wait_lock;
#ifdef CONFIG_SMP
	struct optimistic_spin_queue osq;	/* CONFIG_MUTEX_SPIN_ON_OWNER */
#endif
#if KV >= 701
	struct mutex_waiter *first_waiter;	/* 7.1+ */
#else
	struct list_head wait_list;		/* 6.17 - 6.19 */
#endif
};

struct rw_semaphore {
	atomic_long_t count;
	atomic_long_t owner;
#ifdef CONFIG_SMP
	struct optimistic_spin_queue osq;	/* CONFIG_RWSEM_SPIN_ON_OWNER */
#endif
	raw_spinlock_t wait_lock;
#if KV >= 701
	struct rwsem_waiter *first_waiter;	/* 7.1+ */
#else
	struct list_head wait_list;		/* 6.17 - 6.19 */
#endif
};

/* include/linux/notifier.h */
struct notifier_block;
struct blocking_notifier_head {
	struct rw_semaphore rwsem;
	struct notifier_block *head;
};

/* ---- include/linux/xarray.h (CONFIG_BASE_SMALL=n: 64 slots) ----------- */
#define XA_CHUNK_SHIFT 6
#define XA_CHUNK_SIZE (1UL << XA_CHUNK_SHIFT)
#define XA_MAX_MARKS 3
#define XA_MARK_LONGS BITS_TO_LONGS(XA_CHUNK_SIZE)

struct xarray {
	spinlock_t xa_lock;
	gfp_t xa_flags;
	void *xa_head;
};

struct xa_node {
	unsigned char shift;
	unsigned char offset;
	unsigned char count;
	unsigned char nr_values;
	struct xa_node *parent;
	struct xarray *array;
	union {
		struct list_head private_list;
		struct rcu_head rcu_head;
	};
	void *slots[XA_CHUNK_SIZE];
	union {
		unsigned long tags[XA_MAX_MARKS][XA_MARK_LONGS];
		unsigned long marks[XA_MAX_MARKS][XA_MARK_LONGS];
	};
};

/* ---- struct page: include/linux/mm_types.h ----------------------------
 * CONFIG_HAVE_ALIGNED_STRUCT_PAGE, no MEMCG/SLAB_OBJ_EXT/KMSAN: 56 bytes of
 * members, 16-byte aligned, so 64. */
struct address_space;
struct page_pool;

#if KV >= 618
typedef struct {
	unsigned long f;
} memdesc_flags_t;			/* 6.18+ */
#endif

struct page {
#if KV >= 618
	memdesc_flags_t flags;
#else
	unsigned long flags;
#endif
	union {
		struct {	/* Page cache and anonymous pages */
			union {
				struct list_head lru;
#if KV < 618
				struct {
					void *__filler;
					unsigned int mlock_count;
				};
#endif
				struct list_head buddy_list;
				struct list_head pcp_list;
#if KV < 618
				struct {
					struct llist_node pcp_llist;
					unsigned int order;
				};
#else
				struct llist_node pcp_llist;
#endif
			};
			struct address_space *mapping;
			union {
				pgoff_t __folio_index;
				unsigned long share;
			};
			unsigned long private;
		};
		struct {	/* page_pool used by netstack */
			unsigned long pp_magic;
			struct page_pool *pp;
			unsigned long _pp_mapping_pad;
			unsigned long dma_addr;
			atomic_long_t pp_ref_count;
		};
		struct {	/* Tail pages of compound page */
#if KV >= 701
			unsigned long compound_info;
#else
			unsigned long compound_head;
#endif
		};
		struct {	/* ZONE_DEVICE pages */
#if KV >= 701
			void *_unused_pgmap_compound_info;
#else
			void *_unused_pgmap_compound_head;
#endif
			void *zone_device_data;
		};
		struct rcu_head rcu_head;
	};
	union {
		unsigned int page_type;
		atomic_t _mapcount;
	};
	atomic_t _refcount;
} __aligned(2 * sizeof(unsigned long));

/* ---- include/linux/mmzone.h (the members below are the same, in the same
 *      order, in 6.17.8 - 7.3.4), include/linux/nodemask{,_types}.h ------ */
#ifdef CONFIG_NUMA
#define NODES_SHIFT 6			/* CONFIG_NODES_SHIFT of the 7.3 build */
#else
#define NODES_SHIFT 0
#endif
#define MAX_NUMNODES (1 << NODES_SHIFT)
#define MAX_PAGE_ORDER 10
#define NR_PAGE_ORDERS (MAX_PAGE_ORDER + 1)

enum migratetype {
	MIGRATE_UNMOVABLE,
	MIGRATE_MOVABLE,
	MIGRATE_RECLAIMABLE,
	MIGRATE_PCPTYPES,
	MIGRATE_HIGHATOMIC = MIGRATE_PCPTYPES,
	MIGRATE_CMA,			/* CONFIG_CMA */
	__MIGRATE_TYPE_END = MIGRATE_CMA,
	MIGRATE_ISOLATE,		/* CONFIG_MEMORY_ISOLATION */
	MIGRATE_TYPES
};

enum zone_type {
	ZONE_DMA,
	ZONE_DMA32,
	ZONE_NORMAL,
	ZONE_MOVABLE,
	__MAX_NR_ZONES
};
#define MAX_NR_ZONES 4			/* include/generated/bounds.h */

enum zone_stat_item {
	NR_FREE_PAGES,
	NR_FREE_PAGES_BLOCKS,
	NR_ZONE_LRU_BASE,
	NR_ZONE_INACTIVE_ANON = NR_ZONE_LRU_BASE,
	NR_ZONE_ACTIVE_ANON,
	NR_ZONE_INACTIVE_FILE,
	NR_ZONE_ACTIVE_FILE,
	NR_ZONE_UNEVICTABLE,
	NR_ZONE_WRITE_PENDING,
	NR_MLOCK,
	NR_FREE_CMA_PAGES,
	NR_VM_ZONE_STAT_ITEMS
};

enum zone_watermarks {
	WMARK_MIN,
	WMARK_LOW,
	WMARK_HIGH,
	WMARK_PROMO,
	NR_WMARK
};

enum node_states {
	N_POSSIBLE,
	N_ONLINE,
	N_NORMAL_MEMORY,
	N_HIGH_MEMORY = N_NORMAL_MEMORY,
	N_MEMORY,
	N_CPU,
	N_GENERIC_INITIATOR,
	NR_NODE_STATES
};

typedef struct {
	DECLARE_BITMAP(bits, MAX_NUMNODES);
} nodemask_t;

struct free_area {
	struct list_head free_list[MIGRATE_TYPES];
	unsigned long nr_free;
};

#ifdef CONFIG_SMP
/* include/linux/cache.h: ____cacheline_internodealigned_in_smp: 64 */
struct cacheline_padding {
	char x[0];
} __aligned(64);
#define CACHELINE_PADDING(name) struct cacheline_padding name
#else
#define CACHELINE_PADDING(name)
#endif

struct pglist_data;
struct per_cpu_pages;
struct per_cpu_zonestat;

struct zone {
	unsigned long _watermark[NR_WMARK];
	unsigned long watermark_boost;
	unsigned long nr_reserved_highatomic;
	unsigned long nr_free_highatomic;
	long lowmem_reserve[MAX_NR_ZONES];
#ifdef CONFIG_NUMA
	int node;
#endif
	struct pglist_data *zone_pgdat;
	struct per_cpu_pages *per_cpu_pageset;
	struct per_cpu_zonestat *per_cpu_zonestats;
	int pageset_high_min;
	int pageset_high_max;
	int pageset_batch;
	unsigned long zone_start_pfn;
	atomic_long_t managed_pages;
	unsigned long spanned_pages;
	unsigned long present_pages;
	unsigned long cma_pages;		/* CONFIG_CMA */
	const char *name;
	unsigned long nr_isolate_pageblock;	/* CONFIG_MEMORY_ISOLATION */
	int initialized;
	CACHELINE_PADDING(_pad1_);
	struct free_area free_area[NR_PAGE_ORDERS];
	unsigned long flags;
	spinlock_t lock;
	/* ... (members not read here) */
}
#ifdef CONFIG_SMP
__aligned(64)
#endif
;

struct zoneref {
	struct zone *zone;
	int zone_idx;
};

#define MAX_ZONES_PER_ZONELIST (MAX_NUMNODES * MAX_NR_ZONES)
struct zonelist {
	struct zoneref _zonerefs[MAX_ZONES_PER_ZONELIST + 1];
};

enum {
	ZONELIST_FALLBACK,
#ifdef CONFIG_NUMA
	ZONELIST_NOFALLBACK,
#endif
	MAX_ZONELISTS
};

typedef struct pglist_data {
	struct zone node_zones[MAX_NR_ZONES];
	struct zonelist node_zonelists[MAX_ZONELISTS];
	int nr_zones;
	unsigned long node_start_pfn;
	unsigned long node_present_pages;
	unsigned long node_spanned_pages;
	int node_id;
	/* ... (members not read here) */
} pg_data_t;

#ifdef CONFIG_NUMA
/* mm/numa.c (6.17.8 - 7.3.4) */
struct pglist_data *node_data[MAX_NUMNODES];
/* mm/page_alloc.c: only when MAX_NUMNODES > 1 */
unsigned int nr_node_ids = MAX_NUMNODES;
unsigned int nr_online_nodes = 1;
#else
/* mm/memblock.c: #ifndef CONFIG_NUMA */
struct pglist_data contig_page_data;
#endif
/* mm/page_alloc.c */
nodemask_t node_states[NR_NODE_STATES];

/* mm/vmstat.c */
atomic_long_t vm_zone_stat[NR_VM_ZONE_STAT_ITEMS];
/* mm/show_mem.c (mm/page_alloc.c and mm/cma.c in older trees) */
atomic_long_t _totalram_pages;
unsigned long totalcma_pages;

/* arch/x86/kernel/head64.c */
unsigned long page_offset_base __ro_after_init = 0xffff888000000000UL;
unsigned long vmemmap_base __ro_after_init = 0xffffea0000000000UL;

/* arch/x86/kernel/head_64.S: the kernel's top page table, an asm symbol
 * without DWARF (fake_core names it in VMCOREINFO as swapper_pg_dir) */
__asm__(".section .data..page_aligned,\"aw\"\n"
	".balign 4096\n"
	".globl init_top_pgt\n"
	"init_top_pgt:\n"
	".fill 512,8,0\n"
	".previous\n");

/* ---- include/linux/ioport.h, kernel/resource.c ------------------------ */
struct resource {
	resource_size_t start;
	resource_size_t end;
	const char *name;
	unsigned long flags;
	unsigned long desc;
	struct resource *parent, *sibling, *child;
};

struct resource iomem_resource;

/* ---- include/linux/memblock.h, mm/memblock.c: __initdata_memblock is
 *      __initdata without CONFIG_ARCH_KEEP_MEMBLOCK (the vmtest kernels) -- */
enum memblock_flags {
	MEMBLOCK_NONE = 0x0,
	MEMBLOCK_HOTPLUG = 0x1,
	MEMBLOCK_MIRROR = 0x2,
	MEMBLOCK_NOMAP = 0x4,
	MEMBLOCK_DRIVER_MANAGED = 0x8,
	MEMBLOCK_RSRV_NOINIT = 0x10,
	/* ... (later flags: not read here) */
};

struct memblock_region {
	phys_addr_t base;
	phys_addr_t size;
	enum memblock_flags flags;
#ifdef CONFIG_NUMA
	int nid;
#endif
};

struct memblock_type {
	unsigned long cnt;
	unsigned long max;
	phys_addr_t total_size;
	struct memblock_region *regions;
	char *name;
};

struct memblock {
	bool bottom_up;
	phys_addr_t current_limit;
	struct memblock_type memory;
	struct memblock_type reserved;
};

#define INIT_MEMBLOCK_REGIONS 128
static struct memblock_region
	memblock_reserved_init_regions[INIT_MEMBLOCK_REGIONS] __initdata __used;
struct memblock memblock __initdata;

void __init memblock_discard(void)
{
}

/* ---- kexec: include/linux/kexec.h, arch/x86/include/asm/kexec.h,
 *      kernel/kexec_core.c (identical in 6.17.8 - 7.3.4 but force_dtb) --- */
#define KEXEC_SEGMENT_MAX 16		/* include/uapi/linux/kexec.h */
typedef unsigned long kimage_entry_t;

struct kexec_segment {
	union {
		void *buf;
		void *kbuf;
	};
	size_t bufsz;
	unsigned long mem;
	size_t memsz;
};

typedef struct { unsigned long pgd; } pgd_t;
typedef struct { pgd_t pgd; } p4d_t;
typedef struct { unsigned long pud; } pud_t;
typedef struct { unsigned long pmd; } pmd_t;
typedef struct { unsigned long pte; } pte_t;

struct kimage_arch {
	pgd_t *pgd;
	p4d_t *p4d;
	pud_t *pud;
	pmd_t *pmd;
	pte_t *pte;
};

/* include/uapi/linux/elf.h; Elf_Ehdr is Elf64_Ehdr on 64-bit */
typedef struct elf64_hdr Elf64_Ehdr;
typedef struct elf64_shdr Elf64_Shdr;
struct purgatory_info {
	const Elf64_Ehdr *ehdr;
	Elf64_Shdr *sechdrs;
	void *purgatory_buf;
};

struct kexec_file_ops;

struct kimage {
	kimage_entry_t head;
	kimage_entry_t *entry;
	kimage_entry_t *last_entry;
	unsigned long start;
	struct page *control_code_page;
	struct page *swap_page;
	void *vmcoreinfo_data_copy;
	unsigned long nr_segments;
	struct kexec_segment segment[KEXEC_SEGMENT_MAX];
	struct page *segment_cma[KEXEC_SEGMENT_MAX];
	struct list_head control_pages;
	struct list_head dest_pages;
	struct list_head unusable_pages;
	unsigned long control_page;
	unsigned int type : 1;
	unsigned int preserve_context : 1;
	unsigned int file_mode : 1;
	unsigned int no_cma : 1;
	struct kimage_arch arch;		/* ARCH_HAS_KIMAGE_ARCH */
	/* CONFIG_KEXEC_FILE */
	void *kernel_buf;
	unsigned long kernel_buf_len;
	void *initrd_buf;
	unsigned long initrd_buf_len;
	char *cmdline_buf;
	unsigned long cmdline_buf_len;
	const struct kexec_file_ops *fops;
	void *image_loader_data;
	struct purgatory_info purgatory_info;
#if KV >= 618
	bool force_dtb;
#endif
	struct {
		struct kexec_segment *scratch;
		phys_addr_t fdt;
	} kho;
	void *elf_headers;
	unsigned long elf_headers_sz;
	unsigned long elf_load_addr;
	unsigned long dm_crypt_keys_addr;
	unsigned long dm_crypt_keys_sz;
};

struct kimage *kexec_image;
struct kimage *kexec_crash_image;

/* ---- KHO ---------------------------------------------------------------
 * struct kho_scratch: include/linux/kexec_handover.h (6.17.8 - 7.1.13),
 * include/asm-generic/kexec_handover.h (7.3.4). */
struct kho_scratch {
	phys_addr_t addr;
	phys_addr_t size;
};

struct dentry;

#if KV < 701
/* kho-v1 tracker: kernel/kexec_handover.c (6.17.8, 6.18.15),
 * kernel/liveupdate/kexec_handover.c (6.19.11) */
#if KV == 617
#define PRESERVE_BITS (512 * 8)
#else
#define PRESERVE_BITS (PAGE_SIZE * 8)
#endif

struct kho_mem_phys_bits {
	DECLARE_BITMAP(preserve, PRESERVE_BITS);
};

struct kho_mem_phys {
	struct xarray phys_bits;
};

struct kho_mem_track {
	struct xarray orders;
};

struct khoser_mem_chunk;
#endif

#if KV >= 618
/* kernel/kexec_handover.c (6.18.15), kernel/liveupdate/kexec_handover.c
 * (6.19.11 - 7.3.4) */
union kho_page_info {
	unsigned long page_private;
	struct {
		unsigned int order;
		unsigned int magic;
	};
};

/* include/linux/kexec_handover.h (6.18.15, 6.19.11),
 * include/linux/kho/abi/kexec_handover.h (7.1.13, 7.3.4) */
struct kho_vmalloc_chunk;
struct kho_vmalloc {
	union {				/* DECLARE_KHOSER_PTR */
#if KV >= 701
		u64 phys;
#else
		phys_addr_t phys;
#endif
		struct kho_vmalloc_chunk *ptr;
	} first;
	unsigned int total_pages;
	unsigned short flags;
	unsigned short order;
};
#endif

#if KV >= 619
/* kernel/liveupdate/kexec_handover_internal.h (KEXEC_HANDOVER_DEBUGFS) */
struct kho_debugfs {
	struct dentry *dir;
	struct dentry *sub_fdt_dir;
	struct list_head fdt_list;
};
#endif

#if KV >= 701
/* include/linux/kho/abi/kexec_handover.h */
enum kho_radix_consts {
#if KV >= 703
	KHO_RADIX_KEY_WIDTH = 64 - PAGE_SHIFT + 1,
	KHO_TABLE_SIZE_LOG2 = 9,	/* const_ilog2(PAGE_SIZE / 8) */
	KHO_BITMAP_SIZE_LOG2 = PAGE_SHIFT + 3,
	KHO_TREE_MAX_DEPTH = (KHO_RADIX_KEY_WIDTH - KHO_BITMAP_SIZE_LOG2 +
			      KHO_TABLE_SIZE_LOG2 - 1) / KHO_TABLE_SIZE_LOG2 + 1,
#else
	KHO_ORDER_0_LOG2 = 64 - PAGE_SHIFT,
	KHO_TABLE_SIZE_LOG2 = 9,
	KHO_BITMAP_SIZE_LOG2 = PAGE_SHIFT + 3,
	KHO_TREE_MAX_DEPTH = (KHO_ORDER_0_LOG2 - KHO_BITMAP_SIZE_LOG2 + 1 +
			      KHO_TABLE_SIZE_LOG2 - 1) / KHO_TABLE_SIZE_LOG2 + 1,
#endif
};

struct kho_radix_node {
	u64 table[1 << KHO_TABLE_SIZE_LOG2];
};

struct kho_radix_leaf {
	DECLARE_BITMAP(bitmap, 1 << KHO_BITMAP_SIZE_LOG2);
};

/* include/linux/kho_radix_tree.h */
struct kho_radix_tree {
	struct kho_radix_node *root;
	struct mutex lock;
};
#endif

#if KV <= 618
/* kernel/kexec_handover.c (6.17.8, 6.18.15) */
struct kho_serialization {
	struct page *fdt;
	struct list_head fdt_list;
	struct dentry *sub_fdt_dir;
	struct kho_mem_track track;
	struct khoser_mem_chunk *preserved_mem_map;
};

struct kho_out {
	struct blocking_notifier_head chain_head;
	struct dentry *dir;
	struct mutex lock;
	struct kho_serialization ser;
	bool finalized;
};

struct kho_in {
	struct dentry *dir;
	phys_addr_t fdt_phys;
	phys_addr_t scratch_phys;
	struct list_head fdt_list;
};
#elif KV == 619
/* kernel/liveupdate/kexec_handover.c (6.19.11) */
struct kho_out {
	void *fdt;
	bool finalized;
	struct mutex lock;
	struct kho_mem_track track;
	struct kho_debugfs dbg;
};

struct kho_in {
	phys_addr_t fdt_phys;
	phys_addr_t scratch_phys;
	phys_addr_t mem_map_phys;
	struct kho_debugfs dbg;
};
#else
/* kernel/liveupdate/kexec_handover.c (7.1.13, 7.3.4) */
#define __NEW_UTS_LEN 64		/* include/uapi/linux/utsname.h */
struct kho_out {
	void *fdt;
	struct mutex lock;
	struct kho_radix_tree radix_tree;
	struct kho_debugfs dbg;
};

struct kho_in {
	phys_addr_t fdt_phys;
	phys_addr_t scratch_phys;
	char previous_release[__NEW_UTS_LEN + 1];
	u32 kexec_count;
	struct kho_debugfs dbg;
#if KV >= 703
	struct kho_radix_tree radix_tree;
#endif
};
#endif

static bool kho_enable __ro_after_init __used;
static struct kho_out kho_out __used;
static struct kho_in kho_in __used;
#if KV == 617
static struct kho_scratch *kho_scratch __used;	/* file-static up to 6.17 */
static unsigned int kho_scratch_cnt __used;
#else
struct kho_scratch *kho_scratch;
unsigned int kho_scratch_cnt;
#endif

/* ---- LUO (6.19+) -------------------------------------------------------
 * include/uapi/linux/liveupdate.h, include/linux/kho/abi/{luo,memfd,block}.h,
 * include/linux/liveupdate.h, include/linux/kho_block.h (7.3.4),
 * kernel/liveupdate/luo_{internal.h,session.c,file.c,flb.c} */
#if KV >= 619
#define LIVEUPDATE_SESSION_NAME_LENGTH 64
#define LIVEUPDATE_HNDL_COMPAT_LENGTH 48

struct luo_file_ser {
	char compatible[LIVEUPDATE_HNDL_COMPAT_LENGTH];
	u64 data;
	u64 token;
} __packed;

struct luo_file_set_ser {
	u64 files;
	u64 count;
} __packed;

#if KV < 703
struct luo_session_header_ser {
	u64 count;
} __packed;
#endif

struct luo_session_ser {
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	struct luo_file_set_ser file_set_ser;
} __packed;

#if KV >= 701
#define LIVEUPDATE_FLB_COMPAT_LENGTH 48
struct luo_flb_header_ser {
	u64 pgcnt;
	u64 count;
} __packed;

struct luo_flb_ser {
	char name[LIVEUPDATE_FLB_COMPAT_LENGTH];
	u64 data;
	u64 count;
} __packed;
#endif

#if KV >= 703
/* include/linux/kho/abi/block.h */
struct kho_block_header_ser {
	u64 next;
	u64 count;
} __packed;

/* include/linux/kho/abi/luo.h:
 * LUO_ABI_COMPAT_LEN = ALIGN(sizeof("luo-v5"), 8) */
struct luo_ser {
	char compatible[8];
	u64 liveupdate_num;
	u64 sessions_pa;
	u64 flbs_pa;
} __packed;

/* include/linux/kho_block.h */
struct kho_block {
	struct list_head list;
	struct kho_block_header_ser *ser;
};

struct kho_block_set {
	struct list_head blocks;
	long nblocks;
	u64 head_pa;
	size_t entry_size;
	u64 count_per_block;
	bool incoming;
};
#endif

/* include/linux/kho/abi/memfd.h */
struct memfd_luo_folio_ser {
	u64 pfn:52;
	u64 flags:12;
	u64 index;
} __packed;

struct memfd_luo_ser {
	u64 pos;
	u64 size;
#if KV >= 701
	u32 seals;				/* memfd-v2 */
	u32 flags;
#endif
	u64 nr_folios;
	struct kho_vmalloc folios;
} __packed;

/* include/linux/liveupdate.h */
struct liveupdate_file_ops;
struct liveupdate_file_handler {
	const struct liveupdate_file_ops *ops;
	const char compatible[LIVEUPDATE_HNDL_COMPAT_LENGTH];
	struct list_head list;
#if KV >= 701
	struct list_head flb_list;
#endif
};

/* kernel/liveupdate/luo_internal.h */
struct luo_file_set {
	struct list_head files_list;
#if KV >= 703
	struct kho_block_set block_set;
	u64 count;
#else
	struct luo_file_ser *files;
	long count;
#endif
};

struct luo_session {
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
#if KV < 703
	struct luo_session_ser *ser;
#endif
	struct list_head list;
	bool retrieved;
	struct luo_file_set file_set;
	struct mutex mutex;
};

/* kernel/liveupdate/luo_file.c */
struct file;
struct luo_file {
	struct liveupdate_file_handler *fh;
	struct file *file;
	u64 serialized_data;
	void *private_data;
	int retrieve_status;
	struct mutex mutex;
	struct list_head list;
	u64 token;
};

/* kernel/liveupdate/luo_session.c */
struct luo_session_header {
	long count;
	struct list_head list;
	struct rw_semaphore rwsem;
#if KV >= 703
	struct kho_block_set block_set;
	u64 *sessions_pa;
#else
	struct luo_session_header_ser *header_ser;
	struct luo_session_ser *ser;
#endif
	bool active;
};

struct luo_session_global {
	struct luo_session_header incoming;
	struct luo_session_header outgoing;
};

static struct luo_session_global luo_session_global __used;

#if KV >= 701
/* kernel/liveupdate/luo_flb.c */
struct luo_flb_header {
	struct luo_flb_header_ser *header_ser;
	struct luo_flb_ser *ser;
	bool active;
};

struct luo_flb_global {
	struct luo_flb_header incoming;
	struct luo_flb_header outgoing;
	struct list_head list;
	long count;
};

static struct luo_flb_global luo_flb_global __used;
#endif
#endif /* KV >= 619 */

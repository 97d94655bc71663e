// SPDX-License-Identifier: GPL-2.0
/*
 * kho_workload - a Kexec HandOver (KHO) client for the kho_inspect vmtests.
 *
 * On a cold boot it preserves memory on command (debugfs
 * /sys/kernel/debug/kho_workload/ctl) and publishes the list of what it
 * preserved in the KHO sub-node "kho_workload", so that the next kernel, a
 * tracer or a memory decoder can be checked against it.  On a KHO boot it
 * reads that list back, restores the items (module parameter restore=) and
 * verifies their contents.
 *
 *   ctl (write, one command per write):
 *     folio ORDER COUNT   COUNT folios of ORDER, kho_preserve_folio each
 *     pages NR ALIGN      NR contiguous pages, first pfn a multiple of ALIGN,
 *                         kho_preserve_pages (6.18+) or kho_preserve_phys
 *     vmalloc NR          vmalloc(NR pages), kho_preserve_vmalloc (6.18+)
 *     scatter NR STRIDE   NR order-0 folios, one every STRIDE pages of one
 *                         contiguous run, kho_preserve_folio each (scale)
 *     numa NR             NR pages aligned to NR across a NUMA node
 *                         boundary, kho_preserve_pages (6.18+, CONFIG_NUMA)
 *     unpreserve ID       kho_unpreserve_{folio,pages,vmalloc} (6.19+)
 *     bogus               kho_restore_folio() of a page never preserved
 *     scribble ID         XOR 0xff over the first 64 bytes of item ID's first
 *                         data page, csum and table unchanged (corruption)
 *     loop N              preserve/unpreserve timing, result in "bench"
 *   list (read): one line per item, key=value
 *   bench (read): "loop=N ns=T" of the last loop command
 *
 * The sub-node holds a little-endian table (16-byte header "KHOWLD01",
 * version, count; then one 64-byte entry per item, see struct kw_entry).
 * Before 7.1 the sub-node must be an FDT, and the table is the property
 * "items" of a root node with compatible "kho-workload-v1"; from 7.1 the
 * sub-node is the table itself.  libfdt is not exported to modules, so the
 * few FDT records needed are written and read here.
 *
 * Every data page is filled from xorshift64 (shifts 13, 7, 17; each step's
 * new state is stored as a little-endian u64), seeded with
 * seed * 0x9E3779B97F4A7C15 + id (0 replaced by 0x9E3779B97F4A7C15), in
 * address order (virtual order for vmalloc); csum is FNV-1a 64 over the bytes.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/gfp.h>
#include <linux/io.h>
#include <linux/kexec_handover.h>
#include <linux/ktime.h>
#include <linux/log2.h>
#include <linux/memory_hotplug.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/unaligned.h>
#include <linux/utsname.h>
#include <linux/version.h>
#include <linux/vmalloc.h>

/* 7.0 moved struct kho_vmalloc into the KHO ABI header. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 0, 0)
#include <linux/kho/abi/kexec_handover.h>
#endif

/*
 * API generations:
 * - 6.16, 6.17: sub-trees are added from the KEXEC_KHO_FINALIZE notifier;
 *   kho_preserve_folio/kho_preserve_phys, restore with kho_restore_folio only.
 * - 6.18: kho_preserve_pages/kho_preserve_vmalloc and their restore calls.
 * - 6.19, 7.0: kho_unpreserve_*; kho_add_subtree(name, fdt) at any time.
 * - 7.1+: kho_add_subtree(name, blob, size), kho_retrieve_subtree(.., &size).
 */
#define KW_HAVE_NOTIFIER	(LINUX_VERSION_CODE < KERNEL_VERSION(6, 19, 0))
#define KW_HAVE_PAGES		(LINUX_VERSION_CODE >= KERNEL_VERSION(6, 18, 0))
#define KW_HAVE_UNPRESERVE	(LINUX_VERSION_CODE >= KERNEL_VERSION(6, 19, 0))
#define KW_RAW_BLOB		(LINUX_VERSION_CODE >= KERNEL_VERSION(7, 1, 0))

#define KW_NODE		"kho_workload"
#define KW_COMPATIBLE	"kho-workload-v1"
#define KW_MAGIC	"KHOWLD01"
#define KW_MAGIC_DONE	"KHOWLD-C"	/* incoming table already handled */
#define KW_VERSION	1

#define KW_BLOB_ORDER	2
#define KW_BLOB_SIZE	(PAGE_SIZE << KW_BLOB_ORDER)
#define KW_MAX_ITEMS	250
#define KW_MAX_PAGES	(1UL << 20)
#define KW_MAX_LOOPS	(1U << 24)

#define KW_SEED_MUL	0x9E3779B97F4A7C15ULL
#define KW_FNV_BASIS	0xcbf29ce484222325ULL
#define KW_FNV_PRIME	0x100000001b3ULL

static ulong seed = 1;
module_param(seed, ulong, 0444);
MODULE_PARM_DESC(seed, "content seed (default 1)");

static char restore[256] = "all";
module_param_string(restore, restore, sizeof(restore), 0444);
MODULE_PARM_DESC(restore, "KHO boot: \"all\", \"none\" or a comma list of item ids");

/* Numbers of the handed-over table; KW_BOGUS never goes into it. */
enum kw_kind {
	KW_BOGUS = 0,
	KW_BLOB = 1,
	KW_FOLIO = 2,
	KW_PAGES = 3,
	KW_PHYS = 4,
	KW_VMALLOC = 5,
	KW_SCATTER = 6,
	KW_NUMA = 7,
};

enum kw_state {
	KW_PRESERVED = 1,
	KW_UNPRESERVED = 2,
	KW_RESTORED,
	KW_FAILED,
	KW_MISMATCH,
	KW_UNRESTORED,
};

static const char *const kw_kind_names[] = {
	[KW_BOGUS] = "bogus",
	[KW_BLOB] = "blob",
	[KW_FOLIO] = "folio",
	[KW_PAGES] = "pages",
	[KW_PHYS] = "phys",
	[KW_VMALLOC] = "vmalloc",
	[KW_SCATTER] = "scatter",
	[KW_NUMA] = "numa",
};

static const char *const kw_state_names[] = {
	[KW_PRESERVED] = "preserved",
	[KW_UNPRESERVED] = "unpreserved",
	[KW_RESTORED] = "restored",
	[KW_FAILED] = "failed",
	[KW_MISMATCH] = "mismatch",
	[KW_UNRESTORED] = "unrestored",
};

struct kw_header {
	char magic[8];
	__le32 version;
	__le32 nr;
} __packed;

struct kw_entry {
	__le32 id;
	__le32 kind;
	__le64 phys;
	__le64 nr_pages;
	__le32 order;
	__le32 state;
	__le64 csum;
	u8 vmalloc_desc[16];
	__le32 stride;		/* scatter: pages from one block to the next */
	u8 pad[4];
} __packed;

static_assert(sizeof(struct kw_header) == 16);
static_assert(sizeof(struct kw_entry) == 64);

struct kw_item {
	u32 id;
	enum kw_kind kind;
	enum kw_state state;
	int ret;		/* last KHO call: 0, -errno, -1 for a NULL restore */
	phys_addr_t phys;
	unsigned long nr_pages;
	int order;
	u64 csum;
	union {
		u8 raw[16];
#if KW_HAVE_PAGES
		struct kho_vmalloc desc;
#endif
	} vm;
	phys_addr_t *vm_pages;	/* vmalloc: phys of every data page */
	unsigned long vm_nr;
	unsigned long stride;	/* scatter: pages between blocks */
	unsigned long done;	/* scatter: blocks [0, done) held; numa: pages
				 * below the boundary (not the module's) */
	u64 preserve_ns;	/* scatter: the preserve loop alone (ktime) */
	/* memory held by this module for the item */
	struct folio *folio;	/* blob, folio */
	struct page *page;	/* pages, phys */
	void *vaddr;		/* vmalloc */
};

#if KW_HAVE_PAGES
static_assert(sizeof(struct kho_vmalloc) == 16);
#endif

static DEFINE_MUTEX(kw_lock);
static struct kw_item *kw_items[KW_MAX_ITEMS];
static unsigned int kw_nr;
static u32 kw_next_id;
static bool kw_kho_boot;
static bool kw_can_preserve;
static struct folio *kw_blob;	/* outgoing table (cold boot only) */
static void *kw_incoming;	/* incoming table (KHO boot) */
static u32 kw_bench_loops;
static u64 kw_bench_ns;
static struct dentry *kw_dir;

#if KW_HAVE_UNPRESERVE
static size_t kw_published;	/* size given to kho_add_subtree, 0: none */
#else
static bool kw_pinned;
#endif

#if KW_HAVE_NOTIFIER
static bool kw_notifier_registered;
static bool kw_aborted;
#endif

/* ---------------------------------------------------------------------- */
/* content */

static u64 kw_seed(u32 id)
{
	u64 x = (u64)seed * KW_SEED_MUL + id;

	return x ? x : KW_SEED_MUL;
}

static void kw_fill(void *buf, size_t len, u32 id)
{
	__le64 *p = buf;
	u64 x = kw_seed(id);
	size_t i;

	for (i = 0; i < len / sizeof(*p); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = cpu_to_le64(x);
		if (!((i + 1) % (PAGE_SIZE / sizeof(*p))))
			cond_resched();
	}
}

static u64 kw_fnv1a(const void *buf, size_t len)
{
	const u8 *p = buf;
	u64 h = KW_FNV_BASIS;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= KW_FNV_PRIME;
		if (!((i + 1) % PAGE_SIZE))
			cond_resched();
	}
	return h;
}

/* ---------------------------------------------------------------------- */
/* items */

static struct kw_item *kw_find(u32 id)
{
	unsigned int i;

	for (i = 0; i < kw_nr; i++)
		if (kw_items[i]->id == id)
			return kw_items[i];
	return NULL;
}

/* A new item with the next id; it only takes the id once kw_add()ed. */
static struct kw_item *kw_new(enum kw_kind kind)
{
	struct kw_item *item;

	if (kw_nr >= KW_MAX_ITEMS)
		return ERR_PTR(-ENOSPC);
	item = kzalloc(sizeof(*item), GFP_KERNEL);
	if (!item)
		return ERR_PTR(-ENOMEM);
	item->id = kw_next_id;
	item->kind = kind;
	item->order = -1;
	return item;
}

static void kw_add(struct kw_item *item)
{
	kw_items[kw_nr++] = item;
	kw_next_id = max(kw_next_id, item->id + 1);
}

/* Keep the module while it has something preserved that it cannot drop. */
static void kw_pin(void)
{
#if !KW_HAVE_UNPRESERVE
	/* 6.16 - 6.18: no kho_unpreserve_*, so never unload after a preserve */
	if (!kw_pinned) {
		__module_get(THIS_MODULE);
		kw_pinned = true;
	}
#endif
}

static void kw_free_run(struct page *page, unsigned long nr)
{
	unsigned long pfn = page_to_pfn(page);
	unsigned long i;

	for (i = 0; i < nr; i++)
		__free_page(pfn_to_page(pfn + i));
}

static bool kw_range_usable(struct zone *zone, unsigned long start,
			    unsigned long nr)
{
	unsigned long pfn;

	for (pfn = start; pfn < start + nr; pfn++) {
		struct page *page = pfn_to_online_page(pfn);

		if (!page || page_zone(page) != zone || PageReserved(page))
			return false;
	}
	return true;
}

/*
 * A run the buddy allocator did not hand out (above MAX_PAGE_ORDER, or it
 * failed): try ranges aligned to max(ALIGN, pageblock) in every populated
 * zone, highest first.  Without ACR_FLAGS_CMA, alloc_contig_range() refuses
 * MIGRATE_CMA pageblocks, which keeps the run out of the KHO scratch areas.
 * CONTIG_ALLOC comes with CMA, which the vmtest config sets.
 */
static struct page *kw_alloc_contig(unsigned long nr, unsigned long align)
{
#ifdef CONFIG_CONTIG_ALLOC
	unsigned long step = max_t(unsigned long, align, pageblock_nr_pages);
	int nid, z;

	for_each_online_node(nid) {
		pg_data_t *pgdat = NODE_DATA(nid);

		for (z = MAX_NR_ZONES - 1; z >= 0; z--) {
			struct zone *zone = &pgdat->node_zones[z];
			unsigned long first, last, start;

			if (!populated_zone(zone))
				continue;
			first = ALIGN(zone->zone_start_pfn, align);
			if (zone_end_pfn(zone) < nr ||
			    first > zone_end_pfn(zone) - nr)
				continue;
			last = ALIGN_DOWN(zone_end_pfn(zone) - nr, step);
			for (start = last; start >= first; start -= step) {
				if (kw_range_usable(zone, start, nr) &&
				    !alloc_contig_range(start, start + nr,
							ACR_FLAGS_NONE,
							GFP_KERNEL | __GFP_NOWARN))
					return pfn_to_page(start);
				cond_resched();
				if (start < step)
					break;
			}
		}
	}
#endif
	return NULL;
}

/* NR physically contiguous order-0 pages, the first pfn a multiple of ALIGN */
static struct page *kw_alloc_run(unsigned long nr, unsigned long align)
{
	unsigned int order = max_t(unsigned int, order_base_2(nr), ilog2(align));
	struct page *page;
	unsigned long i;

	if (order <= MAX_PAGE_ORDER) {
		page = alloc_pages(GFP_KERNEL | __GFP_NOWARN, order);
		if (page) {
			split_page(page, order);
			for (i = nr; i < (1UL << order); i++)
				__free_page(page + i);
			return page;
		}
	}
	return kw_alloc_contig(nr, align);
}

/*
 * scatter: NR order-0 folios, one every STRIDE pages of one contiguous run
 * (the pages between them are freed), each preserved on its own, so that
 * the kernel holds NR blocks (NR runs when STRIDE > 1).  The run keeps the
 * item describable by one table entry; its content is not filled (csum 0):
 * the scale tests want the kernel's tracker, not the data.
 */
static struct folio *kw_scatter_folio(const struct kw_item *item,
				      unsigned long i)
{
	return pfn_folio(PHYS_PFN(item->phys) + i * item->stride);
}

/* Preserve the blocks from item->done on; 0 or the first error. */
static int kw_scatter_preserve(struct kw_item *item)
{
	int err;

	for (; item->done < item->nr_pages; item->done++) {
		err = kho_preserve_folio(kw_scatter_folio(item, item->done));
		if (err)
			return err;
		if (!(item->done % 1024))
			cond_resched();
	}
	return 0;
}

/* Put the blocks [from, done). */
static void kw_scatter_put(struct kw_item *item, unsigned long from)
{
	unsigned long i;

	for (i = from; i < item->done; i++)
		folio_put(kw_scatter_folio(item, i));
	item->done = from;
}

#if KW_HAVE_UNPRESERVE
static void kw_scatter_unpreserve(struct kw_item *item)
{
	unsigned long i;

	for (i = 0; i < item->done; i++) {
		kho_unpreserve_folio(kw_scatter_folio(item, i));
		if (!(i % 1024))
			cond_resched();
	}
}
#endif

/* ---------------------------------------------------------------------- */
/* the handed-over table */

static bool kw_in_table(const struct kw_item *item)
{
	return item->kind != KW_BOGUS &&
	       (item->state == KW_PRESERVED || item->state == KW_UNPRESERVED);
}

static size_t kw_table_len(void)
{
	size_t len = sizeof(struct kw_header);
	unsigned int i;

	for (i = 0; i < kw_nr; i++)
		if (kw_in_table(kw_items[i]))
			len += sizeof(struct kw_entry);
	return len;
}

static void kw_table_write(void *buf)
{
	struct kw_header *hdr = buf;
	struct kw_entry *e = buf + sizeof(*hdr);
	unsigned int i, n = 0;

	memset(hdr, 0, sizeof(*hdr));
	memcpy(hdr->magic, KW_MAGIC, sizeof(hdr->magic));
	hdr->version = cpu_to_le32(KW_VERSION);
	for (i = 0; i < kw_nr; i++) {
		const struct kw_item *item = kw_items[i];

		if (!kw_in_table(item))
			continue;
		memset(e, 0, sizeof(*e));
		e->id = cpu_to_le32(item->id);
		e->kind = cpu_to_le32(item->kind);
		e->phys = cpu_to_le64(item->phys);
		e->nr_pages = cpu_to_le64(item->nr_pages);
		e->order = cpu_to_le32((u32)item->order);
		e->state = cpu_to_le32(item->state);
		e->csum = cpu_to_le64(item->csum);
		if (item->kind == KW_VMALLOC)
			memcpy(e->vmalloc_desc, item->vm.raw,
			       sizeof(e->vmalloc_desc));
		e->stride = cpu_to_le32((u32)item->stride);
		e++;
		n++;
	}
	hdr->nr = cpu_to_le32(n);
}

#if !KW_RAW_BLOB
/*
 * A minimal FDT, laid out as libfdt's sequential writer does: header,
 * empty reserve map, structure block, strings block.
 *   / { compatible = "kho-workload-v1"; items = <table>; };
 */
#define KW_FDT_MAGIC		0xd00dfeed
#define KW_FDT_BEGIN_NODE	1
#define KW_FDT_END_NODE		2
#define KW_FDT_PROP		3
#define KW_FDT_NOP		4
#define KW_FDT_END		9
#define KW_FDT_HDR_SIZE		40
#define KW_FDT_STRUCT_OFF	(KW_FDT_HDR_SIZE + 16)
#define KW_FDT_STRINGS		"compatible\0items"	/* +1 NUL: 17 bytes */
#define KW_FDT_STR_COMPAT	0
#define KW_FDT_STR_ITEMS	11
/* begin "" + compatible + items header + end node + end + strings */
#define KW_FDT_OVERHEAD		(KW_FDT_STRUCT_OFF + 8 + \
				 12 + sizeof(KW_COMPATIBLE) + 12 + 4 + 4 + \
				 sizeof(KW_FDT_STRINGS))

static_assert(sizeof(KW_COMPATIBLE) % 4 == 0);
static_assert(KW_FDT_OVERHEAD + sizeof(struct kw_header) +
	      KW_MAX_ITEMS * sizeof(struct kw_entry) <= KW_BLOB_SIZE);

static void *kw_put32(void *p, u32 v)
{
	put_unaligned_be32(v, p);
	return p + 4;
}

/* Lay out the FDT around an "items" value of @len bytes; returns that value. */
static void *kw_fdt_write(void *fdt, size_t len, size_t *totalsize)
{
	void *p = fdt + KW_FDT_STRUCT_OFF;
	void *items;
	u32 size_struct, off_strings;

	memset(fdt, 0, KW_BLOB_SIZE);
	p = kw_put32(p, KW_FDT_BEGIN_NODE);
	p += 4;					/* name "" */
	p = kw_put32(p, KW_FDT_PROP);
	p = kw_put32(p, sizeof(KW_COMPATIBLE));
	p = kw_put32(p, KW_FDT_STR_COMPAT);
	memcpy(p, KW_COMPATIBLE, sizeof(KW_COMPATIBLE));
	p += sizeof(KW_COMPATIBLE);
	p = kw_put32(p, KW_FDT_PROP);
	p = kw_put32(p, len);
	p = kw_put32(p, KW_FDT_STR_ITEMS);
	items = p;
	p += ALIGN(len, 4);
	p = kw_put32(p, KW_FDT_END_NODE);
	p = kw_put32(p, KW_FDT_END);
	size_struct = p - (fdt + KW_FDT_STRUCT_OFF);
	off_strings = p - fdt;
	memcpy(p, KW_FDT_STRINGS, sizeof(KW_FDT_STRINGS));
	*totalsize = off_strings + sizeof(KW_FDT_STRINGS);

	put_unaligned_be32(KW_FDT_MAGIC, fdt + 0);
	put_unaligned_be32(*totalsize, fdt + 4);
	put_unaligned_be32(KW_FDT_STRUCT_OFF, fdt + 8);	/* off_dt_struct */
	put_unaligned_be32(off_strings, fdt + 12);
	put_unaligned_be32(KW_FDT_HDR_SIZE, fdt + 16);	/* off_mem_rsvmap */
	put_unaligned_be32(17, fdt + 20);		/* version */
	put_unaligned_be32(16, fdt + 24);		/* last_comp_version */
	put_unaligned_be32(0, fdt + 28);		/* boot_cpuid_phys */
	put_unaligned_be32(sizeof(KW_FDT_STRINGS), fdt + 32);
	put_unaligned_be32(size_struct, fdt + 36);
	return items;
}

/* The "items" property of an incoming FDT, checked against "compatible". */
static int kw_fdt_items(const void *fdt, size_t max, const void **items,
			size_t *len)
{
	u32 total, off_struct, off_strings, size_strings, size_struct, off;
	const char *strings;
	bool compat = false;

	*items = NULL;
	if (get_unaligned_be32(fdt) != KW_FDT_MAGIC)
		return -EINVAL;
	total = get_unaligned_be32(fdt + 4);
	off_struct = get_unaligned_be32(fdt + 8);
	off_strings = get_unaligned_be32(fdt + 12);
	size_strings = get_unaligned_be32(fdt + 32);
	size_struct = get_unaligned_be32(fdt + 36);
	if (total > max || get_unaligned_be32(fdt + 20) < 17 ||
	    off_struct > total || size_struct > total - off_struct ||
	    off_strings > total || size_strings > total - off_strings ||
	    size_struct < 8 || get_unaligned_be32(fdt + off_struct) !=
	    KW_FDT_BEGIN_NODE || *(const char *)(fdt + off_struct + 4))
		return -EINVAL;
	strings = fdt + off_strings;
	for (off = 8; off + 4 <= size_struct;) {
		const void *p = fdt + off_struct + off;
		u32 tag = get_unaligned_be32(p);
		u32 plen, nameoff;
		const char *name;

		if (tag == KW_FDT_NOP) {
			off += 4;
			continue;
		}
		if (tag != KW_FDT_PROP || off + 12 > size_struct)
			break;		/* end of the root's properties */
		plen = get_unaligned_be32(p + 4);
		nameoff = get_unaligned_be32(p + 8);
		if (plen > size_struct - off - 12 || nameoff >= size_strings ||
		    !memchr(strings + nameoff, 0, size_strings - nameoff))
			return -EINVAL;
		name = strings + nameoff;
		if (!strcmp(name, "compatible"))
			compat = plen == sizeof(KW_COMPATIBLE) &&
				 !memcmp(p + 12, KW_COMPATIBLE, plen);
		else if (!strcmp(name, "items")) {
			*items = p + 12;
			*len = plen;
		}
		off += 12 + ALIGN(plen, 4);
	}
	return compat && *items ? 0 : -EINVAL;
}
#endif /* !KW_RAW_BLOB */

/* Rewrite the outgoing table after a change; 6.19+: keep the sub-node current. */
static int kw_sync(void)
{
	void *blob;
	size_t size;

	if (!kw_blob)
		return 0;
	blob = folio_address(kw_blob);
#if KW_RAW_BLOB
	/* 7.1+: the sub-node is the table itself */
	size = kw_table_len();
	memset(blob, 0, KW_BLOB_SIZE);
	kw_table_write(blob);
#else
	/* 6.16 - 7.0: the sub-node is an FDT */
	kw_table_write(kw_fdt_write(blob, kw_table_len(), &size));
#endif

#if KW_HAVE_UNPRESERVE
	/*
	 * 6.19+: the sub-node is live from kho_add_subtree() on; its size (7.1+
	 * blob-size, and the debugfs file in both) is taken at that call, so
	 * add it again when the size changed.
	 */
	if (kw_published != size) {
		int err;

		if (kw_published)
			kho_remove_subtree(blob);
		kw_published = 0;
#if KW_RAW_BLOB
		err = kho_add_subtree(KW_NODE, blob, size);
#else
		err = kho_add_subtree(KW_NODE, blob);
#endif
		if (err) {
			pr_warn("kho_add_subtree: %d\n", err);
			return err;
		}
		kw_published = size;
	}
#endif
	return 0;
}

/* ---------------------------------------------------------------------- */
/* 6.16 - 6.18: the finalize notifier */

#if KW_HAVE_NOTIFIER
/* Preserve an item again after kho_abort() dropped every preservation. */
static int kw_represerve(struct kw_item *item)
{
	switch (item->kind) {
	case KW_BLOB:
	case KW_FOLIO:
		return kho_preserve_folio(item->folio);
#if KW_HAVE_PAGES
	case KW_PAGES:
		return kho_preserve_pages(item->page, item->nr_pages);
	case KW_VMALLOC: {
		/* the old chunk pages are lost; this makes new ones */
		int err = kho_preserve_vmalloc(item->vaddr, &item->vm.desc);

		if (!err)
			item->phys = item->vm.desc.first.phys;
		return err;
	}
	case KW_NUMA:
		return kho_preserve_pages(item->page, item->nr_pages);
#else
	case KW_PHYS:
		return kho_preserve_phys(page_to_phys(item->page),
					 item->nr_pages << PAGE_SHIFT);
#endif
	case KW_SCATTER: {
		/* every block is held; preserve them all again */
		unsigned long held = item->done;
		int err;

		item->done = 0;
		err = kw_scatter_preserve(item);
		item->done = held;
		return err;
	}
	default:
		return 0;
	}
}

static int kw_kho_notifier(struct notifier_block *nb, unsigned long cmd,
			   void *v)
{
	struct kho_serialization *ser = v;
	unsigned int i;
	int err = 0;

	switch (cmd) {
	case KEXEC_KHO_ABORT:
		mutex_lock(&kw_lock);
		kw_aborted = true;
		mutex_unlock(&kw_lock);
		return NOTIFY_DONE;
	case KEXEC_KHO_FINALIZE:
		break;
	default:
		return NOTIFY_BAD;
	}

	mutex_lock(&kw_lock);
	if (kw_aborted) {
		for (i = 0; i < kw_nr; i++) {
			struct kw_item *item = kw_items[i];

			if (item->state != KW_PRESERVED)
				continue;
			item->ret = kw_represerve(item);
			if (!item->ret)
				continue;
			pr_warn("item %u: preserving again after abort: %d\n",
				item->id, item->ret);
			if (item->kind == KW_BLOB)
				err = item->ret;
			else
				item->state = KW_FAILED;
		}
		kw_aborted = false;
		kw_sync();
	}
	if (!err)
		err = kho_add_subtree(ser, KW_NODE, folio_address(kw_blob));
	mutex_unlock(&kw_lock);
	return notifier_from_errno(err);
}

static struct notifier_block kw_kho_nb = {
	.notifier_call = kw_kho_notifier,
};
#endif /* KW_HAVE_NOTIFIER */

/* ---------------------------------------------------------------------- */
/* commands */

static int kw_cmd_folio(unsigned long order, unsigned long count)
{
	unsigned long i;

	if (order > MAX_PAGE_ORDER || !count || count > KW_MAX_ITEMS)
		return -EINVAL;
	for (i = 0; i < count; i++) {
		struct kw_item *item = kw_new(KW_FOLIO);
		struct folio *folio;
		int err;

		if (IS_ERR(item))
			return PTR_ERR(item);
		folio = folio_alloc(GFP_KERNEL | __GFP_NOWARN, order);
		if (!folio) {
			kfree(item);
			return -ENOMEM;
		}
		kw_fill(folio_address(folio), folio_size(folio), item->id);
		item->csum = kw_fnv1a(folio_address(folio), folio_size(folio));
		item->phys = PFN_PHYS(folio_pfn(folio));
		item->order = order;
		item->nr_pages = folio_nr_pages(folio);
		err = kho_preserve_folio(folio);
		item->ret = err;
		kw_add(item);
		if (err) {
			item->state = KW_FAILED;
			folio_put(folio);
			return err;
		}
		item->state = KW_PRESERVED;
		item->folio = folio;
		kw_pin();
	}
	return 0;
}

static int kw_cmd_pages(unsigned long nr, unsigned long align)
{
	struct kw_item *item;
	struct page *page;
	int err;

	if (!nr || nr > KW_MAX_PAGES || !is_power_of_2(align) ||
	    align > KW_MAX_PAGES)
		return -EINVAL;
	/* 6.16/6.17 have no page-run API: the run is a phys range there */
	item = kw_new(KW_HAVE_PAGES ? KW_PAGES : KW_PHYS);
	if (IS_ERR(item))
		return PTR_ERR(item);
	page = kw_alloc_run(nr, align);
	if (!page) {
		kfree(item);
		return -ENOMEM;
	}
	kw_fill(page_address(page), nr << PAGE_SHIFT, item->id);
	item->csum = kw_fnv1a(page_address(page), nr << PAGE_SHIFT);
	item->phys = page_to_phys(page);
	item->nr_pages = nr;
#if KW_HAVE_PAGES
	err = kho_preserve_pages(page, nr);
#else
	err = kho_preserve_phys(page_to_phys(page), nr << PAGE_SHIFT);
#endif
	item->ret = err;
	kw_add(item);
	if (err) {
		item->state = KW_FAILED;
		kw_free_run(page, nr);
		return err;
	}
	item->state = KW_PRESERVED;
	item->page = page;
	kw_pin();
	return 0;
}

static int kw_cmd_vmalloc(unsigned long nr)
{
#if KW_HAVE_PAGES
	struct kw_item *item;
	unsigned long i;
	void *vaddr;
	int err;

	if (!nr || nr > KW_MAX_PAGES)
		return -EINVAL;
	item = kw_new(KW_VMALLOC);
	if (IS_ERR(item))
		return PTR_ERR(item);
	item->vm_pages = kvcalloc(nr, sizeof(*item->vm_pages), GFP_KERNEL);
	vaddr = vmalloc(nr << PAGE_SHIFT);
	if (!vaddr || !item->vm_pages) {
		vfree(vaddr);
		kvfree(item->vm_pages);
		kfree(item);
		return -ENOMEM;
	}
	kw_fill(vaddr, nr << PAGE_SHIFT, item->id);
	item->csum = kw_fnv1a(vaddr, nr << PAGE_SHIFT);
	for (i = 0; i < nr; i++)
		item->vm_pages[i] =
			page_to_phys(vmalloc_to_page(vaddr + (i << PAGE_SHIFT)));
	item->vm_nr = nr;
	item->nr_pages = nr;
	err = kho_preserve_vmalloc(vaddr, &item->vm.desc);
	item->ret = err;
	kw_add(item);
	if (err) {
		item->state = KW_FAILED;
		vfree(vaddr);
		return err;
	}
	item->phys = item->vm.desc.first.phys;
	item->order = item->vm.desc.order;
	item->state = KW_PRESERVED;
	item->vaddr = vaddr;
	kw_pin();
	return 0;
#else
	/* 6.16/6.17: no kho_preserve_vmalloc */
	return -EOPNOTSUPP;
#endif
}

static int kw_cmd_scatter(unsigned long nr, unsigned long stride)
{
	unsigned long span, i;
	struct kw_item *item;
	struct page *page;
	int err;

	if (!nr || !stride || stride > U32_MAX || nr > KW_MAX_PAGES / stride)
		return -EINVAL;
	span = nr * stride;
	item = kw_new(KW_SCATTER);
	if (IS_ERR(item))
		return PTR_ERR(item);
	/* aligned to its own size: the range search then steps run by run */
	page = kw_alloc_run(span, roundup_pow_of_two(span));
	if (!page) {
		kfree(item);
		return -ENOMEM;
	}
	for (i = 0; i < span; i++)
		if (i % stride)
			__free_page(page + i);
	item->phys = page_to_phys(page);
	item->order = 0;
	item->nr_pages = nr;
	item->stride = stride;
	item->done = 0;		/* here: how many are preserved */
	item->preserve_ns = ktime_get_ns();
	err = kw_scatter_preserve(item);
	item->preserve_ns = ktime_get_ns() - item->preserve_ns;
	item->ret = err;
	kw_add(item);
	if (err) {
		unsigned long kept = item->done;

		item->state = KW_FAILED;
#if KW_HAVE_UNPRESERVE
		kw_scatter_unpreserve(item);
		kept = 0;
#endif
		/* <= 6.18 cannot unpreserve: those blocks stay, pinned */
		item->done = nr;	/* all held; put those not kept */
		kw_scatter_put(item, kept);
		if (kept)
			kw_pin();
		return err;
	}
	item->state = KW_PRESERVED;
	item->page = page;
	kw_pin();
	return 0;
}

/*
 * numa NR: NR pages (a power of two), aligned to NR, across the boundary
 * between two adjacent online nodes, preserved with kho_preserve_pages()
 * (7.1+ splits the run so that no block crosses the boundary; 7.1-7.3's
 * kho_restore_pages() walks it without that split).  The part below the
 * boundary is not allocated: the top of a node holds that node's own struct
 * pages (memmap), which nobody can allocate, and KHO does not check what it
 * is told to preserve.  The part above is allocated when
 * alloc_contig_range() gives it (early unmovable allocations can sit at the
 * bottom of a node), else it is not the module's either.  So the content
 * is not the module's (csum 0), and a restored run is never freed.
 */
static int kw_cmd_numa(unsigned long nr)
{
#if KW_HAVE_PAGES && defined(CONFIG_NUMA) && defined(CONFIG_CONTIG_ALLOC)
	unsigned long start = 0, bound = 0;
	struct kw_item *item;
	int nid, next = MAX_NUMNODES, err;

	if (!nr || !is_power_of_2(nr) || nr > KW_MAX_PAGES)
		return -EINVAL;
	for_each_online_node(nid) {
		next = next_online_node(nid);
		if (next >= MAX_NUMNODES)
			break;
		bound = node_start_pfn(next);
		start = ALIGN_DOWN(bound, nr);
		if (node_end_pfn(nid) == bound && start != bound &&
		    start >= node_start_pfn(nid) &&
		    start + nr <= node_end_pfn(next))
			break;
		bound = 0;
	}
	if (!bound)
		return -ENXIO;	/* no boundary such a run crosses */
	item = kw_new(KW_NUMA);
	if (IS_ERR(item))
		return PTR_ERR(item);
	/* item->done: the pages from start that are not the module's */
	item->done = alloc_contig_range(bound, start + nr, ACR_FLAGS_NONE,
					GFP_KERNEL | __GFP_NOWARN) ?
		     nr : bound - start;
	item->phys = PFN_PHYS(start);
	item->nr_pages = nr;
	item->page = pfn_to_page(start);
	err = kho_preserve_pages(item->page, nr);
	item->ret = err;
	kw_add(item);
	if (err) {
		item->state = KW_FAILED;
		kw_free_run(item->page + item->done, nr - item->done);
		item->page = NULL;
		return err;
	}
	item->state = KW_PRESERVED;
	kw_pin();
	pr_info("item %u numa: %lu pages at 0x%llx across nodes %d/%d at 0x%llx, %lu of them allocated\n",
		item->id, nr, (u64)item->phys, nid, next, (u64)PFN_PHYS(bound),
		nr - item->done);
	return 0;
#else
	/* 6.16/6.17: no kho_preserve_pages; a kernel without NUMA */
	return -EOPNOTSUPP;
#endif
}

/*
 * After a restore: the heads of the blocks kho_preserve_pages() made of a
 * numa item (split where the node changes, as the kernel does) that still
 * hold KHO's marker in page->private, i.e. that the restore stepped over.
 */
static void kw_numa_unrestored(const struct kw_item *item, struct seq_file *m)
{
#if KW_HAVE_PAGES && defined(CONFIG_NUMA)
	unsigned long pfn = PHYS_PFN(item->phys), end = pfn + item->nr_pages;
	bool first = true;

	seq_puts(m, " unrestored=");
	while (pfn < end) {
		unsigned int order = min_t(unsigned int, __ffs(pfn),
					   ilog2(end - pfn));

		while (pfn_to_nid(pfn) != pfn_to_nid(pfn + (1UL << order) - 1))
			order--;
		if (page_private(pfn_to_page(pfn))) {
			seq_printf(m, "%s0x%llx/%u", first ? "" : ",",
				   (u64)PFN_PHYS(pfn), order);
			first = false;
		}
		pfn += 1UL << order;
	}
	if (first)
		seq_puts(m, "none");
#endif
}

static int kw_cmd_unpreserve(unsigned long id)
{
#if KW_HAVE_UNPRESERVE
	struct kw_item *item = id <= U32_MAX ? kw_find(id) : NULL;

	if (!item)
		return -ENOENT;
	if (item->state != KW_PRESERVED || item->kind == KW_BLOB)
		return -EINVAL;
	switch (item->kind) {
	case KW_FOLIO:
		kho_unpreserve_folio(item->folio);
		folio_put(item->folio);
		item->folio = NULL;
		break;
	case KW_PAGES:
		kho_unpreserve_pages(item->page, item->nr_pages);
		kw_free_run(item->page, item->nr_pages);
		item->page = NULL;
		break;
	case KW_VMALLOC:
		kho_unpreserve_vmalloc(&item->vm.desc);
		vfree(item->vaddr);
		item->vaddr = NULL;
		break;
	case KW_SCATTER:
		kw_scatter_unpreserve(item);
		kw_scatter_put(item, 0);
		item->page = NULL;
		break;
	case KW_NUMA:
		kho_unpreserve_pages(item->page, item->nr_pages);
		kw_free_run(item->page + item->done,
			    item->nr_pages - item->done);
		item->page = NULL;
		break;
	default:
		return -EINVAL;
	}
	item->state = KW_UNPRESERVED;
	item->ret = 0;
	return 0;
#else
	/* 6.16 - 6.18: no kho_unpreserve_* */
	return -EOPNOTSUPP;
#endif
}

static int kw_cmd_bogus(void)
{
	struct kw_item *item = kw_new(KW_BOGUS);
	struct folio *folio;
	struct page *page;

	if (IS_ERR(item))
		return PTR_ERR(item);
	page = alloc_page(GFP_KERNEL);
	if (!page) {
		kfree(item);
		return -ENOMEM;
	}
	item->phys = page_to_phys(page);
	item->order = 0;
	item->nr_pages = 1;
	kw_add(item);
	folio = kho_restore_folio(item->phys);
	if (folio) {
		/* KHO re-initialised a page in use: leave it alone for good */
		item->state = KW_RESTORED;
		item->ret = 0;
	} else {
		item->state = KW_FAILED;
		item->ret = -1;
		__free_page(page);
	}
	return 0;
}

/*
 * Corrupt a preserved item on purpose: XOR 0xff over the first
 * KW_SCRIBBLE_BYTES bytes of its first data page, leaving its csum and the
 * handed-over table as they are, so that the next kernel's restore reports
 * a checksum mismatch (and a content check of the preserved memory can
 * name the block).
 */
#define KW_SCRIBBLE_BYTES	64

static int kw_cmd_scribble(unsigned long id)
{
	struct kw_item *item = id <= U32_MAX ? kw_find(id) : NULL;
	u8 *p = NULL;
	int i;

	if (!item)
		return -ENOENT;
	if (item->state != KW_PRESERVED || item->kind == KW_BLOB ||
	    item->kind == KW_NUMA)	/* its first page is not the module's */
		return -EINVAL;
	if (item->folio)
		p = folio_address(item->folio);
	else if (item->page)
		p = page_address(item->page);
	else if (item->vaddr)
		p = item->vaddr;
	if (!p)
		return -EINVAL;	/* an incoming item not restored: not ours */
	for (i = 0; i < KW_SCRIBBLE_BYTES; i++)
		p[i] ^= 0xff;
	pr_info("item %u %s phys 0x%llx: scribbled %d bytes at its first data page\n",
		item->id, kw_kind_names[item->kind], (u64)item->phys,
		KW_SCRIBBLE_BYTES);
	return 0;
}

static int kw_cmd_loop(unsigned long n)
{
	u64 t0 = 0, t1 = 0;
	int err = 0;

	if (!n || n > KW_MAX_LOOPS)
		return -EINVAL;
#if KW_HAVE_UNPRESERVE
	{
		/* 6.19+: one folio, preserved and unpreserved n times */
		struct folio *folio = folio_alloc(GFP_KERNEL, 0);
		unsigned long i;

		if (!folio)
			return -ENOMEM;
		t0 = ktime_get_ns();
		for (i = 0; i < n; i++) {
			err = kho_preserve_folio(folio);
			if (err)
				break;
			kho_unpreserve_folio(folio);
		}
		t1 = ktime_get_ns();
		folio_put(folio);
	}
#else
	{
		/*
		 * 6.16 - 6.18: n distinct folios, each preserved once.  Nothing
		 * can unpreserve them, so the preserved ones are kept for good.
		 */
		struct folio **folios;
		unsigned long i, done;

		folios = kvcalloc(n, sizeof(*folios), GFP_KERNEL);
		if (!folios)
			return -ENOMEM;
		for (i = 0; i < n; i++) {
			folios[i] = folio_alloc(GFP_KERNEL | __GFP_NOWARN, 0);
			if (!folios[i]) {
				err = -ENOMEM;
				break;
			}
		}
		done = 0;
		if (!err) {
			t0 = ktime_get_ns();
			for (; done < n; done++) {
				err = kho_preserve_folio(folios[done]);
				if (err)
					break;
			}
			t1 = ktime_get_ns();
		}
		if (done)
			kw_pin();
		for (i = done; i < n && folios[i]; i++)
			folio_put(folios[i]);
		kvfree(folios);
	}
#endif
	if (err)
		return err;
	kw_bench_loops = n;
	kw_bench_ns = t1 - t0;
	return 0;
}

static int kw_run(char *line)
{
	char *argv[4], *tok;
	unsigned long a = 0, b = 0;
	int argc = 0;

	while ((tok = strsep(&line, " \t\n")) != NULL) {
		if (!*tok)
			continue;
		if (argc == ARRAY_SIZE(argv))
			return -EINVAL;
		argv[argc++] = tok;
	}
	if (!argc)
		return -EINVAL;
	if ((argc > 1 && kstrtoul(argv[1], 0, &a)) ||
	    (argc > 2 && kstrtoul(argv[2], 0, &b)))
		return -EINVAL;

	if (!strcmp(argv[0], "bogus"))
		return argc == 1 ? kw_cmd_bogus() : -EINVAL;
	if (!strcmp(argv[0], "scribble"))
		return argc == 2 ? kw_cmd_scribble(a) : -EINVAL;
	if (!kw_can_preserve)
		return -EOPNOTSUPP;
	if (!strcmp(argv[0], "folio") && argc == 3)
		return kw_cmd_folio(a, b);
	if (!strcmp(argv[0], "pages") && argc == 3)
		return kw_cmd_pages(a, b);
	if (!strcmp(argv[0], "vmalloc") && argc == 2)
		return kw_cmd_vmalloc(a);
	if (!strcmp(argv[0], "scatter") && argc == 3)
		return kw_cmd_scatter(a, b);
	if (!strcmp(argv[0], "numa") && argc == 2)
		return kw_cmd_numa(a);
	if (!strcmp(argv[0], "unpreserve") && argc == 2)
		return kw_cmd_unpreserve(a);
	if (!strcmp(argv[0], "loop") && argc == 2)
		return kw_cmd_loop(a);
	return -EINVAL;
}

/* ---------------------------------------------------------------------- */
/* debugfs */

static ssize_t kw_ctl_write(struct file *file, const char __user *ubuf,
			    size_t len, loff_t *ppos)
{
	char buf[64];
	int err, serr;

	if (!len || len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = '\0';

	mutex_lock(&kw_lock);
	err = kw_run(buf);
	serr = kw_sync();
	mutex_unlock(&kw_lock);
	if (!err)
		err = serr;
	return err ? err : len;
}

static const struct file_operations kw_ctl_fops = {
	.owner = THIS_MODULE,
	.write = kw_ctl_write,
	.llseek = noop_llseek,
};

static void *kw_list_start(struct seq_file *m, loff_t *pos)
{
	mutex_lock(&kw_lock);
	if (!*pos)
		return SEQ_START_TOKEN;
	return *pos <= kw_nr ? kw_items[*pos - 1] : NULL;
}

static void *kw_list_next(struct seq_file *m, void *v, loff_t *pos)
{
	++*pos;
	return *pos <= kw_nr ? kw_items[*pos - 1] : NULL;
}

static void kw_list_stop(struct seq_file *m, void *v)
{
	mutex_unlock(&kw_lock);
}

static int kw_list_show(struct seq_file *m, void *v)
{
	const struct kw_item *item = v;
	unsigned long i;

	if (v == SEQ_START_TOKEN) {
		seq_printf(m, "# kho_workload v1 kernel=%s items=%u kho_boot=%d\n",
			   init_utsname()->release, kw_nr, kw_kho_boot);
		return 0;
	}
	seq_printf(m, "id=%u kind=%s state=%s phys=0x%llx order=%d nr_pages=%lu csum=0x%016llx ret=%d",
		   item->id, kw_kind_names[item->kind],
		   kw_state_names[item->state], (u64)item->phys, item->order,
		   item->nr_pages, item->csum, item->ret);
	if (item->kind == KW_SCATTER)
		seq_printf(m, " stride=%lu preserve_ns=%llu", item->stride,
			   item->preserve_ns);
	if (item->kind == KW_NUMA && !kw_kho_boot)
		seq_printf(m, " owned=%lu", item->nr_pages - item->done);
	if (item->kind == KW_NUMA && item->state == KW_RESTORED)
		kw_numa_unrestored(item, m);
	if (item->kind == KW_VMALLOC && item->vm_pages) {
		seq_puts(m, " pages=");
		for (i = 0; i < item->vm_nr; i++)
			seq_printf(m, "%s0x%llx", i ? "," : "",
				   (u64)item->vm_pages[i]);
	}
	seq_putc(m, '\n');
	return 0;
}

static const struct seq_operations kw_list_sops = {
	.start = kw_list_start,
	.next = kw_list_next,
	.stop = kw_list_stop,
	.show = kw_list_show,
};
DEFINE_SEQ_ATTRIBUTE(kw_list);

static ssize_t kw_bench_read(struct file *file, char __user *ubuf,
			     size_t len, loff_t *ppos)
{
	char buf[64];
	int n;

	mutex_lock(&kw_lock);
	n = scnprintf(buf, sizeof(buf), "loop=%u ns=%llu\n", kw_bench_loops,
		      kw_bench_ns);
	mutex_unlock(&kw_lock);
	return simple_read_from_buffer(ubuf, len, ppos, buf, n);
}

static const struct file_operations kw_bench_fops = {
	.owner = THIS_MODULE,
	.read = kw_bench_read,
	.llseek = default_llseek,
};

/* ---------------------------------------------------------------------- */
/* KHO boot: read the incoming table and restore */

static bool kw_chosen(u32 id)
{
	char buf[sizeof(restore)], *s = buf, *tok;
	u32 v;

	if (!strcmp(restore, "all"))
		return true;
	if (!strcmp(restore, "none"))
		return false;
	strscpy(buf, restore, sizeof(buf));
	while ((tok = strsep(&s, ",")) != NULL)
		if (!kstrtou32(strim(tok), 0, &v) && v == id)
			return true;
	return false;
}

static int kw_check_restore_param(void)
{
	char buf[sizeof(restore)], *s = buf, *tok;
	u32 v;

	if (!strcmp(restore, "all") || !strcmp(restore, "none"))
		return 0;
	strscpy(buf, restore, sizeof(buf));
	while ((tok = strsep(&s, ",")) != NULL)
		if (kstrtou32(strim(tok), 0, &v))
			return -EINVAL;
	return 0;
}

/* The data pages of an incoming vmalloc item, read from its chunk list. */
static void kw_vmalloc_pages(struct kw_item *item)
{
	const unsigned long slots = (PAGE_SIZE - 8) / 8;
	u64 chunk = get_unaligned_le64(item->vm.raw);
	u32 total = get_unaligned_le32(item->vm.raw + 8);
	u16 order = get_unaligned_le16(item->vm.raw + 14);
	unsigned long n = 0, i, j;

	if (!total || total > KW_MAX_PAGES || order > MAX_PAGE_ORDER)
		return;
	item->vm_pages = kvcalloc(total, sizeof(*item->vm_pages), GFP_KERNEL);
	if (!item->vm_pages)
		return;
	while (chunk && n < total && pfn_valid(PHYS_PFN(chunk))) {
		const u64 *c = phys_to_virt(chunk);

		for (i = 0; i < slots && c[1 + i] && n < total; i++)
			for (j = 0; j < (1UL << order) && n < total; j++)
				item->vm_pages[n++] = c[1 + i] + j * PAGE_SIZE;
		chunk = c[0];
	}
	item->vm_nr = n;
}

static int kw_parse(const void *table, size_t len)
{
	const struct kw_header *hdr = table;
	const struct kw_entry *e = table + sizeof(*hdr);
	u32 i, nr;

	if (len < sizeof(*hdr) || memcmp(hdr->magic, KW_MAGIC, 8) ||
	    le32_to_cpu(hdr->version) != KW_VERSION)
		return -EINVAL;
	nr = le32_to_cpu(hdr->nr);
	if (nr > KW_MAX_ITEMS || len < sizeof(*hdr) + nr * sizeof(*e))
		return -EINVAL;
	for (i = 0; i < nr; i++, e++) {
		u32 kind = le32_to_cpu(e->kind), state = le32_to_cpu(e->state);
		struct kw_item *item;

		if (kind < KW_BLOB || kind > KW_NUMA ||
		    (state != KW_PRESERVED && state != KW_UNPRESERVED) ||
		    !le64_to_cpu(e->nr_pages) ||
		    le64_to_cpu(e->nr_pages) > KW_MAX_PAGES ||
		    kw_find(le32_to_cpu(e->id)))
			return -EINVAL;
		item = kzalloc(sizeof(*item), GFP_KERNEL);
		if (!item)
			return -ENOMEM;
		item->id = le32_to_cpu(e->id);
		item->kind = kind;
		item->state = state;
		item->phys = le64_to_cpu(e->phys);
		item->nr_pages = le64_to_cpu(e->nr_pages);
		item->order = (s32)le32_to_cpu(e->order);
		item->csum = le64_to_cpu(e->csum);
		item->stride = le32_to_cpu(e->stride);
		memcpy(item->vm.raw, e->vmalloc_desc, sizeof(item->vm.raw));
		kw_add(item);
		if (kind == KW_SCATTER && (!item->stride || item->nr_pages >
					   KW_MAX_PAGES / item->stride))
			return -EINVAL;
		if (kind == KW_VMALLOC && state == KW_PRESERVED)
			kw_vmalloc_pages(item);
	}
	return 0;
}

/* Restore one incoming item; returns what it did, for the log line. */
static const char *kw_restore_item(struct kw_item *item, char *why, size_t n)
{
	const void *data = NULL;
	struct folio *folio;
	u64 csum;

	if (item->state == KW_UNPRESERVED)
		return "skipped (unpreserved before kexec)";
	if (!kw_chosen(item->id)) {
		item->state = KW_UNRESTORED;
		return "not restored (restore= does not name it)";
	}
	switch (item->kind) {
	case KW_BLOB:
	case KW_FOLIO:
		folio = kho_restore_folio(item->phys);
		if (!folio)
			break;
		item->folio = folio;
		if (folio_order(folio) != item->order) {
			item->state = KW_MISMATCH;
			snprintf(why, n, "restored, order MISMATCH (got %u, want %d)",
				 folio_order(folio), item->order);
			return why;
		}
		if (item->kind == KW_BLOB) {
			item->state = KW_RESTORED;
			return "restored (own table, no checksum)";
		}
		data = folio_address(folio);
		break;
#if KW_HAVE_PAGES
	case KW_PAGES:
		item->page = kho_restore_pages(item->phys, item->nr_pages);
		if (item->page)
			data = page_address(item->page);
		break;
	case KW_VMALLOC:
		if (item->vm.desc.total_pages != item->nr_pages) {
			item->state = KW_MISMATCH;
			return "not restored, descriptor MISMATCH (page count)";
		}
		item->vaddr = kho_restore_vmalloc(&item->vm.desc);
		data = item->vaddr;
		break;
	case KW_NUMA:
		/* 7.1-7.3 walk the run without the node split (docs/abi.md) */
		item->page = kho_restore_pages(item->phys, item->nr_pages);
		if (!item->page)
			break;
		item->ret = 0;
		item->state = KW_RESTORED;
		return "restored (a run across nodes; content not the module's)";
#endif
	case KW_SCATTER:
		for (item->done = 0; item->done < item->nr_pages; item->done++) {
			folio = kho_restore_folio(item->phys + PFN_PHYS(
					item->done * item->stride));
			if (!folio)
				break;
			if (folio_order(folio)) {
				item->done++;
				item->state = KW_MISMATCH;
				snprintf(why, n, "block %lu restored, order MISMATCH (got %u, want 0)",
					 item->done - 1, folio_order(folio));
				return why;
			}
			if (!(item->done % 1024))
				cond_resched();
		}
		if (item->done < item->nr_pages) {
			item->state = KW_FAILED;
			item->ret = -1;
			snprintf(why, n, "FAILED (NULL at block %lu of %lu)",
				 item->done, item->nr_pages);
			return why;
		}
		item->ret = 0;
		item->page = pfn_to_page(PHYS_PFN(item->phys));
		item->state = KW_RESTORED;
		return "restored (no content checksum)";
	default:
		/* 6.16/6.17 kind "phys": no KHO call restores a range */
		item->state = KW_UNRESTORED;
		return "not restored (no restore API for this kind)";
	}
	if (!data) {
		item->state = KW_FAILED;
		item->ret = -1;
		return "FAILED (NULL)";
	}
	item->ret = 0;
	csum = kw_fnv1a(data, item->nr_pages << PAGE_SHIFT);
	if (csum != item->csum) {
		item->state = KW_MISMATCH;
		snprintf(why, n, "restored, checksum MISMATCH (got 0x%016llx)",
			 csum);
		return why;
	}
	item->state = KW_RESTORED;
	return "restored, checksum ok";
}

static int kw_restore(phys_addr_t phys, size_t size)
{
	const void *blob, *table;
	char why[80];
	unsigned int i;
	size_t len;
	int err;

	if (!pfn_valid(PHYS_PFN(phys)) || size > KW_BLOB_SIZE)
		return -EINVAL;
	blob = phys_to_virt(phys);
#if KW_RAW_BLOB
	table = blob;
	len = size;
	err = 0;
#else
	err = kw_fdt_items(blob, KW_BLOB_SIZE, &table, &len);
#endif
	if (!err && len >= sizeof(struct kw_header) &&
	    !memcmp(table, KW_MAGIC_DONE, 8)) {
		pr_info("KHO boot: the incoming items were handled by an earlier load\n");
		return 0;
	}
	if (!err)
		err = kw_parse(table, len);
	if (err) {
		pr_err("incoming sub-node %s at 0x%llx is not a valid table: %d\n",
		       KW_NODE, (u64)phys, err);
		return err;
	}
	kw_incoming = (void *)table;
	pr_info("KHO boot: %u incoming items, restore=%s\n", kw_nr, restore);
	for (i = 0; i < kw_nr; i++) {
		struct kw_item *item = kw_items[i];
		const char *what = kw_restore_item(item, why, sizeof(why));

		pr_info("item %u %s phys 0x%llx nr %lu: %s\n", item->id,
			kw_kind_names[item->kind], (u64)item->phys,
			item->nr_pages, what);
	}
	return 0;
}

static int kw_retrieve(phys_addr_t *phys, size_t *size)
{
#if KW_RAW_BLOB
	/* 7.1+ */
	return kho_retrieve_subtree(KW_NODE, phys, size);
#else
	/* 6.16 - 7.0: an FDT, its header carries the size */
	*size = KW_BLOB_SIZE;
	return kho_retrieve_subtree(KW_NODE, phys);
#endif
}

/* ---------------------------------------------------------------------- */
/* cold boot: the blob */

static int kw_cold_start(void)
{
	struct kw_item *item = kw_new(KW_BLOB);
	int err;

	if (IS_ERR(item))
		return PTR_ERR(item);
	kw_blob = folio_alloc(GFP_KERNEL | __GFP_ZERO, KW_BLOB_ORDER);
	if (!kw_blob) {
		kfree(item);
		return -ENOMEM;
	}
	item->folio = kw_blob;
	item->phys = PFN_PHYS(folio_pfn(kw_blob));
	item->order = KW_BLOB_ORDER;
	item->nr_pages = 1 << KW_BLOB_ORDER;
#if KW_HAVE_NOTIFIER
	/*
	 * 6.16 - 6.18: the sub-node is added when KHO finalizes.  Register
	 * first: once the blob is preserved, nothing may fail any more.
	 */
	err = register_kho_notifier(&kw_kho_nb);
	if (!err) {
		err = kho_preserve_folio(kw_blob);
		if (err)
			unregister_kho_notifier(&kw_kho_nb);
	}
	kw_notifier_registered = !err;
#else
	err = kho_preserve_folio(kw_blob);
#endif
	if (err) {
		folio_put(kw_blob);
		kw_blob = NULL;
		kfree(item);
		return err;
	}
	item->state = KW_PRESERVED;
	kw_add(item);
	kw_pin();
	/* 6.19+: adds the sub-node; on failure kw_release() unpreserves */
	return kw_sync();
}

/* ---------------------------------------------------------------------- */

static void kw_release(struct kw_item *item)
{
	switch (item->state) {
#if KW_HAVE_UNPRESERVE
	case KW_PRESERVED:
		/*
		 * 6.19+; before that the module is pinned while anything is.
		 * Incoming items not restored yet hold no memory of ours.
		 */
		if (!item->folio && !item->page && !item->vaddr)
			break;
		if (item->kind == KW_BLOB) {
			if (kw_published)
				kho_remove_subtree(folio_address(item->folio));
			kw_published = 0;
			kho_unpreserve_folio(item->folio);
		} else if (item->kind == KW_FOLIO) {
			kho_unpreserve_folio(item->folio);
		} else if (item->kind == KW_PAGES) {
			kho_unpreserve_pages(item->page, item->nr_pages);
		} else if (item->kind == KW_VMALLOC) {
			kho_unpreserve_vmalloc(&item->vm.desc);
		} else if (item->kind == KW_SCATTER) {
			kw_scatter_unpreserve(item);
		} else if (item->kind == KW_NUMA) {
			/* only the part above the boundary is the module's */
			kho_unpreserve_pages(item->page, item->nr_pages);
			kw_free_run(item->page + item->done,
				    item->nr_pages - item->done);
			break;
		}
		fallthrough;
#endif
	case KW_RESTORED:
	case KW_MISMATCH:
		/*
		 * A page KHO took over stays; so does the incoming table, which
		 * kw_exit() marks as handled for a later load.
		 */
		if (item->kind == KW_BOGUS || item->kind == KW_BLOB ||
		    item->kind == KW_NUMA)	/* restored: partly not ours */
			break;
		if (item->kind == KW_SCATTER) {
			kw_scatter_put(item, 0);	/* order-0 folios */
			break;
		}
		if (item->folio)
			folio_put(item->folio);
		vfree(item->vaddr);
#if KW_HAVE_UNPRESERVE
		/*
		 * 6.18's kho_restore_pages() leaves split compound pages that
		 * cannot be freed page by page: keep them there.
		 */
		if (item->page)
			kw_free_run(item->page, item->nr_pages);
#endif
		break;
	default:
		break;
	}
	kvfree(item->vm_pages);
	kfree(item);
}

static void kw_release_all(void)
{
	while (kw_nr)
		kw_release(kw_items[--kw_nr]);
	kw_blob = NULL;
}

static int __init kw_init(void)
{
	phys_addr_t phys;
	size_t size;
	int err;

	err = kw_check_restore_param();
	if (err) {
		pr_err("restore=%s: want all, none or a comma list of ids\n",
		       restore);
		return err;
	}

	mutex_lock(&kw_lock);
	kw_can_preserve = kho_is_enabled();
	err = kw_retrieve(&phys, &size);
	if (!err) {
		kw_kho_boot = true;
		err = kw_restore(phys, size);
	} else if (err == -ENOENT) {
		if (kw_can_preserve) {
			err = kw_cold_start();
		} else {
			pr_err("KHO is disabled (boot with kho=on)\n");
			err = -EOPNOTSUPP;
		}
	} else {
		pr_err("kho_retrieve_subtree(%s): %d\n", KW_NODE, err);
	}
	if (err)
		kw_release_all();
	mutex_unlock(&kw_lock);
	if (err)
		return err;

	kw_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("ctl", 0200, kw_dir, NULL, &kw_ctl_fops);
	debugfs_create_file("list", 0444, kw_dir, NULL, &kw_list_fops);
	debugfs_create_file("bench", 0444, kw_dir, NULL, &kw_bench_fops);
	return 0;
}
module_init(kw_init);

static void __exit kw_exit(void)
{
	debugfs_remove_recursive(kw_dir);
#if KW_HAVE_NOTIFIER
	if (kw_notifier_registered)
		unregister_kho_notifier(&kw_kho_nb);
#endif
	mutex_lock(&kw_lock);
	/* a later load must not restore these items a second time */
	if (kw_incoming)
		memcpy(kw_incoming, KW_MAGIC_DONE, 8);
	kw_release_all();
	mutex_unlock(&kw_lock);
}
module_exit(kw_exit);

MODULE_DESCRIPTION("KHO workload for the kho_inspect vmtests");
MODULE_LICENSE("GPL");

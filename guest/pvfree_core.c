// SPDX-License-Identifier: GPL-2.0
/*
 * pvfree guest driver core: tells the hypervisor which page frames are
 * free so that pre-copy live migration can skip them.
 *
 * On request, the guest walks the buddy allocator's free lists and sets,
 * in a bitmap shared with the host, the bits of every frame found on a
 * free list.  Any page on a free list under zone->lock is free at that
 * instant, and the host started dirty tracking before it published the
 * request, so a set bit is always safe; a page missed (freed while the
 * walk was elsewhere) is only a lost optimisation.  Pages on the
 * per-CPU lists are free too (a large exit parks tens of MiB there, and
 * drain_all_pages() is not exported), so they are marked as well, under
 * pcp->lock.
 * See docs/design.md and include/pvfree/abi.h.
 *
 * Locking:
 *   pv->grow_lock serialises storage (re)allocation;
 *   pv->lock serialises answering a request against installing storage;
 *   pv->reg_lock serialises attach/detach against the doorbell;
 *   pv->pcp_mutex keeps memory offlining from freeing a zone's per-CPU
 *   pagesets (zone_pcp_reset()) while the walk uses them;
 *   zone->lock and pcp->lock are taken for at most PVFREE_BATCH list
 *   entries.
 * No memory is allocated while a request is being answered.
 *
 * Copyright (c) 2026 The pvfree authors
 */

#include <linux/cc_platform.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/device.h>
#include <linux/err.h>
#include <linux/gfp.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/memory.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/nodemask.h>
#include <linux/notifier.h>
#include <linux/poison.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>

#include "abi.h"
#include "pvfree.h"

/* ABI frames per guest page, as a shift: 0 for 4 KiB pages. */
#define PVFREE_PAGE_FRAME_SHIFT	(PAGE_SHIFT - PVFREE_FRAME_SHIFT)

/*
 * Free-list entries examined per zone->lock hold, with interrupts off.
 * Each entry costs a struct page cache miss, page_to_pfn() and setting
 * (1 << order) bits.  Measured under TCG (QEMU 10.0, 1 GiB guest, one
 * order-0 list of ~60000 entries): 256 entries take 70-90 us per hold,
 * about 0.3 us per entry, so a hold stays far below the 1 ms the spec
 * asks for even on a slow emulated CPU, and takes a few microseconds on
 * KVM; yet the lock is dropped only every 256 entries, which keeps the
 * rotate/retake overhead small (a 60000-entry list: ~270 holds, 2.4 ms).
 */
#define PVFREE_BATCH		256

/* Response statuses, PVFREE_STATUS_NONE included: they index counters. */
#define PVFREE_NR_STATUS	(PVFREE_STATUS_ABORTED + 1)

/**
 * struct pvfree_storage - the bitmap and its description to the host
 * @bitmap: the bitmap, vmap()ed, little-endian bit order (bit i is bit
 *	i % 8 of byte i / 8), one bit per ABI frame of [@start_pfn, @end_pfn)
 * @pages: the pages of @bitmap, each freed on its own (split_page())
 * @size: bytes allocated for @bitmap, a multiple of PAGE_SIZE
 * @start_pfn: first guest page covered
 * @end_pfn: first guest page beyond the covered range
 * @table: extent table if the data extents do not fit inline, else NULL
 * @table_size: bytes allocated for @table
 * @nr_extents: data extents
 * @table_extents: inline extents describing @table, or 0
 * @ext: what goes into the header's extents[] (little-endian)
 */
struct pvfree_storage {
	u8 *bitmap;
	struct page **pages;
	size_t size;
	unsigned long start_pfn;
	unsigned long end_pfn;
	struct pvfree_extent *table;
	size_t table_size;
	u32 nr_extents;
	u32 table_extents;
	struct pvfree_extent ext[PVFREE_INLINE_EXTENTS];
};

struct pvfree_stats {
	bool registered;
	bool answering;
	u64 requests;
	u64 last_request_id;
	u32 last_status;
	u8 content;
	u64 free_frames;
	u64 snapshot_us;
	u32 max_lock_hold_us;
	u64 batches;
	u64 entries;
	u64 pcp_frames;
	u64 out_of_range;
	u64 status[PVFREE_NR_STATUS];	/* responses, by PVFREE_STATUS_* */
	u64 base_pfn;
	u64 nr_frames;
	u64 storage_bytes;
	u32 nr_extents;
	u32 table_extents;
};

struct pvfree {
	struct device *dev;
	const struct pvfree_transport *transport;
	void *priv;

	struct page *header_page;
	struct pvfree_header *hdr;

	struct mutex lock;		/* answering vs. storage install */
	struct pvfree_storage *storage;	/* changed under lock + grow_lock */
	u64 answered;			/* last request_id answered */

	struct mutex grow_lock;		/* storage (re)allocation */
	struct notifier_block mem_nb;
	struct work_struct grow_work;	/* retry after NO_SPACE */

	struct mutex pcp_mutex;		/* pcp walk vs. memory offlining */
	unsigned int offlining;		/* under pcp_mutex */

	struct mutex reg_lock;		/* attach/detach vs. doorbell */
	bool registered;		/* attached to the host */

	bool stopping;			/* READ_ONCE/WRITE_ONCE */
	bool leak;			/* host may still use our memory */
	struct work_struct work;

	spinlock_t stats_lock;		/* protects stats */
	struct pvfree_stats stats;
	struct dentry *debugfs;
};

/**
 * struct pvfree_walk - one walk of the free lists: inputs, then results
 * @bitmap: gets the bits of the free frames set; bit 0 is @start_pfn
 * @start_pfn: first guest page @bitmap covers
 * @end_pfn: first guest page beyond the range @bitmap covers
 * @stop: the walk ends early once this reads true (READ_ONCE)
 * @batches: lock holds
 * @entries: free-list entries visited
 * @pcp_pages: pages found on per-CPU lists
 * @out_of_range: free blocks not within [@start_pfn, @end_pfn)
 * @max_hold_ns: longest lock hold
 */
struct pvfree_walk {
	u8 *bitmap;
	unsigned long start_pfn;
	unsigned long end_pfn;
	const bool *stop;
	u64 batches;
	u64 entries;
	u64 pcp_pages;
	u64 out_of_range;
	u64 max_hold_ns;
};

/* One pvfree device per guest: the debugfs path is fixed. */
static DEFINE_MUTEX(pvfree_instance_lock);
static bool pvfree_instance;

static inline u64 pvfree_pfn_to_frame(unsigned long pfn)
{
	return (u64)pfn << PVFREE_PAGE_FRAME_SHIFT;
}

/*
 * Byte-wise bitmap helpers: the wire format is little-endian bit order on
 * every architecture, which byte operations give for free.
 */
static inline bool pvfree_test_bit(const u8 *map, u64 i)
{
	return map[i >> 3] & BIT(i & 7);
}

static void pvfree_set_bits(u8 *map, u64 i, u64 n)
{
	for (; n && (i & 7); i++, n--)
		map[i >> 3] |= BIT(i & 7);
	if (n >= 8) {
		memset(map + (i >> 3), 0xff, n >> 3);
		i += n & ~7ULL;
		n &= 7;
	}
	for (; n; i++, n--)
		map[i >> 3] |= BIT(i & 7);
}

/*
 * The guest's RAM frame range: min zone_start_pfn .. max zone_end_pfn of
 * the populated zones of the online nodes.
 */
static bool pvfree_ram_span(unsigned long *start, unsigned long *end)
{
	int nid, z;

	*start = ULONG_MAX;
	*end = 0;
	for_each_online_node(nid) {
		pg_data_t *pgdat = NODE_DATA(nid);

		for (z = 0; z < MAX_NR_ZONES; z++) {
			struct zone *zone = &pgdat->node_zones[z];

			if (!populated_zone(zone))
				continue;
			/* Hot-plug may resize it; the walk checks bounds. */
			*start = min(*start, data_race(zone->zone_start_pfn));
			*end = max(*end, zone_end_pfn(zone));
		}
	}
	return *end > *start;
}

static unsigned long pvfree_addr_to_pfn(const void *addr)
{
	if (is_vmalloc_addr(addr))
		return vmalloc_to_pfn(addr);
	return page_to_pfn(virt_to_page(addr));
}

static void pvfree_put_extent(struct pvfree_extent *ext, u32 max, u32 i,
			      unsigned long pfn, unsigned long nr)
{
	if (!ext || i >= max)
		return;
	ext[i].pfn = cpu_to_le64(pvfree_pfn_to_frame(pfn));
	ext[i].nr_frames = cpu_to_le64(pvfree_pfn_to_frame(nr));
}

/*
 * Describe the page-aligned buffer [buf, buf + size) as extents of
 * frames, coalescing physically contiguous pages.  Stores at most @max
 * extents into @ext (which may be NULL) and returns how many it takes.
 */
static u32 pvfree_describe(const void *buf, size_t size,
			   struct pvfree_extent *ext, u32 max)
{
	unsigned long pfn, run_pfn = 0, run_len = 0;
	size_t off;
	u32 n = 0;

	for (off = 0; off < size; off += PAGE_SIZE) {
		pfn = pvfree_addr_to_pfn(buf + off);
		if (run_len && pfn == run_pfn + run_len) {
			run_len++;
			continue;
		}
		if (run_len)
			pvfree_put_extent(ext, max, n++, run_pfn, run_len);
		run_pfn = pfn;
		run_len = 1;
	}
	if (run_len)
		pvfree_put_extent(ext, max, n++, run_pfn, run_len);
	return n;
}

/*
 * Largest block tried for the bitmap: order 9 is 2 MiB with 4 KiB pages,
 * one extent per 64 GiB of RAM, and is cheap to find or to give up on.
 */
#define PVFREE_STORAGE_MAX_ORDER	9

#ifdef PVFREE_SELFTEST
/* Test builds only: exercise the indirect form and many extents. */
static bool force_table;
module_param(force_table, bool, 0644);
MODULE_PARM_DESC(force_table, "self-test: always use an extent table");
static uint storage_max_order = PVFREE_STORAGE_MAX_ORDER;
module_param(storage_max_order, uint, 0644);
MODULE_PARM_DESC(storage_max_order, "self-test: largest bitmap block order");
static uint walk_delay_us;
module_param(walk_delay_us, uint, 0644);
MODULE_PARM_DESC(walk_delay_us, "self-test: sleep between batches");
static bool fail_storage;
module_param(fail_storage, bool, 0644);
MODULE_PARM_DESC(fail_storage, "self-test: storage allocations fail");
#else
#define force_table		false
#define storage_max_order	PVFREE_STORAGE_MAX_ORDER
#define walk_delay_us		0
#define fail_storage		false
#endif

static void pvfree_bitmap_free(struct pvfree_storage *st)
{
	unsigned long i;

	if (st->bitmap)
		vunmap(st->bitmap);
	if (st->pages) {
		for (i = 0; i < st->size >> PAGE_SHIFT && st->pages[i]; i++)
			__free_page(st->pages[i]);
		kvfree(st->pages);
	}
}

/*
 * Allocate the bitmap in the largest blocks available, so that few
 * extents describe it, falling back to single pages, and map it
 * virtually contiguous.
 */
static int pvfree_bitmap_alloc(struct pvfree_storage *st)
{
	unsigned long nr = st->size >> PAGE_SHIFT, i = 0, j;
	unsigned int order;
	struct page *page;
	gfp_t gfp;

	st->pages = kvcalloc(nr, sizeof(*st->pages), GFP_KERNEL);
	if (!st->pages)
		return -ENOMEM;
	while (i < nr) {
		order = min_t(unsigned int, ilog2(nr - i),
			      min_t(unsigned int, storage_max_order,
				    PVFREE_STORAGE_MAX_ORDER));
		for (;;) {
			gfp = GFP_KERNEL | __GFP_ZERO;
			if (order)
				gfp |= __GFP_NORETRY | __GFP_NOWARN;
			page = alloc_pages(gfp, order);
			if (page || !order)
				break;
			order--;
		}
		if (!page)
			return -ENOMEM;
		if (order)
			split_page(page, order);
		for (j = 0; j < (1UL << order); j++)
			st->pages[i++] = page + j;
	}
	st->bitmap = vmap(st->pages, nr, VM_MAP, PAGE_KERNEL);
	return st->bitmap ? 0 : -ENOMEM;
}

static void pvfree_storage_free(struct pvfree_storage *st)
{
	if (!st)
		return;
	kvfree(st->table);
	pvfree_bitmap_free(st);
	kfree(st);
}

static struct pvfree_storage *pvfree_storage_alloc(unsigned long start_pfn,
						   unsigned long end_pfn)
{
	u64 nr_frames = pvfree_pfn_to_frame(end_pfn - start_pfn);
	struct pvfree_storage *st;
	u64 bytes = (nr_frames + 7) >> 3;
	u32 n, t;

	if (bytes > (u64)PVFREE_MAX_EXTENTS * PAGE_SIZE)
		return ERR_PTR(-E2BIG);
	if (fail_storage)
		return ERR_PTR(-ENOMEM);

	st = kzalloc(sizeof(*st), GFP_KERNEL);
	if (!st)
		return ERR_PTR(-ENOMEM);
	st->start_pfn = start_pfn;
	st->end_pfn = end_pfn;
	st->size = PAGE_ALIGN(bytes);
	if (pvfree_bitmap_alloc(st))
		goto nomem;

	n = pvfree_describe(st->bitmap, st->size, st->ext,
			    PVFREE_INLINE_EXTENTS);
	if (n > PVFREE_MAX_EXTENTS)
		goto too_big;
	st->nr_extents = n;
	if (n <= PVFREE_INLINE_EXTENTS && !force_table)
		return st;

	/* Indirect: a table of n extents, itself described inline. */
	st->table_size = PAGE_ALIGN((size_t)n * sizeof(struct pvfree_extent));
	st->table = kvzalloc(st->table_size, GFP_KERNEL);
	if (!st->table)
		goto nomem;
	pvfree_describe(st->bitmap, st->size, st->table, n);
	memset(st->ext, 0, sizeof(st->ext));
	t = pvfree_describe(st->table, st->table_size, st->ext,
			    PVFREE_INLINE_EXTENTS);
	if (t > PVFREE_INLINE_EXTENTS)
		goto too_big;
	st->table_extents = t;
	return st;

too_big:
	pvfree_storage_free(st);
	return ERR_PTR(-E2BIG);
nomem:
	pvfree_storage_free(st);
	return ERR_PTR(-ENOMEM);
}

static bool pvfree_storage_covers(const struct pvfree_storage *st,
				  unsigned long start, unsigned long end)
{
	return st && st->start_pfn <= start && end <= st->end_pfn;
}

/* Called with pv->lock and pv->grow_lock held. */
static void pvfree_install(struct pvfree *pv, struct pvfree_storage *st)
{
	struct pvfree_header *hdr = pv->hdr;

	/*
	 * Withdraw a published OK response before its storage goes away:
	 * the host re-reads response_id after reading the bitmap.  Other
	 * responses do not refer to storage and stay (the host may still
	 * be about to read their status).
	 */
	if (le32_to_cpu(hdr->status) == PVFREE_STATUS_OK) {
		WRITE_ONCE(hdr->response_id, 0);
		/* Pairs with the host's read barrier before that re-read. */
		smp_mb();
	}
	memcpy(hdr->extents, st->ext, sizeof(hdr->extents));
	pv->storage = st;

	spin_lock(&pv->stats_lock);
	pv->stats.base_pfn = pvfree_pfn_to_frame(st->start_pfn);
	pv->stats.nr_frames = pvfree_pfn_to_frame(st->end_pfn - st->start_pfn);
	pv->stats.storage_bytes = st->size + st->table_size;
	pv->stats.nr_extents = st->nr_extents;
	pv->stats.table_extents = st->table_extents;
	spin_unlock(&pv->stats_lock);
}

/*
 * Make the storage cover the guest's RAM frame range.  Never shrinks.
 * Called at creation and from the memory hot-plug notifier, never while
 * answering a request.
 */
static void pvfree_grow(struct pvfree *pv)
{
	struct pvfree_storage *old, *st;
	unsigned long start, end;

	mutex_lock(&pv->grow_lock);
	if (!pvfree_ram_span(&start, &end))
		goto out;
	old = pv->storage;
	if (pvfree_storage_covers(old, start, end))
		goto out;
	if (old) {
		start = min(start, old->start_pfn);
		end = max(end, old->end_pfn);
	}

	st = pvfree_storage_alloc(start, end);
	if (IS_ERR(st)) {
		dev_warn(pv->dev,
			 "no storage for frames %#llx-%#llx (%ld), answering NO_SPACE\n",
			 pvfree_pfn_to_frame(start), pvfree_pfn_to_frame(end),
			 PTR_ERR(st));
		goto out;
	}

	mutex_lock(&pv->lock);
	pvfree_install(pv, st);
	mutex_unlock(&pv->lock);
	pvfree_storage_free(old);

	dev_info(pv->dev,
		 "frames %#llx-%#llx, bitmap %zu KiB in %u extents%s\n",
		 pvfree_pfn_to_frame(start), pvfree_pfn_to_frame(end),
		 st->size >> 10, st->nr_extents,
		 st->table_extents ? " (extent table)" : "");
out:
	mutex_unlock(&pv->grow_lock);
}

static void pvfree_grow_work(struct work_struct *work)
{
	pvfree_grow(container_of(work, struct pvfree, grow_work));
}

static int pvfree_memory_notify(struct notifier_block *nb,
				unsigned long action, void *arg)
{
	struct pvfree *pv = container_of(nb, struct pvfree, mem_nb);

	/*
	 * The zone span already includes the new range at MEM_GOING_ONLINE,
	 * before its pages reach the free lists.
	 */
	if (action == MEM_GOING_ONLINE || action == MEM_ONLINE)
		pvfree_grow(pv);

	/*
	 * offline_pages() may free a zone's per-CPU pagesets between
	 * MEM_GOING_OFFLINE and MEM_OFFLINE/MEM_CANCEL_OFFLINE: no pcp walk
	 * in between.  A cancel may come without our GOING_OFFLINE (an
	 * earlier notifier failed), hence the check.  An offline already
	 * past GOING_OFFLINE when the notifier is registered is not seen:
	 * get_online_mems() is not exported.
	 */
	mutex_lock(&pv->pcp_mutex);
	if (action == MEM_GOING_OFFLINE)
		pv->offlining++;
	else if ((action == MEM_OFFLINE || action == MEM_CANCEL_OFFLINE) &&
		 pv->offlining)
		pv->offlining--;
	mutex_unlock(&pv->pcp_mutex);
	return NOTIFY_OK;
}

/* What free pages must read as, and the host feature that provides it. */
static u8 pvfree_content(u8 *poison, u64 *needs)
{
	*poison = 0;
	/* Poisoning takes precedence over init_on_free (mm_core_init()). */
	if (page_poisoning_enabled_static()) {
		*poison = PAGE_POISON;
		*needs = PVFREE_HF_POISON_FILL;
		return PVFREE_CONTENT_POISON;
	}
	if (want_init_on_free()) {
		*needs = PVFREE_HF_ZERO_FILL;
		return PVFREE_CONTENT_ZERO;
	}
	*needs = 0;
	return PVFREE_CONTENT_ANY;
}

static void pvfree_mark(struct pvfree_walk *w, struct page *page,
			unsigned int order)
{
	unsigned long pfn = page_to_pfn(page);
	unsigned long nr = 1UL << order;
	u64 i, n;

	if (pfn < w->start_pfn || pfn >= w->end_pfn ||
	    nr > w->end_pfn - pfn) {
		w->out_of_range++;
		return;
	}
	/* Free blocks are naturally aligned; anything else is a bug here. */
	if (WARN_ON_ONCE(!IS_ALIGNED(pfn, nr)))
		return;
	i = pvfree_pfn_to_frame(pfn - w->start_pfn);
	n = pvfree_pfn_to_frame(nr);
	/* Already visited (the list was rotated, or the page merged). */
	if (pvfree_test_bit(w->bitmap, i) &&
	    pvfree_test_bit(w->bitmap, i + n - 1))
		return;
	pvfree_set_bits(w->bitmap, i, n);
}

static void pvfree_hold_end(struct pvfree_walk *w, u64 t0)
{
	u64 held = ktime_get_ns() - t0;

	w->batches++;
	if (held > w->max_hold_ns)
		w->max_hold_ns = held;
}

/*
 * One free list being walked and the lock that guards it: zone->lock for
 * the free_area[] lists, pcp->lock for the per-CPU lists.
 */
struct pvfree_list {
	spinlock_t *lock;	/* guards head; taken per batch */
	struct list_head *head;
	unsigned int order;
	unsigned long budget;
	struct page *first;	/* first page marked, to see the walk wrap */
};

/*
 * buddy_list and pcp_list overlay each other in struct page (6.1 and
 * 6.12), so one walker serves both kinds of list.
 */
static_assert(offsetof(struct page, buddy_list) ==
	      offsetof(struct page, pcp_list));

/*
 * Mark up to PVFREE_BATCH pages of @l from its head; called with l->lock
 * held.  Rotates the next unvisited entry to the front and returns the
 * number of pages visited; *more says whether the list goes on.
 */
static unsigned int pvfree_walk_batch(struct pvfree_walk *w,
				      struct pvfree_list *l, bool *more)
{
	struct page *page;
	unsigned int n = 0;

	*more = false;
	list_for_each_entry(page, l->head, buddy_list) {
		if (page == l->first || !l->budget)
			break;
		if (n == PVFREE_BATCH) {
			list_rotate_to_front(&page->buddy_list, l->head);
			*more = true;
			break;
		}
		if (!l->first)
			l->first = page;
		pvfree_mark(w, page, l->order);
		n++;
		l->budget--;
	}
	w->entries += n;
	return n;
}

static void pvfree_walk_pause(void)
{
	if (walk_delay_us)
		usleep_range(walk_delay_us, walk_delay_us + 100);
}

/*
 * Mark every page of one free list, PVFREE_BATCH entries per lock hold.
 * Between holds the next unvisited entry is rotated to the front of the
 * list (as page_reporting_cycle() does), so after retaking the lock the
 * walk continues from the head; entries visited before now sit at the
 * tail.  The walk ends at the end of the list, when it meets the first
 * page it marked again (it has gone round), or after l->budget entries
 * (twice the list's length plus one batch), so it terminates however the
 * list changes meanwhile.  Returns the pages visited, or -EINTR if the
 * driver is stopping.
 */
static long pvfree_walk_locked_list(struct pvfree_walk *w,
				    struct pvfree_list *l)
{
	unsigned long flags;
	long visited = 0;
	bool more;
	u64 t0;

	/* Unlocked peek as in page_reporting_cycle(); a miss is harmless. */
	if (data_race(list_empty(l->head)))
		return 0;

	spin_lock_irqsave(l->lock, flags);
	t0 = ktime_get_ns();
	for (;;) {
		visited += pvfree_walk_batch(w, l, &more);
		pvfree_hold_end(w, t0);
		if (!more)
			break;

		spin_unlock_irqrestore(l->lock, flags);
		pvfree_walk_pause();
		cond_resched();
		if (READ_ONCE(*w->stop))
			return -EINTR;
		spin_lock_irqsave(l->lock, flags);
		t0 = ktime_get_ns();
	}
	spin_unlock_irqrestore(l->lock, flags);
	pvfree_walk_pause();
	return visited;
}

static int pvfree_walk_list(struct pvfree_walk *w, struct zone *zone,
			    unsigned int order, unsigned int mt)
{
	struct free_area *area = &zone->free_area[order];
	struct pvfree_list l = {
		.lock = &zone->lock,
		.head = &area->free_list[mt],
		.order = order,
		/* Racy read: the budget only bounds a list that may change. */
		.budget = 2 * data_race(area->nr_free) + PVFREE_BATCH,
	};
	long ret = pvfree_walk_locked_list(w, &l);

	return ret < 0 ? ret : 0;
}

/*
 * Mark the pages of every free_area[] list.  Returns -EINTR if *w->stop
 * became true.
 */
static int pvfree_walk_zones(struct pvfree_walk *w)
{
	unsigned int order, mt;
	int nid, z, ret;

	for_each_online_node(nid) {
		pg_data_t *pgdat = NODE_DATA(nid);

		for (z = 0; z < MAX_NR_ZONES; z++) {
			struct zone *zone = &pgdat->node_zones[z];

			if (!populated_zone(zone))
				continue;
			/* MAX_ORDER (6.1) or NR_PAGE_ORDERS (6.12) entries. */
			for (order = 0; order < ARRAY_SIZE(zone->free_area);
			     order++) {
				for (mt = 0; mt < MIGRATE_TYPES; mt++) {
					if (READ_ONCE(*w->stop))
						return -EINTR;
					ret = pvfree_walk_list(w, zone, order,
							       mt);
					if (ret)
						return ret;
				}
			}
		}
	}
	return 0;
}

/*
 * Mark the pages of one per-CPU list like a free_area[] list.
 * pcp->lock is the lock the allocator itself holds to use the list, from
 * any CPU (drain_pages_zone() takes a remote one), and is otherwise only
 * trylocked from interrupts; so a page seen here is owned by the
 * allocator, i.e. free.  Rotating costs only the cache-hot order of the
 * list.  Returns -EINTR if the driver is stopping.
 */
static int pvfree_walk_pcp_list(struct pvfree_walk *w,
				struct per_cpu_pages *pcp,
				struct list_head *list, unsigned int order)
{
	struct pvfree_list l = {
		.lock = &pcp->lock,
		.head = list,
		.order = order,
		/* Racy read: the budget only bounds a list that may change. */
		.budget = 2 * max(data_race(pcp->count), 0) + PVFREE_BATCH,
	};
	long ret = pvfree_walk_locked_list(w, &l);

	if (ret < 0)
		return ret;
	w->pcp_pages += (u64)ret << order;
	return 0;
}

/*
 * The order of the pages on pcp->lists[pindex], or -1 if it is not known.
 * The mapping is pindex_to_order() of mm/page_alloc.c, private to it but
 * the same in 6.1 and 6.12: MIGRATE_PCPTYPES lists per order up to
 * PAGE_ALLOC_COSTLY_ORDER, then NR_PCP_THP lists of pageblock-sized (6.1)
 * or PMD-sized (6.12) pages, which are the same order where the driver
 * trusts them.  A wrong order would mark pages that are in use, so the
 * layout is checked at build time and pvfree_mark() also refuses a page
 * not aligned to its order.
 */
static_assert(NR_LOWORDER_PCP_LISTS ==
	      MIGRATE_PCPTYPES * (PAGE_ALLOC_COSTLY_ORDER + 1));

static int pvfree_pcp_list_order(unsigned int pindex)
{
	if (pindex < NR_LOWORDER_PCP_LISTS)
		return pindex / MIGRATE_PCPTYPES;
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	if (pageblock_order == HPAGE_PMD_ORDER)
		return HPAGE_PMD_ORDER;
#endif
	return -1;
}

/*
 * Online CPUs: an offlined CPU's lists are drained (page_alloc_cpu_dead())
 * and per_cpu_ptr() is valid for every possible CPU, so racing CPU
 * hot-plug only loses pages.
 */
static int pvfree_walk_zone_pcp(struct pvfree_walk *w, struct zone *zone)
{
	struct per_cpu_pages __percpu *pset = READ_ONCE(zone->per_cpu_pageset);
	unsigned int cpu, pindex;
	int order, ret;

	for_each_online_cpu(cpu) {
		struct per_cpu_pages *pcp = per_cpu_ptr(pset, cpu);

		for (pindex = 0; pindex < NR_PCP_LISTS; pindex++) {
			order = pvfree_pcp_list_order(pindex);
			if (order < 0)
				continue;
			ret = pvfree_walk_pcp_list(w, pcp, &pcp->lists[pindex],
						   order);
			if (ret)
				return ret;
		}
	}
	return 0;
}

/*
 * Mark the pages of every per-CPU list.  The caller keeps memory offlining
 * from freeing the pagesets meanwhile.  Returns -EINTR if *w->stop became
 * true.
 */
static int pvfree_walk_pcp(struct pvfree_walk *w)
{
	int nid, z, ret = 0;

	for_each_online_node(nid) {
		pg_data_t *pgdat = NODE_DATA(nid);

		for (z = 0; z < MAX_NR_ZONES && !ret; z++) {
			struct zone *zone = &pgdat->node_zones[z];

			if (populated_zone(zone))
				ret = pvfree_walk_zone_pcp(w, zone);
		}
	}
	return ret;
}

static int pvfree_walk_pcp_unless_offlining(struct pvfree *pv,
					    struct pvfree_walk *w)
{
	int ret = 0;

	mutex_lock(&pv->pcp_mutex);
	/* An offline in progress: skip, a lost optimisation only. */
	if (!pv->offlining)
		ret = pvfree_walk_pcp(w);
	mutex_unlock(&pv->pcp_mutex);
	return ret;
}

static u64 pvfree_weight(const u8 *map, size_t bytes)
{
	const unsigned long *words = (const unsigned long *)map;
	size_t i;
	u64 n = 0;

	/* bytes is a multiple of sizeof(long); bit order does not matter. */
	for (i = 0; i < bytes / sizeof(long); i++)
		n += hweight_long(words[i]);
	return n;
}

/* Build the snapshot in st; returns a PVFREE_STATUS_*. */
static u32 pvfree_snapshot(struct pvfree *pv, struct pvfree_storage *st,
			   struct pvfree_walk *w, u64 *free_frames)
{
	u64 nr_frames = pvfree_pfn_to_frame(st->end_pfn - st->start_pfn);
	size_t used = round_up((size_t)((nr_frames + 7) >> 3), sizeof(long));

	w->bitmap = st->bitmap;
	w->start_pfn = st->start_pfn;
	w->end_pfn = st->end_pfn;
	w->stop = &pv->stopping;
	memset(st->bitmap, 0, used);
	if (pvfree_walk_zones(w) || pvfree_walk_pcp_unless_offlining(pv, w))
		return PVFREE_STATUS_ABORTED;
	*free_frames = pvfree_weight(st->bitmap, used);
	return PVFREE_STATUS_OK;
}

static void pvfree_account(struct pvfree *pv, u64 id, u32 status,
			   u8 content, u64 free_frames, u64 snapshot_us,
			   u32 max_hold_us, const struct pvfree_walk *w)
{
	struct pvfree_stats *s = &pv->stats;

	spin_lock(&pv->stats_lock);
	s->answering = false;
	s->requests++;
	s->last_request_id = id;
	s->last_status = status;
	s->content = content;
	s->free_frames = free_frames;
	s->snapshot_us = snapshot_us;
	s->max_lock_hold_us = max_hold_us;
	s->batches = w->batches;
	s->entries = w->entries;
	s->pcp_frames = pvfree_pfn_to_frame(w->pcp_pages);
	s->out_of_range = w->out_of_range;
	if (status < ARRAY_SIZE(s->status))
		s->status[status]++;
	spin_unlock(&pv->stats_lock);
}

/*
 * Answer request @id, whose request_id was acquire-loaded at @t0, following
 * the steps of core spec section 6.4.  Called with pv->lock held.  Returns
 * false if the response was abandoned because a newer request arrived.
 */
static bool pvfree_answer(struct pvfree *pv, u64 id, ktime_t t0)
{
	struct pvfree_storage *st = pv->storage;
	struct pvfree_header *hdr = pv->hdr;
	struct pvfree_walk w = { };
	unsigned long start, end;
	u64 hf, needs, free_frames = 0, snapshot_us, hold_us;
	u8 content, poison;
	u32 status;

	spin_lock(&pv->stats_lock);
	pv->stats.answering = true;
	spin_unlock(&pv->stats_lock);

	hf = le64_to_cpu(READ_ONCE(hdr->host_features));
	WRITE_ONCE(hdr->response_id, 0);
	/* response_id = 0 is visible before any other response write. */
	smp_wmb();

	content = pvfree_content(&poison, &needs);
	if (READ_ONCE(pv->stopping))
		status = PVFREE_STATUS_ABORTED;
	else if ((hf & needs) != needs)
		status = PVFREE_STATUS_UNSUPPORTED;
	else if (!pvfree_ram_span(&start, &end) ||
		 !pvfree_storage_covers(st, start, end))
		status = PVFREE_STATUS_NO_SPACE;
	else
		status = pvfree_snapshot(pv, st, &w, &free_frames);

	/* Only the latest request needs an answer. */
	if (status != PVFREE_STATUS_ABORTED &&
	    le64_to_cpu(READ_ONCE(hdr->request_id)) != id) {
		spin_lock(&pv->stats_lock);
		pv->stats.answering = false;
		spin_unlock(&pv->stats_lock);
		return false;
	}

	hdr->status = cpu_to_le32(status);
	hdr->content = content;
	hdr->poison = poison;
	hdr->reserved0 = 0;
	if (st) {
		hdr->base_pfn = cpu_to_le64(pvfree_pfn_to_frame(st->start_pfn));
		hdr->nr_frames = cpu_to_le64(pvfree_pfn_to_frame(st->end_pfn -
								 st->start_pfn));
		hdr->nr_extents = cpu_to_le32(st->nr_extents);
		hdr->table_extents = cpu_to_le32(st->table_extents);
	} else {
		hdr->base_pfn = 0;
		hdr->nr_frames = 0;
		hdr->nr_extents = 0;
		hdr->table_extents = 0;
	}
	if (status != PVFREE_STATUS_OK)
		free_frames = 0;
	hold_us = min_t(u64, U32_MAX,
			div_u64(w.max_hold_ns + NSEC_PER_USEC - 1,
				NSEC_PER_USEC));
	snapshot_us = ktime_us_delta(ktime_get(), t0);
	hdr->free_frames = cpu_to_le64(free_frames);
	hdr->snapshot_us = cpu_to_le64(snapshot_us);
	hdr->max_lock_hold_us = cpu_to_le32(hold_us);
	hdr->reserved1 = 0;

	/* Everything above is visible before response_id. */
	smp_store_release(&hdr->response_id, cpu_to_le64(id));
	pv->answered = id;

	mutex_lock(&pv->reg_lock);
	if (pv->registered)
		pv->transport->notify(pv, id);
	mutex_unlock(&pv->reg_lock);

	pvfree_account(pv, id, status, content, free_frames, snapshot_us,
		       hold_us, &w);
	if (status == PVFREE_STATUS_ABORTED)
		dev_info(pv->dev, "request %llu aborted after %llu batches\n",
			 id, w.batches);
	/* Try again to cover RAM, outside the request path. */
	if (status == PVFREE_STATUS_NO_SPACE && !READ_ONCE(pv->stopping))
		queue_work(system_unbound_wq, &pv->grow_work);
	dev_dbg(pv->dev,
		"request %llu: status %u content %u, %llu free frames, %llu us, %llu batches, max hold %llu us\n",
		id, status, content, free_frames, snapshot_us, w.batches,
		hold_us);
	return true;
}

/*
 * Answer the request in the header unless it was answered already; loop,
 * since a new request may arrive meanwhile.  When stopping, answers a
 * pending request ABORTED.  Called with pv->lock held.
 */
static void pvfree_process(struct pvfree *pv)
{
	ktime_t t0;
	u64 id;

	lockdep_assert_held(&pv->lock);
	for (;;) {
		t0 = ktime_get();
		/* Pairs with the host's release store of request_id. */
		id = le64_to_cpu(smp_load_acquire(&pv->hdr->request_id));
		/* Any other non-zero id is new: ids need not increase. */
		if (!id || id == pv->answered)
			break;
		if (pvfree_answer(pv, id, t0) && READ_ONCE(pv->stopping))
			break;
	}
}

static void pvfree_work(struct work_struct *work)
{
	struct pvfree *pv = container_of(work, struct pvfree, work);

	mutex_lock(&pv->lock);
	if (!READ_ONCE(pv->stopping))
		pvfree_process(pv);
	mutex_unlock(&pv->lock);
}

/**
 * pvfree_request - the host signalled a request
 * @pv: the instance
 *
 * Any context.  Schedules the request work unless the driver is stopping.
 */
void pvfree_request(struct pvfree *pv)
{
	if (!READ_ONCE(pv->stopping))
		queue_work(system_unbound_wq, &pv->work);
}

/* debugfs names of the status counters ("status_<name>"). */
static const char * const pvfree_status_names[PVFREE_NR_STATUS] = {
	[PVFREE_STATUS_OK] = "ok",
	[PVFREE_STATUS_BUSY] = "busy",
	[PVFREE_STATUS_NO_SPACE] = "no_space",
	[PVFREE_STATUS_UNSUPPORTED] = "unsupported",
	[PVFREE_STATUS_ABORTED] = "aborted",
};

static int pvfree_stats_show(struct seq_file *m, void *v)
{
	struct pvfree *pv = m->private;
	struct pvfree_stats s;
	u32 status;

	spin_lock(&pv->stats_lock);
	s = pv->stats;
	spin_unlock(&pv->stats_lock);

	seq_printf(m, "transport: %s\n", pv->transport->name);
	seq_printf(m, "registered: %d\n", s.registered);
	seq_printf(m, "answering: %d\n", s.answering);
	seq_printf(m, "requests: %llu\n", s.requests);
	seq_printf(m, "last_request_id: %llu\n", s.last_request_id);
	seq_printf(m, "last_status: %u\n", s.last_status);
	seq_printf(m, "content: %u\n", s.content);
	seq_printf(m, "free_frames: %llu\n", s.free_frames);
	seq_printf(m, "snapshot_us: %llu\n", s.snapshot_us);
	seq_printf(m, "max_lock_hold_us: %u\n", s.max_lock_hold_us);
	seq_printf(m, "batches: %llu\n", s.batches);
	seq_printf(m, "entries: %llu\n", s.entries);
	seq_printf(m, "pcp_frames: %llu\n", s.pcp_frames);
	seq_printf(m, "out_of_range: %llu\n", s.out_of_range);
	/* NONE is never a response. */
	for (status = PVFREE_STATUS_OK; status < PVFREE_NR_STATUS; status++)
		seq_printf(m, "status_%s: %llu\n", pvfree_status_names[status],
			   s.status[status]);
	seq_printf(m, "base_pfn: %llu\n", s.base_pfn);
	seq_printf(m, "nr_frames: %llu\n", s.nr_frames);
	seq_printf(m, "storage_bytes: %llu\n", s.storage_bytes);
	seq_printf(m, "nr_extents: %u\n", s.nr_extents);
	seq_printf(m, "table_extents: %u\n", s.table_extents);
	seq_printf(m, "batch_entries: %u\n", PVFREE_BATCH);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(pvfree_stats);

/**
 * pvfree_create - set up an instance for a transport
 * @dev: the device, for messages
 * @transport: how to reach the host
 * @priv: transport data, see pvfree_priv()
 *
 * Allocates the header frame and the storage for the current RAM range.
 * Failing to allocate storage is not fatal: requests are then answered
 * PVFREE_STATUS_NO_SPACE.  Returns the instance or an ERR_PTR().
 */
struct pvfree *pvfree_create(struct device *dev,
			     const struct pvfree_transport *transport,
			     void *priv)
{
	struct pvfree_header *hdr;
	struct pvfree *pv;
	int ret;

	/* The host cannot read private memory of a confidential guest. */
	if (cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT)) {
		dev_info(dev, "guest memory is encrypted, not registering\n");
		return ERR_PTR(-ENODEV);
	}

	mutex_lock(&pvfree_instance_lock);
	if (pvfree_instance) {
		mutex_unlock(&pvfree_instance_lock);
		dev_err(dev, "only one pvfree device is supported\n");
		return ERR_PTR(-EBUSY);
	}
	pvfree_instance = true;
	mutex_unlock(&pvfree_instance_lock);

	ret = -ENOMEM;
	pv = kzalloc(sizeof(*pv), GFP_KERNEL);
	if (!pv)
		goto err;
	pv->dev = dev;
	pv->transport = transport;
	pv->priv = priv;
	mutex_init(&pv->lock);
	mutex_init(&pv->grow_lock);
	mutex_init(&pv->reg_lock);
	mutex_init(&pv->pcp_mutex);
	spin_lock_init(&pv->stats_lock);
	INIT_WORK(&pv->work, pvfree_work);
	INIT_WORK(&pv->grow_work, pvfree_grow_work);

	/* One zeroed, frame-aligned header frame (a page >= a frame). */
	BUILD_BUG_ON(PAGE_SIZE < PVFREE_HEADER_SIZE);
	pv->header_page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!pv->header_page)
		goto err_free;
	hdr = page_address(pv->header_page);
	pv->hdr = hdr;
	hdr->magic = cpu_to_le32(PVFREE_MAGIC);
	hdr->version = cpu_to_le16(PVFREE_VERSION);
	hdr->header_size = cpu_to_le16(PVFREE_HEADER_SIZE);
	hdr->guest_features = cpu_to_le64(PVFREE_GF_STATS);

	pvfree_grow(pv);
	pv->mem_nb.notifier_call = pvfree_memory_notify;
	ret = register_memory_notifier(&pv->mem_nb);
	if (ret)
		goto err_storage;

	pv->debugfs = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("stats", 0444, pv->debugfs, pv,
			    &pvfree_stats_fops);
	return pv;

err_storage:
	pvfree_storage_free(pv->storage);
	__free_page(pv->header_page);
err_free:
	kfree(pv);
err:
	mutex_lock(&pvfree_instance_lock);
	pvfree_instance = false;
	mutex_unlock(&pvfree_instance_lock);
	return ERR_PTR(ret);
}

/**
 * pvfree_priv - the transport data given to pvfree_create()
 * @pv: the instance
 */
void *pvfree_priv(struct pvfree *pv)
{
	return pv->priv;
}

/**
 * pvfree_start - register the header with the host
 * @pv: the instance
 *
 * The transport must be ready to deliver requests before it is called.
 * Returns 0 or the transport's negative errno.
 */
int pvfree_start(struct pvfree *pv)
{
	struct pvfree_header *hdr = pv->hdr;
	int ret;

	mutex_lock(&pv->lock);
	/*
	 * Not registered, so the host area may be written: a new
	 * registration starts with request_id = response_id = 0.
	 */
	memset((u8 *)hdr + offsetof(struct pvfree_header, host_features), 0,
	       offsetof(struct pvfree_header, extents) -
	       offsetof(struct pvfree_header, host_features));
	pv->answered = 0;
	WRITE_ONCE(pv->stopping, false);
	mutex_unlock(&pv->lock);

	mutex_lock(&pv->reg_lock);
	/* attach() orders the header writes before the registration. */
	ret = pv->transport->attach(pv, page_to_phys(pv->header_page));
	pv->registered = !ret;
	mutex_unlock(&pv->reg_lock);

	spin_lock(&pv->stats_lock);
	pv->stats.registered = !ret;
	spin_unlock(&pv->stats_lock);
	if (!ret)
		pvfree_request(pv);
	return ret;
}

/**
 * pvfree_stop - unregister from the host and quiesce
 * @pv: the instance
 *
 * Sets the stop flag, which a running walk notices between batches; waits
 * for the request work; answers a request not yet answered ABORTED (and
 * rings the doorbell); withdraws any response (response_id = 0); then
 * unregisters through the transport.  Requests signalled afterwards are
 * ignored.  Idempotent; may sleep.
 */
void pvfree_stop(struct pvfree *pv)
{
	WRITE_ONCE(pv->stopping, true);
	cancel_work_sync(&pv->work);

	mutex_lock(&pv->lock);
	pvfree_process(pv);
	WRITE_ONCE(pv->hdr->response_id, 0);
	/* No storage or header reuse before the host can see the 0. */
	smp_wmb();
	mutex_unlock(&pv->lock);

	mutex_lock(&pv->reg_lock);
	if (pv->registered) {
		if (pv->transport->detach(pv)) {
			dev_err(pv->dev,
				"unregistration failed, leaking the header and storage\n");
			pv->leak = true;
		}
		pv->registered = false;
	}
	mutex_unlock(&pv->reg_lock);

	spin_lock(&pv->stats_lock);
	pv->stats.registered = false;
	spin_unlock(&pv->stats_lock);
}

/**
 * pvfree_destroy - free an instance
 * @pv: the instance
 *
 * Stops it if needed.  The transport must have stopped calling
 * pvfree_request() (e.g. freed its interrupt) before.
 */
void pvfree_destroy(struct pvfree *pv)
{
	pvfree_stop(pv);
	cancel_work_sync(&pv->work);
	unregister_memory_notifier(&pv->mem_nb);
	cancel_work_sync(&pv->grow_work);
	debugfs_remove_recursive(pv->debugfs);
	if (!pv->leak) {
		pvfree_storage_free(pv->storage);
		if (!pv->transport->keep_header)
			__free_page(pv->header_page);
	}
	kfree(pv);

	mutex_lock(&pvfree_instance_lock);
	pvfree_instance = false;
	mutex_unlock(&pvfree_instance_lock);
}

static int __init pvfree_init(void)
{
	int ret;

	/* Test builds only: the self-test instance takes precedence. */
	ret = pvfree_selftest_init();
	if (ret)
		pr_warn("pvfree: self-test transport not started (%d)\n", ret);
	ret = pvfree_pci_init();
	if (ret)
		goto err_selftest;
	/* After PCI: a guest with the pvfree-pci device uses that. */
	ret = pvfree_xen_init();
	if (ret)
		goto err_pci;
	return 0;

err_pci:
	pvfree_pci_exit();
err_selftest:
	pvfree_selftest_exit();
	return ret;
}
module_init(pvfree_init);

static void __exit pvfree_exit(void)
{
	pvfree_xen_exit();
	pvfree_pci_exit();
	pvfree_selftest_exit();
}
module_exit(pvfree_exit);

MODULE_DESCRIPTION("pvfree: report free guest memory to the hypervisor for live migration");
MODULE_AUTHOR("The pvfree authors");
MODULE_LICENSE("GPL");

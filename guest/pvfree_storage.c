// SPDX-License-Identifier: GPL-2.0
/*
 * pvfree guest driver core: the storage, i.e. the bitmap the host reads
 * and the extents that describe it, covering the guest's RAM frame range.
 *
 * The bitmap is allocated in blocks of up to PVFREE_STORAGE_MAX_ORDER and
 * vmap()ed; the header's extents (or an extent table) tell the host where
 * its frames are.  It is grown from the memory hot-plug notifier, which
 * also tracks memory offlining for the per-CPU walk, and never while a
 * request is being answered.
 *
 * Copyright (c) 2026 The pvfree authors
 */

#include <linux/device.h>
#include <linux/err.h>
#include <linux/gfp.h>
#include <linux/kernel.h>
#include <linux/memory.h>
#include <linux/memory_hotplug.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/nodemask.h>
#include <linux/notifier.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>

#include "abi.h"
#include "pvfree_internal.h"

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
static bool fail_storage;
module_param(fail_storage, bool, 0644);
MODULE_PARM_DESC(fail_storage, "self-test: storage allocations fail");
#else
#define force_table		false
#define storage_max_order	PVFREE_STORAGE_MAX_ORDER
#define fail_storage		false
#endif

/*
 * The guest's RAM frame range: min zone_start_pfn .. max zone_end_pfn of
 * the populated zones of the online nodes.
 */
bool pvfree_ram_span(unsigned long *start, unsigned long *end)
{
	struct zone *zone;

	*start = ULONG_MAX;
	*end = 0;
	for (zone = pvfree_next_populated_zone(NULL); zone;
	     zone = pvfree_next_populated_zone(zone)) {
		/* Hot-plug may resize it; the walk checks bounds. */
		*start = min(*start, data_race(zone->zone_start_pfn));
		*end = max(*end, zone_end_pfn(zone));
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

void pvfree_storage_free(struct pvfree_storage *st)
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

bool pvfree_storage_covers(const struct pvfree_storage *st,
			   unsigned long start, unsigned long end)
{
	return st && st->start_pfn <= start && end <= st->end_pfn;
}

/* Called with pv->lock and pv->grow_lock held. */
static void pvfree_install(struct pvfree *pv, struct pvfree_storage *st)
{
	struct pvfree_header *hdr = pv->hdr;

	/*
	 * Core spec 6.4.1 item 1 and P3 of 6.5: withdraw the published
	 * response, whatever its status, before the extents change and the
	 * old storage (whose table and bitmap it may describe) is freed.  A
	 * host that has not yet read a non-OK response then waits for its
	 * timeout instead: such a response skips nothing anyway.  A host
	 * that read it re-checks response_id behind a read barrier and
	 * finds 0.
	 */
	WRITE_ONCE(hdr->response_id, 0);
	/* response_id = 0 is visible before the extents change. */
	smp_wmb();
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
	 * past GOING_OFFLINE when the notifier is registered is waited for
	 * in pvfree_storage_init().
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

#ifdef CONFIG_MEMORY_HOTPLUG
/* Never installed: restore_online_page_callback() only locks. */
static void pvfree_online_page_unused(struct page *page, unsigned int order)
{
}
#endif

/*
 * Wait for a memory offline that started before our notifier was
 * registered.  offline_pages() runs with mem_hotplug_lock held for
 * writing (memory_block_offline()) from before MEM_GOING_OFFLINE until
 * after zone_pcp_reset() and MEM_OFFLINE; get_online_mems() is not
 * exported, but restore_online_page_callback() takes it for reading and,
 * with a callback that is not installed, changes nothing.  Once it
 * returns, no offline we missed is running, and every later one sends
 * its MEM_GOING_OFFLINE to our notifier before it can free a per-CPU
 * pageset, so the pcp walk needs no other check.  Must not be called
 * from a memory notifier (mem_hotplug_lock is held there).
 */
static void pvfree_wait_for_hotplug(void)
{
#ifdef CONFIG_MEMORY_HOTPLUG
	restore_online_page_callback(pvfree_online_page_unused);
#endif
}

/**
 * pvfree_storage_init - storage for the RAM range, kept covering it
 * @pv: the instance, with its header
 *
 * Allocates storage for the current RAM range (failing that, requests are
 * answered PVFREE_STATUS_NO_SPACE) and registers the memory hot-plug
 * notifier that grows it and tracks offlining.  Returns 0 or the
 * notifier's negative errno, having freed the storage.
 */
int pvfree_storage_init(struct pvfree *pv)
{
	int ret;

	mutex_init(&pv->grow_lock);
	mutex_init(&pv->pcp_mutex);
	INIT_WORK(&pv->grow_work, pvfree_grow_work);

	pvfree_grow(pv);
	pv->mem_nb.notifier_call = pvfree_memory_notify;
	ret = register_memory_notifier(&pv->mem_nb);
	if (ret) {
		pvfree_storage_free(pv->storage);
		pv->storage = NULL;
		return ret;
	}
	pvfree_wait_for_hotplug();
	return 0;
}

/**
 * pvfree_storage_exit - stop growing the storage
 * @pv: the instance
 *
 * Unregisters the memory notifier and waits for a pending grow.  The
 * storage stays installed: the caller frees it (pvfree_storage_free())
 * once the host has let go of it.
 */
void pvfree_storage_exit(struct pvfree *pv)
{
	unregister_memory_notifier(&pv->mem_nb);
	cancel_work_sync(&pv->grow_work);
}

/**
 * pvfree_grow_later - try again to cover RAM, from a work item
 * @pv: the instance
 *
 * For the request path, which must not allocate memory.
 */
void pvfree_grow_later(struct pvfree *pv)
{
	queue_work(system_unbound_wq, &pv->grow_work);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * pvfree guest driver core: the walk of the buddy allocator's free lists
 * and of the per-CPU lists that sets the bits of free frames in a bitmap.
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
 *
 * The walk sees only a bitmap, the pfn range it covers and a stop flag
 * (struct pvfree_walk), and takes zone->lock and pcp->lock for at most
 * PVFREE_BATCH list entries.
 *
 * Copyright (c) 2026 The pvfree authors
 */

#include <linux/bitops.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/nodemask.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/spinlock.h>

#include "pvfree_internal.h"

#ifdef PVFREE_SELFTEST
/* Test builds only: make a walk slow enough to be interrupted. */
static uint walk_delay_us;
module_param(walk_delay_us, uint, 0644);
MODULE_PARM_DESC(walk_delay_us, "self-test: sleep between batches");
#else
#define walk_delay_us		0
#endif

/**
 * pvfree_next_populated_zone - the populated zone after @zone
 * @zone: the zone before, or NULL for the first
 *
 * The populated zones of the online nodes, node by node, as
 * for_each_populated_zone() goes, which modules cannot use: next_zone()
 * is not exported.  Returns NULL after the last.
 */
struct zone *pvfree_next_populated_zone(struct zone *zone)
{
	int nid = zone ? zone_to_nid(zone) : first_online_node;
	int z = zone ? zone_idx(zone) + 1 : 0;

	for (; nid < MAX_NUMNODES; nid = next_online_node(nid), z = 0) {
		pg_data_t *pgdat = NODE_DATA(nid);

		for (; z < MAX_NR_ZONES; z++)
			if (populated_zone(&pgdat->node_zones[z]))
				return &pgdat->node_zones[z];
	}
	return NULL;
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
int pvfree_walk_free_areas(struct pvfree_walk *w)
{
	unsigned int order, mt;
	struct zone *zone;
	int ret;

	for (zone = pvfree_next_populated_zone(NULL); zone;
	     zone = pvfree_next_populated_zone(zone)) {
		/* MAX_ORDER (6.1) or NR_PAGE_ORDERS (6.12) entries. */
		for (order = 0; order < ARRAY_SIZE(zone->free_area); order++) {
			for (mt = 0; mt < MIGRATE_TYPES; mt++) {
				if (READ_ONCE(*w->stop))
					return -EINTR;
				ret = pvfree_walk_list(w, zone, order, mt);
				if (ret)
					return ret;
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
int pvfree_walk_pcp_lists(struct pvfree_walk *w)
{
	struct zone *zone;
	int ret;

	for (zone = pvfree_next_populated_zone(NULL); zone;
	     zone = pvfree_next_populated_zone(zone)) {
		ret = pvfree_walk_zone_pcp(w, zone);
		if (ret)
			return ret;
	}
	return 0;
}

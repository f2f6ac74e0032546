/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvfree guest driver core, private: what pvfree_main.c (the protocol),
 * pvfree_storage.c (the bitmap storage) and pvfree_walk.c (the free-list
 * walk) share.  pvfree.h is the interface to the transports.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#ifndef _PVFREE_INTERNAL_H
#define _PVFREE_INTERNAL_H

#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/workqueue.h>

#include "abi.h"

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

/* The figures of one response, as written into the header. */
struct pvfree_response_stats {
	u64 request_id;
	u32 status;
	u8 content;
	u64 free_frames;
	u64 snapshot_us;
	u32 max_lock_hold_us;
};

/* What debugfs shows: the state and the figures of the last response. */
struct pvfree_stats {
	bool registered;
	bool answering;
	u64 requests;
	struct pvfree_response_stats last;
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

/*
 * Locking:
 *   pv->grow_lock serialises storage (re)allocation;
 *   pv->lock serialises answering a request against installing storage;
 *   pv->reg_lock serialises attach/detach against the doorbell;
 *   pv->pcp_mutex keeps memory offlining from freeing a zone's per-CPU
 *   pagesets (zone_pcp_reset()) while the walk uses them;
 *   zone->lock and pcp->lock are taken for at most PVFREE_BATCH list
 *   entries.
 * No memory is allocated while a request is being answered.
 */
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

static inline u64 pvfree_pfn_to_frame(unsigned long pfn)
{
	return (u64)pfn << PVFREE_PAGE_FRAME_SHIFT;
}

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

/* pvfree_storage.c */
bool pvfree_ram_span(unsigned long *start, unsigned long *end);
bool pvfree_storage_covers(const struct pvfree_storage *st,
			   unsigned long start, unsigned long end);
void pvfree_storage_free(struct pvfree_storage *st);
int pvfree_storage_init(struct pvfree *pv);
void pvfree_storage_exit(struct pvfree *pv);
void pvfree_grow_later(struct pvfree *pv);

/* pvfree_walk.c */
struct zone *pvfree_next_populated_zone(struct zone *zone);
int pvfree_walk_free_areas(struct pvfree_walk *w);
int pvfree_walk_pcp_lists(struct pvfree_walk *w);

#endif /* _PVFREE_INTERNAL_H */

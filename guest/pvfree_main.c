// SPDX-License-Identifier: GPL-2.0
/*
 * pvfree guest driver: tells the hypervisor which page frames are free so
 * that pre-copy live migration can skip them.
 *
 * This file is the protocol: the shared header frame, the request work
 * that answers the host's requests with a snapshot of the free frames
 * (pvfree_walk.c) in the storage (pvfree_storage.c), the debugfs
 * statistics, the instance's life cycle for the transports (pvfree.h) and
 * the module's init and exit.
 * See docs/design.md and include/pvfree/abi.h.
 *
 * Copyright (c) 2026 The pvfree authors
 */

#include <linux/bitops.h>
#include <linux/cc_platform.h>
#include <linux/debugfs.h>
#include <linux/device.h>
#include <linux/err.h>
#include <linux/gfp.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/poison.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>

#include "abi.h"
#include "pvfree.h"
#include "pvfree_internal.h"

/* One pvfree device per guest: the debugfs path is fixed. */
static DEFINE_MUTEX(pvfree_instance_lock);
static bool pvfree_instance;

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

static int pvfree_walk_pcp_unless_offlining(struct pvfree *pv,
					    struct pvfree_walk *w)
{
	int ret = 0;

	mutex_lock(&pv->pcp_mutex);
	/* An offline in progress: skip, a lost optimisation only. */
	if (!pv->offlining)
		ret = pvfree_walk_pcp_lists(w);
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
	if (pvfree_walk_free_areas(w) ||
	    pvfree_walk_pcp_unless_offlining(pv, w))
		return PVFREE_STATUS_ABORTED;
	*free_frames = pvfree_weight(st->bitmap, used);
	return PVFREE_STATUS_OK;
}

static void pvfree_account(struct pvfree *pv,
			   const struct pvfree_response_stats *resp,
			   const struct pvfree_walk *w)
{
	struct pvfree_stats *s = &pv->stats;

	spin_lock(&pv->stats_lock);
	s->answering = false;
	s->requests++;
	s->last = *resp;
	s->batches = w->batches;
	s->entries = w->entries;
	s->pcp_frames = pvfree_pfn_to_frame(w->pcp_pages);
	s->out_of_range = w->out_of_range;
	if (resp->status < ARRAY_SIZE(s->status))
		s->status[resp->status]++;
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
	struct pvfree_response_stats resp = { .request_id = id };
	u64 hf, needs;
	u8 poison;

	spin_lock(&pv->stats_lock);
	pv->stats.answering = true;
	spin_unlock(&pv->stats_lock);

	hf = le64_to_cpu(READ_ONCE(hdr->host_features));
	WRITE_ONCE(hdr->response_id, 0);
	/* response_id = 0 is visible before any other response write. */
	smp_wmb();

	resp.content = pvfree_content(&poison, &needs);
	if (READ_ONCE(pv->stopping))
		resp.status = PVFREE_STATUS_ABORTED;
	else if ((hf & needs) != needs)
		resp.status = PVFREE_STATUS_UNSUPPORTED;
	else if (!pvfree_ram_span(&start, &end) ||
		 !pvfree_storage_covers(st, start, end))
		resp.status = PVFREE_STATUS_NO_SPACE;
	else
		resp.status = pvfree_snapshot(pv, st, &w, &resp.free_frames);

	/* Only the latest request needs an answer. */
	if (resp.status != PVFREE_STATUS_ABORTED &&
	    le64_to_cpu(READ_ONCE(hdr->request_id)) != id) {
		spin_lock(&pv->stats_lock);
		pv->stats.answering = false;
		spin_unlock(&pv->stats_lock);
		return false;
	}

	hdr->status = cpu_to_le32(resp.status);
	hdr->content = resp.content;
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
	if (resp.status != PVFREE_STATUS_OK)
		resp.free_frames = 0;
	resp.max_lock_hold_us = min_t(u64, U32_MAX,
				      div_u64(w.max_hold_ns + NSEC_PER_USEC - 1,
					      NSEC_PER_USEC));
	resp.snapshot_us = ktime_us_delta(ktime_get(), t0);
	hdr->free_frames = cpu_to_le64(resp.free_frames);
	hdr->snapshot_us = cpu_to_le64(resp.snapshot_us);
	hdr->max_lock_hold_us = cpu_to_le32(resp.max_lock_hold_us);
	hdr->reserved1 = 0;

	/* Everything above is visible before response_id. */
	smp_store_release(&hdr->response_id, cpu_to_le64(id));
	pv->answered = id;

	mutex_lock(&pv->reg_lock);
	if (pv->registered)
		pv->transport->notify(pv, id);
	mutex_unlock(&pv->reg_lock);

	pvfree_account(pv, &resp, &w);
	if (resp.status == PVFREE_STATUS_ABORTED)
		dev_info(pv->dev, "request %llu aborted after %llu batches\n",
			 id, w.batches);
	/* Try again to cover RAM, outside the request path. */
	if (resp.status == PVFREE_STATUS_NO_SPACE && !READ_ONCE(pv->stopping))
		pvfree_grow_later(pv);
	dev_dbg(pv->dev,
		"request %llu: status %u content %u, %llu free frames, %llu us, %llu batches, max hold %u us\n",
		id, resp.status, resp.content, resp.free_frames,
		resp.snapshot_us, w.batches, resp.max_lock_hold_us);
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
	seq_printf(m, "last_request_id: %llu\n", s.last.request_id);
	seq_printf(m, "last_status: %u\n", s.last.status);
	seq_printf(m, "content: %u\n", s.last.content);
	seq_printf(m, "free_frames: %llu\n", s.last.free_frames);
	seq_printf(m, "snapshot_us: %llu\n", s.last.snapshot_us);
	seq_printf(m, "max_lock_hold_us: %u\n", s.last.max_lock_hold_us);
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
	mutex_init(&pv->reg_lock);
	spin_lock_init(&pv->stats_lock);
	INIT_WORK(&pv->work, pvfree_work);

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

	ret = pvfree_storage_init(pv);
	if (ret)
		goto err_header;

	pv->debugfs = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("stats", 0444, pv->debugfs, pv,
			    &pvfree_stats_fops);
	return pv;

err_header:
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
	pvfree_storage_exit(pv);
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

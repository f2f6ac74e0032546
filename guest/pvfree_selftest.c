// SPDX-License-Identifier: GPL-2.0
/*
 * pvfree self-test transport (CONFIG_PVFREE_SELFTEST, test builds only).
 *
 * Plays the host inside the guest, so that the request path can be tested
 * without a hypervisor: writing a host_features value (e.g. "0x1") to
 * /sys/kernel/debug/pvfree-selftest/request publishes a request into the
 * header, waits for the doorbell and then reads the response the way a
 * host does, through the extents.  It checks the response fields, counts
 * the bits through the storage description, and checks that the header
 * and storage frames are not marked free.  The result is logged and can
 * be read back from the same file.  Writing N to .../fragment holds every
 * other page of N fresh pages, to make long order-0 free lists.
 *
 * Like a host woken by the doorbell, the notification copies the header
 * as it is at that moment.  Reading .../recheck then applies the host's
 * re-check (core spec 6.6.1 item 4) to that copy: if response_id still
 * holds the id it held at the doorbell, no other byte the driver writes
 * (response, statistics, storage description) may have changed, since
 * the driver must store response_id = 0 before rewriting any of them.
 *
 * Copyright (c) 2026 The pvfree authors
 */

#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "abi.h"
#include "pvfree.h"

struct pvfree_selftest {
	struct platform_device *pdev;
	struct pvfree *pv;
	struct pvfree_header *hdr;	/* the "host's" view */
	phys_addr_t hdr_phys;
	struct completion doorbell;
	struct mutex lock;		/* one request at a time */
	u64 next_id;
	char result[256];
	struct dentry *dir;
	struct page **held;		/* pages held by "fragment" */
	unsigned long nr_held;
	spinlock_t seen_lock;		/* protects seen_id, seen */
	u64 seen_id;			/* response_id at the last doorbell */
	struct pvfree_header seen;	/* the header at the last doorbell */
};

static struct pvfree_selftest *pvfree_st;

static int pvfree_st_attach(struct pvfree *pv, phys_addr_t header)
{
	struct pvfree_selftest *st = pvfree_priv(pv);

	st->hdr_phys = header;
	st->hdr = phys_to_virt(header);
	return 0;
}

static int pvfree_st_detach(struct pvfree *pv)
{
	struct pvfree_selftest *st = pvfree_priv(pv);

	st->hdr = NULL;
	return 0;
}

static void pvfree_st_notify(struct pvfree *pv, u64 response_id)
{
	struct pvfree_selftest *st = pvfree_priv(pv);

	/* Called under the driver's reg_lock, with the header attached. */
	spin_lock(&st->seen_lock);
	/* Pairs with the driver's release store of response_id. */
	st->seen_id = le64_to_cpu(smp_load_acquire(&st->hdr->response_id));
	memcpy(&st->seen, st->hdr, sizeof(st->seen));
	spin_unlock(&st->seen_lock);
	complete(&st->doorbell);
}

static const struct pvfree_transport pvfree_st_transport = {
	.name = "selftest",
	.attach = pvfree_st_attach,
	.detach = pvfree_st_detach,
	.notify = pvfree_st_notify,
};

/* Data extent @k, from the inline array or the extent table. */
static bool pvfree_st_extent(struct pvfree_header *h, u32 k,
			     struct pvfree_extent *out)
{
	u32 table = le32_to_cpu(h->table_extents);
	u64 byte = (u64)k * sizeof(*out), skip;
	u32 i;

	if (!table) {
		*out = h->extents[k];
		return true;
	}
	for (i = 0; i < table; i++) {
		u64 len = le64_to_cpu(h->extents[i].nr_frames) << 12;

		if (byte < len) {
			skip = (le64_to_cpu(h->extents[i].pfn) << 12) + byte;
			memcpy(out, phys_to_virt(skip), sizeof(*out));
			return true;
		}
		byte -= len;
	}
	return false;
}

/* Bitmap byte @j through the data extents. */
static u8 *pvfree_st_byte(struct pvfree_header *h, u64 j)
{
	struct pvfree_extent e;
	u32 k, n = le32_to_cpu(h->nr_extents);

	for (k = 0; k < n; k++) {
		u64 len;

		if (!pvfree_st_extent(h, k, &e))
			return NULL;
		len = le64_to_cpu(e.nr_frames) << 12;
		if (j < len)
			return phys_to_virt((le64_to_cpu(e.pfn) << 12) + j);
		j -= len;
	}
	return NULL;
}

static bool pvfree_st_bit(struct pvfree_header *h, u64 frame)
{
	u64 base = le64_to_cpu(h->base_pfn);
	u64 i;
	u8 *b;

	if (frame < base || frame - base >= le64_to_cpu(h->nr_frames))
		return false;
	i = frame - base;
	b = pvfree_st_byte(h, i >> 3);
	return b && (*b & BIT(i & 7));
}

static int pvfree_st_check(struct pvfree_selftest *st, u64 id)
{
	struct pvfree_header *h = st->hdr;
	u64 frames, bytes, j, bits = 0, i;
	u32 status, k;
	u8 content, poison;
	u64 seen_id;
	u8 *b;

	/* What the doorbell found; the driver may withdraw it since. */
	spin_lock(&st->seen_lock);
	seen_id = st->seen_id;
	status = le32_to_cpu(st->seen.status);
	content = st->seen.content;
	poison = st->seen.poison;
	spin_unlock(&st->seen_lock);
	if (seen_id != id)
		return scnprintf(st->result, sizeof(st->result),
				 "FAIL request %llu: response_id %llu at the doorbell\n",
				 id, seen_id);
	if (status != PVFREE_STATUS_OK)
		return scnprintf(st->result, sizeof(st->result),
				 "request %llu: status %u content %u poison %#x\n",
				 id, status, content, poison);

	/* Pairs with the driver's release store of response_id. */
	if (le64_to_cpu(smp_load_acquire(&h->response_id)) != id)
		return scnprintf(st->result, sizeof(st->result),
				 "FAIL request %llu: response_id %llu\n", id,
				 le64_to_cpu(h->response_id));

	frames = le64_to_cpu(h->nr_frames);
	bytes = (frames + 7) >> 3;
	for (j = 0; j < bytes; j++) {
		b = pvfree_st_byte(h, j);
		if (!b)
			return scnprintf(st->result, sizeof(st->result),
					 "FAIL request %llu: byte %llu not in storage\n",
					 id, j);
		bits += hweight8(*b);
		if (!(j & 4095))
			cond_resched();
	}
	if (bits != le64_to_cpu(h->free_frames))
		return scnprintf(st->result, sizeof(st->result),
				 "FAIL request %llu: %llu bits, free_frames %llu\n",
				 id, bits, le64_to_cpu(h->free_frames));
	if (pvfree_st_bit(h, st->hdr_phys >> 12))
		return scnprintf(st->result, sizeof(st->result),
				 "FAIL request %llu: header frame marked free\n",
				 id);
	for (k = 0; k < le32_to_cpu(h->nr_extents); k++) {
		struct pvfree_extent e;

		if (!pvfree_st_extent(h, k, &e))
			break;
		for (i = 0; i < le64_to_cpu(e.nr_frames); i++)
			if (pvfree_st_bit(h, le64_to_cpu(e.pfn) + i))
				return scnprintf(st->result,
						 sizeof(st->result),
						 "FAIL request %llu: storage frame %#llx marked free\n",
						 id, le64_to_cpu(e.pfn) + i);
	}
	return scnprintf(st->result, sizeof(st->result),
			 "request %llu: status 1 content %u free_frames %llu (%llu MiB) of %llu, snapshot_us %llu max_lock_hold_us %u extents %u/%u\n",
			 id, h->content, bits, bits >> 8, frames,
			 le64_to_cpu(h->snapshot_us),
			 le32_to_cpu(h->max_lock_hold_us),
			 le32_to_cpu(h->nr_extents),
			 le32_to_cpu(h->table_extents));
}

static ssize_t pvfree_st_write(struct file *file, const char __user *buf,
			       size_t len, loff_t *ppos)
{
	struct pvfree_selftest *st = file->private_data;
	u64 hf, id;
	int ret;

	ret = kstrtou64_from_user(buf, len, 0, &hf);
	if (ret)
		return ret;

	mutex_lock(&st->lock);
	if (!st->hdr) {
		mutex_unlock(&st->lock);
		return -ENODEV;
	}
	id = ++st->next_id;
	reinit_completion(&st->doorbell);
	WRITE_ONCE(st->hdr->host_features, cpu_to_le64(hf));
	/* host_features is visible before request_id. */
	smp_store_release(&st->hdr->request_id, cpu_to_le64(id));
	pvfree_request(st->pv);
	if (!wait_for_completion_timeout(&st->doorbell, 5 * HZ))
		scnprintf(st->result, sizeof(st->result),
			  "FAIL request %llu: timeout\n", id);
	else
		pvfree_st_check(st, id);
	pr_info("pvfree-selftest: %s", st->result);
	mutex_unlock(&st->lock);
	return len;
}

/*
 * Writing to "request_async" publishes a request and returns at once, so
 * that the module can be unloaded while the request is being answered.
 */
static ssize_t pvfree_st_write_async(struct file *file,
				     const char __user *buf, size_t len,
				     loff_t *ppos)
{
	struct pvfree_selftest *st = file->private_data;
	u64 hf;
	int ret;

	ret = kstrtou64_from_user(buf, len, 0, &hf);
	if (ret)
		return ret;
	mutex_lock(&st->lock);
	if (st->hdr) {
		WRITE_ONCE(st->hdr->host_features, cpu_to_le64(hf));
		/* host_features is visible before request_id. */
		smp_store_release(&st->hdr->request_id,
				  cpu_to_le64(++st->next_id));
		pvfree_request(st->pv);
	}
	mutex_unlock(&st->lock);
	return st->hdr ? len : -ENODEV;
}

static const struct file_operations pvfree_st_async_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = pvfree_st_write_async,
	.llseek = default_llseek,
};

static ssize_t pvfree_st_read(struct file *file, char __user *buf,
			      size_t len, loff_t *ppos)
{
	struct pvfree_selftest *st = file->private_data;
	char result[sizeof(st->result)];

	mutex_lock(&st->lock);
	strscpy(result, st->result, sizeof(result));
	mutex_unlock(&st->lock);
	return simple_read_from_buffer(buf, len, ppos, result,
				       strlen(result));
}

/*
 * The host's re-check, applied to the copy taken at the last doorbell:
 * compare the driver-written bytes, then a read barrier, then load
 * response_id again.  A difference counts only if response_id still
 * holds the id seen at the doorbell.
 */
static void pvfree_st_recheck(struct pvfree_selftest *st)
{
	const size_t from = offsetof(struct pvfree_header, status);
	const u8 *now = (const u8 *)st->hdr, *then = (const u8 *)&st->seen;
	size_t off;
	u64 rid;

	spin_lock(&st->seen_lock);
	for (off = from; off < sizeof(st->seen); off++)
		if (READ_ONCE(now[off]) != then[off])
			break;
	/* Pairs with the driver's write barrier after response_id = 0. */
	smp_rmb();
	rid = le64_to_cpu(READ_ONCE(st->hdr->response_id));
	if (!st->seen_id)
		scnprintf(st->result, sizeof(st->result),
			  "recheck: no response seen\n");
	else if (off < sizeof(st->seen) && rid == st->seen_id)
		scnprintf(st->result, sizeof(st->result),
			  "FAIL recheck: response %llu still published, header byte %#zx rewritten\n",
			  rid, off);
	else
		scnprintf(st->result, sizeof(st->result),
			  "recheck: response %llu, response_id now %llu, %s\n",
			  st->seen_id, rid,
			  off < sizeof(st->seen) ? "withdrawn before rewriting" :
			  "unchanged");
	spin_unlock(&st->seen_lock);
}

static ssize_t pvfree_st_read_recheck(struct file *file, char __user *buf,
				      size_t len, loff_t *ppos)
{
	struct pvfree_selftest *st = file->private_data;
	char result[sizeof(st->result)];

	mutex_lock(&st->lock);
	if (!st->hdr) {
		mutex_unlock(&st->lock);
		return -ENODEV;
	}
	if (!*ppos) {
		pvfree_st_recheck(st);
		pr_info("pvfree-selftest: %s", st->result);
	}
	strscpy(result, st->result, sizeof(result));
	mutex_unlock(&st->lock);
	return simple_read_from_buffer(buf, len, ppos, result,
				       strlen(result));
}

static const struct file_operations pvfree_st_recheck_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = pvfree_st_read_recheck,
	.llseek = default_llseek,
};

static void pvfree_st_release_held(struct pvfree_selftest *st)
{
	unsigned long i;

	for (i = 0; i < st->nr_held; i++)
		if (st->held[i])
			__free_page(st->held[i]);
	vfree(st->held);
	st->held = NULL;
	st->nr_held = 0;
}

/*
 * Writing N to "fragment" allocates N pages and frees every other one,
 * leaving about N / 2 order-0 entries on the free lists whose buddies
 * are in use: long lists for the batched walk.  Writing 0 frees the rest.
 */
static ssize_t pvfree_st_fragment(struct file *file, const char __user *buf,
				  size_t len, loff_t *ppos)
{
	struct pvfree_selftest *st = file->private_data;
	unsigned long n, i;
	int ret;

	ret = kstrtoul_from_user(buf, len, 0, &n);
	if (ret)
		return ret;
	mutex_lock(&st->lock);
	pvfree_st_release_held(st);
	if (n) {
		st->held = vzalloc(array_size(n, sizeof(*st->held)));
		if (!st->held) {
			mutex_unlock(&st->lock);
			return -ENOMEM;
		}
		for (i = 0; i < n; i++) {
			st->held[i] = alloc_page(GFP_KERNEL | __GFP_NOWARN);
			if (!st->held[i])
				break;
			cond_resched();
		}
		st->nr_held = i;
		for (i = 0; i < st->nr_held; i += 2) {
			__free_page(st->held[i]);
			st->held[i] = NULL;
		}
		pr_info("pvfree-selftest: holding %lu of %lu pages\n",
			st->nr_held / 2, n);
	}
	mutex_unlock(&st->lock);
	return len;
}

static const struct file_operations pvfree_st_fragment_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = pvfree_st_fragment,
	.llseek = default_llseek,
};

static const struct file_operations pvfree_st_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = pvfree_st_read,
	.write = pvfree_st_write,
	.llseek = default_llseek,
};

static bool selftest = true;
module_param(selftest, bool, 0444);
MODULE_PARM_DESC(selftest,
		 "self-test: start the self-test transport (0: use the PCI device)");

int pvfree_selftest_init(void)
{
	struct pvfree_selftest *st;
	int ret;

	if (!selftest)
		return 0;

	st = kzalloc(sizeof(*st), GFP_KERNEL);
	if (!st)
		return -ENOMEM;
	init_completion(&st->doorbell);
	mutex_init(&st->lock);
	spin_lock_init(&st->seen_lock);
	st->pdev = platform_device_register_simple("pvfree-selftest", -1,
						   NULL, 0);
	if (IS_ERR(st->pdev)) {
		ret = PTR_ERR(st->pdev);
		goto err_free;
	}
	st->pv = pvfree_create(&st->pdev->dev, &pvfree_st_transport, st);
	if (IS_ERR(st->pv)) {
		ret = PTR_ERR(st->pv);
		goto err_pdev;
	}
	ret = pvfree_start(st->pv);
	if (ret)
		goto err_destroy;
	st->dir = debugfs_create_dir("pvfree-selftest", NULL);
	debugfs_create_file("request", 0600, st->dir, st, &pvfree_st_fops);
	debugfs_create_file("fragment", 0200, st->dir, st,
			    &pvfree_st_fragment_fops);
	debugfs_create_file("request_async", 0200, st->dir, st,
			    &pvfree_st_async_fops);
	debugfs_create_file("recheck", 0400, st->dir, st,
			    &pvfree_st_recheck_fops);
	pvfree_st = st;
	return 0;

err_destroy:
	pvfree_destroy(st->pv);
err_pdev:
	platform_device_unregister(st->pdev);
err_free:
	kfree(st);
	return ret;
}

void pvfree_selftest_exit(void)
{
	struct pvfree_selftest *st = pvfree_st;

	if (!st)
		return;
	debugfs_remove_recursive(st->dir);
	pvfree_st_release_held(st);
	pvfree_destroy(st->pv);
	platform_device_unregister(st->pdev);
	kfree(st);
	pvfree_st = NULL;
}

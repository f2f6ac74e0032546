// SPDX-License-Identifier: GPL-2.0
/*
 * pvfree xenstore transport: Xen guests (PV, PVH, HVM), for the
 * toolstack's live save (libxenguest, `xl migrate`).
 *
 * The guest publishes its header frame under its own xenstore home
 * (spec/transport-xenstore.md): data/pvfree/version, then
 * data/pvfree/header-frame (the frame's PFN in decimal; the guest's own
 * pseudo-physical frame number for PV, the GFN for PVH/HVM).  The
 * toolstack maps the frame, writes request_id into it and writes
 * data/pvfree/request, which this transport watches; the guest answers in
 * the header and rings the doorbell by writing data/pvfree/response.
 *
 * A migration or save recreates the domain's xenstore home on the
 * destination, so the keys are written again after every resume.  The
 * binding forbids returning the header frame to the allocator once it
 * has been published (a toolstack may still have it mapped): keep_header.
 *
 * Copyright (c) 2026 The pvfree authors
 */

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/pci.h>
#include <linux/platform_device.h>
#include <linux/reboot.h>
#include <linux/slab.h>
#include <linux/workqueue.h>

#include <xen/xen.h>
#include <xen/xen-ops.h>
#include <xen/xenbus.h>

#include "abi.h"
#include "pvfree.h"

/**
 * struct pvfree_xen - the xenstore transport's state
 * @pdev: platform device, for messages
 * @pv: the core instance, or NULL if not started
 * @lock: serialises publishing and removing the keys and the watch
 * @frame: the header's frame number, as published
 * @attached: the keys are published (under @lock)
 * @watching: @watch is registered (under @lock)
 * @watch: on data/pvfree/request
 * @republish: writes the keys again after a resume
 * @xenstore_nb: xenstore is ready
 * @resume_nb: the domain resumed (after a save, migration or checkpoint)
 * @reboot_nb: orderly shutdown, reboot and kexec
 */
struct pvfree_xen {
	struct platform_device *pdev;
	struct pvfree *pv;
	struct mutex lock;		/* keys, watch, @attached */
	u64 frame;
	bool attached;
	bool watching;
	struct xenbus_watch watch;
	struct work_struct republish;
	struct notifier_block xenstore_nb;
	struct notifier_block resume_nb;
	struct notifier_block reboot_nb;
};

static struct pvfree_xen *pvfree_xen;
/* Starting from the xenstore notifier vs. module exit. */
static DEFINE_MUTEX(pvfree_xen_start_lock);

/* Called with px->lock held. */
static int pvfree_xen_publish(struct pvfree_xen *px)
{
	int ret;

	/*
	 * The core's header writes are complete before the frame is
	 * published (xenbus also orders its ring writes after them).
	 */
	wmb();
	ret = xenbus_printf(XBT_NIL, PVFREE_XS_VERSION, "", "%u",
			    PVFREE_VERSION);
	if (ret)
		return ret;
	return xenbus_printf(XBT_NIL, PVFREE_XS_HEADER_FRAME, "", "%llu",
			     px->frame);
}

/* Called with px->lock held. */
static void pvfree_xen_unwatch(struct pvfree_xen *px)
{
	if (px->watching) {
		unregister_xenbus_watch(&px->watch);
		px->watching = false;
	}
}

static int pvfree_xen_attach(struct pvfree *pv, phys_addr_t header)
{
	struct pvfree_xen *px = pvfree_priv(pv);
	struct device *dev = &px->pdev->dev;
	int ret;

	mutex_lock(&px->lock);
	/* The guest's own frame number, never an MFN (PV included). */
	px->frame = (u64)header >> PVFREE_FRAME_SHIFT;
	ret = pvfree_xen_publish(px);
	if (ret) {
		dev_err(dev, "cannot write %s (%d)\n", PVFREE_XS_DIR, ret);
		goto err_rm;
	}
	/* Registering fires the watch once: the core examines the header. */
	if (!px->watching) {
		ret = register_xenbus_watch(&px->watch);
		if (ret) {
			dev_err(dev, "cannot watch %s (%d)\n",
				PVFREE_XS_REQUEST, ret);
			goto err_rm;
		}
		px->watching = true;
	}
	px->attached = true;
	mutex_unlock(&px->lock);
	return 0;

err_rm:
	xenbus_rm(XBT_NIL, PVFREE_XS_DIR, "");
	mutex_unlock(&px->lock);
	return ret;
}

static int pvfree_xen_detach(struct pvfree *pv)
{
	struct pvfree_xen *px = pvfree_priv(pv);
	int ret;

	mutex_lock(&px->lock);
	px->attached = false;
	pvfree_xen_unwatch(px);
	ret = xenbus_rm(XBT_NIL, PVFREE_XS_DIR, "");
	mutex_unlock(&px->lock);
	if (ret && ret != -ENOENT) {
		dev_err(&px->pdev->dev, "cannot remove %s (%d)\n",
			PVFREE_XS_DIR, ret);
		return ret;
	}
	/*
	 * A toolstack may still hold the header mapped (keep_header), but
	 * after response_id = 0 it no longer uses the storage.
	 */
	return 0;
}

static void pvfree_xen_notify(struct pvfree *pv, u64 response_id)
{
	struct pvfree_xen *px = pvfree_priv(pv);
	int ret;

	/* The core release-stored response_id in the header before. */
	ret = xenbus_printf(XBT_NIL, PVFREE_XS_RESPONSE, "", "%llu",
			    response_id);
	if (ret)
		dev_warn_ratelimited(&px->pdev->dev,
				     "cannot write %s (%d)\n",
				     PVFREE_XS_RESPONSE, ret);
}

static const struct pvfree_transport pvfree_xen_transport = {
	.name = "xenstore",
	.attach = pvfree_xen_attach,
	.detach = pvfree_xen_detach,
	.notify = pvfree_xen_notify,
	.keep_header = true,
};

static void pvfree_xen_request(struct xenbus_watch *watch, const char *path,
			       const char *token)
{
	struct pvfree_xen *px = container_of(watch, struct pvfree_xen, watch);

	/* Only queues the request work: never blocks the xenwatch thread. */
	pvfree_request(px->pv);
}

static void pvfree_xen_republish(struct work_struct *work)
{
	struct pvfree_xen *px = container_of(work, struct pvfree_xen,
					     republish);
	int ret = 0;

	/* Blocks until xenbus has resumed. */
	mutex_lock(&px->lock);
	if (px->attached)
		ret = pvfree_xen_publish(px);
	mutex_unlock(&px->lock);
	if (ret)
		dev_err(&px->pdev->dev,
			"cannot write %s after resume (%d)\n", PVFREE_XS_DIR,
			ret);
	else
		dev_dbg(&px->pdev->dev, "header frame %llu published again\n",
			px->frame);
	/* A request may have come with the new home: look at the header. */
	pvfree_request(px->pv);
}

/*
 * Called by do_suspend() right after the domain resumed, before xenbus
 * itself resumes: writing xenstore here would wait forever, so the keys
 * are written from a work item.  A cancelled suspend lands here too; the
 * keys still exist then and writing them again is harmless.
 */
static int pvfree_xen_resume(struct notifier_block *nb, unsigned long action,
			     void *data)
{
	struct pvfree_xen *px = container_of(nb, struct pvfree_xen, resume_nb);

	schedule_work(&px->republish);
	return NOTIFY_DONE;
}

static int pvfree_xen_reboot(struct notifier_block *nb, unsigned long action,
			     void *data)
{
	struct pvfree_xen *px = container_of(nb, struct pvfree_xen, reboot_nb);

	/* Unregister: the next kernel must not find the keys (kexec). */
	pvfree_stop(px->pv);
	return NOTIFY_DONE;
}

static void pvfree_xen_start(struct pvfree_xen *px)
{
	struct device *dev = &px->pdev->dev;
	struct pvfree *pv;
	int ret;

	mutex_lock(&pvfree_xen_start_lock);
	if (px->pv)
		goto out;
	pv = pvfree_create(dev, &pvfree_xen_transport, px);
	if (IS_ERR(pv)) {
		dev_info(dev, "not started (%ld)\n", PTR_ERR(pv));
		goto out;
	}
	px->pv = pv;
	xen_resume_notifier_register(&px->resume_nb);
	ret = pvfree_start(pv);
	if (ret) {
		dev_err(dev, "registration failed (%d)\n", ret);
		xen_resume_notifier_unregister(&px->resume_nb);
		cancel_work_sync(&px->republish);
		pvfree_destroy(pv);
		px->pv = NULL;
		goto out;
	}
	register_reboot_notifier(&px->reboot_nb);
	dev_info(dev, "registered (ABI %u, %s guest, header frame %llu)\n",
		 PVFREE_VERSION,
		 xen_pv_domain() ? "PV" : xen_pvh_domain() ? "PVH" : "HVM",
		 px->frame);
out:
	mutex_unlock(&pvfree_xen_start_lock);
}

static int pvfree_xen_xenstore_ready(struct notifier_block *nb,
				     unsigned long event, void *data)
{
	pvfree_xen_start(container_of(nb, struct pvfree_xen, xenstore_nb));
	return NOTIFY_DONE;
}

/* The PCI transport serves a guest that has the pvfree-pci device. */
static bool pvfree_xen_pci_present(void)
{
	struct pci_dev *pdev;

	pdev = pci_get_device(PVFREE_PCI_VENDOR_ID, PVFREE_PCI_DEVICE_ID, NULL);
	pci_dev_put(pdev);
	return pdev;
}

int pvfree_xen_init(void)
{
	struct pvfree_xen *px;
	int ret;

	/* dom0 is never migrated. */
	if (!xen_domain() || xen_initial_domain())
		return 0;
	if (pvfree_xen_pci_present()) {
		pr_info("pvfree: pvfree-pci device present, xenstore transport not used\n");
		return 0;
	}

	px = kzalloc(sizeof(*px), GFP_KERNEL);
	if (!px)
		return -ENOMEM;
	mutex_init(&px->lock);
	INIT_WORK(&px->republish, pvfree_xen_republish);
	px->watch.node = PVFREE_XS_REQUEST;
	px->watch.callback = pvfree_xen_request;
	px->xenstore_nb.notifier_call = pvfree_xen_xenstore_ready;
	px->resume_nb.notifier_call = pvfree_xen_resume;
	px->reboot_nb.notifier_call = pvfree_xen_reboot;

	px->pdev = platform_device_register_simple("pvfree-xen",
						   PLATFORM_DEVID_NONE,
						   NULL, 0);
	if (IS_ERR(px->pdev)) {
		ret = PTR_ERR(px->pdev);
		kfree(px);
		return ret;
	}
	pvfree_xen = px;
	/* Starts at once if xenstore is up (always for a loaded module). */
	register_xenstore_notifier(&px->xenstore_nb);
	return 0;
}

void pvfree_xen_exit(void)
{
	struct pvfree_xen *px = pvfree_xen;

	if (!px)
		return;
	unregister_xenstore_notifier(&px->xenstore_nb);
	mutex_lock(&pvfree_xen_start_lock);
	if (px->pv) {
		unregister_reboot_notifier(&px->reboot_nb);
		xen_resume_notifier_unregister(&px->resume_nb);
		cancel_work_sync(&px->republish);
		/* Removes the keys and the watch, then frees the storage. */
		pvfree_destroy(px->pv);
		px->pv = NULL;
	}
	mutex_unlock(&pvfree_xen_start_lock);
	platform_device_unregister(px->pdev);
	kfree(px);
	pvfree_xen = NULL;
}

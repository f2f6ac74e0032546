/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvfree guest driver: interface between the transport-independent core
 * (pvfree_main.c, pvfree_storage.c, pvfree_walk.c; private interface
 * pvfree_internal.h) and the transports that connect it to a hypervisor
 * (pvfree_pci.c: the pvfree-pci device; pvfree_xen.c: xenstore, on Xen).
 *
 * The core owns the shared header frame, the free-page bitmap storage and
 * the request work.  A transport only tells the host where the header is,
 * forwards request notifications to pvfree_request() and rings the
 * host's doorbell once a response has been published.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#ifndef _PVFREE_H
#define _PVFREE_H

#include <linux/types.h>

struct device;
struct pvfree;

/**
 * struct pvfree_transport - how the core reaches the host
 * @name: short name, shown as "transport" in debugfs
 * @attach: give the host the guest physical address of the header frame
 *	(frame aligned).  Returns 0 once the host has accepted it, or a
 *	negative errno.  May sleep.
 * @detach: withdraw the header.  Returns 0 if the host has let go of
 *	the header and the storage (it no longer reads or writes them), or
 *	a negative errno if it may still use them; the core then never
 *	frees them.  May sleep.
 * @notify: doorbell: the response to request @response_id has been
 *	published (its response_id is already stored in the header).  Called
 *	from the request work (process context), only while attached.
 * @keep_header: the binding forbids returning the header frame to the
 *	allocator once published (xenstore): the core leaks it on destroy.
 *
 * The transport calls pvfree_request() from any context (including hard
 * interrupt context) whenever the host signals a request.
 */
struct pvfree_transport {
	const char *name;
	int (*attach)(struct pvfree *pv, phys_addr_t header);
	int (*detach)(struct pvfree *pv);
	void (*notify)(struct pvfree *pv, u64 response_id);
	bool keep_header;
};

struct pvfree *pvfree_create(struct device *dev,
			     const struct pvfree_transport *transport,
			     void *priv);
void *pvfree_priv(struct pvfree *pv);
int pvfree_start(struct pvfree *pv);
void pvfree_request(struct pvfree *pv);
void pvfree_stop(struct pvfree *pv);
void pvfree_destroy(struct pvfree *pv);

/* Transports, registered by the module init of pvfree_main.c. */
#ifdef CONFIG_PCI
int pvfree_pci_init(void);
void pvfree_pci_exit(void);
#else
static inline int pvfree_pci_init(void)
{
	return 0;
}

static inline void pvfree_pci_exit(void)
{
}
#endif

#ifdef CONFIG_XEN
int pvfree_xen_init(void);
void pvfree_xen_exit(void);
#else
static inline int pvfree_xen_init(void)
{
	return 0;
}

static inline void pvfree_xen_exit(void)
{
}
#endif

#ifdef PVFREE_SELFTEST
int pvfree_selftest_init(void);
void pvfree_selftest_exit(void);
#else
static inline int pvfree_selftest_init(void)
{
	return 0;
}

static inline void pvfree_selftest_exit(void)
{
}
#endif

#endif /* _PVFREE_H */

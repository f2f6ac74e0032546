/* SPDX-License-Identifier: MIT */
/*
 * pvfree ABI, version 1.
 *
 * The memory a guest shares with its hypervisor to say which of its page
 * frames are free, and the request/response protocol around it.  spec/
 * is normative; this header is its machine-readable half.  It is compiled
 * unchanged by the Linux guest driver, by QEMU and by libxenguest, so it
 * uses only C99 fixed-width types and a C11 static assertion.
 *
 * Every multi-byte field is little-endian.  Every structure has explicit
 * padding; reserved fields are written as zero and ignored when read.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#ifndef PVFREE_ABI_H
#define PVFREE_ABI_H

#ifdef __KERNEL__
#include <linux/build_bug.h>
#include <linux/stddef.h>
#include <linux/types.h>
typedef __u8 pvfree_u8;
typedef __le16 pvfree_le16;
typedef __le32 pvfree_le32;
typedef __le64 pvfree_le64;
#define PVFREE_STATIC_ASSERT(expr) static_assert(expr, #expr)
#else
#include <stddef.h>
#include <stdint.h>
typedef uint8_t pvfree_u8;
typedef uint16_t pvfree_le16;
typedef uint32_t pvfree_le32;
typedef uint64_t pvfree_le64;
#define PVFREE_STATIC_ASSERT(expr) _Static_assert(expr, #expr)
#endif

#define PVFREE_MAGIC			0x52465650u	/* "PVFR" in memory */
#define PVFREE_VERSION			1

/* Frame size of the ABI, independent of the guest's own page size. */
#define PVFREE_FRAME_SHIFT		12
#define PVFREE_FRAME_SIZE		(1u << PVFREE_FRAME_SHIFT)

/* The header occupies exactly one frame, aligned to a frame. */
#define PVFREE_HEADER_SIZE		PVFREE_FRAME_SIZE

/*
 * Host features: written by the host into host_features before it
 * publishes a request.
 */
/* Frames the host skips read as zero at the destination. */
#define PVFREE_HF_ZERO_FILL		(1ull << 0)
/* Frames the host skips are filled with the declared poison byte. */
#define PVFREE_HF_POISON_FILL		(1ull << 1)

/*
 * Guest features: written by the guest into guest_features at
 * registration.
 */
/* The guest fills in the statistics fields of its responses. */
#define PVFREE_GF_STATS			(1ull << 0)

/* Response status, written by the guest. */
#define PVFREE_STATUS_NONE		0	/* no response yet */
#define PVFREE_STATUS_OK		1	/* bitmap is a valid snapshot */
#define PVFREE_STATUS_BUSY		2	/* try again later */
#define PVFREE_STATUS_NO_SPACE		3	/* storage too small for RAM */
#define PVFREE_STATUS_UNSUPPORTED	4	/* cannot give a safe snapshot */
#define PVFREE_STATUS_ABORTED		5	/* driver stopped mid-request */

/*
 * What the guest's free frames must read as after migration.  A host may
 * skip a frame only if the destination reproduces this content.
 */
#define PVFREE_CONTENT_ANY		1	/* content does not matter */
#define PVFREE_CONTENT_ZERO		2	/* must read as zero */
#define PVFREE_CONTENT_POISON		3	/* must read as poison byte */

/* Inline extent slots in the header. */
#define PVFREE_INLINE_EXTENTS		240
/*
 * Upper bound on data extents a guest may describe.  A host MAY enforce a
 * lower bound; 65536 extents need a 1 MiB extent table.
 */
#define PVFREE_MAX_EXTENTS		65536u

/*
 * A run of guest frames: guest frame numbers in units of
 * PVFREE_FRAME_SIZE, as the guest addresses its own RAM (guest physical
 * frames; Xen PV: see the xenstore binding).
 */
struct pvfree_extent {
	pvfree_le64 pfn;		/* first frame */
	pvfree_le64 nr_frames;		/* number of frames, > 0 */
};

/*
 * The shared header.  Written by the guest, except for the host area,
 * which only the host writes.
 *
 * Bitmap: bit i set means frame base_pfn + i was free at some instant
 * after the guest observed request response_id.  Bit i is bit (i % 8) of
 * bitmap byte (i / 8).  The bitmap bytes are stored, in order, in the
 * frames of the data extents, each extent's frames in ascending order,
 * one extent after the other.
 *
 * Data extents: if table_extents is 0, extents[0 .. nr_extents) are the
 * data extents (nr_extents <= PVFREE_INLINE_EXTENTS).  Otherwise
 * extents[0 .. table_extents) hold the extent table: an array of
 * nr_extents struct pvfree_extent stored in order in those frames.
 */
struct pvfree_header {
	/* 0x000: identification, written by the guest at registration */
	pvfree_le32 magic;		/* PVFREE_MAGIC */
	pvfree_le16 version;		/* PVFREE_VERSION */
	pvfree_le16 header_size;	/* PVFREE_HEADER_SIZE */
	pvfree_le64 guest_features;	/* PVFREE_GF_* */

	/* 0x010: host area, written only by the host */
	pvfree_le64 host_features;	/* PVFREE_HF_* */
	pvfree_le64 request_id;		/* latest request, never 0 */
	pvfree_le64 host_reserved[2];

	/* 0x030: response, written only by the guest; response_id last */
	pvfree_le64 response_id;	/* request answered, 0 while busy */
	pvfree_le32 status;		/* PVFREE_STATUS_* */
	pvfree_u8 content;		/* PVFREE_CONTENT_* */
	pvfree_u8 poison;		/* byte, if content is POISON */
	pvfree_le16 reserved0;
	pvfree_le64 base_pfn;		/* frame of bitmap bit 0 */
	pvfree_le64 nr_frames;		/* frames the bitmap covers */
	pvfree_le32 nr_extents;		/* data extents */
	pvfree_le32 table_extents;	/* 0, or inline extents of the table */

	/* 0x058: statistics of this response (PVFREE_GF_STATS) */
	pvfree_le64 free_frames;	/* bits set */
	pvfree_le64 snapshot_us;	/* time to build the snapshot */
	pvfree_le32 max_lock_hold_us;	/* longest allocator lock hold */
	pvfree_le32 reserved1;
	pvfree_le64 guest_reserved[18];

	/* 0x100: storage description */
	struct pvfree_extent extents[PVFREE_INLINE_EXTENTS];
};

#define PVFREE_HEADER_FIELD_AT(field, offset) \
	PVFREE_STATIC_ASSERT(offsetof(struct pvfree_header, field) == (offset))

PVFREE_STATIC_ASSERT(sizeof(struct pvfree_extent) == 16);
PVFREE_STATIC_ASSERT(sizeof(struct pvfree_header) == PVFREE_HEADER_SIZE);
PVFREE_HEADER_FIELD_AT(host_features, 0x10);
PVFREE_HEADER_FIELD_AT(request_id, 0x18);
PVFREE_HEADER_FIELD_AT(response_id, 0x30);
PVFREE_HEADER_FIELD_AT(status, 0x38);
PVFREE_HEADER_FIELD_AT(content, 0x3c);
PVFREE_HEADER_FIELD_AT(base_pfn, 0x40);
PVFREE_HEADER_FIELD_AT(nr_frames, 0x48);
PVFREE_HEADER_FIELD_AT(nr_extents, 0x50);
PVFREE_HEADER_FIELD_AT(free_frames, 0x58);
PVFREE_HEADER_FIELD_AT(max_lock_hold_us, 0x68);
PVFREE_HEADER_FIELD_AT(extents, 0x100);

/*
 * PCI binding (QEMU/KVM): device pvfree-pci.
 *
 * BAR 0 is a 4 KiB memory BAR of 32-bit little-endian registers.
 * The device ID is provisional until allocated in QEMU's
 * docs/specs/pci-ids.rst.
 */
#define PVFREE_PCI_VENDOR_ID		0x1b36
#define PVFREE_PCI_DEVICE_ID		0x0015
#define PVFREE_PCI_REVISION		1
#define PVFREE_PCI_BAR			0
#define PVFREE_PCI_BAR_SIZE		0x1000

#define PVFREE_PCI_REG_MAGIC		0x00	/* RO: PVFREE_MAGIC */
#define PVFREE_PCI_REG_VERSION		0x04	/* RO: highest ABI version */
#define PVFREE_PCI_REG_HEADER_LO	0x08	/* RW: header address [31:0] */
#define PVFREE_PCI_REG_HEADER_HI	0x0c	/* RW: header address [63:32] */
#define PVFREE_PCI_REG_COMMAND		0x10	/* WO: PVFREE_PCI_CMD_* */
#define PVFREE_PCI_REG_STATUS		0x14	/* RO: PVFREE_PCI_STATUS_* */
#define PVFREE_PCI_REG_ISR		0x18	/* RO, read clears */

#define PVFREE_PCI_CMD_REGISTER		1	/* header at HEADER_HI:LO */
#define PVFREE_PCI_CMD_UNREGISTER	2
#define PVFREE_PCI_CMD_RESPONSE		3	/* doorbell: response written */

#define PVFREE_PCI_STATUS_REGISTERED	(1u << 0)
#define PVFREE_PCI_STATUS_REJECTED	(1u << 1)	/* last REGISTER bad */

#define PVFREE_PCI_ISR_REQUEST		(1u << 0)	/* new request_id */

/*
 * Xen binding: keys relative to the guest's xenstore home,
 * /local/domain/<domid>/.
 */
#define PVFREE_XS_DIR			"data/pvfree"
#define PVFREE_XS_VERSION		"data/pvfree/version"	/* guest */
#define PVFREE_XS_HEADER_FRAME		"data/pvfree/header-frame" /* guest */
#define PVFREE_XS_REQUEST		"data/pvfree/request"	/* host */
#define PVFREE_XS_RESPONSE		"data/pvfree/response"	/* guest */

#endif /* PVFREE_ABI_H */

/* SPDX-License-Identifier: MIT */
/*
 * pvfree host-side protocol steps, the part of spec/pvfree-v1.md that is
 * the same for every hypervisor: the header's little-endian fields, the
 * identity check of a registered header, request ids, publishing a
 * request and seeing it answered.  The transport (how the guest learns
 * of a request, how the host waits) stays with each backend; reading the
 * answer is pvfree-reader.h.  Compiled into QEMU (hv-kvm) and libxenguest
 * (hv-xen), C99, no allocation, guest memory is hostile.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#ifndef PVFREE_PROTOCOL_H
#define PVFREE_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pvfree/abi.h"
#include "pvfree-diag.h"

/* ---- little-endian fields ---- */

/* Loads and stores over bytes: the host may be big-endian. */
static inline uint8_t pvfree_load_le8(const uint8_t *p)
{
    return p[0];
}

static inline uint16_t pvfree_load_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static inline uint32_t pvfree_load_le32(const uint8_t *p)
{
    return (uint32_t)pvfree_load_le16(p) |
           (uint32_t)pvfree_load_le16(p + 2) << 16;
}

static inline uint64_t pvfree_load_le64(const uint8_t *p)
{
    return (uint64_t)pvfree_load_le32(p) |
           (uint64_t)pvfree_load_le32(p + 4) << 32;
}

static inline void pvfree_store_le8(uint8_t *p, uint8_t v)
{
    p[0] = v;
}

static inline void pvfree_store_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void pvfree_store_le32(uint8_t *p, uint32_t v)
{
    pvfree_store_le16(p, (uint16_t)v);
    pvfree_store_le16(p + 2, (uint16_t)(v >> 16));
}

static inline void pvfree_store_le64(uint8_t *p, uint64_t v)
{
    pvfree_store_le32(p, (uint32_t)v);
    pvfree_store_le32(p + 4, (uint32_t)(v >> 32));
}

#define PVFREE_HEADER_OFFSET(field) offsetof(struct pvfree_header, field)

/*
 * pvfree_hdr_<field>(h) and pvfree_hdr_set_<field>(h, v) for every field
 * of struct pvfree_header: @h is a copy of the header (or a mapping the
 * caller knows to be safe to touch), as bytes, in the ABI's byte order.
 */
#define PVFREE_HEADER_ACCESSORS(field, bits)                                 \
    static inline uint##bits##_t pvfree_hdr_##field(const void *h)          \
    {                                                                       \
        return pvfree_load_le##bits((const uint8_t *)h +                    \
                                    PVFREE_HEADER_OFFSET(field));           \
    }                                                                       \
    static inline void pvfree_hdr_set_##field(void *h, uint##bits##_t v)    \
    {                                                                       \
        pvfree_store_le##bits((uint8_t *)h + PVFREE_HEADER_OFFSET(field), v); \
    }

PVFREE_HEADER_ACCESSORS(magic, 32)
PVFREE_HEADER_ACCESSORS(version, 16)
PVFREE_HEADER_ACCESSORS(header_size, 16)
PVFREE_HEADER_ACCESSORS(guest_features, 64)
PVFREE_HEADER_ACCESSORS(host_features, 64)
PVFREE_HEADER_ACCESSORS(request_id, 64)
PVFREE_HEADER_ACCESSORS(response_id, 64)
PVFREE_HEADER_ACCESSORS(status, 32)
PVFREE_HEADER_ACCESSORS(content, 8)
PVFREE_HEADER_ACCESSORS(poison, 8)
PVFREE_HEADER_ACCESSORS(base_pfn, 64)
PVFREE_HEADER_ACCESSORS(nr_frames, 64)
PVFREE_HEADER_ACCESSORS(nr_extents, 32)
PVFREE_HEADER_ACCESSORS(table_extents, 32)
PVFREE_HEADER_ACCESSORS(free_frames, 64)
PVFREE_HEADER_ACCESSORS(snapshot_us, 64)
PVFREE_HEADER_ACCESSORS(max_lock_hold_us, 32)

#undef PVFREE_HEADER_ACCESSORS

/* A struct pvfree_extent at @e, as bytes: inline in a header or a table. */
static inline uint64_t pvfree_extent_pfn(const void *e)
{
    return pvfree_load_le64((const uint8_t *)e +
                            offsetof(struct pvfree_extent, pfn));
}

static inline uint64_t pvfree_extent_nr_frames(const void *e)
{
    return pvfree_load_le64((const uint8_t *)e +
                            offsetof(struct pvfree_extent, nr_frames));
}

/* Inline extent @i of the header copy @h. */
static inline const void *pvfree_hdr_extent(const void *h, unsigned i)
{
    return (const uint8_t *)h + PVFREE_HEADER_OFFSET(extents) +
           (size_t)i * sizeof(struct pvfree_extent);
}

/* ---- registration ---- */

/* The identification: magic, version and header_size, at offset 0. */
#define PVFREE_IDENTITY_SIZE    PVFREE_HEADER_OFFSET(guest_features)

/* Is @version an ABI version this host implements (spec 5)? */
bool pvfree_version_supported(uint64_t version);

/*
 * Check the identification of a header: @id is a copy of its first
 * PVFREE_IDENTITY_SIZE bytes.  PVFREE_ERR_MAGIC, _VERSION or _HEADER_SIZE
 * if it is not a version-1 pvfree header.  The one check of a header's
 * identity: at registration, before each request and in the reader.
 */
enum pvfree_error pvfree_check_identity(const void *id,
                                        struct pvfree_diag *diag);

/* ---- talking to the guest through its header ---- */

/*
 * Copy @len bytes of guest memory at guest physical address @gpa into
 * @buf.  Must fail (return non-zero) for anything that is not ordinary
 * guest RAM.
 */
typedef int (*pvfree_read_fn)(void *opaque, uint64_t gpa, void *buf,
                              size_t len);

/* Copy @len bytes from @buf into guest memory at @gpa; non-zero: failed. */
typedef int (*pvfree_write_fn)(void *opaque, uint64_t gpa, const void *buf,
                               size_t len);

/* Make the writes before it visible to the guest before those after it. */
typedef void (*pvfree_barrier_fn)(void *opaque);

/* A registered header and how the host reaches it. */
struct pvfree_channel {
    pvfree_read_fn read;
    pvfree_write_fn write;      /* only pvfree_publish_request() writes */
    pvfree_barrier_fn wmb;      /* NULL: a C11 release fence */
    void *opaque;               /* for all three */
    uint64_t header_gpa;        /* frame-aligned */
};

/*
 * Read the header's identification through @c and check it, after
 * checking that header_gpa is frame-aligned (PVFREE_ERR_READ, field
 * HEADER_GPA) and readable (PVFREE_ERR_READ, field HEADER).  Whether the
 * frame is ordinary guest RAM is for the caller's read function.
 */
enum pvfree_error pvfree_check_registration(const struct pvfree_channel *c,
                                            struct pvfree_diag *diag);

/* Request ids are positive and stay below 2^63. */
#define PVFREE_MAX_REQUEST_ID   ((UINT64_C(1) << 63) - 1)

/*
 * The id of the next request, after the highest id the host published or
 * found in the header (@last; 0 if none).  0 if ids are exhausted.
 */
uint64_t pvfree_next_request_id(uint64_t last);

/*
 * Publish request @request_id (spec 6.6): write host_features, a write
 * barrier, then request_id.  Telling the guest (interrupt, xenstore key)
 * is the transport's, after this returned PVFREE_OK.  PVFREE_ERR_WRITE
 * if a write failed, PVFREE_ERR_EXHAUSTED if @request_id is 0 or above
 * PVFREE_MAX_REQUEST_ID.
 */
enum pvfree_error pvfree_publish_request(const struct pvfree_channel *c,
                                         uint64_t host_features,
                                         uint64_t request_id,
                                         struct pvfree_diag *diag);

/*
 * Read the header's response_id into *@id (PVFREE_ERR_READ if it cannot
 * be read).  The value is the guest's: compare it, do not trust it.
 */
enum pvfree_error pvfree_read_response_id(pvfree_read_fn read, void *opaque,
                                          uint64_t header_gpa, uint64_t *id,
                                          struct pvfree_diag *diag);

/*
 * Has the guest answered @request_id?  PVFREE_OK if response_id is
 * @request_id, PVFREE_ERR_NOT_ANSWERED if not (yet), PVFREE_ERR_READ if
 * the header cannot be read.  Then read the answer with
 * pvfree_read_response(), which checks it again.
 */
enum pvfree_error pvfree_response_ready(const struct pvfree_channel *c,
                                        uint64_t request_id,
                                        struct pvfree_diag *diag);

#endif /* PVFREE_PROTOCOL_H */

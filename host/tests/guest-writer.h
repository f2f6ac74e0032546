/* SPDX-License-Identifier: MIT */
/*
 * A test stand-in for the guest driver: lays out a pvfree response in an
 * image of guest RAM exactly as a guest would, so that the unit tests,
 * the fuzzer's seed generator and anyone debugging the reader share one
 * definition of "a valid response".  It writes whatever it is told, valid
 * or not, and silently skips bytes that fall outside the image.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#ifndef PVFREE_GUEST_WRITER_H
#define PVFREE_GUEST_WRITER_H

#include <stdint.h>

#include "pvfree/abi.h"

struct gw_extent {
    uint64_t pfn;
    uint64_t nr_frames;
};

/* Guest RAM image: gpa 0 is mem[0]. */
struct gw_image {
    uint8_t *mem;
    uint64_t size;
};

struct gw_response {
    uint64_t request_id;        /* also written as response_id, last */
    uint64_t host_features;     /* what the host wrote with the request */
    uint32_t status;
    uint8_t content;
    uint8_t poison;
    uint64_t base_pfn;
    uint64_t nr_frames;
    const struct gw_extent *data;   /* data extents, in storage order */
    uint32_t nr_data;
    const struct gw_extent *table;  /* table extents; NULL: data inline */
    uint32_t nr_table;
    const uint8_t *bitmap;      /* NULL: all frames in use */
    uint64_t bitmap_len;        /* bytes at @bitmap */
};

void gw_put_le16(uint8_t *p, uint16_t v);
void gw_put_le32(uint8_t *p, uint32_t v);
void gw_put_le64(uint8_t *p, uint64_t v);

/* Write @len bytes at @gpa, clipped to the image. */
void gw_write_bytes(const struct gw_image *img, uint64_t gpa,
                    const void *buf, uint64_t len);

/* Poke one header field, e.g. gw_poke64(img, hdr, offsetof(...), v). */
void gw_poke16(const struct gw_image *img, uint64_t header_gpa,
               uint64_t offset, uint16_t v);
void gw_poke32(const struct gw_image *img, uint64_t header_gpa,
               uint64_t offset, uint32_t v);
void gw_poke64(const struct gw_image *img, uint64_t header_gpa,
               uint64_t offset, uint64_t v);

/* Mark bitmap bits [first, first + count) free. */
void gw_set_bits(uint8_t *bitmap, uint64_t first, uint64_t count);

/*
 * Register a header at @header_gpa and answer a request with @resp: the
 * identification, the response fields, the extents (inline or table),
 * the bitmap spread over the data extents (the rest of the storage
 * zeroed), and response_id last.
 */
void gw_write_response(const struct gw_image *img, uint64_t header_gpa,
                       const struct gw_response *resp);

#endif /* PVFREE_GUEST_WRITER_H */

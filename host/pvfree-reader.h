/* SPDX-License-Identifier: MIT */
/*
 * pvfree host-side reader: validates a guest's response and yields the
 * runs of free frames it describes.  Compiled into QEMU (hv-kvm) and
 * libxenguest (hv-xen).  Treats every byte of guest memory as hostile:
 * each value is copied once out of guest memory, validated, and only the
 * copy is used afterwards.  No allocation: the caller provides the
 * scratch buffer.  Its diagnostics are pvfree-diag.h, the protocol steps
 * around it (identity, publishing a request) pvfree-protocol.h.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#ifndef PVFREE_READER_H
#define PVFREE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "pvfree/abi.h"
#include "pvfree-diag.h"
#include "pvfree-protocol.h"

/* Called for each run of free frames, in ascending frame order. */
typedef int (*pvfree_run_fn)(void *opaque, uint64_t pfn, uint64_t nr_frames);

/* A range of the guest's ordinary RAM, in PVFREE_FRAME_SIZE frames. */
struct pvfree_ram_range {
    uint64_t pfn;
    uint64_t nr_frames;
};

struct pvfree_reader {
    pvfree_read_fn read;
    void *opaque;
    /* Ordinary RAM the host may skip; sorted, non-overlapping. */
    const struct pvfree_ram_range *ram;
    size_t nr_ram;
    /* Scratch buffer for bitmap and extent-table reads. */
    void *scratch;
    size_t scratch_size;        /* >= PVFREE_FRAME_SIZE, multiple of it */
    uint32_t max_extents;       /* 0: PVFREE_MAX_EXTENTS */
    uint64_t host_features;     /* PVFREE_HF_* this host implements */
};

/* Validated copy of a response, in host byte order. */
struct pvfree_response {
    uint64_t request_id;
    uint32_t status;
    uint8_t content;
    uint8_t poison;
    uint64_t guest_features;
    uint64_t base_pfn;
    uint64_t nr_frames;
    uint32_t nr_extents;
    uint32_t table_extents;
    struct pvfree_extent inline_extents[PVFREE_INLINE_EXTENTS];
    /* statistics as claimed by the guest, informational only */
    uint64_t free_frames;
    uint64_t snapshot_us;
    uint32_t max_lock_hold_us;
    /* added by the reader, not read from the guest: */
    uint64_t header_gpa;        /* where the header was read from */
    uint64_t covered_frames;    /* nr_frames clipped to the end of r->ram */
};

/*
 * Copy and validate the header at @header_gpa as the response to
 * @request_id (spec 6.6.1 and 10.1).  On success fills @resp and returns
 * PVFREE_OK.  The header is copied into r->scratch.  @diag may be NULL;
 * on failure it says what was wrong first (see pvfree_diag_format()).
 * nr_frames must be >= 1 and the range must cover some of r->ram; the
 * storage must hold ceil(nr_frames / 8) bytes (checked here if inline),
 * but only the part of the bitmap up to the end of r->ram is ever read.
 */
enum pvfree_error pvfree_read_response(const struct pvfree_reader *r,
                                       uint64_t header_gpa,
                                       uint64_t request_id,
                                       struct pvfree_response *resp,
                                       struct pvfree_diag *diag);

/*
 * Walk the storage of a validated response and call @fn for every run
 * of free frames, clipped to the bitmap's range and to r->ram.  Returns
 * PVFREE_OK, or the first error (the runs already reported stay valid:
 * each was read from the guest's bitmap).
 *
 * @resp must be one that pvfree_read_response() accepted, with the same
 * @r.  Runs are maximal and strictly ascending.  Reads at most
 * ceil(frames up to the end of r->ram / 8) bitmap bytes plus the extent
 * table; skips bitmap bytes that cover only holes between RAM ranges.
 * Extent-table entries are checked as they are read (diag field
 * "table[n].pfn" etc.), all of them, even those the bitmap does not need.
 * With a table, storage smaller than ceil(nr_frames / 8) bytes is found
 * only here (PVFREE_ERR_STORAGE), possibly after some runs.
 *
 * After reading each chunk of bitmap, and before any of its bits reach
 * @fn, response_id is read again behind a read barrier (spec 6.6.1 item
 * 4), and once more at the end: if it changed, returns PVFREE_ERR_CHANGED
 * and the unconfirmed chunk is discarded.  With PVFREE_ERR_CALLBACK,
 * diag->value/nr_frames are the run @fn refused.
 */
enum pvfree_error pvfree_for_each_free_run(const struct pvfree_reader *r,
                                           const struct pvfree_response *resp,
                                           pvfree_run_fn fn, void *opaque,
                                           struct pvfree_diag *diag);

#endif /* PVFREE_READER_H */

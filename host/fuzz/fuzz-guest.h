/* SPDX-License-Identifier: MIT */
/*
 * The guest the fuzzer plays, shared with the seed generator.
 *
 * A fuzz input is guest memory from gpa 0 on, repeated to fill the RAM
 * below (byte at gpa = input[gpa % size]), with the header at gpa 0.  RAM
 * spans 0x6000 frames, so the bitmap (3 KiB) crosses the reader's chunks.
 * The host's choices ride in the header's host area, which a real host
 * owns: request_id and host_features in their own fields, the rest in
 * host_reserved[] (the "knobs").
 *
 * Copyright (c) 2026 The pvfree authors
 */
#ifndef PVFREE_FUZZ_GUEST_H
#define PVFREE_FUZZ_GUEST_H

#include <stddef.h>
#include <stdint.h>

#include "pvfree-reader.h"

/* [0, 0x3000) and [0x3000, 0x4000) abut; hole; [0x4800, 0x6000) */
static const struct pvfree_ram_range fuzz_ram[] = {
    { 0x0, 0x3000 },
    { 0x3000, 0x1000 },
    { 0x4800, 0x1800 },
};
#define FUZZ_NR_RAM     (sizeof(fuzz_ram) / sizeof(fuzz_ram[0]))
#define FUZZ_RAM_END    0x6000u
#define FUZZ_HEADER_GPA 0u

#define FUZZ_KNOBS      offsetof(struct pvfree_header, host_reserved)
#define FUZZ_KNOB_SCRATCH_FRAMES 0  /* scratch = (1 + (b & 3)) frames */
#define FUZZ_KNOB_FAIL_READ      1  /* this read fails; 0: none */
#define FUZZ_KNOB_CHANGE_AFTER   2  /* response_id changes after read n */
#define FUZZ_KNOB_STOP_AFTER     3  /* callback stops after n runs */
#define FUZZ_KNOB_MAX_EXTENTS    4  /* le32: reader's max_extents */

/* The fuzz target, also callable from a plain driver program. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* PVFREE_FUZZ_GUEST_H */

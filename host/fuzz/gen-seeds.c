/* SPDX-License-Identifier: MIT */
/*
 * Writes the fuzzer's seed corpus: small guest memory images (see
 * fuzz-guest.h) laid out by the same guest writer as the unit tests, so
 * the fuzzer starts from responses the reader accepts and from a few it
 * refuses for one reason each.
 *
 * usage: gen-seeds DIR
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-guest.h"
#include "guest-writer.h"

#define FRAME           PVFREE_FRAME_SIZE
#define IMAGE_FRAMES    4
#define BITMAP_BYTES    (FUZZ_RAM_END / 8)

static uint8_t image[IMAGE_FRAMES * FRAME];
static uint8_t bitmap[BITMAP_BYTES];
static const char *out_dir;
static int nr_seeds;

struct seed {
    const char *name;
    struct gw_response resp;
    uint8_t knobs[8];
    uint32_t image_frames;      /* 0: IMAGE_FRAMES */
    uint64_t stale_response_id; /* 0: response_id answers request_id */
};

static const struct gw_extent one_frame[] = { { 1, 1 } };
static const struct gw_extent two_frames_reversed[] = { { 2, 1 }, { 1, 1 } };
static const struct gw_extent table_at_1[] = { { 1, 1 } };
static const struct gw_extent data_2_3[] = { { 2, 1 }, { 3, 1 } };
static const struct gw_extent across_ranges[] = { { 0x2fff, 2 } };
static const struct gw_extent in_hole[] = { { 0x4100, 1 } };
static struct gw_extent many[300];

static void write_seed(const struct seed *seed)
{
    struct gw_image img = { image, sizeof(image) };
    uint32_t frames = seed->image_frames ? seed->image_frames : IMAGE_FRAMES;
    char path[512];
    FILE *f;

    memset(image, 0, sizeof(image));
    gw_write_response(&img, FUZZ_HEADER_GPA, &seed->resp);
    gw_write_bytes(&img, FUZZ_HEADER_GPA + FUZZ_KNOBS, seed->knobs,
                   sizeof(seed->knobs));
    if (seed->stale_response_id) {
        gw_poke64(&img, FUZZ_HEADER_GPA,
                  offsetof(struct pvfree_header, response_id),
                  seed->stale_response_id);
    }
    snprintf(path, sizeof(path), "%s/seed-%02d-%s", out_dir, nr_seeds++,
             seed->name);
    f = fopen(path, "wb");
    if (!f || fwrite(image, FRAME, frames, f) != frames || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static struct gw_response base_response(void)
{
    struct gw_response r;

    memset(&r, 0, sizeof(r));
    r.request_id = 7;
    r.status = PVFREE_STATUS_OK;
    r.content = PVFREE_CONTENT_ANY;
    r.base_pfn = 0;
    r.nr_frames = FUZZ_RAM_END;
    r.data = one_frame;
    r.nr_data = 1;
    r.bitmap = bitmap;
    r.bitmap_len = BITMAP_BYTES;
    return r;
}

static void mixed_bitmap(void)
{
    memset(bitmap, 0, sizeof(bitmap));
    gw_set_bits(bitmap, 0x10, 0x30);
    gw_set_bits(bitmap, 0x2ff0, 0x20);      /* across abutting ranges */
    gw_set_bits(bitmap, 0x3ff0, 0x900);     /* across the hole */
    gw_set_bits(bitmap, 0x5ffe, 2);
}

static void valid_seeds(void)
{
    struct seed s;
    size_t i;

    memset(&s, 0, sizeof(s));
    mixed_bitmap();
    s.name = "inline";
    s.resp = base_response();
    write_seed(&s);

    s.name = "inline-two-extents-base-0x100";
    s.resp.base_pfn = 0x100;
    s.resp.nr_frames = FUZZ_RAM_END - 0x100;
    s.resp.data = two_frames_reversed;
    s.resp.nr_data = 2;
    write_seed(&s);

    s.name = "table";
    s.resp = base_response();
    s.resp.data = data_2_3;
    s.resp.nr_data = 2;
    s.resp.table = table_at_1;
    s.resp.nr_table = 1;
    write_seed(&s);

    s.name = "table-300-extents";
    for (i = 0; i < 300; i++) {
        many[i].pfn = 0x10 + i;
        many[i].nr_frames = 1;
    }
    s.resp.data = many;
    s.resp.nr_data = 300;
    s.resp.table = data_2_3;        /* two table frames */
    s.resp.nr_table = 2;
    write_seed(&s);

    s.name = "extent-across-abutting-ranges";
    s.resp = base_response();
    s.resp.data = across_ranges;
    write_seed(&s);

    s.name = "all-free";
    s.resp = base_response();
    memset(bitmap, 0xff, sizeof(bitmap));
    write_seed(&s);

    s.name = "empty";
    memset(bitmap, 0, sizeof(bitmap));
    write_seed(&s);

    s.name = "past-ram-end";
    mixed_bitmap();
    s.resp.base_pfn = 0x5000;
    s.resp.nr_frames = 0x8000;
    write_seed(&s);

    s.name = "zero-fill";
    s.resp = base_response();
    s.resp.content = PVFREE_CONTENT_ZERO;
    s.resp.host_features = PVFREE_HF_ZERO_FILL;
    write_seed(&s);

    s.name = "poison";
    s.resp.content = PVFREE_CONTENT_POISON;
    s.resp.poison = 0xaa;
    s.resp.host_features = PVFREE_HF_POISON_FILL;
    write_seed(&s);
}

static void knob_seeds(void)
{
    struct seed s;

    memset(&s, 0, sizeof(s));
    mixed_bitmap();
    s.resp = base_response();
    s.resp.data = data_2_3;
    s.resp.nr_data = 2;
    s.resp.table = table_at_1;
    s.resp.nr_table = 1;

    s.name = "scratch-4-frames";
    s.knobs[FUZZ_KNOB_SCRATCH_FRAMES] = 3;
    write_seed(&s);
    memset(s.knobs, 0, sizeof(s.knobs));

    /* reads: response_id, header, table, bitmap, re-check */
    s.name = "read-fails-header";
    s.knobs[FUZZ_KNOB_FAIL_READ] = 2;
    write_seed(&s);
    s.name = "read-fails-table";
    s.knobs[FUZZ_KNOB_FAIL_READ] = 3;
    write_seed(&s);
    s.name = "read-fails-bitmap";
    s.knobs[FUZZ_KNOB_FAIL_READ] = 4;
    write_seed(&s);
    s.name = "read-fails-recheck";
    s.knobs[FUZZ_KNOB_FAIL_READ] = 5;
    write_seed(&s);
    memset(s.knobs, 0, sizeof(s.knobs));

    s.name = "table-storage-too-small";
    s.resp.nr_frames = 0x10000;     /* needs 8 KiB, has 2 frames */
    s.resp.nr_data = 1;
    write_seed(&s);
    s.resp.nr_frames = FUZZ_RAM_END;
    s.resp.nr_data = 2;

    s.name = "changes-during-walk";
    s.knobs[FUZZ_KNOB_CHANGE_AFTER] = 4;
    write_seed(&s);
    memset(s.knobs, 0, sizeof(s.knobs));

    s.name = "callback-stops";
    s.knobs[FUZZ_KNOB_STOP_AFTER] = 2;
    write_seed(&s);
    memset(s.knobs, 0, sizeof(s.knobs));

    s.name = "max-extents-1";
    s.knobs[FUZZ_KNOB_MAX_EXTENTS] = 1;
    write_seed(&s);
}

static void invalid_seeds(void)
{
    struct seed s;

    memset(&s, 0, sizeof(s));
    mixed_bitmap();
    s.resp = base_response();

    s.name = "not-answered";
    s.stale_response_id = 6;
    write_seed(&s);
    s.stale_response_id = 0;

    s.name = "status-busy";
    s.resp.status = PVFREE_STATUS_BUSY;
    write_seed(&s);

    s.name = "extent-in-hole";
    s.resp = base_response();
    s.resp.data = in_hole;
    write_seed(&s);

    s.name = "storage-too-small";
    s.resp.data = one_frame;
    s.resp.nr_frames = 0x10000;
    write_seed(&s);

    s.name = "short-input";
    s.resp = base_response();
    s.image_frames = 1;
    write_seed(&s);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    valid_seeds();
    knob_seeds();
    invalid_seeds();
    printf("gen-seeds: wrote %d seeds to %s\n", nr_seeds, out_dir);
    return 0;
}

// SPDX-License-Identifier: MIT
/*
 * standin-check DUMP: run pvfree's host reader over the frames that
 * `PVFREE_STANDIN_SELFTEST=DUMP pvfree-standin U F' dumped (on the build
 * host, no Xen) and check that the free runs are exactly the stand-in's
 * FREE frames.  Catches a malformed stand-in response before a slow
 * nested-Xen boot does.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pvfree-reader.h"

struct frame { uint64_t pfn; uint8_t data[4096]; };
static struct frame *frames;
static uint64_t nr_frames_dumped, *free_pfn, nr_free, seen;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int rd(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    (void)opaque;
    while (len) {
        uint64_t pfn = gpa / 4096, off = gpa % 4096, i;
        size_t n = 4096 - off < len ? 4096 - off : len;

        for (i = 0; i < nr_frames_dumped && frames[i].pfn != pfn; i++)
            ;
        if (i == nr_frames_dumped)
            return -1;
        memcpy(buf, frames[i].data + off, n);
        buf = (uint8_t *)buf + n; gpa += n; len -= n;
    }
    return 0;
}

static int run(void *opaque, uint64_t pfn, uint64_t n)
{
    (void)opaque;
    for (; n; n--, pfn++) {
        if (!bsearch(&pfn, free_pfn, nr_free, 8, cmp_u64)) {
            printf("standin-check: pfn %#llx reported free, not in FREE\n",
                   (unsigned long long)pfn);
            exit(1);
        }
        seen++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static uint8_t scratch[16 * 4096];
    static struct pvfree_response resp;
    struct pvfree_ram_range ram = { 0, 1ull << 40 };
    struct pvfree_reader r = {
        .read = rd, .ram = &ram, .nr_ram = 1, .scratch = scratch,
        .scratch_size = sizeof(scratch), .host_features = PVFREE_HF_ZERO_FILL,
    };
    struct pvfree_diag diag;
    enum pvfree_error err;
    char msg[200];
    FILE *f = argc == 2 ? fopen(argv[1], "r") : NULL;
    uint64_t i;

    if (!f || fread(&nr_frames_dumped, 8, 1, f) != 1)
        return 2;
    frames = calloc(nr_frames_dumped, sizeof(*frames));
    for (i = 0; i < nr_frames_dumped; i++)
        if (fread(&frames[i].pfn, 8, 1, f) != 1 ||
            fread(frames[i].data, 4096, 1, f) != 1)
            return 2;
    if (fread(&nr_free, 8, 1, f) != 1)
        return 2;
    free_pfn = calloc(nr_free, 8);
    if (fread(free_pfn, 8, nr_free, f) != nr_free)
        return 2;
    qsort(free_pfn, nr_free, 8, cmp_u64);

    err = pvfree_read_response(&r, frames[0].pfn * 4096, 1, &resp, &diag);
    if (!err)
        err = pvfree_for_each_free_run(&r, &resp, run, NULL, &diag);
    if (err) {
        pvfree_diag_format(&diag, msg, sizeof(msg));
        printf("standin-check: %s: %s\n", pvfree_error_name(err), msg);
        return 1;
    }
    printf("standin-check: %llu of %llu FREE frames reported free, %u extents\n",
           (unsigned long long)seen, (unsigned long long)nr_free,
           resp.nr_extents);
    return seen == nr_free ? 0 : 1;
}

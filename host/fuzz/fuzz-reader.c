/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the pvfree reader.  The input is guest memory (see
 * fuzz-guest.h).  Besides the sanitizers, it checks that the reader
 *  - reads only RAM, never more than the scratch buffer at once, and no
 *    more in total than the header, the largest table and a bitmap up to
 *    the end of RAM (plus the response_id re-checks);
 *  - reports runs that are non-empty, strictly ascending and separated
 *    (maximal), inside the bitmap's clipped coverage and inside RAM;
 *  - reports exactly the runs of a slow bit-by-bit reference walk when it
 *    succeeds, and a prefix of them when it stops early;
 * and that the protocol steps (pvfree-protocol.h) agree with it: the
 * identity check and the response-ready test on the same header.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-guest.h"

#define FRAME           ((uint64_t)PVFREE_FRAME_SIZE)
#define MAX_SCRATCH     (4 * PVFREE_FRAME_SIZE)
#define MAX_RUNS        (FUZZ_RAM_END / 2 + 1)
#define RESPONSE_ID_GPA (FUZZ_HEADER_GPA + \
                         offsetof(struct pvfree_header, response_id))

#define CHECK(cond) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
                    __LINE__, #cond); \
            abort(); \
        } \
    } while (0)

struct run {
    uint64_t pfn;
    uint64_t nr_frames;
};

struct fuzz_guest {
    const uint8_t *data;
    size_t size;
    unsigned nr_reads;
    unsigned fail_read;
    unsigned change_after;
    bool changed;               /* response_id now reads as id + 1 */
    uint64_t scratch_size;
    uint64_t bytes_read;
    const struct pvfree_response *resp;
    size_t stop_after;
    struct run runs[MAX_RUNS];
    size_t nr_runs;
};

static struct run reference[MAX_RUNS];
static int verbose = -1;        /* PVFREE_FUZZ_VERBOSE=1: print outcomes */
static struct pvfree_extent ref_extents[PVFREE_MAX_EXTENTS];

static uint8_t raw_byte(const struct fuzz_guest *g, uint64_t gpa)
{
    return g->data[gpa % g->size];
}

static uint64_t raw_le64(const struct fuzz_guest *g, uint64_t gpa)
{
    uint64_t v = 0;
    int i;

    for (i = 7; i >= 0; i--) {
        v = v << 8 | raw_byte(g, gpa + (uint64_t)i);
    }
    return v;
}

/* Guest memory as the reader sees it, with the guest's late change. */
static uint8_t guest_byte(const struct fuzz_guest *g, uint64_t gpa)
{
    if (g->changed && gpa >= RESPONSE_ID_GPA && gpa < RESPONSE_ID_GPA + 8) {
        uint64_t id = raw_le64(g, RESPONSE_ID_GPA) + 1;

        return (uint8_t)(id >> (8 * (gpa - RESPONSE_ID_GPA)));
    }
    return raw_byte(g, gpa);
}

static bool frame_is_ram(uint64_t pfn)
{
    size_t i;

    for (i = 0; i < FUZZ_NR_RAM; i++) {
        if (pfn >= fuzz_ram[i].pfn &&
            pfn - fuzz_ram[i].pfn < fuzz_ram[i].nr_frames) {
            return true;
        }
    }
    return false;
}

/* Frames [pfn, pfn + nr_frames) are RAM, across abutting ranges. */
static bool range_is_ram(uint64_t pfn, uint64_t nr_frames)
{
    uint64_t end = pfn + nr_frames;
    size_t i;

    if (nr_frames == 0 || end < pfn) {
        return false;
    }
    for (i = 0; i < FUZZ_NR_RAM && pfn < end; i++) {
        uint64_t range_end = fuzz_ram[i].pfn + fuzz_ram[i].nr_frames;

        if (pfn >= fuzz_ram[i].pfn && pfn < range_end) {
            pfn = range_end;
        }
    }
    return pfn >= end;
}

static int fuzz_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    struct fuzz_guest *g = opaque;
    uint8_t *out = buf;
    size_t i;

    CHECK(len > 0 && len <= g->scratch_size);
    CHECK(gpa + len > gpa);
    CHECK(range_is_ram(gpa / FRAME, (gpa + len - 1) / FRAME - gpa / FRAME + 1));
    g->nr_reads++;
    if (g->nr_reads == g->fail_read) {
        return -1;
    }
    for (i = 0; i < len; i++) {
        out[i] = guest_byte(g, gpa + i);
    }
    g->bytes_read += len;
    if (g->nr_reads == g->change_after) {
        g->changed = true;
    }
    return 0;
}

static int check_run(void *opaque, uint64_t pfn, uint64_t nr_frames)
{
    struct fuzz_guest *g = opaque;
    const struct pvfree_response *resp = g->resp;

    CHECK(nr_frames > 0);
    CHECK(pfn >= resp->base_pfn);
    CHECK(pfn - resp->base_pfn < resp->covered_frames);
    CHECK(nr_frames <= resp->covered_frames - (pfn - resp->base_pfn));
    CHECK(range_is_ram(pfn, nr_frames));
    if (g->nr_runs > 0) {
        const struct run *prev = &g->runs[g->nr_runs - 1];

        /* ascending, and maximal: never touching the previous run */
        CHECK(pfn > prev->pfn + prev->nr_frames);
    }
    CHECK(g->nr_runs < MAX_RUNS);
    g->runs[g->nr_runs].pfn = pfn;
    g->runs[g->nr_runs].nr_frames = nr_frames;
    g->nr_runs++;
    return g->stop_after != 0 && g->nr_runs == g->stop_after;
}

/* The data extents, straight from guest memory, unchecked. */
static uint32_t reference_extents(const struct fuzz_guest *g,
                                  const struct pvfree_response *resp)
{
    uint32_t t = 0;
    uint64_t offset = 0;
    uint32_t i;

    if (!resp->table_extents) {
        memcpy(ref_extents, resp->inline_extents,
               resp->nr_extents * sizeof(ref_extents[0]));
        return resp->nr_extents;
    }
    for (i = 0; i < resp->nr_extents; i++) {
        const struct pvfree_extent *te;

        while (t < resp->table_extents &&
               offset == resp->inline_extents[t].nr_frames * FRAME) {
            t++;
            offset = 0;
        }
        if (t == resp->table_extents) {
            return i;
        }
        te = &resp->inline_extents[t];
        ref_extents[i].pfn = raw_le64(g, te->pfn * FRAME + offset);
        ref_extents[i].nr_frames = raw_le64(g, te->pfn * FRAME + offset + 8);
        offset += 16;
    }
    return resp->nr_extents;
}

/* Where the reference walk is in the storage. */
struct ref_cursor {
    uint32_t nr_extents;
    uint32_t extent;            /* extent holding bytes from @first on */
    uint64_t first;             /* bitmap byte at the extent's start */
};

/* Guest address of bitmap byte @byte (ascending), UINT64_MAX past storage. */
static uint64_t reference_byte_gpa(struct ref_cursor *c, uint64_t byte)
{
    while (c->extent < c->nr_extents) {
        uint64_t frames = ref_extents[c->extent].nr_frames;

        if (frames > FUZZ_RAM_END) {
            frames = FUZZ_RAM_END;   /* only valid extents get this far */
        }
        if (byte - c->first < frames * FRAME) {
            return ref_extents[c->extent].pfn * FRAME + (byte - c->first);
        }
        c->first += frames * FRAME;
        c->extent++;
    }
    return UINT64_MAX;
}

/* Free runs, bit by bit, the slow and obvious way. */
static size_t reference_runs(const struct fuzz_guest *g,
                             const struct pvfree_response *resp)
{
    struct ref_cursor cursor = { reference_extents(g, resp), 0, 0 };
    uint64_t last_byte = UINT64_MAX;
    uint64_t gpa = UINT64_MAX;
    size_t n = 0;
    uint64_t i;

    for (i = 0; i < resp->covered_frames; i++) {
        uint64_t pfn = resp->base_pfn + i;
        bool is_free;

        if (!frame_is_ram(pfn)) {
            continue;
        }
        if (i / 8 != last_byte) {
            last_byte = i / 8;
            gpa = reference_byte_gpa(&cursor, last_byte);
        }
        if (gpa == UINT64_MAX) {
            break;
        }
        is_free = (raw_byte(g, gpa) >> (i % 8)) & 1;
        if (!is_free) {
            continue;
        }
        if (n > 0 && reference[n - 1].pfn + reference[n - 1].nr_frames == pfn) {
            reference[n - 1].nr_frames++;
        } else {
            CHECK(n < MAX_RUNS);
            reference[n].pfn = pfn;
            reference[n].nr_frames = 1;
            n++;
        }
    }
    return n;
}

static void check_against_reference(const struct fuzz_guest *g,
                                    const struct pvfree_response *resp,
                                    enum pvfree_error err)
{
    size_t n = reference_runs(g, resp);
    size_t i;

    CHECK(g->nr_runs <= n);
    for (i = 0; i < g->nr_runs; i++) {
        CHECK(g->runs[i].pfn == reference[i].pfn);
        CHECK(g->runs[i].nr_frames == reference[i].nr_frames);
    }
    if (err == PVFREE_OK) {
        CHECK(g->nr_runs == n);
    }
}

static void setup_guest(struct fuzz_guest *g, struct pvfree_reader *r,
                        void *scratch, const uint8_t *data, size_t size)
{
    uint8_t knobs[8];
    size_t i;

    memset(g, 0, sizeof(*g));
    g->data = data;
    g->size = size;
    for (i = 0; i < sizeof(knobs); i++) {
        knobs[i] = raw_byte(g, FUZZ_HEADER_GPA + FUZZ_KNOBS + i);
    }
    g->scratch_size = (1 + (knobs[FUZZ_KNOB_SCRATCH_FRAMES] & 3)) * FRAME;
    g->fail_read = knobs[FUZZ_KNOB_FAIL_READ];
    g->change_after = knobs[FUZZ_KNOB_CHANGE_AFTER];
    g->stop_after = knobs[FUZZ_KNOB_STOP_AFTER];

    memset(r, 0, sizeof(*r));
    r->read = fuzz_read;
    r->opaque = g;
    r->ram = fuzz_ram;
    r->nr_ram = FUZZ_NR_RAM;
    r->scratch = scratch;
    r->scratch_size = g->scratch_size;
    r->max_extents = (uint32_t)knobs[FUZZ_KNOB_MAX_EXTENTS] |
                     (uint32_t)knobs[FUZZ_KNOB_MAX_EXTENTS + 1] << 8 |
                     (uint32_t)knobs[FUZZ_KNOB_MAX_EXTENTS + 2] << 16 |
                     (uint32_t)knobs[FUZZ_KNOB_MAX_EXTENTS + 3] << 24;
    r->host_features = raw_le64(g, FUZZ_HEADER_GPA +
                                offsetof(struct pvfree_header,
                                         host_features));
}

static bool is_identity_error(enum pvfree_error err)
{
    return err == PVFREE_ERR_MAGIC || err == PVFREE_ERR_VERSION ||
           err == PVFREE_ERR_HEADER_SIZE;
}

/*
 * The protocol steps agree with the reader on the same guest: the one
 * identity check, and the response-ready test.  Runs last, so that its
 * reads do not shift the read-failure and change knobs.
 */
static void check_protocol(struct fuzz_guest *g, uint64_t request_id,
                           enum pvfree_error read_err)
{
    struct pvfree_channel c;
    uint8_t id[PVFREE_IDENTITY_SIZE];
    struct pvfree_diag diag;
    enum pvfree_error err;
    char text[256];
    size_t i;

    for (i = 0; i < sizeof(id); i++) {
        id[i] = raw_byte(g, FUZZ_HEADER_GPA + i);
    }
    err = pvfree_check_identity(id, &diag);
    CHECK(err == diag.error);
    CHECK(err == PVFREE_OK || is_identity_error(err));
    CHECK(read_err != PVFREE_OK || err == PVFREE_OK);
    CHECK(!is_identity_error(read_err) || err == read_err);
    CHECK(pvfree_diag_format(&diag, text, sizeof(text)) > 0);

    memset(&c, 0, sizeof(c));
    c.read = fuzz_read;
    c.opaque = g;
    c.header_gpa = FUZZ_HEADER_GPA;
    g->fail_read = 0;
    err = pvfree_response_ready(&c, request_id, &diag);
    CHECK(err == diag.error);
    CHECK(err == PVFREE_OK || err == PVFREE_ERR_NOT_ANSWERED);
    if (!g->changed) {
        CHECK((err == PVFREE_OK) ==
              (raw_le64(g, RESPONSE_ID_GPA) == request_id));
    }
    CHECK(pvfree_diag_format(&diag, text, sizeof(text)) > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t scratch[MAX_SCRATCH];
    static struct fuzz_guest g;
    struct pvfree_reader r;
    struct pvfree_response resp;
    struct pvfree_diag diag;
    enum pvfree_error err;
    uint64_t request_id;
    uint64_t max_bytes;
    char text[256];

    if (size == 0) {
        return 0;
    }
    setup_guest(&g, &r, scratch, data, size);
    request_id = raw_le64(&g, FUZZ_HEADER_GPA +
                          offsetof(struct pvfree_header, request_id));

    if (verbose < 0) {
        verbose = getenv("PVFREE_FUZZ_VERBOSE") != NULL;
    }
    err = pvfree_read_response(&r, FUZZ_HEADER_GPA, request_id, &resp,
                               &diag);
    CHECK(err == diag.error);
    CHECK(pvfree_diag_format(&diag, text, sizeof(text)) > 0);
    CHECK(pvfree_error_name(err) != NULL);
    if (err != PVFREE_OK) {
        if (verbose) {
            printf("read_response: %s: %s\n", pvfree_error_name(err), text);
        }
        check_protocol(&g, request_id, err);
        return 0;
    }
    CHECK(resp.request_id == request_id);
    CHECK(resp.covered_frames > 0 &&
          resp.covered_frames <= FUZZ_RAM_END - resp.base_pfn);

    g.resp = &resp;
    g.bytes_read = 0;
    err = pvfree_for_each_free_run(&r, &resp, check_run, &g, &diag);
    CHECK(err == diag.error);
    CHECK(pvfree_diag_format(&diag, text, sizeof(text)) > 0);
    CHECK(err != PVFREE_ERR_CALLBACK || g.nr_runs == g.stop_after);

    /* table, bitmap up to the end of RAM, re-checks: one per chunk + 1 */
    max_bytes = (uint64_t)resp.nr_extents * 16 + FUZZ_RAM_END / 8;
    max_bytes += 8 * (FUZZ_RAM_END / 8 / (g.scratch_size / 2) + 2 +
                      FUZZ_NR_RAM);
    CHECK(g.bytes_read <= max_bytes);

    if (verbose) {
        printf("walk: %s: %s; %zu runs\n", pvfree_error_name(err), text,
               g.nr_runs);
    }

    /* A change of response_id may flip bits of storage in the header. */
    if (!g.changed) {
        check_against_reference(&g, &resp, err);
    }
    check_protocol(&g, request_id, PVFREE_OK);
    return 0;
}

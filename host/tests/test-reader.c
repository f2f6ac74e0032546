/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the pvfree host-side reader against an in-memory guest:
 * 160 MiB of guest physical address space (allocated lazily by calloc)
 * with three RAM ranges, two of which abut, and a hole.  The read
 * callback refuses anything outside RAM and counts every byte it hands
 * out, so each test also checks that the reader reads guest values once.
 * PVFREE_TRACE_READS=1 in the environment prints every read.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pvfree-reader.h"
#include "guest-writer.h"

#define FRAME               PVFREE_FRAME_SIZE
#define GUEST_FRAMES        0xa000u
#define GUEST_SIZE          ((uint64_t)GUEST_FRAMES * FRAME)
#define TRACKED_SIZE        (4u << 20)  /* read counts kept for this much */
#define HEADER_PFN          0x10u
#define HEADER_GPA          ((uint64_t)HEADER_PFN * FRAME)
#define TABLE_PFN           0x40u
#define REQUEST             5u
#define BITMAP_BYTES        (GUEST_FRAMES / 8)
#define MAX_RUNS            20000
#define RESPONSE_ID_AT      offsetof(struct pvfree_header, response_id)

/* A: [0x10, 0x4000), B: [0x4000, 0x8000), hole, C: [0x8800, 0xa000) */
static const struct pvfree_ram_range guest_ram[] = {
    { 0x10, 0x3ff0 },
    { 0x4000, 0x4000 },
    { 0x8800, 0x1800 },
};
#define NR_GUEST_RAM (sizeof(guest_ram) / sizeof(guest_ram[0]))

/* Two one-frame data extents: bitmap byte 4096 is the first of the second. */
static const struct gw_extent two_extents[] = {
    { 0x20, 1 },
    { 0x30, 1 },
};

static const struct gw_extent table_frame[] = {
    { TABLE_PFN, 1 },
};

struct run {
    uint64_t pfn;
    uint64_t nr_frames;
};

struct guest {
    struct gw_image img;
    uint8_t *read_count;
    uint8_t *scratch;
    struct pvfree_reader reader;
    unsigned nr_reads;
    unsigned fail_read;         /* this read fails; 0: none */
    unsigned bump_id_after;     /* guest starts a new response after it */
    bool read_outside;
    size_t max_read_len;
    uint64_t bytes_read;
    struct run runs[MAX_RUNS];
    size_t nr_runs;
    size_t stop_after;          /* callback stops after this many runs */
    uint8_t bitmap[BITMAP_BYTES];
    struct gw_response resp;
    struct pvfree_response out;
    struct pvfree_diag diag;
};

static bool frame_is_ram(uint64_t pfn)
{
    size_t i;

    for (i = 0; i < NR_GUEST_RAM; i++) {
        if (pfn >= guest_ram[i].pfn &&
            pfn < guest_ram[i].pfn + guest_ram[i].nr_frames) {
            return true;
        }
    }
    return false;
}

static bool bytes_are_ram(uint64_t gpa, uint64_t len)
{
    uint64_t pfn;

    if (len == 0 || gpa + len < gpa || gpa + len > GUEST_SIZE) {
        return false;
    }
    for (pfn = gpa / FRAME; pfn <= (gpa + len - 1) / FRAME; pfn++) {
        if (!frame_is_ram(pfn)) {
            return false;
        }
    }
    return true;
}

static int guest_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    struct guest *g = opaque;
    uint64_t i;

    g->nr_reads++;
    if (getenv("PVFREE_TRACE_READS")) {
        fprintf(stderr, "read %u: gpa 0x%llx len 0x%zx\n", g->nr_reads,
                (unsigned long long)gpa, len);
    }
    if (len > g->max_read_len) {
        g->max_read_len = len;
    }
    if (g->nr_reads == g->fail_read) {
        return -1;
    }
    if (!bytes_are_ram(gpa, len)) {
        g->read_outside = true;
        return -1;
    }
    memcpy(buf, g->img.mem + gpa, len);
    g->bytes_read += len;
    for (i = gpa; i < gpa + len && i < TRACKED_SIZE; i++) {
        if (g->read_count[i] < UINT8_MAX) {
            g->read_count[i]++;
        }
    }
    if (g->nr_reads == g->bump_id_after) {
        gw_poke64(&g->img, HEADER_GPA, RESPONSE_ID_AT, REQUEST + 1);
    }
    return 0;
}

static int record_run(void *opaque, uint64_t pfn, uint64_t nr_frames)
{
    struct guest *g = opaque;

    assert_true(g->nr_runs < MAX_RUNS);
    g->runs[g->nr_runs].pfn = pfn;
    g->runs[g->nr_runs].nr_frames = nr_frames;
    g->nr_runs++;
    return g->stop_after != 0 && g->nr_runs == g->stop_after;
}

/* A valid response: the whole address space, two inline extents. */
static void default_response(struct guest *g)
{
    memset(&g->resp, 0, sizeof(g->resp));
    g->resp.request_id = REQUEST;
    g->resp.status = PVFREE_STATUS_OK;
    g->resp.content = PVFREE_CONTENT_ANY;
    g->resp.base_pfn = 0;
    g->resp.nr_frames = GUEST_FRAMES;
    g->resp.data = two_extents;
    g->resp.nr_data = 2;
    g->resp.bitmap = g->bitmap;
    g->resp.bitmap_len = BITMAP_BYTES;
}

static int setup(void **state)
{
    struct guest *g = calloc(1, sizeof(*g));

    assert_non_null(g);
    g->img.size = GUEST_SIZE;
    g->img.mem = calloc(1, GUEST_SIZE);
    g->read_count = calloc(1, TRACKED_SIZE);
    g->scratch = calloc(1, 4 * FRAME);
    assert_non_null(g->img.mem);
    assert_non_null(g->read_count);
    assert_non_null(g->scratch);
    g->reader.read = guest_read;
    g->reader.opaque = g;
    g->reader.ram = guest_ram;
    g->reader.nr_ram = NR_GUEST_RAM;
    g->reader.scratch = g->scratch;
    g->reader.scratch_size = FRAME;
    default_response(g);
    *state = g;
    return 0;
}

static int teardown(void **state)
{
    struct guest *g = *state;

    free(g->img.mem);
    free(g->read_count);
    free(g->scratch);
    free(g);
    return 0;
}

static void write_guest(struct guest *g)
{
    gw_write_response(&g->img, HEADER_GPA, &g->resp);
}

static enum pvfree_error read_response(struct guest *g)
{
    return pvfree_read_response(&g->reader, HEADER_GPA, REQUEST, &g->out,
                                &g->diag);
}

static enum pvfree_error walk(struct guest *g)
{
    return pvfree_for_each_free_run(&g->reader, &g->out, record_run, g,
                                    &g->diag);
}

/* Every guest byte but response_id was read at most once, all from RAM. */
static void assert_read_once(struct guest *g)
{
    uint64_t i;

    assert_false(g->read_outside);
    assert_true(g->max_read_len <= g->reader.scratch_size);
    for (i = 0; i < TRACKED_SIZE; i++) {
        if (i >= HEADER_GPA + RESPONSE_ID_AT &&
            i < HEADER_GPA + RESPONSE_ID_AT + 8) {
            continue;
        }
        if (g->read_count[i] > 1) {
            fail_msg("guest byte 0x%llx read %u times", (unsigned long long)i,
                     g->read_count[i]);
        }
    }
}

static void assert_runs(struct guest *g, const struct run *expected,
                        size_t n)
{
    size_t i;

    for (i = 0; i < g->nr_runs && i < n; i++) {
        if (g->runs[i].pfn != expected[i].pfn ||
            g->runs[i].nr_frames != expected[i].nr_frames) {
            fail_msg("run %zu is (0x%llx, 0x%llx), expected (0x%llx, 0x%llx)",
                     i, (unsigned long long)g->runs[i].pfn,
                     (unsigned long long)g->runs[i].nr_frames,
                     (unsigned long long)expected[i].pfn,
                     (unsigned long long)expected[i].nr_frames);
        }
    }
    assert_int_equal(g->nr_runs, n);
}

static void reset_counts(struct guest *g)
{
    memset(g->read_count, 0, TRACKED_SIZE);
    g->nr_reads = 0;
    g->bytes_read = 0;
    g->max_read_len = 0;
    g->nr_runs = 0;
}

/* Write, read, walk: all must succeed, with exactly these runs. */
static void assert_walk(struct guest *g, const struct run *expected, size_t n)
{
    reset_counts(g);
    write_guest(g);
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(walk(g), PVFREE_OK);
    assert_int_equal(g->diag.error, PVFREE_OK);
    assert_runs(g, expected, n);
    assert_read_once(g);
}

static void assert_diag(struct guest *g, enum pvfree_error error,
                        const char *field, uint64_t value, uint64_t index)
{
    char text[160];

    pvfree_diag_format(&g->diag, text, sizeof(text));
    if (g->diag.error != error) {
        fail_msg("got %s (%s), expected %s", pvfree_error_name(g->diag.error),
                 text, pvfree_error_name(error));
    }
    if (field) {
        assert_int_not_equal(g->diag.field, PVFREE_FIELD_NONE);
        assert_string_equal(pvfree_field_name(g->diag.field), field);
    }
    assert_int_equal(g->diag.value, value);
    assert_int_equal(g->diag.index, index);
    assert_false(g->read_outside);
}

/* Write, then expect read_response to fail like this. */
static void assert_rejected(struct guest *g, enum pvfree_error error,
                            const char *field, uint64_t value, uint64_t index)
{
    write_guest(g);
    assert_int_equal(read_response(g), error);
    assert_diag(g, error, field, value, index);
}

static void assert_formats(struct guest *g, const char *text)
{
    char buf[160];
    int len = pvfree_diag_format(&g->diag, buf, sizeof(buf));

    assert_string_equal(buf, text);
    assert_int_equal(len, strlen(text));
}

/* ---- valid snapshots ---- */

static const struct run mixed_runs[] = {
    { 0x10, 0x10 },         /* bits from 0: clipped to RAM start */
    { 0x100, 1 },
    { 0x3f00, 0x200 },      /* across abutting ranges A and B: one run */
    { 0x7f00, 0x100 },      /* clipped at the hole ... */
    { 0x8800, 0x100 },      /* ... and again after it */
    { 0x9ffe, 2 },          /* the last frames of RAM */
};

static void set_mixed_bits(struct guest *g)
{
    gw_set_bits(g->bitmap, 0, 0x20);
    gw_set_bits(g->bitmap, 0x100, 1);
    gw_set_bits(g->bitmap, 0x3f00, 0x200);
    gw_set_bits(g->bitmap, 0x7f00, 0xa00);
    gw_set_bits(g->bitmap, 0x9ffe, 2);
}

static void test_inline_snapshot(void **state)
{
    struct guest *g = *state;

    set_mixed_bits(g);
    assert_walk(g, mixed_runs, 6);
    assert_int_equal(g->out.request_id, REQUEST);
    assert_int_equal(g->out.covered_frames, GUEST_FRAMES);
    assert_int_equal(g->out.free_frames, 0x20 + 1 + 0x200 + 0xa00 + 2);
    assert_int_equal(g->out.snapshot_us, 1234);
    assert_int_equal(g->out.max_lock_hold_us, 56);
    assert_int_equal(g->out.guest_features, PVFREE_GF_STATS);
}

static void test_table_snapshot(void **state)
{
    struct guest *g = *state;

    set_mixed_bits(g);
    g->resp.table = table_frame;
    g->resp.nr_table = 1;
    assert_walk(g, mixed_runs, 6);
    assert_int_equal(g->out.table_extents, 1);
}

static void test_bigger_scratch(void **state)
{
    struct guest *g = *state;

    set_mixed_bits(g);
    g->reader.scratch_size = 4 * FRAME;
    assert_walk(g, mixed_runs, 6);
}

/*
 * base_pfn 0x1000: bitmap byte 2048 (a table-mode chunk boundary) is frame
 * 0x5000, byte 4096 (an inline chunk and an extent boundary) is 0x9000.
 */
static const struct run boundary_runs[] = {
    { 0x1000, 1 },
    { 0x4ff0, 0x20 },
    { 0x8fff, 2 },
    { 0x9fff, 1 },
};

static void set_boundary_bits(struct guest *g)
{
    g->resp.base_pfn = 0x1000;
    g->resp.nr_frames = GUEST_FRAMES - 0x1000;
    g->resp.bitmap_len = (GUEST_FRAMES - 0x1000) / 8;
    gw_set_bits(g->bitmap, 0, 1);
    gw_set_bits(g->bitmap, 0x3ff0, 0x20);
    gw_set_bits(g->bitmap, 0x7fff, 2);
    gw_set_bits(g->bitmap, 0x8fff, 1);
}

static void test_runs_across_chunks_inline(void **state)
{
    struct guest *g = *state;

    set_boundary_bits(g);
    assert_walk(g, boundary_runs, 4);
}

static void test_runs_across_chunks_table(void **state)
{
    static const struct gw_extent reversed[] = { { 0x30, 1 }, { 0x20, 1 } };
    struct guest *g = *state;

    set_boundary_bits(g);
    g->resp.data = reversed;    /* storage order is extent order */
    g->resp.table = table_frame;
    g->resp.nr_table = 1;
    assert_walk(g, boundary_runs, 4);
}

/* 300 one-frame extents: a two-frame table, read in several chunks. */
static struct gw_extent many_extents[300];

static void use_many_extents(struct guest *g)
{
    static const struct gw_extent two_frame_table[] = {
        { TABLE_PFN, 1 }, { TABLE_PFN + 1, 1 },
    };
    size_t i;

    for (i = 0; i < 300; i++) {
        many_extents[i].pfn = 0x100 + i;
        many_extents[i].nr_frames = 1;
    }
    g->resp.data = many_extents;
    g->resp.nr_data = 300;
    g->resp.table = two_frame_table;
    g->resp.nr_table = 2;
}

static void test_long_table(void **state)
{
    struct guest *g = *state;

    set_mixed_bits(g);
    use_many_extents(g);
    assert_walk(g, mixed_runs, 6);
    /* 384-entry chunks: one chunk crosses from one table frame to the next */
    g->reader.scratch_size = 3 * FRAME;
    assert_walk(g, mixed_runs, 6);
}

static void test_long_table_unused_entry_checked(void **state)
{
    struct guest *g = *state;

    use_many_extents(g);
    many_extents[299].pfn = 0x8100;     /* in the hole, never needed */
    write_guest(g);
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(walk(g), PVFREE_ERR_EXTENT);
    assert_diag(g, PVFREE_ERR_EXTENT, "table[n].pfn", 0x8100, 299);
    assert_formats(g, "table[299].pfn=0x8100 (frames 0x1) is outside guest "
                   "RAM");
}

static void test_clipped_at_coverage_end(void **state)
{
    static const struct run expected[] = { { 0x9f00, 0xf3 } };
    struct guest *g = *state;

    g->resp.nr_frames = 0x9ff3;
    g->resp.bitmap_len = 0x1400;
    gw_set_bits(g->bitmap, 0x9f00, 0x100);   /* past nr_frames too */
    assert_walk(g, expected, 1);
}

static void test_unaligned_base(void **state)
{
    static const struct run expected[] = { { 0x1003, 0x100 }, { 0x3fff, 2 } };
    struct guest *g = *state;

    g->resp.base_pfn = 0x1003;
    g->resp.nr_frames = 0x3000;
    g->resp.bitmap_len = 0x3000 / 8;
    gw_set_bits(g->bitmap, 0, 0x100);
    gw_set_bits(g->bitmap, 0x3fff - 0x1003, 2);
    assert_walk(g, expected, 2);
}

static void test_empty_bitmap(void **state)
{
    struct guest *g = *state;

    assert_walk(g, NULL, 0);
}


static void test_all_free(void **state)
{
    static const struct run expected[] = {
        { 0x10, 0x7ff0 },
        { 0x8800, 0x1800 },
    };
    struct guest *g = *state;

    memset(g->bitmap, 0xff, sizeof(g->bitmap));
    assert_walk(g, expected, 2);
}

/* A bitmap reaching past RAM is read only as far as RAM goes. */
static void test_nr_frames_clipped(void **state)
{
    static const struct gw_extent big[] = { { 0x100, 0x20 } };
    static const struct run expected[] = { { 0x9ff0, 0x10 } };
    struct guest *g = *state;

    g->resp.data = big;             /* room for 0x100000 frames */
    g->resp.nr_data = 1;
    g->resp.nr_frames = 0x100000;
    gw_set_bits(g->bitmap, 0x9ff0, 0x10);
    assert_walk(g, expected, 1);
    assert_int_equal(g->out.covered_frames, GUEST_FRAMES);
    /*
     * The bitmap bytes of frames 0x10-0x7fff and 0x8800-0x9fff and no
     * more: two chunks, each re-checked, then the final re-check.
     */
    assert_int_equal(g->bytes_read, 8 + FRAME + (0x1000 - 2) +
                     (0x1400 - 0x1100) + 3 * 8);
}

/* A huge nr_frames needs storage no guest RAM can hold: nothing is read. */
static void test_huge_nr_frames(void **state)
{
    struct guest *g = *state;

    g->resp.nr_frames = UINT64_C(1) << 52;
    assert_rejected(g, PVFREE_ERR_STORAGE, "storage", 2, 0);
    assert_int_equal(g->diag.expected, UINT64_C(1) << 49);
    assert_int_equal(g->bytes_read, 8 + FRAME);
}

/* An extent may run from one RAM range into one that abuts it. */
/* Maximal runs of frames that are RAM and marked free, bit by bit. */
static size_t expected_runs(const uint8_t *bitmap, uint64_t base_pfn,
                            uint64_t nr_frames, struct run *runs)
{
    size_t n = 0;
    uint64_t i;

    for (i = 0; i < nr_frames; i++) {
        uint64_t pfn = base_pfn + i;

        if (!frame_is_ram(pfn) || !((bitmap[i / 8] >> (i % 8)) & 1)) {
            continue;
        }
        if (n > 0 && runs[n - 1].pfn + runs[n - 1].nr_frames == pfn) {
            runs[n - 1].nr_frames++;
        } else {
            assert_true(n < MAX_RUNS);
            runs[n].pfn = pfn;
            runs[n].nr_frames = 1;
            n++;
        }
    }
    return n;
}

/* Pseudo-random bitmaps, 25%, 50% and 75% free, against a bit-by-bit walk. */
static void test_random_bitmaps(void **state)
{
    static struct run expected[MAX_RUNS];
    struct guest *g = *state;
    uint64_t x = 0x9e3779b97f4a7c15u;
    size_t n;
    size_t i;
    unsigned k;

    for (k = 0; k < 6; k++) {
        for (i = 0; i < BITMAP_BYTES; i++) {
            uint8_t a;
            uint8_t b;

            x = x * 6364136223846793005u + 1442695040888963407u;
            a = (uint8_t)(x >> 56);
            b = (uint8_t)(x >> 40);
            g->bitmap[i] = k % 3 == 0 ? a : k % 3 == 1 ? a & b : a | b;
        }
        /* inline with base 0, then a table with an unaligned base */
        g->resp.base_pfn = k % 2 ? 0x5 : 0;
        g->resp.nr_frames = GUEST_FRAMES - g->resp.base_pfn;
        g->resp.table = k % 2 ? table_frame : NULL;
        g->resp.nr_table = k % 2 ? 1 : 0;
        n = expected_runs(g->bitmap, g->resp.base_pfn, g->resp.nr_frames,
                          expected);
        assert_true(n > 1000);
        assert_walk(g, expected, n);
    }
}

static void test_extent_across_abutting_ranges(void **state)
{
    static const struct gw_extent across[] = { { 0x3fff, 2 } };
    static const struct run expected[] = { { 0x4000, 8 } };
    struct guest *g = *state;

    g->resp.data = across;
    g->resp.nr_data = 1;
    gw_set_bits(g->bitmap, 0x4000, 8);
    assert_walk(g, expected, 1);
}

static void test_zero_fill_and_poison_accepted(void **state)
{
    struct guest *g = *state;

    g->reader.host_features = PVFREE_HF_ZERO_FILL | PVFREE_HF_POISON_FILL;
    g->resp.content = PVFREE_CONTENT_ZERO;
    assert_walk(g, NULL, 0);
    g->resp.content = PVFREE_CONTENT_POISON;
    g->resp.poison = 0xaa;
    write_guest(g);
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(g->out.content, PVFREE_CONTENT_POISON);
    assert_int_equal(g->out.poison, 0xaa);
}

/* ---- malformed headers ---- */

static void test_bad_identity(void **state)
{
    struct guest *g = *state;

    write_guest(g);
    gw_poke32(&g->img, HEADER_GPA, offsetof(struct pvfree_header, magic),
              0x12345678);
    assert_int_equal(read_response(g), PVFREE_ERR_MAGIC);
    assert_diag(g, PVFREE_ERR_MAGIC, "magic", 0x12345678, 0);
    assert_formats(g, "magic=0x12345678 is not 0x52465650");

    write_guest(g);
    gw_poke16(&g->img, HEADER_GPA, offsetof(struct pvfree_header, version), 2);
    assert_int_equal(read_response(g), PVFREE_ERR_VERSION);
    assert_diag(g, PVFREE_ERR_VERSION, "version", 2, 0);
    assert_formats(g, "version=2 is not the supported 1");

    write_guest(g);
    gw_poke16(&g->img, HEADER_GPA, offsetof(struct pvfree_header, header_size),
              0x800);
    assert_int_equal(read_response(g), PVFREE_ERR_HEADER_SIZE);
    assert_diag(g, PVFREE_ERR_HEADER_SIZE, "header_size", 0x800, 0);
}

static void test_response_id(void **state)
{
    static const uint64_t ids[] = { 0, REQUEST - 1, REQUEST + 1, UINT64_MAX };
    struct guest *g = *state;
    size_t i;

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        g->resp.request_id = ids[i];
        assert_rejected(g, PVFREE_ERR_NOT_ANSWERED, "response_id", ids[i], 0);
        assert_int_equal(g->diag.expected, REQUEST);
    }
    g->resp.request_id = 4;
    write_guest(g);
    read_response(g);
    assert_formats(g, "response_id=0x4 does not answer request 0x5");
}

static void test_status(void **state)
{
    static const uint32_t statuses[] = {
        PVFREE_STATUS_NONE, PVFREE_STATUS_BUSY, PVFREE_STATUS_NO_SPACE,
        PVFREE_STATUS_UNSUPPORTED, PVFREE_STATUS_ABORTED, 6, UINT32_MAX,
    };
    struct guest *g = *state;
    size_t i;

    for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        g->resp.status = statuses[i];
        assert_rejected(g, PVFREE_ERR_STATUS, "status", statuses[i], 0);
    }
    g->resp.status = PVFREE_STATUS_NO_SPACE;
    write_guest(g);
    read_response(g);
    assert_formats(g, "status=3 (NO_SPACE) is not OK");
}

static void test_content(void **state)
{
    static const uint8_t unknown[] = { 0, 4, 0xff };
    struct guest *g = *state;
    size_t i;

    g->resp.content = PVFREE_CONTENT_ZERO;
    assert_rejected(g, PVFREE_ERR_CONTENT, "content", PVFREE_CONTENT_ZERO, 0);
    assert_formats(g, "content=2 (ZERO) needs host feature ZERO_FILL, which "
                   "this host lacks");
    g->reader.host_features = PVFREE_HF_POISON_FILL;
    assert_rejected(g, PVFREE_ERR_CONTENT, "content", PVFREE_CONTENT_ZERO, 0);

    g->resp.content = PVFREE_CONTENT_POISON;
    g->reader.host_features = PVFREE_HF_ZERO_FILL;
    assert_rejected(g, PVFREE_ERR_CONTENT, "content", PVFREE_CONTENT_POISON,
                    0);

    g->reader.host_features = PVFREE_HF_ZERO_FILL | PVFREE_HF_POISON_FILL;
    for (i = 0; i < sizeof(unknown); i++) {
        g->resp.content = unknown[i];
        assert_rejected(g, PVFREE_ERR_CONTENT, "content", unknown[i], 0);
    }
    assert_formats(g, "content=255 is not a known content");
}

static void test_range(void **state)
{
    struct guest *g = *state;

    g->resp.base_pfn = UINT64_MAX - 5;
    g->resp.nr_frames = 10;
    assert_rejected(g, PVFREE_ERR_RANGE, "base_pfn", UINT64_MAX - 5, 0);
    assert_formats(g, "base_pfn=0xfffffffffffffffa + nr_frames=0xa "
                   "overflows");

    g->resp.base_pfn = 0;
    g->resp.base_pfn = 0x8000;      /* in the hole */
    g->resp.nr_frames = 0x800;
    assert_rejected(g, PVFREE_ERR_RANGE, "base_pfn", 0x8000, 0);
    assert_formats(g, "base_pfn=0x8000 (frames 0x800) does not cover any "
                   "guest RAM");
    g->resp.base_pfn = 0xa000;      /* past RAM */
    g->resp.nr_frames = 0x100;
    assert_rejected(g, PVFREE_ERR_RANGE, "base_pfn", 0xa000, 0);
    g->resp.base_pfn = 0;           /* before RAM */
    g->resp.nr_frames = 0x10;
    assert_rejected(g, PVFREE_ERR_RANGE, "base_pfn", 0, 0);

    g->resp.nr_frames = 0;
    assert_rejected(g, PVFREE_ERR_RANGE, "nr_frames", 0, 0);
    assert_formats(g, "nr_frames=0: the bitmap is empty");

    g->resp.nr_frames = (UINT64_C(1) << 52) + 1;
    assert_rejected(g, PVFREE_ERR_RANGE, "nr_frames",
                    (UINT64_C(1) << 52) + 1, 0);

    g->resp.nr_frames = UINT64_MAX;
    assert_rejected(g, PVFREE_ERR_RANGE, "nr_frames", UINT64_MAX, 0);
}

static void test_extent_counts(void **state)
{
    static struct gw_extent too_many[PVFREE_INLINE_EXTENTS + 1];
    struct guest *g = *state;
    size_t i;

    g->resp.nr_data = 0;
    assert_rejected(g, PVFREE_ERR_EXTENTS, "nr_extents", 0, 0);
    assert_formats(g, "nr_extents=0 cannot store a bitmap of "
                   "nr_frames=0xa000");

    g->resp.nr_data = 2;
    g->reader.max_extents = 1;
    assert_rejected(g, PVFREE_ERR_EXTENTS, "nr_extents", 2, 0);
    assert_formats(g, "nr_extents=2 exceeds the limit 1");
    g->reader.max_extents = 0;

    for (i = 0; i < PVFREE_INLINE_EXTENTS + 1; i++) {
        too_many[i].pfn = 0x100 + i;
        too_many[i].nr_frames = 1;
    }
    g->resp.data = too_many;
    g->resp.nr_data = PVFREE_INLINE_EXTENTS + 1;
    assert_rejected(g, PVFREE_ERR_EXTENTS, "nr_extents",
                    PVFREE_INLINE_EXTENTS + 1, 0);
    assert_int_equal(g->diag.expected, PVFREE_INLINE_EXTENTS);
}

static void test_nr_extents_over_max(void **state)
{
    struct guest *g = *state;

    g->resp.table = table_frame;
    g->resp.nr_table = 1;
    write_guest(g);
    gw_poke32(&g->img, HEADER_GPA, offsetof(struct pvfree_header, nr_extents),
              PVFREE_MAX_EXTENTS + 1);
    assert_int_equal(read_response(g), PVFREE_ERR_EXTENTS);
    assert_diag(g, PVFREE_ERR_EXTENTS, "nr_extents", PVFREE_MAX_EXTENTS + 1,
                0);

    g->reader.max_extents = UINT32_MAX;     /* capped at the ABI's limit */
    assert_int_equal(read_response(g), PVFREE_ERR_EXTENTS);
    assert_int_equal(g->diag.expected, PVFREE_MAX_EXTENTS);
}

static void test_table_extents(void **state)
{
    struct guest *g = *state;

    g->resp.table = table_frame;
    g->resp.nr_table = 1;
    write_guest(g);
    gw_poke32(&g->img, HEADER_GPA,
              offsetof(struct pvfree_header, table_extents),
              PVFREE_INLINE_EXTENTS + 1);
    assert_int_equal(read_response(g), PVFREE_ERR_EXTENTS);
    assert_diag(g, PVFREE_ERR_EXTENTS, "table_extents",
                PVFREE_INLINE_EXTENTS + 1, 0);
    assert_formats(g, "table_extents=241 exceeds the limit 240");

    /* 257 entries do not fit one frame */
    write_guest(g);
    gw_poke32(&g->img, HEADER_GPA, offsetof(struct pvfree_header, nr_extents),
              257);
    assert_int_equal(read_response(g), PVFREE_ERR_EXTENTS);
    assert_diag(g, PVFREE_ERR_EXTENTS, "table_bytes", FRAME, 0);
    assert_int_equal(g->diag.expected, 257 * 16);
    assert_formats(g, "the table extents hold 0x1000 bytes, the extent table "
                   "needs 0x1010");
}

static void test_bad_inline_extents(void **state)
{
    static const struct {
        struct gw_extent bad;
        const char *field;
        uint64_t value;
        const char *text;
    } cases[] = {
        { { 0x30, 0 }, "extent[n].nr_frames", 0,
          "extent[1].nr_frames=0: an extent is never empty" },
        { { UINT64_MAX - 1, 4 }, "extent[n].nr_frames", 4,
          "extent[1].nr_frames=0x4 wraps around" },
        { { 0x20000, 1 }, "extent[n].pfn", 0x20000,
          "extent[1].pfn=0x20000 (frames 0x1) is outside guest RAM" },
        { { 0x8100, 1 }, "extent[n].pfn", 0x8100, NULL },   /* hole */
        { { 0x7fff, 2 }, "extent[n].pfn", 0x7fff, NULL },   /* into hole */
        { { 0x87ff, 2 }, "extent[n].pfn", 0x87ff, NULL },   /* out of it */
        { { 0x0, 1 }, "extent[n].pfn", 0, NULL },           /* below RAM */
        { { 0x9fff, 2 }, "extent[n].pfn", 0x9fff, NULL },   /* past RAM */
        { { 0x10, 0x10000 }, "extent[n].pfn", 0x10, NULL }, /* over all */
    };
    struct guest *g = *state;
    struct gw_extent extents[2];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        extents[0] = two_extents[0];
        extents[1] = cases[i].bad;
        g->resp.data = extents;
        assert_rejected(g, PVFREE_ERR_EXTENT, cases[i].field, cases[i].value,
                        1);
        if (cases[i].text) {
            assert_formats(g, cases[i].text);
        }
    }
}

static void test_bad_table_extent(void **state)
{
    static const struct gw_extent in_hole[] = { { 0x8000, 1 } };
    struct guest *g = *state;

    g->resp.table = in_hole;
    g->resp.nr_table = 1;
    assert_rejected(g, PVFREE_ERR_EXTENT, "extent[n].pfn", 0x8000, 0);
}

static void test_bad_table_entries(void **state)
{
    static const struct {
        struct gw_extent bad;
        const char *field;
        uint64_t value;
    } cases[] = {
        { { 0x30, 0 }, "table[n].nr_frames", 0 },
        { { UINT64_MAX, 1 }, "table[n].nr_frames", 1 },
        { { 0x8400, 1 }, "table[n].pfn", 0x8400 },
        { { 0x9fff, 3 }, "table[n].pfn", 0x9fff },
    };
    struct guest *g = *state;
    struct gw_extent extents[2];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        extents[0] = two_extents[0];
        extents[1] = cases[i].bad;
        g->resp.data = extents;
        g->resp.table = table_frame;
        g->resp.nr_table = 1;
        write_guest(g);
        assert_int_equal(read_response(g), PVFREE_OK);
        assert_int_equal(walk(g), PVFREE_ERR_EXTENT);
        assert_diag(g, PVFREE_ERR_EXTENT, cases[i].field, cases[i].value, 1);
    }
}

static void test_storage_too_small(void **state)
{
    struct guest *g = *state;

    g->resp.nr_data = 1;    /* 4096 bytes for a 5120-byte bitmap */
    assert_rejected(g, PVFREE_ERR_STORAGE, "storage", 1, 0);
    assert_int_equal(g->diag.expected, BITMAP_BYTES);
    assert_formats(g, "storage of 0x1 frames is smaller than the 0x1400-byte "
                   "bitmap");

    /*
     * With a table it is found during the walk, after the runs before it;
     * the run still open when the storage ends is dropped.
     */
    gw_set_bits(g->bitmap, 0x10, 1);
    gw_set_bits(g->bitmap, 0x20, 1);
    gw_set_bits(g->bitmap, 0x30, 1);
    g->resp.table = table_frame;
    g->resp.nr_table = 1;
    write_guest(g);
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(walk(g), PVFREE_ERR_STORAGE);
    assert_diag(g, PVFREE_ERR_STORAGE, "storage", 1, 0);
    assert_int_equal(g->nr_runs, 1);
}

/* Only the bytes past RAM's last frame would be missing: still too small. */
static void test_storage_end_in_hole(void **state)
{
    struct guest *g = *state;

    g->resp.nr_frames = 0x8400;      /* ends in the hole */
    g->resp.nr_data = 1;             /* 4096 of 0x1080 bytes */
    g->resp.table = table_frame;
    g->resp.nr_table = 1;
    write_guest(g);
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(walk(g), PVFREE_ERR_STORAGE);
    assert_int_equal(g->diag.expected, 0x8400 / 8);
}

/* ---- the guest or the host misbehaving during the walk ---- */

static void test_changed_during_walk(void **state)
{
    struct guest *g = *state;

    set_mixed_bits(g);
    write_guest(g);
    g->bump_id_after = 3;   /* response_id, header, then the first chunk */
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(walk(g), PVFREE_ERR_CHANGED);
    assert_diag(g, PVFREE_ERR_CHANGED, "response_id", REQUEST + 1, 0);
    assert_runs(g, NULL, 0);    /* the chunk's bits are discarded */
    assert_formats(g, "response_id changed from 0x5 to 0x6 while reading");

    /*
     * The first chunk is confirmed, the second not: only runs of the first
     * that were complete before the second chunk are reported.
     */
    g->nr_runs = 0;
    g->nr_reads = 0;
    write_guest(g);
    g->bump_id_after = 4;
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(walk(g), PVFREE_ERR_CHANGED);
    assert_runs(g, mixed_runs, 2);
}

static void test_changed_during_header_copy(void **state)
{
    struct guest *g = *state;

    write_guest(g);
    g->bump_id_after = 1;   /* between the first read and the copy */
    assert_int_equal(read_response(g), PVFREE_ERR_CHANGED);
    assert_diag(g, PVFREE_ERR_CHANGED, "response_id", REQUEST + 1, 0);
    assert_int_equal(g->diag.expected, REQUEST);
}

static void test_callback_stops(void **state)
{
    struct guest *g = *state;

    set_mixed_bits(g);
    write_guest(g);
    g->stop_after = 2;
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(walk(g), PVFREE_ERR_CALLBACK);
    assert_diag(g, PVFREE_ERR_CALLBACK, NULL, 0x100, 0);
    assert_runs(g, mixed_runs, 2);
    assert_formats(g, "run callback stopped the walk at pfn 0x100 (frames "
                   "0x1)");
}

static void test_read_fails(void **state)
{
    struct guest *g = *state;
    unsigned n;

    write_guest(g);
    g->fail_read = 1;
    assert_int_equal(read_response(g), PVFREE_ERR_READ);
    assert_diag(g, PVFREE_ERR_READ, "response_id", HEADER_GPA + 0x30, 0);

    for (n = 2; n <= 3; n++) {
        g->nr_reads = 0;
        g->fail_read = n;
        if (n == 2) {
            assert_int_equal(read_response(g), PVFREE_ERR_READ);
            assert_diag(g, PVFREE_ERR_READ, "header", HEADER_GPA, 0);
            assert_formats(g, "cannot read header: 0x1000 bytes at gpa "
                           "0x10000");
        } else {
            assert_int_equal(read_response(g), PVFREE_OK);
            assert_int_equal(walk(g), PVFREE_ERR_READ);
            /* bitmap byte 2 holds the first RAM frame, 0x10 */
            assert_diag(g, PVFREE_ERR_READ, "bitmap", 0x20 * FRAME + 2, 0);
        }
    }
}

static void test_bad_header_gpa(void **state)
{
    static const uint64_t gpas[] = {
        HEADER_GPA + 8, 0, 0x8000 * FRAME, UINT64_MAX & ~(uint64_t)0xfff,
    };
    struct guest *g = *state;
    size_t i;

    write_guest(g);
    for (i = 0; i < sizeof(gpas) / sizeof(gpas[0]); i++) {
        assert_int_equal(pvfree_read_response(&g->reader, gpas[i], REQUEST,
                                              &g->out, &g->diag),
                         PVFREE_ERR_READ);
        assert_diag(g, PVFREE_ERR_READ, "header_gpa", gpas[i], 0);
    }
    assert_formats(g, "header_gpa=0xfffffffffffff000 is not a frame-aligned "
                   "address in guest RAM");
}

static void test_bad_config(void **state)
{
    static const struct pvfree_ram_range overlapping[] = {
        { 0x10, 0x100 }, { 0x100, 0x100 },
    };
    static const struct pvfree_ram_range too_high[] = {
        { UINT64_C(1) << 52, 1 },
    };
    struct guest *g = *state;
    struct pvfree_reader saved = g->reader;

    write_guest(g);
    g->reader.scratch_size = 100;
    assert_int_equal(read_response(g), PVFREE_ERR_CONFIG);
    assert_diag(g, PVFREE_ERR_CONFIG, "scratch_size", 100, 0);
    assert_formats(g, "invalid reader configuration: scratch_size=0x64");

    g->reader = saved;
    g->reader.ram = overlapping;
    g->reader.nr_ram = 2;
    assert_int_equal(read_response(g), PVFREE_ERR_CONFIG);
    assert_diag(g, PVFREE_ERR_CONFIG, "ram[n].pfn", 0x100, 1);

    g->reader.ram = too_high;
    g->reader.nr_ram = 1;
    assert_int_equal(read_response(g), PVFREE_ERR_CONFIG);

    g->reader = saved;
    assert_int_equal(pvfree_read_response(&g->reader, HEADER_GPA, 0, &g->out,
                                          &g->diag),
                     PVFREE_ERR_CONFIG);
    assert_int_equal(g->nr_reads, 0);
}

static void test_bad_config_pointers(void **state)
{
    struct guest *g = *state;
    struct pvfree_reader saved = g->reader;

    write_guest(g);
    assert_int_equal(pvfree_read_response(NULL, HEADER_GPA, REQUEST, &g->out,
                                          &g->diag), PVFREE_ERR_CONFIG);
    assert_diag(g, PVFREE_ERR_CONFIG, "reader", 0, 0);
    g->reader.read = NULL;
    assert_int_equal(read_response(g), PVFREE_ERR_CONFIG);
    assert_diag(g, PVFREE_ERR_CONFIG, "read", 0, 0);
    g->reader = saved;
    g->reader.scratch = NULL;
    assert_int_equal(read_response(g), PVFREE_ERR_CONFIG);
    assert_diag(g, PVFREE_ERR_CONFIG, "scratch", 0, 0);
    g->reader = saved;
    g->reader.nr_ram = 0;
    assert_int_equal(read_response(g), PVFREE_ERR_CONFIG);
    assert_diag(g, PVFREE_ERR_CONFIG, "nr_ram", 0, 0);
    g->reader = saved;
    assert_int_equal(pvfree_read_response(&g->reader, HEADER_GPA, REQUEST,
                                          NULL, &g->diag), PVFREE_ERR_CONFIG);
    assert_diag(g, PVFREE_ERR_CONFIG, "resp", 0, 0);

    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(pvfree_for_each_free_run(&g->reader, &g->out, NULL, g,
                                              &g->diag), PVFREE_ERR_CONFIG);
    assert_diag(g, PVFREE_ERR_CONFIG, "fn", 0, 0);
    assert_int_equal(pvfree_for_each_free_run(&g->reader, NULL, record_run,
                                              g, &g->diag),
                     PVFREE_ERR_CONFIG);
    assert_diag(g, PVFREE_ERR_CONFIG, "resp", 0, 0);
    g->reader.scratch_size = 0;
    assert_int_equal(walk(g), PVFREE_ERR_CONFIG);
    assert_int_equal(g->nr_runs, 0);
}

/* Reads that fail in the table and in the re-checks. */
static void test_read_fails_later(void **state)
{
    struct guest *g = *state;

    set_mixed_bits(g);
    write_guest(g);
    g->fail_read = 4;       /* the re-check after the first chunk */
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(walk(g), PVFREE_ERR_READ);
    assert_diag(g, PVFREE_ERR_READ, "response_id", HEADER_GPA + 0x30, 0);
    assert_int_equal(g->nr_runs, 0);

    g->resp.table = table_frame;
    g->resp.nr_table = 1;
    write_guest(g);
    g->nr_reads = 0;
    g->fail_read = 3;       /* the extent table */
    assert_int_equal(read_response(g), PVFREE_OK);
    assert_int_equal(walk(g), PVFREE_ERR_READ);
    assert_diag(g, PVFREE_ERR_READ, "extent table", TABLE_PFN * FRAME, 0);
    assert_formats(g, "cannot read extent table: 0x20 bytes at gpa 0x40000");
}

static void test_error_names(void **state)
{
    const char *names[PVFREE_ERR_CALLBACK + 1];
    struct pvfree_diag diag;
    char text[160];
    int i;
    int j;

    (void)state;
    for (i = PVFREE_OK; i <= PVFREE_ERR_CALLBACK; i++) {
        names[i] = pvfree_error_name((enum pvfree_error)i);
        assert_non_null(names[i]);
        assert_memory_equal(names[i], "PVFREE_", 7);
        for (j = 0; j < i; j++) {
            assert_string_not_equal(names[i], names[j]);
        }
    }
    assert_string_equal(names[PVFREE_OK], "PVFREE_OK");
    assert_string_equal(names[PVFREE_ERR_STORAGE], "PVFREE_ERR_STORAGE");
    assert_string_equal(pvfree_error_name((enum pvfree_error)99),
                        "PVFREE_ERR_UNKNOWN");

    memset(&diag, 0, sizeof(diag));
    assert_int_equal(pvfree_diag_format(&diag, text, sizeof(text)), 2);
    assert_string_equal(text, "ok");
    assert_int_equal(pvfree_diag_format(&diag, NULL, 0), 2);
    assert_int_equal(pvfree_diag_format(NULL, text, sizeof(text)),
                     strlen("no diagnostic"));
    /* truncated like snprintf */
    diag.error = PVFREE_ERR_STATUS;
    diag.value = PVFREE_STATUS_NONE;
    assert_int_equal(pvfree_diag_format(&diag, text, 8),
                     strlen("status=0 (NONE) is not OK"));
    assert_string_equal(text, "status=");
}

/* A guest lying in every field still never makes the reader leave RAM. */
static void test_null_diag(void **state)
{
    struct guest *g = *state;

    set_mixed_bits(g);
    write_guest(g);
    assert_int_equal(pvfree_read_response(&g->reader, HEADER_GPA, REQUEST,
                                          &g->out, NULL), PVFREE_OK);
    assert_int_equal(pvfree_for_each_free_run(&g->reader, &g->out,
                                              record_run, g, NULL),
                     PVFREE_OK);
    assert_runs(g, mixed_runs, 6);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_inline_snapshot),
        T(test_table_snapshot),
        T(test_bigger_scratch),
        T(test_runs_across_chunks_inline),
        T(test_runs_across_chunks_table),
        T(test_long_table),
        T(test_long_table_unused_entry_checked),
        T(test_clipped_at_coverage_end),
        T(test_unaligned_base),
        T(test_empty_bitmap),
        T(test_all_free),
        T(test_nr_frames_clipped),
        T(test_huge_nr_frames),
        T(test_random_bitmaps),
        T(test_extent_across_abutting_ranges),
        T(test_zero_fill_and_poison_accepted),
        T(test_bad_identity),
        T(test_response_id),
        T(test_status),
        T(test_content),
        T(test_range),
        T(test_extent_counts),
        T(test_nr_extents_over_max),
        T(test_table_extents),
        T(test_bad_inline_extents),
        T(test_bad_table_extent),
        T(test_bad_table_entries),
        T(test_storage_too_small),
        T(test_storage_end_in_hole),
        T(test_changed_during_walk),
        T(test_changed_during_header_copy),
        T(test_callback_stops),
        T(test_read_fails),
        T(test_bad_header_gpa),
        T(test_bad_config),
        T(test_bad_config_pointers),
        T(test_read_fails_later),
        T(test_error_names),
        T(test_null_diag),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the pvfree host-side protocol steps (pvfree-protocol.h)
 * and diagnostics (pvfree-diag.h): header accessors, the identity check,
 * request ids, publishing a request, seeing it answered, and the names
 * and texts of diagnostics.  The guest is an image of a few frames of
 * RAM, written by the tests' guest stand-in; every read and write of the
 * channel is logged so that the order of the steps can be checked.
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

#define FRAME           PVFREE_FRAME_SIZE
#define GUEST_FRAMES    4u
#define HEADER_GPA      ((uint64_t)2 * FRAME)
#define MAX_OPS         8

enum op_kind { OP_READ, OP_WRITE, OP_BARRIER };

struct op {
    enum op_kind kind;
    uint64_t gpa;
    size_t len;
};

struct guest {
    struct gw_image img;
    struct pvfree_channel chan;
    struct op ops[MAX_OPS];
    unsigned nr_ops;
    unsigned fail_op;           /* this read or write fails; 0: none */
    struct pvfree_diag diag;
};

static bool log_op(struct guest *g, enum op_kind kind, uint64_t gpa,
                   size_t len)
{
    if (g->nr_ops < MAX_OPS) {
        g->ops[g->nr_ops].kind = kind;
        g->ops[g->nr_ops].gpa = gpa;
        g->ops[g->nr_ops].len = len;
    }
    g->nr_ops++;
    if (g->nr_ops == g->fail_op) {
        return false;
    }
    return len <= g->img.size && gpa <= g->img.size - len;
}

static int guest_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    struct guest *g = opaque;

    if (!log_op(g, OP_READ, gpa, len)) {
        return -1;
    }
    memcpy(buf, g->img.mem + gpa, len);
    return 0;
}

static int guest_write(void *opaque, uint64_t gpa, const void *buf,
                       size_t len)
{
    struct guest *g = opaque;

    if (!log_op(g, OP_WRITE, gpa, len)) {
        return -1;
    }
    memcpy(g->img.mem + gpa, buf, len);
    return 0;
}

static void guest_barrier(void *opaque)
{
    log_op(opaque, OP_BARRIER, 0, 0);
}

/* The guest registers: identification as the spec says, rest zero. */
static void register_header(struct guest *g)
{
    gw_poke32(&g->img, HEADER_GPA, offsetof(struct pvfree_header, magic),
              PVFREE_MAGIC);
    gw_poke16(&g->img, HEADER_GPA, offsetof(struct pvfree_header, version),
              PVFREE_VERSION);
    gw_poke16(&g->img, HEADER_GPA,
              offsetof(struct pvfree_header, header_size),
              PVFREE_HEADER_SIZE);
}

static int setup(void **state)
{
    struct guest *g = calloc(1, sizeof(*g));

    assert_non_null(g);
    g->img.size = (uint64_t)GUEST_FRAMES * FRAME;
    g->img.mem = calloc(1, g->img.size);
    assert_non_null(g->img.mem);
    g->chan = (struct pvfree_channel) {
        .read = guest_read, .write = guest_write, .wmb = guest_barrier,
        .opaque = g, .header_gpa = HEADER_GPA,
    };
    register_header(g);
    *state = g;
    return 0;
}

static int teardown(void **state)
{
    struct guest *g = *state;

    free(g->img.mem);
    free(g);
    return 0;
}

static uint8_t *header(struct guest *g)
{
    return g->img.mem + HEADER_GPA;
}

static void assert_formats(const struct pvfree_diag *diag, const char *text)
{
    char buf[160];
    int len = pvfree_diag_format(diag, buf, sizeof(buf));

    assert_string_equal(buf, text);
    assert_int_equal(len, strlen(text));
}

static void assert_diag(const struct pvfree_diag *diag,
                        enum pvfree_error error, enum pvfree_field field,
                        uint64_t value, uint64_t expected)
{
    assert_int_equal(diag->error, error);
    assert_int_equal(diag->field, field);
    assert_int_equal(diag->value, value);
    assert_int_equal(diag->expected, expected);
}

/* ---- accessors ---- */

static void test_le_loads_and_stores(void **state)
{
    uint8_t b[8];

    (void)state;
    pvfree_store_le64(b, UINT64_C(0x0807060504030201));
    assert_int_equal(b[0], 1);
    assert_int_equal(b[7], 8);
    assert_int_equal(pvfree_load_le64(b), UINT64_C(0x0807060504030201));
    assert_int_equal(pvfree_load_le32(b), 0x04030201);
    assert_int_equal(pvfree_load_le16(b), 0x0201);
    assert_int_equal(pvfree_load_le8(b), 1);
    pvfree_store_le32(b, 0xa1b2c3d4);
    assert_int_equal(b[0], 0xd4);
    assert_int_equal(b[3], 0xa1);
    pvfree_store_le16(b, 0xbeef);
    assert_int_equal(b[0], 0xef);
    assert_int_equal(b[1], 0xbe);
    pvfree_store_le8(b, 0x7f);
    assert_int_equal(b[0], 0x7f);
}

/* Each setter writes its field, little-endian, at the ABI offset only. */
#define CHECK_FIELD(field, bits, value)                                     \
    do {                                                                    \
        uint8_t h[PVFREE_HEADER_SIZE];                                      \
        uint8_t expected[PVFREE_HEADER_SIZE];                               \
                                                                            \
        memset(h, 0, sizeof(h));                                            \
        memset(expected, 0, sizeof(expected));                              \
        pvfree_hdr_set_##field(h, value);                                   \
        pvfree_store_le##bits(expected +                                    \
                              offsetof(struct pvfree_header, field), value); \
        assert_memory_equal(h, expected, sizeof(h));                        \
        assert_true(pvfree_hdr_##field(h) == (value));                      \
    } while (0)

static void test_header_accessors(void **state)
{
    (void)state;
    CHECK_FIELD(magic, 32, PVFREE_MAGIC);
    CHECK_FIELD(version, 16, 0x1234);
    CHECK_FIELD(header_size, 16, 0x1000);
    CHECK_FIELD(guest_features, 64, UINT64_C(0x8000000000000001));
    CHECK_FIELD(host_features, 64, UINT64_C(0x0102030405060708));
    CHECK_FIELD(request_id, 64, UINT64_C(0x1122334455667788));
    CHECK_FIELD(response_id, 64, UINT64_C(0x99aabbccddeeff00));
    CHECK_FIELD(status, 32, 0xdeadbeef);
    CHECK_FIELD(content, 8, 0xa5);
    CHECK_FIELD(poison, 8, 0x5a);
    CHECK_FIELD(base_pfn, 64, UINT64_C(0xfffffffffffff000));
    CHECK_FIELD(nr_frames, 64, UINT64_C(0x40000));
    CHECK_FIELD(nr_extents, 32, 65536);
    CHECK_FIELD(table_extents, 32, 240);
    CHECK_FIELD(free_frames, 64, UINT64_C(0x3ffff));
    CHECK_FIELD(snapshot_us, 64, UINT64_C(123456789));
    CHECK_FIELD(max_lock_hold_us, 32, 0xfedcba98);
}

/* The accessors read what the guest stand-in writes. */
static void test_accessors_read_a_response(void **state)
{
    struct guest *g = *state;
    static const struct gw_extent data[] = { { 1, 1 }, { 3, 1 } };
    struct gw_response resp = {
        .request_id = 7, .host_features = PVFREE_HF_ZERO_FILL,
        .status = PVFREE_STATUS_OK, .content = PVFREE_CONTENT_POISON,
        .poison = 0xcc, .base_pfn = 0x10, .nr_frames = 0x9000,
        .data = data, .nr_data = 2,
    };
    const uint8_t *h = header(g);

    gw_write_response(&g->img, HEADER_GPA, &resp);
    assert_int_equal(pvfree_hdr_magic(h), PVFREE_MAGIC);
    assert_int_equal(pvfree_hdr_version(h), PVFREE_VERSION);
    assert_int_equal(pvfree_hdr_header_size(h), PVFREE_HEADER_SIZE);
    assert_int_equal(pvfree_hdr_response_id(h), 7);
    assert_int_equal(pvfree_hdr_status(h), PVFREE_STATUS_OK);
    assert_int_equal(pvfree_hdr_content(h), PVFREE_CONTENT_POISON);
    assert_int_equal(pvfree_hdr_poison(h), 0xcc);
    assert_int_equal(pvfree_hdr_base_pfn(h), 0x10);
    assert_int_equal(pvfree_hdr_nr_frames(h), 0x9000);
    assert_int_equal(pvfree_hdr_nr_extents(h), 2);
    assert_int_equal(pvfree_hdr_table_extents(h), 0);
    assert_int_equal(pvfree_extent_pfn(pvfree_hdr_extent(h, 1)), 3);
    assert_int_equal(pvfree_extent_nr_frames(pvfree_hdr_extent(h, 1)), 1);
    assert_ptr_equal(pvfree_hdr_extent(h, 0),
                     h + offsetof(struct pvfree_header, extents));
}

/* ---- identity and registration ---- */

static void test_identity(void **state)
{
    struct guest *g = *state;
    struct pvfree_diag diag;
    uint8_t id[PVFREE_IDENTITY_SIZE];

    assert_int_equal(PVFREE_IDENTITY_SIZE, 8);
    memcpy(id, header(g), sizeof(id));
    memset(&diag, 0xff, sizeof(diag));
    assert_int_equal(pvfree_check_identity(id, &diag), PVFREE_OK);
    assert_int_equal(diag.error, PVFREE_OK);
    assert_int_equal(pvfree_check_identity(id, NULL), PVFREE_OK);

    pvfree_hdr_set_magic(id, 0x12345678);
    assert_int_equal(pvfree_check_identity(id, &diag), PVFREE_ERR_MAGIC);
    assert_diag(&diag, PVFREE_ERR_MAGIC, PVFREE_FIELD_MAGIC, 0x12345678,
                PVFREE_MAGIC);
    assert_formats(&diag, "magic=0x12345678 is not 0x52465650");
    pvfree_hdr_set_magic(id, PVFREE_MAGIC);

    pvfree_hdr_set_version(id, 0);
    assert_int_equal(pvfree_check_identity(id, &diag), PVFREE_ERR_VERSION);
    assert_diag(&diag, PVFREE_ERR_VERSION, PVFREE_FIELD_VERSION, 0, 1);
    pvfree_hdr_set_version(id, 2);
    assert_int_equal(pvfree_check_identity(id, &diag), PVFREE_ERR_VERSION);
    assert_formats(&diag, "version=2 is not the supported 1");
    pvfree_hdr_set_version(id, PVFREE_VERSION);

    pvfree_hdr_set_header_size(id, 0x2000);
    assert_int_equal(pvfree_check_identity(id, &diag),
                     PVFREE_ERR_HEADER_SIZE);
    assert_diag(&diag, PVFREE_ERR_HEADER_SIZE, PVFREE_FIELD_HEADER_SIZE,
                0x2000, PVFREE_HEADER_SIZE);
    assert_formats(&diag, "header_size=0x2000 is not 0x1000");
}

static void test_version_supported(void **state)
{
    (void)state;
    assert_false(pvfree_version_supported(0));
    assert_true(pvfree_version_supported(PVFREE_VERSION));
    assert_false(pvfree_version_supported(PVFREE_VERSION + 1));
    assert_false(pvfree_version_supported(UINT64_C(1) << 32 | 1));
}

static void test_registration(void **state)
{
    struct guest *g = *state;

    assert_int_equal(pvfree_check_registration(&g->chan, &g->diag),
                     PVFREE_OK);
    assert_int_equal(g->diag.error, PVFREE_OK);
    /* one read of the identification, nothing written */
    assert_int_equal(g->nr_ops, 1);
    assert_int_equal(g->ops[0].kind, OP_READ);
    assert_int_equal(g->ops[0].gpa, HEADER_GPA);
    assert_int_equal(g->ops[0].len, PVFREE_IDENTITY_SIZE);

    header(g)[0] ^= 1;
    assert_int_equal(pvfree_check_registration(&g->chan, &g->diag),
                     PVFREE_ERR_MAGIC);
    header(g)[0] ^= 1;

    g->nr_ops = 0;
    g->fail_op = 1;
    assert_int_equal(pvfree_check_registration(&g->chan, &g->diag),
                     PVFREE_ERR_READ);
    assert_diag(&g->diag, PVFREE_ERR_READ, PVFREE_FIELD_HEADER, HEADER_GPA,
                PVFREE_IDENTITY_SIZE);
    assert_formats(&g->diag, "cannot read header: 0x8 bytes at gpa 0x2000");

    g->chan.header_gpa = HEADER_GPA + 8;
    assert_int_equal(pvfree_check_registration(&g->chan, &g->diag),
                     PVFREE_ERR_READ);
    assert_diag(&g->diag, PVFREE_ERR_READ, PVFREE_FIELD_HEADER_GPA,
                HEADER_GPA + 8, 0);
    assert_formats(&g->diag, "header_gpa=0x2008 is not a frame-aligned "
                   "address in guest RAM");

    assert_int_equal(pvfree_check_registration(NULL, &g->diag),
                     PVFREE_ERR_CONFIG);
    g->chan.read = NULL;
    assert_int_equal(pvfree_check_registration(&g->chan, &g->diag),
                     PVFREE_ERR_CONFIG);
    assert_formats(&g->diag, "invalid reader configuration: read=0x0");
}

/* ---- requests ---- */

static void test_next_request_id(void **state)
{
    (void)state;
    assert_int_equal(pvfree_next_request_id(0), 1);
    assert_int_equal(pvfree_next_request_id(41), 42);
    assert_int_equal(pvfree_next_request_id(PVFREE_MAX_REQUEST_ID - 1),
                     PVFREE_MAX_REQUEST_ID);
    assert_int_equal(pvfree_next_request_id(PVFREE_MAX_REQUEST_ID), 0);
    assert_int_equal(pvfree_next_request_id(UINT64_MAX), 0);
    assert_int_equal(PVFREE_MAX_REQUEST_ID, INT64_MAX);
}

/* host_features, then the barrier, then request_id: spec 6.6. */
static void test_publish(void **state)
{
    struct guest *g = *state;
    uint8_t *h = header(g);

    assert_int_equal(pvfree_publish_request(&g->chan, PVFREE_HF_ZERO_FILL,
                                            0x0102030405060708, &g->diag),
                     PVFREE_OK);
    assert_int_equal(g->nr_ops, 3);
    assert_int_equal(g->ops[0].kind, OP_WRITE);
    assert_int_equal(g->ops[0].gpa,
                     HEADER_GPA + offsetof(struct pvfree_header,
                                           host_features));
    assert_int_equal(g->ops[0].len, 8);
    assert_int_equal(g->ops[1].kind, OP_BARRIER);
    assert_int_equal(g->ops[2].kind, OP_WRITE);
    assert_int_equal(g->ops[2].gpa,
                     HEADER_GPA + offsetof(struct pvfree_header, request_id));
    assert_int_equal(g->ops[2].len, 8);
    assert_int_equal(pvfree_hdr_host_features(h), PVFREE_HF_ZERO_FILL);
    assert_int_equal(h[offsetof(struct pvfree_header, request_id)], 0x08);
    assert_int_equal(pvfree_hdr_request_id(h), 0x0102030405060708);
    /* nothing else of the header changed */
    assert_int_equal(pvfree_hdr_response_id(h), 0);
    assert_int_equal(pvfree_hdr_magic(h), PVFREE_MAGIC);

    /* without a barrier callback: a fence, same writes */
    g->chan.wmb = NULL;
    g->nr_ops = 0;
    assert_int_equal(pvfree_publish_request(&g->chan, 0, 9, NULL),
                     PVFREE_OK);
    assert_int_equal(g->nr_ops, 2);
    assert_int_equal(pvfree_hdr_host_features(h), 0);
    assert_int_equal(pvfree_hdr_request_id(h), 9);
}

static void test_publish_fails(void **state)
{
    struct guest *g = *state;
    uint8_t *h = header(g);

    /* a failed write stops the publication: request_id is not touched */
    static const struct {
        unsigned fail_op;
        enum pvfree_field field;
        uint64_t offset;
        const char *text;
    } cases[] = {
        { 1, PVFREE_FIELD_HOST_FEATURES, 0x10,
          "cannot write host_features: 0x8 bytes at gpa 0x2010" },
        { 3, PVFREE_FIELD_REQUEST_ID, 0x18,
          "cannot write request_id: 0x8 bytes at gpa 0x2018" },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        g->nr_ops = 0;
        g->fail_op = cases[i].fail_op;
        assert_int_equal(pvfree_publish_request(&g->chan, 1, 5, &g->diag),
                         PVFREE_ERR_WRITE);
        assert_diag(&g->diag, PVFREE_ERR_WRITE, cases[i].field,
                    HEADER_GPA + cases[i].offset, 8);
        assert_int_equal(g->nr_ops, cases[i].fail_op);
        assert_int_equal(pvfree_hdr_request_id(h), 0);
        assert_formats(&g->diag, cases[i].text);
    }

    /* ids: never 0, never above 2^63 - 1; nothing written */
    g->nr_ops = 0;
    g->fail_op = 0;
    assert_int_equal(pvfree_publish_request(&g->chan, 1, 0, &g->diag),
                     PVFREE_ERR_EXHAUSTED);
    assert_int_equal(pvfree_publish_request(&g->chan, 1,
                                            PVFREE_MAX_REQUEST_ID + 1,
                                            &g->diag),
                     PVFREE_ERR_EXHAUSTED);
    assert_diag(&g->diag, PVFREE_ERR_EXHAUSTED, PVFREE_FIELD_REQUEST_ID,
                PVFREE_MAX_REQUEST_ID + 1, PVFREE_MAX_REQUEST_ID);
    assert_formats(&g->diag, "request ids are exhausted: "
                   "request_id=0x8000000000000000");
    assert_int_equal(g->nr_ops, 0);

    /* a channel without a write function cannot publish */
    g->chan.write = NULL;
    assert_int_equal(pvfree_publish_request(&g->chan, 1, 5, &g->diag),
                     PVFREE_ERR_CONFIG);
    assert_diag(&g->diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_WRITE, 0, 0);
    g->chan.write = guest_write;
    g->chan.header_gpa = HEADER_GPA + 1;
    assert_int_equal(pvfree_publish_request(&g->chan, 1, 5, &g->diag),
                     PVFREE_ERR_READ);
    assert_int_equal(g->nr_ops, 0);
}

static void test_response_ready(void **state)
{
    struct guest *g = *state;

    assert_int_equal(pvfree_response_ready(&g->chan, 5, &g->diag),
                     PVFREE_ERR_NOT_ANSWERED);
    assert_diag(&g->diag, PVFREE_ERR_NOT_ANSWERED, PVFREE_FIELD_RESPONSE_ID,
                0, 5);
    assert_formats(&g->diag, "response_id=0x0 does not answer request 0x5");
    assert_int_equal(g->ops[0].kind, OP_READ);
    assert_int_equal(g->ops[0].gpa,
                     HEADER_GPA + offsetof(struct pvfree_header,
                                           response_id));
    assert_int_equal(g->ops[0].len, 8);

    gw_poke64(&g->img, HEADER_GPA, offsetof(struct pvfree_header,
                                            response_id), 4);
    assert_int_equal(pvfree_response_ready(&g->chan, 5, &g->diag),
                     PVFREE_ERR_NOT_ANSWERED);
    gw_poke64(&g->img, HEADER_GPA, offsetof(struct pvfree_header,
                                            response_id), 5);
    assert_int_equal(pvfree_response_ready(&g->chan, 5, &g->diag),
                     PVFREE_OK);
    assert_int_equal(g->diag.error, PVFREE_OK);
    assert_int_equal(pvfree_response_ready(&g->chan, 5, NULL), PVFREE_OK);

    g->nr_ops = 0;
    g->fail_op = 1;
    assert_int_equal(pvfree_response_ready(&g->chan, 5, &g->diag),
                     PVFREE_ERR_READ);
    assert_diag(&g->diag, PVFREE_ERR_READ, PVFREE_FIELD_RESPONSE_ID,
                HEADER_GPA + 0x30, 8);
    assert_formats(&g->diag,
                   "cannot read response_id: 0x8 bytes at gpa 0x2030");
}

/* ---- names ---- */

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(pvfree_status_name(PVFREE_STATUS_NONE), "NONE");
    assert_string_equal(pvfree_status_name(PVFREE_STATUS_OK), "OK");
    assert_string_equal(pvfree_status_name(PVFREE_STATUS_BUSY), "BUSY");
    assert_string_equal(pvfree_status_name(PVFREE_STATUS_NO_SPACE),
                        "NO_SPACE");
    assert_string_equal(pvfree_status_name(PVFREE_STATUS_UNSUPPORTED),
                        "UNSUPPORTED");
    assert_string_equal(pvfree_status_name(PVFREE_STATUS_ABORTED),
                        "ABORTED");
    assert_string_equal(pvfree_status_name(6), "unknown");
    assert_string_equal(pvfree_status_name(UINT64_C(1) << 32), "unknown");
}

static void test_field_names(void **state)
{
    int i;
    int j;

    (void)state;
    for (i = 0; i < PVFREE_FIELD_COUNT; i++) {
        const char *name = pvfree_field_name((enum pvfree_field)i);

        assert_non_null(name);
        assert_true(name[0] != '\0');
        for (j = 0; j < i; j++) {
            assert_string_not_equal(name,
                                    pvfree_field_name((enum pvfree_field)j));
        }
    }
    assert_string_equal(pvfree_field_name(PVFREE_FIELD_NONE), "?");
    assert_string_equal(pvfree_field_name(PVFREE_FIELD_TABLE_N_NR_FRAMES),
                        "table[n].nr_frames");
    assert_string_equal(pvfree_field_name(PVFREE_FIELD_COUNT), "?");
    assert_string_equal(pvfree_field_name((enum pvfree_field)-1), "?");
}

/* An indexed field prints its index; the others print their name. */
static void test_indexed_fields(void **state)
{
    struct pvfree_diag diag;

    (void)state;
    pvfree_diag_set(&diag, PVFREE_ERR_EXTENT, PVFREE_FIELD_EXTENT_N_PFN,
                    0x123, 7, 0, 2);
    assert_formats(&diag, "extent[7].pfn=0x123 (frames 0x2) is outside "
                   "guest RAM");
    pvfree_diag_set(&diag, PVFREE_ERR_EXTENT, PVFREE_FIELD_TABLE_N_NR_FRAMES,
                    0, 299, 1, 0);
    assert_formats(&diag, "table[299].nr_frames=0: an extent is never empty");
    pvfree_diag_set(&diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_RAM_N_PFN, 0x10,
                    3, 0, 0);
    assert_formats(&diag, "invalid reader configuration: ram[3].pfn=0x10");
    assert_int_equal(pvfree_diag_fail(NULL, PVFREE_ERR_RANGE,
                                      PVFREE_FIELD_NR_FRAMES, 1, 2),
                     PVFREE_ERR_RANGE);
    assert_string_equal(pvfree_error_name(PVFREE_ERR_WRITE),
                        "PVFREE_ERR_WRITE");
    assert_string_equal(pvfree_error_name(PVFREE_ERR_EXHAUSTED),
                        "PVFREE_ERR_EXHAUSTED");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_le_loads_and_stores),
        T(test_header_accessors),
        T(test_accessors_read_a_response),
        T(test_identity),
        T(test_version_supported),
        T(test_registration),
        T(test_next_request_id),
        T(test_publish),
        T(test_publish_fails),
        T(test_response_ready),
        T(test_status_names),
        T(test_field_names),
        T(test_indexed_fields),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

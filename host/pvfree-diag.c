/* SPDX-License-Identifier: MIT */
/*
 * pvfree host-side diagnostics: see pvfree-diag.h.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <inttypes.h>
#include <stdio.h>

#include "pvfree/abi.h"
#include "pvfree-diag.h"

/*
 * Names of the fields.  An indexed field is printed as @array, "[index]",
 * @member; @name is the same with "[n]" for the index.
 */
struct field_name {
    const char *name;
    const char *array;
    const char *member;
};

#define FIELD(id, text)             [id] = { text, NULL, NULL }
#define INDEXED(id, array, member)  [id] = { array "[n]" member, array, member }

static const struct field_name field_names[PVFREE_FIELD_COUNT] = {
    FIELD(PVFREE_FIELD_NONE, "?"),
    FIELD(PVFREE_FIELD_MAGIC, "magic"),
    FIELD(PVFREE_FIELD_VERSION, "version"),
    FIELD(PVFREE_FIELD_HEADER_SIZE, "header_size"),
    FIELD(PVFREE_FIELD_HOST_FEATURES, "host_features"),
    FIELD(PVFREE_FIELD_REQUEST_ID, "request_id"),
    FIELD(PVFREE_FIELD_RESPONSE_ID, "response_id"),
    FIELD(PVFREE_FIELD_STATUS, "status"),
    FIELD(PVFREE_FIELD_CONTENT, "content"),
    FIELD(PVFREE_FIELD_BASE_PFN, "base_pfn"),
    FIELD(PVFREE_FIELD_NR_FRAMES, "nr_frames"),
    FIELD(PVFREE_FIELD_NR_EXTENTS, "nr_extents"),
    FIELD(PVFREE_FIELD_TABLE_EXTENTS, "table_extents"),
    INDEXED(PVFREE_FIELD_EXTENT_N_PFN, "extent", ".pfn"),
    INDEXED(PVFREE_FIELD_EXTENT_N_NR_FRAMES, "extent", ".nr_frames"),
    INDEXED(PVFREE_FIELD_TABLE_N_PFN, "table", ".pfn"),
    INDEXED(PVFREE_FIELD_TABLE_N_NR_FRAMES, "table", ".nr_frames"),
    FIELD(PVFREE_FIELD_TABLE_BYTES, "table_bytes"),
    FIELD(PVFREE_FIELD_STORAGE, "storage"),
    FIELD(PVFREE_FIELD_HEADER_GPA, "header_gpa"),
    FIELD(PVFREE_FIELD_HEADER, "header"),
    FIELD(PVFREE_FIELD_EXTENT_TABLE, "extent table"),
    FIELD(PVFREE_FIELD_BITMAP, "bitmap"),
    FIELD(PVFREE_FIELD_READER, "reader"),
    FIELD(PVFREE_FIELD_READ, "read"),
    FIELD(PVFREE_FIELD_WRITE, "write"),
    FIELD(PVFREE_FIELD_SCRATCH, "scratch"),
    FIELD(PVFREE_FIELD_SCRATCH_SIZE, "scratch_size"),
    FIELD(PVFREE_FIELD_NR_RAM, "nr_ram"),
    INDEXED(PVFREE_FIELD_RAM_N_PFN, "ram", ".pfn"),
    INDEXED(PVFREE_FIELD_RAM_N_NR_FRAMES, "ram", ".nr_frames"),
    FIELD(PVFREE_FIELD_RESP, "resp"),
    FIELD(PVFREE_FIELD_FN, "fn"),
};

#undef FIELD
#undef INDEXED

static const struct field_name *field_entry(enum pvfree_field field)
{
    if ((unsigned)field >= PVFREE_FIELD_COUNT) {
        return &field_names[PVFREE_FIELD_NONE];
    }
    return &field_names[field];
}

const char *pvfree_field_name(enum pvfree_field field)
{
    return field_entry(field)->name;
}

enum pvfree_error pvfree_diag_set(struct pvfree_diag *diag,
                                  enum pvfree_error error,
                                  enum pvfree_field field, uint64_t value,
                                  uint64_t index, uint64_t expected,
                                  uint64_t nr_frames)
{
    if (diag) {
        *diag = (struct pvfree_diag) {
            .error = error, .field = field, .value = value, .index = index,
            .expected = expected, .nr_frames = nr_frames,
        };
    }
    return error;
}

enum pvfree_error pvfree_diag_fail(struct pvfree_diag *diag,
                                   enum pvfree_error error,
                                   enum pvfree_field field, uint64_t value,
                                   uint64_t expected)
{
    return pvfree_diag_set(diag, error, field, value, 0, expected, 0);
}

const char *pvfree_error_name(enum pvfree_error error)
{
    switch (error) {
    case PVFREE_OK:
        return "PVFREE_OK";
    case PVFREE_ERR_READ:
        return "PVFREE_ERR_READ";
    case PVFREE_ERR_MAGIC:
        return "PVFREE_ERR_MAGIC";
    case PVFREE_ERR_VERSION:
        return "PVFREE_ERR_VERSION";
    case PVFREE_ERR_HEADER_SIZE:
        return "PVFREE_ERR_HEADER_SIZE";
    case PVFREE_ERR_NOT_ANSWERED:
        return "PVFREE_ERR_NOT_ANSWERED";
    case PVFREE_ERR_CHANGED:
        return "PVFREE_ERR_CHANGED";
    case PVFREE_ERR_STATUS:
        return "PVFREE_ERR_STATUS";
    case PVFREE_ERR_CONTENT:
        return "PVFREE_ERR_CONTENT";
    case PVFREE_ERR_RANGE:
        return "PVFREE_ERR_RANGE";
    case PVFREE_ERR_EXTENTS:
        return "PVFREE_ERR_EXTENTS";
    case PVFREE_ERR_EXTENT:
        return "PVFREE_ERR_EXTENT";
    case PVFREE_ERR_STORAGE:
        return "PVFREE_ERR_STORAGE";
    case PVFREE_ERR_CONFIG:
        return "PVFREE_ERR_CONFIG";
    case PVFREE_ERR_CALLBACK:
        return "PVFREE_ERR_CALLBACK";
    case PVFREE_ERR_WRITE:
        return "PVFREE_ERR_WRITE";
    case PVFREE_ERR_EXHAUSTED:
        return "PVFREE_ERR_EXHAUSTED";
    }
    return "PVFREE_ERR_UNKNOWN";
}

const char *pvfree_status_name(uint64_t status)
{
    switch (status) {
    case PVFREE_STATUS_NONE:
        return "NONE";
    case PVFREE_STATUS_OK:
        return "OK";
    case PVFREE_STATUS_BUSY:
        return "BUSY";
    case PVFREE_STATUS_NO_SPACE:
        return "NO_SPACE";
    case PVFREE_STATUS_UNSUPPORTED:
        return "UNSUPPORTED";
    case PVFREE_STATUS_ABORTED:
        return "ABORTED";
    }
    return "unknown";
}

static int is_nr_frames(const struct pvfree_diag *diag)
{
    return diag->field == PVFREE_FIELD_EXTENT_N_NR_FRAMES ||
           diag->field == PVFREE_FIELD_TABLE_N_NR_FRAMES;
}

/* The field's name, with the index for an indexed one: "table[7].pfn". */
static int format_field(const struct pvfree_diag *diag, char *buf,
                        size_t size)
{
    const struct field_name *f = field_entry(diag->field);

    if (!f->array) {
        return snprintf(buf, size, "%s", f->name);
    }
    return snprintf(buf, size, "%s[%" PRIu64 "]%s", f->array, diag->index,
                    f->member);
}

static int format_extent(const struct pvfree_diag *diag, const char *field,
                         char *buf, size_t size)
{
    if (diag->value == 0 && is_nr_frames(diag)) {
        return snprintf(buf, size, "%s=0: an extent is never empty", field);
    }
    if (is_nr_frames(diag)) {
        return snprintf(buf, size, "%s=0x%" PRIx64 " wraps around", field,
                        diag->value);
    }
    return snprintf(buf, size,
                    "%s=0x%" PRIx64 " (frames 0x%" PRIx64
                    ") is outside guest RAM", field, diag->value,
                    diag->nr_frames);
}

static int format_read(const struct pvfree_diag *diag, const char *field,
                       char *buf, size_t size)
{
    if (diag->field == PVFREE_FIELD_HEADER_GPA) {
        return snprintf(buf, size,
                        "header_gpa=0x%" PRIx64
                        " is not a frame-aligned address in guest RAM",
                        diag->value);
    }
    return snprintf(buf, size,
                    "cannot read %s: 0x%" PRIx64 " bytes at gpa 0x%" PRIx64,
                    field, diag->expected, diag->value);
}

static int format_content(const struct pvfree_diag *diag, char *buf,
                          size_t size)
{
    if (diag->expected == PVFREE_HF_ZERO_FILL) {
        return snprintf(buf, size,
                        "content=%" PRIu64 " (ZERO) needs host feature "
                        "ZERO_FILL, which this host lacks", diag->value);
    }
    if (diag->expected == PVFREE_HF_POISON_FILL) {
        return snprintf(buf, size,
                        "content=%" PRIu64 " (POISON) needs host feature "
                        "POISON_FILL, which this host lacks", diag->value);
    }
    return snprintf(buf, size, "content=%" PRIu64 " is not a known content",
                    diag->value);
}

static int format_range(const struct pvfree_diag *diag, const char *field,
                        char *buf, size_t size)
{
    if (diag->field == PVFREE_FIELD_BASE_PFN &&
        diag->nr_frames > UINT64_MAX - diag->value) {
        return snprintf(buf, size,
                        "base_pfn=0x%" PRIx64 " + nr_frames=0x%" PRIx64
                        " overflows", diag->value, diag->nr_frames);
    }
    if (diag->field == PVFREE_FIELD_BASE_PFN) {
        return snprintf(buf, size,
                        "base_pfn=0x%" PRIx64 " (frames 0x%" PRIx64
                        ") does not cover any guest RAM", diag->value,
                        diag->nr_frames);
    }
    if (diag->value == 0) {
        return snprintf(buf, size, "nr_frames=0: the bitmap is empty");
    }
    return snprintf(buf, size, "%s=0x%" PRIx64 " exceeds 0x%" PRIx64,
                    field, diag->value, diag->expected);
}

static int format_extents(const struct pvfree_diag *diag, const char *field,
                          char *buf, size_t size)
{
    if (diag->field == PVFREE_FIELD_NR_EXTENTS && diag->value == 0) {
        return snprintf(buf, size,
                        "nr_extents=0 cannot store a bitmap of nr_frames=0x%"
                        PRIx64, diag->nr_frames);
    }
    if (diag->field == PVFREE_FIELD_TABLE_BYTES) {
        return snprintf(buf, size,
                        "the table extents hold 0x%" PRIx64 " bytes, the "
                        "extent table needs 0x%" PRIx64, diag->value,
                        diag->expected);
    }
    return snprintf(buf, size, "%s=%" PRIu64 " exceeds the limit %" PRIu64,
                    field, diag->value, diag->expected);
}

int pvfree_diag_format(const struct pvfree_diag *diag, char *buf,
                       size_t size)
{
    char field[64];

    if (!diag) {
        return snprintf(buf, size, "no diagnostic");
    }
    format_field(diag, field, sizeof(field));
    switch (diag->error) {
    case PVFREE_OK:
        return snprintf(buf, size, "ok");
    case PVFREE_ERR_READ:
        return format_read(diag, field, buf, size);
    case PVFREE_ERR_MAGIC:
        return snprintf(buf, size, "magic=0x%" PRIx64 " is not 0x%" PRIx64,
                        diag->value, diag->expected);
    case PVFREE_ERR_VERSION:
        return snprintf(buf, size,
                        "version=%" PRIu64 " is not the supported %" PRIu64,
                        diag->value, diag->expected);
    case PVFREE_ERR_HEADER_SIZE:
        return snprintf(buf, size, "header_size=0x%" PRIx64 " is not 0x%"
                        PRIx64, diag->value, diag->expected);
    case PVFREE_ERR_NOT_ANSWERED:
        return snprintf(buf, size,
                        "response_id=0x%" PRIx64
                        " does not answer request 0x%" PRIx64,
                        diag->value, diag->expected);
    case PVFREE_ERR_CHANGED:
        return snprintf(buf, size,
                        "response_id changed from 0x%" PRIx64 " to 0x%"
                        PRIx64 " while reading", diag->expected, diag->value);
    case PVFREE_ERR_STATUS:
        return snprintf(buf, size, "status=%" PRIu64 " (%s) is not OK",
                        diag->value, pvfree_status_name(diag->value));
    case PVFREE_ERR_CONTENT:
        return format_content(diag, buf, size);
    case PVFREE_ERR_RANGE:
        return format_range(diag, field, buf, size);
    case PVFREE_ERR_EXTENTS:
        return format_extents(diag, field, buf, size);
    case PVFREE_ERR_EXTENT:
        return format_extent(diag, field, buf, size);
    case PVFREE_ERR_STORAGE:
        return snprintf(buf, size,
                        "storage of 0x%" PRIx64 " frames is smaller than the "
                        "0x%" PRIx64 "-byte bitmap", diag->value,
                        diag->expected);
    case PVFREE_ERR_CONFIG:
        return snprintf(buf, size, "invalid reader configuration: %s=0x%"
                        PRIx64, field, diag->value);
    case PVFREE_ERR_CALLBACK:
        return snprintf(buf, size,
                        "run callback stopped the walk at pfn 0x%" PRIx64
                        " (frames 0x%" PRIx64 ")", diag->value,
                        diag->nr_frames);
    case PVFREE_ERR_WRITE:
        return snprintf(buf, size,
                        "cannot write %s: 0x%" PRIx64 " bytes at gpa 0x%"
                        PRIx64, field, diag->expected, diag->value);
    case PVFREE_ERR_EXHAUSTED:
        return snprintf(buf, size, "request ids are exhausted: %s=0x%"
                        PRIx64, field, diag->value);
    }
    return snprintf(buf, size, "unknown error %d", (int)diag->error);
}

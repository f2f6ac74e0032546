/* SPDX-License-Identifier: MIT */
/*
 * pvfree host-side diagnostics: what went wrong first, keyed by enums
 * (the error and the header or extent field it concerns), and its text.
 * Shared by the reader and the protocol steps of pvfree-protocol.h.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#ifndef PVFREE_DIAG_H
#define PVFREE_DIAG_H

#include <stddef.h>
#include <stdint.h>

enum pvfree_error {
    PVFREE_OK = 0,
    PVFREE_ERR_READ,            /* guest memory could not be read */
    PVFREE_ERR_MAGIC,
    PVFREE_ERR_VERSION,
    PVFREE_ERR_HEADER_SIZE,
    PVFREE_ERR_NOT_ANSWERED,    /* response_id != request_id */
    PVFREE_ERR_CHANGED,         /* response_id changed while reading */
    PVFREE_ERR_STATUS,          /* status is not OK */
    PVFREE_ERR_CONTENT,         /* content cannot be reproduced */
    PVFREE_ERR_RANGE,           /* base_pfn/nr_frames out of bounds */
    PVFREE_ERR_EXTENTS,         /* bad extent count or table */
    PVFREE_ERR_EXTENT,          /* one extent is outside RAM or wraps */
    PVFREE_ERR_STORAGE,         /* storage smaller than the bitmap */
    PVFREE_ERR_CONFIG,          /* caller's configuration is invalid */
    PVFREE_ERR_CALLBACK,        /* the run callback asked to stop */
    PVFREE_ERR_WRITE,           /* the header could not be written */
    PVFREE_ERR_EXHAUSTED,       /* no request id is left */
};

/*
 * What a diagnostic is about.  The _N fields are indexed: their name
 * contains "[n]", which stands for pvfree_diag.index.
 */
enum pvfree_field {
    PVFREE_FIELD_NONE = 0,
    /* header fields */
    PVFREE_FIELD_MAGIC,
    PVFREE_FIELD_VERSION,
    PVFREE_FIELD_HEADER_SIZE,
    PVFREE_FIELD_HOST_FEATURES,
    PVFREE_FIELD_REQUEST_ID,
    PVFREE_FIELD_RESPONSE_ID,
    PVFREE_FIELD_STATUS,
    PVFREE_FIELD_CONTENT,
    PVFREE_FIELD_BASE_PFN,
    PVFREE_FIELD_NR_FRAMES,
    PVFREE_FIELD_NR_EXTENTS,
    PVFREE_FIELD_TABLE_EXTENTS,
    /* extents: inline in the header, or entries of the extent table */
    PVFREE_FIELD_EXTENT_N_PFN,
    PVFREE_FIELD_EXTENT_N_NR_FRAMES,
    PVFREE_FIELD_TABLE_N_PFN,
    PVFREE_FIELD_TABLE_N_NR_FRAMES,
    /* derived from several fields */
    PVFREE_FIELD_TABLE_BYTES,   /* bytes the table extents hold */
    PVFREE_FIELD_STORAGE,       /* frames of the data extents */
    /* what was being read */
    PVFREE_FIELD_HEADER_GPA,
    PVFREE_FIELD_HEADER,
    PVFREE_FIELD_EXTENT_TABLE,
    PVFREE_FIELD_BITMAP,
    /* the caller's configuration */
    PVFREE_FIELD_READER,
    PVFREE_FIELD_READ,
    PVFREE_FIELD_WRITE,
    PVFREE_FIELD_SCRATCH,
    PVFREE_FIELD_SCRATCH_SIZE,
    PVFREE_FIELD_NR_RAM,
    PVFREE_FIELD_RAM_N_PFN,
    PVFREE_FIELD_RAM_N_NR_FRAMES,
    PVFREE_FIELD_RESP,
    PVFREE_FIELD_FN,
    PVFREE_FIELD_COUNT
};

/* Precise description of the first problem found. */
struct pvfree_diag {
    enum pvfree_error error;
    enum pvfree_field field;    /* the field, or what was being read */
    uint64_t value;             /* the offending value (READ: the gpa) */
    uint64_t index;             /* extent index, for the _N fields */
    /* additions, zero where they do not apply: */
    uint64_t expected;          /* value or bound @value was checked against */
    uint64_t nr_frames;         /* frame count that goes with @value */
};

/*
 * Record a problem in @diag (which may be NULL) and return @error.  For
 * the host/ sources; callers only read a diagnostic.
 */
enum pvfree_error pvfree_diag_set(struct pvfree_diag *diag,
                                  enum pvfree_error error,
                                  enum pvfree_field field, uint64_t value,
                                  uint64_t index, uint64_t expected,
                                  uint64_t nr_frames);
enum pvfree_error pvfree_diag_fail(struct pvfree_diag *diag,
                                   enum pvfree_error error,
                                   enum pvfree_field field, uint64_t value,
                                   uint64_t expected);

/*
 * Human-readable text of @diag, e.g. "extent[3].pfn=0x12345 (frames 0x10)
 * is outside guest RAM".  Returns what snprintf() returns.
 */
int pvfree_diag_format(const struct pvfree_diag *diag, char *buf,
                       size_t size);

/* "PVFREE_ERR_STATUS" etc. */
const char *pvfree_error_name(enum pvfree_error error);

/* "extent[n].pfn", "magic" etc.; "?" for PVFREE_FIELD_NONE. */
const char *pvfree_field_name(enum pvfree_field field);

/* Name of a PVFREE_STATUS_* code: "OK", "BUSY" ...; "unknown" otherwise. */
const char *pvfree_status_name(uint64_t status);

#endif /* PVFREE_DIAG_H */

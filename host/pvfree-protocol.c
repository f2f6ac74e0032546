/* SPDX-License-Identifier: MIT */
/*
 * pvfree host-side protocol steps: see pvfree-protocol.h.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <stdatomic.h>

#include "pvfree-protocol.h"

bool pvfree_version_supported(uint64_t version)
{
    return version == PVFREE_VERSION;
}

enum pvfree_error pvfree_check_identity(const void *id,
                                        struct pvfree_diag *diag)
{
    uint32_t magic = pvfree_hdr_magic(id);
    uint16_t version = pvfree_hdr_version(id);
    uint16_t header_size = pvfree_hdr_header_size(id);

    pvfree_diag_set(diag, PVFREE_OK, PVFREE_FIELD_NONE, 0, 0, 0, 0);
    if (magic != PVFREE_MAGIC) {
        return pvfree_diag_fail(diag, PVFREE_ERR_MAGIC, PVFREE_FIELD_MAGIC,
                                magic, PVFREE_MAGIC);
    }
    if (!pvfree_version_supported(version)) {
        return pvfree_diag_fail(diag, PVFREE_ERR_VERSION,
                                PVFREE_FIELD_VERSION, version,
                                PVFREE_VERSION);
    }
    if (header_size != PVFREE_HEADER_SIZE) {
        return pvfree_diag_fail(diag, PVFREE_ERR_HEADER_SIZE,
                                PVFREE_FIELD_HEADER_SIZE, header_size,
                                PVFREE_HEADER_SIZE);
    }
    return PVFREE_OK;
}

static enum pvfree_error check_channel(const struct pvfree_channel *c,
                                       bool writes, struct pvfree_diag *diag)
{
    if (!c) {
        return pvfree_diag_fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_READER,
                                0, 0);
    }
    if (!c->read) {
        return pvfree_diag_fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_READ,
                                0, 0);
    }
    if (writes && !c->write) {
        return pvfree_diag_fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_WRITE,
                                0, 0);
    }
    if (c->header_gpa % PVFREE_FRAME_SIZE) {
        return pvfree_diag_fail(diag, PVFREE_ERR_READ,
                                PVFREE_FIELD_HEADER_GPA, c->header_gpa, 0);
    }
    return PVFREE_OK;
}

enum pvfree_error pvfree_check_registration(const struct pvfree_channel *c,
                                            struct pvfree_diag *diag)
{
    uint8_t id[PVFREE_IDENTITY_SIZE];
    enum pvfree_error err;

    pvfree_diag_set(diag, PVFREE_OK, PVFREE_FIELD_NONE, 0, 0, 0, 0);
    err = check_channel(c, false, diag);
    if (err) {
        return err;
    }
    if (c->read(c->opaque, c->header_gpa, id, sizeof(id)) != 0) {
        return pvfree_diag_fail(diag, PVFREE_ERR_READ, PVFREE_FIELD_HEADER,
                                c->header_gpa, sizeof(id));
    }
    return pvfree_check_identity(id, diag);
}

uint64_t pvfree_next_request_id(uint64_t last)
{
    return last < PVFREE_MAX_REQUEST_ID ? last + 1 : 0;
}

static enum pvfree_error write_le64(const struct pvfree_channel *c,
                                    enum pvfree_field field, size_t offset,
                                    uint64_t value, struct pvfree_diag *diag)
{
    uint8_t bytes[8];

    pvfree_store_le64(bytes, value);
    if (c->write(c->opaque, c->header_gpa + offset, bytes,
                 sizeof(bytes)) != 0) {
        return pvfree_diag_fail(diag, PVFREE_ERR_WRITE, field,
                                c->header_gpa + offset, sizeof(bytes));
    }
    return PVFREE_OK;
}

enum pvfree_error pvfree_publish_request(const struct pvfree_channel *c,
                                         uint64_t host_features,
                                         uint64_t request_id,
                                         struct pvfree_diag *diag)
{
    enum pvfree_error err;

    pvfree_diag_set(diag, PVFREE_OK, PVFREE_FIELD_NONE, 0, 0, 0, 0);
    err = check_channel(c, true, diag);
    if (err) {
        return err;
    }
    if (request_id == 0 || request_id > PVFREE_MAX_REQUEST_ID) {
        return pvfree_diag_fail(diag, PVFREE_ERR_EXHAUSTED,
                                PVFREE_FIELD_REQUEST_ID, request_id,
                                PVFREE_MAX_REQUEST_ID);
    }
    err = write_le64(c, PVFREE_FIELD_HOST_FEATURES,
                     PVFREE_HEADER_OFFSET(host_features), host_features,
                     diag);
    if (err) {
        return err;
    }
    /* The guest reads request_id, then host_features: pairs with its acquire */
    if (c->wmb) {
        c->wmb(c->opaque);
    } else {
        atomic_thread_fence(memory_order_release);
    }
    return write_le64(c, PVFREE_FIELD_REQUEST_ID,
                      PVFREE_HEADER_OFFSET(request_id), request_id, diag);
}

enum pvfree_error pvfree_read_response_id(pvfree_read_fn read, void *opaque,
                                          uint64_t header_gpa, uint64_t *id,
                                          struct pvfree_diag *diag)
{
    uint8_t bytes[8];
    uint64_t gpa = header_gpa + PVFREE_HEADER_OFFSET(response_id);

    if (read(opaque, gpa, bytes, sizeof(bytes)) != 0) {
        return pvfree_diag_fail(diag, PVFREE_ERR_READ,
                                PVFREE_FIELD_RESPONSE_ID, gpa, sizeof(bytes));
    }
    *id = pvfree_load_le64(bytes);
    return PVFREE_OK;
}

enum pvfree_error pvfree_response_ready(const struct pvfree_channel *c,
                                        uint64_t request_id,
                                        struct pvfree_diag *diag)
{
    uint64_t id = 0;
    enum pvfree_error err;

    pvfree_diag_set(diag, PVFREE_OK, PVFREE_FIELD_NONE, 0, 0, 0, 0);
    err = check_channel(c, false, diag);
    if (err == PVFREE_OK) {
        err = pvfree_read_response_id(c->read, c->opaque, c->header_gpa, &id,
                                      diag);
    }
    if (err == PVFREE_OK && id != request_id) {
        err = pvfree_diag_fail(diag, PVFREE_ERR_NOT_ANSWERED,
                               PVFREE_FIELD_RESPONSE_ID, id, request_id);
    }
    return err;
}

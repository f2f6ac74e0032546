/* SPDX-License-Identifier: MIT */
/*
 * pvfree host-side reader: see pvfree-reader.h for the API and
 * docs/design.md for the protocol.
 *
 * Everything in guest memory is hostile and may change while we read it.
 * So each guest value is copied out exactly once (the header into the
 * scratch buffer, the extent table and the bitmap in scratch-sized
 * chunks), validated on the copy, and only the copy is used.  The work
 * per request is bounded by the host's own view of guest RAM, never by
 * what the guest claims.  Nothing is allocated.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "pvfree-reader.h"

#define FRAME_SIZE      ((uint64_t)PVFREE_FRAME_SIZE)
#define EXTENT_SIZE     ((uint64_t)sizeof(struct pvfree_extent))

/* Frames of a 64-bit physical address space: no sane count exceeds it. */
#define MAX_FRAMES      (UINT64_C(1) << (64 - PVFREE_FRAME_SHIFT))

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static uint64_t add_saturating(uint64_t a, uint64_t b)
{
    return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

/* Saturates: no bitmap or table is anywhere near 2^64 bytes. */
static uint64_t frames_to_bytes(uint64_t frames)
{
    return frames >= MAX_FRAMES ? UINT64_MAX : frames * FRAME_SIZE;
}

static uint64_t bitmap_bytes(uint64_t frames)
{
    return frames / 8 + (frames % 8 != 0);
}

/* Portable count of trailing zero bits; @x must not be 0. */
static unsigned trailing_zeros(uint64_t x)
{
    unsigned n = 0;
    unsigned shift;

    for (shift = 32; shift > 0; shift /= 2) {
        if ((x & ((UINT64_C(1) << shift) - 1)) == 0) {
            n += shift;
            x >>= shift;
        }
    }
    return n;
}

static enum pvfree_error set_diag(struct pvfree_diag *diag,
                                  enum pvfree_error error,
                                  enum pvfree_field field, uint64_t value,
                                  uint64_t index, uint64_t expected,
                                  uint64_t nr_frames)
{
    return pvfree_diag_set(diag, error, field, value, index, expected,
                           nr_frames);
}

static enum pvfree_error fail(struct pvfree_diag *diag,
                              enum pvfree_error error,
                              enum pvfree_field field, uint64_t value,
                              uint64_t expected)
{
    return pvfree_diag_fail(diag, error, field, value, expected);
}

/* ---- guest RAM as the host sees it ---- */

static uint64_t ram_end(const struct pvfree_reader *r, size_t i)
{
    return r->ram[i].pfn + r->ram[i].nr_frames;
}

/* Index of the first RAM range that ends after @pfn, or r->nr_ram. */
static size_t ram_find(const struct pvfree_reader *r, uint64_t pfn)
{
    size_t lo = 0;
    size_t hi = r->nr_ram;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (ram_end(r, mid) > pfn) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/*
 * Are frames [pfn, pfn + nr_frames) all RAM?  An extent may run from one
 * RAM range into the next only where the two abut.  Caller checked that
 * pfn + nr_frames does not wrap.
 */
static bool frames_in_ram(const struct pvfree_reader *r, uint64_t pfn,
                          uint64_t nr_frames)
{
    uint64_t end = pfn + nr_frames;
    size_t i = ram_find(r, pfn);

    if (i == r->nr_ram || r->ram[i].pfn > pfn) {
        return false;
    }
    while (ram_end(r, i) < end) {
        if (i + 1 == r->nr_ram || r->ram[i + 1].pfn != ram_end(r, i)) {
            return false;
        }
        i++;
    }
    return true;
}

static uint64_t extent_limit(const struct pvfree_reader *r)
{
    if (r->max_extents == 0) {
        return PVFREE_MAX_EXTENTS;
    }
    return min_u64(r->max_extents, PVFREE_MAX_EXTENTS);
}

static enum pvfree_error check_config(const struct pvfree_reader *r,
                                      struct pvfree_diag *diag)
{
    size_t i;

    if (!r) {
        return fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_READER, 0, 0);
    }
    if (!r->read) {
        return fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_READ, 0, 0);
    }
    if (!r->scratch) {
        return fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_SCRATCH, 0, 0);
    }
    if (r->scratch_size < FRAME_SIZE || r->scratch_size % FRAME_SIZE) {
        return fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_SCRATCH_SIZE,
                    r->scratch_size, FRAME_SIZE);
    }
    if (!r->ram || r->nr_ram == 0) {
        return fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_NR_RAM, r->nr_ram,
                    0);
    }
    for (i = 0; i < r->nr_ram; i++) {
        const struct pvfree_ram_range *range = &r->ram[i];

        if (range->nr_frames == 0 || range->pfn >= MAX_FRAMES ||
            range->nr_frames > MAX_FRAMES - range->pfn) {
            return set_diag(diag, PVFREE_ERR_CONFIG,
                            PVFREE_FIELD_RAM_N_NR_FRAMES, range->nr_frames, i,
                            MAX_FRAMES, 0);
        }
        if (i > 0 && range->pfn < ram_end(r, i - 1)) {
            /* unsorted or overlapping */
            return set_diag(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_RAM_N_PFN,
                            range->pfn, i, ram_end(r, i - 1), 0);
        }
    }
    return PVFREE_OK;
}

/* ---- reading and checking the header ---- */

static enum pvfree_error read_guest(const struct pvfree_reader *r,
                                    enum pvfree_field what, uint64_t gpa,
                                    void *buf, size_t len,
                                    struct pvfree_diag *diag)
{
    if (r->read(r->opaque, gpa, buf, len) != 0) {
        return fail(diag, PVFREE_ERR_READ, what, gpa, len);
    }
    return PVFREE_OK;
}

/* Decode the header copy @h into @resp, in host byte order. */
static void decode_response(const uint8_t *h, struct pvfree_response *resp)
{
    unsigned i;

    resp->request_id = pvfree_hdr_response_id(h);
    resp->status = pvfree_hdr_status(h);
    resp->content = pvfree_hdr_content(h);
    resp->poison = pvfree_hdr_poison(h);
    resp->guest_features = pvfree_hdr_guest_features(h);
    resp->base_pfn = pvfree_hdr_base_pfn(h);
    resp->nr_frames = pvfree_hdr_nr_frames(h);
    resp->nr_extents = pvfree_hdr_nr_extents(h);
    resp->table_extents = pvfree_hdr_table_extents(h);
    for (i = 0; i < PVFREE_INLINE_EXTENTS; i++) {
        const void *e = pvfree_hdr_extent(h, i);

        resp->inline_extents[i].pfn = pvfree_extent_pfn(e);
        resp->inline_extents[i].nr_frames = pvfree_extent_nr_frames(e);
    }
    resp->free_frames = pvfree_hdr_free_frames(h);
    resp->snapshot_us = pvfree_hdr_snapshot_us(h);
    resp->max_lock_hold_us = pvfree_hdr_max_lock_hold_us(h);
}

static enum pvfree_error check_content(const struct pvfree_reader *r,
                                       const struct pvfree_response *resp,
                                       struct pvfree_diag *diag)
{
    uint64_t needed;

    switch (resp->content) {
    case PVFREE_CONTENT_ANY:
        return PVFREE_OK;
    case PVFREE_CONTENT_ZERO:
        needed = PVFREE_HF_ZERO_FILL;
        break;
    case PVFREE_CONTENT_POISON:
        needed = PVFREE_HF_POISON_FILL;
        break;
    default:
        return fail(diag, PVFREE_ERR_CONTENT, PVFREE_FIELD_CONTENT,
                    resp->content, 0);
    }
    if (!(r->host_features & needed)) {
        return fail(diag, PVFREE_ERR_CONTENT, PVFREE_FIELD_CONTENT,
                    resp->content, needed);
    }
    return PVFREE_OK;
}

/*
 * Check the bitmap's range and clip it to the end of guest RAM, so that
 * the bitmap bytes we read are bounded by the host's RAM, not by the
 * guest's nr_frames.  A range without RAM is refused (spec 10.1 item 2).
 */
static enum pvfree_error check_range(const struct pvfree_reader *r,
                                     struct pvfree_response *resp,
                                     struct pvfree_diag *diag)
{
    uint64_t base = resp->base_pfn;
    uint64_t end;
    size_t first_ram;

    if (resp->nr_frames == 0) {
        return fail(diag, PVFREE_ERR_RANGE, PVFREE_FIELD_NR_FRAMES, 0, 1);
    }
    if (resp->nr_frames > UINT64_MAX - base) {
        return set_diag(diag, PVFREE_ERR_RANGE, PVFREE_FIELD_BASE_PFN, base, 0,
                        0, resp->nr_frames);
    }
    if (resp->nr_frames > MAX_FRAMES) {
        return fail(diag, PVFREE_ERR_RANGE, PVFREE_FIELD_NR_FRAMES,
                    resp->nr_frames, MAX_FRAMES);
    }
    first_ram = ram_find(r, base);
    if (first_ram == r->nr_ram ||
        r->ram[first_ram].pfn >= base + resp->nr_frames) {
        return set_diag(diag, PVFREE_ERR_RANGE, PVFREE_FIELD_BASE_PFN, base, 0,
                        0, resp->nr_frames);
    }
    end = min_u64(base + resp->nr_frames, ram_end(r, r->nr_ram - 1));
    resp->covered_frames = end - base;
    return PVFREE_OK;
}

static uint64_t inline_frames(const struct pvfree_response *resp,
                              uint32_t count)
{
    uint64_t frames = 0;
    uint32_t i;

    for (i = 0; i < count; i++) {
        frames = add_saturating(frames, resp->inline_extents[i].nr_frames);
    }
    return frames;
}

static enum pvfree_error check_extent_counts(const struct pvfree_reader *r,
                                             const struct pvfree_response *resp,
                                             struct pvfree_diag *diag)
{
    uint64_t limit = extent_limit(r);
    uint64_t table_bytes;

    if (resp->nr_extents == 0) {
        return set_diag(diag, PVFREE_ERR_EXTENTS, PVFREE_FIELD_NR_EXTENTS, 0,
                        0, 1, resp->nr_frames);
    }
    if (resp->nr_extents > limit) {
        return fail(diag, PVFREE_ERR_EXTENTS, PVFREE_FIELD_NR_EXTENTS,
                    resp->nr_extents, limit);
    }
    if (resp->table_extents == 0) {
        if (resp->nr_extents > PVFREE_INLINE_EXTENTS) {
            return fail(diag, PVFREE_ERR_EXTENTS, PVFREE_FIELD_NR_EXTENTS,
                        resp->nr_extents, PVFREE_INLINE_EXTENTS);
        }
        return PVFREE_OK;
    }
    if (resp->table_extents > PVFREE_INLINE_EXTENTS) {
        return fail(diag, PVFREE_ERR_EXTENTS, PVFREE_FIELD_TABLE_EXTENTS,
                    resp->table_extents, PVFREE_INLINE_EXTENTS);
    }
    table_bytes = frames_to_bytes(inline_frames(resp, resp->table_extents));
    if (table_bytes < resp->nr_extents * EXTENT_SIZE) {
        return fail(diag, PVFREE_ERR_EXTENTS, PVFREE_FIELD_TABLE_BYTES,
                    table_bytes, resp->nr_extents * EXTENT_SIZE);
    }
    return PVFREE_OK;
}

struct extent_fields {
    enum pvfree_field pfn;
    enum pvfree_field nr_frames;
};

static const struct extent_fields inline_fields = {
    PVFREE_FIELD_EXTENT_N_PFN, PVFREE_FIELD_EXTENT_N_NR_FRAMES
};

static const struct extent_fields table_fields = {
    PVFREE_FIELD_TABLE_N_PFN, PVFREE_FIELD_TABLE_N_NR_FRAMES
};

static enum pvfree_error check_extent(const struct pvfree_reader *r,
                                      const struct extent_fields *fields,
                                      uint64_t index, uint64_t pfn,
                                      uint64_t nr_frames,
                                      struct pvfree_diag *diag)
{
    if (nr_frames == 0) {
        return set_diag(diag, PVFREE_ERR_EXTENT, fields->nr_frames, 0, index,
                        1, 0);
    }
    if (nr_frames > UINT64_MAX - pfn) {
        return set_diag(diag, PVFREE_ERR_EXTENT, fields->nr_frames, nr_frames,
                        index, 0, 0);
    }
    if (!frames_in_ram(r, pfn, nr_frames)) {
        return set_diag(diag, PVFREE_ERR_EXTENT, fields->pfn, pfn, index, 0,
                        nr_frames);
    }
    return PVFREE_OK;
}

/* The extents in the header: the table's if there is one, else the data. */
static enum pvfree_error
check_inline_extents(const struct pvfree_reader *r,
                     const struct pvfree_response *resp,
                     struct pvfree_diag *diag)
{
    uint32_t count = resp->table_extents ? resp->table_extents
                                         : resp->nr_extents;
    uint32_t i;

    for (i = 0; i < count; i++) {
        const struct pvfree_extent *e = &resp->inline_extents[i];
        enum pvfree_error err;

        err = check_extent(r, &inline_fields, i, e->pfn, e->nr_frames, diag);
        if (err) {
            return err;
        }
    }
    return PVFREE_OK;
}

/*
 * The storage must hold the bitmap the guest declared, ceil(nr_frames / 8)
 * bytes (spec 4.5), even though we read only the part that covers RAM.
 */
static enum pvfree_error
check_inline_storage(const struct pvfree_response *resp,
                     struct pvfree_diag *diag)
{
    uint64_t needed = bitmap_bytes(resp->nr_frames);
    uint64_t frames;

    if (resp->table_extents) {
        return PVFREE_OK;       /* checked as the table is walked */
    }
    frames = inline_frames(resp, resp->nr_extents);
    if (frames_to_bytes(frames) < needed) {
        return fail(diag, PVFREE_ERR_STORAGE, PVFREE_FIELD_STORAGE, frames,
                    needed);
    }
    return PVFREE_OK;
}

static enum pvfree_error validate(const struct pvfree_reader *r,
                                  const uint8_t *h, uint64_t request_id,
                                  struct pvfree_response *resp,
                                  struct pvfree_diag *diag)
{
    enum pvfree_error err;

    err = pvfree_check_identity(h, diag);
    if (err) {
        return err;
    }
    if (resp->request_id != request_id) {
        return fail(diag, PVFREE_ERR_NOT_ANSWERED, PVFREE_FIELD_RESPONSE_ID,
                    resp->request_id, request_id);
    }
    if (resp->status != PVFREE_STATUS_OK) {
        return fail(diag, PVFREE_ERR_STATUS, PVFREE_FIELD_STATUS, resp->status,
                    PVFREE_STATUS_OK);
    }
    err = check_content(r, resp, diag);
    if (err) {
        return err;
    }
    err = check_range(r, resp, diag);
    if (err) {
        return err;
    }
    err = check_extent_counts(r, resp, diag);
    if (err) {
        return err;
    }
    err = check_inline_extents(r, resp, diag);
    if (err) {
        return err;
    }
    return check_inline_storage(resp, diag);
}

enum pvfree_error pvfree_read_response(const struct pvfree_reader *r,
                                       uint64_t header_gpa,
                                       uint64_t request_id,
                                       struct pvfree_response *resp,
                                       struct pvfree_diag *diag)
{
    uint64_t first_id;
    enum pvfree_error err;

    set_diag(diag, PVFREE_OK, PVFREE_FIELD_NONE, 0, 0, 0, 0);
    err = check_config(r, diag);
    if (err) {
        return err;
    }
    if (!resp) {
        return fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_RESP, 0, 0);
    }
    if (request_id == 0) {
        return fail(diag, PVFREE_ERR_CONFIG, PVFREE_FIELD_REQUEST_ID, 0, 0);
    }
    memset(resp, 0, sizeof(*resp));
    resp->header_gpa = header_gpa;
    if (header_gpa % FRAME_SIZE ||
        !frames_in_ram(r, header_gpa / FRAME_SIZE, 1)) {
        return fail(diag, PVFREE_ERR_READ, PVFREE_FIELD_HEADER_GPA, header_gpa,
                    0);
    }

    /*
     * The guest writes response_id last, with release semantics: read it
     * first and fence, so the copy below sees at least everything the
     * guest wrote before publishing that id.
     */
    err = pvfree_read_response_id(r->read, r->opaque, header_gpa, &first_id,
                                  diag);
    if (err) {
        return err;
    }
    atomic_thread_fence(memory_order_acquire);
    err = read_guest(r, PVFREE_FIELD_HEADER, header_gpa, r->scratch,
                     PVFREE_HEADER_SIZE, diag);
    if (err) {
        return err;
    }
    decode_response(r->scratch, resp);
    if (resp->request_id != first_id) {
        return fail(diag, PVFREE_ERR_CHANGED, PVFREE_FIELD_RESPONSE_ID,
                    resp->request_id, first_id);
    }
    return validate(r, r->scratch, request_id, resp, diag);
}

/* ---- walking the storage ---- */

/*
 * Cursor over the data extents that store the bitmap: which guest bytes
 * hold bitmap byte @pos.  Moves forward only, so every table entry and
 * bitmap byte is read from the guest at most once.
 */
struct storage {
    const struct pvfree_reader *r;
    const struct pvfree_response *resp;
    struct pvfree_diag *diag;

    /* the extent table, if any: a chunk of it in table_buf */
    uint8_t *table_buf;
    uint32_t table_buf_entries;
    uint32_t chunk_first;       /* table index of table_buf[0] */
    uint32_t chunk_entries;
    uint32_t table_read;        /* entries read from the guest so far */
    uint32_t table_extent;      /* inline extent holding the next entry */
    uint64_t table_offset;      /* byte offset of the next entry in it */

    /* the current data extent */
    uint32_t next_extent;       /* index of the data extent after it */
    uint64_t extent_gpa;        /* guest address of bitmap byte @pos */
    uint64_t extent_left;       /* bytes of the extent from @pos on */
    uint64_t pos;               /* bitmap byte offset */
    uint64_t data_frames;       /* frames of the data extents checked */
};

/* Read the next chunk of the extent table and check its entries. */
static enum pvfree_error read_table_chunk(struct storage *s)
{
    const struct pvfree_response *resp = s->resp;
    uint32_t count = resp->nr_extents - s->table_read;
    uint64_t done = 0;
    uint32_t i;
    enum pvfree_error err;

    if (count > s->table_buf_entries) {
        count = s->table_buf_entries;
    }
    while (done < count * EXTENT_SIZE) {
        const struct pvfree_extent *t;
        uint64_t left;
        uint64_t len;

        if (s->table_extent >= resp->table_extents) {
            /* cannot happen after check_extent_counts(); be safe anyway */
            return fail(s->diag, PVFREE_ERR_EXTENTS,
                        PVFREE_FIELD_TABLE_EXTENTS, resp->table_extents,
                        resp->nr_extents * EXTENT_SIZE);
        }
        t = &resp->inline_extents[s->table_extent];
        left = frames_to_bytes(t->nr_frames) - s->table_offset;
        len = min_u64(count * EXTENT_SIZE - done, left);

        err = read_guest(s->r, PVFREE_FIELD_EXTENT_TABLE,
                         t->pfn * FRAME_SIZE + s->table_offset,
                         s->table_buf + done, len, s->diag);
        if (err) {
            return err;
        }
        done += len;
        s->table_offset += len;
        if (s->table_offset == frames_to_bytes(t->nr_frames)) {
            s->table_extent++;
            s->table_offset = 0;
        }
    }
    s->chunk_first = s->table_read;
    s->chunk_entries = count;
    s->table_read += count;
    for (i = 0; i < count; i++) {
        const uint8_t *e = s->table_buf + i * EXTENT_SIZE;

        err = check_extent(s->r, &table_fields, s->chunk_first + i,
                           pvfree_extent_pfn(e), pvfree_extent_nr_frames(e),
                           s->diag);
        if (err) {
            return err;
        }
        s->data_frames = add_saturating(s->data_frames,
                                        pvfree_extent_nr_frames(e));
    }
    return PVFREE_OK;
}

/* Data extent @index, already checked. */
static enum pvfree_error get_extent(struct storage *s, uint32_t index,
                                    uint64_t *pfn, uint64_t *nr_frames)
{
    const uint8_t *e;
    enum pvfree_error err;

    if (!s->resp->table_extents) {
        *pfn = s->resp->inline_extents[index].pfn;
        *nr_frames = s->resp->inline_extents[index].nr_frames;
        return PVFREE_OK;
    }
    if (index >= s->chunk_first + s->chunk_entries) {
        err = read_table_chunk(s);
        if (err) {
            return err;
        }
    }
    e = s->table_buf + (uint64_t)(index - s->chunk_first) * EXTENT_SIZE;
    *pfn = pvfree_extent_pfn(e);
    *nr_frames = pvfree_extent_nr_frames(e);
    return PVFREE_OK;
}

static enum pvfree_error next_extent(struct storage *s)
{
    uint64_t pfn;
    uint64_t nr_frames;
    enum pvfree_error err;

    if (s->next_extent == s->resp->nr_extents) {
        return fail(s->diag, PVFREE_ERR_STORAGE, PVFREE_FIELD_STORAGE,
                    s->data_frames, bitmap_bytes(s->resp->nr_frames));
    }
    err = get_extent(s, s->next_extent, &pfn, &nr_frames);
    if (err) {
        return err;
    }
    s->next_extent++;
    s->extent_gpa = pfn * FRAME_SIZE;
    s->extent_left = frames_to_bytes(nr_frames);
    return PVFREE_OK;
}

/* Move to bitmap byte @pos (>= s->pos), stepping over whole extents. */
static enum pvfree_error storage_seek(struct storage *s, uint64_t pos)
{
    enum pvfree_error err;

    while (pos - s->pos >= s->extent_left) {
        s->pos += s->extent_left;
        s->extent_left = 0;
        err = next_extent(s);
        if (err) {
            return err;
        }
    }
    s->extent_gpa += pos - s->pos;
    s->extent_left -= pos - s->pos;
    s->pos = pos;
    return PVFREE_OK;
}

/* Read @len bitmap bytes from s->pos on, across extent boundaries. */
static enum pvfree_error storage_read(struct storage *s, uint8_t *buf,
                                      uint64_t len)
{
    enum pvfree_error err;

    while (len > 0) {
        uint64_t piece;

        err = storage_seek(s, s->pos);
        if (err) {
            return err;
        }
        piece = min_u64(len, s->extent_left);
        err = read_guest(s->r, PVFREE_FIELD_BITMAP, s->extent_gpa, buf, piece,
                         s->diag);
        if (err) {
            return err;
        }
        buf += piece;
        len -= piece;
        s->pos += piece;
        s->extent_gpa += piece;
        s->extent_left -= piece;
    }
    return PVFREE_OK;
}

/* Read (and so check) the table entries the bitmap did not need. */
static enum pvfree_error read_rest_of_table(struct storage *s)
{
    enum pvfree_error err;

    while (s->resp->table_extents && s->table_read < s->resp->nr_extents) {
        err = read_table_chunk(s);
        if (err) {
            return err;
        }
    }
    return PVFREE_OK;
}

/*
 * Free runs, from bits to callbacks.  Bits set in the bitmap are first
 * gathered into a run of bitmap frames; a finished run is clipped to the
 * coverage and to RAM, and the pieces are merged again where RAM ranges
 * abut, so that fn sees maximal runs in ascending order.
 */
struct runs {
    const struct pvfree_reader *r;
    uint64_t base_pfn;
    uint64_t covered_frames;
    pvfree_run_fn fn;
    void *opaque;
    struct pvfree_diag *diag;
    size_t ram_index;           /* no run ends before r->ram[ram_index] */
    uint64_t bits_start;        /* pending run of set bits */
    uint64_t bits_end;
    uint64_t run_pfn;           /* pending run for fn */
    uint64_t run_frames;
};

static enum pvfree_error flush_run(struct runs *runs)
{
    int ret;

    if (runs->run_frames == 0) {
        return PVFREE_OK;
    }
    ret = runs->fn(runs->opaque, runs->run_pfn, runs->run_frames);
    if (ret != 0) {
        return set_diag(runs->diag, PVFREE_ERR_CALLBACK, PVFREE_FIELD_NONE,
                        runs->run_pfn, 0, 0, runs->run_frames);
    }
    runs->run_frames = 0;
    return PVFREE_OK;
}

static enum pvfree_error add_run(struct runs *runs, uint64_t pfn,
                                 uint64_t nr_frames)
{
    enum pvfree_error err;

    if (runs->run_frames && runs->run_pfn + runs->run_frames == pfn) {
        runs->run_frames += nr_frames;
        return PVFREE_OK;
    }
    err = flush_run(runs);
    if (err) {
        return err;
    }
    runs->run_pfn = pfn;
    runs->run_frames = nr_frames;
    return PVFREE_OK;
}

/* Clip the pending run of set bits to the coverage and to RAM. */
static enum pvfree_error flush_bits(struct runs *runs)
{
    const struct pvfree_reader *r = runs->r;
    uint64_t end = min_u64(runs->bits_end, runs->covered_frames);
    uint64_t start = runs->bits_start;
    size_t i;
    enum pvfree_error err;

    runs->bits_end = runs->bits_start;
    if (start >= end) {
        return PVFREE_OK;
    }
    start += runs->base_pfn;
    end += runs->base_pfn;
    /* Runs ascend, so the first RAM range they can touch only moves up. */
    while (runs->ram_index < r->nr_ram &&
           ram_end(r, runs->ram_index) <= start) {
        runs->ram_index++;
    }
    for (i = runs->ram_index; i < r->nr_ram && r->ram[i].pfn < end; i++) {
        uint64_t lo = max_u64(start, r->ram[i].pfn);
        uint64_t hi = min_u64(end, ram_end(r, i));

        err = add_run(runs, lo, hi - lo);
        if (err) {
            return err;
        }
    }
    return PVFREE_OK;
}

/* Bits [bit, bit + nr_bits) of the bitmap are set. */
static enum pvfree_error add_bits(struct runs *runs, uint64_t bit,
                                  uint64_t nr_bits)
{
    enum pvfree_error err;

    if (runs->bits_end != runs->bits_start && runs->bits_end == bit) {
        runs->bits_end += nr_bits;
        return PVFREE_OK;
    }
    err = flush_bits(runs);
    if (err) {
        return err;
    }
    runs->bits_start = bit;
    runs->bits_end = bit + nr_bits;
    return PVFREE_OK;
}

/* Report the runs of set bits in one 64-bit word at bitmap bit @bit. */
static enum pvfree_error scan_word(struct runs *runs, uint64_t word,
                                   uint64_t bit)
{
    unsigned offset = 0;
    enum pvfree_error err;

    while (word != 0) {
        unsigned zeros = trailing_zeros(word);
        unsigned ones;

        word >>= zeros;
        offset += zeros;
        ones = word == UINT64_MAX ? 64 : trailing_zeros(~word);
        err = add_bits(runs, bit + offset, ones);
        if (err) {
            return err;
        }
        if (offset + ones == 64) {
            break;
        }
        word >>= ones;
        offset += ones;
    }
    return PVFREE_OK;
}

/* Report the set bits of @len bitmap bytes copied to @buf from @byte on. */
static enum pvfree_error scan_bytes(struct runs *runs, const uint8_t *buf,
                                    uint64_t len, uint64_t byte)
{
    uint64_t i;
    enum pvfree_error err;

    for (i = 0; i < len; i += 8) {
        uint8_t tail[8] = { 0 };
        const uint8_t *p = buf + i;

        if (len - i < 8) {
            memcpy(tail, p, len - i);
            p = tail;
        }
        err = scan_word(runs, pvfree_load_le64(p), (byte + i) * 8);
        if (err) {
            return err;
        }
    }
    return PVFREE_OK;
}

/*
 * Is the response we are reading still the guest's answer?  Read barrier,
 * then response_id again: a guest that stops answering (say, to reuse its
 * storage frames) first sets it to 0, and nothing read before that may be
 * trusted after it (spec 6.6.1 item 4).
 */
static enum pvfree_error recheck_response_id(struct storage *s)
{
    uint64_t id;
    enum pvfree_error err;

    atomic_thread_fence(memory_order_acquire);
    err = pvfree_read_response_id(s->r->read, s->r->opaque,
                                  s->resp->header_gpa, &id, s->diag);
    if (err) {
        return err;
    }
    if (id != s->resp->request_id) {
        return fail(s->diag, PVFREE_ERR_CHANGED, PVFREE_FIELD_RESPONSE_ID, id,
                    s->resp->request_id);
    }
    return PVFREE_OK;
}

/*
 * Read and scan bitmap bytes [first, end) in chunks of @buf_size.  Each
 * chunk (and the table entries read for it) is confirmed by a re-check
 * of response_id before any of its bits can reach the callback.
 */
static enum pvfree_error scan_span(struct storage *s, struct runs *runs,
                                   uint8_t *buf, uint64_t buf_size,
                                   uint64_t first, uint64_t end)
{
    enum pvfree_error err;

    err = storage_seek(s, first);
    while (err == PVFREE_OK && s->pos < end) {
        uint64_t byte = s->pos;
        uint64_t len = min_u64(end - byte, buf_size);

        err = storage_read(s, buf, len);
        if (err == PVFREE_OK) {
            err = recheck_response_id(s);
        }
        if (err == PVFREE_OK) {
            err = scan_bytes(runs, buf, len, byte);
        }
    }
    return err;
}

/*
 * Scan the bitmap bytes that cover RAM, skipping those that cover only
 * holes.  The byte spans of consecutive RAM ranges are merged where they
 * touch or share a byte, so each byte is read once and abutting ranges
 * are read as one stream.
 */
static enum pvfree_error scan_bitmap(struct storage *s, struct runs *runs,
                                     uint8_t *buf, uint64_t buf_size)
{
    const struct pvfree_reader *r = s->r;
    uint64_t base = runs->base_pfn;
    uint64_t end = base + runs->covered_frames;
    uint64_t span_first = 0;
    uint64_t span_end = 0;      /* empty span */
    size_t i;
    enum pvfree_error err;

    for (i = ram_find(r, base); i < r->nr_ram && r->ram[i].pfn < end; i++) {
        uint64_t first = (max_u64(r->ram[i].pfn, base) - base) / 8;
        uint64_t last = bitmap_bytes(min_u64(ram_end(r, i), end) - base);

        if (span_end != span_first && first <= span_end) {
            span_end = max_u64(span_end, last);
            continue;
        }
        if (span_end != span_first) {
            err = scan_span(s, runs, buf, buf_size, span_first, span_end);
            if (err) {
                return err;
            }
        }
        span_first = first;
        span_end = last;
    }
    if (span_end != span_first) {
        err = scan_span(s, runs, buf, buf_size, span_first, span_end);
        if (err) {
            return err;
        }
    }
    err = flush_bits(runs);
    if (err) {
        return err;
    }
    return flush_run(runs);
}

/*
 * Does the storage hold the whole bitmap the guest declared, even the
 * bytes we did not read?  Known only once every table entry was read.
 */
static enum pvfree_error check_table_storage(struct storage *s)
{
    uint64_t needed = bitmap_bytes(s->resp->nr_frames);

    if (frames_to_bytes(s->data_frames) < needed) {
        return fail(s->diag, PVFREE_ERR_STORAGE, PVFREE_FIELD_STORAGE,
                    s->data_frames, needed);
    }
    return PVFREE_OK;
}

enum pvfree_error pvfree_for_each_free_run(const struct pvfree_reader *r,
                                           const struct pvfree_response *resp,
                                           pvfree_run_fn fn, void *opaque,
                                           struct pvfree_diag *diag)
{
    struct storage s;
    struct runs runs;
    uint8_t *scratch;
    uint64_t bitmap_buf_size;
    enum pvfree_error err;

    set_diag(diag, PVFREE_OK, PVFREE_FIELD_NONE, 0, 0, 0, 0);
    err = check_config(r, diag);
    if (err) {
        return err;
    }
    if (!resp || !fn) {
        return fail(diag, PVFREE_ERR_CONFIG,
                    resp ? PVFREE_FIELD_FN : PVFREE_FIELD_RESP, 0, 0);
    }

    /* With a table, the first half of scratch holds table chunks. */
    scratch = r->scratch;
    memset(&s, 0, sizeof(s));
    s.r = r;
    s.resp = resp;
    s.diag = diag;
    bitmap_buf_size = r->scratch_size;
    if (resp->table_extents) {
        bitmap_buf_size = r->scratch_size / 2;
        s.table_buf = scratch;
        s.table_buf_entries = (uint32_t)min_u64(bitmap_buf_size / EXTENT_SIZE,
                                                PVFREE_MAX_EXTENTS);
    } else {
        s.data_frames = inline_frames(resp, resp->nr_extents);
    }

    memset(&runs, 0, sizeof(runs));
    runs.r = r;
    runs.base_pfn = resp->base_pfn;
    runs.covered_frames = resp->covered_frames;
    runs.fn = fn;
    runs.opaque = opaque;
    runs.diag = diag;

    err = scan_bitmap(&s, &runs, scratch + (r->scratch_size - bitmap_buf_size),
                      bitmap_buf_size);
    if (err == PVFREE_OK) {
        err = read_rest_of_table(&s);
    }
    if (err == PVFREE_OK) {
        err = check_table_storage(&s);
    }
    if (err) {
        return err;
    }

    /*
     * Last re-check, for the table entries read after the last chunk.
     * The runs already reported stay valid whatever it says: each came
     * from bits confirmed by an earlier re-check, so a guest that rewrote
     * its response meanwhile can only have hurt itself, and dirty logging,
     * armed before the request, still catches every later write to those
     * frames.  The caller decides whether to ask again.
     */
    return recheck_response_id(&s);
}

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
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "pvfree-reader.h"

#define FRAME_SIZE      ((uint64_t)PVFREE_FRAME_SIZE)
#define EXTENT_SIZE     ((uint64_t)sizeof(struct pvfree_extent))

/* Frames of a 64-bit physical address space: no sane count exceeds it. */
#define MAX_FRAMES      (UINT64_C(1) << (64 - PVFREE_FRAME_SHIFT))

#define RESPONSE_ID_OFFSET  offsetof(struct pvfree_header, response_id)

/* Little-endian loads over bytes: the host may be big-endian. */

static uint16_t load_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)load_le16(p) | (uint32_t)load_le16(p + 2) << 16;
}

static uint64_t load_le64(const uint8_t *p)
{
    return (uint64_t)load_le32(p) | (uint64_t)load_le32(p + 4) << 32;
}

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
                                  enum pvfree_error error, const char *field,
                                  uint64_t value, uint64_t index,
                                  uint64_t expected, uint64_t nr_frames)
{
    if (diag) {
        diag->error = error;
        diag->field = field;
        diag->value = value;
        diag->index = index;
        diag->expected = expected;
        diag->nr_frames = nr_frames;
    }
    return error;
}

static enum pvfree_error fail(struct pvfree_diag *diag,
                              enum pvfree_error error, const char *field,
                              uint64_t value, uint64_t expected)
{
    return set_diag(diag, error, field, value, 0, expected, 0);
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
        return fail(diag, PVFREE_ERR_CONFIG, "reader", 0, 0);
    }
    if (!r->read) {
        return fail(diag, PVFREE_ERR_CONFIG, "read", 0, 0);
    }
    if (!r->scratch) {
        return fail(diag, PVFREE_ERR_CONFIG, "scratch", 0, 0);
    }
    if (r->scratch_size < FRAME_SIZE || r->scratch_size % FRAME_SIZE) {
        return fail(diag, PVFREE_ERR_CONFIG, "scratch_size",
                    r->scratch_size, FRAME_SIZE);
    }
    if (!r->ram || r->nr_ram == 0) {
        return fail(diag, PVFREE_ERR_CONFIG, "nr_ram", r->nr_ram, 0);
    }
    for (i = 0; i < r->nr_ram; i++) {
        const struct pvfree_ram_range *range = &r->ram[i];

        if (range->nr_frames == 0 || range->pfn >= MAX_FRAMES ||
            range->nr_frames > MAX_FRAMES - range->pfn) {
            return set_diag(diag, PVFREE_ERR_CONFIG, "ram[n].nr_frames",
                            range->nr_frames, i, MAX_FRAMES, 0);
        }
        if (i > 0 && range->pfn < ram_end(r, i - 1)) {
            /* unsorted or overlapping */
            return set_diag(diag, PVFREE_ERR_CONFIG, "ram[n].pfn",
                            range->pfn, i, ram_end(r, i - 1), 0);
        }
    }
    return PVFREE_OK;
}

/* ---- reading and checking the header ---- */

static enum pvfree_error read_guest(const struct pvfree_reader *r,
                                    const char *what, uint64_t gpa,
                                    void *buf, size_t len,
                                    struct pvfree_diag *diag)
{
    if (r->read(r->opaque, gpa, buf, len) != 0) {
        return fail(diag, PVFREE_ERR_READ, what, gpa, len);
    }
    return PVFREE_OK;
}

static enum pvfree_error read_response_id(const struct pvfree_reader *r,
                                          uint64_t header_gpa, uint64_t *id,
                                          struct pvfree_diag *diag)
{
    uint8_t bytes[8];
    enum pvfree_error err;

    err = read_guest(r, "response_id", header_gpa + RESPONSE_ID_OFFSET,
                     bytes, sizeof(bytes), diag);
    if (err == PVFREE_OK) {
        *id = load_le64(bytes);
    }
    return err;
}

#define HDR(field) (h + offsetof(struct pvfree_header, field))

/* Decode the header copy @h into @resp, in host byte order. */
static void decode_response(const uint8_t *h, struct pvfree_response *resp)
{
    unsigned i;

    resp->request_id = load_le64(HDR(response_id));
    resp->status = load_le32(HDR(status));
    resp->content = *HDR(content);
    resp->poison = *HDR(poison);
    resp->guest_features = load_le64(HDR(guest_features));
    resp->base_pfn = load_le64(HDR(base_pfn));
    resp->nr_frames = load_le64(HDR(nr_frames));
    resp->nr_extents = load_le32(HDR(nr_extents));
    resp->table_extents = load_le32(HDR(table_extents));
    for (i = 0; i < PVFREE_INLINE_EXTENTS; i++) {
        const uint8_t *e = HDR(extents) + i * EXTENT_SIZE;

        resp->inline_extents[i].pfn = load_le64(e);
        resp->inline_extents[i].nr_frames = load_le64(e + 8);
    }
    resp->free_frames = load_le64(HDR(free_frames));
    resp->snapshot_us = load_le64(HDR(snapshot_us));
    resp->max_lock_hold_us = load_le32(HDR(max_lock_hold_us));
}

static enum pvfree_error check_identity(const uint8_t *h,
                                        struct pvfree_diag *diag)
{
    uint32_t magic = load_le32(HDR(magic));
    uint16_t version = load_le16(HDR(version));
    uint16_t header_size = load_le16(HDR(header_size));

    if (magic != PVFREE_MAGIC) {
        return fail(diag, PVFREE_ERR_MAGIC, "magic", magic, PVFREE_MAGIC);
    }
    if (version != PVFREE_VERSION) {
        return fail(diag, PVFREE_ERR_VERSION, "version", version,
                    PVFREE_VERSION);
    }
    if (header_size != PVFREE_HEADER_SIZE) {
        return fail(diag, PVFREE_ERR_HEADER_SIZE, "header_size", header_size,
                    PVFREE_HEADER_SIZE);
    }
    return PVFREE_OK;
}

#undef HDR

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
        return fail(diag, PVFREE_ERR_CONTENT, "content", resp->content, 0);
    }
    if (!(r->host_features & needed)) {
        return fail(diag, PVFREE_ERR_CONTENT, "content", resp->content,
                    needed);
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
        return fail(diag, PVFREE_ERR_RANGE, "nr_frames", 0, 1);
    }
    if (resp->nr_frames > UINT64_MAX - base) {
        return set_diag(diag, PVFREE_ERR_RANGE, "base_pfn", base, 0, 0,
                        resp->nr_frames);
    }
    if (resp->nr_frames > MAX_FRAMES) {
        return fail(diag, PVFREE_ERR_RANGE, "nr_frames", resp->nr_frames,
                    MAX_FRAMES);
    }
    first_ram = ram_find(r, base);
    if (first_ram == r->nr_ram ||
        r->ram[first_ram].pfn >= base + resp->nr_frames) {
        return set_diag(diag, PVFREE_ERR_RANGE, "base_pfn", base, 0, 0,
                        resp->nr_frames);
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
        return set_diag(diag, PVFREE_ERR_EXTENTS, "nr_extents", 0, 0, 1,
                        resp->nr_frames);
    }
    if (resp->nr_extents > limit) {
        return fail(diag, PVFREE_ERR_EXTENTS, "nr_extents",
                    resp->nr_extents, limit);
    }
    if (resp->table_extents == 0) {
        if (resp->nr_extents > PVFREE_INLINE_EXTENTS) {
            return fail(diag, PVFREE_ERR_EXTENTS, "nr_extents",
                        resp->nr_extents, PVFREE_INLINE_EXTENTS);
        }
        return PVFREE_OK;
    }
    if (resp->table_extents > PVFREE_INLINE_EXTENTS) {
        return fail(diag, PVFREE_ERR_EXTENTS, "table_extents",
                    resp->table_extents, PVFREE_INLINE_EXTENTS);
    }
    table_bytes = frames_to_bytes(inline_frames(resp, resp->table_extents));
    if (table_bytes < resp->nr_extents * EXTENT_SIZE) {
        return fail(diag, PVFREE_ERR_EXTENTS, "table_bytes", table_bytes,
                    resp->nr_extents * EXTENT_SIZE);
    }
    return PVFREE_OK;
}

struct extent_fields {
    const char *pfn;
    const char *nr_frames;
};

static const struct extent_fields inline_fields = {
    "extent[n].pfn", "extent[n].nr_frames"
};

static const struct extent_fields table_fields = {
    "table[n].pfn", "table[n].nr_frames"
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
        return fail(diag, PVFREE_ERR_STORAGE, "storage", frames, needed);
    }
    return PVFREE_OK;
}

static enum pvfree_error validate(const struct pvfree_reader *r,
                                  const uint8_t *h, uint64_t request_id,
                                  struct pvfree_response *resp,
                                  struct pvfree_diag *diag)
{
    enum pvfree_error err;

    err = check_identity(h, diag);
    if (err) {
        return err;
    }
    if (resp->request_id != request_id) {
        return fail(diag, PVFREE_ERR_NOT_ANSWERED, "response_id",
                    resp->request_id, request_id);
    }
    if (resp->status != PVFREE_STATUS_OK) {
        return fail(diag, PVFREE_ERR_STATUS, "status", resp->status,
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

    set_diag(diag, PVFREE_OK, NULL, 0, 0, 0, 0);
    err = check_config(r, diag);
    if (err) {
        return err;
    }
    if (!resp) {
        return fail(diag, PVFREE_ERR_CONFIG, "resp", 0, 0);
    }
    if (request_id == 0) {
        return fail(diag, PVFREE_ERR_CONFIG, "request_id", 0, 0);
    }
    memset(resp, 0, sizeof(*resp));
    resp->header_gpa = header_gpa;
    if (header_gpa % FRAME_SIZE ||
        !frames_in_ram(r, header_gpa / FRAME_SIZE, 1)) {
        return fail(diag, PVFREE_ERR_READ, "header_gpa", header_gpa, 0);
    }

    /*
     * The guest writes response_id last, with release semantics: read it
     * first and fence, so the copy below sees at least everything the
     * guest wrote before publishing that id.
     */
    err = read_response_id(r, header_gpa, &first_id, diag);
    if (err) {
        return err;
    }
    atomic_thread_fence(memory_order_acquire);
    err = read_guest(r, "header", header_gpa, r->scratch, PVFREE_HEADER_SIZE,
                     diag);
    if (err) {
        return err;
    }
    decode_response(r->scratch, resp);
    if (resp->request_id != first_id) {
        return fail(diag, PVFREE_ERR_CHANGED, "response_id",
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
            return fail(s->diag, PVFREE_ERR_EXTENTS, "table_extents",
                        resp->table_extents, resp->nr_extents * EXTENT_SIZE);
        }
        t = &resp->inline_extents[s->table_extent];
        left = frames_to_bytes(t->nr_frames) - s->table_offset;
        len = min_u64(count * EXTENT_SIZE - done, left);

        err = read_guest(s->r, "extent table",
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
                           load_le64(e), load_le64(e + 8), s->diag);
        if (err) {
            return err;
        }
        s->data_frames = add_saturating(s->data_frames, load_le64(e + 8));
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
    *pfn = load_le64(e);
    *nr_frames = load_le64(e + 8);
    return PVFREE_OK;
}

static enum pvfree_error next_extent(struct storage *s)
{
    uint64_t pfn;
    uint64_t nr_frames;
    enum pvfree_error err;

    if (s->next_extent == s->resp->nr_extents) {
        return fail(s->diag, PVFREE_ERR_STORAGE, "storage", s->data_frames,
                    bitmap_bytes(s->resp->nr_frames));
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
        err = read_guest(s->r, "bitmap", s->extent_gpa, buf, piece, s->diag);
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
        return set_diag(runs->diag, PVFREE_ERR_CALLBACK, NULL, runs->run_pfn,
                        0, 0, runs->run_frames);
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
        err = scan_word(runs, load_le64(p), (byte + i) * 8);
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
    err = read_response_id(s->r, s->resp->header_gpa, &id, s->diag);
    if (err) {
        return err;
    }
    if (id != s->resp->request_id) {
        return fail(s->diag, PVFREE_ERR_CHANGED, "response_id", id,
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
        return fail(s->diag, PVFREE_ERR_STORAGE, "storage", s->data_frames,
                    needed);
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

    set_diag(diag, PVFREE_OK, NULL, 0, 0, 0, 0);
    err = check_config(r, diag);
    if (err) {
        return err;
    }
    if (!resp || !fn) {
        return fail(diag, PVFREE_ERR_CONFIG, resp ? "fn" : "resp", 0, 0);
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

/* ---- diagnostics ---- */

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
    }
    return "PVFREE_ERR_UNKNOWN";
}

static const char *status_name(uint64_t status)
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

static bool field_is(const struct pvfree_diag *diag, const char *name)
{
    return diag->field && strcmp(diag->field, name) == 0;
}

/* Write diag->field with "[n]" replaced by the index, e.g. "table[7].pfn". */
static int format_field(const struct pvfree_diag *diag, char *buf,
                        size_t size)
{
    const char *field = diag->field ? diag->field : "?";
    const char *n = strstr(field, "[n]");

    if (!n) {
        return snprintf(buf, size, "%s", field);
    }
    return snprintf(buf, size, "%.*s[%" PRIu64 "]%s", (int)(n - field),
                    field, diag->index, n + 3);
}

static int format_extent(const struct pvfree_diag *diag, const char *field,
                         char *buf, size_t size)
{
    if (diag->value == 0 && strstr(field, ".nr_frames")) {
        return snprintf(buf, size, "%s=0: an extent is never empty", field);
    }
    if (strstr(field, ".nr_frames")) {
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
    if (field_is(diag, "header_gpa")) {
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

static int format_extents(const struct pvfree_diag *diag, char *buf,
                          size_t size)
{
    if (field_is(diag, "nr_extents") && diag->value == 0) {
        return snprintf(buf, size,
                        "nr_extents=0 cannot store a bitmap of nr_frames=0x%"
                        PRIx64, diag->nr_frames);
    }
    if (field_is(diag, "table_bytes")) {
        return snprintf(buf, size,
                        "the table extents hold 0x%" PRIx64 " bytes, the "
                        "extent table needs 0x%" PRIx64, diag->value,
                        diag->expected);
    }
    return snprintf(buf, size, "%s=%" PRIu64 " exceeds the limit %" PRIu64,
                    diag->field ? diag->field : "?", diag->value,
                    diag->expected);
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
                        diag->value, status_name(diag->value));
    case PVFREE_ERR_CONTENT:
        return format_content(diag, buf, size);
    case PVFREE_ERR_RANGE:
        if (field_is(diag, "base_pfn") &&
            diag->nr_frames > UINT64_MAX - diag->value) {
            return snprintf(buf, size,
                            "base_pfn=0x%" PRIx64 " + nr_frames=0x%" PRIx64
                            " overflows", diag->value, diag->nr_frames);
        }
        if (field_is(diag, "base_pfn")) {
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
    case PVFREE_ERR_EXTENTS:
        return format_extents(diag, buf, size);
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
    }
    return snprintf(buf, size, "unknown error %d", (int)diag->error);
}

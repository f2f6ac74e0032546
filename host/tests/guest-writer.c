/* SPDX-License-Identifier: MIT */
/*
 * Test stand-in for the guest driver's response writer: see
 * guest-writer.h.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <stddef.h>
#include <string.h>

#include "guest-writer.h"

void gw_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void gw_put_le32(uint8_t *p, uint32_t v)
{
    gw_put_le16(p, (uint16_t)v);
    gw_put_le16(p + 2, (uint16_t)(v >> 16));
}

void gw_put_le64(uint8_t *p, uint64_t v)
{
    gw_put_le32(p, (uint32_t)v);
    gw_put_le32(p + 4, (uint32_t)(v >> 32));
}

void gw_write_bytes(const struct gw_image *img, uint64_t gpa,
                    const void *buf, uint64_t len)
{
    uint64_t n;

    if (gpa >= img->size) {
        return;
    }
    n = len < img->size - gpa ? len : img->size - gpa;
    if (buf) {
        memcpy(img->mem + gpa, buf, n);
    } else {
        memset(img->mem + gpa, 0, n);
    }
}

/* Bytes in @nr_frames frames, saturating: guests may claim anything. */
static uint64_t frame_bytes(uint64_t nr_frames)
{
    if (nr_frames >= UINT64_MAX / PVFREE_FRAME_SIZE) {
        return UINT64_MAX;
    }
    return nr_frames * PVFREE_FRAME_SIZE;
}

static uint64_t frame_gpa(uint64_t pfn)
{
    return pfn >= UINT64_MAX / PVFREE_FRAME_SIZE ? UINT64_MAX
                                                 : pfn * PVFREE_FRAME_SIZE;
}

static void poke(const struct gw_image *img, uint64_t gpa, const uint8_t *b,
                 unsigned len)
{
    gw_write_bytes(img, gpa, b, len);
}

void gw_poke16(const struct gw_image *img, uint64_t header_gpa,
               uint64_t offset, uint16_t v)
{
    uint8_t b[2];

    gw_put_le16(b, v);
    poke(img, header_gpa + offset, b, sizeof(b));
}

void gw_poke32(const struct gw_image *img, uint64_t header_gpa,
               uint64_t offset, uint32_t v)
{
    uint8_t b[4];

    gw_put_le32(b, v);
    poke(img, header_gpa + offset, b, sizeof(b));
}

void gw_poke64(const struct gw_image *img, uint64_t header_gpa,
               uint64_t offset, uint64_t v)
{
    uint8_t b[8];

    gw_put_le64(b, v);
    poke(img, header_gpa + offset, b, sizeof(b));
}

void gw_set_bits(uint8_t *bitmap, uint64_t first, uint64_t count)
{
    uint64_t i;

    for (i = first; i < first + count; i++) {
        bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
    }
}

static uint64_t count_bits(const uint8_t *bitmap, uint64_t len)
{
    uint64_t n = 0;
    uint64_t i;

    for (i = 0; bitmap && i < len * 8; i++) {
        n += (bitmap[i / 8] >> (i % 8)) & 1;
    }
    return n;
}

/*
 * Write @len bytes of @src (NULL: zeros) into the storage described by
 * @extents, one extent after the other, each in ascending order.
 */
static void write_storage(const struct gw_image *img,
                          const struct gw_extent *extents, uint32_t nr,
                          const uint8_t *src, uint64_t len)
{
    uint64_t done = 0;
    uint32_t i;

    for (i = 0; i < nr && done < len; i++) {
        uint64_t bytes = frame_bytes(extents[i].nr_frames);
        uint64_t n = len - done < bytes ? len - done : bytes;

        gw_write_bytes(img, frame_gpa(extents[i].pfn),
                       src ? src + done : NULL, n);
        done += n;
    }
}

static uint64_t storage_bytes(const struct gw_extent *extents, uint32_t nr)
{
    uint64_t bytes = 0;
    uint32_t i;

    for (i = 0; i < nr; i++) {
        uint64_t more = frame_bytes(extents[i].nr_frames);

        bytes = more > UINT64_MAX - bytes ? UINT64_MAX : bytes + more;
    }
    return bytes;
}

static void write_extents(uint8_t *slots, const struct gw_extent *extents,
                          uint32_t nr)
{
    uint32_t i;

    for (i = 0; i < nr && i < PVFREE_INLINE_EXTENTS; i++) {
        gw_put_le64(slots + i * 16, extents[i].pfn);
        gw_put_le64(slots + i * 16 + 8, extents[i].nr_frames);
    }
}

static void write_table(const struct gw_image *img,
                        const struct gw_response *resp)
{
    uint8_t entry[16];
    uint32_t t = 0;
    uint64_t offset = 0;
    uint32_t i;

    for (i = 0; i < resp->nr_data; i++) {
        gw_put_le64(entry, resp->data[i].pfn);
        gw_put_le64(entry + 8, resp->data[i].nr_frames);
        while (t < resp->nr_table &&
               offset >= frame_bytes(resp->table[t].nr_frames)) {
            t++;
            offset = 0;
        }
        if (t == resp->nr_table) {
            return;
        }
        if (frame_gpa(resp->table[t].pfn) < UINT64_MAX - offset) {
            gw_write_bytes(img, frame_gpa(resp->table[t].pfn) + offset,
                           entry, sizeof(entry));
        }
        offset += sizeof(entry);
    }
}

void gw_write_response(const struct gw_image *img, uint64_t header_gpa,
                       const struct gw_response *resp)
{
    uint8_t h[PVFREE_HEADER_SIZE];

    memset(h, 0, sizeof(h));
#define AT(field) (h + offsetof(struct pvfree_header, field))
    gw_put_le32(AT(magic), PVFREE_MAGIC);
    gw_put_le16(AT(version), PVFREE_VERSION);
    gw_put_le16(AT(header_size), PVFREE_HEADER_SIZE);
    gw_put_le64(AT(guest_features), PVFREE_GF_STATS);
    gw_put_le64(AT(host_features), resp->host_features);
    gw_put_le64(AT(request_id), resp->request_id);
    gw_put_le32(AT(status), resp->status);
    *AT(content) = resp->content;
    *AT(poison) = resp->poison;
    gw_put_le64(AT(base_pfn), resp->base_pfn);
    gw_put_le64(AT(nr_frames), resp->nr_frames);
    gw_put_le32(AT(nr_extents), resp->nr_data);
    gw_put_le32(AT(table_extents), resp->table ? resp->nr_table : 0);
    gw_put_le64(AT(free_frames), count_bits(resp->bitmap, resp->bitmap_len));
    gw_put_le64(AT(snapshot_us), 1234);
    gw_put_le32(AT(max_lock_hold_us), 56);
    if (resp->table) {
        write_extents(AT(extents), resp->table, resp->nr_table);
    } else {
        write_extents(AT(extents), resp->data, resp->nr_data);
    }
#undef AT

    /* storage first: a bad extent may cover the header, which then wins */
    write_storage(img, resp->data, resp->nr_data, NULL,
                  storage_bytes(resp->data, resp->nr_data));
    write_storage(img, resp->data, resp->nr_data, resp->bitmap,
                  resp->bitmap ? resp->bitmap_len : 0);
    if (resp->table) {
        write_table(img, resp);
    }
    gw_write_bytes(img, header_gpa, h, sizeof(h));

    /* response_id last, as the guest publishes it */
    gw_poke64(img, header_gpa, offsetof(struct pvfree_header, response_id),
              resp->request_id);
}

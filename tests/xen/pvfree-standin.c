// SPDX-License-Identifier: MIT
/*
 * pvfree-standin: a user-space stand-in for the guest side of pvfree's
 * xenstore binding, for testing libxenguest before the Linux driver's
 * xenstore transport exists.  Runs as root in a Xen domU.
 *
 * It does not know the kernel's free pages.  Instead it owns two locked
 * buffers: USED (a pattern it keeps) and FREE (a pattern it declares free
 * and never touches again).  It registers a header page it owns, answers
 * every request with a bitmap of exactly the FREE buffer's frames, and on
 * request checks its buffers: after a migration that skipped the FREE
 * frames they read as zero, while USED must be intact.  Frame numbers
 * come from /proc/self/pagemap (the guest's PFNs, as the binding wants).
 *
 * xenstore is spoken directly over /dev/xen/xenbus, with paths relative
 * to the domain's home.  Keys besides data/pvfree/ (test control):
 *   data/pvfree-test/mode    answer (default) | silent | off
 *   data/pvfree-test/check   any new value: check the buffers, then write
 *   data/pvfree-test/result  "check=V used_ok=N/N free_zero=Z/M"
 *
 * usage: pvfree-standin USED_MIB FREE_MIB
 *
 * Copyright (c) 2026 The pvfree authors
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pvfree/abi.h"

#define PAGE 4096u

#include "xs-wire.h"

static int xs_read_key(const char *key, char *val, size_t size)
{
    return xs_req(XS_READ, key, NULL, val, size);
}

static int xs_write_key(const char *key, const char *val)
{
    return xs_req(XS_WRITE, key, val, NULL, 0);
}

static void *locked(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED,
                   -1, 0);

    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    memset(p, 0, bytes);
    return p;
}

static uint64_t pfn_of(int pm, void *addr)
{
    uint64_t e;

    if (pread(pm, &e, 8, ((uintptr_t)addr / PAGE) * 8) != 8 ||
        !(e >> 63)) {
        fprintf(stderr, "standin: no pfn for %p\n", addr);
        exit(1);
    }
    return e & ((1ull << 55) - 1);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    size_t used_pages, free_pages, i, bm_pages;
    uint8_t *used, *freebuf, *bitmap;
    struct pvfree_header *h;
    uint64_t *free_pfn, lo = UINT64_MAX, hi = 0, header_pfn;
    uint64_t answered = 0, nr_frames;
    unsigned nr_ext = 0;
    char val[256], last_check[256] = "", mode[32] = "answer";
    const char *selftest;
    int pm, registered = 0, tick = 0;

    if (argc != 3) {
        fprintf(stderr, "usage: pvfree-standin USED_MIB FREE_MIB\n");
        return 2;
    }
    used_pages = strtoul(argv[1], NULL, 0) * 256;
    free_pages = strtoul(argv[2], NULL, 0) * 256;

    /*
     * PVFREE_STANDIN_SELFTEST=FILE (host, no xenstore): answer request 1
     * at once and dump the frames a host would read, for standin-check.
     */
    selftest = getenv("PVFREE_STANDIN_SELFTEST");
    xs_fd = selftest ? 0 : open("/dev/xen/xenbus", O_RDWR);
    pm = open("/proc/self/pagemap", O_RDONLY);
    if (xs_fd < 0 || pm < 0) {
        perror("standin: /dev/xen/xenbus or pagemap");
        return 1;
    }

    h = locked(PAGE);
    used = locked(used_pages * PAGE);
    freebuf = locked(free_pages * PAGE);
    for (i = 0; i < used_pages * PAGE; i++)
        used[i] = (uint8_t)(i / PAGE) | 1;
    memset(freebuf, 0xab, free_pages * PAGE);

    free_pfn = calloc(free_pages, sizeof(*free_pfn));
    for (i = 0; i < free_pages; i++) {
        free_pfn[i] = pfn_of(pm, freebuf + i * PAGE);
        if (free_pfn[i] < lo)
            lo = free_pfn[i];
        if (free_pfn[i] > hi)
            hi = free_pfn[i];
    }
    nr_frames = hi - lo + 1;
    bm_pages = ((nr_frames + 7) / 8 + PAGE - 1) / PAGE;
    bitmap = locked(bm_pages * PAGE);
    for (i = 0; i < bm_pages; i++) {
        uint64_t pfn = pfn_of(pm, bitmap + i * PAGE);

        if (nr_ext && h->extents[nr_ext - 1].pfn +
                      h->extents[nr_ext - 1].nr_frames == pfn) {
            h->extents[nr_ext - 1].nr_frames++;
            continue;
        }
        if (nr_ext == PVFREE_INLINE_EXTENTS) {
            fprintf(stderr, "standin: bitmap too fragmented\n");
            return 1;
        }
        h->extents[nr_ext].pfn = pfn;
        h->extents[nr_ext].nr_frames = 1;
        nr_ext++;
    }
    header_pfn = pfn_of(pm, h);

    h->magic = PVFREE_MAGIC;
    h->version = PVFREE_VERSION;
    h->header_size = PVFREE_HEADER_SIZE;
    h->guest_features = PVFREE_GF_STATS;
    printf("standin: header pfn %#llx, %zu used + %zu free pages, "
           "free pfns %#llx-%#llx, bitmap %zu pages in %u extents\n",
           (unsigned long long)header_pfn, used_pages, free_pages,
           (unsigned long long)lo, (unsigned long long)hi, bm_pages,
           nr_ext);
    fflush(stdout);

    if (selftest) {
        registered = 1;
        h->request_id = 1;
    }

    for (;; sleep_ms(10), tick++) {
        uint64_t req;

        if (!selftest && tick % 50 == 0) {
            char want[32];

            if (xs_read_key("data/pvfree-test/mode", mode, sizeof(mode)))
                strcpy(mode, "answer");
            snprintf(want, sizeof(want), "%llu",
                     (unsigned long long)header_pfn);
            if (!strcmp(mode, "off")) {
                if (registered) {
                    xs_req(XS_RM, PVFREE_XS_DIR, NULL, NULL, 0);
                    registered = 0;
                    printf("standin: unregistered\n");
                }
            } else if (xs_read_key(PVFREE_XS_HEADER_FRAME, val, sizeof(val)) ||
                       strcmp(val, want)) {
                /* first start, or resumed after a migration */
                xs_write_key(PVFREE_XS_VERSION, "1");
                xs_write_key(PVFREE_XS_HEADER_FRAME, want);
                registered = 1;
                printf("standin: registered header-frame %s (mode %s)\n",
                       want, mode);
            }
            if (!xs_read_key("data/pvfree-test/check", val, sizeof(val)) &&
                strcmp(val, last_check)) {
                size_t bad = 0, zero = 0, pat = 0, j;
                char res[160];

                snprintf(last_check, sizeof(last_check), "%s", val);
                for (i = 0; i < used_pages; i++)
                    for (j = 0; j < PAGE; j++)
                        if (used[i * PAGE + j] != ((uint8_t)i | 1)) {
                            bad++;
                            break;
                        }
                for (i = 0; i < free_pages; i++) {
                    const uint8_t *p = freebuf + i * PAGE;

                    if (p[0] == 0 && !memcmp(p, p + 1, PAGE - 1))
                        zero++;
                    else if (p[0] == 0xab && !memcmp(p, p + 1, PAGE - 1))
                        pat++;
                }
                snprintf(res, sizeof(res),
                         "check=%s used_ok=%zu/%zu free_zero=%zu/%zu "
                         "free_pattern=%zu/%zu", last_check,
                         used_pages - bad, used_pages, zero, free_pages,
                         pat, free_pages);
                xs_write_key("data/pvfree-test/result", res);
                printf("standin: %s\n", res);
            }
            fflush(stdout);
        }

        req = __atomic_load_n(&h->request_id, __ATOMIC_ACQUIRE);
        if (!registered || req == 0 || req == answered ||
            strcmp(mode, "answer"))
            continue;

        /* Answer request @req: the FREE buffer, exactly. */
        __atomic_store_n(&h->response_id, 0, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        memset(bitmap, 0, bm_pages * PAGE);
        for (i = 0; i < free_pages; i++) {
            uint64_t bit = free_pfn[i] - lo;

            bitmap[bit / 8] |= 1u << (bit % 8);
        }
        h->status = PVFREE_STATUS_OK;
        h->content = PVFREE_CONTENT_ANY;
        h->base_pfn = lo;
        h->nr_frames = nr_frames;
        h->nr_extents = nr_ext;
        h->table_extents = 0;
        h->free_frames = free_pages;
        h->snapshot_us = 1;
        h->max_lock_hold_us = 0;
        __atomic_store_n(&h->response_id, req, __ATOMIC_RELEASE);
        answered = req;
        if (selftest) {
            /* header frame, bitmap frames (pfn, data), then FREE's pfns */
            FILE *f = fopen(selftest, "w");
            uint64_t n = 1 + bm_pages;

            fwrite(&n, 8, 1, f);
            fwrite(&header_pfn, 8, 1, f);
            fwrite(h, PAGE, 1, f);
            for (i = 0; i < bm_pages; i++) {
                uint64_t pfn = pfn_of(pm, bitmap + i * PAGE);

                fwrite(&pfn, 8, 1, f);
                fwrite(bitmap + i * PAGE, PAGE, 1, f);
            }
            n = free_pages;
            fwrite(&n, 8, 1, f);
            fwrite(free_pfn, 8, free_pages, f);
            fclose(f);
            return 0;
        }
        snprintf(val, sizeof(val), "%llu", (unsigned long long)req);
        xs_write_key(PVFREE_XS_RESPONSE, val);
        printf("standin: answered request %s\n", val);
        fflush(stdout);
    }
}

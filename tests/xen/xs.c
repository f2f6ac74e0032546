// SPDX-License-Identifier: MIT
/*
 * xs: a minimal static xenstore client for the test domU (busybox has
 * none), speaking the wire protocol over /dev/xen/xenbus.  Paths are
 * relative to the domain's home, as everywhere in tests/xen.
 *
 *   xs read KEY                 print the value; rc 1 if it does not exist
 *   xs write KEY VALUE
 *   xs rm KEY
 *   xs wait KEY OLD TIMEOUT_S   poll (200 ms) until KEY exists and differs
 *                               from OLD (may be ""), print it; rc 1 on
 *                               timeout
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* xen/include/public/io/xs_wire.h */
enum { XS_READ = 2, XS_WRITE = 11, XS_RM = 13, XS_ERROR = 16 };
struct xsd_sockmsg {
    uint32_t type, req_id, tx_id, len;
};

#define XS_MAX 4096

static int xs_fd = -1;

static int xs_req(uint32_t type, const char *a, const char *b,
                  char *reply, size_t rsize)
{
    static uint32_t id;
    char buf[XS_MAX + sizeof(struct xsd_sockmsg)];
    struct xsd_sockmsg m = { .type = type, .req_id = ++id };
    size_t la = strlen(a) + 1, lb = b ? strlen(b) : 0, off;
    ssize_t n;

    if (la + lb > XS_MAX)
        return -1;
    m.len = la + lb;
    memcpy(buf, &m, sizeof(m));
    memcpy(buf + sizeof(m), a, la);
    if (b)
        memcpy(buf + sizeof(m) + la, b, lb);
    if (write(xs_fd, buf, sizeof(m) + m.len) != (ssize_t)(sizeof(m) + m.len))
        return -1;
    for (off = 0; off < sizeof(m); off += n) {
        n = read(xs_fd, (char *)&m + off, sizeof(m) - off);
        if (n <= 0)
            return -1;
    }
    if (m.len > sizeof(buf))
        return -1;
    for (off = 0; off < m.len; off += n) {
        n = read(xs_fd, buf + off, m.len - off);
        if (n <= 0)
            return -1;
    }
    if (m.type == XS_ERROR)
        return -1;
    if (reply) {
        size_t l = m.len < rsize - 1 ? m.len : rsize - 1;

        memcpy(reply, buf, l);
        reply[l] = 0;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int usage(void)
{
    fprintf(stderr, "usage: xs read KEY | write KEY VALUE | rm KEY | "
                    "wait KEY OLD TIMEOUT_S\n");
    return 2;
}

int main(int argc, char **argv)
{
    static char val[XS_MAX + 1];

    if (argc < 3)
        return usage();
    xs_fd = open("/dev/xen/xenbus", O_RDWR);
    if (xs_fd < 0) {
        perror("xs: /dev/xen/xenbus");
        return 2;
    }
    if (!strcmp(argv[1], "read") && argc == 3) {
        if (xs_req(XS_READ, argv[2], NULL, val, sizeof(val)))
            return 1;
        printf("%s\n", val);
        return 0;
    }
    if (!strcmp(argv[1], "write") && argc == 4)
        return xs_req(XS_WRITE, argv[2], argv[3], NULL, 0) ? 1 : 0;
    if (!strcmp(argv[1], "rm") && argc == 3)
        return xs_req(XS_RM, argv[2], NULL, NULL, 0) ? 1 : 0;
    if (!strcmp(argv[1], "wait") && argc == 5) {
        double end = now_s() + atof(argv[4]);
        struct timespec ts = { 0, 200 * 1000000L };

        for (;;) {
            if (!xs_req(XS_READ, argv[2], NULL, val, sizeof(val)) &&
                strcmp(val, argv[3])) {
                printf("%s\n", val);
                return 0;
            }
            if (now_s() > end)
                return 1;
            nanosleep(&ts, NULL);
        }
    }
    return usage();
}

// SPDX-License-Identifier: MIT
/*
 * The xenstore wire protocol over /dev/xen/xenbus, just enough for the
 * test domU's static programs (xs.c, pvfree-standin.c): one request,
 * one reply, no transactions, no watches.  Values are from
 * xen/include/public/io/xs_wire.h.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#ifndef PVFREE_TESTS_XS_WIRE_H
#define PVFREE_TESTS_XS_WIRE_H

#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

enum { XS_READ = 2, XS_WRITE = 11, XS_RM = 13, XS_ERROR = 16 };
struct xsd_sockmsg {
    uint32_t type, req_id, tx_id, len;
};

#define XS_MAX 4096

/* /dev/xen/xenbus, opened by the program */
static int xs_fd = -1;

/*
 * Send request TYPE with payload A (NUL included) and B (not), read the
 * reply into REPLY (NUL-terminated, cut to RSIZE).  Returns 0, or -1 on
 * an I/O error, an oversized message or an XS_ERROR reply.
 */
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

#endif /* PVFREE_TESTS_XS_WIRE_H */

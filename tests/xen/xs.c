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

#include "xs-wire.h"

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

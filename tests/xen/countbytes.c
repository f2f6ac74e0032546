// SPDX-License-Identifier: MIT
/*
 * countbytes FILE: copy stdin to stdout and write "BYTES SECONDS" (bytes
 * copied, seconds from the first to the last byte) to FILE at end of input
 * or when killed.  Sits in the `xl migrate' pipe to measure the stream.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned long long total;
static struct timespec first, last;
static const char *out;

static double secs(const struct timespec *a, const struct timespec *b)
{
    return (b->tv_sec - a->tv_sec) + (b->tv_nsec - a->tv_nsec) / 1e9;
}

static void report(void)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%llu %.3f\n", total,
                     total ? secs(&first, &last) : 0.0);
    int fd;

    /* async-signal-safe: no stdio on the file */
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (write(fd, buf, n) < 0) {
            /* nothing to do */
        }
        close(fd);
    }
}

static void on_signal(int sig)
{
    report();
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv)
{
    static char buf[1 << 16];

    if (argc != 2) {
        fprintf(stderr, "usage: countbytes FILE\n");
        return 2;
    }
    out = argv[1];
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, on_signal);
    signal(SIGHUP, on_signal);

    for (;;) {
        ssize_t n = read(0, buf, sizeof(buf)), off = 0;

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &last);
        if (total == 0)
            first = last;
        total += n;
        while (off < n) {
            ssize_t w = write(1, buf + off, n - off);

            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                report();
                return 1;
            }
            off += w;
        }
        if ((total >> 24) != ((total - n) >> 24))
            report();   /* every 16 MiB, in case we are killed hard */
    }
    report();
    return 0;
}

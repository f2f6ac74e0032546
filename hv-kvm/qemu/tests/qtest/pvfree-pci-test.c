/*
 * QTest testcase for the pvfree-pci device
 *
 * Copyright (c) 2026 The pvfree authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The test plays the guest: it writes a pvfree header into guest RAM,
 * registers it through BAR 0, starts a migration to a file and answers
 * (or does not answer) the request the device publishes.  Nothing runs in
 * the VM, so every byte of guest RAM the test does not write is zero.
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qobject/qdict.h"
#include "pvfree/abi.h"

#define HEADER_GPA      0x1000000ULL    /* 16 MiB */
#define BITMAP_GPA      0x2000000ULL    /* 32 MiB: one frame of bitmap */
#define BASE_PFN        0x4000ULL       /* bit 0 = frame at 64 MiB */
#define FREE_FRAMES     4096ULL         /* frames 64..80 MiB marked free */
#define DEVFN           QPCI_DEVFN(4, 0)

typedef struct Guest {
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
    char *file;
} Guest;

static void guest_start(Guest *g, const char *args)
{
    int fd;

    fd = g_file_open_tmp("pvfree-pci-test-XXXXXX", &g->file, NULL);
    g_assert(fd >= 0);
    close(fd);
    g->qts = qtest_initf("-machine pc -nodefaults %s", args);
    g->bus = qpci_new_pc(g->qts, NULL);
    g->dev = qpci_device_find(g->bus, DEVFN);
    g_assert(g->dev);
    qpci_device_enable(g->dev);
    g->bar = qpci_iomap(g->dev, PVFREE_PCI_BAR, NULL);
}

static void guest_stop(Guest *g)
{
    g_free(g->dev);
    qpci_free_pc(g->bus);
    qtest_quit(g->qts);
    unlink(g->file);
    g_free(g->file);
}

static uint32_t reg_read(Guest *g, uint64_t reg)
{
    return qpci_io_readl(g->dev, g->bar, reg);
}

static void reg_write(Guest *g, uint64_t reg, uint32_t val)
{
    qpci_io_writel(g->dev, g->bar, reg, val);
}

/* Write a valid header at @gpa and register it. */
static void guest_register(Guest *g, uint64_t gpa)
{
    qtest_memset(g->qts, gpa, 0, PVFREE_HEADER_SIZE);
    qtest_writel(g->qts, gpa, PVFREE_MAGIC);
    qtest_writew(g->qts, gpa + 4, PVFREE_VERSION);
    qtest_writew(g->qts, gpa + 6, PVFREE_HEADER_SIZE);
    reg_write(g, PVFREE_PCI_REG_HEADER_LO, (uint32_t)gpa);
    reg_write(g, PVFREE_PCI_REG_HEADER_HI, gpa >> 32);
    reg_write(g, PVFREE_PCI_REG_COMMAND, PVFREE_PCI_CMD_REGISTER);
    g_assert_cmphex(reg_read(g, PVFREE_PCI_REG_STATUS), ==,
                    PVFREE_PCI_STATUS_REGISTERED);
}

static void migrate_start(Guest *g)
{
    g_autofree char *uri = g_strdup_printf("file:%s", g->file);

    qtest_qmp_assert_success(g->qts, "{ 'execute': 'migrate', 'arguments': "
                             "{ 'uri': %s } }", uri);
}

/* Wait up to 20 s for the device to publish a request; return its id. */
static uint64_t wait_request(Guest *g, uint64_t header)
{
    for (int i = 0; i < 2000; i++) {
        uint64_t id = qtest_readq(g->qts, header + 0x18);

        if (id) {
            return id;
        }
        g_usleep(10 * 1000);
    }
    g_assert_not_reached();
}

/*
 * Answer @id with @frames bitmap frames at @bitmap: their first @len bytes
 * are @pattern, the rest zero.
 */
static void guest_answer_bitmap(Guest *g, uint64_t header, uint64_t bitmap,
                                uint64_t frames, uint64_t id, uint8_t content,
                                uint8_t pattern, size_t len)
{
    qtest_memset(g->qts, bitmap, 0, frames * PVFREE_FRAME_SIZE);
    qtest_memset(g->qts, bitmap, pattern, len);
    qtest_writel(g->qts, header + 0x38, PVFREE_STATUS_OK);
    qtest_writeb(g->qts, header + 0x3c, content);
    qtest_writeq(g->qts, header + 0x40, BASE_PFN);
    qtest_writeq(g->qts, header + 0x48, frames * PVFREE_FRAME_SIZE * 8);
    qtest_writel(g->qts, header + 0x50, 1);
    qtest_writeq(g->qts, header + 0x100, bitmap >> PVFREE_FRAME_SHIFT);
    qtest_writeq(g->qts, header + 0x108, frames);
    qtest_writeq(g->qts, header + 0x30, id);
    reg_write(g, PVFREE_PCI_REG_COMMAND, PVFREE_PCI_CMD_RESPONSE);
}

/* Answer @id: FREE_FRAMES frames free. */
static void guest_answer(Guest *g, uint64_t header, uint64_t bitmap,
                         uint64_t id, uint8_t content)
{
    guest_answer_bitmap(g, header, bitmap, 1, id, content, 0xff,
                        FREE_FRAMES / 8);
}

static char *migration_status(QTestState *qts)
{
    QDict *rsp = qtest_qmp(qts, "{ 'execute': 'query-migrate' }");
    QDict *ret = qdict_get_qdict(rsp, "return");
    char *status = g_strdup(qdict_haskey(ret, "status") ?
                            qdict_get_str(ret, "status") : "none");

    qobject_unref(rsp);
    return status;
}

/* Wait up to @ms for the migration to reach @want; fail on "failed". */
static void wait_migration(QTestState *qts, const char *want, int ms)
{
    int64_t end = g_get_monotonic_time() + ms * 1000LL;

    for (;;) {
        g_autofree char *st = migration_status(qts);

        if (!strcmp(st, want)) {
            return;
        }
        g_assert_cmpstr(st, !=, "failed");
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        g_usleep(10 * 1000);
    }
}

static QDict *query_pvfree(Guest *g)
{
    QDict *rsp = qtest_qmp(g->qts, "{ 'execute': 'query-pvfree' }");
    QDict *ret = qdict_get_qdict(rsp, "return");

    qobject_ref(ret);
    qobject_unref(rsp);
    return ret;
}

static char *last_status(Guest *g)
{
    QDict *info = query_pvfree(g);
    char *st = g_strdup(qdict_get_str(info, "last-status"));

    qobject_unref(info);
    return st;
}

static bool log_has(const char *path, const char *what)
{
    g_autofree char *text = NULL;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    return strstr(text, what) != NULL;
}

/* The guest answers: the frames it marked free are not sent. */
static void test_answer(void)
{
    g_autofree char *log = g_strdup_printf("%s/pvfree-pci-test-%d.log",
                                           g_get_tmp_dir(), getpid());
    g_autofree char *args = g_strdup_printf(
        "-m 256M -device pvfree-pci,addr=04.0 "
        "-d trace:precopy_rearm_dirty_tracking -D %s", log);
    Guest g = { 0 };
    QDict *info;
    uint64_t id;

    guest_start(&g, args);
    guest_register(&g, HEADER_GPA);
    migrate_start(&g);
    id = wait_request(&g, HEADER_GPA);
    g_assert_cmphex(qtest_readq(g.qts, HEADER_GPA + 0x10) &
                    PVFREE_HF_ZERO_FILL, ==, PVFREE_HF_ZERO_FILL);
    guest_answer(&g, HEADER_GPA, BITMAP_GPA, id, PVFREE_CONTENT_ANY);
    wait_migration(g.qts, "completed", 60000);

    info = query_pvfree(&g);
    g_assert_cmpstr(qdict_get_str(info, "last-status"), ==, "ok");
    g_assert_cmpint(qdict_get_int(info, "requests"), ==, 1);
    g_assert_cmpint(qdict_get_int(info, "pages-skipped"), ==, FREE_FRAMES);
    qobject_unref(info);
    /* Dirty tracking was re-armed for the request. */
    g_assert(log_has(log, "precopy_rearm_dirty_tracking"));
    guest_stop(&g);
    unlink(log);
}

/* The guest never answers: the migration goes on after timeout-ms. */
static void test_timeout(void)
{
    Guest g = { 0 };
    QDict *info;

    guest_start(&g, "-m 256M -device pvfree-pci,addr=04.0,timeout-ms=300");
    guest_register(&g, HEADER_GPA);
    migrate_start(&g);
    wait_request(&g, HEADER_GPA);
    wait_migration(g.qts, "completed", 60000);
    info = query_pvfree(&g);
    g_assert_cmpstr(qdict_get_str(info, "last-status"), ==, "timeout");
    g_assert_cmpint(qdict_get_int(info, "pages-skipped"), ==, 0);
    g_assert_cmpint(qdict_get_int(info, "wait-ms"), >=, 300);
    qobject_unref(info);
    guest_stop(&g);
}

/*
 * The guest keeps ringing the doorbell without answering: the wait still
 * ends at timeout-ms (plus the test's own polling), not when it stops.
 */
static void test_doorbell_storm(void)
{
    Guest g = { 0 };
    int64_t start, elapsed_ms;
    bool timed_out = false;

    guest_start(&g, "-m 256M -device pvfree-pci,addr=04.0,timeout-ms=500");
    guest_register(&g, HEADER_GPA);
    migrate_start(&g);
    wait_request(&g, HEADER_GPA);
    start = g_get_monotonic_time();
    /* Ring for up to 4 s; stop as soon as the device gave up. */
    while (!timed_out && g_get_monotonic_time() - start < 4000000) {
        g_autofree char *st = NULL;

        for (int i = 0; i < 50; i++) {
            reg_write(&g, PVFREE_PCI_REG_COMMAND, PVFREE_PCI_CMD_RESPONSE);
        }
        st = last_status(&g);
        timed_out = !strcmp(st, "timeout");
    }
    elapsed_ms = (g_get_monotonic_time() - start) / 1000;
    g_assert_true(timed_out);
    g_assert_cmpint(elapsed_ms, <, 500 + 1000);
    wait_migration(g.qts, "completed", 60000);
    guest_stop(&g);
}

/* migrate_cancel ends the wait long before timeout-ms. */
static void test_cancel(void)
{
    Guest g = { 0 };
    int64_t start;
    bool cancelled = false;

    guest_start(&g, "-m 256M -device pvfree-pci,addr=04.0,timeout-ms=60000");
    guest_register(&g, HEADER_GPA);
    migrate_start(&g);
    wait_request(&g, HEADER_GPA);
    qtest_qmp_assert_success(g.qts, "{ 'execute': 'migrate_cancel' }");
    start = g_get_monotonic_time();
    while (!cancelled && g_get_monotonic_time() - start < 5000000) {
        g_autofree char *st = last_status(&g);

        cancelled = !strcmp(st, "cancelled");
        g_usleep(10 * 1000);
    }
    g_assert_true(cancelled);
    wait_migration(g.qts, "cancelled", 10000);
    guest_stop(&g);
}

/*
 * Every other frame of 1 GiB free (about 122000 runs in 8 bitmap frames)
 * with max-parse-ms=1: reading stops early (here after 500 to 7000 runs),
 * and what was skipped stays skipped.
 */
static void test_parse_limit(void)
{
    Guest g = { 0 };
    QDict *info;
    uint64_t id;

    guest_start(&g, "-m 1G -device pvfree-pci,addr=04.0,max-parse-ms=1");
    guest_register(&g, HEADER_GPA);
    migrate_start(&g);
    id = wait_request(&g, HEADER_GPA);
    guest_answer_bitmap(&g, HEADER_GPA, BITMAP_GPA, 8, id,
                        PVFREE_CONTENT_ANY, 0x55, 8 * PVFREE_FRAME_SIZE);
    wait_migration(g.qts, "completed", 60000);
    info = query_pvfree(&g);
    g_assert_cmpstr(qdict_get_str(info, "last-status"), ==, "parse-limit");
    g_assert_cmpint(qdict_get_int(info, "pages-skipped"), <, 100000);
    qobject_unref(info);
    guest_stop(&g);
}

/*
 * No guest driver: nothing is published and dirty tracking is not
 * re-armed for nothing.
 */
static void test_not_registered(void)
{
    g_autofree char *log = g_strdup_printf("%s/pvfree-pci-test-nr-%d.log",
                                           g_get_tmp_dir(), getpid());
    g_autofree char *args = g_strdup_printf(
        "-m 256M -device pvfree-pci,addr=04.0 "
        "-d trace:precopy_rearm_dirty_tracking -D %s", log);
    Guest g = { 0 };
    QDict *info;

    guest_start(&g, args);
    migrate_start(&g);
    wait_migration(g.qts, "completed", 60000);
    info = query_pvfree(&g);
    g_assert_cmpstr(qdict_get_str(info, "last-status"), ==, "not-registered");
    g_assert_cmpint(qdict_get_int(info, "requests"), ==, 0);
    qobject_unref(info);
    g_assert_false(log_has(log, "precopy_rearm_dirty_tracking"));
    guest_stop(&g);
    unlink(log);
}

/*
 * Guest RAM in two backends, the storage in the shared one: the answer
 * is used, and only frames of the private one are skipped.
 */
static void test_mixed_backends(void)
{
    Guest g = { 0 };
    uint64_t id;
    QDict *info;

    guest_start(&g, "-m 256M "
                "-object memory-backend-ram,id=r0,size=128M "
                "-object memory-backend-memfd,id=f1,size=128M,share=on "
                "-numa node,memdev=r0 -numa node,memdev=f1 "
                "-device pvfree-pci,addr=04.0");
    guest_register(&g, HEADER_GPA);
    migrate_start(&g);
    id = wait_request(&g, HEADER_GPA);
    /* The bitmap at 160 MiB lies in the memfd node. */
    guest_answer(&g, HEADER_GPA, 0xa000000, id, PVFREE_CONTENT_ANY);
    wait_migration(g.qts, "completed", 60000);
    info = query_pvfree(&g);
    g_assert_cmpstr(qdict_get_str(info, "last-status"), ==, "ok");
    g_assert_cmpint(qdict_get_int(info, "pages-skipped"), ==, FREE_FRAMES);
    qobject_unref(info);
    guest_stop(&g);
}

/* All guest RAM shared: nothing could be skipped, so nothing is asked. */
static void test_all_shared(void)
{
    Guest g = { 0 };
    QDict *info;

    guest_start(&g, "-m 256M "
                "-object memory-backend-memfd,id=f0,size=256M,share=on "
                "-machine memory-backend=f0 -device pvfree-pci,addr=04.0");
    guest_register(&g, HEADER_GPA);
    migrate_start(&g);
    wait_migration(g.qts, "completed", 60000);
    info = query_pvfree(&g);
    g_assert_cmpstr(qdict_get_str(info, "last-status"), ==, "disabled");
    g_assert_cmpint(qdict_get_int(info, "requests"), ==, 0);
    qobject_unref(info);
    guest_stop(&g);
}

/* A reset ends the registration. */
static void test_reset(void)
{
    Guest g = { 0 };

    guest_start(&g, "-m 256M -device pvfree-pci,addr=04.0");
    guest_register(&g, HEADER_GPA);
    qtest_qmp_assert_success(g.qts, "{ 'execute': 'system_reset' }");
    g_assert_cmphex(reg_read(&g, PVFREE_PCI_REG_STATUS), ==, 0);
    guest_stop(&g);
}

/* Guest RAM as a backend "m0", fresh or shared: the same RAMBlock name. */
#define RAM_M0 "-object memory-backend-ram,id=m0,size=256M " \
               "-machine memory-backend=m0"
#define SHARED_M0 "-object memory-backend-memfd,id=m0,size=256M,share=on " \
                  "-machine memory-backend=m0"

/*
 * Migrate a VM whose guest answered with @content into a destination
 * started with @dest_args; return the destination's migration status.
 */
static char *migrate_into(uint8_t content, const char *dest_args,
                          bool *registered)
{
    Guest g = { 0 };
    QTestState *dst;
    g_autofree char *st = NULL;
    g_autofree char *uri = NULL;
    uint64_t id;

    guest_start(&g, "-m 256M " RAM_M0 " -device pvfree-pci,addr=04.0");
    guest_register(&g, HEADER_GPA);
    migrate_start(&g);
    id = wait_request(&g, HEADER_GPA);
    guest_answer(&g, HEADER_GPA, BITMAP_GPA, id, content);
    wait_migration(g.qts, "completed", 60000);

    dst = qtest_initf("-machine pc -nodefaults -m 256M %s "
                      "-device pvfree-pci,addr=04.0 "
                      "-incoming defer", dest_args);
    uri = g_strdup_printf("file:%s", g.file);
    qtest_qmp_assert_success(dst, "{ 'execute': 'migrate-incoming', "
                             "'arguments': { 'uri': %s, "
                             "'exit-on-error': false } }", uri);
    for (int i = 0; i < 6000; i++) {
        g_free(st);
        st = migration_status(dst);
        if (!strcmp(st, "completed") || !strcmp(st, "failed")) {
            break;
        }
        g_usleep(10 * 1000);
    }
    if (registered) {
        QDict *rsp = qtest_qmp(dst, "{ 'execute': 'query-pvfree' }");

        *registered = qdict_get_bool(qdict_get_qdict(rsp, "return"),
                                     "registered");
        qobject_unref(rsp);
    }
    qtest_quit(dst);
    guest_stop(&g);
    return g_steal_pointer(&st);
}

/* The registration migrates. */
static void test_vmstate(void)
{
    bool registered = false;
    g_autofree char *st = migrate_into(PVFREE_CONTENT_ZERO, RAM_M0,
                                       &registered);

    g_assert_cmpstr(st, ==, "completed");
    g_assert_true(registered);
}

/*
 * Skipped pages that must read as zero, into a destination whose RAM is
 * not fresh: refused.  The same with content "any" is fine.
 */
static void test_zero_fill_refused(void)
{
    const char *shared = SHARED_M0;
    const char *loader = RAM_M0 " -device loader,addr=0x4000000,"
                         "data=0x12345678,data-len=4";
    g_autofree char *st1 = migrate_into(PVFREE_CONTENT_ZERO, shared, NULL);
    g_autofree char *st2 = migrate_into(PVFREE_CONTENT_ZERO, loader, NULL);
    g_autofree char *st3 = migrate_into(PVFREE_CONTENT_ANY, shared, NULL);

    g_assert_cmpstr(st1, ==, "failed");
    g_assert_cmpstr(st2, ==, "failed");
    g_assert_cmpstr(st3, ==, "completed");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    qtest_add_func("/pvfree-pci/answer", test_answer);
    qtest_add_func("/pvfree-pci/timeout", test_timeout);
    qtest_add_func("/pvfree-pci/doorbell-storm", test_doorbell_storm);
    qtest_add_func("/pvfree-pci/cancel", test_cancel);
    qtest_add_func("/pvfree-pci/parse-limit", test_parse_limit);
    qtest_add_func("/pvfree-pci/not-registered", test_not_registered);
    qtest_add_func("/pvfree-pci/mixed-backends", test_mixed_backends);
    qtest_add_func("/pvfree-pci/all-shared", test_all_shared);
    qtest_add_func("/pvfree-pci/reset", test_reset);
    qtest_add_func("/pvfree-pci/vmstate", test_vmstate);
    qtest_add_func("/pvfree-pci/zero-fill-refused", test_zero_fill_refused);
    return g_test_run();
}

/*
 * pvfree-pci: the guest tells live migration which of its pages are free
 *
 * Copyright (c) 2026 The pvfree authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The guest registers a header page in its RAM (ABI in include/pvfree/abi.h).
 * When a precopy migration is about to send its first page, the migration
 * thread re-arms dirty tracking and publishes a request in the header
 * (both with the BQL held, so that no vCPU runs in between), interrupts
 * the guest and waits, without the BQL and for at most timeout-ms
 * whatever the guest does, for the doorbell.  migrate_cancel ends the
 * wait, and reading the answer stops after max-parse-ms.  The guest
 * answers with a bitmap of the frames that were free at some instant
 * after it saw the request.  The
 * protocol steps (identity check, request ids, publishing, seeing the
 * answer) and the parsing of the response are pvfree's shared host
 * library, which copies every value once out of guest RAM and clips
 * everything to guest RAM; each free run is then dropped from the first
 * pass.  A frame the guest writes after the
 * request is logged and sent by a later pass; a frame that stays free
 * reads at the destination as what its fresh RAM provides, which is why
 * the guest declares what free frames must read as and we only accept
 * what we can reproduce.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-pvfree.h"
#include "exec/address-spaces.h"
#include "exec/cpu-common.h"
#include "exec/memory.h"
#include "hw/core/generic-loader.h"
#include "hw/pci/msi.h"
#include "hw/pci/pci_device.h"
#include "hw/qdev-properties.h"
#include "migration/misc.h"
#include "migration/vmstate.h"
#include "qom/object.h"
#include "system/hostmem.h"
#include "system/runstate.h"
#include "trace.h"
#include "pvfree-protocol.h"
#include "pvfree-reader.h"

#define TYPE_PVFREE_PCI "pvfree-pci"
OBJECT_DECLARE_SIMPLE_TYPE(PVFreePCIState, PVFREE_PCI)

/* Scratch buffer of the reader: bitmap and extent table chunks. */
#define PVFREE_SCRATCH_SIZE     (64 * KiB)
#define PVFREE_TIMEOUT_MAX_MS   600000
#define PVFREE_PARSE_MAX_MS     600000

/*
 * While waiting, look at the clock and at the migration's state at least
 * this often, whatever the guest does with the doorbell.
 */
#define PVFREE_POLL_MS          50

/* While reading the answer, do so every this many free runs. */
#define PVFREE_POLL_RUNS        256

struct PVFreePCIState {
    PCIDevice parent_obj;

    MemoryRegion mmio;
    NotifierWithReturn precopy_notifier;

    /* Properties */
    uint32_t timeout_ms;
    uint32_t max_parse_ms;
    bool skip_free;

    /*
     * vCPUs change the registration and ring the doorbell with the BQL
     * held; the migration thread waits for the doorbell without it.
     * @lock protects all fields below.
     */
    QemuMutex lock;
    QemuCond cond;

    /* Guest-visible state, migrated */
    uint32_t header_lo;
    uint32_t header_hi;
    uint32_t status;            /* PVFREE_PCI_STATUS_* */
    uint32_t isr;               /* PVFREE_PCI_ISR_* */
    uint64_t header_gpa;        /* the registered header */
    uint64_t request_id;        /* the last request published */
    /*
     * The last migration skipped pages that the guest needs to read as
     * zero: the destination must provide zero-filled RAM.  Migrated in a
     * subsection, only when true.
     */
    bool zero_fill_used;

    /* The request in flight */
    bool waiting;
    bool doorbell;
    uint32_t generation;        /* bumped by (un)registration and reset */

    unsigned guest_errors;      /* logged so far, atomic */

    /* Statistics of the last request */
    uint64_t requests;
    PvfreeStatus last_status;
    uint32_t last_guest_status; /* with PVFREE_OUTCOME_GUEST_STATUS */
    char *last_error;
    uint64_t pages_skipped;
    uint64_t frames_reported;
    uint64_t wait_ms;
    uint64_t guest_free_frames;
    uint64_t guest_snapshot_us;
    uint64_t guest_max_lock_hold_us;
};

/* A pvfree header is per VM, so is the device. */
static PVFreePCIState *pvfree_instance;

/*
 * Ordinary guest RAM: writable, migrated RAM of a memory backend.  Not
 * ROM, not a ROM device, not MMIO, not a RAM device (VFIO BARs and the
 * like), not device-owned RAM such as video memory, not RAM that
 * x-ignore-shared leaves out of the migration.  The header and the
 * guest's storage must live here.
 */
static bool pvfree_is_guest_ram(const MemoryRegion *cmr)
{
    MemoryRegion *mr = (MemoryRegion *)cmr;

    return memory_region_is_ram(mr) && !memory_region_is_ram_device(mr) &&
           !memory_region_is_rom(mr) && !memory_region_is_romd(mr) &&
           mr->ram_block && mr->owner &&
           object_dynamic_cast(mr->owner, TYPE_MEMORY_BACKEND) &&
           qemu_ram_is_migratable(mr->ram_block) &&
           !migrate_ram_is_ignored(mr->ram_block);
}

/* Private anonymous memory: allocated fresh at the destination. */
static bool pvfree_ram_block_is_fresh(RAMBlock *rb)
{
    return !qemu_ram_is_shared(rb) && qemu_ram_get_fd(rb) < 0;
}

/*
 * Guest RAM whose frames may be skipped: ordinary guest RAM that the
 * destination provides as fresh anonymous memory.  Memory shared with
 * other processes or backed by a file shows its backing's contents.
 */
static bool pvfree_is_skippable(const MemoryRegion *mr)
{
    return pvfree_is_guest_ram(mr) && pvfree_ram_block_is_fresh(mr->ram_block);
}

/*
 * Find guest RAM at @gpa.  Returns the MemoryRegion, referenced, with the
 * offset of @gpa inside it in *@offset and the number of bytes of the
 * range [@gpa, @gpa + @len) it covers from there in *@avail; or NULL if
 * @gpa is not ordinary guest RAM.
 */
static MemoryRegion *pvfree_find_ram(uint64_t gpa, uint64_t len,
                                     hwaddr *offset, uint64_t *avail)
{
    MemoryRegionSection sec;

    sec = memory_region_find(get_system_memory(), gpa, len);
    if (!sec.mr) {
        return NULL;
    }
    if (sec.offset_within_address_space != gpa ||
        !pvfree_is_guest_ram(sec.mr)) {
        memory_region_unref(sec.mr);
        return NULL;
    }
    *offset = sec.offset_within_region;
    *avail = int128_get64(sec.size);
    return sec.mr;
}

/*
 * The spec asks for single-copy atomic accesses to the 8-byte ids, which
 * the guest updates while we read: copy naturally aligned 8-byte pieces
 * with one access each.
 */
static void pvfree_copy(void *dst, const void *src, size_t n)
{
#ifdef CONFIG_ATOMIC64
    if (n == sizeof(uint64_t) && QEMU_IS_ALIGNED((uintptr_t)dst, 8) &&
        QEMU_IS_ALIGNED((uintptr_t)src, 8)) {
        qatomic_set__nocheck((uint64_t *)dst,
                             qatomic_read__nocheck((const uint64_t *)src));
        return;
    }
#endif
    memcpy(dst, src, n);
}

/* Copy between @buf and ordinary guest RAM only; writes are logged dirty. */
static int pvfree_access_guest(uint64_t gpa, uint8_t *buf, size_t len,
                               bool is_write)
{
    while (len) {
        MemoryRegion *mr;
        hwaddr offset;
        uint64_t n;
        uint8_t *ram;

        if (gpa + len < gpa) {
            return -1;
        }
        mr = pvfree_find_ram(gpa, len, &offset, &n);
        if (!mr) {
            return -1;
        }
        n = MIN(n, len);
        ram = (uint8_t *)memory_region_get_ram_ptr(mr) + offset;
        if (is_write) {
            pvfree_copy(ram, buf, n);
            memory_region_set_dirty(mr, offset, n);
        } else {
            pvfree_copy(buf, ram, n);
        }
        memory_region_unref(mr);
        buf += n;
        gpa += n;
        len -= n;
    }
    return 0;
}

/* pvfree_read_fn */
static int pvfree_read_guest(void *opaque, uint64_t gpa, void *buf,
                             size_t len)
{
    return pvfree_access_guest(gpa, buf, len, false);
}

/* pvfree_write_fn */
static int pvfree_write_guest(void *opaque, uint64_t gpa, const void *buf,
                              size_t len)
{
    return pvfree_access_guest(gpa, (uint8_t *)buf, len, true);
}

/* pvfree_barrier_fn */
static void pvfree_wmb(void *opaque)
{
    /* host_features before request_id: pairs with the guest's acquire */
    smp_wmb();
}

/* The header at @header, as the shared protocol code reaches it. */
static struct pvfree_channel pvfree_channel(uint64_t header)
{
    return (struct pvfree_channel) {
        .read = pvfree_read_guest,
        .write = pvfree_write_guest,
        .wmb = pvfree_wmb,
        .header_gpa = header,
    };
}

typedef struct PVFreeRamFilter {
    bool (*wanted)(const MemoryRegion *mr);
    GArray *ram;
} PVFreeRamFilter;

static bool pvfree_collect_ram(Int128 start, Int128 len,
                               const MemoryRegion *mr,
                               hwaddr offset_in_region, void *opaque)
{
    PVFreeRamFilter *f = opaque;
    GArray *ram = f->ram;
    struct pvfree_ram_range *last;
    uint64_t first, end;

    if (!f->wanted(mr)) {
        return false;
    }
    first = DIV_ROUND_UP(int128_get64(start), PVFREE_FRAME_SIZE);
    end = int128_get64(int128_add(start, len)) >> PVFREE_FRAME_SHIFT;
    if (first >= end) {
        return false;
    }
    if (ram->len) {
        last = &g_array_index(ram, struct pvfree_ram_range, ram->len - 1);
        if (last->pfn + last->nr_frames == first) {
            last->nr_frames += end - first;
            return false;
        }
    }
    g_array_append_val(ram, ((struct pvfree_ram_range) {
        .pfn = first,
        .nr_frames = end - first,
    }));
    return false;
}

/*
 * The guest RAM that @wanted accepts, in frames: sorted, merged,
 * non-overlapping.
 */
static GArray *pvfree_ram_ranges(bool (*wanted)(const MemoryRegion *mr))
{
    PVFreeRamFilter f = {
        .wanted = wanted,
        .ram = g_array_new(false, false, sizeof(struct pvfree_ram_range)),
    };

    RCU_READ_LOCK_GUARD();
    flatview_for_each_range(address_space_to_flatview(&address_space_memory),
                            pvfree_collect_ram, &f);
    return f.ram;
}

/* Is there any guest RAM whose free frames need not be sent? */
static bool pvfree_have_skippable_ram(void)
{
    g_autoptr(GArray) ram = pvfree_ram_ranges(pvfree_is_skippable);

    return ram->len > 0;
}

static int pvfree_check_block(RAMBlock *rb, void *opaque)
{
    bool *fresh = opaque;

    if (qemu_ram_is_migratable(rb) && !pvfree_ram_block_is_fresh(rb)) {
        *fresh = false;
    }
    return 0;
}

/*
 * What a frame we do not send reads as at the destination.  Private
 * anonymous memory is allocated fresh there and reads as zero (an
 * incoming QEMU does not copy ROM blobs into RAM).  We only ever skip such
 * memory, but promise zero only if every migrated RAMBlock is of that
 * kind, so that the promise does not depend on where the guest's free
 * frames happen to be.
 */
static uint64_t pvfree_host_features(void)
{
    bool fresh = true;

    qemu_ram_foreach_block(pvfree_check_block, &fresh);
    return fresh ? PVFREE_HF_ZERO_FILL : 0;
}

static void pvfree_set_irq(PVFreePCIState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    s->isr |= PVFREE_PCI_ISR_REQUEST;
    if (msi_enabled(pdev)) {
        msi_notify(pdev, 0);
    } else {
        pci_set_irq(pdev, 1);
    }
}

/* Guest-triggered errors: log the first few, then stay quiet. */
#define PVFREE_GUEST_ERRORS_LOGGED 16

static void G_GNUC_PRINTF(2, 3)
pvfree_guest_error(PVFreePCIState *s, const char *fmt, ...)
{
    unsigned n = qatomic_fetch_inc(&s->guest_errors);
    va_list ap;

    if (n < PVFREE_GUEST_ERRORS_LOGGED) {
        va_start(ap, fmt);
        error_vreport(fmt, ap);
        va_end(ap);
    } else if (n == PVFREE_GUEST_ERRORS_LOGGED) {
        error_report("pvfree: too many guest errors, not logging more");
    }
}

/* Record the outcome of a request; takes @lock. */
static void G_GNUC_PRINTF(4, 5)
pvfree_finish_guest(PVFreePCIState *s, PvfreeStatus status,
                    uint32_t guest_status, const char *fmt, ...)
{
    va_list ap;

    QEMU_LOCK_GUARD(&s->lock);
    s->last_status = status;
    s->last_guest_status = guest_status;
    g_free(s->last_error);
    va_start(ap, fmt);
    s->last_error = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    trace_pvfree_result(PvfreeStatus_str(status), s->pages_skipped,
                        s->wait_ms);
}

#define pvfree_finish(s, status, ...) \
    pvfree_finish_guest(s, PVFREE_OUTCOME_##status, 0, __VA_ARGS__)

/*
 * Check a header page in guest RAM: its identification (the shared check)
 * and that the whole frame is ordinary guest RAM, since the device writes
 * into it.  Returns NULL if it is fine, else what is wrong.
 */
static char *pvfree_check_header(uint64_t gpa)
{
    struct pvfree_channel c = pvfree_channel(gpa);
    struct pvfree_diag diag;
    MemoryRegion *mr;
    hwaddr offset;
    uint64_t n = 0;
    char why[160];

    if (pvfree_check_registration(&c, &diag) != PVFREE_OK) {
        pvfree_diag_format(&diag, why, sizeof(why));
        return g_strdup(why);
    }
    mr = pvfree_find_ram(gpa, PVFREE_HEADER_SIZE, &offset, &n);
    if (mr) {
        memory_region_unref(mr);
    }
    if (!mr || n < PVFREE_HEADER_SIZE) {
        return g_strdup("the header frame is not in ordinary guest RAM");
    }
    return NULL;
}

/* One migration's request, from publishing to reading the answer. */
typedef struct PVFreeRequest {
    uint64_t header;
    uint64_t id;
    uint64_t host_features;
    uint32_t generation;        /* of the registration being served */
} PVFreeRequest;

typedef struct PVFreeWalk {
    PVFreePCIState *s;
    uint32_t generation;        /* of the registration being served */
    bool skip;
    int64_t deadline;           /* QEMU_CLOCK_REALTIME ms: max-parse-ms */
    uint64_t runs;              /* free runs seen */
    PvfreeStatus stopped;       /* why the walk stopped early, or NONE */
    uint64_t frames;            /* frames the guest reported free */
    uint64_t pages;             /* pages dropped from the first pass */
} PVFreeWalk;

/*
 * May the walk go on?  A guest can make its answer as long as its RAM
 * allows (10^8 runs for 1 TiB of every other frame): stop when the
 * migration is cancelled or max-parse-ms is over.
 */
static bool pvfree_parse_goes_on(PVFreeWalk *w)
{
    if (precopy_should_stop()) {
        w->stopped = PVFREE_OUTCOME_CANCELLED;
        return false;
    }
    if (qemu_clock_get_ms(QEMU_CLOCK_REALTIME) >= w->deadline) {
        w->stopped = PVFREE_OUTCOME_PARSE_LIMIT;
        return false;
    }
    return true;
}

/* pvfree_for_each_free_run() callback: drop one run from the first pass. */
static int pvfree_skip_run(void *opaque, uint64_t pfn, uint64_t nr_frames)
{
    PVFreeWalk *w = opaque;
    uint64_t gpa = pfn << PVFREE_FRAME_SHIFT;
    uint64_t len = nr_frames << PVFREE_FRAME_SHIFT;

    trace_pvfree_free_run(pfn, nr_frames);
    if (++w->runs % PVFREE_POLL_RUNS == 0 && !pvfree_parse_goes_on(w)) {
        return -1;
    }
    if (!w->skip) {
        w->frames += nr_frames;
        return 0;
    }

    /*
     * Once UNREGISTER or a reset completed, nothing read from the former
     * header or storage may be used, whenever it was read: check under
     * the lock, and skip under it, so that the MMIO write cannot complete
     * in between.
     */
    QEMU_LOCK_GUARD(&w->s->lock);
    if (w->s->generation != w->generation) {
        return -1;
    }
    w->frames += nr_frames;
    while (len) {
        MemoryRegion *mr;
        hwaddr offset;
        uint64_t n;

        /* The reader clipped the run to guest RAM; be careful anyway. */
        mr = pvfree_find_ram(gpa, len, &offset, &n);
        if (!mr) {
            break;
        }
        if (!pvfree_is_skippable(mr)) {
            memory_region_unref(mr);
            break;
        }
        n = MIN(n, len);
        w->pages += precopy_skip_ram_range(mr->ram_block, offset, n);
        memory_region_unref(mr);
        gpa += n;
        len -= n;
    }
    return 0;
}

/*
 * Can this migration ask the guest and use its answer?  If not, record
 * why.
 */
static bool pvfree_can_ask(PVFreePCIState *s)
{
    /*
     * A skipped page is not dirty, so postcopy would never send it when
     * the destination faults on it: the vCPU would wait for the end of
     * postcopy (virtio-balloon's free page hinting steps back too).
     */
    if (migrate_postcopy_ram()) {
        pvfree_finish(s, DISABLED, "postcopy-ram is enabled: skipped pages "
                      "would not be sent on demand; migrating all pages");
        return false;
    }
    if (migrate_background_snapshot()) {
        pvfree_finish(s, DISABLED, "background-snapshot does not track "
                      "dirty pages; migrating all pages");
        return false;
    }
    if (bql_locked()) {
        /* The guest could not ring the doorbell while we wait. */
        pvfree_finish(s, DISABLED, "the migration thread holds the BQL; "
                      "migrating all pages");
        return false;
    }
    if (!runstate_is_running()) {
        pvfree_finish(s, VM_STOPPED, "the VM is not running and cannot "
                      "answer; migrating all pages");
        return false;
    }
    if (s->skip_free && !pvfree_have_skippable_ram()) {
        /* Do not make the guest build a snapshot for nothing. */
        pvfree_finish(s, DISABLED, "no guest RAM can be skipped (it is all "
                      "shared or file-backed); migrating all pages");
        return false;
    }
    return true;
}

/*
 * Publish @req in the registered header and interrupt the guest.  Called
 * with the BQL and @lock held.  Returns PVFREE_OUTCOME_NONE if published,
 * else the outcome, with what went wrong in *@why.
 */
static PvfreeStatus pvfree_publish_locked(PVFreePCIState *s,
                                          PVFreeRequest *req, char **why)
{
    g_autofree char *bad = NULL;
    struct pvfree_channel c;
    struct pvfree_diag diag;
    char text[160];

    if (!(s->status & PVFREE_PCI_STATUS_REGISTERED)) {
        *why = g_strdup("");
        return PVFREE_OUTCOME_NOT_REGISTERED;
    }
    if (!(pci_get_word(PCI_DEVICE(s)->config + PCI_COMMAND) &
          PCI_COMMAND_MASTER)) {
        /* Like DMA: no writes into guest memory without bus mastering. */
        *why = g_strdup("bus mastering is disabled: request not published; "
                        "migrating all pages");
        return PVFREE_OUTCOME_TIMEOUT;
    }
    req->header = s->header_gpa;
    req->generation = s->generation;
    req->id = pvfree_next_request_id(s->request_id);
    if (!req->id) {
        *why = g_strdup("request ids are exhausted");
        return PVFREE_OUTCOME_DISABLED;
    }

    c = pvfree_channel(req->header);
    bad = pvfree_check_header(req->header);
    if (!bad && s->skip_free) {
        /*
         * Every write the guest makes once it can see the request must be
         * logged.  No vCPU runs while we hold the BQL, so re-arming here,
         * before the request is written, closes the window; and only
         * here, so that a VM whose guest is not registered keeps KVM's
         * lazy dirty log clearing.
         */
        precopy_rearm_dirty_tracking();
    }
    if (!bad && pvfree_publish_request(&c, req->host_features, req->id,
                                       &diag) != PVFREE_OK) {
        pvfree_diag_format(&diag, text, sizeof(text));
        bad = g_strdup(text);
    }
    if (bad) {
        /* The guest broke its registration: end it. */
        s->status = 0;
        s->header_gpa = 0;
        s->generation++;
        pvfree_guest_error(s, "pvfree: header 0x%" PRIx64 ": %s; "
                           "registration ended, migrating all pages",
                           req->header, bad);
        *why = g_strdup_printf("header 0x%" PRIx64 ": %s", req->header, bad);
        return PVFREE_OUTCOME_NOT_REGISTERED;
    }

    s->request_id = req->id;
    s->requests++;
    s->waiting = true;
    s->doorbell = false;
    pvfree_set_irq(s);
    trace_pvfree_request(req->id, req->header, req->host_features);
    return PVFREE_OUTCOME_NONE;
}

/* Publish @req; if that is not possible, record why. */
static bool pvfree_publish(PVFreePCIState *s, PVFreeRequest *req)
{
    g_autofree char *why = NULL;
    PvfreeStatus status;

    bql_lock();
    WITH_QEMU_LOCK_GUARD(&s->lock) {
        status = pvfree_publish_locked(s, req, &why);
    }
    bql_unlock();
    if (status != PVFREE_OUTCOME_NONE) {
        pvfree_finish_guest(s, status, 0, "%s", why);
        return false;
    }
    return true;
}

typedef enum PVFreeWaitEnd {
    PVFREE_WAIT_ANSWERED,
    PVFREE_WAIT_UNREGISTERED,
    PVFREE_WAIT_CANCELLED,
    PVFREE_WAIT_TIMED_OUT,
} PVFreeWaitEnd;

/*
 * Wait, without the BQL, for the guest to ring the doorbell with @req
 * answered.  The clock and the migration's state are checked every
 * PVFREE_POLL_MS and after every doorbell, so neither a silent guest nor
 * one that keeps ringing with a stale answer holds us past timeout-ms,
 * and migrate_cancel ends the wait.  If there is no answer, record why.
 */
static bool pvfree_wait(PVFreePCIState *s, const PVFreeRequest *req)
{
    struct pvfree_channel c = pvfree_channel(req->header);
    int64_t start = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    int64_t deadline = start + s->timeout_ms;
    int64_t now = start;
    uint64_t stale = 0;
    PVFreeWaitEnd end;

    for (;;) {
        bool rang, registered;

        WITH_QEMU_LOCK_GUARD(&s->lock) {
            if (!s->doorbell && s->generation == req->generation) {
                qemu_cond_timedwait(&s->cond, &s->lock,
                                    MIN(deadline - now, PVFREE_POLL_MS));
            }
            rang = s->doorbell;
            registered = s->generation == req->generation;
            s->doorbell = false;
        }
        now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
        if (!registered) {
            end = PVFREE_WAIT_UNREGISTERED;
            break;
        }
        if (rang && pvfree_response_ready(&c, req->id, NULL) == PVFREE_OK) {
            end = PVFREE_WAIT_ANSWERED;
            break;
        }
        if (precopy_should_stop()) {
            end = PVFREE_WAIT_CANCELLED;
            break;
        }
        if (now >= deadline) {
            end = PVFREE_WAIT_TIMED_OUT;
            break;
        }
        if (rang) {
            /* A doorbell without the answer to @req: keep waiting. */
            stale++;
            trace_pvfree_stale_doorbell(req->id);
        }
    }
    WITH_QEMU_LOCK_GUARD(&s->lock) {
        s->waiting = false;
        s->wait_ms = now - start;
    }

    switch (end) {
    case PVFREE_WAIT_ANSWERED:
        return true;
    case PVFREE_WAIT_UNREGISTERED:
        pvfree_finish(s, NOT_REGISTERED, "the guest unregistered while "
                      "request %" PRIu64 " was pending", req->id);
        return false;
    case PVFREE_WAIT_CANCELLED:
        pvfree_finish(s, CANCELLED, "the migration was cancelled or failed "
                      "while request %" PRIu64 " was pending", req->id);
        return false;
    case PVFREE_WAIT_TIMED_OUT:
    default:
        error_report("pvfree: guest did not answer request %" PRIu64
                     " within %" PRIu32 " ms (%" PRIu64 " doorbells without "
                     "the answer); migrating all pages",
                     req->id, s->timeout_ms, stale);
        pvfree_finish(s, TIMEOUT, "guest did not answer request %" PRIu64
                      " within %" PRIu32 " ms", req->id, s->timeout_ms);
        return false;
    }
}

/* The walk over the answer stopped before its end: say why. */
static void pvfree_stopped_early(PVFreePCIState *s, const PVFreeWalk *w)
{
    if (w->stopped == PVFREE_OUTCOME_CANCELLED) {
        pvfree_finish(s, CANCELLED, "the migration was cancelled or failed "
                      "while the answer was read; %" PRIu64 " pages skipped "
                      "before", w->pages);
        return;
    }
    error_report("pvfree: reading the guest's answer took more than %"
                 PRIu32 " ms (%" PRIu64 " free runs); migrating all pages "
                 "but the %" PRIu64 " already skipped", s->max_parse_ms,
                 w->runs, w->pages);
    pvfree_finish(s, PARSE_LIMIT, "reading the answer took more than %"
                  PRIu32 " ms; %" PRIu64 " pages skipped before",
                  s->max_parse_ms, w->pages);
}

/* Validate the answer to @req and drop the free frames it lists. */
static void pvfree_use_response(PVFreePCIState *s, const PVFreeRequest *req)
{
    /*
     * The guest may keep its storage in any ordinary guest RAM, shared or
     * not; only skipping is limited to RAM that is fresh at the
     * destination (pvfree_skip_run()).
     */
    g_autoptr(GArray) ram = pvfree_ram_ranges(pvfree_is_guest_ram);
    g_autofree void *scratch = g_malloc(PVFREE_SCRATCH_SIZE);
    g_autofree struct pvfree_response *resp = g_new0(struct pvfree_response,
                                                      1);
    struct pvfree_reader r = {
        .read = pvfree_read_guest,
        .opaque = s,
        .ram = (struct pvfree_ram_range *)ram->data,
        .nr_ram = ram->len,
        .scratch = scratch,
        .scratch_size = PVFREE_SCRATCH_SIZE,
        .host_features = req->host_features,
    };
    PVFreeWalk w = {
        .s = s,
        .generation = req->generation,
        .skip = s->skip_free,
        .deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + s->max_parse_ms,
        .stopped = PVFREE_OUTCOME_NONE,
    };
    struct pvfree_diag diag = { 0 };
    enum pvfree_error err;
    char why[256];

    err = pvfree_read_response(&r, req->header, req->id, resp, &diag);
    if (err != PVFREE_OK) {
        PvfreeStatus status = PVFREE_OUTCOME_REJECTED;

        if (err == PVFREE_ERR_STATUS) {
            status = PVFREE_OUTCOME_GUEST_STATUS;
        } else if (err == PVFREE_ERR_CONTENT) {
            status = PVFREE_OUTCOME_UNSUPPORTED_CONTENT;
        }
        pvfree_diag_format(&diag, why, sizeof(why));
        pvfree_guest_error(s, "pvfree: guest response rejected: %s; "
                           "migrating all pages", why);
        pvfree_finish_guest(s, status, err == PVFREE_ERR_STATUS ? resp->status
                            : 0, "guest response rejected: %s", why);
        return;
    }
    trace_pvfree_response(req->id, resp->status, resp->content,
                          resp->base_pfn, resp->nr_frames, resp->nr_extents);

    err = pvfree_for_each_free_run(&r, resp, pvfree_skip_run, &w, &diag);

    WITH_QEMU_LOCK_GUARD(&s->lock) {
        s->pages_skipped = w.pages;
        s->frames_reported = w.frames;
        if (resp->guest_features & PVFREE_GF_STATS) {
            s->guest_free_frames = resp->free_frames;
            s->guest_snapshot_us = resp->snapshot_us;
            s->guest_max_lock_hold_us = resp->max_lock_hold_us;
        }
    }

    if (err == PVFREE_ERR_CALLBACK && w.stopped != PVFREE_OUTCOME_NONE) {
        pvfree_stopped_early(s, &w);
        return;
    }
    if (err == PVFREE_ERR_CALLBACK) {
        pvfree_finish(s, NOT_REGISTERED, "the guest unregistered while its "
                      "response was read; %" PRIu64 " pages skipped before",
                      w.pages);
        return;
    }
    if (err != PVFREE_OK) {
        pvfree_diag_format(&diag, why, sizeof(why));
        pvfree_guest_error(s, "pvfree: guest response rejected: %s; "
                           "migrating all pages but the %" PRIu64
                           " already skipped", why, w.pages);
        pvfree_finish(s, REJECTED, "guest bitmap rejected after %" PRIu64
                      " pages: %s", w.pages, why);
        return;
    }
    WITH_QEMU_LOCK_GUARD(&s->lock) {
        s->zero_fill_used = w.pages && resp->content == PVFREE_CONTENT_ZERO;
    }
    pvfree_finish(s, OK, "%s", s->skip_free ? "" :
                  "skip-free=off: nothing skipped");
}

/*
 * PRECOPY_NOTIFY_FIRST_ITERATION: runs in the migration thread, without
 * the BQL, after dirty logging started and before the first page is sent.
 * Like virtio-balloon's free page hinting: can we ask, ask, wait, use.
 */
static void pvfree_first_iteration(PVFreePCIState *s)
{
    PVFreeRequest req = { 0 };

    WITH_QEMU_LOCK_GUARD(&s->lock) {
        s->pages_skipped = 0;
        s->frames_reported = 0;
        s->wait_ms = 0;
        s->zero_fill_used = false;
    }
    if (!pvfree_can_ask(s)) {
        return;
    }
    req.host_features = pvfree_host_features();

    if (pvfree_publish(s, &req) && pvfree_wait(s, &req)) {
        pvfree_use_response(s, &req);
    }
}

PvfreeInfo *qmp_query_pvfree(Error **errp)
{
    PVFreePCIState *s = pvfree_instance;
    PvfreeInfo *info;

    if (!s) {
        error_setg(errp, "There is no pvfree-pci device");
        return NULL;
    }

    info = g_new0(PvfreeInfo, 1);
    QEMU_LOCK_GUARD(&s->lock);
    info->registered = !!(s->status & PVFREE_PCI_STATUS_REGISTERED);
    info->requests = s->requests;
    info->last_status = s->last_status;
    if (s->last_status == PVFREE_OUTCOME_GUEST_STATUS) {
        info->has_last_guest_status = true;
        info->last_guest_status = s->last_guest_status;
    }
    info->last_error = g_strdup(s->last_error);
    info->pages_skipped = s->pages_skipped;
    info->frames_reported = s->frames_reported;
    info->wait_ms = s->wait_ms;
    info->guest_free_frames = s->guest_free_frames;
    info->guest_snapshot_us = s->guest_snapshot_us;
    info->guest_max_lock_hold_us = s->guest_max_lock_hold_us;
    info->timeout_ms = s->timeout_ms;
    info->max_parse_ms = s->max_parse_ms;
    info->skip_free = s->skip_free;
    return info;
}

static int pvfree_precopy_notify(NotifierWithReturn *n, void *data,
                                 Error **errp)
{
    PVFreePCIState *s = container_of(n, PVFreePCIState, precopy_notifier);
    PrecopyNotifyData *pnd = data;

    if (pnd->reason == PRECOPY_NOTIFY_FIRST_ITERATION) {
        pvfree_first_iteration(s);
    }
    return 0;
}

/*
 * COMMAND=REGISTER, with the BQL held: end any current registration, then
 * check the new header.
 */
static void pvfree_register(PVFreePCIState *s)
{
    uint64_t gpa = ((uint64_t)s->header_hi << 32) | s->header_lo;
    g_autofree char *why = pvfree_check_header(gpa);

    QEMU_LOCK_GUARD(&s->lock);
    s->generation++;
    qemu_cond_broadcast(&s->cond);
    if (why) {
        s->status = PVFREE_PCI_STATUS_REJECTED;
        s->header_gpa = 0;
        pvfree_guest_error(s, "pvfree-pci: REGISTER rejected: header 0x%"
                           PRIx64 ": %s", gpa, why);
        trace_pvfree_register_rejected(gpa, why);
        return;
    }
    s->status = PVFREE_PCI_STATUS_REGISTERED;
    s->header_gpa = gpa;
    trace_pvfree_register(gpa);
}

static void pvfree_unregister(PVFreePCIState *s)
{
    QEMU_LOCK_GUARD(&s->lock);
    s->status = 0;
    s->header_gpa = 0;
    s->generation++;
    qemu_cond_broadcast(&s->cond);
    trace_pvfree_unregister();
}

static void pvfree_response_doorbell(PVFreePCIState *s)
{
    QEMU_LOCK_GUARD(&s->lock);
    trace_pvfree_doorbell(s->request_id, s->waiting);
    if (s->waiting) {
        s->doorbell = true;
        qemu_cond_broadcast(&s->cond);
    }
}

static uint64_t pvfree_mmio_read(void *opaque, hwaddr addr, unsigned size)
{
    PVFreePCIState *s = opaque;
    uint64_t val = 0;

    if (size != 4 || (addr & 3)) {
        trace_pvfree_mmio_read(addr, size, val);
        return 0;
    }

    switch (addr) {
    case PVFREE_PCI_REG_MAGIC:
        val = PVFREE_MAGIC;
        break;
    case PVFREE_PCI_REG_VERSION:
        val = PVFREE_VERSION;
        break;
    case PVFREE_PCI_REG_HEADER_LO:
        val = s->header_lo;
        break;
    case PVFREE_PCI_REG_HEADER_HI:
        val = s->header_hi;
        break;
    case PVFREE_PCI_REG_STATUS:
        WITH_QEMU_LOCK_GUARD(&s->lock) {
            val = s->status;
        }
        break;
    case PVFREE_PCI_REG_ISR:
        WITH_QEMU_LOCK_GUARD(&s->lock) {
            val = s->isr;
            s->isr = 0;
        }
        pci_set_irq(PCI_DEVICE(s), 0);
        break;
    default:
        break;
    }
    trace_pvfree_mmio_read(addr, size, val);
    return val;
}

static void pvfree_mmio_write(void *opaque, hwaddr addr, uint64_t val,
                              unsigned size)
{
    PVFreePCIState *s = opaque;

    trace_pvfree_mmio_write(addr, size, val);
    if (size != 4 || (addr & 3)) {
        return;
    }

    switch (addr) {
    case PVFREE_PCI_REG_HEADER_LO:
        s->header_lo = val;
        break;
    case PVFREE_PCI_REG_HEADER_HI:
        s->header_hi = val;
        break;
    case PVFREE_PCI_REG_COMMAND:
        switch (val) {
        case PVFREE_PCI_CMD_REGISTER:
            pvfree_register(s);
            break;
        case PVFREE_PCI_CMD_UNREGISTER:
            pvfree_unregister(s);
            break;
        case PVFREE_PCI_CMD_RESPONSE:
            pvfree_response_doorbell(s);
            break;
        default:
            break;
        }
        break;
    default:
        break;
    }
}

static const MemoryRegionOps pvfree_mmio_ops = {
    .read = pvfree_mmio_read,
    .write = pvfree_mmio_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
    .impl = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
};

static void pvfree_realize(PCIDevice *pdev, Error **errp)
{
    PVFreePCIState *s = PVFREE_PCI(pdev);
    Error *err = NULL;
    int ret;

    if (pvfree_instance) {
        error_setg(errp, "only one pvfree-pci device is supported");
        return;
    }
    if (s->timeout_ms == 0 || s->timeout_ms > PVFREE_TIMEOUT_MAX_MS) {
        error_setg(errp, "timeout-ms must be between 1 and %u",
                   PVFREE_TIMEOUT_MAX_MS);
        return;
    }
    if (s->max_parse_ms == 0 || s->max_parse_ms > PVFREE_PARSE_MAX_MS) {
        error_setg(errp, "max-parse-ms must be between 1 and %u",
                   PVFREE_PARSE_MAX_MS);
        return;
    }

    pci_config_set_interrupt_pin(pdev->config, 1);
    memory_region_init_io(&s->mmio, OBJECT(s), &pvfree_mmio_ops, s,
                          "pvfree-mmio", PVFREE_PCI_BAR_SIZE);
    pci_register_bar(pdev, PVFREE_PCI_BAR, PCI_BASE_ADDRESS_SPACE_MEMORY,
                     &s->mmio);

    /* MSI is optional: INTx works where the platform has no MSI. */
    ret = msi_init(pdev, 0, 1, true, false, &err);
    if (ret && ret != -ENOTSUP) {
        error_propagate(errp, err);
        return;
    }
    error_free(err);

    qemu_mutex_init(&s->lock);
    qemu_cond_init(&s->cond);
    s->last_status = PVFREE_OUTCOME_NONE;
    s->last_error = g_strdup("");
    s->precopy_notifier.notify = pvfree_precopy_notify;
    precopy_add_notifier(&s->precopy_notifier);
    pvfree_instance = s;
}

static void pvfree_exit(PCIDevice *pdev)
{
    PVFreePCIState *s = PVFREE_PCI(pdev);

    precopy_remove_notifier(&s->precopy_notifier);
    msi_uninit(pdev);
    qemu_cond_destroy(&s->cond);
    qemu_mutex_destroy(&s->lock);
    g_free(s->last_error);
    pvfree_instance = NULL;
}

static void pvfree_reset(DeviceState *dev)
{
    PVFreePCIState *s = PVFREE_PCI(dev);

    QEMU_LOCK_GUARD(&s->lock);
    s->header_lo = 0;
    s->header_hi = 0;
    s->status = 0;
    s->isr = 0;
    s->header_gpa = 0;
    s->generation++;
    qemu_cond_broadcast(&s->cond);
}

static int pvfree_find_data_loader(Object *obj, void *opaque)
{
    GenericLoaderState *gl = (GenericLoaderState *)
        object_dynamic_cast(obj, TYPE_GENERIC_LOADER);

    if (gl && gl->data_len) {
        *(GenericLoaderState **)opaque = gl;
        return 1;
    }
    return 0;
}

/*
 * The source skipped pages that must read as zero here.  Check what we
 * can see: every migrated RAMBlock is fresh anonymous memory, and no
 * loader device wrote data into RAM at reset (it does so even on an
 * incoming VM).  Returns NULL if fine, else what is wrong.
 */
static char *pvfree_check_zero_fill(void)
{
    GenericLoaderState *gl = NULL;
    bool fresh = true;

    qemu_ram_foreach_block(pvfree_check_block, &fresh);
    if (!fresh) {
        return g_strdup("guest RAM here is shared or file-backed and need "
                        "not read as zero");
    }
    object_child_foreach_recursive(object_get_root(),
                                   pvfree_find_data_loader, &gl);
    if (gl) {
        return g_strdup_printf("a loader device wrote data at 0x%" PRIx64,
                               gl->addr);
    }
    return NULL;
}

static int pvfree_pre_load(void *opaque)
{
    PVFreePCIState *s = opaque;

    /* The subsection is sent only when true. */
    s->zero_fill_used = false;
    return 0;
}

static int pvfree_post_load(void *opaque, int version_id)
{
    PVFreePCIState *s = opaque;

    g_autofree char *why = NULL;

    if (s->zero_fill_used) {
        why = pvfree_check_zero_fill();
        if (why) {
            error_report("pvfree-pci: refusing the incoming migration: the "
                         "source skipped free pages that must read as zero, "
                         "but %s", why);
            return -EINVAL;
        }
        s->zero_fill_used = false;
    }
    if (!(s->status & PVFREE_PCI_STATUS_REGISTERED)) {
        s->header_gpa = 0;
        return 0;
    }
    why = pvfree_check_header(s->header_gpa);
    if (why) {
        error_report("pvfree-pci: migrated header 0x%" PRIx64 ": %s; "
                     "registration ended", s->header_gpa, why);
        s->status = 0;
        s->header_gpa = 0;
    }
    return 0;
}

static bool pvfree_zero_fill_needed(void *opaque)
{
    PVFreePCIState *s = opaque;

    return s->zero_fill_used;
}

static const VMStateDescription vmstate_pvfree_zero_fill = {
    .name = TYPE_PVFREE_PCI "/zero-fill",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = pvfree_zero_fill_needed,
    .fields = (const VMStateField[]) {
        VMSTATE_BOOL(zero_fill_used, PVFreePCIState),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_pvfree_pci = {
    .name = TYPE_PVFREE_PCI,
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_load = pvfree_pre_load,
    .post_load = pvfree_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_PCI_DEVICE(parent_obj, PVFreePCIState),
        VMSTATE_UINT32(header_lo, PVFreePCIState),
        VMSTATE_UINT32(header_hi, PVFreePCIState),
        VMSTATE_UINT32(status, PVFreePCIState),
        VMSTATE_UINT32(isr, PVFreePCIState),
        VMSTATE_UINT64(header_gpa, PVFreePCIState),
        VMSTATE_UINT64(request_id, PVFreePCIState),
        VMSTATE_END_OF_LIST()
    },
    .subsections = (const VMStateDescription * const []) {
        &vmstate_pvfree_zero_fill,
        NULL
    },
};

static const Property pvfree_properties[] = {
    DEFINE_PROP_UINT32("timeout-ms", PVFreePCIState, timeout_ms, 5000),
    DEFINE_PROP_UINT32("max-parse-ms", PVFreePCIState, max_parse_ms, 10000),
    DEFINE_PROP_BOOL("skip-free", PVFreePCIState, skip_free, true),
};

static void pvfree_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);

    k->realize = pvfree_realize;
    k->exit = pvfree_exit;
    k->vendor_id = PCI_VENDOR_ID_REDHAT;
    k->device_id = PCI_DEVICE_ID_REDHAT_PVFREE;
    k->revision = PVFREE_PCI_REVISION;
    k->class_id = PCI_CLASS_SYSTEM_OTHER;
    dc->desc = "pvfree: guest reports free pages to live migration";
    dc->vmsd = &vmstate_pvfree_pci;
    device_class_set_legacy_reset(dc, pvfree_reset);
    device_class_set_props(dc, pvfree_properties);
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static const TypeInfo pvfree_pci_info = {
    .name = TYPE_PVFREE_PCI,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(PVFreePCIState),
    .class_init = pvfree_class_init,
    .interfaces = (InterfaceInfo[]) {
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { }
    },
};

static void pvfree_register_types(void)
{
    type_register_static(&pvfree_pci_info);
}

type_init(pvfree_register_types)

/* SPDX-License-Identifier: LGPL-2.1-only */
/*
 * pvfree: leave the guest's free pages out of the first pass of a live
 * save.
 *
 * A guest running the pvfree driver publishes, in xenstore, the frame of a
 * header page it shares with the toolstack.  After log-dirty mode has been
 * enabled and before the first pass, the saver asks the guest for a
 * snapshot of its free pages (a bitmap in guest memory), reads it through
 * the shared pvfree reader, which validates everything it copies out of
 * guest memory, and sends each free NOTAB pfn of the first pass as an
 * XEN_DOMCTL_PFINFO_XALLOC entry, which carries no page data.  The restorer
 * populates such a pfn without writing it, so it holds whatever Xen's heap
 * held: Xen does not scrub the pages a live domain frees (only a dying
 * domain's, or with scrub_domheap), and populate_physmap does not clear
 * them.  The saver therefore offers no host feature, in particular not
 * PVFREE_HF_ZERO_FILL: a guest whose free pages must read as zero
 * (init_on_free=1) answers UNSUPPORTED and is sent in full; a guest whose
 * free pages may hold anything (content ANY) is still skipped.
 *
 * Pages the guest dirties after it saw the request are reported by a later
 * XEN_DOMCTL_SHADOW_OP_CLEAN and sent as usual.  Anything unexpected (no
 * registration, a bad header, a timeout, a failed mapping) only disables
 * the optimisation: the first pass then sends everything.
 *
 * The protocol steps that are the same for every hypervisor (identity
 * check, request ids, publishing a request, seeing it answered, reading
 * the answer) are pvfree's shared host library, pvfree-protocol.h and
 * pvfree-reader.h; this file is the xenstore transport around them.  The
 * binding is described in pvfree's spec/transport-xenstore.md, the header
 * in pvfree/abi.h.
 *
 * Policy comes from the toolstack through xc_domain_save()'s flags:
 * XCFLAGS_NO_PVFREE turns the request off.  The wait is bounded by the
 * spec's recommended 5000 ms.
 */

#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xenstore.h>

#include "xg_sr_common.h"
#include "pvfree-protocol.h"
#include "pvfree-reader.h"

#define WPRINTF(_f, _a...) \
    xc_report(xch, xch->error_handler, XTL_WARN, 0, "pvfree: " _f, ## _a)

/*
 * Host features offered to the guest: none.  A skipped pfn is not
 * guaranteed to read as zero on the destination (see above), so
 * PVFREE_HF_ZERO_FILL would be a false promise.
 */
#define PVFREE_XEN_HOST_FEATURES 0

/* Wait for the guest's response: the spec's recommended timeout. */
#define PVFREE_TIMEOUT_MS       5000
/* Granularity at which the header and the registration are re-checked. */
#define PVFREE_POLL_MS          20
/* Scratch buffer for the reader: bitmap and extent-table chunks. */
#define PVFREE_SCRATCH_SIZE     (16 * PVFREE_FRAME_SIZE)

struct pvfree_req {
    struct xc_sr_context *ctx;
    struct xs_handle *xsh;
    char *dom_path;
    xen_pfn_t header_pfn;
    uint8_t *hdr;                   /* read-write mapping of the header */
    struct pvfree_channel chan;     /* the header, for pvfree-protocol.h */
    uint64_t id;                    /* the request published */
    uint64_t waited_us;
    struct pvfree_ram_range *ram;
    size_t nr_ram;
    void *scratch;                  /* PVFREE_SCRATCH_SIZE, for the reader */
    struct pvfree_response *resp;
    unsigned long marked;           /* pfns set in the free map */
};

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * Parse a xenstore value as the binding requires: 1-20 decimal digits, no
 * sign, no leading zero, no more than 2^64 - 1.
 */
static int parse_u64(const char *s, unsigned int len, uint64_t *val)
{
    uint64_t v = 0;
    unsigned int i;

    if ( len == 0 || len > 20 || (s[0] == '0' && len > 1) )
        return -1;

    for ( i = 0; i < len; i++ )
    {
        unsigned int d;

        if ( s[i] < '0' || s[i] > '9' )
            return -1;
        d = s[i] - '0';
        if ( v > (UINT64_MAX - d) / 10 )
            return -1;
        v = v * 10 + d;
    }

    *val = v;
    return 0;
}

/*
 * Read data/pvfree/<key> once.  Returns 0 and the value, 1 if the key does
 * not exist, -1 (logged) if it is malformed.
 */
static int read_key(struct pvfree_req *req, const char *key, uint64_t *val)
{
    xc_interface *xch = req->ctx->xch;
    char path[128];
    char *s;
    unsigned int len = 0;
    int rc;

    snprintf(path, sizeof(path), "%s/%s", req->dom_path, key);
    s = xs_read(req->xsh, XBT_NULL, path, &len);
    if ( !s )
        return 1;

    rc = parse_u64(s, len, val);
    if ( rc )
        WPRINTF("ignoring registration: %s is not a decimal number "
                "(%u bytes)", key, len);
    free(s);

    return rc;
}

static bool pfn_is_ram(const struct xc_sr_context *ctx, uint64_t pfn)
{
    return pfn < ctx->save.p2m_size &&
        ctx->save.ops.pfn_to_gfn(ctx, pfn) != INVALID_MFN;
}

/*
 * Map @nr frames from @pfn.  PFNs are translated with the saver's own
 * pfn_to_gfn(), i.e. through the P2M for a PV guest.  Every frame must map.
 */
static void *map_frames(struct pvfree_req *req, uint64_t pfn,
                        unsigned int nr, int prot)
{
    struct xc_sr_context *ctx = req->ctx;
    xc_interface *xch = ctx->xch;
    xen_pfn_t gfns[PVFREE_SCRATCH_SIZE / PVFREE_FRAME_SIZE + 1];
    int errs[PVFREE_SCRATCH_SIZE / PVFREE_FRAME_SIZE + 1];
    unsigned int i;
    void *p;

    if ( nr == 0 || nr > ARRAY_SIZE(gfns) )
        return NULL;

    for ( i = 0; i < nr; i++ )
    {
        if ( !pfn_is_ram(ctx, pfn + i) )
            return NULL;
        gfns[i] = ctx->save.ops.pfn_to_gfn(ctx, pfn + i);
    }

    p = xenforeignmemory_map(xch->fmem, ctx->domid, prot, nr, gfns, errs);
    if ( !p )
        return NULL;

    for ( i = 0; i < nr; i++ )
    {
        if ( errs[i] )
        {
            xenforeignmemory_unmap(xch->fmem, p, nr);
            return NULL;
        }
    }

    return p;
}

/* pvfree_read_fn: copy guest memory through a read-only mapping. */
static int read_guest(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    struct pvfree_req *req = opaque;
    uint64_t first = gpa >> PVFREE_FRAME_SHIFT;
    uint64_t last;
    unsigned int nr;
    void *p;

    if ( len == 0 )
        return 0;
    if ( gpa + len < gpa )
        return -1;

    last = (gpa + len - 1) >> PVFREE_FRAME_SHIFT;
    if ( last - first >= PVFREE_SCRATCH_SIZE / PVFREE_FRAME_SIZE + 1 )
        return -1;
    nr = last - first + 1;

    p = map_frames(req, first, nr, PROT_READ);
    if ( !p )
        return -1;

    memcpy(buf, (uint8_t *)p + (gpa & (PVFREE_FRAME_SIZE - 1)), len);
    xenforeignmemory_unmap(req->ctx->xch->fmem, p, nr);

    return 0;
}

/* pvfree_run_fn: mark a run of free frames in the free map. */
static int mark_run(void *opaque, uint64_t pfn, uint64_t nr)
{
    struct pvfree_req *req = opaque;
    struct xc_sr_context *ctx = req->ctx;
    uint64_t end = pfn + nr;

    if ( end > ctx->save.p2m_size || end < pfn )
        end = ctx->save.p2m_size;

    for ( ; pfn < end; pfn++ )
    {
        if ( !test_and_set_bit(pfn, ctx->save.pvfree.free_map) )
            req->marked++;
    }

    return 0;
}

/*
 * The guest's RAM as the reader may use it: the runs of valid P2M entries
 * below p2m_size.  For HVM/PVH, pfn_to_gfn() is the identity and this is
 * [0, p2m_size); holes are excluded later because only NOTAB pages are
 * ever sent without data.
 */
static int build_ram_ranges(struct pvfree_req *req)
{
    struct xc_sr_context *ctx = req->ctx;
    xc_interface *xch = ctx->xch;
    size_t cap = 0;
    xen_pfn_t pfn = 0;

    while ( pfn < ctx->save.p2m_size )
    {
        xen_pfn_t start;

        while ( pfn < ctx->save.p2m_size && !pfn_is_ram(ctx, pfn) )
            pfn++;
        if ( pfn == ctx->save.p2m_size )
            break;

        start = pfn;
        while ( pfn < ctx->save.p2m_size && pfn_is_ram(ctx, pfn) )
            pfn++;

        if ( req->nr_ram == cap )
        {
            struct pvfree_ram_range *r;

            cap = cap ? cap * 2 : 16;
            r = realloc(req->ram, cap * sizeof(*r));
            if ( !r )
            {
                ERROR("pvfree: unable to allocate %zu RAM ranges", cap);
                return -1;
            }
            req->ram = r;
        }
        req->ram[req->nr_ram].pfn = start;
        req->ram[req->nr_ram].nr_frames = pfn - start;
        req->nr_ram++;
    }

    return req->nr_ram ? 0 : -1;
}

/*
 * The header mapping seen as guest memory: [@gpa, @gpa + @len) must lie in
 * the header frame.
 */
static uint8_t *header_bytes(struct pvfree_req *req, uint64_t gpa,
                             size_t len)
{
    uint64_t start = req->chan.header_gpa;

    if ( gpa < start || len > PVFREE_HEADER_SIZE ||
         gpa - start > PVFREE_HEADER_SIZE - len )
        return NULL;

    return req->hdr + (gpa - start);
}

/* pvfree_read_fn for the channel: copy out of the header mapping. */
static int header_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    uint8_t *p = header_bytes(opaque, gpa, len);

    if ( !p )
        return -1;
    memcpy(buf, p, len);

    return 0;
}

/* pvfree_write_fn for the channel: copy into the header mapping. */
static int header_write(void *opaque, uint64_t gpa, const void *buf,
                        size_t len)
{
    uint8_t *p = header_bytes(opaque, gpa, len);

    if ( !p )
        return -1;
    memcpy(p, buf, len);

    return 0;
}

/* pvfree_barrier_fn: host_features before request_id. */
static void header_wmb(void *opaque)
{
    xen_wmb();
}

/*
 * Read the registration from xenstore, map the header frame and check its
 * identification.  Returns 0 if there is a registration to ask.
 */
static int find_registration(struct pvfree_req *req)
{
    struct xc_sr_context *ctx = req->ctx;
    xc_interface *xch = ctx->xch;
    struct pvfree_diag diag;
    uint64_t version, frame;
    char msg[160];

    req->xsh = xs_open(0);
    if ( !req->xsh )
    {
        WPRINTF("unable to open xenstore: %s", strerror(errno));
        return -1;
    }

    req->dom_path = xs_get_domain_path(req->xsh, ctx->domid);
    if ( !req->dom_path )
    {
        WPRINTF("unable to get the xenstore path of domain %u", ctx->domid);
        return -1;
    }

    if ( read_key(req, PVFREE_XS_VERSION, &version) ||
         read_key(req, PVFREE_XS_HEADER_FRAME, &frame) )
    {
        IPRINTF("pvfree: no pvfree registration, sending all pages");
        return -1;
    }

    if ( !pvfree_version_supported(version) )
    {
        WPRINTF("ignoring registration: version %"PRIu64" (supported: %u)",
                version, PVFREE_VERSION);
        return -1;
    }

    if ( !pfn_is_ram(ctx, frame) )
    {
        WPRINTF("ignoring registration: header-frame %#"PRIx64
                " is not guest RAM (p2m size %#lx)",
                frame, ctx->save.p2m_size);
        return -1;
    }
    req->header_pfn = frame;

    req->hdr = map_frames(req, frame, 1, PROT_READ | PROT_WRITE);
    if ( !req->hdr )
    {
        WPRINTF("ignoring registration: unable to map header-frame %#"PRIx64,
                frame);
        return -1;
    }

    req->chan.read = header_read;
    req->chan.write = header_write;
    req->chan.wmb = header_wmb;
    req->chan.opaque = req;
    req->chan.header_gpa = (uint64_t)frame << PVFREE_FRAME_SHIFT;

    if ( pvfree_check_registration(&req->chan, &diag) != PVFREE_OK )
    {
        pvfree_diag_format(&diag, msg, sizeof(msg));
        WPRINTF("ignoring registration: bad header at pfn %#"PRIx64": %s",
                frame, msg);
        return -1;
    }

    return 0;
}

/* The guest's RAM for the reader, the free map and the reader's buffers. */
static int prepare(struct pvfree_req *req)
{
    struct xc_sr_context *ctx = req->ctx;
    xc_interface *xch = ctx->xch;

    if ( build_ram_ranges(req) )
        return -1;

    ctx->save.pvfree.free_map = bitmap_alloc(ctx->save.p2m_size);
    req->scratch = malloc(PVFREE_SCRATCH_SIZE);
    req->resp = malloc(sizeof(*req->resp));
    if ( !ctx->save.pvfree.free_map || !req->scratch || !req->resp )
    {
        ERROR("pvfree: unable to allocate the free map");
        return -1;
    }

    return 0;
}

/*
 * Log-dirty is on: publish a request above every id a previous toolstack
 * or the guest left in the header, then tell the guest in xenstore.
 */
static int publish(struct pvfree_req *req)
{
    xc_interface *xch = req->ctx->xch;
    uint64_t old_req = pvfree_hdr_request_id(req->hdr);
    uint64_t old_resp = pvfree_hdr_response_id(req->hdr);
    struct pvfree_diag diag;
    char path[128], buf[32], msg[160];

    req->id = pvfree_next_request_id(old_req > old_resp ? old_req : old_resp);
    if ( !req->id )
    {
        WPRINTF("ignoring registration: request ids exhausted (%#"PRIx64")",
                old_req > old_resp ? old_req : old_resp);
        return -1;
    }

    if ( pvfree_publish_request(&req->chan, PVFREE_XEN_HOST_FEATURES,
                                req->id, &diag) != PVFREE_OK )
    {
        pvfree_diag_format(&diag, msg, sizeof(msg));
        WPRINTF("unable to publish request %"PRIu64": %s", req->id, msg);
        return -1;
    }
    /* The header stores before the request key (binding 6.2 item 1). */
    xen_mb();

    snprintf(path, sizeof(path), "%s/%s", req->dom_path, PVFREE_XS_REQUEST);
    snprintf(buf, sizeof(buf), "%"PRIu64, req->id);
    if ( !xs_write(req->xsh, XBT_NULL, path, buf, strlen(buf)) )
    {
        WPRINTF("unable to write %s: %s", PVFREE_XS_REQUEST, strerror(errno));
        return -1;
    }

    return 0;
}

/*
 * Wait until the guest answered the request, the registration ends, or the
 * timeout expires.  Returns 0 when answered.
 */
static int wait_response(struct pvfree_req *req)
{
    xc_interface *xch = req->ctx->xch;
    char path[128];
    const char *token = "pvfree-response";
    uint64_t start = now_us();
    uint64_t deadline = start + PVFREE_TIMEOUT_MS * UINT64_C(1000);
    bool watching;
    int rc = -1;

    snprintf(path, sizeof(path), "%s/%s", req->dom_path, PVFREE_XS_RESPONSE);
    watching = xs_watch(req->xsh, path, token);

    for ( ; ; )
    {
        struct pollfd pfd = { .fd = -1, .events = POLLIN };
        uint64_t now, frame;
        int ms;

        if ( pvfree_response_ready(&req->chan, req->id, NULL) == PVFREE_OK )
        {
            rc = 0;
            break;
        }

        if ( read_key(req, PVFREE_XS_HEADER_FRAME, &frame) ||
             frame != req->header_pfn )
        {
            WPRINTF("registration ended while waiting for request %"PRIu64,
                    req->id);
            break;
        }

        now = now_us();
        if ( now >= deadline )
        {
            WPRINTF("no response to request %"PRIu64" within %u ms",
                    req->id, PVFREE_TIMEOUT_MS);
            break;
        }

        ms = (deadline - now + 999) / 1000;
        if ( ms > PVFREE_POLL_MS )
            ms = PVFREE_POLL_MS;

        if ( watching )
            pfd.fd = xs_fileno(req->xsh);
        poll(&pfd, pfd.fd >= 0 ? 1 : 0, ms);

        if ( watching )
        {
            char **ev;

            while ( (ev = xs_check_watch(req->xsh)) != NULL )
                free(ev);
        }
    }

    if ( watching )
        xs_unwatch(req->xsh, path, token);

    req->waited_us = now_us() - start;

    return rc;
}

/* Read the answer with the shared reader and fill the free map. */
static int use_response(struct pvfree_req *req)
{
    struct xc_sr_context *ctx = req->ctx;
    xc_interface *xch = ctx->xch;
    struct pvfree_response *resp = req->resp;
    struct pvfree_reader reader = {
        .read = read_guest,
        .opaque = req,
        .ram = req->ram,
        .nr_ram = req->nr_ram,
        .scratch = req->scratch,
        .scratch_size = PVFREE_SCRATCH_SIZE,
        .host_features = PVFREE_XEN_HOST_FEATURES,
    };
    struct pvfree_diag diag;
    enum pvfree_error err;
    char msg[160];

    err = pvfree_read_response(&reader, req->chan.header_gpa, req->id, resp,
                               &diag);
    if ( err == PVFREE_OK )
        err = pvfree_for_each_free_run(&reader, resp, mark_run, req, &diag);

    if ( err != PVFREE_OK )
    {
        /* Anything invalid: skip nothing for this response. */
        pvfree_diag_format(&diag, msg, sizeof(msg));
        WPRINTF("rejected response %"PRIu64" (status %s): %s: %s", req->id,
                pvfree_status_name(resp->status), pvfree_error_name(err),
                msg);
        return -1;
    }

    IPRINTF("pvfree: guest answered request %"PRIu64" in %"PRIu64" ms: "
            "status %s, %lu of %lu pfns free (guest claims %"PRIu64
            " free, snapshot %"PRIu64" us, max lock hold %u us)",
            req->id, req->waited_us / 1000, pvfree_status_name(resp->status),
            req->marked, ctx->save.p2m_size, resp->free_frames,
            resp->snapshot_us, resp->max_lock_hold_us);

    return 0;
}

/*
 * Ask the guest for a snapshot and fill ctx->save.pvfree.free_map.  Never
 * fails the save: on any problem the map stays unallocated.
 */
static void do_request(struct pvfree_req *req)
{
    struct xc_sr_context *ctx = req->ctx;
    xc_interface *xch = ctx->xch;

    if ( find_registration(req) )
        return;

    if ( prepare(req) || publish(req) || wait_response(req) ||
         use_response(req) )
    {
        free(ctx->save.pvfree.free_map);
        ctx->save.pvfree.free_map = NULL;
        IPRINTF("pvfree: waited %"PRIu64" ms, not skipping any page",
                req->waited_us / 1000);
    }
}

void pvfree_save_request(struct xc_sr_context *ctx)
{
    xc_interface *xch = ctx->xch;
    struct pvfree_req req = { .ctx = ctx };

    if ( ctx->save.pvfree.disabled )
    {
        DPRINTF("pvfree: disabled by XCFLAGS_NO_PVFREE");
        return;
    }

    if ( ctx->stream_type != XC_STREAM_PLAIN || !ctx->save.live )
        return;

    /*
     * A paused domain cannot answer: asking it would only wait for the
     * whole timeout.
     */
    if ( ctx->dominfo.paused )
    {
        IPRINTF("pvfree: domain %u is paused, not asking it, sending all "
                "pages", ctx->domid);
        return;
    }

    do_request(&req);

    if ( req.hdr )
        xenforeignmemory_unmap(xch->fmem, req.hdr, 1);
    free(req.resp);
    free(req.scratch);
    free(req.ram);
    free(req.dom_path);
    xs_close(req.xsh);
}

void pvfree_save_pass_done(struct xc_sr_context *ctx)
{
    xc_interface *xch = ctx->xch;

    if ( !ctx->save.pvfree.free_map )
        return;

    IPRINTF("pvfree: first pass sent %lu free pfns without data "
            "(%lu MiB not sent)", ctx->save.pvfree.skipped,
            ctx->save.pvfree.skipped >> (20 - XC_PAGE_SHIFT));

    free(ctx->save.pvfree.free_map);
    ctx->save.pvfree.free_map = NULL;
}

/*
 * Local variables:
 * mode: C
 * c-file-style: "BSD"
 * c-basic-offset: 4
 * tab-width: 4
 * indent-tabs-mode: nil
 * End:
 */

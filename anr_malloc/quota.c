/* A heap as a membroker client: its limit is the quota it holds.
 *
 * Policy, one reason per rule:
 *  - Quota is the FIRST link of the need-more-memory chain: a free page of
 *    the system pool costs nobody anything, while the heap's caches have
 *    value; the heap's own callbacks run only when the broker grants nothing
 *    (then the allocation fails after them, as without a broker). Other
 *    processes' caches are protected by the broker itself: it asks
 *    bidirectional clients with normal urgency only when its pool is short.
 *  - Ask in chunks of max(chunk, use / 8, the allocation + a page): a
 *    round trip per page would put the broker on the hot path.
 *  - Return surplus only past two chunks of headroom, down to one
 *    (hysteresis): a heap that breathes around a level does not ping-pong.
 *  - A give-back purges, runs the heap's need-more-memory callbacks (once
 *    for normal urgency, up to retry_rounds for urgent), purges again and
 *    gives what is now above the use, at most what was asked.
 *  - No mb_* call is ever made from free(): free never blocks. Surplus goes
 *    back from anr_heap_trim() and anr_heap_membroker_dispatch().
 *  - Re-entry: a thread inside an mb_* call for heap H (including a
 *    give-back callback, which runs under the client's mutex) makes no
 *    other mb_* call for H (tls_in_mb), and callbacks run inside H's
 *    callback frame so their allocations do not reach the broker.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_CHUNK ((size_t)1 << 20)

static __thread anr_mheap *tls_in_mb __attribute__((tls_model("initial-exec")));

/* --- notices --- */

static void say(anr_mheap *h, const char *fmt_what, int err)
{
    _am_quota *q = &h->quota;
    char lim[48];
    if (q->cap)
        snprintf(lim, sizeof(lim), "%zu bytes", q->cap);
    else
        snprintf(lim, sizeof(lim), "none");
    const char *path = q->socket[0] ? q->socket : getenv("MEMBROKER_SOCKET");
    if (!path || !*path) path = MB_DEFAULT_SOCKET;
    char msg[320];
    snprintf(msg, sizeof(msg),
             "anr_malloc: heap '%s': membroker at %s %s (%s); running with its local limit (%s)",
             h->name, path, fmt_what, strerror(err), lim);
    if (q->msg) {
        q->msg(q->msg_ctx, h, msg);
        return;
    }
    size_t n = strlen(msg);
    msg[n++] = '\n'; /* sizeof(msg) leaves room: snprintf stopped at cap - 1 */
    if (write(2, msg, n) < 0) return;
}

/* --- the limit follows `held` --- */

static size_t to_bytes(const _am_quota *q, uint64_t pages)
{
    if (!q->mb_page) return 0; /* never set up (a heap adopted from another front end) */
    if (pages > SIZE_MAX / q->mb_page) return SIZE_MAX - (SIZE_MAX % q->mb_page);
    return (size_t)pages * q->mb_page;
}

static uint64_t to_pages(const _am_quota *q, size_t bytes)
{
    if (!q->mb_page) return 0;
    return ((uint64_t)bytes + q->mb_page - 1) / q->mb_page;
}

/* Bytes of pages counted against the limit now (in use + dirty). */
static size_t use_bytes(anr_mheap *h)
{
    anr_core_stats s;
    anr_core_get_stats(h->core, &s);
    return (s.pages_in_use + s.pages_dirty) * s.page_size;
}

/* q->lock held. */
static void apply_limit(anr_mheap *h)
{
    _am_quota *q = &h->quota;
    anr_core_set_limit(h->core, q->held ? to_bytes(q, q->held) : 1);
}

/* Lowers `held` by up to max_pages, keeping keep_pages above the use, and
 * the limit with it. Returns the pages shed (for the caller to return). */
static uint64_t shed(anr_mheap *h, uint64_t max_pages, uint64_t keep_pages)
{
    _am_quota *q = &h->quota;
    pthread_mutex_lock(&q->lock);
    uint64_t used = to_pages(q, use_bytes(h));
    uint64_t give = q->held > used + keep_pages ? q->held - used - keep_pages : 0;
    if (give > max_pages) give = max_pages;
    if (give) {
        q->held -= give;
        apply_limit(h);
        /* An allocation may have taken pages between the reading and the
         * new limit; past the limit the use cannot grow, so a second
         * reading is final: take back what it shows is needed. */
        uint64_t now = to_pages(q, use_bytes(h));
        if (now > q->held) {
            uint64_t back = now - q->held;
            if (back > give) back = give;
            q->held += back;
            give -= back;
            apply_limit(h);
        }
    }
    pthread_mutex_unlock(&q->lock);
    return give;
}

/* The daemon went away (or this is a forked child): local limit from now on. */
static void lost(anr_mheap *h, int err)
{
    _am_quota *q = &h->quota;
    if (!atomic_exchange(&q->connected, false)) return;
    pthread_mutex_lock(&q->lock);
    q->held = 0;
    anr_core_set_limit(h->core, q->cap);
    bool tell = !q->said_lost;
    q->said_lost = true;
    pthread_mutex_unlock(&q->lock);
    mb_client_close(&q->client); /* a forked child closes only its copy */
    if (tell) say(h, "lost", err);
}

/* --- give-back (bidirectional heaps) --- */

static size_t surplus_bytes(anr_mheap *h)
{
    _am_quota *q = &h->quota;
    pthread_mutex_lock(&q->lock);
    size_t held = to_bytes(q, q->held);
    pthread_mutex_unlock(&q->lock);
    size_t use = use_bytes(h);
    return held > use ? held - use : 0;
}

/* Runs under the client's mutex (dispatch, or inline in a REQUEST/RESERVE). */
static uint64_t give_back(void *ctx, uint64_t pages, mb_urgency urgency)
{
    anr_mheap *h = ctx;
    _am_quota *q = &h->quota;
    anr_mheap *outer = tls_in_mb;
    tls_in_mb = h;
    atomic_fetch_add(&q->givebacks, 1);
    size_t want = to_bytes(q, pages);
    anr_core_purge(h->core, true);
    unsigned rounds = urgency == MB_URGENT ? q->rounds : 1;
    for (unsigned r = 0; r < rounds; r++) {
        size_t have = surplus_bytes(h);
        if (have >= want) break;
        if (_am_more_memory_chain(h, want - have) == 0) break;
        anr_core_purge(h->core, true);
    }
    uint64_t give = shed(h, pages, 0);
    atomic_fetch_add(&q->given_back, (uint64_t)to_bytes(q, give));
    tls_in_mb = outer;
    return give;
}

/* --- set-up --- */

void _am_quota_init(anr_mheap *h, const anr_options *o)
{
    _am_quota *q = &h->quota;
    q->mode = o->membroker;
    q->cap = o->limit;
    q->chunk = o->membroker_chunk ? o->membroker_chunk : DEFAULT_CHUNK;
    q->rounds = o->retry_rounds ? o->retry_rounds : 4;
    q->msg = o->on_message;
    q->msg_ctx = o->message_ctx;
    q->mb_page = (size_t)sysconf(_SC_PAGESIZE);
    pthread_mutex_init(&q->lock, NULL);
    atomic_init(&q->connected, false);
    if (o->membroker == ANR_MEMBROKER_OFF) return;
    if (o->membroker_socket) snprintf(q->socket, sizeof(q->socket), "%s", o->membroker_socket);
    bool bidir = o->membroker == ANR_MEMBROKER_BIDIRECTIONAL;
    int rc = mb_client_connect(&q->client, q->socket[0] ? q->socket : NULL,
                               bidir ? MB_BIDIRECTIONAL : MB_SIMPLE, bidir ? give_back : NULL, h);
    mb_balance b;
    if (rc == 0) rc = mb_query(&q->client, &b);
    if (rc < 0) {
        mb_client_close(&q->client);
        say(h, "unreachable", -rc);
        return; /* the engine keeps options.limit */
    }
    q->mb_page = (size_t)b.page_size;
    atomic_store(&q->connected, true);
    pthread_mutex_lock(&q->lock);
    q->held = 0;
    apply_limit(h); /* quota comes in chunks from the first need for more */
    pthread_mutex_unlock(&q->lock);
}

void _am_quota_fini(anr_mheap *h)
{
    _am_quota *q = &h->quota;
    if (atomic_exchange(&q->connected, false))
        mb_client_close(&q->client); /* the daemon takes back what was held */
    pthread_mutex_destroy(&q->lock);
}

/* --- asking and returning --- */

bool _am_quota_more(anr_mheap *h, size_t size)
{
    _am_quota *q = &h->quota;
    if (!atomic_load(&q->connected) || tls_in_mb == h) return false;
    size_t use = use_bytes(h);
    size_t want_b = q->chunk;
    if (use / 8 > want_b) want_b = use / 8;
    if (size <= SIZE_MAX - q->mb_page && size + q->mb_page > want_b) want_b = size + q->mb_page;
    uint64_t want = to_pages(q, want_b);
    if (q->cap) {
        pthread_mutex_lock(&q->lock);
        uint64_t max = q->cap / q->mb_page, held = q->held;
        pthread_mutex_unlock(&q->lock);
        if (held >= max) return false; /* at the ceiling options.limit sets */
        if (want > max - held) want = max - held;
    }
    atomic_fetch_add(&q->requests, 1);
    anr_mheap *outer = tls_in_mb; /* another heap's give-back may be under way here */
    tls_in_mb = h;
    int64_t got = mb_request(&q->client, want);
    tls_in_mb = outer;
    if (got < 0) {
        lost(h, (int)-got);
        return true; /* the limit moved: the local one */
    }
    if (got == 0) return false;
    pthread_mutex_lock(&q->lock);
    q->held += (uint64_t)got;
    apply_limit(h);
    pthread_mutex_unlock(&q->lock);
    atomic_fetch_add(&q->granted, (uint64_t)to_bytes(q, (uint64_t)got));
    return true;
}

size_t _am_quota_surplus(anr_mheap *h)
{
    _am_quota *q = &h->quota;
    if (!atomic_load(&q->connected) || tls_in_mb == h) return 0;
    size_t use = use_bytes(h);
    size_t chunk_b = use / 8 > q->chunk ? use / 8 : q->chunk;
    uint64_t chunk = to_pages(q, chunk_b);
    pthread_mutex_lock(&q->lock);
    bool over = q->held > to_pages(q, use) + 2 * chunk;
    pthread_mutex_unlock(&q->lock);
    if (!over) return 0;
    uint64_t ret = shed(h, UINT64_MAX, chunk);
    if (!ret) return 0;
    anr_mheap *outer = tls_in_mb;
    tls_in_mb = h;
    int rc = mb_return(&q->client, ret);
    tls_in_mb = outer;
    if (rc < 0) {
        if (rc == -ENOTCONN) {
            lost(h, ENOTCONN);
        } else {
            pthread_mutex_lock(&q->lock); /* not returned: still ours */
            q->held += ret;
            apply_limit(h);
            pthread_mutex_unlock(&q->lock);
        }
        return 0;
    }
    atomic_fetch_add(&q->returned, (uint64_t)to_bytes(q, ret));
    return to_bytes(q, ret);
}

/* --- public --- */

int anr_heap_membroker_fd(const anr_mheap *h)
{
    const _am_quota *q = &h->quota;
    if (q->mode != ANR_MEMBROKER_BIDIRECTIONAL || !atomic_load(&q->connected)) return -1;
    return mb_client_fd(&q->client);
}

int anr_heap_membroker_dispatch(anr_mheap *h)
{
    _am_quota *q = &h->quota;
    if (!atomic_load(&q->connected)) return -ENOTCONN;
    if (tls_in_mb == h) return 0; /* called from one of our own give-back callbacks */
    int rc = 0;
    if (q->mode == ANR_MEMBROKER_BIDIRECTIONAL) {
        anr_mheap *outer = tls_in_mb;
        tls_in_mb = h;
        rc = mb_client_dispatch(&q->client);
        tls_in_mb = outer;
        if (rc == -ENOTCONN) {
            lost(h, ENOTCONN);
            return rc;
        }
    }
    anr_core_tick(h->core); /* pages past the decay time go back first */
    _am_quota_surplus(h);
    return rc;
}

int anr_heap_membroker_reserve(anr_mheap *h, size_t bytes, int timeout_ms)
{
    _am_quota *q = &h->quota;
    if (!atomic_load(&q->connected)) return -ENOTCONN;
    if (tls_in_mb == h) return -EDEADLK;
    uint64_t pages = to_pages(q, bytes);
    pthread_mutex_lock(&q->lock);
    bool over = q->cap && q->held + pages > q->cap / q->mb_page;
    pthread_mutex_unlock(&q->lock);
    if (over) return -ENOSPC;
    anr_mheap *outer = tls_in_mb;
    tls_in_mb = h;
    int rc = mb_reserve(&q->client, pages, timeout_ms);
    tls_in_mb = outer;
    if (rc == -ENOTCONN) lost(h, ENOTCONN);
    if (rc < 0) return rc;
    pthread_mutex_lock(&q->lock);
    q->held += pages;
    apply_limit(h);
    pthread_mutex_unlock(&q->lock);
    atomic_fetch_add(&q->granted, (uint64_t)to_bytes(q, pages));
    return 0;
}

size_t anr_heap_membroker_return_surplus(anr_mheap *h)
{
    return _am_quota_surplus(h);
}

void anr_heap_membroker_status(anr_mheap *h, anr_membroker_status *out)
{
    _am_quota *q = &h->quota;
    memset(out, 0, sizeof(*out));
    out->mode = (anr_membroker_mode)q->mode;
    out->connected = atomic_load(&q->connected);
    pthread_mutex_lock(&q->lock);
    out->held = to_bytes(q, q->held);
    pthread_mutex_unlock(&q->lock);
    out->page_size = q->mb_page;
    out->requests = atomic_load(&q->requests);
    out->granted = atomic_load(&q->granted);
    out->returned = atomic_load(&q->returned);
    out->givebacks = atomic_load(&q->givebacks);
    out->given_back = atomic_load(&q->given_back);
}

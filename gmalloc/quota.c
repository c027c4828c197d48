/* Quota from membroker (MEMBROKER on, or GMALLOC_MEMBROKER=1).
 *
 * The engine's limit becomes the quota this process holds. When an
 * allocation would pass it, the engine's more_memory hook asks the daemon for
 * a chunk (the larger of 1 MiB and 1/8 of the pages in use, and at least what
 * the allocation needs) with a REQUEST, which waits a short time on the daemon
 * side before it is answered. After a purge that could block, surplus quota
 * goes back, with hysteresis: only when more than two chunks are spare, down
 * to one spare chunk. A local LIMIT stays an upper bound. If the daemon cannot
 * be reached, the process says so once and runs with its local limit.
 *
 * Everything here runs in the allocator's slow paths: libmbclient never
 * allocates, the mutex is never held across a call into the heap that could
 * come back here, and messages go through write(2).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <gmalloc.h>
#include <membroker.h>

#include "internal.h"

#define CHUNK_MIN_BYTES ((size_t)1 << 20)

static mb_client client;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static bool enabled, connected, told;
static uint64_t held; /* pages of quota held */

static size_t page_size(anr_heap *h, anr_core_stats *s)
{
    anr_core_get_stats(h, s);
    return s->page_size;
}

static uint64_t use_pages(const anr_core_stats *s)
{
    return (uint64_t)s->pages_in_use + s->pages_dirty;
}

static uint64_t chunk_pages(const anr_core_stats *s)
{
    uint64_t min = CHUNK_MIN_BYTES / s->page_size, eighth = use_pages(s) / 8;
    return eighth > min ? eighth : min;
}

/* qlock held. The engine limit follows the quota, capped by LIMIT. At least
 * one page: the engine reads a limit of 0 as "none". */
static void apply_limit(anr_heap *h, size_t page)
{
    uint64_t bytes = (held ? held : 1) * (uint64_t)page;
    if (_gm_cfg.limit && bytes > _gm_cfg.limit)
        bytes = _gm_cfg.limit;
    anr_core_set_limit(h, bytes > SIZE_MAX ? SIZE_MAX : (size_t)bytes);
}

/* qlock held. */
static bool connect_once(anr_heap *h)
{
    int rc = mb_client_connect(&client, NULL, MB_SIMPLE, NULL, NULL);
    if (rc == 0) {
        connected = true;
        held = 0;
        return true;
    }
    if (!told) {
        told = true;
        _gm_quota_note("membroker cannot be reached; running with the local limit", -rc);
    }
    (void)h;
    return false;
}

static bool more_memory(void *ctx, anr_heap *h, size_t size)
{
    (void)ctx;
    int saved = errno; /* a successful malloc leaves errno alone */
    anr_core_stats s;
    size_t page = page_size(h, &s);
    pthread_mutex_lock(&qlock);
    if (!connected && !connect_once(h)) {
        pthread_mutex_unlock(&qlock);
        errno = saved;
        return false;
    }
    uint64_t need = (size + page - 1) / page;
    uint64_t want = chunk_pages(&s);
    if (use_pages(&s) + need > held && use_pages(&s) + need - held > want)
        want = use_pages(&s) + need - held;
    int64_t got = mb_request(&client, want);
    bool ok = got > 0;
    if (ok) {
        held += (uint64_t)got;
        apply_limit(h, page);
    } else if (got == -ENOTCONN || got == -EPIPE || got == -ECONNRESET) {
        connected = false; /* the daemon went away: the local limit rules */
        mb_client_close(&client);
        anr_core_set_limit(h, _gm_cfg.limit);
        _gm_quota_note("lost the membroker connection; running with the local limit", (int)-got);
        ok = true; /* retry under the local limit */
    }
    pthread_mutex_unlock(&qlock);
    errno = saved;
    return ok;
}

static void purged(void *ctx, anr_heap *h, size_t pages, bool may_block)
{
    (void)ctx, (void)pages;
    if (!may_block || !connected || pthread_mutex_trylock(&qlock) != 0)
        return;
    int saved = errno;
    anr_core_stats s;
    size_t page = page_size(h, &s);
    uint64_t use = use_pages(&s), chunk = chunk_pages(&s);
    if (connected && held > use + 2 * chunk) {
        uint64_t give = held - (use + chunk);
        if (mb_return(&client, give) == 0) {
            held -= give;
            apply_limit(h, page);
        }
    }
    pthread_mutex_unlock(&qlock);
    errno = saved;
}

void _gm_quota_hooks(anr_core_hooks *hooks)
{
    if (!_gm_cfg.membroker)
        return;
    enabled = true;
    hooks->more_memory = more_memory;
    hooks->purged = purged;
}

/* After the heap is published: connect and take a first chunk. */
void _gm_quota_start(anr_heap *h)
{
    if (!enabled)
        return;
    int saved = errno;
    anr_core_stats s;
    size_t page = page_size(h, &s);
    pthread_mutex_lock(&qlock);
    if (connect_once(h)) {
        int64_t got = mb_request(&client, chunk_pages(&s) + use_pages(&s));
        if (got > 0)
            held = (uint64_t)got;
        apply_limit(h, page);
    }
    pthread_mutex_unlock(&qlock);
    errno = saved;
}

/* fork() child: the registration stays with the parent. The child holds no
 * quota; it connects again when it first needs memory past its limit. */
void _gm_quota_fork_child(void)
{
    if (!enabled)
        return;
    pthread_mutex_init(&qlock, NULL);
    if (connected)
        mb_client_close(&client);
    connected = false;
    held = 0;
    /* Growth past what it uses now needs quota of its own. */
    anr_core_stats s;
    pthread_mutex_lock(&qlock);
    apply_limit(_gm_heap, page_size(_gm_heap, &s));
    pthread_mutex_unlock(&qlock);
}

__attribute__((visibility("default"))) uint64_t gmalloc_quota_pages(void)
{
    return held;
}

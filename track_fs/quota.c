/* Quota: what track_fs has charged for its files and what it holds to
 * cover that, from membroker or, without it, a local limit.
 *
 * Two locks, never held across a file operation:
 *  - acct: held, charged (a few instructions at a time);
 *  - talk: one conversation with membroker at a time (REQUEST, RESERVE,
 *    RETURN). A writer whose charge fits in what is held never takes it.
 *
 * Policy:
 *  - ask in chunks (-o chunk, default 1M): one round trip covers many writes;
 *  - REQUEST first (normal urgency, may be granted in part); only when the
 *    grant falls short, an urgent RESERVE of the shortfall (unless
 *    -o nonurgent), which may make bidirectional clients give back;
 *  - a partial grant is kept even when the write still fails: it covers the
 *    next smaller write, and the hysteresis below hands it back if unused;
 *  - give back when the surplus passes return_above (default 4 chunks), down
 *    to slack (default 1 chunk): deleting and rewriting a file does not make
 *    a round trip each time.
 *  - bidirectional (-o cache_dir): a give-back request is answered from the
 *    surplus first, then by deleting cache files oldest first (cache.c).
 */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <membroker.h>

#include "internal.h"

static struct {
    pthread_mutex_t acct, talk;
    uint64_t held, charged; /* bytes (acct) */
    uint64_t page;          /* membroker's page size; the system's without it */
    bool broker;            /* connected to membroker (talk) */
    atomic_bool return_pending;
    mb_client client;
    pthread_t dispatcher;
    bool dispatcher_running;
    int stop_pipe[2];
} q = {
    .acct = PTHREAD_MUTEX_INITIALIZER,
    .talk = PTHREAD_MUTEX_INITIALIZER,
    .stop_pipe = {-1, -1},
};

static uint64_t pages_up(uint64_t bytes)
{
    return (bytes + q.page - 1) / q.page;
}

/* talk held. The daemon went away: what is held stays as a local limit. */
static void lost_broker(int err)
{
    if (!q.broker) return;
    q.broker = false;
    char held[32];
    pthread_mutex_lock(&q.acct);
    tf_format_size(q.held, held, sizeof held);
    pthread_mutex_unlock(&q.acct);
    tf_log(LOG_WARNING,
           "lost the membroker connection (%s): running with the quota held (%s) as a local limit",
           strerror(err), held);
}

/* talk held: gives back surplus beyond return_above, down to slack. */
static void return_locked(void)
{
    if (!q.broker) return;
    pthread_mutex_lock(&q.acct);
    uint64_t surplus = q.held > q.charged ? q.held - q.charged : 0;
    uint64_t give = 0;
    if (surplus > tf_opt.return_above) give = (surplus - tf_opt.slack) / q.page * q.page;
    q.held -= give; /* before the message: no one can charge it meanwhile */
    pthread_mutex_unlock(&q.acct);
    if (!give) return;
    int rc = mb_return(&q.client, give / q.page);
    if (rc == -EINVAL) { /* the daemon counts less than we do: keep its view */
        mb_balance b;
        if (mb_query(&q.client, &b) == 0) {
            pthread_mutex_lock(&q.acct);
            q.held = b.held_pages * q.page;
            pthread_mutex_unlock(&q.acct);
        }
    } else if (rc < 0) {
        lost_broker(-rc);
    }
}

/* Releases talk; a return that was skipped while it was held runs now. */
static void talk_unlock(void)
{
    pthread_mutex_unlock(&q.talk);
    if (atomic_load(&q.return_pending)) tf_quota_maybe_return();
}

void tf_quota_maybe_return(void)
{
    atomic_store(&q.return_pending, true);
    while (atomic_load(&q.return_pending)) {
        if (pthread_mutex_trylock(&q.talk) != 0)
            return; /* the holder sees the flag when it unlocks */
        atomic_store(&q.return_pending, false);
        return_locked();
        pthread_mutex_unlock(&q.talk);
    }
}

/* acct held. */
static bool take(uint64_t bytes)
{
    if (q.charged + bytes > q.held) return false;
    q.charged += bytes;
    return true;
}

int tf_quota_charge(uint64_t bytes)
{
    if (bytes == 0) return 0;
    pthread_mutex_lock(&q.acct);
    bool ok = take(bytes);
    pthread_mutex_unlock(&q.acct);
    if (ok) return 0;

    pthread_mutex_lock(&q.talk);
    pthread_mutex_lock(&q.acct);
    ok = take(bytes);
    uint64_t shortfall = ok ? 0 : q.charged + bytes - q.held;
    pthread_mutex_unlock(&q.acct);
    if (!ok && q.broker) {
        uint64_t want = pages_up(shortfall), chunk = pages_up(tf_opt.chunk);
        int64_t got = mb_request(&q.client, want > chunk ? want : chunk);
        if (got < 0) {
            lost_broker((int)-got);
        } else {
            pthread_mutex_lock(&q.acct);
            q.held += (uint64_t)got * q.page;
            ok = take(bytes);
            shortfall = ok ? 0 : q.charged + bytes - q.held;
            pthread_mutex_unlock(&q.acct);
        }
    }
    if (!ok && q.broker && !tf_opt.nonurgent) {
        /* All or nothing: other clients may be asked to give back, urgently. */
        uint64_t want = pages_up(shortfall);
        int rc = mb_reserve(&q.client, want, tf_opt.reserve_timeout);
        if (rc == 0) {
            pthread_mutex_lock(&q.acct);
            q.held += want * q.page;
            ok = take(bytes);
            pthread_mutex_unlock(&q.acct);
        } else if (rc == -ENOTCONN) {
            lost_broker(-rc);
        }
    }
    talk_unlock();
    return ok ? 0 : -ENOSPC;
}

void tf_quota_adjust(int64_t delta)
{
    pthread_mutex_lock(&q.acct);
    if (delta < 0 && (uint64_t)-delta > q.charged)
        q.charged = 0; /* cannot happen while the invariant holds */
    else
        q.charged += (uint64_t)delta;
    pthread_mutex_unlock(&q.acct);
}

void tf_quota_space(uint64_t *charged, uint64_t *avail)
{
    uint64_t pool_free = 0;
    pthread_mutex_lock(&q.talk);
    if (q.broker) {
        mb_balance b;
        if (mb_query(&q.client, &b) == 0) pool_free = b.free_pages * b.page_size;
    }
    pthread_mutex_unlock(&q.talk);
    pthread_mutex_lock(&q.acct);
    *charged = q.charged;
    *avail = (q.held > q.charged ? q.held - q.charged : 0) + pool_free;
    pthread_mutex_unlock(&q.acct);
}

void tf_quota_snapshot_get(tf_quota_snapshot *s)
{
    pthread_mutex_lock(&q.acct);
    s->held = q.held;
    s->charged = q.charged;
    s->page = q.page;
    s->broker = q.broker;
    pthread_mutex_unlock(&q.acct);
}

/* ---- bidirectional: membroker asks for quota back ---- */

/* Runs with the client's mutex held (in the dispatcher, or inline in a
 * thread waiting in mb_request/mb_reserve, maybe holding a file lock and
 * talk): takes acct and, through cache eviction, file locks only with
 * trylock. Never calls mb_*. */
static uint64_t give_back(void *ctx, uint64_t pages, mb_urgency urgency)
{
    (void)ctx;
    uint64_t want = pages * q.page;
    pthread_mutex_lock(&q.acct);
    uint64_t surplus = q.held > q.charged ? q.held - q.charged : 0;
    pthread_mutex_unlock(&q.acct);
    uint64_t evicted = 0;
    if (surplus < want && tf_opt.cache_dir) evicted = tf_cache_evict(want - surplus);
    pthread_mutex_lock(&q.acct);
    surplus = q.held > q.charged ? q.held - q.charged : 0;
    uint64_t give = (surplus < want ? surplus : want) / q.page;
    q.held -= give * q.page;
    pthread_mutex_unlock(&q.acct);
    tf_log(LOG_INFO, "give-back (%s) of %llu pages: gave %llu (%llu bytes of cache files deleted)",
           urgency == MB_URGENT ? "urgent" : "normal", (unsigned long long)pages,
           (unsigned long long)give, (unsigned long long)evicted);
    return give;
}

static void *dispatcher(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[2] = {{mb_client_fd(&q.client), POLLIN, 0}, {q.stop_pipe[0], POLLIN, 0}};
        if (p[0].fd < 0) break;
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[1].revents) break;
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            int rc = mb_client_dispatch(&q.client);
            if (rc == -ENOTCONN) {
                pthread_mutex_lock(&q.talk);
                lost_broker(ENOTCONN);
                pthread_mutex_unlock(&q.talk);
                break;
            }
            if (rc == 0) /* another thread is in a call and handles it: let it read */
                usleep(1000);
        }
    }
    return NULL;
}

/* ---- start and stop ---- */

static void start_local(const char *why)
{
    q.page = (uint64_t)sysconf(_SC_PAGESIZE);
    q.broker = false;
    q.held = tf_opt.limit / q.page * q.page;
    char lim[32];
    tf_format_size(q.held, lim, sizeof lim);
    tf_log(LOG_WARNING, "%s: running with the local limit %s%s", why, lim,
           tf_opt.limit_s ? ""
                          : " (the size of SOURCE_DIR's file system; set it with -o limit=SIZE)");
}

int tf_quota_start(uint64_t existing)
{
    q.charged = existing;
    if (tf_opt.no_membroker) {
        start_local("membroker not used (-o no_membroker)");
    } else {
        mb_kind kind = tf_opt.cache_dir ? MB_BIDIRECTIONAL : MB_SIMPLE;
        int rc = mb_client_connect(&q.client, tf_opt.socket, kind,
                                   tf_opt.cache_dir ? give_back : NULL, NULL);
        mb_balance b;
        if (rc == 0) rc = mb_query(&q.client, &b);
        if (rc != 0) {
            char why[300];
            const char *sock = tf_opt.socket ? tf_opt.socket : getenv("MEMBROKER_SOCKET");
            snprintf(why, sizeof why, "membroker at %s cannot be reached (%s)",
                     sock ? sock : MB_DEFAULT_SOCKET, strerror(-rc));
            mb_client_close(&q.client);
            start_local(why);
        } else {
            q.page = b.page_size;
            q.broker = true;
            /* Cover what SOURCE_DIR holds already, plus a chunk. */
            uint64_t want = pages_up(existing) + pages_up(tf_opt.chunk);
            int64_t got = mb_request(&q.client, want);
            if (got < 0) {
                lost_broker((int)-got);
                got = 0;
            }
            q.held = (uint64_t)got * q.page;
            char pool[32], held[32];
            tf_format_size(b.pool_pages * b.page_size, pool, sizeof pool);
            tf_format_size(q.held, held, sizeof held);
            tf_log(LOG_INFO, "membroker: pool %s, %s held, %s client", pool, held,
                   kind == MB_BIDIRECTIONAL ? "bidirectional" : "simple");
            if (kind == MB_BIDIRECTIONAL && pipe(q.stop_pipe) == 0 &&
                pthread_create(&q.dispatcher, NULL, dispatcher, NULL) == 0)
                q.dispatcher_running = true;
        }
    }
    if (q.charged > q.held) {
        char have[32], held[32];
        tf_format_size(q.charged, have, sizeof have);
        tf_format_size(q.held, held, sizeof held);
        tf_log(LOG_WARNING,
               "SOURCE_DIR already holds %s but only %s is covered: writes that add blocks fail "
               "with ENOSPC until files are removed",
               have, held);
    }
    return 0;
}

/* Before fuse_daemonize() closes stderr: tell the user what the serving
 * process will find (it connects again itself: a registration does not
 * survive fork). */
void tf_quota_probe(void)
{
    if (tf_opt.no_membroker) return;
    mb_client c;
    mb_balance b;
    int rc = mb_client_connect(&c, tf_opt.socket, MB_SIMPLE, NULL, NULL);
    if (rc == 0) rc = mb_query(&c, &b);
    mb_client_close(&c);
    if (rc != 0) {
        const char *sock = tf_opt.socket ? tf_opt.socket : getenv("MEMBROKER_SOCKET");
        char lim[32];
        tf_format_size(tf_opt.limit, lim, sizeof lim);
        tf_log(LOG_WARNING,
               "membroker at %s cannot be reached (%s): running with the local limit %s",
               sock ? sock : MB_DEFAULT_SOCKET, strerror(-rc), lim);
    }
}

void tf_quota_stop(void)
{
    if (q.dispatcher_running) {
        if (write(q.stop_pipe[1], "x", 1) < 0) {
        }
        pthread_join(q.dispatcher, NULL);
        q.dispatcher_running = false;
    }
    pthread_mutex_lock(&q.talk);
    if (q.broker) mb_client_close(&q.client); /* the daemon takes everything back */
    q.broker = false;
    pthread_mutex_unlock(&q.talk);
}

/* anr_malloc heaps as membroker clients, against the real membrokerd on a
 * socket in a temporary directory (tests/membroker/mbtest.c starts it and
 * waits for its READY=1).
 *
 * No test depends on timing: waits are for replies and pipe bytes; the
 * daemon's give-back deadline is set far above any plausible delay (20 s),
 * and so is the RESERVE's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anr_malloc.h"
#include "mbtest.h"
#include "membroker.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)
#define POOL_BYTES (8 * MiB)
#define BLOCK (64 * KiB) /* a page run: no slab rounding, 16 pages of 4 KiB */
#define MAX_BLOCKS 1024

static const char *const daemon_args[] = {"--giveback-timeout", "20000", "--request-timeout",
                                          "20000", NULL};

static int setup(void **state)
{
    static mbt_daemon d;
    mbt_start(&d, "8M", daemon_args);
    *state = &d;
    return 0;
}

static int teardown(void **state)
{
    mbt_stop(*state);
    return 0;
}

/* Notices, kept for the checks (the handler must not allocate from the heap). */
typedef struct notes {
    int count;
    char last[512];
} notes;

static void note(void *ctx, anr_mheap *h, const char *msg)
{
    (void)h;
    notes *n = ctx;
    n->count++;
    snprintf(n->last, sizeof(n->last), "%s", msg);
}

static anr_mheap *quota_heap(const char *sock, anr_membroker_mode mode, size_t local_limit,
                             notes *n)
{
    anr_options o;
    anr_default_options(&o);
    o.name = "quota";
    o.mapping_size = 64 * MiB;
    o.limit = local_limit;
    o.no_debug = true;
    o.membroker = mode;
    o.membroker_socket = sock;
    o.membroker_chunk = 1 * MiB;
    o.on_message = note;
    o.message_ctx = n;
    anr_mheap *h = anr_heap_create(&o);
    assert_non_null(h);
    return h;
}

static size_t fill(anr_mheap *h, void **blocks, size_t max)
{
    size_t n = 0;
    while (n < max && (blocks[n] = anr_heap_malloc(h, BLOCK)) != NULL) {
        memset(blocks[n], 0x5a, BLOCK);
        n++;
    }
    return n;
}

/* This process's entry in the daemon's table. */
typedef struct find_me {
    uint32_t pid;
    bool found;
    mb_client_info ci;
} find_me;

static void find_cb(void *ctx, const mb_client_info *ci)
{
    find_me *f = ctx;
    if (ci->pid == f->pid) {
        f->found = true;
        f->ci = *ci;
    }
}

static uint64_t held_per_daemon(const char *sock, mb_pool_info *pool)
{
    find_me f = {.pid = (uint32_t)getpid()};
    assert_int_equal(mb_status(sock, pool, find_cb, &f), 0);
    return f.found ? f.ci.held_pages : 0;
}

static size_t count_more;
static size_t more_count(void *ctx, anr_mheap *h, size_t size)
{
    (void)ctx;
    (void)h;
    (void)size;
    count_more++;
    return 0;
}

/* A heap takes quota in chunks until the pool is empty, then fails cleanly
 * (after its own callbacks had their turn). */
static void test_chunks_until_pool_empty(void **state)
{
    mbt_daemon *d = *state;
    notes n = {0};
    anr_mheap *h = quota_heap(d->sock, ANR_MEMBROKER_SIMPLE, 0, &n);
    anr_membroker_status st;
    anr_heap_membroker_status(h, &st);
    assert_true(st.connected);
    assert_int_equal(st.held, 0);
    assert_int_equal(n.count, 0);
    count_more = 0;
    assert_int_equal(anr_heap_add_more_memory(h, more_count, NULL), 0);

    static void *blocks[MAX_BLOCKS];
    size_t got = fill(h, blocks, MAX_BLOCKS);
    assert_int_equal(errno, ENOMEM);
    anr_heap_membroker_status(h, &st);
    /* all of the pool, and the heap's use within it */
    assert_int_equal(st.held, POOL_BYTES);
    assert_int_equal(st.granted, POOL_BYTES);
    assert_true(got * BLOCK <= POOL_BYTES);
    assert_true(got * BLOCK > POOL_BYTES - 2 * BLOCK);
    /* in chunks of at least 1 MiB (the last one takes what is left), not a
     * page or a block at a time; plus the requests that got nothing */
    assert_true(st.requests >= 2);
    assert_true(st.requests <= POOL_BYTES / MiB + 4);
    /* the broker had nothing left: the heap's own chain ran, then NULL */
    assert_true(count_more >= 1);
    anr_heap_stats hs;
    anr_heap_get_stats(h, &hs);
    assert_true(hs.alloc_failures >= 1);
    assert_int_equal(hs.limit, POOL_BYTES);

    mb_pool_info pool;
    uint64_t mine = held_per_daemon(d->sock, &pool);
    assert_int_equal(pool.free_pages, 0);
    assert_int_equal(mine * pool.page_size, POOL_BYTES);

    for (size_t i = 0; i < got; i++)
        anr_heap_free(h, blocks[i]);
    assert_int_equal(n.count, 0);
    anr_heap_destroy(h);
    /* the daemon took back everything at destroy */
    held_per_daemon(d->sock, &pool);
    assert_int_equal(pool.free_pages * pool.page_size, POOL_BYTES);
}

/* Surplus goes back after frees and a purge, with hysteresis: one chunk of
 * headroom stays; free() itself never talks to the daemon. */
static void test_surplus_returns(void **state)
{
    mbt_daemon *d = *state;
    notes n = {0};
    anr_mheap *h = quota_heap(d->sock, ANR_MEMBROKER_SIMPLE, 0, &n);
    static void *blocks[MAX_BLOCKS];
    size_t want = 6 * MiB / BLOCK;
    assert_int_equal(fill(h, blocks, want), want);
    anr_membroker_status st;
    anr_heap_membroker_status(h, &st);
    size_t held = st.held;
    assert_true(held >= 6 * MiB);
    mb_pool_info pool;
    assert_int_equal(held_per_daemon(d->sock, &pool) * pool.page_size, held);

    for (size_t i = 0; i < want; i++)
        anr_heap_free(h, blocks[i]);
    anr_heap_membroker_status(h, &st);
    assert_int_equal(st.held, held); /* free() returned no quota */
    assert_int_equal(st.returned, 0);

    anr_heap_trim(h);
    anr_heap_membroker_status(h, &st);
    assert_int_equal(st.held, 1 * MiB); /* use 0 + one chunk of headroom */
    assert_int_equal(st.returned, held - 1 * MiB);
    assert_int_equal(held_per_daemon(d->sock, &pool) * pool.page_size, 1 * MiB);
    assert_int_equal(pool.free_pages * pool.page_size, POOL_BYTES - 1 * MiB);

    /* within the hysteresis nothing moves */
    void *p = anr_heap_malloc(h, 512 * KiB);
    assert_non_null(p);
    anr_heap_free(h, p);
    anr_heap_trim(h);
    assert_int_equal(anr_heap_membroker_dispatch(h), 0); /* SIMPLE: surplus only */
    anr_heap_membroker_status(h, &st);
    assert_int_equal(st.held, 1 * MiB);
    /* and the quota comes back when needed */
    assert_int_equal(fill(h, blocks, want), want);
    for (size_t i = 0; i < want; i++)
        anr_heap_free(h, blocks[i]);
    assert_int_equal(n.count, 0);
    anr_heap_destroy(h);
}

/* ---- a bidirectional heap in another process ---- */

typedef struct cache {
    anr_mheap *h;
    void *blocks[MAX_BLOCKS];
    size_t n;
    size_t calls, freed;
} cache;

/* The heap's need-more-memory callback: drops cached blocks until `size`
 * bytes are freed. It allocates and frees on its own heap on the way, as a
 * real one might (a log record): that must not re-enter the broker. */
static size_t drop_cache(void *ctx, anr_mheap *h, size_t size)
{
    cache *c = ctx;
    c->calls++;
    void *note_rec = anr_heap_malloc(h, 48);
    size_t freed = 0;
    while (c->n > 0 && freed < size) {
        anr_heap_free(h, c->blocks[--c->n]);
        freed += BLOCK;
    }
    anr_heap_free(h, note_rec);
    c->freed += freed;
    return freed;
}

typedef struct report {
    int ok;
    size_t cached_before, cached_after, calls;
    anr_membroker_status st;
} report;

static void child_main(const char *sock, int ready_w, int stop_r, int report_w)
{
    static cache c;
    report r = {0};
    notes n = {0};
    anr_options o;
    anr_default_options(&o);
    o.name = "cache";
    o.mapping_size = 64 * MiB;
    o.no_debug = true;
    o.membroker = ANR_MEMBROKER_BIDIRECTIONAL;
    o.membroker_socket = sock;
    o.membroker_chunk = 1 * MiB;
    o.on_message = note;
    o.message_ctx = &n;
    c.h = anr_heap_create(&o);
    if (!c.h || anr_heap_membroker_fd(c.h) < 0) _exit(3);
    anr_heap_add_more_memory(c.h, drop_cache, &c);
    c.n = fill(c.h, c.blocks, 6 * MiB / BLOCK);
    r.cached_before = c.n;
    if (write(ready_w, "r", 1) != 1) _exit(4);
    struct pollfd p[2] = {{.fd = anr_heap_membroker_fd(c.h), .events = POLLIN},
                          {.fd = stop_r, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) continue;
        if (p[0].revents && anr_heap_membroker_dispatch(c.h) < 0) break;
        if (p[1].revents) break;
    }
    r.cached_after = c.n;
    r.calls = c.calls;
    anr_heap_membroker_status(c.h, &r.st);
    r.ok = n.count == 0;
    if (write(report_w, &r, sizeof(r)) != (ssize_t)sizeof(r)) _exit(5);
    _exit(0);
}

static void test_giveback_serves_reserve(void **state)
{
    mbt_daemon *d = *state;
    int ready[2], stop[2], rep[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(stop), 0);
    assert_int_equal(pipe(rep), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(stop[1]);
        close(rep[0]);
        child_main(d->sock, ready[1], stop[0], rep[1]);
    }
    close(ready[1]);
    close(stop[0]);
    close(rep[1]);
    char b;
    assert_int_equal(read(ready[0], &b, 1), 1);

    mb_pool_info pool;
    assert_int_equal(mb_status(d->sock, &pool, NULL, NULL), 0);
    uint64_t want = (4 * MiB) / pool.page_size;
    assert_true(pool.free_pages < want); /* the child holds more than half the pool */

    mb_client me;
    assert_int_equal(mb_client_connect(&me, d->sock, MB_SIMPLE, NULL, NULL), 0);
    assert_int_equal(mb_reserve(&me, want, 20000), 0);
    mb_balance bal;
    assert_int_equal(mb_query(&me, &bal), 0);
    assert_int_equal(bal.held_pages, want);

    assert_int_equal(write(stop[1], "s", 1), 1);
    report r;
    assert_int_equal(read(rep[0], &r, sizeof(r)), (ssize_t)sizeof(r));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(r.ok);
    assert_true(r.st.givebacks >= 1);
    assert_true(r.calls >= 1);
    assert_true(r.cached_after < r.cached_before); /* the cache paid for it */
    assert_true(r.st.given_back >= want * pool.page_size - (8 * MiB - r.st.granted));
    mb_client_close(&me);
    close(ready[0]);
    close(stop[1]);
    close(rep[0]);
}

/* The same through mbctl: `mbctl hold --reserve` succeeds while a
 * bidirectional heap in this process answers from its poll loop. */
static void test_giveback_to_mbctl(void **state)
{
    mbt_daemon *d = *state;
    notes n = {0};
    static cache c;
    memset(&c, 0, sizeof(c));
    c.h = quota_heap(d->sock, ANR_MEMBROKER_BIDIRECTIONAL, 0, &n);
    assert_int_equal(anr_heap_add_more_memory(c.h, drop_cache, &c), 0);
    c.n = fill(c.h, c.blocks, 6 * MiB / BLOCK);
    assert_int_equal(c.n, 6 * MiB / BLOCK);

    const char *mbctl = getenv("MBCTL");
    if (!mbctl) fail_msg("MBCTL is not set (run through meson test)");
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        const char *argv[12];
        size_t k = 0;
        static char wrapper[256];
        const char *w = getenv("MESON_EXE_WRAPPER");
        if (w && *w) {
            snprintf(wrapper, sizeof wrapper, "%s", w);
            for (char *tok = strtok(wrapper, " "); tok && k < 4; tok = strtok(NULL, " "))
                argv[k++] = tok;
        }
        argv[k++] = mbctl;
        argv[k++] = "--socket";
        argv[k++] = d->sock;
        argv[k++] = "hold";
        argv[k++] = "--reserve";
        argv[k++] = "--timeout";
        argv[k++] = "20000";
        argv[k++] = "4M";
        argv[k] = NULL;
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    /* serve give-backs until mbctl says it holds the quota */
    char buf[256];
    size_t len = 0;
    struct pollfd p[2] = {{.fd = anr_heap_membroker_fd(c.h), .events = POLLIN},
                          {.fd = out[0], .events = POLLIN}};
    while (!memchr(buf, '\n', len)) {
        assert_true(poll(p, 2, 30000) > 0);
        if (p[0].revents) assert_true(anr_heap_membroker_dispatch(c.h) >= 0);
        if (p[1].revents) {
            ssize_t r = read(out[0], buf + len, sizeof(buf) - 1 - len);
            assert_true(r > 0);
            len += (size_t)r;
        }
    }
    buf[len] = '\0';
    char expect[64];
    snprintf(expect, sizeof expect, "held %zu pages", 4 * MiB / (size_t)sysconf(_SC_PAGESIZE));
    assert_non_null(strstr(buf, expect));
    anr_membroker_status st;
    anr_heap_membroker_status(c.h, &st);
    assert_true(st.givebacks >= 1);
    assert_true(c.calls >= 1);
    assert_true(st.held + 4 * MiB <= POOL_BYTES);
    kill(pid, SIGTERM);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(out[0]);
    while (c.n)
        anr_heap_free(c.h, c.blocks[--c.n]);
    assert_int_equal(n.count, 0);
    anr_heap_destroy(c.h);
}

/* No daemon: the local limit, and one notice. */
static void test_unreachable_local_limit(void **state)
{
    (void)state;
    char dir[64];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/amq.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    char sock[100];
    snprintf(sock, sizeof sock, "%s/none.sock", dir);
    notes n = {0};
    anr_mheap *h = quota_heap(sock, ANR_MEMBROKER_BIDIRECTIONAL, 1 * MiB, &n);
    assert_int_equal(n.count, 1);
    assert_non_null(strstr(n.last, "unreachable"));
    assert_non_null(strstr(n.last, sock));
    assert_non_null(strstr(n.last, "local limit"));
    anr_membroker_status st;
    anr_heap_membroker_status(h, &st);
    assert_false(st.connected);
    assert_int_equal(st.mode, ANR_MEMBROKER_BIDIRECTIONAL);
    assert_int_equal(anr_heap_membroker_fd(h), -1);
    assert_int_equal(anr_heap_membroker_dispatch(h), -ENOTCONN);
    assert_int_equal(anr_heap_membroker_reserve(h, MiB, 0), -ENOTCONN);

    static void *blocks[MAX_BLOCKS];
    size_t got = fill(h, blocks, MAX_BLOCKS);
    assert_int_equal(errno, ENOMEM);
    assert_true(got * BLOCK <= 1 * MiB);
    assert_true(got * BLOCK > 1 * MiB - 2 * BLOCK);
    assert_null(anr_heap_malloc(h, BLOCK));
    assert_int_equal(n.count, 1); /* said once */
    for (size_t i = 0; i < got; i++)
        anr_heap_free(h, blocks[i]);
    anr_heap_destroy(h);
    rmdir(dir);
}

/* The daemon goes away while the heap holds quota: from the next request on,
 * the local limit, and one notice. */
static void test_lost_daemon_local_limit(void **state)
{
    (void)state;
    mbt_daemon d;
    mbt_start(&d, "8M", daemon_args);
    notes n = {0};
    anr_mheap *h = quota_heap(d.sock, ANR_MEMBROKER_SIMPLE, 4 * MiB, &n);
    static void *blocks[MAX_BLOCKS];
    size_t got = fill(h, blocks, 3 * MiB / BLOCK);
    assert_int_equal(got, 3 * MiB / BLOCK);
    anr_membroker_status st;
    anr_heap_membroker_status(h, &st);
    assert_int_equal(st.held, 3 * MiB);
    for (size_t i = 0; i < got; i++)
        anr_heap_free(h, blocks[i]);
    anr_heap_trim(h);
    anr_heap_membroker_status(h, &st);
    assert_int_equal(st.held, 1 * MiB); /* surplus went back, one chunk kept */
    assert_int_equal(n.count, 0);
    mbt_stop(&d);

    /* 1 MiB on the quota still held, then the next REQUEST finds no daemon:
     * the local limit (4 MiB) from then on */
    got = fill(h, blocks, MAX_BLOCKS);
    assert_int_equal(errno, ENOMEM);
    assert_true(got * BLOCK <= 4 * MiB);
    assert_true(got * BLOCK > 4 * MiB - 2 * BLOCK);
    anr_heap_membroker_status(h, &st);
    assert_false(st.connected);
    assert_int_equal(st.held, 0);
    assert_int_equal(n.count, 1);
    assert_non_null(strstr(n.last, "lost"));
    assert_null(anr_heap_malloc(h, BLOCK));
    assert_int_equal(n.count, 1); /* said once */
    for (size_t i = 0; i < got; i++)
        anr_heap_free(h, blocks[i]);
    anr_heap_destroy(h);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chunks_until_pool_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_surplus_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_giveback_serves_reserve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_giveback_to_mbctl, setup, teardown),
        cmocka_unit_test(test_unreachable_local_limit),
        cmocka_unit_test(test_lost_daemon_local_limit),
    };
    return cmocka_run_group_tests_name("anr_malloc_membroker", tests, NULL, NULL);
}

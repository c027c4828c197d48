/* Thread caches: blocks come back when a thread exits, frees from many other
 * threads reach the owner, double frees are still caught, a limit-bound
 * allocation gets the memory caches hold, fork with populated caches, and a
 * heap with fewer cache slots than threads. Every heap here has caches on. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "core_test.h"

static anr_heap *tc_heap(void **state, size_t limit, unsigned slots)
{
    anr_core_options o;
    test_options(&o);
    o.thread_cache = true;
    o.limit = limit;
    o.tcache_slots = slots;
    return fx_init(state, &o);
}

static void assert_sound(anr_heap *h)
{
    const char *bad = anr_core_verify(h);
    if (bad)
        fail_msg("anr_core_verify: %s", bad);
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i * 7);
}

static void check(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7))
            fail_msg("object %p lost byte %zu", (const void *)p, i);
}

/* --- a thread's cache goes back when it exits --- */

typedef struct churn_arg {
    anr_heap *h;
    unsigned n;
    bool keep_cache_populated;
} churn_arg;

static void *churn(void *v)
{
    churn_arg *a = v;
    void *p[512];
    for (unsigned round = 0; round < 20; round++) {
        for (unsigned i = 0; i < a->n; i++) {
            size_t size = 16 + (i * 37 + round) % 2000;
            p[i] = anr_core_alloc(a->h, size, 0, 0);
            if (!p[i])
                return (void *)1;
            fill(p[i], size, i);
        }
        for (unsigned i = 0; i < a->n; i++) {
            check(p[i], 16 + (i * 37 + round) % 2000, i);
            anr_core_free(a->h, p[i]);
        }
    }
    return NULL;
}

static void test_thread_exit_returns_cache(void **state)
{
    anr_heap *h = tc_heap(state, 0, 0);
    churn_arg a = {h, 512, false};
    for (int t = 0; t < 4; t++) {
        pthread_t th;
        void *ret;
        assert_int_equal(pthread_create(&th, NULL, churn, &a), 0);
        assert_int_equal(pthread_join(th, &ret), 0);
        assert_null(ret);
        anr_core_stats s;
        anr_core_get_stats(h, &s);
        assert_int_equal(s.thread_caches, 0);
        assert_int_equal(s.bytes_cached, 0);
        assert_int_equal(s.objects_in_use, 0);
        assert_int_equal(s.bytes_in_use, 0);
        assert_int_equal(s.pages_in_use, 0);
        assert_sound(h);
    }
}

/* --- frees from many threads --- */

#define XOBJS 4000
#define XTHREADS 4

typedef struct cross {
    anr_heap *h;
    void *obj[XOBJS];
    unsigned first, step;
} cross;

static void *free_share(void *v)
{
    cross *c = v;
    for (unsigned i = c->first; i < XOBJS; i += c->step) {
        check(c->obj[i], 24 + i % 500, i);
        if (anr_core_free(c->h, c->obj[i]) != ANR_ERR_NONE)
            return (void *)1;
    }
    return NULL;
}

static void *produce_and_collect(void *v)
{
    cross *shared = v;
    anr_heap *h = shared->h;
    for (unsigned round = 0; round < 5; round++) {
        for (unsigned i = 0; i < XOBJS; i++) {
            shared->obj[i] = anr_core_alloc(h, 24 + i % 500, 0, 0);
            if (!shared->obj[i])
                return (void *)1;
            fill(shared->obj[i], 24 + i % 500, i);
        }
        /* Other threads free what this thread's cache handed out. */
        static cross part[XTHREADS];
        pthread_t th[XTHREADS];
        for (unsigned t = 0; t < XTHREADS; t++) {
            part[t] = *shared;
            part[t].first = t;
            part[t].step = XTHREADS;
            if (pthread_create(&th[t], NULL, free_share, &part[t]) != 0)
                return (void *)1;
        }
        for (unsigned t = 0; t < XTHREADS; t++) {
            void *ret;
            pthread_join(th[t], &ret);
            if (ret)
                return (void *)1;
        }
    }
    /* Remote frees wait on their slabs until the owner collects them; a
     * flush collects everything. */
    anr_core_flush_thread_cache(h);
    anr_core_stats s;
    anr_core_get_stats(h, &s);
    if (s.objects_in_use != 0 || s.bytes_cached != 0)
        return (void *)2;
    return NULL;
}

static void test_cross_thread_frees(void **state)
{
    anr_heap *h = tc_heap(state, 0, 0);
    static cross shared;
    shared.h = h;
    pthread_t th;
    void *ret;
    assert_int_equal(pthread_create(&th, NULL, produce_and_collect, &shared), 0);
    assert_int_equal(pthread_join(th, &ret), 0);
    assert_null(ret);
    anr_core_stats s;
    anr_core_get_stats(h, &s);
    assert_int_equal(s.objects_in_use, 0);
    assert_int_equal(s.pages_in_use, 0);
    assert_int_equal(s.bad_pointers, 0);
    assert_sound(h);
}

/* Objects of one-object slabs (4 KiB) freed by another thread go back to
 * their owner's slabs when that thread exits; the owner's next mallocs of
 * that class find them there (the other thread's pushes told it to look)
 * instead of cutting new slabs: pages in use do not grow. */
typedef struct free_all_arg {
    anr_heap *h;
    void **v;
    unsigned n;
} free_all_arg;

static void *free_all(void *arg)
{
    free_all_arg *a = arg;
    for (unsigned i = 0; i < a->n; i++)
        if (anr_core_free(a->h, a->v[i]) != ANR_ERR_NONE)
            return (void *)1;
    return NULL; /* exiting flushes this thread's bins home */
}

static void test_owner_reuses_remote_frees(void **state)
{
    anr_heap *h = tc_heap(state, 0, 0);
    enum { N = 40 }; /* 40 one-page slabs on the owner's full list */
    void *v[N];
    for (unsigned i = 0; i < N; i++)
        assert_non_null(v[i] = anr_core_alloc(h, 4096, 0, 0));
    size_t pages = stats_of(h).pages_in_use;
    free_all_arg a = {h, v, N};
    pthread_t th;
    void *ret;
    assert_int_equal(pthread_create(&th, NULL, free_all, &a), 0);
    assert_int_equal(pthread_join(th, &ret), 0);
    assert_null(ret);
    for (unsigned i = 0; i < N; i++)
        assert_non_null(v[i] = anr_core_alloc(h, 4096, 0, 0));
    anr_core_stats s = stats_of(h);
    if (s.pages_in_use > pages)
        fail_msg("%zu pages in use after reallocating, %zu before", s.pages_in_use, pages);
    for (unsigned i = 0; i < N; i++)
        assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
    anr_core_flush_thread_cache(h);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_sound(h);
}

/* --- double frees through the cache --- */

typedef struct df_arg {
    anr_heap *h;
    void *p;
    anr_error r1, r2;
} df_arg;

static void *free_twice(void *v)
{
    df_arg *a = v;
    a->r1 = anr_core_free(a->h, a->p);
    a->r2 = anr_core_free(a->h, a->p);
    return NULL;
}

/* A heap with caches whose errors are counted. */
static anr_heap *counting_heap(void **state)
{
    anr_core_options o;
    test_options(&o);
    o.thread_cache = true;
    o.hooks.on_error = count_error;
    errors_seen = 0;
    return fx_init(state, &o);
}

static void test_double_free_caught(void **state)
{
    anr_heap *h = counting_heap(state);

    /* Same thread: the owner's bitmap catches it. */
    void *p = anr_core_alloc(h, 40, 0, 0);
    void *keep = anr_core_alloc(h, 40, 0, 0);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    anr_core_free(h, p);
    assert_int_equal(errors_seen, 1);
    assert_int_equal(last_error, ANR_ERR_DOUBLE_FREE);

    /* Another thread frees an object of this thread's slab twice. */
    df_arg a = {h, anr_core_alloc(h, 40, 0, 0), 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, free_twice, &a), 0);
    pthread_join(th, NULL);
    assert_int_equal(a.r1, ANR_ERR_NONE);
    /* The first free left the free key in the object: the second is caught
     * at once, before the object could be queued twice. */
    assert_int_equal(a.r2, ANR_ERR_DOUBLE_FREE);
    assert_int_equal(errors_seen, 2);
    assert_int_equal(last_error, ANR_ERR_DOUBLE_FREE);
    anr_core_flush_thread_cache(h);
    assert_int_equal(errors_seen, 2);

    anr_core_free(h, keep);
    assert_sound(h);
    anr_core_stats s;
    anr_core_get_stats(h, &s);
    assert_int_equal(s.objects_in_use, 0);
}

/* --- the limit takes back what caches hold --- */

typedef struct idle_arg {
    anr_heap *h;
    pthread_mutex_t m;
    pthread_cond_t cv;
    int stage;
} idle_arg;

static void *fill_then_idle(void *v)
{
    idle_arg *a = v;
    enum { N = 3000 };
    static void *p[N];
    unsigned n = 0;
    while (n < N && (p[n] = anr_core_alloc(a->h, 256, 0, 0)))
        n++;
    for (unsigned i = 0; i < n; i++)
        anr_core_free(a->h, p[i]);
    pthread_mutex_lock(&a->m);
    a->stage = 1;
    pthread_cond_broadcast(&a->cv);
    while (a->stage != 2) /* stays alive, its cache untouched */
        pthread_cond_wait(&a->cv, &a->m);
    pthread_mutex_unlock(&a->m);
    return NULL;
}

static void test_limit_gets_cached_memory(void **state)
{
    const size_t limit = 512 * KiB;
    anr_heap *h = tc_heap(state, limit, 0);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    /* This thread: fill the limit with small objects, free them all (they
     * sit in the cache), then a large allocation needs those pages. */
    static void *p[4096];
    unsigned n = 0;
    while (n < 4096 && (p[n] = anr_core_alloc(h, 128, 0, 0)))
        n++;
    assert_true(n > 1000);
    for (unsigned i = 0; i < n; i++)
        anr_core_free(h, p[i]);
    void *big = anr_core_alloc(h, limit - 2 * page, 0, 0);
    assert_non_null(big);
    anr_core_free(h, big);
    anr_core_purge(h, true);

    /* Another thread, still alive and idle, filled the limit and freed it
     * all: its empty slabs went back, so all but its current slab is ours. */
    idle_arg a = {.h = h, .stage = 0};
    pthread_mutex_init(&a.m, NULL);
    pthread_cond_init(&a.cv, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fill_then_idle, &a), 0);
    pthread_mutex_lock(&a.m);
    while (a.stage != 1)
        pthread_cond_wait(&a.cv, &a.m);
    pthread_mutex_unlock(&a.m);
    anr_core_stats s;
    anr_core_get_stats(h, &s);
    assert_true(s.pages_in_use * page <= 64 * KiB); /* one slab of 256 B objects */
    big = anr_core_alloc(h, limit - 64 * KiB - 2 * page, 0, 0);
    assert_non_null(big);
    anr_core_free(h, big);

    pthread_mutex_lock(&a.m);
    a.stage = 2;
    pthread_cond_broadcast(&a.cv);
    pthread_mutex_unlock(&a.m);
    pthread_join(th, NULL);
    assert_sound(h);
}

/* --- one-object slabs come in batches --- */

/* A class of one page holds one object per slab: once a thread has used up
 * two such slabs, its next refill takes several at once (onto its cache's
 * free list), so that refilling the bin is one lock round trip, not one per
 * object. Those are cached (free), go back with a flush, and never take a
 * heap past its limit. */
static void test_one_object_slabs_come_in_batches(void **state)
{
    size_t page = sys_page();
    if (page > 16384)
        skip(); /* no class of one page among the cached ones */
    anr_heap *h = tc_heap(state, 0, 0);
    void *p[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(p[i] = anr_core_alloc(h, page, 0, 0));
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.objects_in_use, 3);
    assert_true(s.bytes_cached >= 2 * page);
    assert_true(s.bytes_cached <= 64 * KiB);
    for (int i = 0; i < 3; i++)
        assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
    anr_core_flush_thread_cache(h);
    s = stats_of(h);
    assert_int_equal(s.bytes_cached, 0);
    assert_int_equal(s.pages_in_use, 0);
    assert_sound(h);
}

/* A heap with a limit takes no batches (until an idle owner's next call,
 * its extra slabs would count against the limit for other threads): at a
 * limit of 4 pages, 4 one-page objects fit, nothing else is taken, and a
 * fifth fails cleanly. */
static void test_batches_stay_within_limit(void **state)
{
    size_t page = sys_page();
    if (page > 16384)
        skip();
    anr_heap *l = tc_heap(state, 4 * page, 0);
    void *q[5];
    for (int i = 0; i < 3; i++)
        assert_non_null(q[i] = anr_core_alloc(l, page, 0, 0));
    assert_int_equal(stats_of(l).bytes_cached, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(anr_core_free(l, q[i]), ANR_ERR_NONE);
    for (int i = 0; i < 4; i++)
        assert_non_null(q[i] = anr_core_alloc(l, page, 0, 0));
    assert_null(q[4] = anr_core_alloc(l, page, 0, 0));
    assert_true(stats_of(l).pages_in_use <= 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(anr_core_free(l, q[i]), ANR_ERR_NONE);
    assert_sound(l);
}

/* --- bins of the classes from 4 KiB up --- */

/* `rounds` rounds of: count[k] blocks of sizes[k] for each k < n
 * allocated (all live at once), written, then all freed. Returns the stats
 * after the last free. */
static anr_core_stats batch_rounds(anr_heap *h, const size_t *sizes, const unsigned *count,
                                   unsigned n, unsigned rounds)
{
    enum { MAX = 512 };
    static void *p[MAX];
    static size_t size[MAX];
    unsigned total = 0;
    for (unsigned k = 0; k < n; k++)
        for (unsigned i = 0; i < count[k]; i++, total++) {
            assert_true(total < MAX);
            size[total] = sizes[k];
        }
    for (unsigned r = 0; r < rounds; r++) {
        for (unsigned i = 0; i < total; i++) {
            assert_non_null(p[i] = anr_core_alloc(h, size[i], 0, 0));
            fill(p[i], size[i], i + r);
        }
        for (unsigned i = 0; i < total; i++) {
            check(p[i], size[i], i + r);
            assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
        }
    }
    return stats_of(h);
}

/* A thread that mallocs 64 blocks of 4 KiB and frees them, round after
 * round, keeps them all in its bin: their slabs (one page each) stay with
 * its cache instead of going back to the heap under the lock at each free
 * and coming back at each malloc. A flush gives them all back. */
static void test_big_class_bin_holds_a_batch(void **state)
{
    size_t page = sys_page();
    if (page != 4096)
        skip(); /* the one-object slabs of a 4 KiB class are pages of 4 KiB */
    anr_heap *h = tc_heap(state, 0, 0);
    const size_t size[] = {4096};
    const unsigned count[] = {64};
    anr_core_stats s = batch_rounds(h, size, count, 1, 6);
    if (s.pages_in_use < 64)
        fail_msg("64 blocks of 4 KiB freed: %zu pages kept by the cache, not 64", s.pages_in_use);
    assert_int_equal(s.objects_in_use, 0);
    anr_core_flush_thread_cache(h);
    s = stats_of(h);
    assert_int_equal(s.pages_in_use, 0);
    assert_int_equal(s.bytes_cached, 0);
    assert_sound(h);
}

/* A heap with caches and THREAD_CACHE_BYTES `cache_bytes` (*out), after
 * `rounds` rounds of count[k] blocks of each of six sizes from 4 to 16 KiB
 * (all live at once), then all freed. */
static const size_t big_sizes[6] = {4096, 5120, 6144, 8192, 12288, 16384};
static anr_core_stats big_batches(void **state, size_t cache_bytes, const unsigned *count,
                                  unsigned rounds, anr_heap **out)
{
    anr_core_options o;
    test_options(&o);
    o.thread_cache = true;
    o.tcache_max_bytes = cache_bytes;
    *out = fx_init(state, &o);
    return batch_rounds(*out, big_sizes, count, 6, rounds);
}

/* After big_batches: the cache kept at most `bound` bytes, and gives them
 * all back when flushed. */
static void big_kept_within(anr_heap *h, anr_core_stats s, size_t bound, size_t cache_bytes)
{
    size_t kept = s.pages_in_use * sys_page();
    if (kept > bound)
        fail_msg("THREAD_CACHE_BYTES %zu KiB: bins of 6 classes of 4-16 KiB kept %zu KiB after "
                 "all was freed (bound %zu)",
                 cache_bytes / KiB, kept / KiB, bound / KiB);
    anr_core_flush_thread_cache(h);
    assert_int_equal(stats_of(h).pages_in_use, 0);
    assert_sound(h);
}

/* The bins of those classes grow only within THREAD_CACHE_BYTES together:
 * with 256 KiB of blocks of each of six such sizes live and freed, round
 * after round (as many as one bin may hold alone: 1.5 MiB in all), what the
 * thread keeps stays within the 1 MiB bound plus a current slab per class
 * (a few pages each). */
static void test_big_bins_stay_within_cache_bytes(void **state)
{
    size_t page = sys_page();
    if (page != 4096)
        skip();
    unsigned count[6];
    for (unsigned k = 0; k < 6; k++)
        count[k] = (unsigned)(256 * KiB / big_sizes[k]);
    anr_heap *h;
    anr_core_stats s = big_batches(state, 1 * MiB, count, 6, &h);
    if (s.pages_in_use * page < 512 * KiB) /* the bound is not so low that nothing is kept */
        fail_msg("only %zu KiB kept by the bins", s.pages_in_use * page / KiB);
    big_kept_within(h, s, 1 * MiB + 6 * 4 * page, 1 * MiB);
}

/* With THREAD_CACHE_BYTES well below what those bins start with (64 KiB
 * each), they start within it together too (at least one object each):
 * 16 blocks of each of six such sizes, freed, leave at most the bound, one
 * object per class and a current slab per class in the cache. */
static void test_big_bins_start_within_cache_bytes(void **state)
{
    size_t page = sys_page();
    if (page != 4096)
        skip();
    const unsigned count[] = {16, 16, 16, 16, 16, 16};
    anr_heap *h;
    anr_core_stats s = big_batches(state, 64 * KiB, count, 3, &h);
    big_kept_within(h, s, 64 * KiB + (4 + 5 + 6 + 8 + 12 + 16) * KiB + 6 * 5 * page, 64 * KiB);
}

/* --- a quiet thread's cache goes back --- */

/* Allocates 3000 objects of mixed cached sizes and frees them all: the
 * thread's cache then holds free slots (checked). */
static anr_core_stats fill_and_free_all(anr_heap *h)
{
    enum { N = 3000 };
    static void *p[N];
    for (unsigned i = 0; i < N; i++) {
        size_t size = 16 + (i * 997u) % 4080u;
        p[i] = anr_core_alloc(h, size, 0, 0);
        assert_non_null(p[i]);
        fill(p[i], size, i);
    }
    for (unsigned i = 0; i < N; i++)
        assert_int_equal(anr_core_free(h, p[(i * 7u) % N]), ANR_ERR_NONE);
    anr_core_stats s = stats_of(h);
    if (s.bytes_cached < 64 * KiB || s.pages_in_use < 16 || s.pages_dirty == 0)
        fail_msg("after freeing everything: %zu bytes cached in %zu pages, %zu dirty",
                 s.bytes_cached, s.pages_in_use, s.pages_dirty);
    return s;
}

/* A heap with thread caches, a background purger and this decay time,
 * whose floor (2048 pages) keeps the dirty pages of fill_and_free_all
 * (fewer) from going back by the ceiling: only a request to the caches
 * acts. */
static anr_heap *purger_heap(void **state, uint32_t decay_ms)
{
    anr_core_options o;
    test_options(&o);
    o.thread_cache = true;
    o.decay_ms = decay_ms;
    o.background_purge = true;
    o.page_ceiling = 4096;
    o.page_floor = 2048;
    return fx_init(state, &o);
}

/* With a background purger calling anr_core_tick(), a thread that freed
 * everything and went quiet (no slow path for half the decay time) gives
 * its cache back on its first malloc after the tick asked for it: its slabs
 * and binned objects return to the heap, and the purger's next tick hands
 * their pages back, leaving the slab that malloc used. (The decay itself
 * is not due by then: its clock starts at the first tick.) */
static void test_idle_cache_goes_back(void **state)
{
    anr_heap *h = purger_heap(state, 400);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    fill_and_free_all(h);
    struct timespec nap = {0, 250 * 1000 * 1000}; /* quiet for more than decay / 2 */
    nanosleep(&nap, NULL);
    /* The tick asks the caches back (the first request needs no wait); the
     * next malloc flushes, the tick after it purges. */
    anr_core_tick(h);
    anr_core_free(h, anr_core_alloc(h, 32, 0, 0));
    anr_core_stats s = stats_of(h);
    if (s.bytes_cached > 16 * page || s.pages_in_use > 4 || s.pages_dirty == 0)
        fail_msg("after the request and one call: %zu bytes cached, %zu pages in use, %zu dirty",
                 s.bytes_cached, s.pages_in_use, s.pages_dirty);
    anr_core_tick(h);
    s = stats_of(h);
    if (s.bytes_cached > 16 * page || s.pages_in_use > 4 || s.pages_dirty != 0)
        fail_msg("after the next tick: %zu bytes cached, %zu pages in use, %zu dirty",
                 s.bytes_cached, s.pages_in_use, s.pages_dirty);
    assert_sound(h);
}

/* A thread that is busy when the caches are asked back gives its cache
 * back too, but its pages stay under the usual hysteresis and decay: the
 * purger's next tick leaves them. */
static void test_busy_cache_keeps_its_pages(void **state)
{
    anr_heap *h = purger_heap(state, 10000);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    fill_and_free_all(h); /* slow paths just now */
    anr_core_tick(h);
    anr_core_free(h, anr_core_alloc(h, 32, 0, 0));
    anr_core_stats s = stats_of(h);
    size_t dirty = s.pages_dirty;
    if (s.bytes_cached > 16 * page || dirty == 0)
        fail_msg("after the request and one call: %zu bytes cached, %zu dirty", s.bytes_cached,
                 dirty);
    anr_core_tick(h);
    s = stats_of(h);
    if (s.pages_dirty != dirty)
        fail_msg("a busy thread's %zu dirty pages went to %zu at the next tick", dirty,
                 s.pages_dirty);
    assert_sound(h);
}

/* Without a background purger the same request rides on a call that takes
 * the lock and finds dirty pages left alone for the decay time (here a
 * large allocation); the thread's next malloc then gives its cache back. */
static void test_decay_asks_caches_back(void **state)
{
    anr_core_options o;
    test_options(&o);
    o.thread_cache = true;
    o.decay_ms = 200; /* the frees take far less, even under valgrind */
    anr_heap *h = fx_init(state, &o);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    fill_and_free_all(h);
    struct timespec nap = {0, 250 * 1000 * 1000};
    nanosleep(&nap, NULL);
    void *big = anr_core_alloc(h, 1024 * KiB, 0, 0); /* takes the lock: the decay is due */
    assert_non_null(big);
    assert_int_equal(anr_core_free(h, big), ANR_ERR_NONE);
    anr_core_free(h, anr_core_alloc(h, 32, 0, 0));
    anr_core_stats s = stats_of(h);
    /* (The dirty pages go back in bounded rounds, one per call that takes
     * the lock, as for any decay.) */
    if (s.bytes_cached > 16 * page || s.pages_in_use > 4)
        fail_msg("after the decay time and two calls: %zu bytes cached, %zu pages in use",
                 s.bytes_cached, s.pages_in_use);
    assert_sound(h);
}

/* A program whose mallocs all hit its bin never takes the lock, and only a
 * call that does looks at the clock. Its fast mallocs step aside to the
 * slow path every so often (a thousand or so) to make that look: the dirty
 * pages it left alone go back a decay time later, with no background
 * purger and no call of its own that takes the lock. (The statistics call
 * takes the lock but hands nothing back.) */
static void bin_served_mallocs_see_the_decay(void **state, size_t size)
{
    anr_core_options o;
    test_options(&o);
    o.thread_cache = true;
    o.decay_ms = 200; /* the frees take far less, even under valgrind */
    o.page_floor = 256; /* the 1 MiB freed below stays dirty until the decay */
    anr_heap *h = fx_init(state, &o);
    enum { NBIG = 4 };
    void *big[NBIG];
    for (int i = 0; i < NBIG; i++) { /* past the run bins: freed to the heap, dirty */
        big[i] = anr_core_alloc(h, 256 * KiB, 0, 0);
        assert_non_null(big[i]);
        memset(big[i], 0x5a, 256 * KiB);
    }
    for (int i = 0; i < NBIG; i++)
        assert_int_equal(anr_core_free(h, big[i]), ANR_ERR_NONE);
    anr_core_free(h, anr_core_alloc(h, size, 0, 0)); /* a bin now serves `size` */
    size_t dirty = stats_of(h).pages_dirty; /* less the pages that block took */
    if (dirty < NBIG * 256 * KiB / (size_t)sysconf(_SC_PAGESIZE) / 2)
        fail_msg("only %zu dirty pages after freeing %d runs of 256 KiB", dirty, NBIG);
    struct timespec nap = {0, 250 * 1000 * 1000};
    nanosleep(&nap, NULL);
    for (int i = 0; i < 64 * 1024; i++)
        anr_core_free(h, anr_core_alloc(h, size, 0, 0));
    size_t left = stats_of(h).pages_dirty;
    if (left)
        fail_msg("%zu of %zu dirty pages still kept after 65536 bin-served mallocs of %zu "
                 "bytes past the decay time",
                 left, dirty, size);
    assert_sound(h);
}

static void test_bin_served_mallocs_see_the_decay(void **state)
{
    bin_served_mallocs_see_the_decay(state, 32);
}

/* The same for page runs served by a run bin. */
static void test_run_bin_served_mallocs_see_the_decay(void **state)
{
    bin_served_mallocs_see_the_decay(state, 32 * KiB);
}

/* --- fork while caches are populated --- */

typedef struct busy_arg {
    anr_heap *h;
    _Atomic int stop;
} busy_arg;

static void *busy(void *v)
{
    busy_arg *a = v;
    void *p[64] = {0};
    unsigned i = 0;
    while (!atomic_load(&a->stop)) {
        unsigned k = i++ % 64;
        anr_core_free(a->h, p[k]);
        p[k] = anr_core_alloc(a->h, 16 + (i * 13) % 1500, 0, 0);
    }
    for (unsigned k = 0; k < 64; k++)
        anr_core_free(a->h, p[k]);
    return NULL;
}

/* --- no instant shows a free slot carrying the free key --- */

/* Allocates runs of one class (the bin runs dry and is refilled from the
 * current slab all the time), then frees them. */
static void *fill_bins(void *v)
{
    busy_arg *a = v;
    enum { N = 512 };
    void *p[N];
    while (!atomic_load(&a->stop)) {
        for (int i = 0; i < N; i++)
            p[i] = anr_core_alloc(a->h, 64, 0, 0);
        for (int i = 0; i < N; i++)
            anr_core_free(a->h, p[i]);
    }
    return NULL;
}

/* A fork copies memory at an arbitrary instant of the other threads. If a
 * bin refill wrote the free key into slots before marking them taken, a
 * child could be left a free slot with the key in word 1: its allocation
 * hands it out so, and the object's first free reads as a double free (a
 * stress run's forked child aborted on one). Each child here, alone after
 * anr_core_fork_child() with every slab shared or its own, has
 * anr_core_verify() check that no free slot carries the key. (A verify in
 * the parent cannot: it skips the slabs of threads still running.) */
static void test_no_fork_leaves_a_keyed_free_slot(void **state)
{
    anr_heap *h = tc_heap(state, 0, 0);
    busy_arg a = {h, 0};
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_create(&th[t], NULL, fill_bins, &a), 0);
    /* Under valgrind the threads take turns and a fork costs about a second:
     * a few forks there, for memcheck's look at the child's paths. */
    int forks = getenv("ANR_TEST_UNDER_VALGRIND") ? 5 : 2000, bad = 0;
    for (int i = 0; i < forks; i++) {
        anr_core_fork_prepare(h);
        pid_t pid = fork();
        if (pid == 0) {
            anr_core_fork_child(h);
            const char *why = anr_core_verify(h);
            if (why)
                fprintf(stderr, "child %d: %s\n", i, why);
            _exit(why ? 3 : 0);
        }
        anr_core_fork_parent(h);
        assert_true(pid > 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 3)
            bad++;
        else
            assert_int_equal(WEXITSTATUS(status), 0);
    }
    atomic_store(&a.stop, 1);
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    if (bad)
        fail_msg("%d of %d forked children found a free slot carrying the free key", bad, forks);
    assert_sound(h);
}

static void test_fork_with_caches(void **state)
{
    anr_heap *h = tc_heap(state, 0, 0);
    void *mine[100];
    for (int i = 0; i < 100; i++)
        mine[i] = anr_core_alloc(h, 64, 0, 0);
    busy_arg a = {h, 0};
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_create(&th[t], NULL, busy, &a), 0);
    usleep(20000);
    for (int round = 0; round < 5; round++) {
        anr_core_fork_prepare(h);
        pid_t pid = fork();
        if (pid == 0) {
            anr_core_fork_child(h);
            /* Only this thread came along: the others' caches went back. */
            anr_core_stats s;
            anr_core_get_stats(h, &s);
            int ok = s.thread_caches <= 1;
            for (int i = 0; i < 100; i++)
                anr_core_free(h, mine[i]);
            for (int i = 0; i < 20000 && ok; i++) {
                void *q = anr_core_alloc(h, 16 + (size_t)(i * 31) % 3000, 0, 0);
                ok = q != NULL;
                anr_core_free(h, q);
            }
            ok = ok && anr_core_verify(h) == NULL;
            _exit(ok ? 0 : 1);
        }
        anr_core_fork_parent(h);
        assert_child_ok(pid);
    }
    atomic_store(&a.stop, 1);
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);
    for (int i = 0; i < 100; i++)
        anr_core_free(h, mine[i]);
    assert_sound(h);
}

/* --- more threads than cache slots --- */

static void test_more_threads_than_slots(void **state)
{
    anr_heap *h = tc_heap(state, 0, 2);
    churn_arg a = {h, 200, false};
    pthread_t th[6];
    for (int t = 0; t < 6; t++)
        assert_int_equal(pthread_create(&th[t], NULL, churn, &a), 0);
    for (int t = 0; t < 6; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        assert_null(ret);
    }
    anr_core_stats s;
    anr_core_get_stats(h, &s);
    assert_int_equal(s.objects_in_use, 0);
    assert_int_equal(s.thread_caches, 0);
    assert_sound(h);
}

/* --- bins: freed objects waiting for this thread's next malloc --- */

/* An object in a bin is free: checking, sizing, reallocating or freeing it
 * again is an error, reported, and the bin stays intact. */
static void test_binned_object_is_free(void **state)
{
    anr_heap *h = counting_heap(state);
    void *keep = anr_core_alloc(h, 100, 0, 0);
    void *p = anr_core_alloc(h, 100, 0, 0);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_check(h, p), ANR_ERR_DOUBLE_FREE);
    assert_int_equal(anr_core_usable_size(h, p), 0);
    anr_error err;
    assert_null(anr_core_realloc(h, p, 300, &err));
    assert_int_equal(err, ANR_ERR_DOUBLE_FREE);
    assert_null(anr_core_realloc(h, p, 90, &err)); /* would stay in its slot */
    assert_int_equal(err, ANR_ERR_DOUBLE_FREE);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_DOUBLE_FREE);
    assert_int_equal(errors_seen, 4); /* usable_size, 2 reallocs, free */
    /* It comes back once, as a live object, and only once. */
    void *q[4];
    unsigned same = 0;
    for (unsigned i = 0; i < 4; i++) {
        q[i] = anr_core_alloc(h, 100, 0, 0);
        assert_non_null(q[i]);
        assert_int_equal(anr_core_check(h, q[i]), ANR_ERR_NONE);
        same += q[i] == p;
    }
    assert_int_equal(same, 1);
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(anr_core_free(h, q[i]), ANR_ERR_NONE);
    anr_core_free(h, keep);
    anr_core_flush_thread_cache(h);
    assert_sound(h);
    anr_core_stats s;
    anr_core_get_stats(h, &s);
    assert_int_equal(s.objects_in_use, 0);
}

/* A use after free that overwrites a binned object's link: malloc reports
 * it and never hands out the scribbled address; every block it returns is a
 * live object of its own. */
/* p[N-1] is on top of the bin, its link leads to p[N-2]: a use after free
 * points it into a live object instead, with a raw pointer (`encoded`
 * false) or one encoded exactly as the links are (with the key and the
 * holder's address, which a copy from another freed block does not give:
 * test_bin_link_copied). Either way, no malloc may hand out the
 * live object, and the broken bin is reported once. */
static void bin_link_scribbled(void **state, bool encoded)
{
    anr_heap *h = counting_heap(state);
    enum { N = 6 };
    void *p[N];
    for (unsigned i = 0; i < N; i++)
        p[i] = anr_core_alloc(h, 48, 0, 0);
    for (unsigned i = 0; i < N; i++)
        anr_core_free(h, p[i]);
    void *v0 = anr_core_alloc(h, 64, 0, 0), *v1 = anr_core_alloc(h, 64, 0, 0);
    void *v2 = anr_core_alloc(h, 64, 0, 0);
    anr_core_free(h, v1);
    anr_core_free(h, v2);
    void *victim = anr_core_alloc(h, 64, 0, 0); /* popped: word 0 still an encoded link */
    void *top = p[N - 1];
    uintptr_t key = *(uintptr_t *)top ^ (uintptr_t)p[N - 2];
    *(uintptr_t *)top = encoded ? (uintptr_t)victim ^ key : (uintptr_t)victim + 8;
    void *got[2 * N];
    for (unsigned i = 0; i < 2 * N; i++) {
        got[i] = anr_core_alloc(h, 48, 0, 0);
        assert_non_null(got[i]);
        assert_int_equal(anr_core_check(h, got[i]), ANR_ERR_NONE);
        assert_true((uint8_t *)got[i] < (uint8_t *)victim ||
                    (uint8_t *)got[i] >= (uint8_t *)victim + 64);
        for (unsigned j = 0; j < i; j++)
            assert_ptr_not_equal(got[i], got[j]);
    }
    assert_int_equal(errors_seen, 1);
    assert_int_equal(last_error, ANR_ERR_DEFERRED_LIST);
    for (unsigned i = 0; i < 2 * N; i++)
        assert_int_equal(anr_core_free(h, got[i]), ANR_ERR_NONE);
    anr_core_free(h, victim);
    anr_core_free(h, v0);
    anr_core_flush_thread_cache(h);
    assert_sound(h);
}

static void test_bin_link_overwritten(void **state) { bin_link_scribbled(state, false); }

/* The link decodes to an aligned address in the data, so only the free
 * key (which a live object does not carry) tells it from a true link. */
static void test_bin_link_to_live_object(void **state) { bin_link_scribbled(state, true); }

/* Takes `n` blocks of `size` and checks each: a live object of at least
 * that size, none handed out twice. */
static void take_checked(anr_heap *h, size_t size, void **got, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        got[i] = anr_core_alloc(h, size, 0, 0);
        assert_non_null(got[i]);
        assert_int_equal(anr_core_check(h, got[i]), ANR_ERR_NONE);
        assert_true(anr_core_usable_size(h, got[i]) >= size);
        for (unsigned j = 0; j < i; j++)
            assert_ptr_not_equal(got[i], got[j]);
    }
}

/* A use after free that copies a freed block's first word (its link)
 * into another freed block: never a block of another class, never one
 * handed out twice. Across classes, links encoded with the address that
 * holds them make the copy decode to no object of the bin (reported, or
 * by chance a free object of the class); without that, malloc(64) got
 * the 48-byte slot, which carries the free key. Within a bin, the copy
 * makes a cycle back to a block already handed out, whose key is gone;
 * without the key check on the object popped, it was handed out twice. */
static void test_bin_link_copied(void **state)
{
    anr_heap *h = counting_heap(state);
    /* Across classes: b's link (to a, 48 bytes) copied into x (64). */
    void *a = anr_core_alloc(h, 48, 0, 0), *b = anr_core_alloc(h, 48, 0, 0);
    void *y = anr_core_alloc(h, 64, 0, 0), *x = anr_core_alloc(h, 64, 0, 0);
    anr_core_free(h, a);
    anr_core_free(h, b); /* bin of 48: b -> a */
    anr_core_free(h, y);
    anr_core_free(h, x); /* bin of 64: x -> y */
    memcpy(x, b, sizeof(uintptr_t));
    void *got[8];
    take_checked(h, 64, got, 8);
    unsigned errors = errors_seen;
    assert_true(errors <= 1);
    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(anr_core_free(h, got[i]), ANR_ERR_NONE);
    anr_core_flush_thread_cache(h);

    /* Within a bin: the top's link copied into the bottom block, a cycle. */
    enum { N = 4 };
    void *p[N];
    for (unsigned i = 0; i < N; i++)
        p[i] = anr_core_alloc(h, 96, 0, 0);
    for (unsigned i = 0; i < N; i++)
        anr_core_free(h, p[i]); /* p[N-1] -> ... -> p[0] */
    memcpy(p[0], p[N - 1], sizeof(uintptr_t));
    void *again[2 * N];
    take_checked(h, 96, again, 2 * N);
    assert_true(errors_seen <= errors + 1);
    for (unsigned i = 0; i < 2 * N; i++)
        assert_int_equal(anr_core_free(h, again[i]), ANR_ERR_NONE);
    anr_core_flush_thread_cache(h);
    assert_sound(h);
}

/* --- a quiet class's bin goes home while the thread works elsewhere --- */

/* Rounds of 256 mallocs and frees of 64 bytes: the bin fills and spills,
 * and refills take slabs: slow paths, with no call for any other class. */
static void work_one_class(anr_heap *h, unsigned rounds)
{
    void *p[256];
    for (unsigned r = 0; r < rounds; r++) {
        for (unsigned i = 0; i < 256; i++) {
            p[i] = anr_core_alloc(h, 64, 0, 0);
            assert_non_null(p[i]);
        }
        for (unsigned i = 0; i < 256; i++)
            anr_core_free(h, p[i]);
    }
}

/* Objects of a class this thread freed and then stopped using go back to
 * their slabs, and those slabs to the heap, on the thread's slow paths in
 * other classes: a class that served no malloc since its last visit gives
 * half its bin back, then the rest; then its all-free current slab and its
 * spare go too. Before, a bin only shrank when it kept filling up, so a quiet
 * class kept its bin, and each binned object its slab, for as long as the
 * thread lived. */
static void test_quiet_bin_goes_home(void **state)
{
    anr_heap *h = tc_heap(state, 0, 0);
    work_one_class(h, 50); /* the 64-byte class's cache at its usual state */
    size_t before = stats_of(h).bytes_cached;
    void *q[8];
    for (unsigned i = 0; i < 8; i++)
        assert_non_null(q[i] = anr_core_alloc(h, 3000, 0, 0));
    for (unsigned i = 0; i < 8; i++)
        anr_core_free(h, q[i]); /* all into the bin (it holds 16) */
    size_t quiet = stats_of(h).bytes_cached;
    if (quiet < before + 8 * 3000)
        fail_msg("the 8 freed objects are not cached: %zu bytes, %zu before", quiet, before);
    work_one_class(h, 200);
    size_t after = stats_of(h).bytes_cached;
    if (after > before + 3000)
        fail_msg("the quiet class still holds %zu bytes (%zu cached before it, %zu after)",
                 after - before, before, after);
    assert_sound(h);
}

typedef struct alloc_arg {
    anr_heap *h;
    void **p;
    unsigned n;
    size_t size;
} alloc_arg;

static void *alloc_n(void *v)
{
    alloc_arg *a = v;
    for (unsigned i = 0; i < a->n; i++)
        if (!(a->p[i] = anr_core_alloc(a->h, a->size, 0, 0)))
            return (void *)1;
    return NULL;
}

/* 16 objects of 3000 bytes from a thread that exited (their slabs are
 * shared), into q; then this thread's 64-byte class at its usual state.
 * Returns the bytes cached then. */
static size_t objects_from_gone_thread(anr_heap *h, void **q)
{
    alloc_arg a = {h, q, 16, 3000};
    pthread_t t;
    void *ret;
    assert_int_equal(pthread_create(&t, NULL, alloc_n, &a), 0);
    assert_int_equal(pthread_join(t, &ret), 0);
    assert_null(ret);
    work_one_class(h, 50);
    return stats_of(h).bytes_cached;
}

/* A quiet class's bin also gets a smaller capacity, so that the frees that
 * come later keep fewer objects (each one pins its slab). The objects come
 * from a thread that exited (shared slabs): binned they count as cached,
 * sent home they do not. */
static void test_quiet_bin_shrinks(void **state)
{
    anr_heap *h = tc_heap(state, 0, 0);
    void *q[16];
    size_t before = objects_from_gone_thread(h, q);
    for (unsigned i = 0; i < 8; i++)
        anr_core_free(h, q[i]); /* into a bin of 16 */
    work_one_class(h, 200);     /* that bin goes home, and down to 4 */
    for (unsigned i = 8; i < 16; i++)
        anr_core_free(h, q[i]);
    size_t after = stats_of(h).bytes_cached, kept = after > before ? after - before : 0;
    if (kept > 4 * 3072)
        fail_msg("a quiet class's bin kept %zu bytes of 8 later frees of 3000 bytes", kept);
    assert_sound(h);
}

/* A class in use stays whole, even in malloc/free pairs that leave its
 * bin's count where it was: its bin of objects from another thread's slabs
 * (cached while binned) is still there after the same work elsewhere. */
static void test_busy_class_keeps_its_bin(void **state)
{
    anr_heap *h = tc_heap(state, 0, 0);
    void *q[16];
    size_t before = objects_from_gone_thread(h, q);
    for (unsigned i = 0; i < 16; i++)
        anr_core_free(h, q[i]); /* the bin of 16 */
    for (unsigned r = 0; r < 200; r++) {
        /* A pair first: the class is in use from the start (frees alone,
         * before any malloc, would make it quiet at a visit in between). */
        void *p = anr_core_alloc(h, 3000, 0, 0); /* a pair: the bin's count stays */
        assert_non_null(p);
        anr_core_free(h, p);
        work_one_class(h, 1);
    }
    size_t after = stats_of(h).bytes_cached, kept = after > before ? after - before : 0;
    if (kept < 16 * 3072)
        fail_msg("a class in use kept %zu bytes of its bin of 16 objects of 3072", kept);
    assert_sound(h);
}

/* The same for a thread that only frees (a consumer, a program freeing its
 * data: its slow paths are full bins) or only allocates (building the next
 * thing: its slow paths are refills). A thread frees or allocates many
 * objects of 64 bytes after it freed 8 of 3000 bytes, or without those 8;
 * what the 8 leave cached is the difference. */
/* Enough slow paths for five visits of every class (it takes about 25000
 * mallocs of 64 bytes), with room to spare. */
#define ELSEWHERE 40000u
typedef struct elsewhere_arg {
    anr_heap *h;
    bool quiet_class, alloc_only;
    size_t cached;
} elsewhere_arg;

static void *work_elsewhere(void *v)
{
    elsewhere_arg *a = v;
    static void *p[2][ELSEWHERE];
    void **mine = p[a->quiet_class];
    for (unsigned i = 0; !a->alloc_only && i < ELSEWHERE; i++)
        if (!(mine[i] = anr_core_alloc(a->h, 64, 0, 0)))
            return (void *)1;
    void *q[8];
    for (unsigned i = 0; a->quiet_class && i < 8; i++)
        if (!(q[i] = anr_core_alloc(a->h, 3000, 0, 0)))
            return (void *)1;
    for (unsigned i = 0; a->quiet_class && i < 8; i++)
        anr_core_free(a->h, q[i]);
    for (unsigned i = 0; a->alloc_only && i < ELSEWHERE; i++)
        if (!(mine[i] = anr_core_alloc(a->h, 64, 0, 0)))
            return (void *)1;
    if (!a->alloc_only) {
        for (unsigned i = 0; i < ELSEWHERE; i++)
            anr_core_free(a->h, mine[i]);
    }
    a->cached = stats_of(a->h).bytes_cached;
    for (unsigned i = 0; a->alloc_only && i < ELSEWHERE; i++)
        anr_core_free(a->h, mine[i]);
    return NULL;
}

static void quiet_class_while(void **state, bool alloc_only)
{
    anr_heap *h = tc_heap(state, 0, 0);
    elsewhere_arg a[2] = {{h, false, alloc_only, 0}, {h, true, alloc_only, 0}};
    for (unsigned i = 0; i < 2; i++) { /* one after the other: each its own cache */
        pthread_t t;
        void *ret;
        assert_int_equal(pthread_create(&t, NULL, work_elsewhere, &a[i]), 0);
        assert_int_equal(pthread_join(t, &ret), 0);
        assert_null(ret);
    }
    size_t kept = a[1].cached > a[0].cached ? a[1].cached - a[0].cached : 0;
    if (kept > 4096)
        fail_msg("8 objects freed before %u %s elsewhere left %zu bytes cached", ELSEWHERE,
                 alloc_only ? "mallocs" : "frees", kept);
    assert_sound(h);
}

static void test_quiet_bin_goes_home_while_freeing(void **state)
{
    quiet_class_while(state, false);
}

static void test_quiet_bin_goes_home_while_allocating(void **state)
{
    quiet_class_while(state, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_thread_exit_returns_cache), UNIT(test_cross_thread_frees),
        UNIT(test_owner_reuses_remote_frees),
        UNIT(test_double_free_caught),        UNIT(test_limit_gets_cached_memory),
        UNIT(test_idle_cache_goes_back),      UNIT(test_busy_cache_keeps_its_pages),
        UNIT(test_decay_asks_caches_back),    UNIT(test_one_object_slabs_come_in_batches),
        UNIT(test_batches_stay_within_limit), UNIT(test_big_class_bin_holds_a_batch),
        UNIT(test_big_bins_stay_within_cache_bytes), UNIT(test_big_bins_start_within_cache_bytes),
        UNIT(test_fork_with_caches),          UNIT(test_more_threads_than_slots),
        UNIT(test_binned_object_is_free),     UNIT(test_bin_link_overwritten),
        UNIT(test_bin_link_to_live_object), UNIT(test_bin_link_copied),
        UNIT(test_quiet_bin_goes_home),       UNIT(test_quiet_bin_shrinks),
        UNIT(test_quiet_bin_goes_home_while_freeing),
        UNIT(test_quiet_bin_goes_home_while_allocating),
        UNIT(test_busy_class_keeps_its_bin), UNIT(test_no_fork_leaves_a_keyed_free_slot),
        UNIT(test_bin_served_mallocs_see_the_decay), UNIT(test_run_bin_served_mallocs_see_the_decay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

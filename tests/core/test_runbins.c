/* Run bins: a thread cache keeps page runs it freed (past the largest size
 * class, up to 64 KiB) for its next malloc of the same length (or one page
 * shorter, when that length's bin is empty). A binned run
 * is served again exactly once, counts as cached (not in use) in the
 * statistics, is reported when freed, checked, resized or sized again, and
 * goes back when the thread exits, when a limit-bound allocation needs it,
 * and in a forked child for threads that did not come along. A thread that
 * only frees ends up keeping none, and the bins never pass their bound.
 * Every heap here has caches on. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "core_test.h"

static anr_heap *run_heap(void **state, size_t limit, size_t run_bytes)
{
    /* The tests use runs of up to 6 pages past the shortest binned length;
     * with pages past 8 KiB the bins keep fewer lengths (at most 64 KiB). */
    if (sys_page() > 8192)
        skip();
    anr_core_options o;
    test_options(&o);
    o.thread_cache = true;
    o.limit = limit;
    o.tcache_run_bytes = run_bytes;
    o.hooks.on_error = count_error;
    errors_seen = 0;
    return fx_init(state, &o);
}

/* Bytes of a run of the shortest length the bins keep, plus `extra` pages. */
static size_t run_size(size_t extra)
{
    return (min_large_pages() + extra) * sys_page();
}

static void test_freed_run_is_reused(void **state)
{
    anr_heap *h = run_heap(state, 0, 0);
    size_t size = run_size(1);
    void *keep = anr_core_alloc(h, size, 0, 0); /* the freed run cannot merge away */
    void *p = anr_core_alloc(h, size, 0, 0);
    assert_non_null(p);
    anr_core_stats before = stats_of(h);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);

    /* It waits in this thread's bin: cached, not in use, pages still held. */
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.bytes_cached, size);
    assert_int_equal(s.objects_in_use, before.objects_in_use - 1);
    assert_int_equal(s.bytes_in_use, before.bytes_in_use - size);
    assert_int_equal(s.pages_in_use, before.pages_in_use);

    /* Another length does not take it; the same length gets it back once. */
    void *other = anr_core_alloc(h, run_size(2), 0, 0);
    assert_ptr_not_equal(other, p);
    void *q = anr_core_alloc(h, size - 100, 0, 0);
    assert_ptr_equal(q, p);
    assert_int_equal(anr_core_check(h, q), ANR_ERR_NONE);
    void *r = anr_core_alloc(h, size, 0, 0);
    assert_ptr_not_equal(r, p);
    s = stats_of(h);
    assert_int_equal(s.bytes_cached, 0);

    /* calloc of a binned run (not zero: it was written) comes back zeroed. */
    memset(q, 0xa5, size);
    anr_core_free(h, q);
    unsigned char *z = anr_core_alloc(h, size, 0, ANR_ALLOC_ZERO);
    assert_ptr_equal(z, q);
    check_zero(z, size);

    anr_core_free(h, z);
    anr_core_free(h, r);
    anr_core_free(h, other);
    anr_core_free(h, keep);
    anr_core_flush_thread_cache(h);
    s = stats_of(h);
    assert_int_equal(s.objects_in_use, 0);
    assert_int_equal(s.pages_in_use, 0);
    assert_int_equal(errors_seen, 0);
    assert_verify(h);
}

/* An aligned request of a length the bins keep takes the binned run if it
 * is aligned (any run is, up to the page size): an aligned buffer freed
 * and asked for again comes back from the bin, not from the locked path
 * (which left the binned one there and carved another). */
static void test_aligned_run_from_bin(void **state)
{
    anr_heap *h = run_heap(state, 0, 0);
    size_t page = sys_page(), size = run_size(1);
    void *keep = anr_core_alloc(h, size, 0, 0);
    size_t aligns[] = {page, 2 * page, 4 * page};
    for (size_t k = 0; k < sizeof aligns / sizeof aligns[0]; k++) {
        void *p = anr_core_alloc(h, size, aligns[k], 0);
        assert_non_null(p);
        assert_true(((uintptr_t)p & (aligns[k] - 1)) == 0);
        memset(p, 0x5a, size);
        assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
        assert_int_equal(stats_of(h).bytes_cached, size);
        unsigned char *q = anr_core_alloc(h, size, aligns[k], ANR_ALLOC_ZERO);
        if (q != p)
            fail_msg("align %zu: the binned run %p, aligned, was not reused (got %p)", aligns[k], p,
                     (void *)q);
        assert_int_equal(stats_of(h).bytes_cached, 0);
        check_zero(q, size);
        assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
        anr_core_flush_thread_cache(h);
    }
    /* A binned run that is not aligned enough stays in the bin. */
    void *v[16], *a = NULL;
    unsigned nv = 0;
    while (!a && nv < 16) {
        void *p = anr_core_alloc(h, size, 0, 0);
        assert_non_null(p);
        if ((uintptr_t)p & (8 * page - 1))
            a = p;
        else
            v[nv++] = p;
    }
    assert_non_null(a);
    anr_core_free(h, a);
    void *b = anr_core_alloc(h, size, 8 * page, 0);
    assert_ptr_not_equal(b, a);
    assert_true(((uintptr_t)b & (8 * page - 1)) == 0);
    assert_int_equal(stats_of(h).bytes_cached, size);
    anr_core_free(h, b);
    for (unsigned i = 0; i < nv; i++)
        anr_core_free(h, v[i]);
    anr_core_free(h, keep);
    anr_core_flush_thread_cache(h);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_int_equal(errors_seen, 0);
    assert_verify(h);
}

typedef struct df_arg {
    anr_heap *h;
    void *p;
    anr_error r1, r2;
} df_arg;

static void *free_twice(void *v)
{
    df_arg *a = v;
    /* A run of its own first, so that this thread has a cache and the
     * first free below goes into its bin. */
    anr_core_free(a->h, anr_core_alloc(a->h, run_size(0), 0, 0));
    a->r1 = anr_core_free(a->h, a->p);
    a->r2 = anr_core_free(a->h, a->p);
    return NULL;
}

/* An empty bin borrows from the bin one page longer (never further): the
 * run keeps its length, and goes back to its own bin when freed. */
static void test_one_page_longer_serves(void **state)
{
    anr_heap *h = run_heap(state, 0, 0);
    void *keep = anr_core_alloc(h, run_size(0), 0, 0); /* no merging away */
    void *p = anr_core_alloc(h, run_size(2), 0, 0);
    assert_non_null(p);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);

    /* Two pages shorter: not served from it. */
    void *far = anr_core_alloc(h, run_size(0), 0, 0);
    assert_ptr_not_equal(far, p);
    /* One page shorter: served, with its whole length usable. */
    void *q = anr_core_alloc(h, run_size(1), 0, 0);
    assert_ptr_equal(q, p);
    assert_int_equal(anr_core_usable_size(h, q), run_size(2));
    assert_int_equal(anr_core_check(h, q), ANR_ERR_NONE);
    memset(q, 0x5a, run_size(2));
    assert_verify(h);

    /* Freed, it waits in the bin of its own length. */
    assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    assert_int_equal(stats_of(h).bytes_cached, run_size(2));
    void *r = anr_core_alloc(h, run_size(2), 0, 0);
    assert_ptr_equal(r, p);

    anr_core_free(h, r);
    anr_core_free(h, far);
    anr_core_free(h, keep);
    anr_core_flush_thread_cache(h);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_int_equal(errors_seen, 0);
    assert_verify(h);
}

/* A bin that served mallocs and ran dry doubles its capacity at the next
 * malloc that finds it empty, also when the bin one page longer serves
 * that malloc (the inline pop does): runs of that length come and go
 * here, and every miss would cost a lock round trip. */
static void test_borrowing_grows_the_bin(void **state)
{
    anr_heap *h = run_heap(state, 0, 0);
    size_t size = run_size(1);
    void *keep = anr_core_alloc(h, run_size(0), 0, 0); /* no merging away */
    void *a[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(a[i] = anr_core_alloc(h, size, 0, 0));
    /* Its bin (starting capacity 2) fills, then serves two mallocs. */
    anr_core_free(h, a[0]);
    anr_core_free(h, a[1]);
    void *b0 = anr_core_alloc(h, size, 0, 0), *b1 = anr_core_alloc(h, size, 0, 0);
    assert_true((b0 == a[0] && b1 == a[1]) || (b0 == a[1] && b1 == a[0]));
    /* Empty now; a run one page longer waits in its own bin and serves
     * the next malloc of this length. */
    void *l = anr_core_alloc(h, run_size(2), 0, 0);
    anr_core_free(h, l);
    void *c = anr_core_alloc(h, size, 0, 0);
    assert_ptr_equal(c, l);
    assert_int_equal(stats_of(h).bytes_cached, 0);

    /* Three runs of this length fit its bin now (at capacity 2 the third
     * free would have found it full and spilled half of it). */
    anr_core_free(h, b0);
    anr_core_free(h, b1);
    anr_core_free(h, a[2]);
    assert_int_equal(stats_of(h).bytes_cached, 3 * size);

    anr_core_free(h, c);
    anr_core_free(h, keep);
    anr_core_flush_thread_cache(h);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_int_equal(errors_seen, 0);
    assert_verify(h);
}

static void test_binned_run_is_free(void **state)
{
    anr_heap *h = run_heap(state, 0, 0);
    size_t size = run_size(0);
    void *keep = anr_core_alloc(h, size, 0, 0);
    void *p = anr_core_alloc(h, size, 0, 0);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_check(h, p), ANR_ERR_DOUBLE_FREE);
    assert_int_equal(anr_core_usable_size(h, p), 0);
    anr_error err;
    assert_null(anr_core_realloc(h, p, 2 * size, &err));
    assert_int_equal(err, ANR_ERR_DOUBLE_FREE);
    /* A size it would keep its room for (checked without the lock). */
    assert_null(anr_core_realloc(h, p, size - 100, &err));
    assert_int_equal(err, ANR_ERR_DOUBLE_FREE);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_DOUBLE_FREE);
    assert_int_equal(errors_seen, 4); /* usable_size, 2 reallocs, free */
    assert_int_equal(last_error, ANR_ERR_DOUBLE_FREE);

    /* Another thread frees a run twice: the first one bins it there, the
     * second is caught at once, by the key. */
    void *other = anr_core_alloc(h, size, 0, 0);
    df_arg a = {h, other, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, free_twice, &a), 0);
    pthread_join(th, NULL);
    assert_int_equal(a.r1, ANR_ERR_NONE);
    assert_int_equal(a.r2, ANR_ERR_DOUBLE_FREE);
    assert_int_equal(errors_seen, 5);
    /* That thread exited: its bin went back to the heap, so the run is
     * free there now (maybe merged with a free neighbour), and a third free
     * is caught by the page map. */
    assert_int_not_equal(anr_core_free(h, other), ANR_ERR_NONE);
    assert_int_equal(errors_seen, 6);

    /* The run binned here comes back once, as a live object. */
    void *q = anr_core_alloc(h, size, 0, 0);
    assert_ptr_equal(q, p);
    assert_int_equal(anr_core_check(h, q), ANR_ERR_NONE);
    assert_int_equal(anr_core_usable_size(h, q), size);
    anr_core_free(h, q);
    anr_core_free(h, keep);
    anr_core_flush_thread_cache(h);
    assert_int_equal(errors_seen, 6);
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.objects_in_use, 0);
    assert_int_equal(s.pages_in_use, 0);
    assert_verify(h);
}

/* Runs of several lengths, allocated and freed in a changing order, so that
 * bins fill, serve and spill. */
static void *run_churn(void *v)
{
    anr_heap *h = v;
    void *p[64];
    for (unsigned round = 0; round < 50; round++) {
        for (unsigned i = 0; i < 64; i++) {
            size_t size = run_size((i * 7 + round) % 6) - 24;
            p[i] = anr_core_alloc(h, size, 0, 0);
            if (!p[i])
                return (void *)1;
            memset(p[i], (int)i, 64);
        }
        for (unsigned i = 0; i < 64; i++) {
            unsigned k = (i * 37 + round) % 64;
            unsigned char *c = p[k];
            if (c[0] != (unsigned char)k || c[63] != (unsigned char)k)
                return (void *)2;
            if (anr_core_free(h, c) != ANR_ERR_NONE)
                return (void *)3;
        }
    }
    return NULL;
}

static void test_thread_exit_returns_runs(void **state)
{
    anr_heap *h = run_heap(state, 0, 0);
    for (int t = 0; t < 3; t++) {
        pthread_t th;
        void *ret;
        assert_int_equal(pthread_create(&th, NULL, run_churn, h), 0);
        assert_int_equal(pthread_join(th, &ret), 0);
        assert_null(ret);
        anr_core_stats s = stats_of(h);
        assert_int_equal(s.thread_caches, 0);
        assert_int_equal(s.bytes_cached, 0);
        assert_int_equal(s.objects_in_use, 0);
        assert_int_equal(s.pages_in_use, 0);
        assert_verify(h);
    }
    assert_int_equal(errors_seen, 0);
}

/* A thread that only frees ends up keeping none, and bins stay within
 * their bound while a thread churns. */
static void test_bins_bounded(void **state)
{
    const size_t bound = 3 * run_size(5);
    anr_heap *h = run_heap(state, 0, bound);
    static void *p[400];
    for (unsigned i = 0; i < 400; i++)
        assert_non_null(p[i] = anr_core_alloc(h, run_size(i % 3), 0, 0));
    for (unsigned i = 0; i < 400; i++) {
        anr_core_free(h, p[i]);
        assert_true(stats_of(h).bytes_cached <= bound);
    }
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.bytes_cached, 0);
    assert_int_equal(s.pages_in_use, 0);
    assert_null(run_churn(h));
    assert_true(stats_of(h).bytes_cached <= bound);

    /* The frees closed the bins; mallocs open them again. */
    anr_core_flush_thread_cache(h);
    void *a = anr_core_alloc(h, run_size(0), 0, 0);
    void *b = anr_core_alloc(h, run_size(0), 0, 0); /* a cannot merge away */
    anr_core_free(h, a);
    assert_int_equal(stats_of(h).bytes_cached, run_size(0));
    assert_ptr_equal(anr_core_alloc(h, run_size(0), 0, 0), a);
    anr_core_free(h, a);
    anr_core_free(h, b);
    assert_int_equal(errors_seen, 0);
    anr_core_flush_thread_cache(h);
    assert_verify(h);
}

/* --- a small request never gets a binned run --- */

/* With a largest class that is not a whole number of pages, a run of one
 * page is a length the bins keep, yet sizes of a slab class also round up
 * to one page: those must still get a slot of their class, never the
 * binned page (a malloc(24) that took a whole page would waste 99% of it). */
static void test_small_request_gets_its_class(void **state)
{
    static const uint32_t classes[] = {16, 32, 64, 128, 256, 512, 1024, 2048, 2560};
    anr_core_options o;
    test_options(&o);
    o.thread_cache = true;
    o.slab_sizes = classes;
    o.n_slab_sizes = sizeof(classes) / sizeof(classes[0]);
    o.hooks.on_error = count_error;
    errors_seen = 0;
    anr_heap *h = fx_init(state, &o);
    size_t page = sys_page();

    void *run = anr_core_alloc(h, page, 0, 0);
    void *keep = anr_core_alloc(h, page, 0, 0); /* `run` cannot merge */
    assert_non_null(run);
    assert_non_null(keep);
    anr_core_free(h, run);
    assert_int_equal(stats_of(h).bytes_cached, page);
    const size_t sizes[] = {24, 2000, 2560};
    for (int i = 0; i < 3; i++) {
        void *p = anr_core_alloc(h, sizes[i], 0, 0);
        assert_non_null(p);
        assert_ptr_not_equal(p, run);
        assert_true(anr_core_usable_size(h, p) <= 2560);
        anr_core_free(h, p);
    }
    /* A request past the largest class still takes it. */
    assert_ptr_equal(anr_core_alloc(h, 2561, 0, 0), run);
    anr_core_free(h, run);
    anr_core_free(h, keep);
    anr_core_flush_thread_cache(h);
    assert_int_equal(stats_of(h).pages_in_use, 0);
    assert_int_equal(errors_seen, 0);
    assert_verify(h);
}

/* --- a flush request reaches the bins at the owner's next call --- */

static void *purge_all(void *h)
{
    anr_core_purge(h, true);
    return NULL;
}

/* Another thread's malloc_trim (anr_core_purge(all)) asks every cache
 * back; this thread's bins go back at its next malloc or free of a run,
 * even one that its bins could serve or take without the lock. */
static void purge_from_another_thread(anr_heap *h)
{
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, purge_all, h), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
}

/* `n` runs (1 or 2) in this thread's bin, which has room for more; the
 * runs around them stay in use (keep[], NULL where none), so that the
 * binned ones cannot merge. */
static void bin_runs(anr_heap *h, unsigned n, void *keep[3])
{
    void *a = anr_core_alloc(h, run_size(0), 0, 0);
    void *b = anr_core_alloc(h, run_size(0), 0, 0);
    keep[0] = anr_core_alloc(h, run_size(0), 0, 0);
    keep[1] = anr_core_alloc(h, run_size(0), 0, 0);
    keep[2] = n == 2 ? NULL : b;
    assert_non_null(a);
    assert_non_null(b);
    anr_core_free(h, a);
    if (n == 2)
        anr_core_free(h, b);
    assert_int_equal(stats_of(h).bytes_cached, n * run_size(0));
}

static void free_kept(anr_heap *h, void *keep[3])
{
    for (int i = 0; i < 3; i++)
        anr_core_free(h, keep[i]);
    anr_core_flush_thread_cache(h);
}

static void test_flush_request_reaches_bins(void **state)
{
    anr_heap *h = run_heap(state, 0, 0);
    void *keep[3];

    /* Two binned: the next malloc hands both back, not only the one it
     * would have taken. */
    bin_runs(h, 2, keep);
    purge_from_another_thread(h);
    assert_int_equal(stats_of(h).bytes_cached, 2 * run_size(0));
    void *p = anr_core_alloc(h, run_size(0), 0, 0);
    assert_non_null(p);
    assert_int_equal(stats_of(h).bytes_cached, 0);
    anr_core_free(h, p);
    free_kept(h, keep);

    /* One binned, room for another: the next free hands it back and does
     * not bin the run it frees. */
    bin_runs(h, 1, keep);
    purge_from_another_thread(h);
    anr_core_free(h, keep[0]);
    keep[0] = NULL;
    assert_int_equal(stats_of(h).bytes_cached, 0);
    free_kept(h, keep);
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.pages_in_use, 0);
    assert_int_equal(s.bytes_cached, 0);
    assert_int_equal(errors_seen, 0);
    assert_verify(h);
}

/* --- the limit takes back what run bins hold --- */

typedef struct idle_arg {
    anr_heap *h;
    pthread_mutex_t m;
    pthread_cond_t cv;
    int stage; /* 1: runs binned, 2: may exit */
    int bad;
} idle_arg;

static void *bin_then_idle(void *v)
{
    idle_arg *a = v;
    void *p[6];
    /* Allocate, free and allocate again, so that the bins grow, then free
     * them all: they stay in this thread's bins. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 6; i++)
            if (!(p[i] = anr_core_alloc(a->h, run_size((size_t)i % 2), 0, 0)))
                a->bad = 1;
        for (int i = 0; i < 6; i++)
            anr_core_free(a->h, p[i]);
    }
    pthread_mutex_lock(&a->m);
    a->stage = 1;
    pthread_cond_broadcast(&a->cv);
    while (a->stage != 2)
        pthread_cond_wait(&a->cv, &a->m);
    pthread_mutex_unlock(&a->m);
    /* Its next call sees the flush request and hands its bins back. */
    void *q = anr_core_alloc(a->h, run_size(0), 0, 0);
    anr_core_free(a->h, q);
    return NULL;
}

static void test_limit_gets_binned_runs(void **state)
{
    size_t page = sys_page();
    const size_t limit = 12 * run_size(1) + 4 * page;
    anr_heap *h = run_heap(state, limit, 0);

    /* This thread bins runs, then needs their pages for one big block. */
    void *p[6];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 6; i++)
            assert_non_null(p[i] = anr_core_alloc(h, run_size((size_t)i % 2), 0, 0));
        for (int i = 0; i < 6; i++)
            anr_core_free(h, p[i]);
    }
    assert_true(stats_of(h).bytes_cached >= 2 * run_size(0));
    void *big = anr_core_alloc(h, limit - 2 * page, 0, 0);
    assert_non_null(big);
    anr_core_free(h, big);
    anr_core_purge(h, true);

    /* Another thread, alive and idle, holds binned runs: the big block
     * still fits once that thread's next call hands them back; until then
     * the failing allocation returns NULL, never more than the limit. */
    idle_arg a = {.h = h, .stage = 0, .bad = 0};
    pthread_mutex_init(&a.m, NULL);
    pthread_cond_init(&a.cv, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bin_then_idle, &a), 0);
    pthread_mutex_lock(&a.m);
    while (a.stage != 1)
        pthread_cond_wait(&a.cv, &a.m);
    pthread_mutex_unlock(&a.m);
    anr_core_stats s = stats_of(h);
    assert_true(s.bytes_cached >= 2 * run_size(0));
    size_t held = s.pages_in_use * page;
    big = anr_core_alloc(h, limit - 2 * page, 0, 0);
    if (big) /* only if what the thread holds left room */
        assert_true(held + limit - 2 * page <= limit);
    anr_core_free(h, big);
    pthread_mutex_lock(&a.m);
    a.stage = 2;
    pthread_cond_broadcast(&a.cv);
    pthread_mutex_unlock(&a.m);
    pthread_join(th, NULL);
    assert_int_equal(a.bad, 0);
    s = stats_of(h);
    assert_int_equal(s.bytes_cached, 0);
    assert_int_equal(s.pages_in_use, 0);
    big = anr_core_alloc(h, limit - 2 * page, 0, 0);
    assert_non_null(big);
    anr_core_free(h, big);
    assert_int_equal(errors_seen, 0);
    assert_verify(h);
}

/* --- fork while run bins are populated --- */

typedef struct busy_arg {
    anr_heap *h;
    atomic_int stop;
} busy_arg;

static void *busy_runs(void *v)
{
    busy_arg *a = v;
    void *p[8] = {0};
    for (unsigned i = 0; !atomic_load(&a->stop); i++) {
        unsigned k = i % 8;
        anr_core_free(a->h, p[k]);
        p[k] = anr_core_alloc(a->h, run_size((i * 5) % 4), 0, 0);
    }
    for (unsigned k = 0; k < 8; k++)
        anr_core_free(a->h, p[k]);
    return NULL;
}

static void test_fork_with_binned_runs(void **state)
{
    anr_heap *h = run_heap(state, 0, 0);
    void *mine[8];
    for (int i = 0; i < 8; i++)
        mine[i] = anr_core_alloc(h, run_size((size_t)i % 3), 0, 0);
    size_t mine_binned = 0;
    for (int i = 0; i < 4; i++) {
        anr_core_free(h, mine[i]); /* binned here */
        mine_binned += run_size((size_t)i % 3);
    }
    assert_int_equal(stats_of(h).bytes_cached, mine_binned);
    busy_arg a = {h, 0};
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_create(&th[t], NULL, busy_runs, &a), 0);
    usleep(20000);
    for (int round = 0; round < 5; round++) {
        anr_core_fork_prepare(h);
        pid_t pid = fork();
        if (pid == 0) {
            anr_core_fork_child(h);
            /* The other threads' bins went back (their live blocks stay in
             * use: they are the child's leak, as with any allocator); this
             * thread's bins stayed and serve it. */
            anr_core_stats s0 = stats_of(h);
            int ok = anr_core_verify(h) == NULL && s0.bytes_cached == mine_binned;
            for (int i = 4; i < 8; i++)
                ok = ok && anr_core_free(h, mine[i]) == ANR_ERR_NONE;
            ok = ok && run_churn(h) == NULL;
            anr_core_flush_thread_cache(h);
            anr_core_stats s = stats_of(h);
            ok = ok && s.objects_in_use == s0.objects_in_use - 4 && s.bytes_cached == 0;
            ok = ok && anr_core_verify(h) == NULL && errors_seen == 0;
            _exit(ok ? 0 : 1);
        }
        anr_core_fork_parent(h);
        assert_child_ok(pid);
    }
    atomic_store(&a.stop, 1);
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);

    /* A thread parked with binned runs and no live blocks: in the child,
     * once this thread frees what it holds, nothing at all is in use. */
    idle_arg b = {.h = h, .stage = 0, .bad = 0};
    pthread_mutex_init(&b.m, NULL);
    pthread_cond_init(&b.cv, NULL);
    assert_int_equal(pthread_create(&th[0], NULL, bin_then_idle, &b), 0);
    pthread_mutex_lock(&b.m);
    while (b.stage != 1)
        pthread_cond_wait(&b.cv, &b.m);
    pthread_mutex_unlock(&b.m);
    assert_true(stats_of(h).bytes_cached > mine_binned);
    anr_core_fork_prepare(h);
    pid_t pid = fork();
    if (pid == 0) {
        anr_core_fork_child(h);
        int ok = 1;
        for (int i = 4; i < 8; i++)
            ok = ok && anr_core_free(h, mine[i]) == ANR_ERR_NONE;
        anr_core_flush_thread_cache(h);
        anr_core_stats s = stats_of(h);
        ok = ok && s.objects_in_use == 0 && s.pages_in_use == 0 && s.bytes_cached == 0;
        _exit(ok && anr_core_verify(h) == NULL && errors_seen == 0 ? 0 : 1);
    }
    anr_core_fork_parent(h);
    assert_child_ok(pid);
    pthread_mutex_lock(&b.m);
    b.stage = 2;
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.m);
    pthread_join(th[0], NULL);
    assert_int_equal(b.bad, 0);

    for (int i = 4; i < 8; i++)
        anr_core_free(h, mine[i]);
    anr_core_flush_thread_cache(h);
    assert_int_equal(stats_of(h).pages_in_use, 0);
    assert_int_equal(errors_seen, 0);
    assert_verify(h);
}

/* Walks (leak reports, snapshots, the debug socket) see live blocks only,
 * not blocks waiting in a thread cache's bins. */
static bool count_visit(void *ctx, void *p, size_t size)
{
    (void)p, (void)size;
    (*(size_t *)ctx)++;
    return true;
}

static void test_walk_skips_binned(void **state)
{
    anr_heap *h = run_heap(state, 0, 0);
    void *run[4], *small[4];
    for (int i = 0; i < 4; i++) {
        run[i] = anr_core_alloc(h, run_size(0), 0, 0);
        small[i] = anr_core_alloc(h, 100, 0, 0);
    }
    anr_core_free(h, run[1]);
    anr_core_free(h, small[2]);
    assert_true(stats_of(h).bytes_cached >= run_size(0));
    size_t seen = 0;
    assert_null(anr_core_walk(h, NULL, count_visit, &seen));
    assert_int_equal(seen, 6);
    for (int i = 0; i < 4; i++) {
        if (i != 1)
            anr_core_free(h, run[i]);
        if (i != 2)
            anr_core_free(h, small[i]);
    }
    seen = 0;
    assert_null(anr_core_walk(h, NULL, count_visit, &seen));
    assert_int_equal(seen, 0);
    assert_int_equal(errors_seen, 0);
}

/* A use after free that overwrites a binned run's link, with a raw pointer
 * into a live run or (`encoded`) that run's address encoded as the links
 * are: malloc reports it once and never hands out the live run. */
static void run_link_scribbled(void **state, bool encoded)
{
    anr_heap *h = run_heap(state, 0, 0);
    size_t size = run_size(0);
    /* Let the bin grow past its starting size: allocate, free, again. */
    void *p[4];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 4; i++)
            p[i] = anr_core_alloc(h, size, 0, 0);
        for (int i = 0; i < 4; i++)
            anr_core_free(h, p[i]);
    }
    void *w[3];
    for (int i = 0; i < 3; i++)
        w[i] = anr_core_alloc(h, run_size(2), 0, 0);
    anr_core_free(h, w[1]);
    anr_core_free(h, w[2]);
    void *victim = anr_core_alloc(h, run_size(2), 0, 0); /* popped: word 0 an encoded link */
    void *top = anr_core_alloc(h, size, 0, 0); /* pop one and free it: on top */
    anr_core_free(h, top);
    assert_ptr_equal(top, p[3]); /* the bin is LIFO: p[2] is under it */
    uintptr_t key = *(uintptr_t *)top ^ (uintptr_t)p[2];
    *(uintptr_t *)top = encoded ? (uintptr_t)victim ^ key : (uintptr_t)victim + sys_page();
    void *got[8];
    for (int i = 0; i < 8; i++) {
        got[i] = anr_core_alloc(h, size, 0, 0);
        assert_non_null(got[i]);
        assert_int_equal(anr_core_check(h, got[i]), ANR_ERR_NONE);
        assert_true((uint8_t *)got[i] < (uint8_t *)victim ||
                    (uint8_t *)got[i] >= (uint8_t *)victim + run_size(2));
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(got[i], got[j]);
    }
    assert_int_equal(errors_seen, 1);
    assert_int_equal(last_error, ANR_ERR_DEFERRED_LIST);
    for (int i = 0; i < 8; i++)
        assert_int_equal(anr_core_free(h, got[i]), ANR_ERR_NONE);
    anr_core_free(h, victim);
    anr_core_free(h, w[0]);
    anr_core_flush_thread_cache(h);
    assert_verify(h);
}

static void test_run_link_overwritten(void **state) { run_link_scribbled(state, false); }

/* Page-aligned and in the data: only the free key tells it from a link. */
static void test_run_link_to_live_run(void **state) { run_link_scribbled(state, true); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_freed_run_is_reused),      UNIT(test_one_page_longer_serves),
        UNIT(test_binned_run_is_free),      UNIT(test_borrowing_grows_the_bin),
        UNIT(test_thread_exit_returns_runs), UNIT(test_bins_bounded),
        UNIT(test_flush_request_reaches_bins), UNIT(test_small_request_gets_its_class),
        UNIT(test_limit_gets_binned_runs),   UNIT(test_fork_with_binned_runs),
        UNIT(test_run_link_overwritten),     UNIT(test_run_link_to_live_run),     UNIT(test_walk_skips_binned),
        UNIT(test_aligned_run_from_bin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

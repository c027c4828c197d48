/* Large (page-run) objects: page-multiple usable sizes, coalescing of
 * neighbouring free runs, reuse of freed runs before growing, and a long
 * random alloc/free churn with contents and verify() checked. */
#include "core_test.h"

#include <stdlib.h>

static void *must_alloc(anr_heap *h, size_t size)
{
    void *p = anr_core_alloc(h, size, 0, 0);
    if (p == NULL) fail_msg("alloc(%zu) returned NULL", size);
    return p;
}

/* Sizes above the largest class are page multiples. */
static void test_large_usable_is_page_multiple(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    size_t pg = sys_page(), big = largest_class();
    size_t sizes[] = {big + 1,
                      big + 16,
                      round_up(big + 1, pg),
                      round_up(big + 1, pg) + 1,
                      5 * pg,
                      5 * pg - 1,
                      5 * pg + 1,
                      100 * KiB + 3,
                      1 * MiB,
                      3 * MiB + 123,
                      17 * KiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (sizes[i] <= big) continue; /* 17 KiB may be a class on some builds */
        void *p = must_alloc(h, sizes[i]);
        size_t u = anr_core_usable_size(h, p);
        if (u != round_up(sizes[i], pg))
            fail_msg("alloc(%zu): usable %zu, expected %zu (page %zu)", sizes[i], u,
                     round_up(sizes[i], pg), pg);
        if (!is_aligned(p, pg)) fail_msg("large object %p is not page-aligned", p);
        memset(p, 0x77, u);
        assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
        assert_verify(h);
    }
}

/* Pages in use follow large objects exactly. */
static void test_large_pages_in_use(void **state)
{
    anr_heap *h = fx_init_runs(state);
    size_t pg = sys_page(), l0 = min_large_pages();
    size_t np = l0 + 6, nq = l0 + 3; /* pages of p and q */
    anr_core_stats s0 = stats_of(h);
    void *p = must_alloc(h, np * pg);
    void *q = must_alloc(h, (nq - 1) * pg + 1);
    anr_core_stats s1 = stats_of(h);
    assert_int_equal(s1.pages_in_use, s0.pages_in_use + np + nq);
    assert_int_equal(s1.objects_in_use, s0.objects_in_use + 2);
    assert_int_equal(s1.bytes_in_use, s0.bytes_in_use + (np + nq) * pg);
    assert_true(s1.pages_high_water >= np + nq);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    anr_core_stats s2 = stats_of(h);
    assert_int_equal(s2.pages_in_use, s0.pages_in_use + nq);
    assert_int_equal(s2.bytes_in_use, s0.bytes_in_use + nq * pg);
    assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    assert_int_equal(stats_of(h).pages_in_use, s0.pages_in_use);
    assert_verify(h);
}

/* Bytes of one run in the coalescing tests: 5 pages, or more if 5 pages
 * would still be a slab class. */
static size_t run_bytes(void)
{
    size_t n = min_large_pages();
    return (n < 5 ? 5 : n) * sys_page();
}

/* A, B, C (5 pages each, R bytes) and a guard D on a fresh heap; free A and
 * C, then B: the three coalesce and a 3*R allocation gets A's address. */
static void test_coalesce_three(void **state)
{
    anr_heap *h = fx_init_runs(state);
    size_t R = run_bytes();
    char *a = must_alloc(h, R);
    assert_verify(h);
    char *b = must_alloc(h, R);
    assert_verify(h);
    char *c = must_alloc(h, R);
    assert_verify(h);
    char *d = must_alloc(h, R);
    assert_verify(h);
    /* a fresh heap hands out neighbouring runs in order */
    if (b != a + R || c != b + R)
        fail_msg("fresh heap placed A=%p B=%p C=%p: not consecutive runs", (void *)a, (void *)b,
                 (void *)c);
    memset(d, 0xdd, R);

    assert_int_equal(anr_core_free(h, a), ANR_ERR_NONE);
    assert_verify(h);
    assert_int_equal(anr_core_free(h, c), ANR_ERR_NONE);
    assert_verify(h);
    assert_int_equal(anr_core_free(h, b), ANR_ERR_NONE);
    assert_verify(h);
    anr_core_stats before = stats_of(h);

    char *e = must_alloc(h, 3 * R);
    assert_verify(h);
    if (e != a) fail_msg("3-run alloc returned %p, expected A=%p (A+B+C coalesced)", e, a);
    assert_int_equal(anr_core_usable_size(h, e), 3 * R);
    assert_int_equal(stats_of(h).pages_high_water, before.pages_high_water);
    memset(e, 0xee, 3 * R);
    for (size_t i = 0; i < R; i++)
        if ((unsigned char)d[i] != 0xdd) fail_msg("guard D byte %zu changed", i);
    assert_int_equal(anr_core_free(h, e), ANR_ERR_NONE);
    assert_verify(h);
    assert_int_equal(anr_core_free(h, d), ANR_ERR_NONE);
    assert_verify(h);
}

/* Same, but freed in the other orders: B first, then A, then C; and C, B, A. */
static void test_coalesce_orders(void **state)
{
    anr_heap *h = fx_init_runs(state);
    size_t R = run_bytes();
    static const int orders[][3] = {{1, 0, 2}, {2, 1, 0}, {0, 1, 2}};
    for (size_t o = 0; o < 3; o++) {
        char *r[3];
        for (int i = 0; i < 3; i++)
            r[i] = must_alloc(h, R);
        char *guard = must_alloc(h, R);
        char *lo = r[0], *hi = r[0];
        for (int i = 1; i < 3; i++) {
            if (r[i] < lo) lo = r[i];
            if (r[i] > hi) hi = r[i];
        }
        if (hi != lo + 2 * R || r[0] == r[1] || r[1] == r[2] || r[0] == r[2])
            fail_msg("order %zu: runs %p %p %p are not neighbours", o, (void *)r[0], (void *)r[1],
                     (void *)r[2]);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(anr_core_free(h, r[orders[o][i]]), ANR_ERR_NONE);
            assert_verify(h);
        }
        char *e = must_alloc(h, 3 * R);
        assert_verify(h);
        /* everything else below the high-water mark is in use: only the
         * coalesced run fits without growing */
        if (e != lo)
            fail_msg("order %zu: 3-run alloc returned %p, expected %p", o, (void *)e, (void *)lo);
        memset(e, 1, 3 * R);
        assert_int_equal(anr_core_free(h, e), ANR_ERR_NONE);
        /* keep the guard: the next round's runs are fresh ones after it */
        (void)guard;
        /* refill the freed 3 runs so they do not serve the next round */
        char *fill = must_alloc(h, 3 * R);
        assert_ptr_equal(fill, lo);
        assert_verify(h);
    }
}

/* Free runs of different lengths are reused before the heap grows. */
static void test_reuse_before_growing(void **state)
{
    anr_heap *h = fx_init_runs(state);
    size_t pg = sys_page(), l0 = min_large_pages();
    /* run lengths in pages, all above the slab classes */
    size_t lens[] = {l0 + 3, l0 + 7, l0 + 2, l0 + 12, l0 + 5};
    enum { N = sizeof lens / sizeof lens[0] };
    char *run[N], *guard[N];
    for (int i = 0; i < N; i++) {
        run[i] = must_alloc(h, lens[i] * pg);
        guard[i] = must_alloc(h, l0 * pg);
        memset(guard[i], 0x90 + i, pg);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(anr_core_free(h, run[i]), ANR_ERR_NONE);
    assert_verify(h);
    anr_core_stats s = stats_of(h);

    /* largest first: each request then fits in some freed run whatever the
     * fit policy (best, first or good fit) */
    size_t order[] = {l0 + 12, l0 + 7, l0 + 5, l0 + 3, l0 + 2};
    for (int k = 0; k < N; k++) {
        char *p = must_alloc(h, order[k] * pg);
        memset(p, 0x3c, order[k] * pg);
        int inside = 0;
        for (int i = 0; i < N; i++)
            if (p >= run[i] && p + order[k] * pg <= run[i] + lens[i] * pg) inside = 1;
        if (!inside) fail_msg("%zu-page alloc at %p is not in a freed run", order[k], (void *)p);
        anr_core_stats t = stats_of(h);
        if (t.pages_high_water != s.pages_high_water)
            fail_msg("%zu-page alloc grew pages_high_water %zu -> %zu though a freed run fits",
                     order[k], s.pages_high_water, t.pages_high_water);
        assert_verify(h);
    }
    for (int i = 0; i < N; i++)
        for (size_t j = 0; j < pg; j++)
            if ((unsigned char)guard[i][j] != 0x90 + i) fail_msg("guard %d byte %zu changed", i, j);
}

/* 20k random large allocs/frees (17 KiB .. 2 MiB), fixed seed. */
static void test_random_churn(void **state)
{
    anr_core_options o;
    test_options(&o);
    anr_heap *h = fx_init(state, &o);
    enum { SLOTS = 48, OPS = 20000 };
    void *p[SLOTS] = {0};
    size_t sz[SLOTS] = {0};
    uint32_t tag[SLOTS] = {0};
    uint32_t seed = 0x2545f491u;
    size_t pg = sys_page();
    for (uint32_t op = 1; op <= OPS; op++) {
        unsigned i = rng_next(&seed) % SLOTS;
        if (p[i] != NULL) {
            check_stamp(p[i], sz[i], tag[i]);
            assert_true(anr_core_usable_size(h, p[i]) >= sz[i]);
            if (anr_core_free(h, p[i]) != ANR_ERR_NONE)
                fail_msg("op %u: free(%p) failed", op, p[i]);
            p[i] = NULL;
        } else {
            /* log-uniform between 17 KiB and 2 MiB */
            unsigned shift = rng_next(&seed) % 7; /* 17K << 0..6 = 17K..1088K */
            size_t n = (17 * KiB << shift) + rng_next(&seed) % (17 * KiB << shift);
            if (n > 2 * MiB) n = 2 * MiB;
            p[i] = anr_core_alloc(h, n, 0, 0);
            if (p[i] == NULL) fail_msg("op %u: alloc(%zu) returned NULL", op, n);
            /* Page-rounded; with thread caches a run of up to 64 KiB may
             * come from the run bin of one page more (runbins.c). */
            size_t u = anr_core_usable_size(h, p[i]), r = round_up(n, pg);
            bool one_more = o.thread_cache && r < 64 * KiB && u == r + pg;
            if (n > largest_class() && u != r && !one_more)
                fail_msg("op %u: alloc(%zu) usable %zu", op, n, u);
            sz[i] = n;
            tag[i] = op;
            stamp(p[i], n, op);
        }
        if (op % 1000 == 0) assert_verify(h);
    }
    size_t live = 0;
    for (unsigned i = 0; i < SLOTS; i++)
        if (p[i] != NULL) {
            check_stamp(p[i], sz[i], tag[i]);
            live++;
        }
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.objects_in_use, live);
    assert_int_equal(s.map_calls, 1); /* promise 1: no mapping calls after init */
    assert_true(s.pages_peak >= s.pages_in_use + s.pages_dirty);
    assert_verify(h);
    for (unsigned i = 0; i < SLOTS; i++)
        if (p[i] != NULL) assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
    s = stats_of(h);
    assert_int_equal(s.objects_in_use, 0);
    assert_int_equal(s.bytes_in_use, 0);
    assert_verify(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_large_usable_is_page_multiple),
        UNIT(test_large_pages_in_use),
        UNIT(test_coalesce_three),
        UNIT(test_coalesce_orders),
        UNIT(test_reuse_before_growing),
        UNIT(test_random_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

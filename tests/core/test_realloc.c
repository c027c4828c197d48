/* anr_core_realloc: NULL allocates, contents survive growing and shrinking,
 * in-place growth into a free neighbour and in-place shrinking of page runs,
 * staying put within a slab class, clean failure, and size 0. */
#include "core_test.h"

static void *must_realloc(anr_heap *h, void *p, size_t n)
{
    anr_error e = ANR_ERR_NONE;
    void *q = anr_core_realloc(h, p, n, &e);
    if (q == NULL) fail_msg("realloc(%p, %zu) returned NULL", p, n);
    assert_int_equal(e, ANR_ERR_NONE);
    assert_true(anr_core_usable_size(h, q) >= n);
    return q;
}

static void test_realloc_null_allocates(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    void *p = must_realloc(h, NULL, 100);
    assert_int_equal(anr_core_check(h, p), ANR_ERR_NONE);
    assert_int_equal(stats_of(h).objects_in_use, 1);
    void *q = must_realloc(h, NULL, 200 * KiB);
    assert_int_equal(stats_of(h).objects_in_use, 2);
    memset(p, 1, 100);
    memset(q, 2, 200 * KiB);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    assert_verify(h);
}

/* Contents survive every kind of move: small->small, small->large,
 * large->large, large->small; old objects do not leak. */
static void test_contents_kept(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    static const size_t steps[] = {10,      40,        1000,     5000, 100 * KiB, 1 * MiB,
                                   3 * MiB, 200 * KiB, 64 * KiB, 2000, 48,        1};
    size_t cur = 10;
    char *p = anr_core_alloc(h, cur, 0, 0);
    assert_non_null(p);
    fill_pat(p, cur, 9);
    for (size_t i = 1; i < sizeof steps / sizeof steps[0]; i++) {
        size_t n = steps[i];
        p = must_realloc(h, p, n);
        size_t keep = n < cur ? n : cur;
        check_pat(p, keep, 9);
        fill_pat(p, n, 9);
        cur = n;
        anr_core_stats s = stats_of(h);
        if (s.objects_in_use != 1)
            fail_msg("after realloc to %zu: %zu objects in use", n, s.objects_in_use);
        assert_int_equal(s.bytes_in_use, anr_core_usable_size(h, p));
        assert_verify(h);
    }
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(stats_of(h).objects_in_use, 0);
}

/* Many objects grown and shrunk at random keep their contents. */
static void test_random_resizes(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    enum { N = 32 };
    char *v[N];
    size_t sz[N];
    uint32_t seed = 777;
    for (int i = 0; i < N; i++) {
        sz[i] = 1 + rng_next(&seed) % 4096;
        v[i] = anr_core_alloc(h, sz[i], 0, 0);
        assert_non_null(v[i]);
        fill_pat(v[i], sz[i], (uint32_t)i);
    }
    for (int op = 0; op < 3000; op++) {
        int i = (int)(rng_next(&seed) % N);
        uint32_t r = rng_next(&seed);
        size_t n = r % 4 == 0 ? 1 + r % (300 * KiB) : 1 + r % 3000;
        check_pat(v[i], sz[i], (uint32_t)i);
        v[i] = must_realloc(h, v[i], n);
        check_pat(v[i], n < sz[i] ? n : sz[i], (uint32_t)i);
        fill_pat(v[i], n, (uint32_t)i);
        sz[i] = n;
    }
    for (int i = 0; i < N; i++) {
        check_pat(v[i], sz[i], (uint32_t)i);
        assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
    }
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_verify(h);
}

/* A page run followed by free space grows in place; growing into part of
 * the free neighbour leaves the rest free and reusable. */
static void test_large_grows_in_place(void **state)
{
    anr_heap *h = fx_init_runs(state); /* the neighbour must be free in the heap */
    size_t pg = sys_page(), n = min_large_pages() + 2;
    char *a = anr_core_alloc(h, n * pg, 0, 0);
    char *b = anr_core_alloc(h, 2 * n * pg, 0, 0);
    char *g = anr_core_alloc(h, n * pg, 0, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(g);
    if (b != a + n * pg) fail_msg("fresh heap: B=%p does not follow A=%p", (void *)b, (void *)a);
    fill_pat(a, n * pg, 1);
    fill_pat(g, n * pg, 3);
    assert_int_equal(anr_core_free(h, b), ANR_ERR_NONE);
    anr_core_stats s0 = stats_of(h);

    /* A takes the first half of B's free run */
    char *a2 = must_realloc(h, a, 2 * n * pg);
    if (a2 != a) fail_msg("grow into the free neighbour moved %p to %p", (void *)a, (void *)a2);
    assert_int_equal(anr_core_usable_size(h, a2), 2 * n * pg);
    check_pat(a2, n * pg, 1);
    check_pat(g, n * pg, 3);
    anr_core_stats s1 = stats_of(h);
    assert_int_equal(s1.pages_in_use, s0.pages_in_use + n);
    assert_int_equal(s1.pages_high_water, s0.pages_high_water);
    memset(a2, 0x7e, 2 * n * pg);
    check_pat(g, n * pg, 3);
    assert_verify(h);

    /* the second half is still free: an n-page object fits there */
    char *c = anr_core_alloc(h, n * pg, 0, 0);
    assert_non_null(c);
    assert_ptr_equal(c, a + 2 * n * pg);
    assert_int_equal(stats_of(h).pages_high_water, s0.pages_high_water);
    memset(c, 0x11, n * pg);

    /* and A grows all the way when both neighbours' space is free */
    assert_int_equal(anr_core_free(h, c), ANR_ERR_NONE);
    char *a3 = must_realloc(h, a2, 3 * n * pg);
    assert_ptr_equal(a3, a);
    assert_int_equal(anr_core_usable_size(h, a3), 3 * n * pg);
    check_pat(g, n * pg, 3);
    assert_verify(h);
    assert_int_equal(anr_core_free(h, a3), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, g), ANR_ERR_NONE);
    assert_verify(h);
}

/* A page run shrinks in place, and the tail is free again. */
static void test_large_shrinks_in_place(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    size_t pg = sys_page(), l0 = min_large_pages();
    size_t n = 2 * l0 + 8, m = l0 + 1; /* the tail, n - m pages, is a page run too */
    char *a = anr_core_alloc(h, n * pg, 0, 0);
    char *g = anr_core_alloc(h, l0 * pg, 0, 0);
    assert_non_null(a);
    assert_non_null(g);
    fill_pat(a, n * pg, 5);
    anr_core_stats s0 = stats_of(h);
    char *a2 = must_realloc(h, a, m * pg - 10);
    if (a2 != a) fail_msg("shrinking a page run moved %p to %p", (void *)a, (void *)a2);
    assert_int_equal(anr_core_usable_size(h, a2), m * pg);
    check_pat(a2, m * pg - 10, 5);
    anr_core_stats s1 = stats_of(h);
    assert_int_equal(s1.pages_in_use, s0.pages_in_use - (n - m));
    assert_int_equal(s1.bytes_in_use, s0.bytes_in_use - (n - m) * pg);
    assert_verify(h);
    /* the tail is reused before the heap grows */
    char *t = anr_core_alloc(h, (n - m) * pg, 0, 0);
    assert_non_null(t);
    assert_ptr_equal(t, a + m * pg);
    assert_int_equal(stats_of(h).pages_high_water, s1.pages_high_water);
    memset(t, 0, (n - m) * pg);
    check_pat(a2, m * pg - 10, 5);
    assert_verify(h);
}

/* Growing within the same slab class returns the same pointer. */
static void test_same_class_stays(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    const uint32_t *cls;
    size_t n = anr_core_default_slab_sizes(&cls);
    for (size_t i = 0; i < n; i++) {
        size_t lo = i == 0 ? 1 : (size_t)cls[i - 1] + 1;
        char *p = anr_core_alloc(h, lo, 0, 0);
        assert_non_null(p);
        fill_pat(p, lo, (uint32_t)i);
        char *q = must_realloc(h, p, cls[i]);
        if (q != p)
            fail_msg("realloc %zu -> %u (class %u) moved %p to %p", lo, (unsigned)cls[i],
                     (unsigned)cls[i], (void *)p, (void *)q);
        check_pat(q, lo, (uint32_t)i);
        assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    }
    assert_verify(h);
}

/* A realloc that fails (limit) returns NULL, leaves the object intact and
 * freeable. */
static void test_failed_realloc_keeps_object(void **state)
{
    anr_core_options o;
    test_options(&o);
    o.limit = 4 * MiB;
    anr_heap *h = fx_init(state, &o);
    char *p = anr_core_alloc(h, 1 * MiB, 0, 0);
    assert_non_null(p);
    fill_pat(p, 1 * MiB, 42);
    char *small = anr_core_alloc(h, 100, 0, 0);
    assert_non_null(small);
    fill_pat(small, 100, 43);
    anr_core_stats s0 = stats_of(h);

    anr_error e = ANR_ERR_NONE;
    assert_null(anr_core_realloc(h, p, 8 * MiB, &e));
    assert_int_equal(e, ANR_ERR_NONE);
    assert_null(anr_core_realloc(h, small, 8 * MiB, &e));
    assert_int_equal(e, ANR_ERR_NONE);
    anr_core_stats s1 = stats_of(h);
    assert_int_equal(s1.objects_in_use, s0.objects_in_use);
    assert_int_equal(s1.pages_in_use, s0.pages_in_use);
    assert_int_equal(s1.bad_pointers, 0);
    check_pat(p, 1 * MiB, 42);
    check_pat(small, 100, 43);
    assert_int_equal(anr_core_usable_size(h, p), 1 * MiB);
    assert_int_equal(anr_core_check(h, p), ANR_ERR_NONE);
    assert_verify(h);
    /* still a normal object: it can grow within the limit, then be freed */
    p = must_realloc(h, p, 2 * MiB);
    check_pat(p, 1 * MiB, 42);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, small), ANR_ERR_NONE);
    assert_verify(h);
}

/* Size 0 is not special in the engine: a valid minimal object. */
static void test_size_zero(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    char *p = anr_core_alloc(h, 100, 0, 0);
    assert_non_null(p);
    char *q = must_realloc(h, p, 0);
    assert_int_equal(anr_core_check(h, q), ANR_ERR_NONE);
    assert_int_equal(stats_of(h).objects_in_use, 1);
    char *r = must_realloc(h, q, 50);
    fill_pat(r, 50, 1);
    check_pat(r, 50, 1);
    assert_int_equal(anr_core_free(h, r), ANR_ERR_NONE);

    /* alloc(0): unique objects */
    void *z1 = anr_core_alloc(h, 0, 0, 0), *z2 = anr_core_alloc(h, 0, 0, 0);
    assert_non_null(z1);
    assert_non_null(z2);
    assert_ptr_not_equal(z1, z2);
    assert_int_equal(anr_core_check(h, z1), ANR_ERR_NONE);
    /* realloc(NULL, 0) too */
    void *z3 = must_realloc(h, NULL, 0);
    assert_ptr_not_equal(z3, z1);
    assert_ptr_not_equal(z3, z2);
    assert_int_equal(stats_of(h).objects_in_use, 3);
    assert_int_equal(anr_core_free(h, z1), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, z2), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, z3), ANR_ERR_NONE);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_verify(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_realloc_null_allocates),
        UNIT(test_contents_kept),
        UNIT(test_random_resizes),
        UNIT(test_large_grows_in_place),
        UNIT(test_large_shrinks_in_place),
        UNIT(test_same_class_stays),
        UNIT(test_failed_realloc_keeps_object),
        UNIT(test_size_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* ANR_ALLOC_ZERO: memory that was dirtied, freed and handed out again (slab
 * objects, page runs, split and coalesced runs, purged and partly purged
 * runs, slab pages turned into runs and back) always comes back zeroed. */
#include "core_test.h"

#define DIRT 0xaa

static void *zalloc(anr_heap *h, size_t n)
{
    void *p = anr_core_alloc(h, n, 0, ANR_ALLOC_ZERO);
    if (p == NULL) fail_msg("alloc(%zu, ZERO) returned NULL", n);
    check_zero(p, n);
    return p;
}

static void *dirty_alloc(anr_heap *h, size_t n)
{
    void *p = anr_core_alloc(h, n, 0, 0);
    if (p == NULL) fail_msg("alloc(%zu) returned NULL", n);
    memset(p, DIRT, anr_core_usable_size(h, p));
    return p;
}

/* Every slab class: fill a few slabs with 0xAA, free, allocate with ZERO. */
static void test_small_classes(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    const uint32_t *cls;
    size_t n = anr_core_default_slab_sizes(&cls);
    enum { K = 300 };
    void *v[K];
    for (size_t c = 0; c < n; c++) {
        size_t k = cls[c] > 4096 ? 24 : K;
        for (size_t i = 0; i < k; i++)
            v[i] = dirty_alloc(h, cls[c]);
        /* free every other one first: partly used slabs get reused */
        for (size_t i = 0; i < k; i += 2)
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        for (size_t i = 0; i < k; i += 2)
            v[i] = zalloc(h, cls[c]);
        for (size_t i = 0; i < k; i++)
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        /* smaller requests in the same class must be zero for their size */
        for (size_t i = 0; i < k; i++)
            v[i] = zalloc(h, c == 0 ? 1 : cls[c - 1] + 1);
        for (size_t i = 0; i < k; i++)
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
    }
    assert_verify(h);
}

/* Page runs: same size, split from a bigger dirty run, coalesced from
 * several dirty runs. */
static void test_large_runs(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    size_t pg = sys_page(), l0 = min_large_pages();
    char *a = dirty_alloc(h, (l0 + 10) * pg);
    char *g = dirty_alloc(h, l0 * pg);
    assert_int_equal(anr_core_free(h, a), ANR_ERR_NONE);
    char *b = zalloc(h, (l0 + 10) * pg); /* same run back */
    memset(b, DIRT, (l0 + 10) * pg);
    assert_int_equal(anr_core_free(h, b), ANR_ERR_NONE);
    char *c = zalloc(h, (l0 + 2) * pg); /* split from it */
    char *d = zalloc(h, l0 * pg + 1);
    memset(c, DIRT, (l0 + 2) * pg);
    memset(d, DIRT, anr_core_usable_size(h, d));
    assert_int_equal(anr_core_free(h, c), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, d), ANR_ERR_NONE);
    /* coalesced back: the whole run again */
    char *e = zalloc(h, (l0 + 10) * pg);
    assert_int_equal(anr_core_free(h, e), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, g), ANR_ERR_NONE);
    /* sizes that are not page multiples: the whole requested size is zero */
    for (size_t n = largest_class() + 1; n < 3 * MiB; n = n * 3 + 17) {
        void *p = dirty_alloc(h, n);
        assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
        void *q = zalloc(h, n);
        memset(q, DIRT, n);
        assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    }
    assert_verify(h);
}

/* After a purge, and with runs that are partly purged and partly dirty. */
static void test_after_purge(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    size_t pg = sys_page(), l0 = min_large_pages(), n = 2 * l0 + 8;
    char *a = dirty_alloc(h, n * pg);
    char *g = dirty_alloc(h, l0 * pg);
    assert_int_equal(anr_core_free(h, a), ANR_ERR_NONE);
    anr_core_purge(h, true);
    assert_int_equal(stats_of(h).pages_dirty, 0);
    char *b = zalloc(h, n * pg);
    assert_int_equal(anr_core_free(h, b), ANR_ERR_NONE); /* clean: never written */
    anr_core_purge(h, true);
    /* dirty the front half only, then ask for the whole run */
    char *c = dirty_alloc(h, (l0 + 1) * pg);
    assert_int_equal(anr_core_free(h, c), ANR_ERR_NONE);
    char *d = zalloc(h, n * pg);
    /* and the back part only */
    memset(d + (l0 + 1) * pg, DIRT, (n - l0 - 1) * pg);
    assert_int_equal(anr_core_free(h, d), ANR_ERR_NONE);
    char *e = zalloc(h, n * pg);
    assert_int_equal(anr_core_free(h, e), ANR_ERR_NONE);
    anr_core_purge(h, true);
    char *x = dirty_alloc(h, (l0 + 1) * pg);
    char *y = dirty_alloc(h, (l0 + 1) * pg);
    assert_int_equal(anr_core_free(h, x), ANR_ERR_NONE);
    char *z = zalloc(h, (l0 + 1) * pg); /* x's dirty pages */
    assert_int_equal(anr_core_free(h, z), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, y), ANR_ERR_NONE);
    char *w = zalloc(h, n * pg);
    assert_int_equal(anr_core_free(h, w), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, g), ANR_ERR_NONE);
    assert_verify(h);
}

/* Slab pages released and reused as page runs, and runs reused as slabs. */
static void test_slab_pages_become_runs(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    size_t pg = sys_page(), l0 = min_large_pages();
    enum { K = 2000 };
    static void *v[K];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < K; i++)
            v[i] = dirty_alloc(h, 16 + (size_t)(i % 8) * 48);
        for (int i = 0; i < K; i++)
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        /* the freed slab pages, as runs */
        void *r[16];
        for (int i = 0; i < 16; i++)
            r[i] = zalloc(h, (l0 + (size_t)i % 3) * pg);
        for (int i = 0; i < 16; i++)
            memset(r[i], DIRT, anr_core_usable_size(h, r[i]));
        for (int i = 0; i < 16; i++)
            assert_int_equal(anr_core_free(h, r[i]), ANR_ERR_NONE);
        /* and those runs' pages as slabs again */
        for (int i = 0; i < K; i++)
            v[i] = zalloc(h, 16 + (size_t)(i % 8) * 48);
        for (int i = 0; i < K; i++) {
            memset(v[i], DIRT, 16 + (size_t)(i % 8) * 48);
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        }
        assert_verify(h);
    }
}

/* Random mix of dirty and zeroed allocations, sizes 0..64 KiB, with
 * occasional purges: every zeroed allocation is zero. */
static void test_random_mix(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    enum { SLOTS = 128, OPS = 20000 };
    void *v[SLOTS] = {0};
    uint32_t seed = 31337;
    for (int op = 0; op < OPS; op++) {
        unsigned i = rng_next(&seed) % SLOTS;
        if (v[i] != NULL) {
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
            v[i] = NULL;
            continue;
        }
        uint32_t r = rng_next(&seed);
        size_t n = r % 8 == 0 ? r % (64 * KiB) : r % 600;
        if (r & 0x100) {
            v[i] = zalloc(h, n);
            memset(v[i], DIRT, anr_core_usable_size(h, v[i]));
        } else {
            v[i] = dirty_alloc(h, n);
        }
        if (op % 2500 == 0) anr_core_purge(h, op % 5000 == 0);
    }
    for (unsigned i = 0; i < SLOTS; i++)
        if (v[i] != NULL) assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
    assert_verify(h);
}

/* Size 0 with ZERO: a valid minimal object. */
static void test_size_zero(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    void *p = anr_core_alloc(h, 0, 0, ANR_ALLOC_ZERO);
    void *q = anr_core_alloc(h, 0, 0, ANR_ALLOC_ZERO);
    assert_non_null(p);
    assert_non_null(q);
    assert_ptr_not_equal(p, q);
    assert_int_equal(anr_core_check(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    /* and with an alignment */
    void *r = anr_core_alloc(h, 0, 4096, ANR_ALLOC_ZERO);
    assert_non_null(r);
    assert_true(is_aligned(r, 4096));
    assert_int_equal(anr_core_free(h, r), ANR_ERR_NONE);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_verify(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_small_classes),          UNIT(test_large_runs), UNIT(test_after_purge),
        UNIT(test_slab_pages_become_runs), UNIT(test_random_mix), UNIT(test_size_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

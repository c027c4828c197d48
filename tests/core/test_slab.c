/* Small objects: the slab classes, their usable sizes, placement, page
 * accounting, custom SLAB_SIZES and their validation. */
#include "core_test.h"

#include <errno.h>
#include <stdlib.h>

static size_t default_classes(const uint32_t **cls)
{
    size_t n = anr_core_default_slab_sizes(cls);
    assert_true(n >= 1);
    assert_true(n <= ANR_MAX_CLASSES);
    assert_non_null(*cls);
    return n;
}

/* The built-in classes obey the rules that custom ones must obey. */
static void test_default_classes_are_sane(void **state)
{
    (void)state;
    const uint32_t *cls;
    size_t n = default_classes(&cls);
    size_t al = anr_core_alignment();
    for (size_t i = 0; i < n; i++) {
        assert_true(cls[i] > 0);
        assert_int_equal(cls[i] % al, 0);
        assert_true(cls[i] <= ANR_SLAB_MAX_SIZE);
        if (i > 0) assert_true(cls[i] > cls[i - 1]);
    }
}

/* A request of exactly a class size, and of the previous class + 1, both get
 * exactly that class as usable size. */
static void test_usable_size_is_class_size(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    const uint32_t *cls;
    size_t n = default_classes(&cls);
    for (size_t i = 0; i < n; i++) {
        size_t lo = i == 0 ? 1 : (size_t)cls[i - 1] + 1;
        size_t reqs[2] = {cls[i], lo};
        for (int k = 0; k < 2; k++) {
            void *p = anr_core_alloc(h, reqs[k], 0, 0);
            if (p == NULL) fail_msg("alloc(%zu) returned NULL", reqs[k]);
            size_t u = anr_core_usable_size(h, p);
            if (u != cls[i])
                fail_msg("alloc(%zu): usable size %zu, expected class %u", reqs[k], u,
                         (unsigned)cls[i]);
            memset(p, 0x5a, u);
            assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
        }
    }
    assert_verify(h);
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* Many objects of one class: distinct, non-overlapping, aligned, writable. */
static void check_many(anr_heap *h, size_t size, size_t count)
{
    void **v = calloc(count, sizeof *v);
    assert_non_null(v);
    size_t al = anr_core_alignment();
    for (size_t i = 0; i < count; i++) {
        v[i] = anr_core_alloc(h, size, 0, 0);
        if (v[i] == NULL) fail_msg("alloc #%zu of %zu bytes returned NULL", i, size);
        if (!is_aligned(v[i], al)) fail_msg("%p is not %zu-aligned", v[i], al);
        assert_true(anr_core_owns(h, v[i]));
        fill_pat(v[i], size, (uint32_t)i);
    }
    for (size_t i = 0; i < count; i++)
        check_pat(v[i], size, (uint32_t)i);
    /* index order is lost by sorting: check overlap on the sorted copy */
    void **s = malloc(count * sizeof *s);
    assert_non_null(s);
    memcpy(s, v, count * sizeof *s);
    qsort(s, count, sizeof *s, cmp_ptr);
    for (size_t i = 1; i < count; i++) {
        uintptr_t end = (uintptr_t)s[i - 1] + anr_core_usable_size(h, s[i - 1]);
        if (end > (uintptr_t)s[i])
            fail_msg("objects %p (usable %zu) and %p overlap", s[i - 1],
                     anr_core_usable_size(h, s[i - 1]), s[i]);
    }
    free(s);
    for (size_t i = 0; i < count; i++)
        assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
    free(v);
}

static void test_many_objects_distinct_aligned(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    const uint32_t *cls;
    size_t n = default_classes(&cls);
    /* smallest, a middle one and the largest class, more than one slab each */
    check_many(h, cls[0], 3 * ANR_SLAB_MAX_OBJECTS + 7);
    check_many(h, cls[n / 2], 2 * ANR_SLAB_MAX_OBJECTS + 3);
    check_many(h, cls[n - 1], 40);
    check_many(h, 1, 1000);
    assert_verify(h);
}

/* A class above a page packs its slabs as tightly as slabs of 1 to 16
 * pages can: 4096 objects of it take no more pages than the least wasteful
 * of those would (plus the last slab's unused room). At 1/16, 4608-byte
 * objects took 6 pages per 5 (6.7% more); at 1/64, 8 per 7 (1.6%). */
static void test_big_classes_pack_tightly(void **state)
{
    anr_core_options o;
    test_options(&o);
    o.thread_cache = false; /* pages_in_use counts slabs as they are cut */
    anr_heap *h = fx_init(state, &o);
    const uint32_t *cls;
    size_t n = default_classes(&cls);
    size_t page = stats_of(h).page_size;
    /* Enough that a slab geometry 0.7% worse than the best (4416 in 12
     * pages instead of 13) shows past the last slab's room. */
    enum { N = 4096 };
    void **v = calloc(N, sizeof *v);
    assert_non_null(v);
    for (size_t c = 0; c < n; c++) {
        if (cls[c] <= page)
            continue;
        size_t before = stats_of(h).pages_in_use;
        for (unsigned i = 0; i < N; i++)
            assert_non_null(v[i] = anr_core_alloc(h, cls[c], 0, 0));
        size_t bytes = (stats_of(h).pages_in_use - before) * page;
        /* The least wasteful slab of 1 to 16 pages: bytes per object. */
        double best = 0;
        for (size_t k = 1; k <= 16; k++) {
            size_t fit = k * page / cls[c];
            if (fit && (best == 0 || (double)(k * page) / (double)fit < best))
                best = (double)(k * page) / (double)fit;
        }
        size_t bound = (size_t)((double)N * best) + 16 * page;
        if (bytes > bound)
            fail_msg("class %u: %zu objects in %zu bytes of slabs (at most %zu)",
                     (unsigned)cls[c], (size_t)N, bytes, bound);
        for (unsigned i = 0; i < N; i++)
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
    }
    free(v);
    assert_verify(h);
}

/* Freeing every object of a class gives its slab pages back: pages_in_use
 * drops (at most one empty slab may be kept as a spare), and the pages freed
 * show up as dirty or purged. Objects/bytes in use follow along. */
static void test_free_all_returns_pages(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    const uint32_t *cls;
    size_t n = default_classes(&cls);
    /* A thread cache keeps up to 3 slabs and its bin's (see below; for the
     * big classes, whose slabs hold one object, a slab per binned object):
     * with caches, go to 72 slabs so that freeing all must give pages back. */
    bool tc = getenv("ANR_TEST_THREAD_CACHE") && *getenv("ANR_TEST_THREAD_CACHE") == '1';
    const size_t want_slabs = tc ? 72 : 4;
    const size_t cap = (want_slabs - 1) * ANR_SLAB_MAX_OBJECTS + 1;
    void **v = calloc(cap, sizeof *v);
    assert_non_null(v);
    for (size_t c = 0; c < n; c++) {
        anr_core_stats base = stats_of(h);
        size_t count = 0, slabs = 0, max_slab_pages = 0, last = base.pages_in_use;
        while (count < cap && slabs < want_slabs) {
            v[count] = anr_core_alloc(h, cls[c], 0, 0);
            if (v[count] == NULL) fail_msg("class %u: alloc #%zu failed", (unsigned)cls[c], count);
            memset(v[count], 0xc3, cls[c]);
            count++;
            anr_core_stats s = stats_of(h);
            if (s.pages_in_use > last) {
                slabs++;
                if (s.pages_in_use - last > max_slab_pages) max_slab_pages = s.pages_in_use - last;
            }
            last = s.pages_in_use;
        }
        if (slabs < want_slabs)
            fail_msg("class %u: %zu objects (cap %d per slab) grew pages_in_use only %zu times",
                     (unsigned)cls[c], count, ANR_SLAB_MAX_OBJECTS, slabs);

        anr_core_stats full = stats_of(h);
        assert_int_equal(full.objects_in_use, base.objects_in_use + count);
        assert_int_equal(full.bytes_in_use, base.bytes_in_use + count * cls[c]);

        for (size_t i = 0; i < count; i++)
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        anr_core_stats after = stats_of(h);
        assert_int_equal(after.objects_in_use, base.objects_in_use);
        assert_int_equal(after.bytes_in_use, base.bytes_in_use);
        /* A thread cache keeps its current slab, one empty spare and the
         * slabs of the objects its bin holds: the last ones freed, at most
         * 64, which here (freed in order) fill 64 / objects-per-slab slabs
         * plus one they straddle into. */
        size_t per_slab = max_slab_pages * after.page_size / cls[c];
        size_t kept = tc ? (3 + 64 / per_slab) * max_slab_pages : max_slab_pages;
        if (after.pages_in_use > base.pages_in_use + kept)
            fail_msg("class %u: pages_in_use %zu after freeing all, was %zu before (slab: %zu "
                     "pages)",
                     (unsigned)cls[c], after.pages_in_use, base.pages_in_use, max_slab_pages);
        assert_true(after.pages_in_use < full.pages_in_use);
        /* Every page that left pages_in_use became dirty or was purged. A
         * purge may also take pages that were dirty before (past the
         * ceiling it drains to the floor), so dirty may fall: the sum of
         * the two changes is what must match. */
        size_t dropped = full.pages_in_use - after.pages_in_use;
        int64_t gone = (int64_t)after.pages_dirty - (int64_t)full.pages_dirty +
                       (int64_t)(after.pages_purged - full.pages_purged);
        if (gone != (int64_t)dropped)
            fail_msg("class %u: pages_in_use fell by %zu but pages_dirty went %zu -> %zu and "
                     "pages_purged %llu -> %llu",
                     (unsigned)cls[c], dropped, full.pages_dirty, after.pages_dirty,
                     (unsigned long long)full.pages_purged, (unsigned long long)after.pages_purged);
        assert_verify(h);
    }
    free(v);
}

/* objects_in_use and bytes_in_use follow single allocations and frees. */
static void test_object_stats_follow(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    anr_core_stats s0 = stats_of(h);
    assert_int_equal(s0.objects_in_use, 0);
    assert_int_equal(s0.bytes_in_use, 0);
    assert_int_equal(s0.pages_in_use, 0);
    assert_int_equal(s0.page_size, sys_page());
    assert_int_equal(s0.mapping_size, TEST_MAPPING);
    assert_int_equal(s0.map_calls, 1);

    void *p[10];
    size_t want = 0;
    for (int i = 0; i < 10; i++) {
        p[i] = anr_core_alloc(h, (size_t)(i * 37 + 1), 0, 0);
        assert_non_null(p[i]);
        want += anr_core_usable_size(h, p[i]);
        anr_core_stats s = stats_of(h);
        assert_int_equal(s.objects_in_use, (size_t)i + 1);
        assert_int_equal(s.bytes_in_use, want);
        assert_true(s.pages_in_use >= 1);
        assert_true(s.metadata_bytes > 0);
    }
    for (int i = 9; i >= 0; i--) {
        want -= anr_core_usable_size(h, p[i]);
        assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
        anr_core_stats s = stats_of(h);
        assert_int_equal(s.objects_in_use, (size_t)i);
        assert_int_equal(s.bytes_in_use, want);
    }
    assert_verify(h);
}

/* Custom SLAB_SIZES through options.slab_sizes are the classes used. */
static void test_custom_classes(void **state)
{
    static const uint32_t custom[] = {16, 48, 200 * 16};
    anr_core_options o;
    test_options(&o);
    o.slab_sizes = custom;
    o.n_slab_sizes = 3;
    anr_heap *h = fx_init(state, &o);
    static const struct {
        size_t req, usable;
    } cases[] = {{1, 16}, {16, 16}, {17, 48}, {48, 48}, {49, 3200}, {1000, 3200}, {3200, 3200}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        void *p = anr_core_alloc(h, cases[i].req, 0, 0);
        assert_non_null(p);
        size_t u = anr_core_usable_size(h, p);
        if (u != cases[i].usable)
            fail_msg("custom classes {16,48,3200}: alloc(%zu) usable %zu, expected %zu",
                     cases[i].req, u, cases[i].usable);
        memset(p, 0x11, u);
        assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    }
    /* past the largest class: a page run */
    void *p = anr_core_alloc(h, 3201, 0, 0);
    assert_non_null(p);
    assert_int_equal(anr_core_usable_size(h, p), round_up(3201, sys_page()));
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_verify(h);
}

/* The largest allowed class is accepted and used. */
static void test_custom_class_at_max(void **state)
{
    static const uint32_t custom[] = {16, ANR_SLAB_MAX_SIZE};
    anr_core_options o;
    test_options(&o);
    o.slab_sizes = custom;
    o.n_slab_sizes = 2;
    anr_heap *h = fx_init(state, &o);
    void *p = anr_core_alloc(h, 17, 0, 0);
    assert_non_null(p);
    assert_int_equal(anr_core_usable_size(h, p), ANR_SLAB_MAX_SIZE);
    void *q = anr_core_alloc(h, ANR_SLAB_MAX_SIZE, 0, 0);
    assert_non_null(q);
    assert_int_equal(anr_core_usable_size(h, q), ANR_SLAB_MAX_SIZE);
    memset(p, 1, ANR_SLAB_MAX_SIZE);
    memset(q, 2, ANR_SLAB_MAX_SIZE);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    assert_verify(h);
}

static void expect_einval(const uint32_t *sizes, size_t n, const char *what)
{
    anr_core_options o;
    test_options(&o);
    o.slab_sizes = sizes;
    o.n_slab_sizes = n;
    anr_heap *h = NULL;
    int rc = anr_core_init(&h, &o);
    if (rc != EINVAL) {
        if (rc == 0 && h != NULL) anr_core_destroy(h);
        fail_msg("slab sizes %s: anr_core_init returned %d, expected EINVAL", what, rc);
    }
}

static void test_bad_custom_classes(void **state)
{
    (void)state;
    uint32_t al = (uint32_t)anr_core_alignment();
    uint32_t not_mult[] = {al, 2 * al + al / 2};
    static const uint32_t decreasing[] = {64, 32};
    static const uint32_t repeated[] = {16, 32, 32, 48};
    static const uint32_t too_big[] = {16, ANR_SLAB_MAX_SIZE + 16};
    uint32_t too_many[ANR_MAX_CLASSES + 1];
    for (size_t i = 0; i < ANR_MAX_CLASSES + 1; i++)
        too_many[i] = (uint32_t)(16 * (i + 1));
    expect_einval(not_mult, 2, "not a multiple of the alignment");
    expect_einval(decreasing, 2, "{64, 32}");
    expect_einval(repeated, 4, "{16, 32, 32, 48}");
    expect_einval(too_big, 2, "> ANR_SLAB_MAX_SIZE");
    expect_einval(too_many, ANR_MAX_CLASSES + 1, "more than ANR_MAX_CLASSES");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_default_classes_are_sane),      UNIT(test_usable_size_is_class_size),
        UNIT(test_many_objects_distinct_aligned), UNIT(test_free_all_returns_pages),
        UNIT(test_big_classes_pack_tightly),
        UNIT(test_object_stats_follow),           UNIT(test_custom_classes),
        UNIT(test_custom_class_at_max),           UNIT(test_bad_custom_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

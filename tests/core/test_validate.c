/* Pointer validation: NULL, foreign, double and interior pointers given to
 * free, realloc and usable_size are reported once through on_error, with
 * the right error, operation and pointer, and never corrupt the heap. */
#include "core_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct err_log {
    int calls;
    anr_error err;
    anr_op op;
    const void *ptr;
} err_log;

static err_log elog;

static void on_error(void *ctx, anr_error err, anr_op op, const void *ptr)
{
    err_log *l = ctx;
    l->calls++;
    l->err = err;
    l->op = op;
    l->ptr = ptr;
}

static const char *err_name(anr_error e)
{
    switch (e) {
    case ANR_ERR_NONE:
        return "NONE";
    case ANR_ERR_DOUBLE_FREE:
        return "DOUBLE_FREE";
    case ANR_ERR_NOT_AN_OBJECT:
        return "NOT_AN_OBJECT";
    case ANR_ERR_FOREIGN:
        return "FOREIGN";
    case ANR_ERR_DEFERRED_LIST:
        return "DEFERRED_LIST";
    }
    return "?";
}

static anr_heap *checked_heap(void **state)
{
    anr_core_options o;
    test_options(&o);
    o.hooks.on_error = on_error;
    o.hooks.ctx = &elog;
    memset(&elog, 0, sizeof elog);
    return fx_init(state, &o);
}

/* The hook was called exactly once since the last reset, with these. */
static void expect_report(const char *what, anr_error err, anr_op op, const void *ptr)
{
    if (elog.calls != 1) fail_msg("%s: on_error called %d times, expected once", what, elog.calls);
    if (elog.err != err || elog.op != op || elog.ptr != ptr)
        fail_msg("%s: on_error(%s, op %d, %p), expected (%s, op %d, %p)", what, err_name(elog.err),
                 (int)elog.op, elog.ptr, err_name(err), (int)op, ptr);
    memset(&elog, 0, sizeof elog);
}

/* free(ptr) returns `err` and reports it once. */
static void expect_bad_free(anr_heap *h, void *ptr, anr_error err, const char *what)
{
    uint64_t bad0 = stats_of(h).bad_pointers;
    anr_error got = anr_core_free(h, ptr);
    if (got != err)
        fail_msg("free(%s %p) returned %s, expected %s", what, ptr, err_name(got), err_name(err));
    expect_report(what, err, ANR_OP_FREE, ptr);
    assert_int_equal(stats_of(h).bad_pointers, bad0 + 1);
    assert_int_equal(anr_core_check(h, ptr), err);
    assert_int_equal(elog.calls, 0); /* check() does not report */
    assert_verify(h);
}

/* realloc(ptr) and usable_size(ptr) report `err` and change nothing. */
static void expect_bad_realloc_usable(anr_heap *h, void *ptr, anr_error err, const char *what)
{
    anr_core_stats s0 = stats_of(h);
    anr_error e = ANR_ERR_NONE;
    void *r = anr_core_realloc(h, ptr, 100, &e);
    if (r != NULL) fail_msg("realloc(%s %p) returned %p, expected NULL", what, ptr, r);
    if (e != err) fail_msg("realloc(%s): *err %s, expected %s", what, err_name(e), err_name(err));
    expect_report(what, err, ANR_OP_REALLOC, ptr);
    /* err may be NULL */
    assert_null(anr_core_realloc(h, ptr, 100, NULL));
    expect_report(what, err, ANR_OP_REALLOC, ptr);

    size_t u = anr_core_usable_size(h, ptr);
    if (u != 0) fail_msg("usable_size(%s %p) = %zu, expected 0", what, ptr, u);
    expect_report(what, err, ANR_OP_USABLE_SIZE, ptr);

    anr_core_stats s1 = stats_of(h);
    assert_int_equal(s1.bad_pointers, s0.bad_pointers + 3);
    assert_int_equal(s1.objects_in_use, s0.objects_in_use);
    assert_int_equal(s1.bytes_in_use, s0.bytes_in_use);
    assert_int_equal(s1.pages_in_use, s0.pages_in_use);
    assert_verify(h);
}

static void test_free_null(void **state)
{
    anr_heap *h = checked_heap(state);
    assert_int_equal(anr_core_free(h, NULL), ANR_ERR_NONE);
    assert_int_equal(elog.calls, 0);
    assert_int_equal(anr_core_usable_size(h, NULL), 0);
    assert_int_equal(elog.calls, 0);
    assert_int_equal(stats_of(h).bad_pointers, 0);
    assert_false(anr_core_owns(h, NULL));
}

static void test_foreign(void **state)
{
    anr_heap *h = checked_heap(state);
    void *live = anr_core_alloc(h, 64, 0, 0);
    assert_non_null(live);
    fill_pat(live, 64, 1);
    char stack_buf[64];
    void *stack = stack_buf;
    void *m = malloc(64);
    assert_non_null(m);
    assert_false(anr_core_owns(h, stack));
    assert_false(anr_core_owns(h, m));
    assert_true(anr_core_owns(h, live));
    expect_bad_free(h, stack, ANR_ERR_FOREIGN, "stack address");
    expect_bad_free(h, m, ANR_ERR_FOREIGN, "glibc malloc pointer");
    expect_bad_realloc_usable(h, stack, ANR_ERR_FOREIGN, "stack address");
    expect_bad_realloc_usable(h, m, ANR_ERR_FOREIGN, "glibc malloc pointer");
    free(m);
    check_pat(live, 64, 1);
    assert_int_equal(anr_core_free(h, live), ANR_ERR_NONE);
    assert_int_equal(elog.calls, 0);
}

static void test_double_free_small(void **state)
{
    anr_heap *h = checked_heap(state);
    /* a neighbour keeps the slab alive */
    char *keep = anr_core_alloc(h, 48, 0, 0);
    char *p = anr_core_alloc(h, 48, 0, 0);
    assert_non_null(keep);
    assert_non_null(p);
    fill_pat(keep, 48, 7);
    assert_int_equal(anr_core_check(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(elog.calls, 0);
    uint64_t objs = stats_of(h).objects_in_use;
    expect_bad_free(h, p, ANR_ERR_DOUBLE_FREE, "freed small object");
    expect_bad_realloc_usable(h, p, ANR_ERR_DOUBLE_FREE, "freed small object");
    assert_int_equal(stats_of(h).objects_in_use, objs);
    /* the slot is not handed out twice: two new objects are distinct */
    char *a = anr_core_alloc(h, 48, 0, 0), *b = anr_core_alloc(h, 48, 0, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_ptr_not_equal(a, keep);
    assert_ptr_not_equal(b, keep);
    check_pat(keep, 48, 7);
    assert_int_equal(anr_core_free(h, a), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, b), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, keep), ANR_ERR_NONE);
    assert_int_equal(elog.calls, 0);
    assert_verify(h);
}

static void test_double_free_large(void **state)
{
    anr_heap *h = checked_heap(state);
    size_t pg = sys_page(), n = min_large_pages() + 4; /* a page run */
    /* guards on both sides: the freed run does not merge with free space */
    char *g1 = anr_core_alloc(h, n * pg, 0, 0);
    char *p = anr_core_alloc(h, (n + 3) * pg, 0, 0);
    char *g2 = anr_core_alloc(h, n * pg, 0, 0);
    assert_non_null(g1);
    assert_non_null(p);
    assert_non_null(g2);
    fill_pat(g1, n * pg, 1);
    fill_pat(g2, n * pg, 2);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    expect_bad_free(h, p, ANR_ERR_DOUBLE_FREE, "freed large object");
    expect_bad_realloc_usable(h, p, ANR_ERR_DOUBLE_FREE, "freed large object");
    check_pat(g1, n * pg, 1);
    check_pat(g2, n * pg, 2);
    /* the run is reusable exactly once */
    char *q = anr_core_alloc(h, (n + 3) * pg, 0, 0);
    assert_non_null(q);
    memset(q, 0x55, (n + 3) * pg);
    check_pat(g1, n * pg, 1);
    check_pat(g2, n * pg, 2);
    assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, g1), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, g2), ANR_ERR_NONE);
    assert_int_equal(elog.calls, 0);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_verify(h);
}

static void test_interior_pointers(void **state)
{
    anr_heap *h = checked_heap(state);
    size_t pg = sys_page(), n = min_large_pages() + 3; /* a page run */
    char *s = anr_core_alloc(h, 64, 0, 0);
    char *l = anr_core_alloc(h, n * pg, 0, 0);
    assert_non_null(s);
    assert_non_null(l);
    fill_pat(s, 64, 3);
    fill_pat(l, n * pg, 4);

    expect_bad_free(h, s + 8, ANR_ERR_NOT_AN_OBJECT, "small object + 8");
    expect_bad_free(h, l + pg, ANR_ERR_NOT_AN_OBJECT, "large object + page");
    expect_bad_free(h, l + 100, ANR_ERR_NOT_AN_OBJECT, "large object + 100");
    expect_bad_realloc_usable(h, s + 8, ANR_ERR_NOT_AN_OBJECT, "small object + 8");
    expect_bad_realloc_usable(h, l + pg, ANR_ERR_NOT_AN_OBJECT, "large object + page");
    expect_bad_realloc_usable(h, l + 100, ANR_ERR_NOT_AN_OBJECT, "large object + 100");

    /* inside the mapping but in the metadata (the heap struct lives there) */
    if (anr_core_owns(h, h)) expect_bad_free(h, (void *)h, ANR_ERR_NOT_AN_OBJECT, "heap struct");

    /* inside the mapping, in pages never handed out */
    char *far = (char *)((uintptr_t)l + 64 * MiB);
    if (!anr_core_owns(h, far)) far = (char *)((uintptr_t)l - 64 * MiB);
    assert_true(anr_core_owns(h, far));
    expect_bad_free(h, far, ANR_ERR_NOT_AN_OBJECT, "unused page of the mapping");

    check_pat(s, 64, 3);
    check_pat(l, n * pg, 4);
    assert_int_equal(anr_core_usable_size(h, s), 64);
    assert_int_equal(anr_core_usable_size(h, l), n * pg);
    assert_int_equal(anr_core_check(h, s), ANR_ERR_NONE);
    assert_int_equal(anr_core_check(h, l), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, s), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, l), ANR_ERR_NONE);
    assert_int_equal(elog.calls, 0);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_verify(h);
}

/* --- bad frees while another thread holds the heap lock --- */

/* A walk holds the heap lock while it visits; this visitor keeps it until
 * told to let go. */
typedef struct holder {
    anr_heap *h;
    atomic_int holding, release;
} holder;

static bool hold_lock(void *ctx, void *ptr, size_t usable)
{
    (void)ptr;
    (void)usable;
    holder *k = ctx;
    atomic_store(&k->holding, 1);
    while (!atomic_load(&k->release))
        ;
    return false; /* stop the walk */
}

static void *hold_thread(void *v)
{
    holder *k = v;
    anr_core_walk(k->h, NULL, hold_lock, k);
    return NULL;
}

/* A free that finds the lock busy queues the object for the lock holder,
 * which writes a link and the free key into it. A bad pointer must be
 * reported there and then and never queued: queued, it wrote into a live
 * object (a pointer into a large one's second page) or into a handed-back
 * page, which calloc then returned as zero without clearing it. A good
 * pointer is still queued and freed by the lock holder. */
static void test_bad_frees_while_lock_busy(void **state)
{
    anr_heap *h = checked_heap(state);
    /* Runs past the thread caches' run bins (64 KiB): the frees reach the lock. */
    size_t pg = sys_page(), n = min_large_pages() + 64 * KiB / pg;
    char *s = anr_core_alloc(h, 64, 0, 0), *l = anr_core_alloc(h, n * pg, 0, 0);
    char *gap = anr_core_alloc(h, n * pg, 0, 0), *dirty = anr_core_alloc(h, n * pg, 0, 0);
    char *gap2 = anr_core_alloc(h, n * pg, 0, 0), *clean = anr_core_alloc(h, n * pg, 0, 0);
    char *gap3 = anr_core_alloc(h, n * pg, 0, 0), *good = anr_core_alloc(h, n * pg, 0, 0);
    assert_true(s && l && gap && dirty && gap2 && clean && gap3 && good);
    fill_pat(s, 64, 5);
    fill_pat(l, n * pg, 6);
    anr_core_free(h, clean);
    anr_core_purge(h, true); /* clean's pages go back: they read as zero */
    anr_core_free(h, dirty);
    uint64_t deferred0 = stats_of(h).deferred_frees, bad0 = stats_of(h).bad_pointers;

    holder k = {h, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_thread, &k), 0);
    while (!atomic_load(&k.holding))
        ;
    anr_error e[5] = {
        anr_core_free(h, l + pg), anr_core_free(h, s + 16), anr_core_free(h, dirty),
        anr_core_free(h, clean), anr_core_free(h, good),
    };
    int reports = elog.calls;
    atomic_store(&k.release, 1);
    assert_int_equal(pthread_join(t, NULL), 0);

    assert_int_equal(e[0], ANR_ERR_NOT_AN_OBJECT);
    assert_int_equal(e[1], ANR_ERR_NOT_AN_OBJECT);
    assert_int_equal(e[2], ANR_ERR_DOUBLE_FREE);
    assert_int_equal(e[3], ANR_ERR_DOUBLE_FREE);
    assert_int_equal(e[4], ANR_ERR_NONE);
    if (reports != 4)
        fail_msg("%d reports while the lock was busy, expected 4 (one per bad free)", reports);
    check_pat(l, n * pg, 6);
    check_pat(s, 64, 5);
    check_zero(clean, n * pg);
    anr_core_stats st = stats_of(h); /* takes the lock: the good free is drained */
    assert_int_equal(st.deferred_frees, deferred0 + 1);
    assert_int_equal(st.bad_pointers, bad0 + 4);
    assert_int_equal(elog.calls, 4);
    assert_int_equal(anr_core_check(h, good), ANR_ERR_DOUBLE_FREE);
    char *z = anr_core_alloc(h, n * pg, 0, ANR_ALLOC_ZERO);
    assert_non_null(z);
    check_zero(z, n * pg);
    anr_core_free(h, z);
    anr_core_free(h, s);
    anr_core_free(h, l);
    anr_core_free(h, gap);
    anr_core_free(h, gap2);
    anr_core_free(h, gap3);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_verify(h);
}

/* The holder frees what was queued while it held the lock as it lets go:
 * no later call has to come by (a queued free that waited for a stats or
 * verify call, which drain everything, would keep its memory from every
 * malloc meanwhile). A malloc takes the lock without draining them all. */
static void test_queued_free_done_at_unlock(void **state)
{
    anr_heap *h = checked_heap(state);
    size_t pg = sys_page(), n = min_large_pages() + 64 * KiB / pg;
    char *a = anr_core_alloc(h, n * pg, 0, 0);
    assert_non_null(a);
    uint64_t deferred0 = stats_of(h).deferred_frees;
    holder k = {h, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_thread, &k), 0);
    while (!atomic_load(&k.holding))
        ;
    assert_int_equal(anr_core_free(h, a), ANR_ERR_NONE); /* queued */
    atomic_store(&k.release, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* Its run is free again: the next malloc of its size takes it. (With
     * thread caches a queued object carries the free key, so a check
     * would call it freed either way: the run's reuse tells.) */
    char *b = anr_core_alloc(h, n * pg, 0, 0);
    if (b != a)
        fail_msg("the free queued while the lock was held was not done at the unlock "
                 "(a malloc of its size got %p, not its run %p)", (void *)b, (void *)a);
    assert_int_equal(stats_of(h).deferred_frees, deferred0 + 1);
    anr_core_free(h, b);
    assert_verify(h);
}

/* check() says what a pointer is without reporting it. */
/* Every 8-byte step inside every object of the first two slabs of every
 * default class is refused by check() and by free() (with caches on, the
 * inline free decides first: a wrong "slot start" there would bin an
 * interior pointer), and every object start is accepted. This pins the
 * engine's divide-free slot arithmetic to exact division, for each size. */
static void test_every_offset_of_every_class(void **state)
{
    anr_heap *h = checked_heap(state);
    const uint32_t *sizes;
    size_t nsizes = anr_core_default_slab_sizes(&sizes);
    enum { MAX_OBJS = 512 };
    static char *obj[MAX_OBJS];
    size_t pg = sys_page();
    for (size_t c = 0; c < nsizes; c++) {
        size_t size = sizes[c];
        /* Two slabs' worth: a slab holds at most 16 pages. */
        size_t n = 2 * (16 * pg / size + 1);
        if (n > MAX_OBJS)
            n = MAX_OBJS;
        for (size_t i = 0; i < n; i++) {
            obj[i] = anr_core_alloc(h, size, 0, 0);
            assert_non_null(obj[i]);
            fill_pat(obj[i], size, (unsigned)i);
        }
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(anr_core_check(h, obj[i]), ANR_ERR_NONE);
            for (size_t off = 8; off < size; off += 8) {
                if (anr_core_check(h, obj[i] + off) != ANR_ERR_NOT_AN_OBJECT)
                    fail_msg("class %zu: check(object + %zu) accepted", size, off);
                if (anr_core_free(h, obj[i] + off) != ANR_ERR_NOT_AN_OBJECT)
                    fail_msg("class %zu: free(object + %zu) accepted", size, off);
            }
            if (elog.calls != (int)(size / 8 - 1))
                fail_msg("class %zu: %d reports, expected %zu", size, elog.calls, size / 8 - 1);
            memset(&elog, 0, sizeof elog);
        }
        for (size_t i = 0; i < n; i++) {
            check_pat(obj[i], size, (unsigned)i);
            assert_int_equal(anr_core_free(h, obj[i]), ANR_ERR_NONE);
        }
        assert_int_equal(elog.calls, 0);
    }
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_verify(h);
}

static void test_check_does_not_report(void **state)
{
    anr_heap *h = checked_heap(state);
    char *p = anr_core_alloc(h, 200, 0, 0);
    char *q = anr_core_alloc(h, 200, 0, 0);
    assert_non_null(p);
    assert_non_null(q);
    char stack_buf[16];
    assert_int_equal(anr_core_check(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_check(h, p + 8), ANR_ERR_NOT_AN_OBJECT);
    assert_int_equal(anr_core_check(h, stack_buf), ANR_ERR_FOREIGN);
    assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    assert_int_equal(anr_core_check(h, q), ANR_ERR_DOUBLE_FREE);
    assert_int_equal(elog.calls, 0);
    assert_int_equal(stats_of(h).objects_in_use, 1);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
}

/* Bad pointers without an on_error hook: still returned, still harmless. */
static void test_no_hook(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    char *p = anr_core_alloc(h, 32, 0, 0);
    assert_non_null(p);
    char stack_buf[16];
    assert_int_equal(anr_core_free(h, stack_buf), ANR_ERR_FOREIGN);
    assert_int_equal(anr_core_free(h, p + 8), ANR_ERR_NOT_AN_OBJECT);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_DOUBLE_FREE);
    assert_int_equal(stats_of(h).bad_pointers, 3);
    assert_verify(h);
}

/* A mix of live objects survives a barrage of bad calls intact. */
static void test_live_objects_survive(void **state)
{
    anr_heap *h = checked_heap(state);
    enum { N = 200 };
    char *v[N];
    size_t sz[N];
    uint32_t seed = 4242;
    for (int i = 0; i < N; i++) {
        sz[i] = 1 + rng_next(&seed) % (i % 10 == 0 ? 200 * KiB : 2 * KiB);
        v[i] = anr_core_alloc(h, sz[i], 0, 0);
        assert_non_null(v[i]);
        fill_pat(v[i], sz[i], (uint32_t)i);
    }
    /* free every third, then throw double and interior frees at everything */
    for (int i = 0; i < N; i += 3)
        assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0) {
            /* a freed object whose slab emptied or whose run coalesced is
             * no longer an object at all: either report is right there */
            anr_error e = anr_core_free(h, v[i]);
            if (e != ANR_ERR_DOUBLE_FREE && e != ANR_ERR_NOT_AN_OBJECT)
                fail_msg("object %d: double free returned %s", i, err_name(e));
        } else {
            anr_error e = anr_core_free(h, v[i] + 1);
            if (e != ANR_ERR_NOT_AN_OBJECT)
                fail_msg("object %d: free(p + 1) returned %s", i, err_name(e));
        }
        bad++;
    }
    assert_int_equal(elog.calls, bad);
    assert_int_equal(stats_of(h).bad_pointers, (uint64_t)bad);
    assert_verify(h);
    for (int i = 0; i < N; i++)
        if (i % 3 != 0) {
            check_pat(v[i], sz[i], (uint32_t)i);
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        }
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_verify(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_free_null),         UNIT(test_foreign),
        UNIT(test_double_free_small), UNIT(test_double_free_large),
        UNIT(test_interior_pointers), UNIT(test_check_does_not_report),
        UNIT(test_no_hook),           UNIT(test_live_objects_survive),
        UNIT(test_bad_frees_while_lock_busy), UNIT(test_queued_free_done_at_unlock),
        UNIT(test_every_offset_of_every_class),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

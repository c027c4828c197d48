/* The limit (bytes of pages in use, dirty free pages included): failing
 * cleanly past it, moving it at run time, the more_memory hook and its
 * rounds, ANR_ALLOC_NO_HOOKS, and purging dirty pages before failing. */
#include "core_test.h"

#include <pthread.h>

#include <stdint.h>

#define LIMIT (8 * MiB)
#define CHUNK (1 * MiB)
#define NCHUNK ((int)(LIMIT / CHUNK))

typedef struct hook_state {
    int calls;
    size_t last_size;
    anr_heap *last_heap;
    int raise_on_call; /* raise the limit on this call (1-based); 0 = never */
    size_t raise_to;
    bool ret;               /* what to return when not raising */
    void *to_free;          /* freed from inside the hook, then return true */
    uint64_t deferred_seen; /* stats.deferred_frees read inside the hook */
} hook_state;

static hook_state hs;

static bool more_memory(void *ctx, anr_heap *heap, size_t size)
{
    hook_state *st = ctx;
    assert_ptr_equal(st, &hs);
    st->calls++;
    st->last_size = size;
    st->last_heap = heap;
    if (st->to_free != NULL) {
        assert_int_equal(anr_core_free(heap, st->to_free), ANR_ERR_NONE);
        st->to_free = NULL;
        st->deferred_seen = stats_of(heap).deferred_frees;
        return true;
    }
    if (st->raise_on_call != 0 && st->calls == st->raise_on_call) {
        anr_core_set_limit(heap, st->raise_to);
        return true;
    }
    return st->ret;
}

static anr_heap *limited_heap(void **state, size_t limit, unsigned rounds)
{
    anr_core_options o;
    test_options(&o);
    o.limit = limit;
    o.more_memory_rounds = rounds;
    o.hooks.more_memory = more_memory;
    o.hooks.ctx = &hs;
    memset(&hs, 0, sizeof hs);
    anr_heap *h = fx_init(state, &o);
    assert_int_equal(stats_of(h).limit, limit);
    return h;
}

/* Fills the heap up to the limit with NCHUNK 1 MiB objects, patterned. */
static void fill_to_limit(anr_heap *h, char **v)
{
    for (int i = 0; i < NCHUNK; i++) {
        v[i] = anr_core_alloc(h, CHUNK, 0, ANR_ALLOC_NO_HOOKS);
        if (v[i] == NULL)
            fail_msg("alloc #%d of 1 MiB failed under a %zu MiB limit", i, LIMIT / MiB);
        fill_pat(v[i], CHUNK, (uint32_t)i);
    }
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.pages_in_use * s.page_size, LIMIT);
}

static void check_chunks(char **v, int n)
{
    for (int i = 0; i < n; i++)
        if (v[i] != NULL) check_pat(v[i], CHUNK, (uint32_t)i);
}

/* Past the limit allocations return NULL and count as failures; the heap and
 * the live objects are untouched; raising the limit lets the same
 * allocation succeed. */
static void test_limit_enforced_and_raised(void **state)
{
    anr_heap *h = limited_heap(state, LIMIT, 0);
    char *v[NCHUNK + 1] = {0};
    fill_to_limit(h, v);
    anr_core_stats s0 = stats_of(h);
    assert_null(anr_core_alloc(h, CHUNK, 0, ANR_ALLOC_NO_HOOKS));
    assert_null(anr_core_alloc(h, sys_page(), 0, ANR_ALLOC_NO_HOOKS));
    /* a small object needs a slab page, and there are no slabs yet */
    assert_null(anr_core_alloc(h, 16, 0, ANR_ALLOC_NO_HOOKS));
    anr_core_stats s1 = stats_of(h);
    assert_int_equal(s1.alloc_failures, s0.alloc_failures + 3);
    assert_int_equal(s1.pages_in_use, s0.pages_in_use);
    assert_int_equal(s1.objects_in_use, s0.objects_in_use);
    assert_int_equal(hs.calls, 0);
    check_chunks(v, NCHUNK);
    assert_verify(h);

    anr_core_set_limit(h, LIMIT + 2 * MiB);
    assert_int_equal(stats_of(h).limit, LIMIT + 2 * MiB);
    v[NCHUNK] = anr_core_alloc(h, CHUNK, 0, ANR_ALLOC_NO_HOOKS);
    assert_non_null(v[NCHUNK]);
    fill_pat(v[NCHUNK], CHUNK, NCHUNK);
    check_chunks(v, NCHUNK + 1);
    /* no limit at all */
    anr_core_set_limit(h, 0);
    void *big = anr_core_alloc(h, 4 * LIMIT, 0, ANR_ALLOC_NO_HOOKS);
    assert_non_null(big);
    assert_int_equal(anr_core_free(h, big), ANR_ERR_NONE);
    assert_verify(h);
}

/* Lowering the limit below current use is allowed; allocations needing pages
 * then fail until enough is freed. */
static void test_limit_lowered_below_use(void **state)
{
    anr_heap *h = limited_heap(state, LIMIT, 0);
    char *v[NCHUNK];
    fill_to_limit(h, v);
    anr_core_set_limit(h, 4 * MiB);
    assert_int_equal(stats_of(h).limit, 4 * MiB);
    check_chunks(v, NCHUNK);
    assert_null(anr_core_alloc(h, CHUNK, 0, 0));
    for (int i = 0; i < 4; i++) { /* in use: 4 MiB, still no room */
        assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        v[i] = NULL;
    }
    /* even from the freed (dirty) runs: pages in use would pass the limit */
    void *over = anr_core_alloc(h, CHUNK, 0, 0);
    if (over != NULL) {
        anr_core_stats s = stats_of(h);
        fail_msg("limit 4 MiB, 4 MiB in use: a 1 MiB alloc succeeded, now %zu pages in use "
                 "(%zu bytes), %zu dirty",
                 s.pages_in_use, s.pages_in_use * s.page_size, s.pages_dirty);
    }
    assert_int_equal(anr_core_free(h, v[4]), ANR_ERR_NONE); /* in use: 3 MiB */
    v[4] = NULL;
    void *p = anr_core_alloc(h, CHUNK, 0, 0);
    if (p == NULL)
        fail_msg("3 MiB in use, limit 4 MiB: a 1 MiB alloc failed (dirty %zu pages)",
                 stats_of(h).pages_dirty);
    assert_true(stats_of(h).pages_in_use * sys_page() <= 4 * MiB);
    check_chunks(v, NCHUNK);
    assert_verify(h);
}

/* The hook raises the limit and returns true: the allocation succeeds after
 * one call, which names the heap and at least the size asked for. */
static void test_hook_raises_limit(void **state)
{
    anr_heap *h = limited_heap(state, LIMIT, 0);
    char *v[NCHUNK];
    fill_to_limit(h, v);
    hs.raise_on_call = 1;
    hs.raise_to = LIMIT + CHUNK;
    void *p = anr_core_alloc(h, CHUNK, 0, 0);
    assert_non_null(p);
    assert_int_equal(hs.calls, 1);
    assert_ptr_equal(hs.last_heap, h);
    assert_true(hs.last_size >= CHUNK);
    assert_int_equal(stats_of(h).limit, LIMIT + CHUNK);
    memset(p, 0x66, CHUNK);
    check_chunks(v, NCHUNK);
    assert_verify(h);
}

/* The hook is asked at most more_memory_rounds times per allocation. */
static void test_hook_rounds(void **state)
{
    anr_heap *h = limited_heap(state, LIMIT, 3);
    char *v[NCHUNK];
    fill_to_limit(h, v);
    uint64_t f0 = stats_of(h).alloc_failures;

    /* always "retry", never any better: gives up after at most 3 calls */
    hs.ret = true;
    assert_null(anr_core_alloc(h, CHUNK, 0, 0));
    if (hs.calls < 1 || hs.calls > 3)
        fail_msg("more_memory called %d times, more_memory_rounds is 3", hs.calls);
    assert_int_equal(stats_of(h).alloc_failures, f0 + 1);

    /* "no": the engine does not insist */
    hs.calls = 0;
    hs.ret = false;
    assert_null(anr_core_alloc(h, CHUNK, 0, 0));
    assert_int_equal(hs.calls, 1);

    /* the third round is still allowed: the raise on call 3 succeeds */
    hs.calls = 0;
    hs.ret = true;
    hs.raise_on_call = 3;
    hs.raise_to = LIMIT + CHUNK;
    void *p = anr_core_alloc(h, CHUNK, 0, 0);
    if (p == NULL)
        fail_msg("limit raised on round 3 of 3, alloc still failed (%d calls)", hs.calls);
    assert_int_equal(hs.calls, 3);
    check_chunks(v, NCHUNK);
    assert_verify(h);
}

/* more_memory_rounds 0 means the default, 4. */
static void test_hook_default_rounds(void **state)
{
    anr_heap *h = limited_heap(state, LIMIT, 0);
    char *v[NCHUNK];
    fill_to_limit(h, v);
    hs.ret = true;
    assert_null(anr_core_alloc(h, CHUNK, 0, 0));
    if (hs.calls < 1 || hs.calls > 4) fail_msg("more_memory called %d times (default 4)", hs.calls);
    hs.calls = 0;
    hs.raise_on_call = 4;
    hs.raise_to = LIMIT + CHUNK;
    assert_non_null(anr_core_alloc(h, CHUNK, 0, 0));
    assert_int_equal(hs.calls, 4);
}

/* The hook may free memory of the same heap (the heap lock is not held, so
 * the free is not deferred) and the allocation then succeeds. */
static void test_hook_frees_memory(void **state)
{
    anr_heap *h = limited_heap(state, LIMIT, 0);
    char *v[NCHUNK];
    fill_to_limit(h, v);
    hs.to_free = v[3];
    void *p = anr_core_alloc(h, CHUNK, 0, 0);
    v[3] = NULL;
    if (p == NULL) fail_msg("hook freed 1 MiB and returned true, alloc still failed");
    assert_int_equal(hs.calls, 1);
    if (hs.deferred_seen != 0)
        fail_msg("free from inside more_memory was deferred (%llu): heap lock held?",
                 (unsigned long long)hs.deferred_seen);
    assert_int_equal(stats_of(h).deferred_frees, 0);
    memset(p, 0x31, CHUNK);
    check_chunks(v, NCHUNK);
    assert_int_equal(stats_of(h).objects_in_use, NCHUNK);
    assert_verify(h);
}

/* ANR_ALLOC_NO_HOOKS never calls the hook. */
static void test_no_hooks_flag(void **state)
{
    anr_heap *h = limited_heap(state, LIMIT, 0);
    char *v[NCHUNK];
    fill_to_limit(h, v);
    hs.raise_on_call = 1;
    hs.raise_to = 2 * LIMIT;
    assert_null(anr_core_alloc(h, CHUNK, 0, ANR_ALLOC_NO_HOOKS));
    assert_null(anr_core_alloc(h, 100, 0, ANR_ALLOC_NO_HOOKS | ANR_ALLOC_ZERO));
    assert_int_equal(hs.calls, 0);
    assert_int_equal(stats_of(h).limit, LIMIT);
    /* the same allocation without the flag asks the hook */
    assert_non_null(anr_core_alloc(h, CHUNK, 0, 0));
    assert_int_equal(hs.calls, 1);
}

/* ANR_ALLOC_NO_HOOKS never waits for the heap lock: while another thread
 * holds it (fork_prepare takes it), the allocation returns NULL at once. */
typedef struct lock_holder {
    anr_heap *h;
    pthread_mutex_t m;
    pthread_cond_t cv;
    int stage;
} lock_holder;

static void *hold_heap_lock(void *v)
{
    lock_holder *l = v;
    anr_core_fork_prepare(l->h);
    pthread_mutex_lock(&l->m);
    l->stage = 1;
    pthread_cond_broadcast(&l->cv);
    while (l->stage != 2)
        pthread_cond_wait(&l->cv, &l->m);
    pthread_mutex_unlock(&l->m);
    anr_core_fork_parent(l->h);
    return NULL;
}

static void test_no_hooks_never_waits(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    lock_holder l = {.h = h, .stage = 0};
    pthread_mutex_init(&l.m, NULL);
    pthread_cond_init(&l.cv, NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_heap_lock, &l), 0);
    pthread_mutex_lock(&l.m);
    while (l.stage != 1)
        pthread_cond_wait(&l.cv, &l.m);
    pthread_mutex_unlock(&l.m);
    /* 64 KiB: a page run, never a thread cache's slab */
    assert_null(anr_core_alloc(h, 64 * KiB, 0, ANR_ALLOC_NO_HOOKS));
    pthread_mutex_lock(&l.m);
    l.stage = 2;
    pthread_cond_broadcast(&l.cv);
    pthread_mutex_unlock(&l.m);
    pthread_join(t, NULL);
    void *p = anr_core_alloc(h, 64 * KiB, 0, ANR_ALLOC_NO_HOOKS);
    assert_non_null(p);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
}

/* Dirty free pages count in the limit, and hitting the limit first hands them
 * back: an allocation that fits once they are purged succeeds, no hook. */
static void test_dirty_pages_count_and_are_purged(void **state)
{
    anr_core_options o;
    test_options(&o);
    o.limit = LIMIT;
    o.page_ceiling = 1u << 20; /* no purge on free */
    o.page_floor = 1;
    o.hooks.more_memory = more_memory;
    o.hooks.ctx = &hs;
    memset(&hs, 0, sizeof hs);
    anr_heap *h = fx_init(state, &o);
    char *v[NCHUNK];
    fill_to_limit(h, v);
    for (int i = 0; i < NCHUNK; i += 2) { /* free every other chunk: no 2 MiB hole */
        assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        v[i] = NULL;
    }
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.pages_in_use * s.page_size, LIMIT / 2);
    assert_int_equal(s.pages_dirty * s.page_size, LIMIT / 2);
    assert_int_equal(s.pages_purged, 0);

    void *p = anr_core_alloc(h, 2 * CHUNK, 0, 0);
    if (p == NULL) fail_msg("4 MiB in use + 4 MiB dirty, limit 8 MiB: 2 MiB alloc failed");
    assert_int_equal(hs.calls, 0);
    anr_core_stats t = stats_of(h);
    assert_true(t.pages_purged > 0);
    if ((t.pages_in_use + t.pages_dirty) * t.page_size > LIMIT)
        fail_msg("in use %zu + dirty %zu pages exceed the limit of %zu bytes", t.pages_in_use,
                 t.pages_dirty, LIMIT);
    memset(p, 0x12, 2 * CHUNK);
    check_chunks(v, NCHUNK);
    assert_verify(h);
}

/* The limit counts dirty pages: with the free chunks kept dirty, a request
 * that needs new pages cannot pass in_use + dirty + new > limit without the
 * dirty ones being handed back. */
static void test_limit_holds_with_dirty(void **state)
{
    anr_core_options o;
    test_options(&o);
    o.limit = LIMIT;
    o.page_ceiling = 1u << 20;
    o.page_floor = 1;
    anr_heap *h = fx_init(state, &o);
    uint32_t seed = 99;
    void *v[64] = {0};
    for (int op = 0; op < 3000; op++) {
        int i = (int)(rng_next(&seed) % 64);
        if (v[i] != NULL) {
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
            v[i] = NULL;
        } else {
            size_t n = 1 + rng_next(&seed) % (512 * KiB);
            v[i] = anr_core_alloc(h, n, 0, 0);
            if (v[i] != NULL) memset(v[i], 0x44, n);
        }
        anr_core_stats s = stats_of(h);
        if ((s.pages_in_use + s.pages_dirty) * s.page_size > LIMIT)
            fail_msg("op %d: in use %zu + dirty %zu pages > limit %zu bytes", op, s.pages_in_use,
                     s.pages_dirty, LIMIT);
    }
    assert_verify(h);
}

/* Absurd sizes fail cleanly. */
static void test_absurd_sizes(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    uint64_t f0 = stats_of(h).alloc_failures;
    assert_null(anr_core_alloc(h, SIZE_MAX, 0, 0));
    assert_null(anr_core_alloc(h, SIZE_MAX - sys_page(), 0, 0));
    assert_null(anr_core_alloc(h, SIZE_MAX / 2 + 1, 0, 0));
    assert_null(anr_core_alloc(h, 2 * TEST_MAPPING, 0, 0));
    assert_null(anr_core_alloc(h, TEST_MAPPING, 0, 0)); /* metadata takes part of it */
    assert_null(anr_core_alloc(h, 16, (size_t)1 << (sizeof(size_t) * 8 - 1), 0));
    assert_int_equal(stats_of(h).alloc_failures, f0 + 6);
    void *p = anr_core_alloc(h, 100, 0, 0);
    assert_non_null(p);
    assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    assert_int_equal(stats_of(h).objects_in_use, 0);
    assert_verify(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_limit_enforced_and_raised),
        UNIT(test_limit_lowered_below_use),
        UNIT(test_hook_raises_limit),
        UNIT(test_hook_rounds),
        UNIT(test_hook_default_rounds),
        UNIT(test_hook_frees_memory),
        UNIT(test_no_hooks_flag),
        UNIT(test_no_hooks_never_waits),
        UNIT(test_dirty_pages_count_and_are_purged),
        UNIT(test_limit_holds_with_dirty),
        UNIT(test_absurd_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* "Need more memory" and "memory full" callbacks: order, bytes freed,
 * bounded retries, re-entrancy (a callback allocating and freeing on the
 * same heap), and that no heap lock is held while they run. */
#include "am_test.h"

#include <errno.h>

static anr_mheap *heap;
static char order[16];
static int norder;
static void *cached[8];
static int calls_a, calls_b, depth, max_depth, full_calls;
static size_t full_size, full_limit, full_use;

static void reset(void)
{
    memset(order, 0, sizeof(order));
    norder = 0;
    memset(cached, 0, sizeof(cached));
    calls_a = calls_b = depth = max_depth = full_calls = 0;
}

static size_t cb_a(void *ctx, anr_mheap *h, size_t size)
{
    (void)ctx;
    (void)size;
    assert_ptr_equal(h, heap);
    order[norder++] = 'A';
    calls_a++;
    return 0; /* frees nothing */
}

/* Frees one cached block per call. */
static size_t cb_b(void *ctx, anr_mheap *h, size_t size)
{
    (void)ctx;
    (void)size;
    order[norder++] = 'B';
    calls_b++;
    for (int i = 0; i < 8; i++) {
        if (cached[i]) {
            size_t n = anr_heap_usable_size(h, cached[i]);
            anr_heap_free(h, cached[i]);
            cached[i] = NULL;
            return n;
        }
    }
    return 0;
}

static void on_full(void *ctx, anr_mheap *h, size_t size, size_t limit, size_t use)
{
    (void)ctx;
    assert_ptr_equal(h, heap);
    full_calls++;
    full_size = size;
    full_limit = limit;
    full_use = use;
}

static void test_order_and_bytes_freed(void **state)
{
    (void)state;
    reset();
    heap = small_heap(1 * MiB, 0, NULL);
    for (int i = 0; i < 3; i++)
        assert_non_null(cached[i] = anr_heap_malloc(heap, 256 * KiB));
    assert_int_equal(anr_heap_add_more_memory(heap, cb_a, NULL), 0);
    assert_int_equal(anr_heap_add_more_memory(heap, cb_b, NULL), 0);
    anr_heap_set_memory_full(heap, on_full, NULL);
    /* 768 KiB used of 1 MiB: 512 KiB needs one cached block back. */
    void *p = anr_heap_malloc(heap, 512 * KiB);
    assert_non_null(p);
    assert_string_equal(order, "AB");
    assert_int_equal(full_calls, 0);
    anr_heap_stats s;
    anr_heap_get_stats(heap, &s);
    assert_int_equal(s.more_memory_calls, 2);
    assert_int_equal(s.more_memory_freed, 256 * KiB);
    anr_heap_free(heap, p);
    for (int i = 0; i < 3; i++)
        anr_heap_free(heap, cached[i]);
    anr_heap_destroy(heap);
}

static int liar_calls;
static size_t liar(void *ctx, anr_mheap *h, size_t size)
{
    (void)ctx;
    (void)h;
    (void)size;
    liar_calls++;
    return 1; /* claims progress, frees nothing */
}

static void test_bounded_retries_then_full(void **state)
{
    (void)state;
    reset();
    anr_options o;
    anr_default_options(&o);
    o.mapping_size = 64 * MiB;
    o.limit = 1 * MiB;
    o.retry_rounds = 3;
    heap = anr_heap_create(&o);
    assert_non_null(heap);
    liar_calls = 0;
    anr_heap_add_more_memory(heap, liar, NULL);
    anr_heap_set_memory_full(heap, on_full, NULL);
    void *keep = anr_heap_malloc(heap, 100 * KiB);
    errno = 0;
    assert_null(anr_heap_malloc(heap, 2 * MiB));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(liar_calls, 3);
    assert_int_equal(full_calls, 1);
    assert_int_equal(full_size, 2 * MiB);
    assert_int_equal(full_limit, 1 * MiB);
    assert_true(full_use >= 100 * KiB);
    /* A callback that frees nothing ends the rounds at once. */
    assert_int_equal(anr_heap_remove_more_memory(heap, liar, NULL), 0);
    assert_int_equal(anr_heap_remove_more_memory(heap, liar, NULL), ENOENT);
    anr_heap_add_more_memory(heap, cb_a, NULL);
    assert_null(anr_heap_malloc(heap, 2 * MiB));
    assert_int_equal(calls_a, 1);
    assert_int_equal(liar_calls, 3);
    assert_int_equal(full_calls, 2);
    anr_heap_free(heap, keep);
    anr_heap_destroy(heap);
}

/* Allocates (small: must work; big: must fail without recursing) and frees
 * on the same heap from inside the callback. */
static void *small_inside;
static size_t reentrant(void *ctx, anr_mheap *h, size_t size)
{
    (void)ctx;
    (void)size;
    depth++;
    if (depth > max_depth)
        max_depth = depth;
    anr_heap_stats s;
    anr_heap_get_stats(h, &s); /* takes the engine lock: it is not held */
    small_inside = anr_heap_malloc(h, 32);
    void *big = anr_heap_malloc(h, 4 * MiB); /* past the limit: fails, no recursion */
    assert_null(big);
    size_t freed = 0;
    for (int i = 0; i < 8; i++) {
        if (cached[i]) {
            freed += anr_heap_usable_size(h, cached[i]);
            anr_heap_free(h, cached[i]);
            cached[i] = NULL;
        }
    }
    depth--;
    return freed;
}

static void test_reentrancy(void **state)
{
    (void)state;
    reset();
    heap = small_heap(1 * MiB, ANR_DEBUG_GUARDS | ANR_DEBUG_STACKS | ANR_DEBUG_FDR, NULL);
    for (int i = 0; i < 3; i++)
        assert_non_null(cached[i] = anr_heap_malloc(heap, 300 * KiB));
    anr_heap_add_more_memory(heap, reentrant, NULL);
    anr_heap_set_memory_full(heap, on_full, NULL);
    void *p = anr_heap_malloc(heap, 600 * KiB);
    assert_non_null(p);
    assert_int_equal(max_depth, 1);
    assert_non_null(small_inside);
    assert_int_equal(full_calls, 1); /* the nested 4 MiB attempt */
    assert_int_equal(full_size, 4 * MiB);
    anr_heap_stats s;
    anr_heap_get_stats(heap, &s);
    assert_int_equal(s.more_memory_calls, 1);
    assert_null(anr_heap_verify(heap));
    anr_heap_free(heap, p);
    anr_heap_free(heap, small_inside);
    anr_heap_destroy(heap);
}

static size_t nop(void *ctx, anr_mheap *h, size_t size)
{
    (void)ctx;
    (void)h;
    (void)size;
    return 0;
}

static void test_registration_limit(void **state)
{
    (void)state;
    heap = small_heap(0, 0, NULL);
    int dummy[ANR_MAX_CALLBACKS + 1];
    for (unsigned i = 0; i < ANR_MAX_CALLBACKS; i++)
        assert_int_equal(anr_heap_add_more_memory(heap, nop, &dummy[i]), 0);
    assert_int_equal(anr_heap_add_more_memory(heap, nop, &dummy[ANR_MAX_CALLBACKS]), ENOSPC);
    assert_int_equal(anr_heap_remove_more_memory(heap, nop, &dummy[3]), 0);
    assert_int_equal(anr_heap_add_more_memory(heap, nop, &dummy[ANR_MAX_CALLBACKS]), 0);
    anr_heap_destroy(heap);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_bytes_freed),
        cmocka_unit_test(test_bounded_retries_then_full),
        cmocka_unit_test(test_reentrancy),
        cmocka_unit_test(test_registration_limit),
    };
    return cmocka_run_group_tests_name("anr_malloc_callbacks", tests, NULL, NULL);
}

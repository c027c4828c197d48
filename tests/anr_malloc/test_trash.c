/* Trash fill: freed blocks read 0xdeadbeef words, new blocks 0xbaadf00d
 * (calloc still zero); off means untouched. */
#include "am_test.h"

static bool all_pattern(const unsigned char *p, size_t n, uint32_t pat)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(pat >> (8 * (i & 3))))
            return false;
    return true;
}

static void test_trash_on_free(void **state)
{
    (void)state;
    anr_mheap *h = small_heap(0, ANR_DEBUG_TRASH_FREE, NULL);
    /* A neighbour keeps the slab alive so its memory stays as we left it. */
    unsigned char *keep = anr_heap_malloc(h, 64);
    unsigned char *p = anr_heap_malloc(h, 64);
    unsigned char *big = anr_heap_malloc(h, 40000);
    memset(p, 0x11, 64);
    memset(big, 0x22, 40000);
    anr_heap_free(h, p);
    anr_heap_free(h, big);
    assert_true(all_pattern(p, 64, ANR_TRASH_FREE));
    assert_true(all_pattern(big, 40000, ANR_TRASH_FREE));
    assert_int_equal(p[0], 0xef);
    assert_int_equal(p[3], 0xde);

    /* Off: a freed block keeps its contents. */
    anr_heap_set_debug(h, 0);
    unsigned char *q = anr_heap_malloc(h, 64);
    memset(q, 0x33, 64);
    anr_heap_free(h, q);
    assert_int_equal(q[10], 0x33);
    anr_heap_free(h, keep);
    anr_heap_destroy(h);
}

static void test_trash_on_alloc(void **state)
{
    (void)state;
    anr_mheap *h = small_heap(0, ANR_DEBUG_TRASH_ALLOC | ANR_DEBUG_GUARDS, NULL);
    unsigned char *p = anr_heap_malloc(h, 100);
    assert_true(all_pattern(p, 100, ANR_TRASH_ALLOC));
    assert_int_equal(p[0], 0x0d);
    unsigned char *z = anr_heap_calloc(h, 10, 10);
    for (int i = 0; i < 100; i++)
        assert_int_equal(z[i], 0);
    unsigned char *big = anr_heap_malloc(h, 70000);
    assert_true(all_pattern(big, 70000, ANR_TRASH_ALLOC));
    anr_heap_free(h, p);
    anr_heap_free(h, z);
    anr_heap_free(h, big);
    assert_null(anr_heap_verify(h));
    anr_heap_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trash_on_free),
        cmocka_unit_test(test_trash_on_alloc),
    };
    return cmocka_run_group_tests_name("anr_malloc_trash", tests, NULL, NULL);
}

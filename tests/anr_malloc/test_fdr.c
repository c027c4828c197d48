/* The flight data recorder: the last N operations, oldest first, with op,
 * pointer, size, thread, timestamp and caller; wrap-around keeps exactly the
 * newest N; off means nothing is recorded. */
#include "am_test.h"

#include <dlfcn.h>
#include <unistd.h>

void *fdr_site(anr_mheap *h, size_t n);
__attribute__((noinline)) void *fdr_site(anr_mheap *h, size_t n)
{
    return opaque(anr_heap_malloc(h, n));
}

static void test_wrap_around(void **state)
{
    (void)state;
    anr_mheap *h = small_heap(0, ANR_DEBUG_FDR, NULL); /* 64 slots */
    assert_int_equal(anr_fdr_capacity(h), 64);
    void *ptrs[100];
    for (int i = 0; i < 100; i++) {
        ptrs[i] = fdr_site(h, 10 + (size_t)i);
        anr_heap_free(h, ptrs[i]);
    }
    /* 200 operations; the ring holds #137..#200. */
    anr_fdr_entry e[128];
    size_t n = anr_fdr_read(h, e, 128);
    assert_int_equal(n, 64);
    assert_int_equal(e[0].seq, 137);
    assert_int_equal(e[63].seq, 200);
    for (size_t i = 1; i < n; i++) {
        assert_int_equal(e[i].seq, e[i - 1].seq + 1);
        assert_true(e[i].time_ns >= e[i - 1].time_ns);
    }
    /* #199 = malloc of ptrs[99] (size 109) from fdr_site; #200 its free. */
    assert_int_equal(e[62].op, ANR_FDR_MALLOC);
    assert_ptr_equal((void *)e[62].ptr, ptrs[99]);
    assert_int_equal(e[62].size, 109);
    assert_int_equal(e[62].tid, (uint32_t)gettid());
    Dl_info di;
    assert_true(dladdr((void *)(e[62].caller - 1), &di));
    assert_non_null(di.dli_sname);
    assert_string_equal(di.dli_sname, "fdr_site");
    assert_int_equal(e[63].op, ANR_FDR_FREE);
    assert_ptr_equal((void *)e[63].ptr, ptrs[99]);
    assert_string_equal(anr_fdr_op_name(e[63].op), "free");
    /* #137 is the free of ptrs[68] (odd numbers are mallocs). */
    assert_int_equal(e[0].op, ANR_FDR_MALLOC);
    assert_ptr_equal((void *)e[0].ptr, ptrs[68]);

    /* Asking for fewer gives the newest. */
    n = anr_fdr_read(h, e, 3);
    assert_int_equal(n, 3);
    assert_int_equal(e[0].seq, 198);
    assert_int_equal(e[2].seq, 200);
    anr_heap_destroy(h);
}

static void test_ops_and_switch(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, 0, &log);
    void *a = anr_heap_malloc(h, 5);
    anr_fdr_entry e[16];
    assert_int_equal(anr_fdr_read(h, e, 16), 0); /* off: nothing */
    anr_heap_set_debug(h, ANR_DEBUG_FDR);
    void *b = anr_heap_calloc(h, 2, 8);
    void *c = anr_heap_realloc(h, a, 3000);
    void *d = anr_heap_memalign(h, 256, 7);
    anr_heap_free(h, c);
    anr_heap_free(h, c); /* bad */
    size_t n = anr_fdr_read(h, e, 16);
    assert_true(n >= 5);
    assert_int_equal(e[0].op, ANR_FDR_CALLOC);
    assert_int_equal(e[0].size, 16);
    assert_ptr_equal((void *)e[0].ptr, b);
    assert_int_equal(e[1].op, ANR_FDR_REALLOC);
    assert_ptr_equal((void *)e[1].ptr, c);
    assert_ptr_equal((void *)e[1].old_ptr, a);
    assert_int_equal(e[2].op, ANR_FDR_MEMALIGN);
    assert_ptr_equal((void *)e[2].ptr, d);
    assert_int_equal(e[3].op, ANR_FDR_FREE);
    assert_int_equal(e[n - 1].op, ANR_FDR_BAD);
    assert_ptr_equal((void *)e[n - 1].ptr, c);
    assert_int_equal(log.calls, 1);
    anr_heap_set_debug(h, 0);
    anr_heap_free(h, b);
    assert_int_equal(anr_fdr_read(h, e, 16), n);
    anr_heap_free(h, d);
    anr_heap_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrap_around),
        cmocka_unit_test(test_ops_and_switch),
    };
    return cmocka_run_group_tests_name("anr_malloc_fdr", tests, NULL, NULL);
}

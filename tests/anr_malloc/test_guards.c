/* Guard bytes: overruns and underruns are found on free, by anr_check() and
 * by anr_heap_verify(), and reported with the block's allocation stack; the
 * usable size excludes the guards; alignment survives; switching guards off
 * leaves existing guarded blocks guarded. */
#include "am_test.h"

#include <dlfcn.h>

static bool frame_is(const void *frame, const char *fn)
{
    Dl_info di;
    return frame && dladdr((const char *)frame - 1, &di) && di.dli_sname &&
           strcmp(di.dli_sname, fn) == 0;
}

char *guard_site(anr_mheap *h, size_t n);
__attribute__((noinline)) char *guard_site(anr_mheap *h, size_t n)
{
    return opaque(anr_heap_malloc(h, n));
}

static void test_overrun_on_free(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, ANR_DEBUG_GUARDS | ANR_DEBUG_STACKS, &log);
    char *p = guard_site(h, 40);
    assert_int_equal(anr_heap_usable_size(h, p), 40);
    memset(p, 1, 40); /* all usable bytes: no fault */
    p[40 + 2] = 7;    /* one past the guard's start */
    anr_heap_free(h, p);
    assert_int_equal(log.calls, 1);
    assert_int_equal(log.fault, ANR_FAULT_GUARD);
    assert_ptr_equal(log.ptr, p);
    assert_string_equal(log.op, "free");
    assert_non_null(strstr(log.detail, "overrun"));
    assert_non_null(strstr(log.detail, "+42"));
    assert_int_equal(log.size, 40);
    assert_true(log.nframes >= 1);
    assert_true(frame_is(log.frame0, "guard_site"));
    assert_non_null(strstr(log.text, "guard_site+0x"));
    /* The block was freed all the same, and the heap is sound. */
    anr_heap_stats s;
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.objects_in_use, 0);
    assert_null(anr_heap_verify(h));
    anr_heap_destroy(h);
}

static void test_underrun_and_on_demand(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, ANR_DEBUG_GUARDS, &log);
    char *p = anr_heap_malloc(h, 100);
    char *q = anr_heap_malloc(h, 100000); /* a page run */
    assert_int_equal(anr_check(p), 0);
    assert_int_equal(anr_check(q), 0);
    assert_int_equal(log.calls, 0);
    p[-1] = 0;
    assert_int_equal(anr_check(p), ANR_FAULT_GUARD);
    assert_int_equal(log.calls, 1);
    assert_string_equal(log.op, "check");
    assert_non_null(strstr(log.detail, "underrun"));
    assert_non_null(strstr(log.detail, "-1"));
    p[-1] = (char)ANR_GUARD_BYTE; /* repaired */
    assert_int_equal(anr_check(p), 0);
    q[100000] = 'x';
    assert_non_null(anr_heap_verify(h));
    assert_int_equal(log.fault, ANR_FAULT_GUARD);
    assert_ptr_equal(log.ptr, q);
    q[100000] = (char)ANR_GUARD_BYTE;
    assert_null(anr_heap_verify(h));
    anr_heap_free(h, p);
    anr_heap_free(h, q);
    assert_int_equal(log.calls, 2);
    anr_heap_destroy(h);
}

static void test_aligned_guarded(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, ANR_DEBUG_GUARDS, &log);
    size_t aligns[] = {16, 64, 256, 4096, 65536};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        char *p = anr_heap_memalign(h, aligns[i], 30);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % aligns[i], 0);
        assert_int_equal(anr_heap_usable_size(h, p), 30);
        p[30] = 1;
        anr_heap_free(h, p);
        assert_int_equal(log.calls, (int)i + 1);
        assert_int_equal(log.fault, ANR_FAULT_GUARD);
    }
    anr_heap_destroy(h);
}

static void test_switch_off_keeps_old_guards(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, ANR_DEBUG_GUARDS, &log);
    char *old = anr_heap_malloc(h, 20);
    assert_int_equal(anr_heap_set_debug(h, 0), ANR_DEBUG_GUARDS);
    char *fresh = anr_heap_malloc(h, 20);
    assert_true(anr_heap_usable_size(h, fresh) >= 20);
    assert_int_equal(anr_heap_usable_size(h, old), 20);
    old[20] = 0;
    anr_heap_free(h, old);
    assert_int_equal(log.calls, 1);
    assert_int_equal(log.fault, ANR_FAULT_GUARD);
    anr_heap_free(h, fresh);
    assert_int_equal(log.calls, 1);
    /* A guarded pointer freed twice is caught too (its record is gone). */
    anr_heap_set_debug(h, ANR_DEBUG_GUARDS);
    char *p = anr_heap_malloc(h, 20);
    anr_heap_free(h, p);
    anr_heap_free(h, p);
    assert_int_equal(log.calls, 2);
    assert_true(log.fault == ANR_FAULT_NOT_AN_OBJECT || log.fault == ANR_FAULT_DOUBLE_FREE);
    assert_null(anr_heap_verify(h));
    anr_heap_destroy(h);
}

static void test_realloc_keeps_guards(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, ANR_DEBUG_GUARDS, &log);
    char *p = anr_heap_malloc(h, 10);
    memcpy(p, "0123456789", 10);
    anr_set_debug_info(p, 42);
    p = anr_heap_realloc(h, p, 5000);
    assert_non_null(p);
    assert_memory_equal(p, "0123456789", 10);
    assert_int_equal(anr_heap_usable_size(h, p), 5000);
    uintptr_t v = 0;
    assert_int_equal(anr_get_debug_info(p, &v), 0);
    assert_int_equal(v, 42);
    p[5000] = 0;
    assert_int_equal(anr_check(p), ANR_FAULT_GUARD);
    p[5000] = (char)ANR_GUARD_BYTE;
    anr_heap_free(h, p);
    assert_int_equal(log.calls, 1);
    anr_heap_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overrun_on_free),
        cmocka_unit_test(test_underrun_and_on_demand),
        cmocka_unit_test(test_aligned_guarded),
        cmocka_unit_test(test_switch_off_keeps_old_guards),
        cmocka_unit_test(test_realloc_keeps_guards),
    };
    return cmocka_run_group_tests_name("anr_malloc_guards", tests, NULL, NULL);
}

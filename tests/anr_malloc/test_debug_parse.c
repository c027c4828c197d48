/* The debug config string and the run-time switches. */
#include "am_test.h"

#include <errno.h>

static void test_parse(void **state)
{
    (void)state;
    anr_debug_config c;
    const char *bad = NULL;
    assert_int_equal(anr_debug_parse("stacks,guards,fdr", &c, &bad), 0);
    assert_int_equal(c.flags, ANR_DEBUG_STACKS | ANR_DEBUG_GUARDS | ANR_DEBUG_FDR);
    assert_int_equal(anr_debug_parse(" stacks=8  fdr=1024,trash trash-alloc ", &c, &bad), 0);
    assert_int_equal(c.flags, ANR_DEBUG_STACKS | ANR_DEBUG_FDR | ANR_DEBUG_TRASH_FREE |
                                  ANR_DEBUG_TRASH_ALLOC);
    assert_int_equal(c.stack_depth, 8);
    assert_int_equal(c.fdr_entries, 1024);
    assert_int_equal(anr_debug_parse("all", &c, NULL), 0);
    assert_int_equal(c.flags, ANR_DEBUG_ALL);
    assert_int_equal(anr_debug_parse("all,none,valgrind", &c, NULL), 0);
    assert_int_equal(c.flags, ANR_DEBUG_VALGRIND);
    assert_int_equal(anr_debug_parse("", &c, NULL), 0);
    assert_int_equal(c.flags, 0);

    const char *spec = "guards,stackz";
    assert_int_equal(anr_debug_parse(spec, &c, &bad), -1);
    assert_ptr_equal(bad, spec + 7);
    assert_int_equal(anr_debug_parse("stacks=0", &c, NULL), -1);
    assert_int_equal(anr_debug_parse("stacks=65", &c, NULL), -1);
    assert_int_equal(anr_debug_parse("fdr=x", &c, NULL), -1);
    assert_int_equal(anr_debug_parse("guards=3", &c, NULL), -1);
}

static void test_switches(void **state)
{
    (void)state;
    anr_mheap *h = small_heap(0, ANR_DEBUG_FDR, NULL);
    unsigned vg = anr_heap_get_debug(h) & ANR_DEBUG_VALGRIND;
    assert_int_equal(anr_heap_get_debug(h), ANR_DEBUG_FDR | vg);
    assert_int_equal(anr_heap_set_debug(h, ANR_DEBUG_GUARDS | ANR_DEBUG_STACKS), ANR_DEBUG_FDR | vg);
    assert_int_equal(anr_heap_get_debug(h), ANR_DEBUG_GUARDS | ANR_DEBUG_STACKS | vg);
    anr_heap_stats s;
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.debug, ANR_DEBUG_GUARDS | ANR_DEBUG_STACKS | vg);
    anr_heap_destroy(h);

    anr_options o;
    anr_default_options(&o);
    o.mapping_size = 64 * MiB;
    o.no_debug = true;
    h = anr_heap_create(&o);
    anr_heap_set_debug(h, ANR_DEBUG_ALL);
    assert_int_equal(anr_heap_get_debug(h) & ANR_DEBUG_ALL, 0);
    assert_int_equal(anr_fdr_capacity(h), 0);
    anr_heap_destroy(h);
}

static void test_records_pool_bounded(void **state)
{
    (void)state;
    anr_options o;
    anr_default_options(&o);
    o.mapping_size = 64 * MiB;
    o.debug = ANR_DEBUG_GUARDS;
    o.debug_records = 4;
    anr_mheap *h = anr_heap_create(&o);
    void *p[6];
    for (int i = 0; i < 6; i++)
        p[i] = anr_heap_malloc(h, 10);
    anr_heap_stats s;
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.debug_records, 4);
    assert_int_equal(s.records_dropped, 2);
    assert_int_equal(anr_heap_usable_size(h, p[0]), 10);   /* guarded */
    assert_true(anr_heap_usable_size(h, p[5]) >= 10);      /* plain */
    assert_int_equal(anr_set_debug_info(p[5], 1), ENOSPC);
    for (int i = 0; i < 6; i++)
        anr_heap_free(h, p[i]);
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.debug_records, 0);
    assert_null(anr_heap_verify(h));
    anr_heap_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_switches),
        cmocka_unit_test(test_records_pool_bounded),
    };
    return cmocka_run_group_tests_name("anr_malloc_debug_parse", tests, NULL, NULL);
}

/* mallopt(M_TRIM_THRESHOLD) sets the purge ceiling and keeps a configured
 * PAGE_FLOOR (capped at the new ceiling) instead of replacing it with the
 * default share of the ceiling. meson runs this with GMALLOC_PAGE_FLOOR=200,
 * GMALLOC_REUSE_MS=off (no allowance past the ceiling) and
 * GMALLOC_THREAD_CACHE=off (every free takes the locked path that purges),
 * so that the dirty pages left after a burst of frees read off the floor:
 * mallinfo2().keepcost is the dirty pages in bytes. */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dropin.h"

/* Sizes in pages, so that the test means the same on any page size. */
enum { N = 24, RUN = 32, SPACER = 64, FLOOR = 200 };

static size_t dirty_pages(void)
{
    return mallinfo2().keepcost / (size_t)sysconf(_SC_PAGESIZE);
}

/* Frees N runs of RUN pages kept apart by live spacers (a purge takes whole
 * runs, so apart they show the floor to within one run). Once the dirty
 * pages pass the ceiling, each free hands back runs until the floor is
 * reached (hysteresis), so *lowest is the floor to within one run below it;
 * *highest is the most seen after that first drain. */
static void burst(size_t ceiling, size_t *lowest, size_t *highest)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    void *p[N], *spacer[N];
    for (int i = 0; i < N; i++) {
        assert_non_null(p[i] = malloc(RUN * pg));
        memset(p[i], 1, RUN * pg);
        assert_non_null(spacer[i] = malloc(SPACER * pg));
    }
    bool drained = false;
    *lowest = SIZE_MAX;
    *highest = 0;
    for (int i = 0; i < N; i++) {
        size_t before = dirty_pages();
        free(p[i]);
        size_t d = dirty_pages();
        drained = drained || d < before;
        if (drained) {
            *lowest = d < *lowest ? d : *lowest;
            *highest = d > *highest ? d : *highest;
        }
    }
    for (int i = 0; i < N; i++)
        free(spacer[i]);
    print_message("ceiling %zu pages, PAGE_FLOOR %d: between %zu and %zu dirty pages after the "
                  "first drain\n",
                  ceiling, FLOOR, *lowest, *highest);
    assert_true(drained); /* N * RUN = 768 pages freed, far past the ceiling */
}

static void test_trim_threshold_keeps_floor(void **state)
{
    (void)state;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t ceiling = 256, lo, hi; /* its default floor would be 16 */
    assert_int_equal(mallopt(M_TRIM_THRESHOLD, (int)(ceiling * pg)), 1);
    burst(ceiling, &lo, &hi);
    if (DR_GMALLOC && (lo + RUN <= FLOOR || lo > FLOOR))
        fail_msg("the drains went down to %zu dirty pages: not within one run (%d pages) below "
                 "the floor %d",
                 lo, RUN, FLOOR);
}

/* A ceiling below the floor caps it: nothing stays past the ceiling. */
static void test_trim_threshold_caps_floor(void **state)
{
    (void)state;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t ceiling = 128, lo, hi; /* below the floor */
    assert_int_equal(mallopt(M_TRIM_THRESHOLD, (int)(ceiling * pg)), 1);
    burst(ceiling, &lo, &hi);
    if (DR_GMALLOC && hi > ceiling)
        fail_msg("%zu dirty pages after a drain: past the ceiling %zu", hi, ceiling);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trim_threshold_keeps_floor),
        cmocka_unit_test(test_trim_threshold_caps_floor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

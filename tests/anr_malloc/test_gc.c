/* Mark-and-sweep: marked blocks survive, unmarked ones are reported and
 * freed, across slab sizes and large (page-run) blocks; blocks born during a
 * collection survive; marks do not leak into the next collection; the leak
 * report carries size, stack and debug data, as text and as JSON lines. */
#include "am_test.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define NB 24
static void *blocks[NB];
static bool keep[NB];
static anr_mheap *heap;
static void *reported[NB * 2];
static size_t nreported;
static size_t sizes_seen[NB * 2];

static size_t size_of(int i)
{
    /* small slab, larger slab, and large page runs */
    static const size_t sizes[] = {24, 200, 3000, 70000};
    return sizes[i % 4];
}

static void marker(void *ctx, anr_mheap *h)
{
    (void)ctx;
    assert_ptr_equal(h, heap);
    for (int i = 0; i < NB; i++)
        if (blocks[i] && keep[i])
            assert_true(anr_mark(blocks[i]));
}

static void on_leak(void *ctx, anr_mheap *h, const anr_block_info *b)
{
    (void)ctx;
    assert_ptr_equal(h, heap);
    sizes_seen[nreported] = b->size;
    reported[nreported++] = b->ptr;
}

static bool was_reported(const void *p)
{
    for (size_t i = 0; i < nreported; i++)
        if (reported[i] == p)
            return true;
    return false;
}

static void fill(unsigned debug)
{
    heap = small_heap(0, debug, NULL);
    for (int i = 0; i < NB; i++) {
        blocks[i] = anr_heap_malloc(heap, size_of(i));
        assert_non_null(blocks[i]);
        keep[i] = (i / 4) % 2 == 0; /* half of each size kept */
    }
    nreported = 0;
}

static void check_sweep(unsigned debug)
{
    fill(debug);
    anr_heap_add_marker(heap, marker, NULL);
    anr_gc_result r;
    assert_int_equal(anr_heap_gc(heap, ANR_GC_REPORT | ANR_GC_FREE, on_leak, NULL, &r), 0);
    assert_int_equal(r.live, NB);
    assert_int_equal(r.marked, NB / 2);
    assert_int_equal(r.garbage, NB / 2);
    assert_int_equal(r.freed, NB / 2);
    assert_int_equal(nreported, NB / 2);
    size_t want_bytes = 0;
    for (int i = 0; i < NB; i++) {
        assert_int_equal(was_reported(blocks[i]), !keep[i]);
        if (!keep[i])
            want_bytes += size_of(i);
    }
    if (debug & ANR_DEBUG_GUARDS)
        assert_int_equal(r.garbage_bytes, want_bytes); /* exact sizes from the records */
    else
        assert_true(r.garbage_bytes >= want_bytes); /* usable sizes */
    anr_heap_stats s;
    anr_heap_get_stats(heap, &s);
    assert_int_equal(s.objects_in_use, NB / 2);
    assert_int_equal(s.gc_runs, 1);
    assert_int_equal(s.gc_freed, NB / 2);
    for (int i = 0; i < NB; i++)
        if (keep[i])
            assert_int_equal(anr_check(blocks[i]), 0);
    if (debug & ANR_DEBUG_GUARDS) {
        /* Exact sizes are known from the records. */
        for (size_t i = 0; i < nreported; i++)
            assert_true(sizes_seen[i] == 24 || sizes_seen[i] == 200 || sizes_seen[i] == 3000 ||
                        sizes_seen[i] == 70000);
    }

    /* The next collection starts from a clean slate: with no marker marking,
     * every survivor is garbage (reported only, not freed). */
    anr_heap_remove_marker(heap, marker, NULL);
    nreported = 0;
    assert_int_equal(anr_heap_gc(heap, ANR_GC_REPORT, on_leak, NULL, &r), 0);
    assert_int_equal(r.garbage, NB / 2);
    assert_int_equal(r.freed, 0);
    assert_int_equal(nreported, NB / 2);
    for (int i = 0; i < NB; i++)
        if (keep[i])
            anr_heap_free(heap, blocks[i]);
    assert_null(anr_heap_verify(heap));
    anr_heap_destroy(heap);
}

static void test_sweep_plain(void **state)
{
    (void)state;
    check_sweep(0);
}

static void test_sweep_guarded(void **state)
{
    (void)state;
    check_sweep(ANR_DEBUG_GUARDS | ANR_DEBUG_STACKS);
}

static void *born;
static void allocating_marker(void *ctx, anr_mheap *h)
{
    (void)ctx;
    born = anr_heap_malloc(h, 48); /* never marked, but born during the collection */
    assert_int_equal(anr_heap_gc(h, 0, NULL, NULL, NULL), EBUSY);
}

static void test_born_during_gc_survives(void **state)
{
    (void)state;
    heap = small_heap(0, 0, NULL);
    void *old = anr_heap_malloc(heap, 48);
    anr_heap_add_marker(heap, allocating_marker, NULL);
    nreported = 0;
    anr_gc_result r;
    assert_int_equal(anr_heap_gc(heap, ANR_GC_REPORT | ANR_GC_FREE, on_leak, NULL, &r), 0);
    assert_int_equal(r.garbage, 1);
    assert_ptr_equal(reported[0], old);
    assert_int_equal(anr_check(born), 0);
    anr_heap_free(heap, born);
    anr_heap_destroy(heap);
}

static void test_mark_outside_gc(void **state)
{
    (void)state;
    heap = small_heap(0, 0, NULL);
    void *p = anr_heap_malloc(heap, 10);
    assert_false(anr_mark(p));
    int local;
    assert_false(anr_mark(&local));
    anr_heap_free(heap, p);
    anr_heap_destroy(heap);
}

static void *interior_target;
static bool interior_result;
static void interior_marker(void *ctx, anr_mheap *h)
{
    (void)ctx;
    (void)h;
    interior_result = anr_mark((char *)interior_target + 16);
}

static void test_mark_rejects_interior(void **state)
{
    (void)state;
    heap = small_heap(0, 0, NULL);
    interior_target = anr_heap_malloc(heap, 64);
    anr_heap_add_marker(heap, interior_marker, NULL);
    interior_result = true;
    anr_gc_result r;
    anr_heap_gc(heap, ANR_GC_FREE, NULL, NULL, &r);
    assert_false(interior_result);
    assert_int_equal(r.freed, 1);
    anr_heap_destroy(heap);
}

void *gc_leaky_site(anr_mheap *h);
__attribute__((noinline)) void *gc_leaky_site(anr_mheap *h) { return opaque(anr_heap_malloc(h, 77)); }

static void test_leak_report_formats(void **state)
{
    (void)state;
    heap = small_heap(0, ANR_DEBUG_STACKS, NULL);
    void *p = gc_leaky_site(heap);
    assert_int_equal(anr_set_debug_info(p, 0xabc), 0);

    char path[] = "/tmp/anr_gc_reportXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    anr_report_sink json = {fd, true};
    anr_gc_result r;
    assert_int_equal(anr_heap_gc(heap, ANR_GC_REPORT, anr_leak_report, &json, &r), 0);
    anr_report_sink text = {fd, false};
    assert_int_equal(anr_heap_gc(heap, ANR_GC_REPORT | ANR_GC_FREE, anr_leak_report, &text, &r), 0);
    char buf[8192] = {0};
    assert_true(pread(fd, buf, sizeof(buf) - 1, 0) > 0);
    close(fd);

    /* One JSON object on the first line. */
    char *nl = strchr(buf, '\n');
    assert_non_null(nl);
    *nl = 0;
    assert_true(buf[0] == '{' && nl[-1] == '}');
    assert_non_null(strstr(buf, "\"heap\":\"test\""));
    assert_non_null(strstr(buf, "\"size\":77"));
    assert_non_null(strstr(buf, "\"debug_info\":\"0xabc\""));
    assert_non_null(strstr(buf, "gc_leaky_site+0x"));
    char addr[32];
    snprintf(addr, sizeof(addr), "\"ptr\":\"%p\"", p);
    assert_non_null(strstr(buf, addr));
    /* Then the text form. */
    char *t = nl + 1;
    assert_non_null(strstr(t, "leak: "));
    assert_non_null(strstr(t, "77 bytes"));
    assert_non_null(strstr(t, "debug info 0xabc"));
    assert_non_null(strstr(t, "#0 "));
    assert_non_null(strstr(t, "gc_leaky_site"));
    anr_heap_stats s;
    anr_heap_get_stats(heap, &s);
    assert_int_equal(s.objects_in_use, 0);
    anr_heap_destroy(heap);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep_plain),
        cmocka_unit_test(test_sweep_guarded),
        cmocka_unit_test(test_born_during_gc_survives),
        cmocka_unit_test(test_mark_outside_gc),
        cmocka_unit_test(test_mark_rejects_interior),
        cmocka_unit_test(test_leak_report_formats),
    };
    return cmocka_run_group_tests_name("anr_malloc_gc", tests, NULL, NULL);
}

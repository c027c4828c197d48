/* Allocation stacks: captured from the API's caller, depth configurable,
 * symbolized on demand; live blocks grouped by stack (snapshot). */
#include "am_test.h"

#include <dlfcn.h>

static const char *name_of(const void *frame)
{
    Dl_info di;
    if (frame && dladdr((const char *)frame - 1, &di) && di.dli_sname)
        return di.dli_sname;
    return "?";
}

void *stack_site_a(anr_mheap *h);
void *stack_site_b(anr_mheap *h);
void *stack_outer(anr_mheap *h);
__attribute__((noinline)) void *stack_site_a(anr_mheap *h) { return opaque(anr_heap_malloc(h, 100)); }
__attribute__((noinline)) void *stack_site_b(anr_mheap *h) { return opaque(anr_heap_malloc(h, 1000)); }
__attribute__((noinline)) void *stack_outer(anr_mheap *h) { return opaque(stack_site_a(h)); }

static void test_capture(void **state)
{
    (void)state;
    anr_mheap *h = small_heap(0, ANR_DEBUG_STACKS, NULL);
    void *p = stack_outer(h);
    const void *frames[ANR_MAX_STACK_DEPTH];
    anr_block_info info;
    assert_int_equal(anr_block_get_info(p, &info, frames), 0);
    assert_ptr_equal(info.ptr, p);
    assert_int_equal(info.size, 100);
    assert_true(info.nframes >= 3);
    assert_string_equal(name_of(info.stack[0]), "stack_site_a");
    assert_string_equal(name_of(info.stack[1]), "stack_outer");
    char buf[4096];
    assert_true(anr_stack_format(info.stack, info.nframes, buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "#0 "));
    assert_non_null(strstr(buf, "stack_site_a+0x"));
    assert_non_null(strstr(buf, "#1 "));
    assert_non_null(strstr(buf, "stack_outer+0x"));

    anr_heap_set_stack_depth(h, 1);
    void *q = stack_outer(h);
    assert_int_equal(anr_block_get_info(q, &info, frames), 0);
    assert_int_equal(info.nframes, 1);
    assert_string_equal(name_of(info.stack[0]), "stack_site_a");
    anr_heap_free(h, p);
    anr_heap_free(h, q);
    anr_heap_destroy(h);
}

static void count_cb(void *ctx, const anr_block_info *b)
{
    size_t *n = ctx;
    (void)b;
    (*n)++;
}

static void test_snapshot_groups(void **state)
{
    (void)state;
    anr_mheap *h = small_heap(0, ANR_DEBUG_STACKS, NULL);
    /* One frame: the loops below may be unrolled, giving each call its own
     * return address in this function. */
    anr_heap_set_stack_depth(h, 1);
    void *ps[6];
    for (int i = 0; i < 3; i++)
        ps[i] = stack_site_a(h);
    for (int i = 3; i < 5; i++)
        ps[i] = stack_site_b(h);
    anr_heap_set_debug(h, 0);
    ps[5] = anr_heap_malloc(h, 50000); /* no stack */
    size_t seen = 0;
    anr_heap_foreach(h, count_cb, &seen);
    assert_int_equal(seen, 6);

    static anr_stack_group g[8];
    size_t dropped = 99;
    size_t n = anr_heap_snapshot(h, g, 8, &dropped);
    assert_int_equal(n, 3);
    assert_int_equal(dropped, 0);
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (g[i].hash == 0) {
            assert_int_equal(g[i].count, 1);
            assert_true(g[i].bytes >= 50000);
            found |= 1;
        } else if (!strcmp(name_of((void *)g[i].frames[0]), "stack_site_a")) {
            assert_int_equal(g[i].count, 3);
            assert_int_equal(g[i].bytes, 300);
            found |= 2;
        } else if (!strcmp(name_of((void *)g[i].frames[0]), "stack_site_b")) {
            assert_int_equal(g[i].count, 2);
            assert_int_equal(g[i].bytes, 2000);
            found |= 4;
        }
    }
    assert_int_equal(found, 7);
    /* A table too small drops what does not fit. */
    n = anr_heap_snapshot(h, g, 2, &dropped);
    assert_int_equal(n, 2);
    assert_true(dropped >= 1);
    for (int i = 0; i < 6; i++)
        anr_heap_free(h, ps[i]);
    assert_int_equal(anr_heap_snapshot(h, g, 8, NULL), 0);
    anr_heap_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capture),
        cmocka_unit_test(test_snapshot_groups),
    };
    return cmocka_run_group_tests_name("anr_malloc_stacks", tests, NULL, NULL);
}

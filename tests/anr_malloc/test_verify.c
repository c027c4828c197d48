/* anr_heap_verify(): sound heaps pass; a damaged page map, a damaged guard
 * and a damaged debug table are each found and reported. The damage is done
 * through the internals on purpose, then repaired. */
#include "am_test.h"

#include "../../anr_core/internal.h"
#include "../../anr_malloc/internal.h"

static void test_sound(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, ANR_DEBUG_ALL, &log);
    void *p[50];
    for (int i = 0; i < 50; i++)
        p[i] = anr_heap_malloc(h, (size_t)(i * 397 % 20000) + 1);
    for (int i = 0; i < 50; i += 3)
        anr_heap_free(h, p[i]);
    assert_null(anr_heap_verify(h));
    assert_null(anr_verify());
    assert_int_equal(log.calls, 0);
    anr_heap_destroy(h);
}

static void test_engine_damage(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, 0, &log);
    void *a = anr_heap_malloc(h, 32);
    void *b = anr_heap_malloc(h, 32);
    anr_heap *core = h->core;
    _anr_page *e = &core->pages[_anr_page_index(core, a)];
    assert_int_equal(e->kind, _ANR_PK_SLAB);
    e->nfree++;
    const char *msg = anr_heap_verify(h);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "engine: slab free count"));
    assert_int_equal(log.calls, 1);
    assert_int_equal(log.fault, ANR_FAULT_CORRUPT);
    assert_string_equal(log.op, "verify");
    e->nfree--;
    assert_null(anr_heap_verify(h));
    anr_heap_free(h, a);
    anr_heap_free(h, b);
    anr_heap_destroy(h);
}

static void test_guard_and_table_damage(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, ANR_DEBUG_GUARDS | ANR_DEBUG_STACKS, &log);
    char *p = anr_heap_malloc(h, 24);
    char *q = anr_heap_malloc(h, 24);
    q[24] = 0;
    const char *msg = anr_heap_verify(h);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "overrun"));
    assert_int_equal(log.fault, ANR_FAULT_GUARD);
    assert_ptr_equal(log.ptr, q);
    assert_true(log.nframes > 0); /* with the allocation stack */
    q[24] = (char)ANR_GUARD_BYTE;
    assert_null(anr_heap_verify(h));

    size_t gi = _am_gi(h, p);
    uint32_t saved = atomic_load(&h->table[gi]);
    atomic_store(&h->table[gi], 0);
    msg = anr_heap_verify(h);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "not in the granule table"));
    atomic_store(&h->table[gi], saved);
    assert_null(anr_heap_verify(h));
    anr_heap_free(h, p);
    anr_heap_free(h, q);
    assert_int_equal(log.calls, 2);
    anr_heap_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sound),
        cmocka_unit_test(test_engine_damage),
        cmocka_unit_test(test_guard_and_table_damage),
    };
    return cmocka_run_group_tests_name("anr_malloc_verify", tests, NULL, NULL);
}

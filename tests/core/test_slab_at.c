/* White-box test of the lock-free slot lookup (anr_core/fast.h,
 * _anr_slab_slot), which the free fast path and a free that finds the lock
 * busy rely on. It takes the class from the page's slab_at entry before it
 * fetches the slab head's page-map entry. A bad free racing with the slab's
 * release and a new slab of another class at the same pages can read a
 * stale slab_at entry; the lookup must then refuse, not test a slot of the
 * old class against the new slab's bitmap (whose padding bits read as
 * used). The race cannot be provoked on demand, so this test writes the
 * stale entry itself, as the racing reader would see it. */
#include "core_test.h"

#include "fast.h"

static void test_stale_class_is_refused(void **state)
{
    anr_core_options o;
    test_options(&o);
    anr_heap *h = fx_init(state, &o);
    /* A slab of 1 KiB objects (its bitmap past the last slot is all ones). */
    char *q = anr_core_alloc(h, 1024, 0, 0);
    assert_non_null(q);
    unsigned real_cls = h->class_of[(1024 + 15) >> 4];
    unsigned cls;
    size_t idx;
    const _anr_page *e = _anr_slab_slot(h, q, &cls, &idx, h->nclasses);
    assert_non_null(e); /* the live object is found, with its class */
    assert_int_equal(cls, real_cls);

    /* What a reader sees if this slab had replaced one of the 16-byte
     * class at the same head: slab_at still says class 0. Slot 200 of that
     * geometry lies on a padding bit of the 1 KiB slab's bitmap. */
    uint32_t head = (uint32_t)(e - h->pages);
    const size_t stale_slot = 200;
    assert_true(stale_slot >= h->cls[real_cls].nobj);
    assert_true(stale_slot < h->cls[0].nobj);
    char *p = (char *)_anr_page_addr(h, head) + stale_slot * h->cls[0].size;
    uint32_t pi = _anr_page_index(h, p);
    assert_true(pi - head < h->cls[real_cls].pages); /* inside the 1 KiB slab */
    uint16_t real = h->slab_at[pi];
    h->slab_at[pi] = _anr_slab_at_make(0, pi - head);
    const _anr_page *stale = _anr_slab_slot(h, p, &cls, &idx, h->nclasses);
    h->slab_at[pi] = real;
    if (stale)
        fail_msg("a stale slab_at entry (class 0) over a slab of class %u passed as slot %zu of "
                 "class %u",
                 real_cls, idx, cls);

    assert_int_equal(anr_core_free(h, q), ANR_ERR_NONE);
    assert_verify(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_stale_class_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Aligned allocation: every power-of-two alignment up to 1 MiB (and 0, the
 * default) with sizes around the alignment and a geometric sweep. */
#include "core_test.h"

#define MAX_ALIGN_TESTED (1 * MiB)
#define MAX_SIZES 64

static size_t effective(size_t align)
{
    return align == 0 ? alignof(max_align_t) : align;
}

/* Allocates, checks and fills one object; returns it. */
static void *one(anr_heap *h, size_t size, size_t align, uint32_t tag)
{
    void *p = anr_core_alloc(h, size, align, 0);
    if (p == NULL) fail_msg("alloc(size %zu, align %zu) returned NULL", size, align);
    if (!is_aligned(p, effective(align)))
        fail_msg("alloc(size %zu, align %zu) = %p: misaligned", size, align, p);
    size_t u = anr_core_usable_size(h, p);
    if (u < size) fail_msg("alloc(size %zu, align %zu): usable %zu", size, align, u);
    fill_pat(p, u, tag);
    return p;
}

static size_t sizes_for(size_t align, size_t *out)
{
    size_t n = 0, a = effective(align);
    out[n++] = 1;
    if (a > 1) out[n++] = a - 1;
    out[n++] = a;
    out[n++] = a + 1;
    out[n++] = 3 * a;
    for (size_t s = 1; s <= 1 * MiB && n < MAX_SIZES; s = s * 7 / 4 + 1)
        out[n++] = s;
    out[n++] = 1 * MiB;
    return n;
}

static void test_default_alignment(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    assert_int_equal(anr_core_alignment(), alignof(max_align_t));
    for (size_t s = 0; s < 300; s++) {
        void *p = anr_core_alloc(h, s, 0, 0);
        assert_non_null(p);
        if (!is_aligned(p, alignof(max_align_t)))
            fail_msg("alloc(%zu) = %p: not aligned to %zu", s, p, alignof(max_align_t));
        assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
    }
}

/* All sizes of one alignment live at once: aligned, usable, disjoint, intact. */
static void test_every_alignment(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    size_t aligns[32], na = 0;
    aligns[na++] = 0;
    for (size_t a = 1; a <= MAX_ALIGN_TESTED; a <<= 1)
        aligns[na++] = a;
    for (size_t k = 0; k < na; k++) {
        size_t sizes[MAX_SIZES + 8];
        void *v[MAX_SIZES + 8];
        size_t n = sizes_for(aligns[k], sizes);
        for (size_t i = 0; i < n; i++)
            v[i] = one(h, sizes[i], aligns[k], (uint32_t)(k * 100 + i));
        for (size_t i = 0; i < n; i++) {
            size_t u = anr_core_usable_size(h, v[i]);
            check_pat(v[i], u, (uint32_t)(k * 100 + i));
            for (size_t j = i + 1; j < n; j++) {
                uintptr_t a0 = (uintptr_t)v[i], a1 = a0 + u;
                uintptr_t b0 = (uintptr_t)v[j], b1 = b0 + anr_core_usable_size(h, v[j]);
                if (a0 < b1 && b0 < a1)
                    fail_msg("align %zu: objects of %zu and %zu bytes overlap", aligns[k], sizes[i],
                             sizes[j]);
            }
        }
        for (size_t i = 0; i < n; i++)
            if (anr_core_free(h, v[i]) != ANR_ERR_NONE)
                fail_msg("align %zu: free of the %zu-byte object failed", aligns[k], sizes[i]);
        assert_verify(h);
        anr_core_stats s = stats_of(h);
        assert_int_equal(s.objects_in_use, 0);
        assert_int_equal(s.bytes_in_use, 0);
    }
}

/* Sizes smaller than the alignment, and alignment padding that leaves free
 * space in front: that space is reusable and the heap stays sound. */
static void test_small_sizes_big_alignments(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    for (size_t a = sys_page(); a <= MAX_ALIGN_TESTED; a <<= 1) {
        void *v[8];
        for (int i = 0; i < 8; i++) {
            /* interleave plain objects so the aligned ones are never at the
             * next free page by chance */
            void *filler = one(h, 3 * sys_page() + 5, 0, 1);
            v[i] = one(h, (size_t)(i * 40 + 1), a, (uint32_t)i);
            assert_int_equal(anr_core_free(h, filler), ANR_ERR_NONE);
        }
        for (int i = 0; i < 8; i++) {
            check_pat(v[i], anr_core_usable_size(h, v[i]), (uint32_t)i);
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        }
        assert_verify(h);
    }
    assert_int_equal(stats_of(h).objects_in_use, 0);
}

/* Aligned objects among small ones in slabs: a slab class that is not a
 * multiple of the alignment must still give aligned objects. */
static void test_aligned_small(void **state)
{
    anr_heap *h = fx_init(state, NULL);
    static const size_t aligns[] = {32, 64, 128, 256, 512, 1024, 2048};
    for (size_t k = 0; k < sizeof aligns / sizeof aligns[0]; k++) {
        void *v[100];
        for (int i = 0; i < 100; i++)
            v[i] = one(h, (size_t)(i % 7) * 16 + 1, aligns[k], (uint32_t)i);
        for (int i = 0; i < 100; i++) {
            check_pat(v[i], anr_core_usable_size(h, v[i]), (uint32_t)i);
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        }
        assert_verify(h);
    }
}

/* A large aligned object freed and asked for again, over and over (an
 * aligned I/O buffer per request): the freed run, aligned already, serves
 * the next one. The heap once asked for n + align - 1 pages of one free
 * run; the run freed (n pages, dirty) sat between the clean alignment gaps
 * and never fit, so each round took fresh pages past the top: a program
 * with one live 160 KiB block grew to 1.1 GB of RSS and 32 GiB of mapping
 * used. Here the heap's top stays within a few objects. */
static void test_aligned_run_reused(void **state)
{
    anr_heap *h = fx_init_runs(state);
    size_t page = sys_page();
    static const size_t shape[][2] = {{40, 32}, {5, 4}, {3, 2}, {17, 16}}; /* pages, alignment */
    for (size_t k = 0; k < sizeof shape / sizeof shape[0]; k++) {
        size_t size = shape[k][0] * page, align = shape[k][1] * page;
        for (unsigned i = 0; i < 2000; i++) {
            void *p = one(h, size, align, i);
            assert_int_equal(anr_core_free(h, p), ANR_ERR_NONE);
        }
    }
    anr_core_stats s = stats_of(h);
    size_t bound = 4 * (40 + 32) * page;
    if (s.pages_high_water * page > bound)
        fail_msg("4 x 2000 aligned objects of at most 40 pages, one live at a time: %zu pages "
                 "of the mapping used (bound %zu)",
                 s.pages_high_water, bound / page);
    assert_int_equal(s.objects_in_use, 0);
    assert_verify(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_default_alignment),
        UNIT(test_every_alignment),
        UNIT(test_small_sizes_big_alignments),
        UNIT(test_aligned_small),
        UNIT(test_aligned_run_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

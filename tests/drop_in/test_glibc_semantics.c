/* glibc's allocation API as unmodified programs expect it (DESIGN.md, "Traps
 * a drop-in allocator meets"): every expectation here is glibc's own
 * behaviour, so the same source also passes on plain glibc (the _glibc
 * reference build). Linked with libgmalloc.so it checks the drop-in, and
 * gmalloc_owns() proves that the calls really reach gmalloc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dropin.h"

/* glibc exports these (and gmalloc interposes them) but no header declares them. */
extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);

#ifdef DROPIN_GMALLOC
static anr_core_stats gm_stats(void)
{
    anr_core_stats s;
    assert_int_equal(gmalloc_get_stats(&s), 0);
    return s;
}
#endif

static void test_malloc_zero_unique(void **state)
{
    (void)state;
    void *p[16];
    for (int i = 0; i < 16; i++) {
        p[i] = malloc(dr_opaque(0));
        assert_non_null(p[i]);
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(p[i], p[j]);
    }
    for (int i = 0; i < 16; i++)
        free(p[i]);
}

static void test_free_null(void **state)
{
    (void)state;
    errno = 77;
    free(NULL);
    free(dr_launder(NULL));
    assert_int_equal(errno, 77);
}

static void test_realloc_null_allocates(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 100, 5000, 100000, 3 * MiB};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *p = realloc(NULL, sizes[i]);
        assert_non_null(p);
        assert_true(malloc_usable_size(p) >= sizes[i]);
        memset(p, 0x5a, sizes[i]);
        free(p);
    }
}

static void test_realloc_zero_frees(void **state)
{
    (void)state;
    const size_t sizes[] = {1, 100, 5000, 100000, 3 * MiB};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *p = malloc(sizes[i]);
        assert_non_null(p);
        memset(p, 1, sizes[i]);
#ifdef DROPIN_GMALLOC
        anr_core_stats before = gm_stats();
#endif
        errno = 0;
        void *q = realloc(p, dr_opaque(0));
        assert_null(q);
#ifdef DROPIN_GMALLOC
        /* The object really went away. */
        anr_core_stats after = gm_stats();
        assert_int_equal(after.objects_in_use + 1, before.objects_in_use);
#endif
    }
}

/* Grow and shrink across slab classes, page runs and multi-MiB blocks. */
static void test_realloc_keeps_contents(void **state)
{
    (void)state;
    const size_t steps[] = {1,     16,    17,       100,     4000,     4097,   40000,
                            65536, MiB,   3 * MiB,  5 * MiB, 2 * MiB,  100000, 33000,
                            4096,  511,   24,       1,       200000,   8,      8 * MiB};
    size_t n = sizeof(steps) / sizeof(steps[0]);
    unsigned char *p = malloc(steps[0]);
    assert_non_null(p);
    size_t cur = steps[0];
    dr_fill(p, cur, 1234);
    for (size_t i = 1; i < n; i++) {
        size_t next = steps[i];
        unsigned char *q = realloc(p, next);
        assert_non_null(q);
        size_t keep = cur < next ? cur : next;
        size_t bad = dr_check(q, keep, 1234);
        if (bad != SIZE_MAX)
            fail_msg("realloc %zu -> %zu lost byte %zu", cur, next, bad);
        assert_true(malloc_usable_size(q) >= next);
        dr_fill(q, next, 1234);
        p = q;
        cur = next;
    }
    free(p);
}

static void test_calloc_overflow(void **state)
{
    (void)state;
    const size_t pairs[][2] = {
        {SIZE_MAX, 2},
        {SIZE_MAX / 2 + 1, 2},
        {(SIZE_MAX >> (sizeof(size_t) * 4)) + 2, (SIZE_MAX >> (sizeof(size_t) * 4)) + 2},
        {3, SIZE_MAX / 2}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        errno = 0;
        void *p = calloc(dr_opaque(pairs[i][0]), dr_opaque(pairs[i][1]));
        assert_null(p);
        assert_int_equal(errno, ENOMEM);
    }
}

static void test_malloc_huge(void **state)
{
    (void)state;
    const size_t sizes[] = {SIZE_MAX, SIZE_MAX / 2 + 1, SIZE_MAX - 4096, SIZE_MAX / 2 + 4096};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        errno = 0;
        void *p = malloc(dr_opaque(sizes[i]));
        assert_null(p);
        assert_int_equal(errno, ENOMEM);
        errno = 0;
        p = calloc(1, dr_opaque(sizes[i]));
        assert_null(p);
        assert_int_equal(errno, ENOMEM);
        /* A failed realloc leaves the block alone. */
        char *q = malloc(32);
        assert_non_null(q);
        memset(q, 0x33, 32);
        errno = 0;
        assert_null(realloc(dr_launder(q), dr_opaque(sizes[i])));
        assert_int_equal(errno, ENOMEM);
        for (int j = 0; j < 32; j++)
            assert_int_equal((unsigned char)q[j], 0x33);
        free(q);
    }
}

static void test_reallocarray_overflow(void **state)
{
    (void)state;
    const size_t sizes[] = {40, 100000};
    for (size_t i = 0; i < 2; i++) {
        unsigned char *p = malloc(sizes[i]);
        assert_non_null(p);
        dr_fill(p, sizes[i], 99);
        errno = 0;
        void *q = reallocarray(dr_launder(p), dr_opaque(SIZE_MAX / 2), dr_opaque(3));
        assert_null(q);
        assert_int_equal(errno, ENOMEM);
        assert_int_equal(dr_check(p, sizes[i], 99), SIZE_MAX);
        assert_true(malloc_usable_size(p) >= sizes[i]);
        /* Still live: it can grow and be freed. */
        q = reallocarray(p, 2, sizes[i]);
        assert_non_null(q);
        assert_int_equal(dr_check(q, sizes[i], 99), SIZE_MAX);
        free(q);
    }
}

static void test_posix_memalign_bad(void **state)
{
    (void)state;
    const size_t bad[] = {0, 3, 24, sizeof(void *) / 2, sizeof(void *) + 1, 3 * 4096};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        void *sentinel = (void *)(uintptr_t)0xdeadbeef;
        void *out = sentinel;
        int rc = posix_memalign(&out, dr_opaque(bad[i]), 64);
        if (rc != EINVAL)
            fail_msg("posix_memalign(align %zu) returned %d, want EINVAL", bad[i], rc);
        assert_ptr_equal(out, sentinel);
    }
}

/* Keeps all blocks of one alignment live together, so that an overlap shows. */
#define NSIZES 5
static void check_aligned_set(void *ptrs[NSIZES], const size_t sizes[NSIZES], size_t align)
{
    for (int k = 0; k < NSIZES; k++) {
        assert_non_null(ptrs[k]);
        if ((uintptr_t)ptrs[k] % align)
            fail_msg("%p not aligned to %zu", ptrs[k], align);
        assert_true(malloc_usable_size(ptrs[k]) >= sizes[k]);
        dr_fill(ptrs[k], sizes[k], align + (size_t)k);
    }
    for (int k = 0; k < NSIZES; k++) {
        assert_int_equal(dr_check(ptrs[k], sizes[k], align + (size_t)k), SIZE_MAX);
        free(ptrs[k]);
    }
}

static void test_posix_memalign_good(void **state)
{
    (void)state;
    for (size_t align = sizeof(void *); align <= MiB; align <<= 1) {
        const size_t sizes[NSIZES] = {1, align / 2 + 1, align, align + 1, 2 * align + 8};
        void *ptrs[NSIZES];
        for (int k = 0; k < NSIZES; k++) {
            ptrs[k] = NULL;
            int rc = posix_memalign(&ptrs[k], align, sizes[k]);
            if (rc != 0)
                fail_msg("posix_memalign(align %zu, size %zu) = %d", align, sizes[k], rc);
        }
        check_aligned_set(ptrs, sizes, align);
    }
}

static void test_aligned_alloc(void **state)
{
    (void)state;
    for (size_t align = 1; align <= MiB; align <<= 1) {
        const size_t sizes[NSIZES] = {align, 2 * align, 3 * align, 8 * align, align * 17};
        void *ptrs[NSIZES];
        for (int k = 0; k < NSIZES; k++)
            ptrs[k] = aligned_alloc(align, sizes[k]);
        check_aligned_set(ptrs, sizes, align);
    }
}

static void test_memalign(void **state)
{
    (void)state;
    for (size_t align = 1; align <= MiB; align <<= 1) {
        const size_t sizes[NSIZES] = {0, 1, align, align + 3, 3 * align};
        void *ptrs[NSIZES];
        for (int k = 0; k < NSIZES; k++)
            ptrs[k] = memalign(align, sizes[k]);
        check_aligned_set(ptrs, sizes, align);
        void *p = __libc_memalign(align, 100);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % align, 0);
        free(p);
    }
}

static void test_valloc_pvalloc(void **state)
{
    (void)state;
    size_t pg = dr_page();
    const size_t sizes[] = {0, 1, 100, pg - 1, pg, pg + 1, 3 * pg + 5, MiB + 1};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        char *v = valloc(n);
        assert_non_null(v);
        assert_int_equal((uintptr_t)v % pg, 0);
        assert_true(malloc_usable_size(v) >= n);
        memset(v, 0x11, n);

        char *pv = pvalloc(n);
        assert_non_null(pv);
        assert_int_equal((uintptr_t)pv % pg, 0);
        size_t rounded = (n + pg - 1) / pg * pg; /* glibc: pvalloc(0) is minimal */
        if (malloc_usable_size(pv) < rounded)
            fail_msg("pvalloc(%zu): usable %zu < %zu", n, malloc_usable_size(pv), rounded);
        memset(pv, 0x22, rounded); /* the whole rounded size is ours */
        for (size_t j = 0; j < n; j++)
            if (v[j] != 0x11)
                fail_msg("valloc(%zu) block changed at %zu by the pvalloc block", n, j);
        free(v);
        free(pv);
    }
}

/* All of malloc_usable_size is writable and belongs to this object alone. */
static void test_usable_size(void **state)
{
    (void)state;
    enum { K = 6 };
    size_t sizes[1200];
    size_t n = 0;
    for (size_t s = 0; s <= 1024; s++)
        sizes[n++] = s;
    for (size_t s = 1024; s <= 4 * MiB; s = s * 5 / 4) {
        sizes[n++] = s - 1;
        sizes[n++] = s + 1;
    }
    assert_true(n <= sizeof(sizes) / sizeof(sizes[0]));
    for (size_t i = 0; i < n; i++) {
        unsigned char *p[K];
        size_t u[K];
        for (int k = 0; k < K; k++) {
            p[k] = malloc(sizes[i]);
            assert_non_null(p[k]);
            u[k] = malloc_usable_size(p[k]);
            if (u[k] < sizes[i])
                fail_msg("malloc(%zu): usable size %zu", sizes[i], u[k]);
            dr_fill(p[k], u[k], (uint64_t)k);
        }
        for (int k = 0; k < K; k++) {
            size_t bad = dr_check(p[k], u[k], (uint64_t)k);
            if (bad != SIZE_MAX)
                fail_msg("malloc(%zu), usable %zu: byte %zu overwritten by a neighbour", sizes[i],
                         u[k], bad);
            free(p[k]);
        }
    }
}

/* calloc must zero memory that was used and freed (a recycled block). */
static void test_calloc_zeroes_recycled(void **state)
{
    (void)state;
    const size_t sizes[] = {8, 16, 24, 100, 1000, 4096, 5000, 40000, 70000, MiB, 4 * MiB + 3};
    enum { MAXK = 64 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t size = sizes[i];
        size_t k = 32 * MiB / size;
        if (k > MAXK)
            k = MAXK;
        for (int round = 0; round < 8; round++) {
            unsigned char *p[MAXK];
            for (size_t j = 0; j < k; j++) {
                p[j] = malloc(size);
                assert_non_null(p[j]);
                memset(p[j], 0xAA, malloc_usable_size(p[j]));
            }
            for (size_t j = 0; j < k; j++)
                free(p[j]);
            for (size_t j = 0; j < k; j++) {
                p[j] = (round & 1) && size % 8 == 0 ? calloc(size / 8, 8) : calloc(1, size);
                assert_non_null(p[j]);
                for (size_t b = 0; b < size; b++)
                    if (p[j][b] != 0)
                        fail_msg("calloc(%zu) round %d: byte %zu is 0x%02x", size, round, b,
                                 p[j][b]);
            }
            for (size_t j = 0; j < k; j++)
                free(p[j]);
        }
    }
}

static void test_free_preserves_errno(void **state)
{
    (void)state;
    char *small = malloc(24);
    char *large = malloc(8 * MiB);
    assert_non_null(small);
    assert_non_null(large);
    memset(large, 1, 8 * MiB);
    errno = 1234;
    free(small);
    assert_int_equal(errno, 1234);
    free(large);
    assert_int_equal(errno, 1234);

    /* A batch well past the default page ceiling (1024 pages): some free in
     * it hands pages back. */
    enum { N = 512 };
    static char *batch[N];
    for (int i = 0; i < N; i++) {
        batch[i] = malloc(64 * KiB);
        assert_non_null(batch[i]);
        memset(batch[i], 2, 64 * KiB);
    }
#ifdef DROPIN_GMALLOC
    anr_core_stats before = gm_stats();
#endif
    for (int i = 0; i < N; i++) {
        errno = 1234;
        free(batch[i]);
        if (errno != 1234)
            fail_msg("free #%d of the batch changed errno to %d", i, errno);
    }
#ifdef DROPIN_GMALLOC
    anr_core_stats after = gm_stats();
    if (after.madvise_calls == before.madvise_calls) {
        /* The earlier tests faulted pages in again after a purge, so these
         * were kept for reuse (REUSE_MS, 1 s by default); after the window
         * the next free that takes the heap lock hands them back. */
        struct timespec nap = {1, 200 * 1000 * 1000};
        nanosleep(&nap, NULL);
        void *one = malloc(64 * KiB);
        assert_non_null(one);
        errno = 1234;
        free(one);
        assert_int_equal(errno, 1234);
        after = gm_stats();
    }
    if (after.madvise_calls == before.madvise_calls)
        fail_msg("freeing %d x 64 KiB handed nothing back (the purge was not exercised)", N);
#endif
    /* Also a free that lands in a partly used slab, and one of malloc(0). */
    void *z = malloc(0);
    errno = 1234;
    free(z);
    assert_int_equal(errno, 1234);
}

static void test_mallinfo2_grows(void **state)
{
    (void)state;
    enum { N = 512 };
    static char *p[N];
    struct mallinfo2 m0 = mallinfo2();
    size_t req = 0;
    for (int i = 0; i < N; i++) {
        p[i] = malloc(64 * KiB);
        assert_non_null(p[i]);
        memset(p[i], 3, 64 * KiB);
        req += 64 * KiB;
    }
    struct mallinfo2 m1 = mallinfo2();
    print_message("mallinfo2: arena %zu -> %zu, uordblks %zu -> %zu, fordblks %zu\n", m0.arena,
                  m1.arena, m0.uordblks, m1.uordblks, m0.fordblks);
    assert_true(m1.uordblks >= m0.uordblks + req);
    assert_true(m1.arena >= m1.uordblks);
    if (req > m0.fordblks)
        assert_true(m1.arena > m0.arena);
    for (int i = 0; i < N; i++)
        free(p[i]);
    struct mallinfo2 m2 = mallinfo2();
    assert_true(m2.uordblks + req <= m1.uordblks);
}

static void test_malloc_trim(void **state)
{
    (void)state;
    enum { N = 1024 };
    static char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(64 * KiB);
        assert_non_null(p[i]);
        memset(p[i], 4, 64 * KiB);
    }
    for (int i = 0; i < N; i++)
        free(p[i]);
    size_t before = dr_rss();
    assert_true(before > 0);
    malloc_trim(0);
    size_t after = dr_rss();
    print_message("malloc_trim(0): RSS %zu KiB -> %zu KiB\n", before / KiB, after / KiB);
    /* A page or two of slack for this function's own stack. */
    assert_true(after <= before + 64 * KiB);
}

static void test_malloc_stats_runs(void **state)
{
    (void)state;
    malloc_stats(); /* writes to stderr; must neither crash nor deadlock */
}

static void test_libc_aliases(void **state)
{
    (void)state;
    char *a = __libc_malloc(100);
    assert_non_null(a);
    memset(a, 1, 100);
    char *b = __libc_calloc(10, 10);
    assert_non_null(b);
    for (int i = 0; i < 100; i++)
        assert_int_equal(b[i], 0);
    a = __libc_realloc(a, 5000);
    assert_non_null(a);
    assert_int_equal(a[99], 1);
#ifdef DROPIN_GMALLOC
    assert_true(gmalloc_owns(a));
    assert_true(gmalloc_owns(b));
#endif
    /* Mixing the alias and the public name is fine: they are one allocator. */
    free(a);
    __libc_free(b);
}

/* Last: mallopt changes the allocator's parameters for the rest of the run. */
static void test_mallopt(void **state)
{
    (void)state;
    assert_int_equal(mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024), 1);
    assert_int_equal(mallopt(M_MMAP_THRESHOLD, 128 * 1024), 1);
    assert_int_equal(mallopt(M_ARENA_MAX, 1), 1);
    void *p = malloc(300 * KiB);
    assert_non_null(p);
    free(p);
}

static void test_interposed(void **state)
{
    (void)state;
#ifdef DROPIN_GMALLOC
    static char not_heap[64];
    char on_stack[64];
    void *small = malloc(10);
    void *big = malloc(8 * MiB);
    void *al = aligned_alloc(4096, 8192);
    assert_non_null(small);
    assert_non_null(big);
    assert_non_null(al);
    memset(small, 0, 10);
    memset(big, 0, 4096);
    memset(al, 0, 8192);
    assert_true(gmalloc_owns(small));
    assert_true(gmalloc_owns(big));
    assert_true(gmalloc_owns(al));
    assert_false(gmalloc_owns(not_heap));
    assert_false(gmalloc_owns(on_stack));
    free(small);
    free(big);
    free(al);
    /* strdup is inside libc: it must get gmalloc's malloc too. */
    char *s = strdup("interposed");
    assert_true(gmalloc_owns(s));
    free(s);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interposed),
        cmocka_unit_test(test_malloc_zero_unique),
        cmocka_unit_test(test_free_null),
        cmocka_unit_test(test_realloc_null_allocates),
        cmocka_unit_test(test_realloc_zero_frees),
        cmocka_unit_test(test_realloc_keeps_contents),
        cmocka_unit_test(test_calloc_overflow),
        cmocka_unit_test(test_malloc_huge),
        cmocka_unit_test(test_reallocarray_overflow),
        cmocka_unit_test(test_posix_memalign_bad),
        cmocka_unit_test(test_posix_memalign_good),
        cmocka_unit_test(test_aligned_alloc),
        cmocka_unit_test(test_memalign),
        cmocka_unit_test(test_valloc_pvalloc),
        cmocka_unit_test(test_usable_size),
        cmocka_unit_test(test_calloc_zeroes_recycled),
        cmocka_unit_test(test_free_preserves_errno),
        cmocka_unit_test(test_mallinfo2_grows),
        cmocka_unit_test(test_malloc_trim),
        cmocka_unit_test(test_malloc_stats_runs),
        cmocka_unit_test(test_libc_aliases),
        cmocka_unit_test(test_mallopt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

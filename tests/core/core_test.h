/* Shared helpers for the anr_core unit tests (tests/core/test_*.c).
 *
 * Each test creates its own heap through fx_init() and the fixture's teardown
 * destroys it, so a failed assertion (cmocka longjmps out of the test) still
 * unmaps the heap. Everything here is static inline: each test uses a subset.
 */
#ifndef ANR_CORE_TEST_H
#define ANR_CORE_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "anr_core.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* Small mappings so that the tests also run under valgrind and with -m32. */
#define TEST_MAPPING (256 * MiB)

typedef struct fixture {
    anr_heap *heap;
} fixture;

static inline int fx_setup(void **state)
{
    static fixture fx;
    fx.heap = NULL;
    *state = &fx;
    return 0;
}

static inline int fx_teardown(void **state)
{
    fixture *fx = *state;
    if (fx->heap != NULL) anr_core_destroy(fx->heap);
    fx->heap = NULL;
    return 0;
}

#define UNIT(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

/* Options with the defaults and a small mapping. */
static inline void test_options(anr_core_options *o)
{
    anr_core_default_options(o);
    o->mapping_size = TEST_MAPPING;
    /* The suite runs twice: without and with thread caches. */
    const char *tc = getenv("ANR_TEST_THREAD_CACHE");
    o->thread_cache = tc && *tc == '1';
}

/* For tests that watch the page-run layer itself (coalescing, dirty pages,
 * purging): freed runs go straight back to the heap instead of waiting in
 * a thread cache's run bins for reuse. */
static inline void runs_uncached(anr_core_options *o) { o->tcache_run_bytes = 1; }

/* Creates the test's heap with `o` (NULL: test_options()). */
static inline anr_heap *fx_init(void **state, const anr_core_options *o)
{
    fixture *fx = *state;
    anr_core_options def;
    if (o == NULL) {
        test_options(&def);
        o = &def;
    }
    assert_null(fx->heap);
    int rc = anr_core_init(&fx->heap, o);
    assert_int_equal(rc, 0);
    assert_non_null(fx->heap);
    return fx->heap;
}

/* fx_init() with test_options() and runs_uncached(). */
static inline anr_heap *fx_init_runs(void **state)
{
    anr_core_options o;
    test_options(&o);
    runs_uncached(&o);
    return fx_init(state, &o);
}

static inline size_t sys_page(void)
{
    long p = sysconf(_SC_PAGESIZE);
    assert_true(p > 0);
    return (size_t)p;
}

static inline anr_core_stats stats_of(anr_heap *h)
{
    anr_core_stats s;
    memset(&s, 0, sizeof s);
    anr_core_get_stats(h, &s);
    return s;
}

static inline size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* The largest built-in slab class: bigger requests are page runs. */
static inline size_t largest_class(void)
{
    const uint32_t *cls;
    size_t n = anr_core_default_slab_sizes(&cls);
    assert_true(n >= 1);
    return cls[n - 1];
}

/* The fewest pages a large (page-run) object of the built-in classes has. */
static inline size_t min_large_pages(void)
{
    return round_up(largest_class() + 1, sys_page()) / sys_page();
}

static inline int is_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* Fails with the broken invariant's name if anr_core_verify() finds one. */
#define assert_verify(h)                                                                           \
    do {                                                                                           \
        const char *why_ = anr_core_verify(h);                                                     \
        if (why_ != NULL) fail_msg("anr_core_verify: %s", why_);                                   \
    } while (0)

/* Reports through hooks.on_error, counted, for tests that expect some
 * (set o.hooks.on_error = count_error and clear errors_seen first). */
static unsigned errors_seen __attribute__((unused));
static anr_error last_error __attribute__((unused));
__attribute__((unused)) static void count_error(void *ctx, anr_error err, anr_op op,
                                                const void *p)
{
    (void)ctx, (void)op, (void)p;
    errors_seen++;
    last_error = err;
}

/* Waits for a forked child and asserts that it exited with status 0. */
static inline void assert_child_ok(pid_t pid)
{
    assert_true(pid > 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* Deterministic generator (xorshift32): a fixed seed gives a fixed run. */
static inline uint32_t rng_next(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* A byte pattern that depends on the object's tag and the offset. */
static inline unsigned char pat(uint32_t tag, size_t i)
{
    return (unsigned char)(tag * 131u + (uint32_t)i * 7u + (uint32_t)(i >> 8));
}

static inline void fill_pat(void *p, size_t n, uint32_t tag)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        c[i] = pat(tag, i);
}

/* Fails naming the first byte that differs from the pattern. */
static inline void check_pat(const void *p, size_t n, uint32_t tag)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != pat(tag, i))
            fail_msg("object %p (tag %u): byte %zu is 0x%02x, expected 0x%02x", p, (unsigned)tag, i,
                     c[i], pat(tag, i));
}

/* Fails naming the first non-zero byte. */
static inline void check_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != 0) fail_msg("object %p: byte %zu of %zu is 0x%02x, expected 0", p, i, n, c[i]);
}

/* Stamps one word per page (and the last bytes) of a large object: cheap
 * enough for churn tests under valgrind, still catches overlap and reuse. */
static inline void stamp(void *p, size_t n, uint32_t tag)
{
    size_t pg = sys_page();
    unsigned char *c = p;
    for (size_t off = 0; off + sizeof(uint32_t) < n; off += pg) { /* clear of c[n - 1] */
        uint32_t v = tag ^ (uint32_t)(off / pg) * 2654435761u;
        memcpy(c + off, &v, sizeof v);
    }
    c[n - 1] = (unsigned char)tag;
}

static inline void check_stamp(const void *p, size_t n, uint32_t tag)
{
    size_t pg = sys_page();
    const unsigned char *c = p;
    for (size_t off = 0; off + sizeof(uint32_t) < n; off += pg) {
        uint32_t v = tag ^ (uint32_t)(off / pg) * 2654435761u, got;
        memcpy(&got, c + off, sizeof got);
        if (got != v)
            fail_msg("object %p (%zu bytes, tag %u): word at %zu is %#x, expected %#x", p, n,
                     (unsigned)tag, off, (unsigned)got, (unsigned)v);
    }
    if (c[n - 1] != (unsigned char)tag)
        fail_msg("object %p (%zu bytes, tag %u): last byte changed", p, n, (unsigned)tag);
}

#endif

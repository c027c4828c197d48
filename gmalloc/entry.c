/* The interposed libc allocation surface. Each entry is a thin shim over
 * anr_core with glibc's corner cases: malloc(0) is a unique pointer,
 * realloc(p, 0) frees, failures set ENOMEM, free() keeps errno, and a pointer
 * from outside our mapping (the dynamic loader's own early memory) is left
 * alone. */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <gmalloc.h>

#include "internal.h"
/* The engine's inline fast paths: the common malloc and free need no call. */
#include "../anr_core/fast.h"

#define EXPORT __attribute__((visibility("default")))

/* malloc and free try the engine's inline fast path first, with nothing
 * else on the way: one load of _gm_fast_heap (NULL until init, and for
 * good when the debug kit is on) decides. Everything else is in separate
 * functions, so the fast path saves few registers (none in malloc, two in
 * free, gcc -O2 x86-64): page runs (malloc_run, free_run: reached with
 * the heap, and in free the cache, already found), the slow halves (the
 * debug kit, no heap or cache yet, an empty small-object bin; they try
 * the page-run bins too) and the locked path (malloc_full, free_full). */

/* The locked path, for a request no thread-cache bin served (out of line,
 * as free_full). */
static __attribute__((noinline)) void *malloc_full(size_t size, anr_heap *h)
{
    void *p = _anr_alloc_after_fast(h, size, 0, 0);
    return p ? p : _gm_alloc_failed("malloc", size);
}

static __attribute__((noinline)) void *malloc_slow(size_t size, void *caller)
{
    if (GM_DEBUG_ON())
        return _gm_dbg_alloc("malloc", size, 0, false, caller);
    anr_heap *h = gm_heap();
    void *p = _anr_fast_run_alloc(h, size); /* a page run from this thread's bin */
    return p ? p : malloc_full(size, h);
}

/* malloc(size) past the largest cached class: a page run from this
 * thread's run bin, or the locked path. malloc found the heap (so the
 * debug kit is off), which malloc_slow would look up again. */
static __attribute__((noinline)) void *malloc_run(size_t size, anr_heap *h)
{
    void *p = _anr_fast_run_alloc(h, size);
    return p ? p : malloc_full(size, h);
}

EXPORT void *malloc(size_t size)
{
    anr_heap *h = __atomic_load_n(&_gm_fast_heap, __ATOMIC_ACQUIRE);
    if (__builtin_expect(h != NULL, 1)) {
        void *p = _anr_fast_alloc(h, size);
        if (__builtin_expect(p != NULL, 1))
            return p;
        if (size > h->tc_fast_max)
            return malloc_run(size, h);
    }
    return malloc_slow(size, GM_CALLER);
}

/* The locked path, for a pointer that no thread-cache bin took (out of
 * line: the bins' paths save fewer registers). */
static __attribute__((noinline)) void free_full(anr_heap *h, void *p)
{
    if (!anr_core_owns(h, p))
        return; /* not ours: memory the loader had before we were called */
    int saved = errno;
    _anr_free_after_fast(h, p);
    errno = saved;
}

static __attribute__((noinline)) void free_slow(void *p, void *caller)
{
    if (!p)
        return;
    if (GM_DEBUG_ON()) {
        _gm_dbg_free(p, caller);
        return;
    }
    anr_heap *h = gm_heap();
    if (!_anr_fast_run_free(h, p))
        free_full(h, p);
}

/* free(p) of a pointer on no slab's page: a page run into this thread's run
 * bin, or the locked path. free found the heap (so the debug kit is off)
 * and the cache already, which free_slow would look up again. */
static __attribute__((noinline)) void free_run(anr_heap *h, _anr_tcache *tc, void *p)
{
    if (!_anr_fast_run_free_tc(h, tc, p))
        free_full(h, p);
}

EXPORT void free(void *p)
{
    anr_heap *h = __atomic_load_n(&_gm_fast_heap, __ATOMIC_ACQUIRE);
    if (__builtin_expect(h != NULL, 1)) {
        _anr_tcache *tc = _anr_tc_mine(h);
        if (__builtin_expect(tc != NULL, 1)) {
            int r = _anr_fast_free_tc(h, tc, p);
            if (__builtin_expect(r == FF_DONE, 1))
                return;
            if (r == FF_NOT_SLAB) {
                free_run(h, tc, p);
                return;
            }
        }
    }
    free_slow(p, GM_CALLER);
}

EXPORT void cfree(void *p) { free(p); }

EXPORT void *calloc(size_t n, size_t m)
{
    size_t size;
    if (__builtin_mul_overflow(n, m, &size)) {
        errno = ENOMEM;
        return NULL;
    }
    if (GM_DEBUG_ON())
        return _gm_dbg_alloc("calloc", size, 0, true, GM_CALLER);
    void *p = anr_core_alloc(gm_heap(), size, 0, ANR_ALLOC_ZERO);
    return p ? p : _gm_alloc_failed("calloc", size);
}

EXPORT void *realloc(void *p, size_t size)
{
    if (GM_DEBUG_ON())
        return _gm_dbg_realloc(p, size, GM_CALLER);
    if (!p)
        return malloc(size);
    if (size == 0) {
        free(p);
        return NULL;
    }
    anr_heap *h = gm_heap();
    if (!anr_core_owns(h, p)) {
        /* We cannot know how big a foreign block is, so we cannot move it. */
        _gm_on_error(NULL, ANR_ERR_FOREIGN, ANR_OP_REALLOC, p);
        errno = ENOMEM;
        return NULL;
    }
    anr_error err;
    void *q = anr_core_realloc(h, p, size, &err);
    if (q)
        return q;
    if (err != ANR_ERR_NONE) {
        errno = EINVAL;
        return NULL;
    }
    return _gm_alloc_failed("realloc", size);
}

EXPORT void *reallocarray(void *p, size_t n, size_t m)
{
    size_t size;
    if (__builtin_mul_overflow(n, m, &size)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, size);
}

static void *aligned(const char *fn, size_t align, size_t size, void *caller)
{
    if (GM_DEBUG_ON())
        return _gm_dbg_alloc(fn, size, align, false, caller);
    void *p = anr_core_alloc(gm_heap(), size, align, 0);
    return p ? p : _gm_alloc_failed(fn, size);
}

/* glibc's memalign takes any alignment and rounds it up to a power of two. */
EXPORT void *memalign(size_t align, size_t size)
{
    if (align & (align - 1)) {
        if (align > SIZE_MAX / 2 + 1) {
            errno = EINVAL;
            return NULL;
        }
        size_t a = 1;
        while (a < align)
            a <<= 1;
        align = a;
    }
    return aligned("memalign", align, size, GM_CALLER);
}

EXPORT void *aligned_alloc(size_t align, size_t size)
{
    if (align == 0 || (align & (align - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return aligned("aligned_alloc", align, size, GM_CALLER);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (align < sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    int saved = errno;
    void *p = aligned("posix_memalign", align, size, GM_CALLER);
    if (!p) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

EXPORT void *valloc(size_t size) { return aligned("valloc", page_size(), size, GM_CALLER); }

EXPORT void *pvalloc(size_t size)
{
    size_t page = page_size();
    size_t rounded = (size + page - 1) & ~(page - 1);
    if (rounded < size) {
        errno = ENOMEM;
        return NULL;
    }
    return aligned("pvalloc", page, rounded ? rounded : page, GM_CALLER);
}

EXPORT size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    if (GM_DEBUG_ON())
        return _gm_dbg_usable(p);
    anr_heap *h = gm_heap();
    if (!anr_core_owns(h, p))
        return 0;
    return anr_core_usable_size(h, p);
}

static struct mallinfo2 info(void)
{
    anr_core_stats s;
    anr_core_get_stats(gm_heap(), &s);
    struct mallinfo2 mi = {0};
    size_t held = (s.pages_in_use + s.pages_dirty) * s.page_size;
    mi.arena = held;
    mi.ordblks = s.objects_in_use;
    mi.usmblks = s.pages_peak * s.page_size;
    mi.uordblks = s.bytes_in_use;
    mi.fordblks = held > s.bytes_in_use ? held - s.bytes_in_use : 0;
    mi.keepcost = s.pages_dirty * s.page_size;
    return mi;
}

EXPORT struct mallinfo2 mallinfo2(void) { return info(); }

static int clamp_int(size_t v) { return v > INT32_MAX ? INT32_MAX : (int)v; }

EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = info();
    struct mallinfo m = {0};
    m.arena = clamp_int(m2.arena);
    m.ordblks = clamp_int(m2.ordblks);
    m.usmblks = clamp_int(m2.usmblks);
    m.uordblks = clamp_int(m2.uordblks);
    m.fordblks = clamp_int(m2.fordblks);
    m.keepcost = clamp_int(m2.keepcost);
    return m;
}

EXPORT int malloc_trim(size_t pad)
{
    (void)pad; /* every dirty page goes: our free pages hold no data */
    return anr_core_purge(gm_heap(), true) > 0;
}

EXPORT void malloc_stats(void) { gmalloc_print_stats(2); }

/* glibc's parameters are all accepted; the meaningful ones are mapped. */
EXPORT int mallopt(int param, int value)
{
    anr_heap *h = gm_heap();
    switch (param) {
    case M_TRIM_THRESHOLD: {
        if (value < 0)
            return 0;
        size_t ceiling = (size_t)value / (size_t)sysconf(_SC_PAGESIZE);
        /* A configured PAGE_FLOOR stays (the engine caps it at the ceiling). */
        size_t floor = _gm_cfg.page_floor ? _gm_cfg.page_floor : anr_core_default_floor(ceiling);
        anr_core_set_page_ceiling(h, ceiling, floor);
        return 1;
    }
    case M_CHECK_ACTION:
        _gm_cfg.on_error = (value & 2)   ? GM_ON_ERROR_ABORT
                           : (value & 1) ? GM_ON_ERROR_REPORT
                                         : GM_ON_ERROR_IGNORE;
        return 1;
    case M_MXFAST:
    case M_TOP_PAD:
    case M_MMAP_THRESHOLD:
    case M_MMAP_MAX:
    case M_PERTURB:
    case M_ARENA_TEST:
    case M_ARENA_MAX:
        return 1; /* no arenas, no mmap per block, no top to pad */
    default:
        return 0;
    }
}

/* glibc's internal names, called by some programs and by libc itself. */
EXPORT void *__libc_malloc(size_t) __attribute__((alias("malloc"), copy(malloc)));
EXPORT void __libc_free(void *) __attribute__((alias("free"), copy(free)));
EXPORT void *__libc_calloc(size_t, size_t) __attribute__((alias("calloc"), copy(calloc)));
EXPORT void *__libc_realloc(void *, size_t) __attribute__((alias("realloc"), copy(realloc)));
EXPORT void *__libc_memalign(size_t, size_t) __attribute__((alias("memalign"), copy(memalign)));
EXPORT void *__libc_valloc(size_t) __attribute__((alias("valloc"), copy(valloc)));
EXPORT void *__libc_pvalloc(size_t) __attribute__((alias("pvalloc"), copy(pvalloc)));

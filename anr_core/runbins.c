/* Run bins: a thread cache's short lists of page runs it freed, by length.
 *
 * Requests past the largest size class are page runs, and each one took the
 * heap lock twice (malloc and free) plus a coalesce and a split. A thread
 * that frees a run of n pages (n up to _ANR_RUN_BIN_PAGES, at most 64 KiB)
 * keeps it on bin n; its next malloc that needs n pages pops it, with no
 * lock (or one that needs n - 1 pages, if bin n - 1 is empty). A binned
 * run stays tagged in use in the page map (the heap counts it in use;
 * statistics subtract it, as they do slab bins) and carries the
 * free key in word 1, so a second free, a realloc or a size query of it is
 * reported as a double free by the locked path. Links are XORed with the
 * key and the holder's address, and checked when followed (fast.h's
 * bin_link and bin_next).
 *
 * The common pop and push are inline in fast.h (_anr_fast_run_alloc,
 * _anr_fast_run_free), tried before the functions here, which handle
 * what those leave: an empty bin (grow it, try one page longer), a full
 * one (spill), a flush request, a creation of the cache, a report.
 *
 * Bounds: per bin at most RUN_BIN_BYTES (at least one run), per thread at
 * most tc_run_bytes in all bins (THREAD_CACHE_RUN_BYTES). A bin's capacity adapts as the slab bins'
 * do, but goes down to 0: it starts at RUN_CAP_START, doubles when malloc
 * finds the bin empty and halves when frees find it full RUN_SHRINK_AFTER
 * times in a row, so a thread that only frees (a consumer, a program freeing
 * everything) ends up keeping none. Bins go back with the rest of the cache
 * (thread exit, flush requests, fork).
 */
#include "fast.h"

#define RUN_BIN_BYTES ((size_t)512 << 10)
#define DEFAULT_RUN_BYTES ((size_t)2 << 20)
#define RUN_CAP_START 2u
#define RUN_SHRINK_AFTER 4u

void _anr_run_bins_init(anr_heap *h, size_t run_bytes)
{
    h->run_min = h->run_max = 0;
    h->run_min_size = SIZE_MAX;
    h->tc_run_bytes = run_bytes ? run_bytes : DEFAULT_RUN_BYTES;
    if (!h->tc_on)
        return;
    size_t largest = h->cls[h->nclasses - 1].size;
    uint32_t lo = (uint32_t)((largest >> h->page_shift) + 1);
    uint32_t hi = (uint32_t)(((size_t)64 << 10) >> h->page_shift);
    if (hi > _ANR_RUN_BIN_PAGES)
        hi = _ANR_RUN_BIN_PAGES;
    if (hi < lo || h->tc_run_bytes < h->page_size * lo)
        return;
    h->run_min = lo;
    h->run_max = hi;
    h->run_min_size = largest + 1;
    for (uint32_t n = lo; n <= hi; n++) {
        size_t cap = RUN_BIN_BYTES / ((size_t)n << h->page_shift);
        h->run_bin_max[n] = (uint16_t)(cap ? cap : 1);
    }
}

void _anr_run_bins_reset(const anr_heap *h, _anr_tcache *tc)
{
    for (uint32_t n = 0; n <= _ANR_RUN_BIN_PAGES; n++) {
        tc->run_bin[n] = NULL;
        tc->run_n[n] = 0;
        tc->run_cap[n] = (uint16_t)(h->run_bin_max[n] < RUN_CAP_START ? h->run_bin_max[n]
                                                                       : RUN_CAP_START);
        tc->run_spills[n] = 0;
        tc->run_hit[n] = 0;
    }
    atomic_store_explicit(&tc->run_bytes, 0, memory_order_relaxed);
}

/* Owner: bytes in all bins, after the counts changed. */
static void run_recount(const anr_heap *h, _anr_tcache *tc)
{
    size_t pages = 0;
    for (uint32_t n = h->run_min; n <= h->run_max; n++)
        pages += (size_t)tc->run_n[n] * n;
    atomic_store_explicit(&tc->run_bytes, pages << h->page_shift, memory_order_relaxed);
}

/* Drops bin n after a use after free scribbled on a link: the rest stays
 * counted in use (a leak, never a wild pointer). */
static void run_bin_broken(anr_heap *h, _anr_tcache *tc, uint32_t n, const void *at)
{
    _anr_report(h, ANR_ERR_DEFERRED_LIST, ANR_OP_FREE, at);
    tc->run_bin[n] = NULL;
    __atomic_store_n(&tc->run_n[n], 0, __ATOMIC_RELAXED);
    run_recount(h, tc);
}

/* False if bin n is empty, or if its top lacks the free key (a fast pop
 * followed a scribbled link to it: fast.h's bin_link_next): reported, and
 * the bin dropped. */
static bool run_bin_sound(anr_heap *h, _anr_tcache *tc, uint32_t n)
{
    void *top = tc->run_bin[n];
    if (!top)
        return false;
    if (bin_top_ok(h, top))
        return true;
    run_bin_broken(h, tc, n, top);
    return false;
}

/* Owner: pops the newest run of bin n, or NULL (empty, or dropped). */
static void *run_pop(anr_heap *h, _anr_tcache *tc, uint32_t n)
{
    if (!run_bin_sound(h, tc, n))
        return NULL;
    void *p = tc->run_bin[n];
    void *next = _anr_run_next(h, p);
    if (next == BIN_BAD) {
        run_bin_broken(h, tc, n, p);
    } else {
        tc->run_bin[n] = next;
        _anr_run_moved(h, tc, n, false);
    }
    _anr_key_clear(p);
    return p;
}

/* This thread's cache, synced, if `size` is of a length the bins keep
 * (*n: its pages); NULL otherwise. */
static _anr_tcache *bins_for_size(anr_heap *h, size_t size, uint32_t *n)
{
    *n = (uint32_t)((size + h->page_size - 1) >> h->page_shift);
    if (size < h->run_min_size || *n < h->run_min || *n > h->run_max)
        return NULL;
    _anr_tcache *tc = _anr_tc_get(h);
    if (tc)
        _anr_tc_sync(h, tc);
    return tc;
}

void *_anr_run_bin_alloc(anr_heap *h, size_t size)
{
    uint32_t n;
    _anr_tcache *tc = bins_for_size(h, size, &n);
    if (!tc)
        return NULL;
    if (tc->run_bin[n]) {
        tc->run_hit[n] = 1;
        void *p = run_pop(h, tc, n);
        if (p)
            return p;
    }
    _anr_run_missed(h, tc, n);
    /* A run one page longer serves too (as in _anr_fast_run_alloc). */
    if (n < h->run_max && tc->run_bin[n + 1])
        return run_pop(h, tc, n + 1);
    return NULL;
}

/* The same for a run aligned to `align` (a power of two past the page):
 * the newest run of the length, if it is aligned. A program that frees and
 * allocates aligned buffers in turn gets its own back, without the lock;
 * anything else takes the locked path (no growth, no longer run: those
 * would rarely be aligned). */
void *_anr_run_bin_alloc_aligned(anr_heap *h, size_t size, size_t align)
{
    uint32_t n;
    _anr_tcache *tc = bins_for_size(h, size, &n);
    if (!tc)
        return NULL;
    void *p = tc->run_bin[n];
    if (!p || ((uintptr_t)p & (align - 1)))
        return NULL;
    tc->run_hit[n] = 1;
    return run_pop(h, tc, n);
}

/* Owner, lock not held: frees every run of bin n after its newest `keep`,
 * under the lock if it is free, else through the deferred list (free()
 * never waits). */
static void run_spill(anr_heap *h, _anr_tcache *tc, uint32_t n, unsigned keep)
{
    if (!run_bin_sound(h, tc, n))
        return;
    void *rest = tc->run_bin[n], *tail = NULL;
    unsigned kept = 0;
    while (rest && kept < keep) {
        void *next = _anr_run_next(h, rest);
        if (next == BIN_BAD) {
            _anr_report(h, ANR_ERR_DEFERRED_LIST, ANR_OP_FREE, rest);
            next = NULL;
        }
        tail = rest;
        kept++;
        rest = next;
    }
    if (tail)
        *(uintptr_t *)tail = bin_link(h, tail, NULL);
    else
        tc->run_bin[n] = NULL;
    /* The rest, relinked through plain pointers as the deferred list wants. */
    void *first = NULL, *last = NULL;
    size_t gone = 0;
    while (rest) {
        void *next = _anr_run_next(h, rest);
        *(void **)rest = first;
        first = rest;
        if (!last)
            last = rest;
        gone++;
        if (next == BIN_BAD) {
            _anr_report(h, ANR_ERR_DEFERRED_LIST, ANR_OP_FREE, rest);
            break;
        }
        rest = next;
    }
    __atomic_store_n(&tc->run_n[n], (uint16_t)kept, __ATOMIC_RELAXED);
    run_recount(h, tc);
    if (!gone)
        return;
    if (!_anr_trylock(h)) {
        _anr_defer_chain(h, first, last, gone);
        return;
    }
    for (void *p = first; p;) {
        void *next = p == last ? NULL : *(void **)p;
        _anr_key_clear(p);
        _anr_free_locked(h, p, ANR_OP_FREE);
        p = next;
    }
    _anr_unlock_and_purge(h, false);
}

bool _anr_run_bin_free(anr_heap *h, void *p, anr_error *err)
{
    uint32_t n = 0;
    const _anr_page *e = _anr_run_head(h, p, &n);
    _anr_tcache *tc = _anr_tc_mine(h);
    if (!e || !tc)
        return false;
    if (tc->epoch != atomic_load_explicit(&h->flush_epoch, memory_order_relaxed)) {
        _anr_tc_sync_try(h, tc); /* memory is short: hand the cache back now if we can */
        return false;
    }
    if (_anr_key_is_set(h, p)) {
        *err = ANR_ERR_DOUBLE_FREE;
        _anr_report(h, ANR_ERR_DOUBLE_FREE, ANR_OP_FREE, p);
        return true;
    }
    if (!_anr_run_still(e, n))
        return false;
    *err = ANR_ERR_NONE;
    size_t bytes = (size_t)n << h->page_shift;
    bool over = atomic_load_explicit(&tc->run_bytes, memory_order_relaxed) + bytes > h->tc_run_bytes;
    if (tc->run_n[n] >= tc->run_cap[n]) {
        /* Full again and again with no malloc finding it empty between:
         * this thread frees more than it allocates here. */
        if (++tc->run_spills[n] >= RUN_SHRINK_AFTER) {
            tc->run_spills[n] = 0;
            tc->run_cap[n] = (uint16_t)(tc->run_cap[n] / 2u);
        }
        run_spill(h, tc, n, tc->run_cap[n] / 2u);
    } else if (over && tc->run_n[n]) {
        run_spill(h, tc, n, tc->run_n[n] / 2u); /* at the bound: make room here */
    }
    if (!tc->run_cap[n] ||
        atomic_load_explicit(&tc->run_bytes, memory_order_relaxed) + bytes > h->tc_run_bytes)
        return false; /* the locked path frees it */
    _anr_run_push(h, tc, n, p);
    return true;
}

void _anr_run_bins_drain_locked(anr_heap *h, _anr_tcache *tc)
{
    for (uint32_t n = h->run_min; n && n <= h->run_max; n++) {
        void *p = run_bin_sound(h, tc, n) ? tc->run_bin[n] : NULL;
        /* At most cap + 1 links: in a forked child the owner may have been
         * caught mid-push. */
        unsigned left = h->run_bin_max[n] + 1u;
        tc->run_bin[n] = NULL;
        __atomic_store_n(&tc->run_n[n], 0, __ATOMIC_RELAXED);
        while (p && left--) {
            void *next = _anr_run_next(h, p);
            _anr_key_clear(p);
            _anr_free_locked(h, p, ANR_OP_FREE);
            if (next == BIN_BAD) {
                _anr_report(h, ANR_ERR_DEFERRED_LIST, ANR_OP_FREE, p);
                break;
            }
            p = next;
        }
    }
    atomic_store_explicit(&tc->run_bytes, 0, memory_order_relaxed);
}

void _anr_run_bins_cached(const anr_heap *h, const _anr_tcache *tc, size_t *objs, size_t *bytes)
{
    for (uint32_t n = h->run_min; n && n <= h->run_max; n++) {
        size_t k = __atomic_load_n(&tc->run_n[n], __ATOMIC_RELAXED);
        *objs += k;
        *bytes += (k * n) << h->page_shift;
    }
}

/* Page runs: free runs in two sets of TLSF bins (dirty and clean), boundary
 * tags in the page map, coalescing on free, carving on allocation, and the
 * never-used `top` of the mapping. Every function here runs with the heap lock
 * held and is O(1) (slab pages: O(pages per slab), a small constant). */
#include <string.h>

#include "internal.h"

/* --- boundary tags --- */

void _anr_run_tag(anr_heap *h, uint32_t head, uint32_t len, uint8_t kind)
{
    _anr_page *e = &h->pages[head];
    e->kind = kind;
    e->len = len;
    if (len > 1) {
        _anr_page *t = &h->pages[head + len - 1];
        t->kind = (uint8_t)(kind | _ANR_TAIL);
        t->len = len;
    }
}

void _anr_run_untag(anr_heap *h, uint32_t head, uint32_t len)
{
    memset(&h->pages[head], 0, sizeof(_anr_page));
    if (len > 1)
        memset(&h->pages[head + len - 1], 0, sizeof(_anr_page));
}

/* --- the two-level index --- */

static inline unsigned fls32(uint32_t x) { return 31u - (unsigned)__builtin_clz(x); }

/* The bin a run of n pages is filed under. */
static void bin_of(uint32_t n, unsigned *fl, unsigned *sl)
{
    if (n < _ANR_SL_COUNT) {
        *fl = 0;
        *sl = n;
        return;
    }
    unsigned f = fls32(n);
    *sl = (n >> (f - _ANR_SL_BITS)) - _ANR_SL_COUNT;
    *fl = f - _ANR_SL_BITS + 1;
}

/* The first non-empty bin at or after bin (f, s), in size order. */
static bool bins_from(const _anr_bins *b, unsigned f, unsigned s, unsigned *fl, unsigned *sl)
{
    if (s >= _ANR_SL_COUNT) {
        f++;
        s = 0;
    }
    if (f >= _ANR_FL_COUNT)
        return false;
    uint32_t sl_map = b->sl_map[f] & (~0u << s);
    if (!sl_map) {
        uint32_t fl_map = f + 1 < 32 ? b->fl_map & (~0u << (f + 1)) : 0;
        if (!fl_map)
            return false;
        f = (unsigned)__builtin_ctz(fl_map);
        sl_map = b->sl_map[f];
    }
    *fl = f;
    *sl = (unsigned)__builtin_ctz(sl_map);
    return true;
}

static bool bins_find(const _anr_bins *b, uint32_t n, unsigned *fl, unsigned *sl)
{
    /* Round n up to the next bin boundary so any run in the bin found fits. */
    uint64_t r = n;
    if (n >= _ANR_SL_COUNT)
        r += (1u << (fls32(n) - _ANR_SL_BITS)) - 1;
    if (r > UINT32_MAX)
        return false;
    unsigned f, s;
    bin_of((uint32_t)r, &f, &s);
    return bins_from(b, f, s, fl, sl);
}

/* The first run of the highest non-empty bin: the largest dirty run, or
 * one within an eighth of it. _ANR_NIL if there is none. */
uint32_t _anr_run_largest_dirty(const anr_heap *h)
{
    const _anr_bins *b = &h->dirty_bins;
    if (!b->fl_map)
        return _ANR_NIL;
    unsigned f = fls32(b->fl_map);
    unsigned s = fls32(b->sl_map[f]);
    return b->head[f][s];
}

static void bins_insert(anr_heap *h, _anr_bins *b, uint32_t head)
{
    _anr_page *e = &h->pages[head];
    unsigned fl, sl;
    bin_of(e->len, &fl, &sl);
    uint32_t first = b->head[fl][sl];
    e->prev = _ANR_NIL;
    e->next = first;
    if (first != _ANR_NIL)
        h->pages[first].prev = head;
    b->head[fl][sl] = head;
    b->fl_map |= 1u << fl;
    b->sl_map[fl] |= (uint8_t)(1u << sl);
}

static void bins_remove(anr_heap *h, _anr_bins *b, uint32_t head)
{
    _anr_page *e = &h->pages[head];
    unsigned fl, sl;
    bin_of(e->len, &fl, &sl);
    if (e->prev != _ANR_NIL)
        h->pages[e->prev].next = e->next;
    else
        b->head[fl][sl] = e->next;
    if (e->next != _ANR_NIL)
        h->pages[e->next].prev = e->prev;
    if (b->head[fl][sl] == _ANR_NIL) {
        b->sl_map[fl] &= (uint8_t) ~(1u << sl);
        if (!b->sl_map[fl])
            b->fl_map &= ~(1u << fl);
    }
}

static _anr_bins *bins_for(anr_heap *h, uint8_t kind)
{
    return kind == _ANR_PK_FREE_DIRTY ? &h->dirty_bins : &h->clean_bins;
}

/* Finds a free run of at least n pages in b: first the exact bin's head (a
 * good fit), then the next bin whose every run fits. */
static uint32_t bins_take(anr_heap *h, _anr_bins *b, uint32_t n)
{
    unsigned fl, sl;
    bin_of(n, &fl, &sl);
    uint32_t cand = fl < _ANR_FL_COUNT ? b->head[fl][sl] : _ANR_NIL;
    if (cand == _ANR_NIL || h->pages[cand].len < n) {
        if (!bins_find(b, n, &fl, &sl))
            return _ANR_NIL;
        cand = b->head[fl][sl];
    }
    return cand;
}

/* --- free runs --- */

/* Files [head, head+len) as a free run of `kind` (no coalescing). */
/* `freed_at`: when the pages were freed (dirty runs; 0 = now, or unknown). */
static void free_run_insert_at(anr_heap *h, uint32_t head, uint32_t len, uint8_t kind,
                               uint64_t freed_at)
{
    _anr_run_tag(h, head, len, kind);
    bins_insert(h, bins_for(h, kind), head);
    if (kind == _ANR_PK_FREE_DIRTY) {
        _anr_fifo_push(h, head);
        h->pages_dirty += len;
        if (h->young_ns)
            _ANR_FREED_AT(&h->pages[head]) = freed_at ? freed_at : _anr_now_ns();
    }
}

static void free_run_insert(anr_heap *h, uint32_t head, uint32_t len, uint8_t kind)
{
    free_run_insert_at(h, head, len, kind, 0);
}

/* When a free run's pages were freed: a merged run is as old as its
 * oldest part, so that freeing next to old dirty pages does not make
 * them look young. */
static uint64_t freed_at(const anr_heap *h, uint32_t head, uint8_t kind, uint64_t other)
{
    if (kind != _ANR_PK_FREE_DIRTY || !h->young_ns)
        return other;
    uint64_t t = _ANR_FREED_AT(&h->pages[head]);
    return !other || (t && t < other) ? t : other;
}

static void free_run_remove(anr_heap *h, uint32_t head)
{
    _anr_page *e = &h->pages[head];
    uint8_t kind = _ANR_KIND(e);
    bins_remove(h, bins_for(h, kind), head);
    if (kind == _ANR_PK_FREE_DIRTY) {
        _anr_fifo_remove(h, head);
        h->pages_dirty -= e->len;
    }
}

void _anr_run_remove(anr_heap *h, uint32_t head) { free_run_remove(h, head); }

void _anr_run_give_back_tail(anr_heap *h, uint32_t head, uint32_t len, uint32_t keep)
{
    _anr_run_untag(h, head, len);
    /* The run was maximal, so the tail has no dirty neighbour to merge. */
    free_run_insert(h, head + keep, len - keep, _ANR_PK_FREE_DIRTY);
}

/* The head of the free run of `kind` that ends right before page pi, or NIL. */
static uint32_t left_free(anr_heap *h, uint32_t pi, uint8_t kind)
{
    if (pi == 0)
        return _ANR_NIL;
    _anr_page *e = &h->pages[pi - 1];
    if (_ANR_KIND(e) != kind)
        return _ANR_NIL;
    return pi - 1 - (e->len - 1);
}

/* The free run of `kind` that starts at page pi, or NIL. */
static uint32_t right_free(anr_heap *h, uint32_t pi, uint8_t kind)
{
    if (pi >= h->top)
        return _ANR_NIL;
    _anr_page *e = &h->pages[pi];
    return e->kind == kind ? pi : _ANR_NIL;
}

/* Merges [head, head+n) with free neighbours of `kind` and files it. The
 * range's own tags must already be cleared. Returns the merged head. */
static uint32_t coalesce_insert(anr_heap *h, uint32_t head, uint32_t n, uint8_t kind)
{
    uint64_t at = 0;
    uint32_t l = left_free(h, head, kind);
    if (l != _ANR_NIL) {
        at = freed_at(h, l, kind, at);
        uint32_t ln = h->pages[l].len;
        free_run_remove(h, l);
        _anr_run_untag(h, l, ln);
        n += ln;
        head = l;
    }
    uint32_t r = right_free(h, head + n, kind);
    if (r != _ANR_NIL) {
        at = freed_at(h, r, kind, at);
        uint32_t rn = h->pages[r].len;
        free_run_remove(h, r);
        _anr_run_untag(h, r, rn);
        n += rn;
    }
    /* Only DONTNEED pages read back as zero, as the top must. */
    if (kind == _ANR_PK_FREE_CLEAN && head + n == h->top && h->advice == ANR_PURGE_DONTNEED) {
        h->top = head; /* clean pages at the end go back to the never-used top */
        return _ANR_NIL;
    }
    free_run_insert_at(h, head, n, kind, at);
    return head;
}

void _anr_run_free(anr_heap *h, uint32_t head, uint32_t n)
{
    h->freed_run = n;
    _anr_run_untag(h, head, n);
    h->pages_in_use -= n;
    coalesce_insert(h, head, n, _ANR_PK_FREE_DIRTY);
}

uint32_t _anr_run_insert_clean(anr_heap *h, uint32_t head, uint32_t n)
{
    _anr_run_untag(h, head, n);
    return coalesce_insert(h, head, n, _ANR_PK_FREE_CLEAN);
}

/* Cuts [at, at+n) out of the free run [head, head+len) of `kind` (already
 * removed from the bins); the pieces before and after stay free. */
static void carve(anr_heap *h, uint32_t head, uint32_t len, uint32_t at, uint32_t n, uint8_t kind)
{
    uint64_t t = freed_at(h, head, kind, 0); /* the pieces keep the run's age */
    _anr_run_untag(h, head, len);
    if (at > head)
        free_run_insert_at(h, head, at - head, kind, t);
    if (at + n < head + len)
        free_run_insert_at(h, at + n, head + len - (at + n), kind, t);
}

static uint32_t align_up_page(const anr_heap *h, uint32_t pi, uint32_t align_pages)
{
    /* Alignment is of addresses, not of page indices: data need not be aligned. */
    uintptr_t a = (uintptr_t)_anr_page_addr(h, pi);
    uintptr_t mask = ((uintptr_t)align_pages << h->page_shift) - 1;
    uintptr_t up = (a + mask) & ~mask;
    return pi + (uint32_t)((up - a) >> h->page_shift);
}

static void raise_top(anr_heap *h, uint32_t top)
{
    h->top = top;
    if (top > h->pm_hwm)
        h->pm_hwm = top;
    if (top > h->top_max)
        h->top_max = top;
}

static bool limit_allows(const anr_heap *h, size_t more)
{
    return !h->limit_pages || _anr_limit_use(h) + more <= h->limit_pages;
}

/* A free run of b that holds n pages from an address aligned to
 * align_pages, among the first ALIGNED_TRIES runs from the bin of n up; or
 * _ANR_NIL. Asking bins_take for n + align_pages - 1 pages finds a fit
 * wherever the run lies, but misses the runs that fit because of where
 * they lie: an aligned object freed and asked for again (n pages, aligned,
 * between its alignment gaps) never fit, and each round took fresh pages
 * past the top. Bounded: each step looks at one run. */
#define ALIGNED_TRIES 8u
static uint32_t bins_take_aligned(anr_heap *h, _anr_bins *b, uint32_t n, uint32_t align_pages)
{
    unsigned fl, sl;
    bin_of(n, &fl, &sl);
    if (!bins_from(b, fl, sl, &fl, &sl))
        return _ANR_NIL;
    uint32_t c = b->head[fl][sl];
    for (unsigned tries = 0; tries < ALIGNED_TRIES; tries++) {
        if (c == _ANR_NIL) { /* the next non-empty bin */
            if (!bins_from(b, fl, sl + 1u, &fl, &sl))
                return _ANR_NIL;
            c = b->head[fl][sl];
        }
        uint32_t len = h->pages[c].len;
        if (len >= n && (uint64_t)align_up_page(h, c, align_pages) + n <= (uint64_t)c + len)
            return c;
        c = h->pages[c].next;
    }
    return _ANR_NIL;
}

_anr_run_result _anr_run_alloc(anr_heap *h, uint32_t n, uint32_t align_pages, uint32_t *out,
                               bool *zero)
{
    /* Over-ask by align-1 pages so an aligned start lies inside the run. */
    uint64_t need = (uint64_t)n + (align_pages > 1 ? align_pages - 1 : 0);
    if (need > h->npages)
        return _ANR_RUN_FULL;

    /* Dirty runs first: they are resident already and cost no limit. */
    static const uint8_t order[2] = {_ANR_PK_FREE_DIRTY, _ANR_PK_FREE_CLEAN};
    for (int i = 0; i < 2; i++) {
        uint8_t kind = order[i];
        /* Reusing dirty pages adds no use, but not while use is over a
         * lowered limit: then the caller must purge first. */
        if (!limit_allows(h, kind == _ANR_PK_FREE_CLEAN ? n : 0))
            return _ANR_RUN_LIMIT;
        uint32_t head = align_pages > 1 ? bins_take_aligned(h, bins_for(h, kind), n, align_pages)
                                        : _ANR_NIL;
        if (head == _ANR_NIL)
            head = bins_take(h, bins_for(h, kind), (uint32_t)need);
        if (head == _ANR_NIL)
            continue;
        uint32_t len = h->pages[head].len;
        free_run_remove(h, head);
        uint32_t at = align_pages > 1 ? align_up_page(h, head, align_pages) : head;
        carve(h, head, len, at, n, kind);
        h->pages_in_use += n;
        if (kind == _ANR_PK_FREE_CLEAN && h->young_ns)
            _anr_reuse_note_fresh(h, n);
        *out = at;
        *zero = kind == _ANR_PK_FREE_CLEAN && h->advice == ANR_PURGE_DONTNEED;
        return _ANR_RUN_OK;
    }

    /* Then the never-used top of the mapping. */
    uint32_t at = align_pages > 1 ? align_up_page(h, h->top, align_pages) : h->top;
    if ((uint64_t)at + n > h->npages)
        return _ANR_RUN_FULL;
    if (!limit_allows(h, n))
        return _ANR_RUN_LIMIT;
    if (at > h->top) /* the alignment gap becomes a clean free run */
        free_run_insert(h, h->top, at - h->top, _ANR_PK_FREE_CLEAN);
    raise_top(h, at + n);
    h->pages_in_use += n;
    if (h->young_ns)
        _anr_reuse_note_fresh(h, n);
    *out = at;
    *zero = true;
    return _ANR_RUN_OK;
}

_anr_run_result _anr_run_grow(anr_heap *h, uint32_t head, uint32_t n, uint32_t m)
{
    uint32_t end = head + n, more = m - n;
    bool fresh = true; /* pages that will fault in */
    if (end == h->top) {
        if ((uint64_t)end + more > h->npages)
            return _ANR_RUN_FULL;
        if (!limit_allows(h, more))
            return _ANR_RUN_LIMIT;
        raise_top(h, end + more);
    } else {
        _anr_page *r = &h->pages[end];
        uint8_t kind = r->kind;
        if ((kind != _ANR_PK_FREE_DIRTY && kind != _ANR_PK_FREE_CLEAN) || r->len < more)
            return _ANR_RUN_FULL;
        if (!limit_allows(h, kind == _ANR_PK_FREE_CLEAN ? more : 0))
            return _ANR_RUN_LIMIT;
        uint32_t rlen = r->len;
        free_run_remove(h, end);
        carve(h, end, rlen, end, more, kind);
        fresh = kind == _ANR_PK_FREE_CLEAN;
    }
    _anr_run_untag(h, head, n);
    _anr_run_tag(h, head, m, _ANR_PK_LARGE);
    h->pages_in_use += more;
    if (fresh && h->young_ns)
        _anr_reuse_note_fresh(h, more);
    return _ANR_RUN_OK;
}

void _anr_run_shrink(anr_heap *h, uint32_t head, uint32_t n, uint32_t m)
{
    _anr_run_untag(h, head, n);
    _anr_run_tag(h, head, m, _ANR_PK_LARGE);
    h->pages_in_use -= n - m;
    coalesce_insert(h, head + m, n - m, _ANR_PK_FREE_DIRTY);
}

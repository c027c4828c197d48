/* Handing free pages back to the kernel, with hysteresis.
 *
 * Dirty free runs are kept in age order. When more than `ceiling` dirty pages
 * pile up, the oldest runs are handed back with madvise until at most `floor`
 * remain: a burst of frees and mallocs reuses hot pages, a lasting drop gives
 * them back, and the purge never runs once per free (musl's "bouncing" idea).
 *
 * madvise runs with the heap lock dropped: the runs being purged are marked
 * PURGING so that no allocation or coalescing touches them, then filed as
 * clean once it returns. A free() that purges never blocks: if the lock is
 * busy afterwards, the purged runs go on a lock-free list that the next lock
 * holder files.
 */
#include "internal.h"

/* --- age order of dirty runs --- */

void _anr_fifo_push(anr_heap *h, uint32_t head)
{
    _anr_page *e = &h->pages[head];
    e->fifo_next = _ANR_NIL;
    e->fifo_prev = h->fifo_tail;
    if (h->fifo_tail != _ANR_NIL)
        h->pages[h->fifo_tail].fifo_next = head;
    else
        h->fifo_head = head;
    h->fifo_tail = head;
}

void _anr_fifo_remove(anr_heap *h, uint32_t head)
{
    _anr_page *e = &h->pages[head];
    if (e->fifo_prev != _ANR_NIL)
        h->pages[e->fifo_prev].fifo_next = e->fifo_next;
    else
        h->fifo_head = e->fifo_next;
    if (e->fifo_next != _ANR_NIL)
        h->pages[e->fifo_next].fifo_prev = e->fifo_prev;
    else
        h->fifo_tail = e->fifo_prev;
}

/* Hands back the page-map pages that entries [lo, hi) fill entirely (the
 * entries must be zero: interiors of free runs). Returns madvise calls. */
static unsigned trim_entries(anr_heap *h, uint32_t lo, uint32_t hi)
{
    if (hi <= lo)
        return 0;
    uintptr_t mask = h->page_size - 1;
    uintptr_t from = ((uintptr_t)&h->pages[lo] + mask) & ~mask;
    uintptr_t to = (uintptr_t)&h->pages[hi] & ~mask;
    if (to <= from)
        return 0;
    _anr_os_purge((void *)from, to - from, ANR_PURGE_DONTNEED);
    return 1;
}

/* Entries per page-map page. */
static uint32_t entries_per_page(const anr_heap *h)
{
    return (uint32_t)(h->page_size / sizeof(_anr_page));
}

/* --- purging --- */

typedef struct purge_item {
    uint32_t head, len;
} purge_item;

/* --- reuse: young dirty pages kept past the ceiling ---
 *
 * A program that frees a buffer and soon allocates another (a request, a
 * string, a list that grows) pays a page fault per page if the freed pages
 * were handed back in between. With a reuse window (young_ns), the heap
 * learns how much of that it does: pages it must fault in afresh within the
 * window after a purge by size count as purged too soon, and as many dirty
 * pages freed within the window (young) are kept past the ceiling from then
 * on. Kept pages that reach the end of the window unused are handed back
 * and no longer counted, so memory still follows the live data one window
 * later; a program that only frees never earns any. (The allowance never
 * exceeds the heap's peak, in use plus dirty.) */

/* Lock held: young dirty pages that may stay past the ceiling. */
static size_t reuse_keep(const anr_heap *h)
{
    return h->reuse_keep < h->pages_peak ? h->reuse_keep : h->pages_peak;
}

void _anr_reuse_note_fresh(anr_heap *h, uint32_t n)
{
    if (!h->purged_recent)
        return;
    if (_anr_now_ns() - h->purged_ns > h->young_ns) {
        h->purged_recent = 0;
        return;
    }
    size_t take = n < h->purged_recent ? n : h->purged_recent;
    h->purged_recent -= take;
    h->reuse_keep = reuse_keep(h) + take;
}

/* Lock held: the ceiling in force plus `keep` (saturated). */
static size_t allowed_dirty(const anr_heap *h, size_t keep)
{
    size_t c = _anr_ceiling(h);
    return c + keep < c ? SIZE_MAX : c + keep;
}

/* Lock held: true if the dirty pages are within the allowance and the
 * oldest of them is still young, so a purge round would find nothing. */
bool _anr_reuse_waits(const anr_heap *h)
{
    size_t keep = h->young_ns ? reuse_keep(h) : 0;
    return keep && h->pages_dirty <= allowed_dirty(h, keep) && h->fifo_head != _ANR_NIL &&
           _anr_now_ns() - _ANR_FREED_AT(&h->pages[h->fifo_head]) < h->young_ns;
}

/* Lock held: takes dirty runs out, up to a batch, until dirty pages would
 * be at or below target. A hot-path round (inside malloc or free) hands
 * back at most round_pages pages (madvise costs time per page), or as many
 * as the call just freed if that is more, so that rounds keep up with frees
 * and the cost stays in proportion to the object, never to the heap.
 * `reuse`: young pages within the allowance stay (not for trim and limit). */
static unsigned select_batch(anr_heap *h, size_t target, purge_item *batch, unsigned max,
                             bool bounded, bool reuse)
{
    unsigned n = 0;
    size_t budget = SIZE_MAX;
    if (bounded) {
        budget = h->freed_run > h->round_pages ? h->freed_run : h->round_pages;
        h->freed_run = 0;
    }
    /* Largest runs first: the most pages per madvise call, and the run
     * whose free passed the ceiling goes first. (All go when the target is
     * 0, so age does not matter there.) Within the reuse allowance, only
     * runs freed before the window, oldest first, up to the first young
     * one; past it, largest first until `floor` pages below it. */
    size_t keep = reuse && h->young_ns ? reuse_keep(h) : 0;
    size_t allowed = allowed_dirty(h, keep);
    bool by_age = keep && h->pages_dirty <= allowed;
    if (keep && !by_age && target < allowed - h->floor)
        target = allowed - h->floor;
    uint64_t now = reuse && h->young_ns ? _anr_now_ns() : 0;
    uint32_t head;
    while (n < max && budget && h->pages_dirty > target &&
           (head = by_age ? h->fifo_head : _anr_run_largest_dirty(h)) != _ANR_NIL) {
        if (by_age && now - _ANR_FREED_AT(&h->pages[head]) < h->young_ns)
            break;
        uint32_t len = h->pages[head].len;
        _anr_run_remove(h, head);
        if (len > 2 * budget) {
            /* Take the front of a big run; the rest stays dirty. (A run up
             * to twice the budget goes whole: one call instead of two.) */
            _anr_run_give_back_tail(h, head, len, (uint32_t)budget);
            len = (uint32_t)budget;
        }
        budget -= budget == SIZE_MAX ? 0 : (len < budget ? len : budget);
        _anr_run_tag(h, head, len, _ANR_PK_PURGING);
        h->pages_purging += len;
        if (by_age) /* kept a whole window and not reused */
            h->reuse_keep = reuse_keep(h) - (len < reuse_keep(h) ? len : reuse_keep(h));
        else if (now) {
            h->purged_recent += len;
            h->purged_ns = now;
        }
        batch[n].head = head;
        batch[n].len = len;
        n++;
    }
    return n;
}

/* Lock held: files a purged run as clean. Merging with clean neighbours
 * zeroes the tags between them; where the merged run's interior now fills
 * whole page-map pages around this run, those go back too (a bounded
 * madvise of metadata under the lock, once per purged run that merges into
 * a run of a page-map page or more). */
#define TRIM_REACH 16u
static void file_purged(anr_heap *h, uint32_t head)
{
    uint32_t len = h->pages[head].len;
    h->pages_purging -= len;
    uint32_t merged = _anr_run_insert_clean(h, head, len);
    /* Not in real-time mode (no thread caches): there a madvise under the lock
     * would hold up a real-time thread waiting for it. */
    if (merged == _ANR_NIL || h->advice != ANR_PURGE_DONTNEED || !h->tc_on)
        return;
    uint32_t mlen = h->pages[merged].len, per = entries_per_page(h);
    if (mlen < 2 * per)
        return;
    /* Up to TRIM_REACH page-map pages either side: the neighbours merged
     * in may have been too short for a whole page-map page when they were
     * purged. (Pages already handed back cost a page-table walk only.) */
    uint32_t reach = TRIM_REACH * per;
    uint32_t lo = head > merged + reach ? head - reach : merged + 1;
    uint32_t end = merged + mlen - 1; /* the tail entry stays */
    uint32_t hi = head + len + reach < end ? head + len + reach : end;
    if (trim_entries(h, lo, hi))
        atomic_fetch_add_explicit(&h->madvise_calls, 1, memory_order_relaxed);
}

void _anr_drain_purged_list(anr_heap *h)
{
    uint32_t head = atomic_exchange_explicit(&h->purged_pending, _ANR_NIL, memory_order_acquire);
    while (head != _ANR_NIL) {
        uint32_t next = h->pages[head].next;
        file_purged(h, head);
        head = next;
    }
}

static void push_purged(anr_heap *h, uint32_t head)
{
    uint32_t old = atomic_load_explicit(&h->purged_pending, memory_order_relaxed);
    do {
        h->pages[head].next = old;
    } while (!atomic_compare_exchange_weak_explicit(&h->purged_pending, &old, head,
                                                    memory_order_release,
                                                    memory_order_relaxed));
}

/* The page map follows the data: the entries of a free run's interior pages
 * are zero by invariant, and nothing writes them while the run is PURGING, so
 * the page-map pages they fill entirely can be handed back too (they read
 * back as zero). Without this a heap whose top cannot retreat (a live object
 * near the high-water mark) keeps 64 bytes per page ever used resident.
 * Returns the madvise calls made (0 or 1). */
#define INTERIOR_MIN_PAGES 64u /* a run of 16 MiB: 256 KiB of page map */
static unsigned purge_interior_entries(anr_heap *h, uint32_t head, uint32_t len)
{
    /* Only for big runs: a call of its own for a few page-map pages would
     * double the madvise calls of a purge (the top trim and the next
     * allocation of the run take care of the rest). */
    return len < INTERIOR_MIN_PAGES ? 0 : trim_entries(h, head + 1, head + len - 1);
}

#define HOT_PURGE_RUNS 4u

static size_t purge(anr_heap *h, size_t target, bool may_block, bool bounded, bool reuse)
{
    size_t total = 0;
    purge_item batch[_ANR_PURGE_BATCH];
    for (;;) {
        if (may_block)
            _anr_lock(h);
        else if (!_anr_trylock(h))
            return total;
        /* On the hot paths (inside malloc and free) the work is bounded: a
         * few runs and ROUND_PAGES pages per call (each free adds at most
         * one dirty run, so this keeps up); the calls that follow do the
         * rest while dirty pages stay over the ceiling. */
        bool hot = bounded || !may_block;
        unsigned n =
            select_batch(h, target, batch, hot ? HOT_PURGE_RUNS : _ANR_PURGE_BATCH, hot, reuse);
        _anr_unlock(h);
        if (n == 0)
            return total;

        uint64_t calls = 0, pages = 0;
        for (unsigned i = 0; i < n; i++) {
            _anr_os_purge(_anr_page_addr(h, batch[i].head), (size_t)batch[i].len << h->page_shift,
                          h->advice);
            calls++;
            calls += purge_interior_entries(h, batch[i].head, batch[i].len);
            pages += batch[i].len;
        }
        total += pages;
        atomic_fetch_add_explicit(&h->pages_purged, pages, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->madvise_calls, calls, memory_order_relaxed);

        bool locked = true;
        if (may_block)
            _anr_lock(h);
        else
            locked = _anr_trylock(h);
        if (locked) {
            for (unsigned i = 0; i < n; i++)
                file_purged(h, batch[i].head);
            _anr_unlock(h);
        } else {
            for (unsigned i = 0; i < n; i++)
                push_purged(h, batch[i].head);
            return total;
        }
        if (!may_block || bounded)
            return total; /* one bounded round per call on the hot paths */
    }
}

size_t _anr_purge_round(anr_heap *h, size_t target, bool may_block)
{
    size_t pages = purge(h, target, may_block, true, true);
    if (pages && h->hooks.purged)
        h->hooks.purged(h->hooks.ctx, h, pages, may_block);
    return pages;
}

size_t _anr_purge(anr_heap *h, size_t target, bool may_block, bool reuse)
{
    size_t pages = purge(h, target, may_block, false, reuse);
    if (pages && h->hooks.purged)
        h->hooks.purged(h->hooks.ctx, h, pages, may_block);
    return pages;
}

/* Lock held. When `top` has retreated far below the page-map entries that
 * were ever touched, hands back the page map's own pages above it: they are
 * all NONE (zero) by invariant, and a purged page reads back as zero. The
 * madvise runs under the lock (a grow of the top could write those entries
 * otherwise), so it is bounded per call; every unlock and every tick of the
 * background purger calls this, so a heap that emptied out sheds its page
 * map within a few calls. The slack keeps a top that moves back and forth
 * from trimming and refaulting the same entries. Returns true if more is
 * left to trim. */
#define PM_SLACK 2048u /* entries: 128 KiB of page map, 8 MiB of data */
/* At most this many page-map pages go back per call. */
#define PM_TRIM_PAGES 16u
bool _anr_pagemap_trim(anr_heap *h)
{
    if (h->advice != ANR_PURGE_DONTNEED || h->pm_hwm <= h->top + 2 * PM_SLACK)
        return false;
    uintptr_t mask = h->page_size - 1;
    uintptr_t low = ((uintptr_t)&h->pages[h->top + PM_SLACK] + mask) & ~mask;
    uintptr_t to = ((uintptr_t)&h->pages[h->pm_hwm] + mask) & ~mask;
    uintptr_t from = to - low > PM_TRIM_PAGES * h->page_size ? to - PM_TRIM_PAGES * h->page_size
                                                              : low;
    if (to <= from || _anr_os_purge((void *)from, to - from, ANR_PURGE_DONTNEED) != 0)
        return false;
    atomic_fetch_add_explicit(&h->madvise_calls, 1, memory_order_relaxed);
    /* Entries from `from` on are back to zero; pm_hwm is an entry index. */
    h->pm_hwm = (uint32_t)((from - (uintptr_t)h->pages) / sizeof(_anr_page));
    if (h->pm_hwm < h->top + PM_SLACK)
        h->pm_hwm = h->top + PM_SLACK;
    return h->pm_hwm > h->top + 2 * PM_SLACK;
}

/* --- the page-map sweep ---
 *
 * Page-map pages whose 64 entries are all zero (interiors of free runs and
 * of large objects) can go back wherever they are. Trimming as runs are
 * purged covers the neighbourhood of each; a live object that keeps the top
 * from retreating (a stdio buffer made late, say) leaves the rest of a big
 * clean run's page map resident. The sweep finds those: mincore says
 * which page-map pages are resident (so the check faults nothing in), and
 * those read as all zero are handed back. A page-map page holding any slab
 * head is never all zero, so the entries that threads change without the
 * lock (bitmaps, remote lists) are never in one; all else changes under the
 * lock, which each step holds. Run by anr_core_tick() and anr_core_purge(). */
#define PM_SWEEP_BYTES (64u * 1024) /* of page map per step (per lock hold) */
#define PM_SWEEP_MAX_PAGES 16u       /* page-map pages per step, at most */

/* Word by word with relaxed atomic loads: a page-map page with a slab head
 * in it may be written by that slab's owner meanwhile (it is not zero, and
 * the scan stops there). */
static bool all_zero(const void *page, size_t size)
{
    const uintptr_t *w = page;
    for (size_t i = 0; i < size / sizeof(*w); i++)
        if (__atomic_load_n(&w[i], __ATOMIC_RELAXED))
            return false;
    return true;
}

bool _anr_pagemap_sweep(anr_heap *h)
{
    if (h->advice != ANR_PURGE_DONTNEED)
        return false;
    size_t pg = h->page_size;
    uintptr_t mask = pg - 1;
    uintptr_t first = ((uintptr_t)h->pages + mask) & ~mask;
    uintptr_t end = (uintptr_t)&h->pages[h->pm_hwm] & ~mask;
    uintptr_t at = first + (uintptr_t)h->pm_sweep * pg;
    if (at >= end) {
        h->pm_sweep = 0;
        return false;
    }
    size_t step = PM_SWEEP_BYTES / pg ? PM_SWEEP_BYTES / pg : 1;
    if (step > PM_SWEEP_MAX_PAGES)
        step = PM_SWEEP_MAX_PAGES;
    size_t n = (end - at) / pg < step ? (end - at) / pg : step;
    unsigned char in_core[PM_SWEEP_MAX_PAGES];
    if (_anr_os_resident((const void *)at, n * pg, in_core) != 0)
        return false;
    uintptr_t run = 0; /* start of all-zero resident pages not yet handed back */
    for (size_t i = 0; i <= n; i++) {
        uintptr_t page = at + i * pg;
        bool zero = i < n && (in_core[i] & 1) && all_zero((const void *)page, pg);
        if (zero && !run)
            run = page;
        if (!zero && run) {
            if (_anr_os_purge((void *)run, page - run, ANR_PURGE_DONTNEED) == 0)
                atomic_fetch_add_explicit(&h->madvise_calls, 1, memory_order_relaxed);
            run = 0;
        }
    }
    h->pm_sweep += (uint32_t)n;
    return true;
}

/* A whole sweep, one step per lock hold, if pages were handed back since
 * the last one began and (unless `force`) half a decay time (100 ms at
 * least) has passed since, so a heap that keeps purging pays for one sweep
 * per half decay time at most. A step holds the
 * lock for a mincore(), a scan of at most 64 KiB and at most one madvise
 * of page map (also in real-time mode, where only the background purger
 * and anr_core_purge() sweep). */
static bool sweep_wanted(anr_heap *h, uint64_t now, bool force)
{
    return atomic_load_explicit(&h->pages_purged, memory_order_relaxed) !=
               __atomic_load_n(&h->pm_swept_purged, __ATOMIC_RELAXED) &&
           (force || now - __atomic_load_n(&h->pm_swept_ns, __ATOMIC_RELAXED) >=
                         _anr_half_decay_ns(h));
}

void _anr_pagemap_sweep_all(anr_heap *h, bool force)
{
    uint64_t now = _anr_now_ns();
    if (!sweep_wanted(h, now, force)) /* a hint without the lock; checked again under it */
        return;
    _anr_lock(h);
    uint64_t purged = atomic_load_explicit(&h->pages_purged, memory_order_relaxed);
    bool go = sweep_wanted(h, now, force);
    if (go) {
        __atomic_store_n(&h->pm_swept_purged, purged, __ATOMIC_RELAXED);
        __atomic_store_n(&h->pm_swept_ns, now, __ATOMIC_RELAXED);
        h->pm_sweep = 0;
    }
    for (;;) {
        go = go && _anr_pagemap_sweep(h);
        _anr_unlock(h);
        if (!go)
            return;
        _anr_lock(h);
    }
}

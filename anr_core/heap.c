/* The engine's public entry points: init, alloc, free, realloc, the lock and
 * its deferred-free list, the limit, statistics and fork support. */
#include <errno.h>
#include <stdalign.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "fast.h"

#define ALIGN (alignof(max_align_t))
#define DEFAULT_CEILING 1024u
#define DEFAULT_ROUNDS 4u
#define DEFAULT_TC_SLOTS 256u
#define DEFAULT_DECAY_MS 1000u

size_t anr_core_alignment(void) { return ALIGN; }

size_t anr_core_default_floor(size_t page_ceiling) { return page_ceiling / 16; }

void anr_core_default_options(anr_core_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->page_ceiling = DEFAULT_CEILING;
    opts->page_floor = anr_core_default_floor(DEFAULT_CEILING);
    opts->more_memory_rounds = DEFAULT_ROUNDS;
    opts->decay_ms = DEFAULT_DECAY_MS;
}

/* --- the lock --- */

/* Priority inheritance: an RT thread waiting for the heap lends its priority
 * to the holder, so a low-priority thread in malloc cannot stall it. */
static int lock_create(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a) != 0)
        return -1;
    pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT);
    int rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

static void drain_deferred_n(anr_heap *h, size_t max);
static void drain_deferred(anr_heap *h);

/* A short, bounded spin before sleeping: critical sections are short, and a
 * contended priority-inheritance mutex costs system calls on both sides.
 * The spin reads `lock_held` and only tries the mutex when it looks free,
 * so that spinners do not pull the lock's cache line from the holder. */
#define LOCK_SPINS 256

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline void held(anr_heap *h, bool on)
{
    atomic_store_explicit(&h->lock_held, on, memory_order_relaxed);
}

void _anr_lock(anr_heap *h)
{
    for (int i = 0; i < LOCK_SPINS; i++) {
        if (!atomic_load_explicit(&h->lock_held, memory_order_relaxed) &&
            pthread_mutex_trylock(&h->lock) == 0)
            goto locked;
        cpu_relax();
    }
    pthread_mutex_lock(&h->lock);
locked:
    held(h, true);
    drain_deferred(h);
    _anr_drain_purged(h);
}

bool _anr_trylock(anr_heap *h)
{
    if (atomic_load_explicit(&h->lock_held, memory_order_relaxed) ||
        pthread_mutex_trylock(&h->lock) != 0)
        return false;
    held(h, true);
    drain_deferred(h);
    _anr_drain_purged(h);
    return true;
}

static inline void unlock_mutex(anr_heap *h)
{
    held(h, false);
    pthread_mutex_unlock(&h->lock);
}

uint64_t _anr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Lock held. True if dirty pages have sat longer than the decay time. The
 * clock starts at the first check that sees dirty pages. */
static bool decay_due(anr_heap *h, uint64_t now)
{
    if (!h->dirty_since) {
        h->dirty_since = now;
        return false;
    }
    return now - h->dirty_since >= h->decay_ns;
}

size_t _anr_unlock(anr_heap *h)
{
    drain_deferred(h);
    size_t target = _ANR_NO_PURGE;
    /* Hysteresis: past the ceiling, every call hands back a bounded round
     * until the floor is reached, so purges come in runs of rounds, not one
     * small madvise per free at the ceiling. */
    size_t floor = h->floor,
           ceiling = (h->bg_purge ? ANR_BACKGROUND_PURGE_SLACK : 1) * _anr_ceiling(h);
    if (h->pages_dirty > ceiling)
        h->draining = true;
    else if (h->pages_dirty <= floor)
        h->draining = false;
    if (h->draining) {
        if (!_anr_reuse_waits(h))
            target = floor;
    } else if (!h->pages_dirty) {
        h->dirty_since = 0;
    } else if (h->decay_ns && !h->bg_purge) {
        /* The coarse clock is a vDSO read, and only taken while dirty pages
         * wait: a call after a quiet second starts handing them back, one
         * bounded round per call until none are left (the clock restarts
         * once dirty pages are gone). The thread caches are asked to
         * give back what they hold too (on each thread's next malloc). */
        uint64_t now = _anr_now_ns();
        if (decay_due(h, now)) {
            target = 0;
            _anr_tc_decay_locked(h, now);
        }
    }
    _anr_pagemap_trim(h);
    unlock_mutex(h);
    return target;
}

void _anr_unlock_and_purge(anr_heap *h, bool may_block)
{
    size_t target = _anr_unlock(h);
    if (target != _ANR_NO_PURGE)
        _anr_purge_round(h, target, may_block);
}

size_t anr_core_tick(anr_heap *h)
{
    _anr_lock(h);
    size_t floor = h->floor;
    uint64_t now = _anr_now_ns();
    /* A cache flushed because memory sat a decay time (tcache.c): what it
     * freed goes back now, and the page map is swept. */
    bool idle = atomic_exchange_explicit(&h->idle_flushed, false, memory_order_relaxed);
    bool over = h->pages_dirty > _anr_ceiling(h);
    bool waits = over && _anr_reuse_waits(h); /* young pages within the allowance */
    over = over && !waits;
    bool due = idle || (!over && !waits && h->pages_dirty && h->decay_ns && decay_due(h, now));
    if (due)
        h->dirty_since = 0;
    _anr_tc_decay_locked(h, now);
    bool trim = _anr_pagemap_trim(h);
    unlock_mutex(h); /* not _anr_unlock: no purge round here */
    size_t pages = due ? _anr_purge(h, 0, true, true) : over ? _anr_purge(h, floor, true, true) : 0;
    /* Then the page map above a retreated top, a bounded piece per lock
     * hold (each unlock trims too; this finishes the job when no call comes). */
    for (bool more = trim || pages; more;) {
        _anr_lock(h);
        more = _anr_pagemap_trim(h);
        unlock_mutex(h);
    }
    _anr_pagemap_sweep_all(h, idle);
    return pages;
}

void anr_core_set_background_purge(anr_heap *h, bool on)
{
    _anr_lock(h);
    h->bg_purge = on;
    atomic_store_explicit(&h->idle_flushed, false, memory_order_relaxed);
    _anr_unlock_and_purge(h, true);
}

void _anr_note_peak(anr_heap *h)
{
    size_t use = _anr_limit_use(h);
    if (use > h->pages_peak)
        h->pages_peak = use;
}

/* --- init --- */

/* The free key: random, so that live data matches it by chance once in
 * 2^64; never 0, which is what untouched memory holds. */
static uint64_t make_free_key(const void *seed)
{
    uint64_t k = 0;
    if (getrandom(&k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        k = ((uint64_t)ts.tv_nsec << 32 ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)seed) *
            0x9e3779b97f4a7c15u;
    }
    return k ? k : 0x9e3779b97f4a7c15u;
}

int anr_core_init(anr_heap **out, const anr_core_options *opts)
{
    anr_core_options def;
    if (!opts) {
        anr_core_default_options(&def);
        opts = &def;
    }
    size_t page = _anr_os_page_size();
    if (opts->page_floor > (opts->page_ceiling ? opts->page_ceiling : DEFAULT_CEILING))
        return EINVAL;

    size_t size = opts->mapping_size ? opts->mapping_size : _anr_os_default_mapping();
    size_t max_size = ((size_t)(_ANR_NIL - 1) < SIZE_MAX / page)
                          ? (size_t)(_ANR_NIL - 1) * page
                          : SIZE_MAX;
    if (size > max_size)
        size = max_size;
    size &= ~(page - 1);
    uint8_t *map = _anr_os_reserve(&size);
    if (!map)
        return ENOMEM;

    anr_heap *h = (anr_heap *)map;
    h->map = map;
    h->map_size = size;
    h->page_size = page;
    h->page_shift = (unsigned)__builtin_ctzl((unsigned long)page);
    if (_anr_classes_init(h, opts->slab_sizes, opts->n_slab_sizes) != 0) {
        _anr_os_release(map, size);
        return EINVAL;
    }

    /* Layout: heap struct, thread-cache table, the page map (64 B per data
     * page), the slab_at array (2 B per data page), then data. */
    uint32_t slots = opts->thread_cache ? (opts->tcache_slots ? opts->tcache_slots : DEFAULT_TC_SLOTS) : 0;
    if (slots > 65536)
        slots = 65536;
    size_t head = (sizeof(anr_heap) + slots * sizeof(_anr_tcache) + page - 1) & ~(page - 1);
    if (head >= size / 2) {
        _anr_os_release(map, size);
        return EINVAL;
    }
    size_t avail = size - head;
    size_t npages = avail / (page + sizeof(_anr_page) + sizeof(*h->slab_at));
    size_t pm_bytes = (npages * sizeof(_anr_page) + page - 1) & ~(page - 1);
    size_t so_bytes = (npages * sizeof(*h->slab_at) + page - 1) & ~(page - 1);
    while (npages && head + pm_bytes + so_bytes + npages * page > size)
        npages--;
    if (npages < 16) {
        _anr_os_release(map, size);
        return ENOMEM;
    }
    h->pages = (_anr_page *)(map + head);
    h->pm_offset = head;
    h->slab_at = (_Atomic uint16_t *)(map + head + pm_bytes);
    h->data = map + head + pm_bytes + so_bytes;
    h->npages = (uint32_t)npages;
    h->data_size = npages * page;
    h->free_key = make_free_key(map);

    h->hooks = opts->hooks;
    h->rounds = opts->more_memory_rounds ? opts->more_memory_rounds : DEFAULT_ROUNDS;
    h->advice = opts->purge_advice;
    h->bg_purge = opts->background_purge;
    h->young_ns = (uint64_t)opts->young_ms * 1000000u;
    h->ceiling = opts->page_ceiling ? opts->page_ceiling : DEFAULT_CEILING;
    /* With a ceiling given, the floor is as given (0 included); with the
     * default ceiling, a floor given (not 0) or the default share. */
    h->floor = opts->page_ceiling || opts->page_floor ? opts->page_floor
                                                      : anr_core_default_floor(h->ceiling);
    h->limit_pages = (opts->limit + page - 1) / page;
    h->decay_ns = opts->decay_ms == UINT32_MAX ? 0 : (uint64_t)opts->decay_ms * 1000000u;
    _anr_tc_init(h, opts, (_anr_tcache *)(map + sizeof(anr_heap)), slots);
    /* Real-time mode (no thread caches): small rounds, so that a malloc or
     * free that purges stays in the tens of microseconds. */
    h->round_pages = h->tc_on ? 1024u : 64u;
    h->fifo_head = h->fifo_tail = _ANR_NIL;
    for (unsigned f = 0; f < _ANR_FL_COUNT; f++)
        for (unsigned s = 0; s < _ANR_SL_COUNT; s++)
            h->dirty_bins.head[f][s] = h->clean_bins.head[f][s] = _ANR_NIL;
    atomic_init(&h->deferred, NULL);
    atomic_init(&h->purged_pending, _ANR_NIL);
    if (lock_create(&h->lock) != 0) {
        _anr_os_release(map, size);
        return ENOMEM;
    }
    *out = h;
    return 0;
}

void anr_core_destroy(anr_heap *h)
{
    if (!h)
        return;
    if (atomic_load(&h->tc_key_state) == 2)
        pthread_key_delete(h->tc_key);
    _anr_tc_forget(h);
    pthread_mutex_destroy(&h->lock);
    _anr_os_release(h->map, h->map_size);
}

bool anr_core_owns(const anr_heap *h, const void *p)
{
    uintptr_t a = (uintptr_t)p, m = (uintptr_t)h->map;
    return a >= m && a - m < h->map_size;
}

/* --- allocation --- */

/* Lock held. One attempt, no purging, no hooks. */
static void *try_alloc(anr_heap *h, size_t size, size_t align, bool *zero, _anr_run_result *res)
{
    int cls = _anr_class_for(h, size, align);
    if (cls >= 0) {
        *zero = false;
        void *p = _anr_slab_alloc(h, (unsigned)cls, res);
        if (p)
            _anr_note_peak(h);
        return p;
    }
    size_t pages = (size + h->page_size - 1) >> h->page_shift;
    size_t align_pages = align > h->page_size ? align >> h->page_shift : 1;
    if (pages > h->npages || align_pages > h->npages) {
        *res = _ANR_RUN_FULL;
        return NULL;
    }
    uint32_t head;
    *res = _anr_run_alloc(h, (uint32_t)pages, (uint32_t)align_pages, &head, zero);
    if (*res != _ANR_RUN_OK)
        return NULL;
    _anr_run_tag(h, head, (uint32_t)pages, _ANR_PK_LARGE);
    h->bytes_in_use += pages << h->page_shift;
    h->objects_in_use++;
    _anr_note_peak(h);
    return _anr_page_addr(h, head);
}

/* ANR_ALLOC_NO_HOOKS: memory that is there now, or NULL. Never waits for
 * the heap lock, never purges, never calls a hook. */
static void *alloc_now(anr_heap *h, size_t size, size_t align, unsigned flags)
{
    if (!_anr_trylock(h))
        return NULL;
    bool zero = false;
    _anr_run_result res;
    void *p = try_alloc(h, size, align, &zero, &res);
    if (!p)
        h->alloc_failures++;
    _anr_unlock(h); /* any purge it asks for waits for a later call */
    if (p && (flags & ANR_ALLOC_ZERO) && !zero)
        memset(p, 0, size);
    return p;
}

void *anr_core_alloc(anr_heap *h, size_t size, size_t align, unsigned flags)
{
    /* An alignment up to a page that a cached class's size is a multiple
     * of needs nothing more: slabs start on a page, so every slot of that
     * class is aligned (aligned_alloc(64, 256), a 4 KiB page). */
    if (align > ALIGN && h->tc_on && size && !(align & (align - 1)) && align <= h->page_size &&
        size <= h->cls[h->tc_classes - 1].size && !(flags & ~ANR_ALLOC_ZERO)) {
        size_t s = (size + align - 1) & ~(align - 1);
        if (s <= h->cls[h->tc_classes - 1].size && h->cls[h->class_of[(s + 15) >> 4]].size % align == 0) {
            size = s;
            align = ALIGN;
        }
    }
    if (align <= ALIGN && !(flags & ~ANR_ALLOC_ZERO)) {
        void *p = _anr_fast_alloc(h, size);
        if (!p)
            p = _anr_fast_run_alloc(h, size);
        if (p) {
            if (flags & ANR_ALLOC_ZERO)
                memset(p, 0, size);
            return p;
        }
    }
    return _anr_alloc_after_fast(h, size, align, flags);
}

void *_anr_alloc_after_fast(anr_heap *h, size_t size, size_t align, unsigned flags)
{
    if (h->tc_on) {
        _anr_tcache *tc = _anr_tc_mine(h);
        if (tc && tc->quiet_tick < 0)
            _anr_tc_quiet_look(h, tc);
    }
    if (align < ALIGN)
        align = ALIGN;
    if (align & (align - 1))
        return NULL;
    if (size == 0)
        size = 1;
    /* Not for ANR_ALLOC_NO_HOOKS: a cache's refill may wait for the lock. */
    if (h->tc_on && size <= h->cls[h->tc_classes - 1].size && align == ALIGN &&
        !(flags & ANR_ALLOC_NO_HOOKS)) {
        unsigned cls = h->class_of[(size + 15) >> 4];
        void *p = _anr_tc_alloc(h, cls);
        if (p) {
            if (flags & ANR_ALLOC_ZERO)
                memset(p, 0, size);
            return p;
        }
    } else if (h->run_max && !(flags & ANR_ALLOC_NO_HOOKS) &&
               size <= ((size_t)h->run_max << h->page_shift)) {
        /* Runs start on pages: up to the page size, any run is aligned. */
        void *p = align <= h->page_size ? _anr_run_bin_alloc(h, size)
                                        : _anr_run_bin_alloc_aligned(h, size, align);
        if (p) {
            if (flags & ANR_ALLOC_ZERO)
                memset(p, 0, size);
            return p;
        }
    }
    if (size > h->map_size) {
        _anr_lock(h);
        h->alloc_failures++;
        _anr_unlock(h);
        return NULL;
    }

    if (flags & ANR_ALLOC_NO_HOOKS)
        return alloc_now(h, size, align, flags);

    bool purged = false;
    unsigned round = 0;
    for (;;) {
        bool zero = false;
        _anr_run_result res;
        _anr_lock(h);
        void *p = try_alloc(h, size, align, &zero, &res);
        if (!p && (h->deferred_local || atomic_load(&h->deferred))) {
            _anr_drain_all(h); /* frees waiting on the list may be what it needs */
            p = try_alloc(h, size, align, &zero, &res);
        }
        if (p) {
            _anr_unlock_and_purge(h, true);
            if ((flags & ANR_ALLOC_ZERO) && !zero)
                memset(p, 0, size);
            return p;
        }
        bool have_dirty = h->pages_dirty > 0 || h->pages_purging > 0 ||
                          atomic_load(&h->purged_pending) != _ANR_NIL;
        _anr_unlock(h);

        /* Past the limit (or the mapping): take back what thread caches
         * hold (this thread's now, the others' at their next call) and hand
         * back dirty pages, which count against the limit and block
         * coalescing, then try again (this thread's flush alone may have
         * freed what it needs)... */
        if (!purged && (have_dirty || h->tc_on)) {
            _anr_tc_flush_all(h);
            purged = true;
            _anr_purge(h, 0, true, false);
            continue;
        }
        /* ...then ask for more, a bounded number of times. */
        if ((flags & ANR_ALLOC_NO_HOOKS) || !h->hooks.more_memory || round >= h->rounds)
            break;
        round++;
        if (!h->hooks.more_memory(h->hooks.ctx, h, size))
            break;
        purged = false;
    }
    _anr_lock(h);
    h->alloc_failures++;
    _anr_unlock(h);
    return NULL;
}

/* --- free --- */

void _anr_report(anr_heap *h, anr_error err, anr_op op, const void *p)
{
    atomic_fetch_add_explicit(&h->bad_pointers, 1, memory_order_relaxed);
    if (h->hooks.on_error)
        h->hooks.on_error(h->hooks.ctx, err, op, p);
}

/* Lock held. Frees a validated object. */
static void free_obj(anr_heap *h, const _anr_obj *o)
{
    if (o->slab) {
        _anr_page *e = &h->pages[o->head];
        if (e->owner) /* a thread cache's slab: its owner collects it */
            _anr_tc_push_locked(h, o->head, _anr_page_addr(h, o->head) +
                                                (size_t)o->idx * h->cls[e->cls].size);
        else
            _anr_slab_free(h, o->head, o->idx);
        return;
    }
    uint32_t n = h->pages[o->head].len;
    h->bytes_in_use -= (size_t)n << h->page_shift;
    h->objects_in_use--;
    _anr_run_free(h, o->head, n);
}

void _anr_free_locked(anr_heap *h, void *p, anr_op op)
{
    _anr_obj o;
    anr_error err = _anr_lookup(h, p, &o);
    if (err != ANR_ERR_NONE) {
        _anr_report(h, err, op, p);
        return;
    }
    free_obj(h, &o);
}

/* Lock held. Frees everything queued by frees that found the lock busy. The
 * links live in the freed objects themselves, so each one is checked before
 * it is followed: a use-after-free that scribbled on a link ends the walk
 * (those blocks leak) instead of sending it into the weeds. */
/* Frees drained per lock holder (at lock and at unlock): the work a lock
 * holder does for others stays bounded however long the list grew. */
#define DRAIN_MAX 64u

static void drain_deferred_n(anr_heap *h, size_t max)
{
    void *p = h->deferred_local;
    if (!p) {
        if (!atomic_load_explicit(&h->deferred, memory_order_relaxed))
            return;
        p = atomic_exchange_explicit(&h->deferred, NULL, memory_order_acquire);
    }
    for (size_t n = 0; p && n < max; n++) {
        void *next = *(void **)p;
        if (h->tc_on)
            _anr_key_clear(p);
        _anr_obj o;
        anr_error err = _anr_lookup(h, p, &o);
        if (err != ANR_ERR_NONE) {
            /* Already free (a double free queued twice, or a cycle): its
             * link cannot be trusted; stop here. */
            _anr_report(h, err, ANR_OP_FREE, p);
            p = NULL;
            break;
        }
        free_obj(h, &o);
        if (next && !_anr_in_data(h, next)) {
            _anr_report(h, ANR_ERR_DEFERRED_LIST, ANR_OP_FREE, next);
            p = NULL;
            break;
        }
        p = next;
    }
    h->deferred_local = p;
}

/* Every lock and unlock looks: the test is inline, the walk is not. */
static inline void drain_deferred(anr_heap *h)
{
    if (h->deferred_local || atomic_load_explicit(&h->deferred, memory_order_relaxed))
        drain_deferred_n(h, DRAIN_MAX);
}

/* Lock held: every queued free, for callers that report or walk the heap. */
void _anr_drain_all(anr_heap *h)
{
    while (h->deferred_local || atomic_load_explicit(&h->deferred, memory_order_relaxed))
        drain_deferred_n(h, SIZE_MAX);
}

void _anr_defer_chain(anr_heap *h, void *first, void *last, size_t n)
{
    for (void *q = first; h->tc_on; q = *(void **)q) {
        _anr_key_set(h, q);
        if (q == last)
            break;
    }
    void *old = atomic_load_explicit(&h->deferred, memory_order_relaxed);
    do {
        *(void **)last = old;
    } while (!atomic_compare_exchange_weak_explicit(&h->deferred, &old, first,
                                                    memory_order_release, memory_order_relaxed));
    atomic_fetch_add_explicit(&h->deferred_frees, n, memory_order_relaxed);
}

anr_error anr_core_free(anr_heap *h, void *p)
{
    _anr_tcache *tc = _anr_tc_mine(h);
    if (tc) {
        int r = _anr_fast_free_tc(h, tc, p);
        if (r == FF_DONE || (r == FF_NOT_SLAB && _anr_fast_run_free_tc(h, tc, p)))
            return ANR_ERR_NONE;
    }
    return _anr_free_after_fast(h, p);
}

anr_error _anr_free_after_fast(anr_heap *h, void *p)
{
    if (!p)
        return ANR_ERR_NONE;
    if (!_anr_in_data(h, p)) {
        anr_error err = anr_core_owns(h, p) ? ANR_ERR_NOT_AN_OBJECT : ANR_ERR_FOREIGN;
        _anr_report(h, err, ANR_OP_FREE, p);
        return err;
    }
    anr_error err;
    if (h->tc_on && (_anr_tc_free(h, p, &err) || (h->run_max && _anr_run_bin_free(h, p, &err))))
        return err;
    if (!_anr_trylock(h)) {
        /* Never block: queue it for whoever holds the lock, once it checks
         * out as a live object (queueing writes into the block; a pointer
         * that carries the key is queued somewhere already). */
        err = _anr_lookup_unlocked(h, p);
        if (err != ANR_ERR_NONE) {
            _anr_report(h, err, ANR_OP_FREE, p);
            return err;
        }
        _anr_defer_chain(h, p, p, 1);
        return ANR_ERR_NONE;
    }
    _anr_obj o;
    err = _anr_lookup(h, p, &o);
    if (err == ANR_ERR_NONE)
        free_obj(h, &o);
    else
        _anr_report(h, err, ANR_OP_FREE, p);
    _anr_unlock_and_purge(h, false);
    return err;
}

/* --- realloc --- */

/* A large object of n pages resized to m keeps its room while it still
 * uses most of it (it may have been given a quarter extra to grow into). */
static inline bool keeps_room(uint32_t n, size_t m) { return m <= n && m >= n - n / 4; }

/* Thread caches on, no lock: true if `p` is a live large object (the head
 * of a run, not carrying the free key) that keeps its room at `size`. Only
 * a free or realloc of `p` itself rewrites its head entry. */
static bool large_keeps_room(const anr_heap *h, const void *p, size_t size)
{
    size_t off = (size_t)((uintptr_t)p - (uintptr_t)h->data);
    if (off >= h->data_size || (off & (h->page_size - 1)))
        return false;
    uint32_t pi = (uint32_t)(off >> h->page_shift);
    const _anr_page *e = &h->pages[pi];
    if (__atomic_load_n(&e->kind, __ATOMIC_RELAXED) != _ANR_PK_LARGE || _anr_key_is_set(h, p))
        return false;
    uint32_t n = __atomic_load_n(&e->len, __ATOMIC_RELAXED);
    size_t m = (size + h->page_size - 1) >> h->page_shift;
    return size > h->cls[h->nclasses - 1].size && keeps_room(n, m); /* no class fits */
}

void *anr_core_realloc(anr_heap *h, void *p, size_t size, anr_error *errp)
{
    anr_error dummy;
    if (!errp)
        errp = &dummy;
    *errp = ANR_ERR_NONE;
    if (!p)
        return anr_core_alloc(h, size, 0, 0);
    if (size == 0)
        size = 1;

    /* With thread caches (where a freed object carries the free key), a
     * live object is checked without the lock: a small one stays put while
     * the new size fits its slot and uses half of it, or, of a cached
     * class, moves through the fast paths; a large one keeps its room (see
     * below). A buffer grown a few bytes at a time takes no lock per step. */
    unsigned cls;
    size_t idx;
    const _anr_page *e = h->tc_on ? _anr_slab_slot(h, p, &cls, &idx, h->nclasses) : NULL;
    if (e && _anr_slot_live(h, e, idx, p)) {
        size_t usable = h->cls[cls].size;
        if (size <= usable && size > usable / 2)
            return p;
        if (cls < h->tc_classes) {
            void *q = anr_core_alloc(h, size, 0, 0);
            if (!q)
                return NULL;
            memcpy(q, p, size < usable ? size : usable);
            anr_core_free(h, p);
            return q;
        }
    } else if (h->tc_on && large_keeps_room(h, p, size)) {
        return p;
    }

    _anr_lock(h);
    _anr_obj o;
    anr_error err = _anr_lookup(h, p, &o);
    if (err != ANR_ERR_NONE) {
        _anr_unlock(h);
        _anr_report(h, err, ANR_OP_REALLOC, p);
        *errp = err;
        return NULL;
    }
    if (o.slab) {
        /* Stay put while the new size fits and still uses half the slot. */
        if (size <= o.usable && size > o.usable / 2) {
            _anr_unlock(h);
            return p;
        }
    } else if (_anr_class_for(h, size, ALIGN) < 0) {
        /* Large to large: shrink or grow the run in place when possible. */
        uint32_t n = h->pages[o.head].len;
        size_t m = (size + h->page_size - 1) >> h->page_shift;
        if (keeps_room(n, m)) {
            _anr_unlock(h);
            return p;
        }
        if (m < n) {
            _anr_run_shrink(h, o.head, n, (uint32_t)m);
            h->bytes_in_use -= (n - m) << h->page_shift;
            _anr_unlock_and_purge(h, true);
            return p;
        }
        if (m <= h->npages && _anr_run_grow(h, o.head, n, (uint32_t)m) == _ANR_RUN_OK) {
            h->bytes_in_use += (m - n) << h->page_shift;
            _anr_note_peak(h);
            _anr_unlock(h);
            return p;
        }
    }
    _anr_unlock(h);

    /* A large object that has to move gets a quarter more room (pages
     * that are never touched cost no RSS), so that a buffer grown by
     * appending moves O(log n) times, not once per step. */
    size_t want = size;
    if (!o.slab && size > o.usable && _anr_class_for(h, size, ALIGN) < 0) {
        size_t extra = size / 4 < ((size_t)64 << 20) ? size / 4 : ((size_t)64 << 20);
        want = size + extra > size ? size + extra : size;
    }
    void *q = anr_core_alloc(h, want, 0, 0);
    if (!q && want != size)
        q = anr_core_alloc(h, size, 0, 0);
    if (!q)
        return NULL;
    memcpy(q, p, size < o.usable ? size : o.usable);
    anr_core_free(h, p);
    return q;
}

size_t anr_core_usable_size(anr_heap *h, const void *p)
{
    if (!p)
        return 0;
    unsigned cls;
    size_t idx;
    const _anr_page *e = h->tc_on ? _anr_tc_slot(h, p, &cls, &idx) : NULL;
    if (e && _anr_slot_live(h, e, idx, p))
        return h->cls[cls].size;
    _anr_obj o;
    _anr_lock(h);
    anr_error err = _anr_lookup(h, p, &o);
    _anr_unlock(h);
    if (err != ANR_ERR_NONE) {
        _anr_report(h, err, ANR_OP_USABLE_SIZE, p);
        return 0;
    }
    return o.usable;
}

anr_error anr_core_check(anr_heap *h, const void *p)
{
    _anr_obj o;
    _anr_lock(h);
    anr_error err = _anr_lookup(h, p, &o);
    _anr_unlock(h);
    return err;
}

/* --- limit, purge, stats --- */

void anr_core_set_limit(anr_heap *h, size_t limit)
{
    _anr_lock(h);
    h->limit_pages = (limit + h->page_size - 1) >> h->page_shift;
    _anr_unlock(h);
}

void anr_core_set_page_ceiling(anr_heap *h, size_t ceiling, size_t floor)
{
    _anr_lock(h);
    h->ceiling = ceiling;
    h->floor = floor > ceiling ? ceiling : floor;
    _anr_unlock_and_purge(h, true);
}

size_t anr_core_purge(anr_heap *h, bool all)
{
    if (all) {
        _anr_tc_flush_all(h);
        _anr_lock(h);
        _anr_drain_all(h);
        _anr_unlock(h);
    }
    size_t pages = _anr_purge(h, all ? 0 : h->floor, true, false);
    if (all)
        _anr_pagemap_sweep_all(h, true);
    /* Purges inside free() could not block, so the hook may not have acted
     * on them (e.g. given quota back): it hears of this one either way. */
    if (!pages && h->hooks.purged)
        h->hooks.purged(h->hooks.ctx, h, 0, true);
    return pages;
}

void anr_core_get_stats(anr_heap *h, anr_core_stats *s)
{
    memset(s, 0, sizeof(*s));
    _anr_lock(h);
    _anr_drain_all(h);
    s->mapping_size = h->map_size;
    s->page_size = h->page_size;
    s->limit = h->limit_pages << h->page_shift;
    s->bytes_in_use = h->bytes_in_use;
    s->objects_in_use = h->objects_in_use;
    s->pages_in_use = h->pages_in_use;
    s->pages_dirty = h->pages_dirty + h->pages_purging;
    s->pages_peak = h->pages_peak;
    s->pages_high_water = h->top_max;
    s->metadata_bytes = h->pm_offset + (size_t)h->pm_hwm * (sizeof(_anr_page) + sizeof(*h->slab_at));
    s->alloc_failures = h->alloc_failures;
    size_t cached_objs;
    _anr_tc_cached(h, &cached_objs, &s->bytes_cached);
    s->thread_caches = h->tc_active;
    _anr_unlock(h);
    /* Cached free slots are counted in use by the heap until they come back. */
    s->bytes_in_use -= s->bytes_cached < s->bytes_in_use ? s->bytes_cached : s->bytes_in_use;
    s->objects_in_use -= cached_objs < s->objects_in_use ? cached_objs : s->objects_in_use;
    s->pages_purged = atomic_load(&h->pages_purged);
    s->madvise_calls = atomic_load(&h->madvise_calls);
    s->deferred_frees = atomic_load(&h->deferred_frees);
    s->bad_pointers = atomic_load(&h->bad_pointers);
    s->map_calls = 1;
}

/* --- fork --- */

void anr_core_fork_prepare(anr_heap *h) { _anr_lock(h); }

void anr_core_fork_parent(anr_heap *h) { unlock_mutex(h); }

void anr_core_fork_child(anr_heap *h)
{
    /* The child's thread has a new id and a PI mutex remembers its owner:
     * make a fresh lock rather than unlocking the parent's. */
    lock_create(&h->lock);
    held(h, false);
    _anr_lock(h);
    _anr_tc_fork_child(h);
    _anr_unlock(h);
}

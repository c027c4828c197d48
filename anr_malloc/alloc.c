/* The allocation paths. Without debug flags, Valgrind, live debug records or
 * a running collection, each call is the engine call plus two relaxed loads;
 * everything else goes to a _debug slow path. */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define CALLER ((uintptr_t)__builtin_return_address(0))

static inline unsigned dbg_flags(const anr_mheap *h)
{
    return atomic_load_explicit(&h->debug, memory_order_relaxed);
}

static inline bool plain(anr_mheap *h, unsigned dbg)
{
    return !dbg && !h->vg && !atomic_load_explicit(&h->gc_running, memory_order_relaxed);
}

static inline size_t live_records(anr_mheap *h)
{
    return atomic_load_explicit(&h->live_records, memory_order_relaxed);
}

/* --- allocation --- */

static void *alloc_debug(anr_mheap *h, unsigned dbg, size_t size, size_t align, unsigned op,
                         bool zero, bool hooks, uintptr_t caller)
{
    uintptr_t frames[ANR_MAX_STACK_DEPTH];
    unsigned nframes = 0;
    uint32_t ri = 0;
    /* During a collection the block must be marked before the sweep may
     * judge it: announce the allocation until it is (see gc.c). */
    bool in_gc = atomic_load(&h->gc_running);
    if (in_gc)
        pthread_rwlock_rdlock(&h->gc_gate);
    if (h->has_side && ((dbg & (ANR_DEBUG_GUARDS | ANR_DEBUG_STACKS)) || h->vg)) {
        pthread_mutex_lock(&h->dlock);
        ri = _am_rec_take(h);
        pthread_mutex_unlock(&h->dlock);
        if (!ri)
            atomic_fetch_add(&h->records_dropped, 1);
        else if (dbg & ANR_DEBUG_STACKS)
            nframes = _am_stack_capture(frames, atomic_load(&h->stack_depth), caller);
    }
    bool guarded = ri && (dbg & ANR_DEBUG_GUARDS);
    size_t eff_align = align < h->gran ? h->gran : align;
    size_t front = 0, back = 0;
    if (guarded) {
        front = (ANR_GUARD_SIZE + eff_align - 1) & ~(eff_align - 1);
        back = ANR_GUARD_SIZE;
    }
    unsigned cflags = hooks ? 0 : ANR_ALLOC_NO_HOOKS;
    if (zero && !h->vg)
        cflags |= ANR_ALLOC_ZERO;
    uint8_t *b = NULL;
    if (size <= SIZE_MAX - front - back)
        b = anr_core_alloc(h->core, size + front + back, align, cflags);
    if (!b) {
        if (ri) {
            pthread_mutex_lock(&h->dlock);
            _am_rec_give(h, ri);
            pthread_mutex_unlock(&h->dlock);
        }
        if (op && (dbg & ANR_DEBUG_FDR))
            _am_fdr_add(h, op, NULL, NULL, size, caller);
        if (in_gc)
            pthread_rwlock_unlock(&h->gc_gate);
        _am_alloc_failed(h, size, hooks);
        return NULL;
    }
    uint8_t *u = b + front;
    if (h->vg) {
        /* The slack and the guards are out of bounds; the block is new. */
        _am_vg_noaccess(h, b, anr_core_usable_size(h->core, b));
        _am_vg_malloclike(h, u, size, false);
        if (zero)
            memset(u, 0, size);
    }
    if (!zero && (dbg & ANR_DEBUG_TRASH_ALLOC)) {
        _am_fill(u, size, ANR_TRASH_ALLOC);
        _am_vg_undefined(h, u, size); /* trash is still "uninitialised" to memcheck */
    }
    if (guarded)
        _am_write_guards(h, b, front, u + size);
    if (ri) {
        pthread_mutex_lock(&h->dlock);
        _am_rec *r = _am_rec_open(h, ri);
        r->flags = (uint16_t)(_AM_REC_LIVE | (guarded ? _AM_REC_GUARDED : 0));
        r->nframes = (uint16_t)nframes;
        r->front = (uint32_t)front;
        r->tid = _am_tid();
        r->block_off = (uintptr_t)b - h->span;
        r->size = size;
        r->info = 0;
        r->seq = ++h->alloc_seq;
        memcpy(r->frames, frames, nframes * sizeof(frames[0]));
        _am_rec_close(h, r);
        _am_tab_set_ri(h, _am_gi(h, u), ri);
        if (front)
            _am_tab_set_ri(h, _am_gi(h, b), ri);
        atomic_fetch_add(&h->live_records, 1);
        pthread_mutex_unlock(&h->dlock);
    }
    /* A block born during a collection is not garbage. */
    if (in_gc || atomic_load(&h->gc_running))
        _am_tab_set_epoch(h, _am_gi(h, u), atomic_load(&h->epoch));
    if (in_gc)
        pthread_rwlock_unlock(&h->gc_gate);
    if (op && (dbg & ANR_DEBUG_FDR))
        _am_fdr_add(h, op, u, NULL, size, caller);
    return u;
}

void *_am_alloc(anr_mheap *h, size_t size, size_t align, unsigned op, bool zero, bool hooks,
                uintptr_t caller)
{
    unsigned dbg = dbg_flags(h);
    if (plain(h, dbg)) {
        void *p = anr_core_alloc(h->core, size, align,
                                 (zero ? ANR_ALLOC_ZERO : 0) | (hooks ? 0 : ANR_ALLOC_NO_HOOKS));
        if (!p)
            _am_alloc_failed(h, size, hooks);
        return p;
    }
    return alloc_debug(h, dbg, size, align, op, zero, hooks, caller);
}

/* --- free --- */

static void free_debug(anr_mheap *h, unsigned dbg, uint8_t *u, unsigned op, uintptr_t caller)
{
    uint8_t *b = u;
    size_t size = 0;
    uint32_t dying = 0;
    bool have = false, guard_bad = false;
    uintptr_t frames[ANR_MAX_STACK_DEPTH];
    unsigned nframes = 0;
    char detail[160];

    if (h->has_side && _am_in_span(h, u) && live_records(h)) {
        pthread_mutex_lock(&h->dlock);
        uint32_t ri = _am_rec_find(h, u);
        if (ri) {
            _am_rec *r = _am_rec_open(h, ri);
            have = true;
            size = r->size;
            nframes = r->nframes;
            memcpy(frames, r->frames, nframes * sizeof(frames[0]));
            b = u - r->front;
            if ((r->flags & _AM_REC_GUARDED) && !_am_guards_ok(h, r, detail, sizeof(detail)))
                guard_bad = true;
            r->flags = (uint16_t)((r->flags & ~_AM_REC_LIVE) | _AM_REC_DYING);
            _am_rec_close(h, r);
            dying = ri;
            atomic_fetch_sub(&h->live_records, 1);
        }
        pthread_mutex_unlock(&h->dlock);
    }
    if (guard_bad)
        _am_fault(h, ANR_FAULT_GUARD, "free", u, detail, size, frames, nframes);
    if ((dbg & ANR_DEBUG_TRASH_FREE) || h->vg) {
        if (!have && anr_core_check(h->core, b) != ANR_ERR_NONE) {
            anr_core_free(h->core, b); /* reports it */
            return;
        }
        /* (a block with a record is live: its record said so under dlock) */
        size_t usable = anr_core_usable_size(h->core, b);
        if (dbg & ANR_DEBUG_TRASH_FREE) {
            _am_vg_undefined(h, b, usable);
            _am_fill(b, usable, ANR_TRASH_FREE);
        }
        if (h->vg) {
            /* If the heap lock is busy the engine links the block through its
             * first word (a deferred free): memcheck reports that write and
             * the later read, inside anr_core; anr_malloc/valgrind.supp
             * silences exactly those. */
            _am_vg_freelike(h, u);
            _am_vg_noaccess(h, b, usable);
        }
    }
    if (op && (dbg & ANR_DEBUG_FDR))
        _am_fdr_add(h, op, u, NULL, size, caller);
    anr_core_free(h->core, b);
    if (dying) {
        /* The record stayed findable by block while the engine freed it, so
         * a concurrent sweep never judged the block by the wrong granule. */
        pthread_mutex_lock(&h->dlock);
        _am_tab_clear_ri(h, _am_gi(h, u), dying);
        if (b != u)
            _am_tab_clear_ri(h, _am_gi(h, b), dying);
        _am_rec_give(h, dying);
        pthread_mutex_unlock(&h->dlock);
    }
}

void _am_free(anr_mheap *h, void *p, unsigned op, uintptr_t caller)
{
    if (!p)
        return;
    unsigned dbg = dbg_flags(h);
    if (!dbg && !h->vg && !live_records(h)) {
        anr_core_free(h->core, p);
        return;
    }
    free_debug(h, dbg, p, op, caller);
}

/* --- realloc, usable size --- */

static anr_fault fault_of(anr_error e)
{
    switch (e) {
    case ANR_ERR_DOUBLE_FREE:
        return ANR_FAULT_DOUBLE_FREE;
    case ANR_ERR_FOREIGN:
        return ANR_FAULT_FOREIGN;
    case ANR_ERR_DEFERRED_LIST:
        return ANR_FAULT_FREE_LIST;
    default:
        return ANR_FAULT_NOT_AN_OBJECT;
    }
}

static void *realloc_debug(anr_mheap *h, unsigned dbg, void *p, size_t size, uintptr_t caller)
{
    size_t old = 0;
    bool found = false, has_info = false;
    uintptr_t info = 0;
    if (h->has_side && _am_in_span(h, p) && live_records(h)) {
        pthread_mutex_lock(&h->dlock);
        uint32_t ri = _am_rec_find(h, p);
        if (ri) {
            _am_rec *r = _am_rec_open(h, ri);
            found = true;
            old = r->size;
            has_info = r->flags & _AM_REC_INFO;
            info = r->info;
            _am_rec_close(h, r);
        }
        pthread_mutex_unlock(&h->dlock);
    }
    if (!found) {
        anr_error err = anr_core_check(h->core, p);
        if (err != ANR_ERR_NONE) {
            _am_fdr_add(h, ANR_FDR_BAD, p, NULL, size, caller);
            _am_fault(h, fault_of(err), "realloc", p, NULL, 0, NULL, 0);
            return NULL;
        }
        old = anr_core_usable_size(h->core, p);
    }
    void *q = _am_alloc(h, size, 0, 0, false, true, caller);
    if (!q)
        return NULL;
    memcpy(q, p, old < size ? old : size);
    if (has_info)
        anr_set_debug_info(q, info);
    if (dbg & ANR_DEBUG_FDR)
        _am_fdr_add(h, ANR_FDR_REALLOC, q, p, size, caller);
    _am_free(h, p, 0, caller);
    return q;
}

static void *do_realloc(anr_mheap *h, void *p, size_t size, uintptr_t caller)
{
    if (!p)
        return _am_alloc(h, size, 0, ANR_FDR_REALLOC, false, true, caller);
    if (size == 0) {
        _am_free(h, p, ANR_FDR_FREE, caller);
        return NULL;
    }
    unsigned dbg = dbg_flags(h);
    if (plain(h, dbg) && !live_records(h)) {
        anr_error err;
        void *q = anr_core_realloc(h->core, p, size, &err);
        if (!q && err == ANR_ERR_NONE)
            _am_alloc_failed(h, size, true);
        return q;
    }
    return realloc_debug(h, dbg, p, size, caller);
}

static size_t do_usable(anr_mheap *h, const void *p)
{
    if (!p)
        return 0;
    if (h->has_side && _am_in_span(h, p) && live_records(h)) {
        size_t size = 0;
        bool exact = false;
        pthread_mutex_lock(&h->dlock);
        uint32_t ri = _am_rec_find(h, p);
        if (ri) {
            _am_rec *r = _am_rec_open(h, ri);
            /* Guards sit right after the size asked for; memcheck knows that size. */
            exact = (r->flags & _AM_REC_GUARDED) || h->vg;
            size = r->size;
            _am_rec_close(h, r);
        }
        pthread_mutex_unlock(&h->dlock);
        if (exact)
            return size;
    }
    return anr_core_usable_size(h->core, p);
}

static void *do_memalign(anr_mheap *h, size_t align, size_t size, uintptr_t caller)
{
    if (align < sizeof(void *) || (align & (align - 1)) || align % sizeof(void *)) {
        errno = EINVAL;
        return NULL;
    }
    return _am_alloc(h, size, align, ANR_FDR_MEMALIGN, false, true, caller);
}

static void *do_calloc(anr_mheap *h, size_t n, size_t size, uintptr_t caller)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return _am_alloc(h, total, 0, ANR_FDR_CALLOC, true, true, caller);
}

void *_am_realloc(anr_mheap *h, void *p, size_t size, uintptr_t caller)
{
    return do_realloc(h, p, size, caller);
}

size_t _am_usable(anr_mheap *h, const void *p) { return do_usable(h, p); }

/* --- public entry points --- */

static anr_mheap *dflt(void)
{
    anr_mheap *h = _am_default();
    if (!h)
        errno = ENOMEM;
    return h;
}

void *anr_heap_malloc(anr_mheap *h, size_t size)
{
    return _am_alloc(h, size, 0, ANR_FDR_MALLOC, false, true, CALLER);
}

void *anr_heap_malloc_if_available(anr_mheap *h, size_t size)
{
    return _am_alloc(h, size, 0, ANR_FDR_MALLOC, false, false, CALLER);
}

void *anr_heap_calloc(anr_mheap *h, size_t n, size_t size) { return do_calloc(h, n, size, CALLER); }

void *anr_heap_realloc(anr_mheap *h, void *p, size_t size)
{
    return do_realloc(h, p, size, CALLER);
}

void *anr_heap_memalign(anr_mheap *h, size_t align, size_t size)
{
    return do_memalign(h, align, size, CALLER);
}

void anr_heap_free(anr_mheap *h, void *p)
{
    int saved = errno;
    _am_free(h, p, ANR_FDR_FREE, CALLER);
    errno = saved;
}

size_t anr_heap_usable_size(anr_mheap *h, const void *p) { return do_usable(h, p); }

void *anr_malloc(size_t size)
{
    anr_mheap *h = dflt();
    return h ? _am_alloc(h, size, 0, ANR_FDR_MALLOC, false, true, CALLER) : NULL;
}

void *anr_malloc_if_available(size_t size)
{
    anr_mheap *h = dflt();
    return h ? _am_alloc(h, size, 0, ANR_FDR_MALLOC, false, false, CALLER) : NULL;
}

void *anr_calloc(size_t n, size_t size)
{
    anr_mheap *h = dflt();
    return h ? do_calloc(h, n, size, CALLER) : NULL;
}

void *anr_memalign(size_t align, size_t size)
{
    anr_mheap *h = dflt();
    return h ? do_memalign(h, align, size, CALLER) : NULL;
}

/* A pointer in no heap: reported to the foreign handler. */
static void foreign(const char *op, const void *p)
{
    _am_fault(NULL, ANR_FAULT_FOREIGN, op, p, "the pointer lies in no anr_malloc heap", 0, NULL,
              0);
}

void *anr_realloc(void *p, size_t size)
{
    if (!p) {
        anr_mheap *h = dflt();
        return h ? _am_alloc(h, size, 0, ANR_FDR_REALLOC, false, true, CALLER) : NULL;
    }
    anr_mheap *h = _am_heap_of(p);
    if (!h) {
        foreign("realloc", p);
        return NULL;
    }
    return do_realloc(h, p, size, CALLER);
}

void anr_free(void *p)
{
    if (!p)
        return;
    int saved = errno;
    anr_mheap *h = _am_heap_of(p);
    if (h)
        _am_free(h, p, ANR_FDR_FREE, CALLER);
    else
        foreign("free", p);
    errno = saved;
}

size_t anr_usable_size(const void *p)
{
    if (!p)
        return 0;
    anr_mheap *h = _am_heap_of(p);
    if (!h) {
        foreign("usable_size", p);
        return 0;
    }
    return do_usable(h, p);
}

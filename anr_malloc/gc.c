/* Mark-and-sweep garbage collection, the live-block iterator and snapshots.
 *
 * The sweep walks the engine in batches (anr_core_walk holds the engine lock
 * for at most BATCH objects), then looks each block up, reports and frees
 * garbage with no lock held, so a leak callback may call into the heap. */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define BATCH 128

typedef struct batch {
    size_t n;
    struct {
        void *p;
        size_t usable;
    } b[BATCH];
} batch;

static bool collect(void *ctx, void *p, size_t usable)
{
    batch *bt = ctx;
    bt->b[bt->n].p = p;
    bt->b[bt->n].usable = usable;
    return ++bt->n < BATCH;
}

/* What is known of the engine block b: its user pointer, size, record. */
/* Returns false if the block is being freed (its owner is freeing it now). */
static bool describe(anr_mheap *h, void *b, size_t usable, anr_block_info *out,
                     const void **frames)
{
    memset(out, 0, sizeof(*out));
    out->ptr = b;
    out->size = usable;
    if (!h->has_side)
        return true;
    bool alive = true;
    pthread_mutex_lock(&h->dlock);
    uint32_t ri = _am_rec_find_block(h, b);
    if (ri) {
        _am_rec *r = _am_rec_open(h, ri);
        alive = !(r->flags & _AM_REC_DYING);
        out->ptr = (uint8_t *)b + r->front;
        out->size = r->size;
        out->has_debug_info = r->flags & _AM_REC_INFO;
        out->debug_info = r->info;
        out->tid = r->tid;
        out->seq = r->seq;
        out->nframes = r->nframes;
        for (unsigned i = 0; i < r->nframes; i++)
            frames[i] = (const void *)r->frames[i];
        out->stack = r->nframes ? frames : NULL;
        _am_rec_close(h, r);
    }
    pthread_mutex_unlock(&h->dlock);
    return alive;
}

int anr_block_get_info(const void *p, anr_block_info *out, const void **frames)
{
    anr_mheap *h = _am_heap_of(p);
    if (!h)
        return EINVAL;
    if (h->has_side) {
        pthread_mutex_lock(&h->dlock);
        uint32_t ri = _am_rec_find(h, p);
        pthread_mutex_unlock(&h->dlock);
        if (ri) {
            /* ri's block starts front bytes before p; describe() finds it by block. */
            pthread_mutex_lock(&h->dlock);
            _am_rec *r = _am_rec_open(h, ri);
            void *b = (void *)(h->span + r->block_off);
            _am_rec_close(h, r);
            pthread_mutex_unlock(&h->dlock);
            bool alive = describe(h, b, 0, out, frames);
            return alive && out->ptr == p ? 0 : EINVAL;
        }
    }
    if (anr_core_check(h->core, p) != ANR_ERR_NONE)
        return EINVAL;
    memset(out, 0, sizeof(*out));
    out->ptr = (void *)p;
    out->size = anr_core_usable_size(h->core, p);
    return 0;
}

/* True if the block the walk saw at b is still the one `info` describes:
 * live in the engine, with the same record (or still none). */
static bool unchanged(anr_mheap *h, void *b, const anr_block_info *info)
{
    bool same;
    if (!h->has_side)
        return anr_core_check(h->core, b) == ANR_ERR_NONE;
    pthread_mutex_lock(&h->dlock);
    uint32_t ri = _am_rec_find_block(h, b);
    if (info->seq || info->has_debug_info) {
        same = false;
        if (ri) {
            _am_rec *r = _am_rec_open(h, ri);
            same = (r->flags & _AM_REC_LIVE) && r->seq == info->seq &&
                   (uint8_t *)b + r->front == (uint8_t *)info->ptr;
            _am_rec_close(h, r);
        }
    } else {
        same = !ri && anr_core_check(h->core, b) == ANR_ERR_NONE;
    }
    pthread_mutex_unlock(&h->dlock);
    return same;
}

/* --- marking --- */

static bool mark(anr_mheap *h, const void *p)
{
    if (!h->has_side || !atomic_load(&h->gc_running) || !_am_in_span(h, p))
        return false;
    uint32_t ri = 0;
    if (atomic_load_explicit(&h->live_records, memory_order_relaxed)) {
        pthread_mutex_lock(&h->dlock);
        ri = _am_rec_find(h, p);
        pthread_mutex_unlock(&h->dlock);
    }
    if (!ri && anr_core_check(h->core, p) != ANR_ERR_NONE)
        return false;
    _am_tab_set_epoch(h, _am_gi(h, p), atomic_load(&h->epoch));
    return true;
}

bool anr_mark(const void *p)
{
    anr_mheap *h = _am_heap_of(p);
    return h && mark(h, p);
}

/* --- the collection --- */

int anr_heap_gc(anr_mheap *h, unsigned flags, anr_leak_fn on_leak, void *ctx, anr_gc_result *out)
{
    anr_gc_result res = {0};
    if (out)
        *out = res;
    if (!h->has_side)
        return ENOTSUP;
    if (pthread_mutex_trylock(&h->gc_lock) != 0)
        return EBUSY;
    /* Epochs run 1..255: marks from an earlier collection never match. */
    uint32_t epoch = atomic_load(&h->epoch) % 255 + 1;
    atomic_store(&h->epoch, epoch);
    atomic_store(&h->gc_running, true);

    _am_cb cbs[ANR_MAX_CALLBACKS];
    unsigned n;
    _am_copy_cbs(h, h->markers, &h->n_markers, cbs, &n);
    for (unsigned i = 0; i < n; i++)
        ((anr_marker_fn)cbs[i].fn)(cbs[i].ctx, h);

    const void *from = NULL;
    do {
        batch bt;
        bool garbage[BATCH];
        bt.n = 0;
        const void *next = anr_core_walk(h->core, from, collect, &bt);
        /* Judge the batch with new allocations held at the gate: each block
         * is then either marked, born marked, or its owner's to explain. */
        pthread_rwlock_wrlock(&h->gc_gate);
        for (size_t i = 0; i < bt.n; i++) {
            const void *frames[ANR_MAX_STACK_DEPTH];
            anr_block_info info;
            garbage[i] = false;
            if (!describe(h, bt.b[i].p, bt.b[i].usable, &info, frames))
                continue; /* its owner is freeing it */
            size_t gi = _am_gi(h, info.ptr);
            uint32_t e = atomic_load(&h->table[gi]) >> _AM_EPOCH_SHIFT;
            if (e)
                _am_tab_set_epoch(h, gi, 0); /* outside a collection no block is marked */
            if (!unchanged(h, bt.b[i].p, &info))
                continue; /* freed (or replaced) since the walk: not ours to judge */
            res.live++;
            if (e == epoch)
                res.marked++;
            else
                garbage[i] = true;
        }
        pthread_rwlock_unlock(&h->gc_gate);
        /* Report and free with no lock held: on_leak may call into the heap. */
        for (size_t i = 0; i < bt.n; i++) {
            if (!garbage[i])
                continue;
            const void *frames[ANR_MAX_STACK_DEPTH];
            anr_block_info info;
            if (!describe(h, bt.b[i].p, bt.b[i].usable, &info, frames))
                continue;
            res.garbage++;
            res.garbage_bytes += info.size;
            if ((flags & ANR_GC_REPORT) && on_leak)
                on_leak(ctx, h, &info);
            if (flags & ANR_GC_FREE) {
                _am_free(h, info.ptr, ANR_FDR_GC_FREE, 0);
                res.freed++;
            }
        }
        from = next;
    } while (from);

    atomic_store(&h->gc_running, false);
    atomic_fetch_add(&h->gc_runs, 1);
    atomic_fetch_add(&h->gc_garbage, res.garbage);
    atomic_fetch_add(&h->gc_freed, res.freed);
    pthread_mutex_unlock(&h->gc_lock);
    if (out)
        *out = res;
    return 0;
}

int anr_gc(unsigned flags, anr_leak_fn on_leak, void *ctx, anr_gc_result *out)
{
    anr_mheap *h = _am_default();
    return h ? anr_heap_gc(h, flags, on_leak, ctx, out) : ENOMEM;
}

/* --- iteration and snapshots --- */

void anr_heap_foreach(anr_mheap *h, void (*fn)(void *ctx, const anr_block_info *b), void *ctx)
{
    const void *from = NULL;
    do {
        batch bt;
        bt.n = 0;
        const void *next = anr_core_walk(h->core, from, collect, &bt);
        for (size_t i = 0; i < bt.n; i++) {
            const void *frames[ANR_MAX_STACK_DEPTH];
            anr_block_info info;
            if (describe(h, bt.b[i].p, bt.b[i].usable, &info, frames))
                fn(ctx, &info);
        }
        from = next;
    } while (from);
}

typedef struct snap {
    anr_stack_group *g;
    size_t max, dropped;
} snap;

static uint64_t stack_hash(const anr_block_info *b)
{
    if (!b->nframes)
        return 0;
    uint64_t x = 1469598103934665603u; /* FNV-1a over the frame words */
    for (unsigned i = 0; i < b->nframes; i++) {
        x ^= (uint64_t)(uintptr_t)b->stack[i];
        x *= 1099511628211u;
    }
    return x | 1; /* 0 is kept for "no stack" */
}

static bool same_stack(const anr_stack_group *g, const anr_block_info *b)
{
    if (g->nframes != b->nframes)
        return false;
    for (unsigned i = 0; i < b->nframes; i++)
        if (g->frames[i] != (uintptr_t)b->stack[i])
            return false;
    return true;
}

static void snap_add(void *ctx, const anr_block_info *b)
{
    snap *s = ctx;
    uint64_t hash = stack_hash(b);
    for (size_t k = 0; k < s->max; k++) {
        anr_stack_group *g = &s->g[(size_t)((hash + k) % s->max)];
        if (g->count == 0) {
            g->hash = hash;
            g->nframes = b->nframes;
            for (unsigned i = 0; i < b->nframes; i++)
                g->frames[i] = (uintptr_t)b->stack[i];
        } else if (g->hash != hash || !same_stack(g, b)) {
            continue;
        }
        g->count++;
        g->bytes += b->size;
        return;
    }
    s->dropped++;
}

size_t anr_heap_snapshot(anr_mheap *h, anr_stack_group *groups, size_t max, size_t *dropped)
{
    snap s = {groups, max, 0};
    if (max)
        memset(groups, 0, max * sizeof(*groups));
    if (max)
        anr_heap_foreach(h, snap_add, &s);
    else
        s.dropped = 0;
    /* Compact the hash table into the first n entries. */
    size_t n = 0;
    for (size_t i = 0; i < max; i++)
        if (groups[i].count) {
            if (i != n)
                groups[n] = groups[i];
            n++;
        }
    for (size_t i = n; i < max; i++)
        groups[i].count = 0;
    if (dropped)
        *dropped = s.dropped;
    return n;
}

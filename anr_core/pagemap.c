/* Pointer validation: from any address to its object in O(1), through the
 * page map. A pointer is good only if it is the start of a live object; the
 * caller holds the heap lock (the bitmap and run tags must be stable). With
 * thread caches, an object that carries the free key is already freed and
 * waits on a list (a thread cache's bin, a remote or the deferred list). */
#include "fast.h"

anr_error _anr_lookup(const anr_heap *h, const void *p, _anr_obj *obj)
{
    if (!_anr_in_data(h, p))
        return anr_core_owns(h, p) ? ANR_ERR_NOT_AN_OBJECT : ANR_ERR_FOREIGN;
    uint32_t pi = _anr_page_index(h, p);
    /* A slab's page goes straight to its head entry by its slab_at entry
     * (one cache line less than through an inner page's entry). */
    unsigned back = _anr_slab_at_back(h->slab_at[pi]);
    pi -= back ? back - 1u : 0u;
    const _anr_page *e = &h->pages[pi];
    uintptr_t page_off = (uintptr_t)p & (h->page_size - 1);

    switch (e->kind) {
    case _ANR_PK_SLAB: {
        const _anr_class *c = &h->cls[e->cls];
        size_t off = (size_t)((const uint8_t *)p - _anr_page_addr(h, pi));
        size_t idx;
        if (!_anr_slot_exact(c, off, &idx))
            return ANR_ERR_NOT_AN_OBJECT;
        if (!(e->bits[idx >> 6] & ((uint64_t)1 << (idx & 63))) || _anr_key_found(h, p))
            return ANR_ERR_DOUBLE_FREE;
        obj->head = pi;
        obj->idx = (unsigned)idx;
        obj->slab = true;
        obj->usable = c->size;
        return ANR_ERR_NONE;
    }
    case _ANR_PK_LARGE:
        if (page_off != 0)
            return ANR_ERR_NOT_AN_OBJECT;
        if (_anr_key_found(h, p))
            return ANR_ERR_DOUBLE_FREE;
        obj->head = pi;
        obj->idx = 0;
        obj->slab = false;
        obj->usable = (size_t)e->len << h->page_shift;
        return ANR_ERR_NONE;
    case _ANR_PK_FREE_DIRTY:
    case _ANR_PK_FREE_CLEAN:
    case _ANR_PK_PURGING:
        /* The head of a free run, at a page start: a large object freed twice. */
        return page_off == 0 ? ANR_ERR_DOUBLE_FREE : ANR_ERR_NOT_AN_OBJECT;
    default:
        return ANR_ERR_NOT_AN_OBJECT;
    }
}

/* Without the lock (a free that found it busy and would queue `p`): whether
 * `p` is a live object's start, by the same tests with relaxed loads. For a
 * live object the answer is exact, since the entries of a live object
 * change only when it is freed, by its owner; a bad pointer passes only
 * while its object is being freed by another thread at that moment (a
 * double free racing itself). Queueing writes a link and the free key into
 * the block, so anything that fails here must not be queued: it would
 * scribble on a live object or on a handed-back page that calloc trusts to
 * read as zero. */
anr_error _anr_lookup_unlocked(const anr_heap *h, const void *p)
{
    /* A slot start or a page start in the data: aligned, with room for the
     * link and the key. */
    if (!_anr_in_data(h, p))
        return ANR_ERR_NOT_AN_OBJECT;
    unsigned cls;
    size_t idx;
    const _anr_page *e = _anr_slab_slot(h, p, &cls, &idx, h->nclasses);
    if (e) /* the key only where caches use it (_anr_slot_live reads it always) */
        return _anr_slot_bit(e, idx) && !_anr_key_found(h, p) ? ANR_ERR_NONE : ANR_ERR_DOUBLE_FREE;
    if ((uintptr_t)p & (h->page_size - 1))
        return ANR_ERR_NOT_AN_OBJECT;
    uint8_t kind = __atomic_load_n(&h->pages[_anr_page_index(h, p)].kind, __ATOMIC_RELAXED);
    switch (kind) {
    case _ANR_PK_LARGE:
        return _anr_key_found(h, p) ? ANR_ERR_DOUBLE_FREE : ANR_ERR_NONE;
    case _ANR_PK_FREE_DIRTY:
    case _ANR_PK_FREE_CLEAN:
    case _ANR_PK_PURGING:
        return ANR_ERR_DOUBLE_FREE;
    default:
        return ANR_ERR_NOT_AN_OBJECT;
    }
}

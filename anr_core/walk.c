/* anr_core_walk(): visits live objects in address order, for the front ends'
 * garbage collector, leak reports and snapshots; and anr_core_data_span(),
 * the span of the mapping where objects live (for side tables indexed by
 * address). Owned by anr_malloc; read internal.h, change nothing else.
 *
 * The walk holds the heap lock while it visits, so a visitor that stops after
 * a batch (returns false) bounds the lock hold time; the walk resumes from
 * the address it returned. Objects allocated or freed between two batches may
 * or may not be seen; no object is seen twice in one pass.
 */
#include "internal.h"

void anr_core_data_span(const anr_heap *h, uintptr_t *start, size_t *len)
{
    *start = (uintptr_t)h->data;
    *len = (size_t)h->npages << h->page_shift;
}

/* Visits the live slots of the slab at `head` whose address is >= from.
 * Returns the resume address if the visitor stopped, else NULL. */
static void *walk_slab(anr_heap *h, uint32_t head, uintptr_t from, anr_core_visit_fn visit,
                       void *ctx, bool *stop)
{
    const _anr_page *e = &h->pages[head];
    const _anr_class *c = &h->cls[e->cls];
    uint8_t *base = _anr_page_addr(h, head);
    unsigned first = 0;
    if (from > (uintptr_t)base)
        first = (unsigned)((from - (uintptr_t)base + c->size - 1) / c->size);
    for (unsigned i = first; i < c->nobj; i++) {
        if (!(e->bits[i >> 6] & ((uint64_t)1 << (i & 63))))
            continue;
        uint8_t *p = base + (size_t)i * c->size;
        if (_anr_key_found(h, p))
            continue; /* freed: waiting in a thread cache's bin or on a list */
        if (!visit(ctx, p, c->size)) {
            *stop = true;
            return p + c->size;
        }
    }
    return NULL;
}

void *anr_core_walk(anr_heap *h, const void *from, anr_core_visit_fn visit, void *ctx)
{
    uintptr_t f = (uintptr_t)from;
    void *resume = NULL;
    bool stop = false;

    _anr_lock(h);
    _anr_drain_all(h);
    uint32_t pi = 0;
    if (f > (uintptr_t)h->data) {
        if (!_anr_in_data(h, from)) {
            _anr_unlock(h);
            return NULL;
        }
        pi = _anr_page_index(h, from);
        /* Resuming inside a slab: start from its head so its later slots are seen. */
        if (pi < h->top && _ANR_KIND(&h->pages[pi]) == _ANR_PK_SLAB_INNER &&
            !(h->pages[pi].kind & _ANR_TAIL))
            pi -= h->pages[pi].len;
    }
    while (pi < h->top && !stop) {
        const _anr_page *e = &h->pages[pi];
        uint8_t kind = e->kind;
        uint32_t len = e->len ? e->len : 1;
        switch (kind) {
        case _ANR_PK_LARGE: {
            uint8_t *p = _anr_page_addr(h, pi);
            if ((uintptr_t)p >= f && !_anr_key_found(h, p) /* not freed into a run bin */ &&
                !visit(ctx, p, (size_t)len << h->page_shift)) {
                stop = true;
                resume = p + ((size_t)len << h->page_shift);
            }
            pi += len;
            break;
        }
        case _ANR_PK_SLAB:
            resume = walk_slab(h, pi, f, visit, ctx, &stop);
            pi += len;
            break;
        case _ANR_PK_FREE_DIRTY:
        case _ANR_PK_FREE_CLEAN:
        case _ANR_PK_PURGING:
            pi += len;
            break;
        default:
            /* Interior, tail or inner entries: only met when resuming mid-run. */
            pi++;
            break;
        }
    }
    _anr_unlock(h);
    return stop ? resume : NULL;
}

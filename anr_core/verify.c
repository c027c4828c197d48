/* anr_core_verify(): walks the whole page map and checks every invariant
 * listed in internal.h. O(heap); for tests and the debug kit, never on a hot
 * path. Returns the first broken invariant. */
#include "fast.h"

static bool is_free(uint8_t kind)
{
    return kind == _ANR_PK_FREE_DIRTY || kind == _ANR_PK_FREE_CLEAN;
}

/* With thread caches, a free slot never carries the free key, at any
 * instant: a slot gets it only once taken in the bitmap (into a bin, a
 * remote or deferred list) and loses it before it is marked free again.
 * A fork at an instant that broke this would leave the child a free slot
 * with the key, and that object's first free would read as a double free.
 * Checked only where the bitmap holds still while it is read: a shared slab
 * (its bits change under the lock, held here) or the caller's own. Another
 * running thread's slab is skipped: its owner may take a slot, bin it and
 * free it again between two reads here, and no pair of reads can tell that
 * from a broken instant when this thread stalls between them. A forked
 * child, after anr_core_fork_child(), owns or shares every slab. */
static bool free_slot_has_key(const anr_heap *h, const _anr_page *e, const _anr_class *c,
                              uint32_t mine)
{
    if (!h->tc_on || (e->owner && e->owner != mine))
        return false; /* no keys (free memory may belong to valgrind); or moving */
    const uint8_t *base = _anr_page_addr(h, (uint32_t)(e - h->pages));
    for (unsigned i = 0; i < c->nobj; i++)
        if (!(e->bits[i >> 6] & ((uint64_t)1 << (i & 63))) &&
            _anr_key_is_set(h, base + (size_t)i * c->size))
            return true;
    return false;
}

static const char *check_slab(const anr_heap *h, uint32_t pi, uint32_t mine, size_t *objs,
                              size_t *bytes)
{
    const _anr_page *e = &h->pages[pi];
    if (e->cls >= h->nclasses)
        return "slab with a bad class";
    const _anr_class *c = &h->cls[e->cls];
    if (e->len != c->pages)
        return "slab length differs from its class";
    if (free_slot_has_key(h, e, c, mine))
        return "a free slot carries the free key";
    if (e->owner) {
        /* A thread cache's slab: its owner changes the bitmap without the
         * lock, and the heap counts every slot in use until it comes back. */
        if (e->owner > h->tc_slots || !h->tcaches[e->owner - 1].active ||
            e->cls >= h->tc_classes)
            return "owned slab is not held by an active cache";
        *objs += c->nobj;
        *bytes += (size_t)c->nobj * c->size;
        return NULL;
    }
    if (atomic_load(&e->remote) != 0)
        return "shared slab has a remote-free list";
    unsigned used = 0;
    for (unsigned i = 0; i < ANR_SLAB_MAX_OBJECTS; i++) {
        bool bit = e->bits[i >> 6] & ((uint64_t)1 << (i & 63));
        if (i >= c->nobj && !bit)
            return "slab bitmap has a free slot past the last object";
        if (i < c->nobj && bit)
            used++;
    }
    if (c->nobj - used != e->nfree)
        return "slab free count differs from its bitmap";
    if (e->nfree == c->nobj)
        return "empty slab was not released";
    for (uint32_t i = 1; i < e->len; i++)
        if (h->pages[pi + i].kind != _ANR_PK_SLAB_INNER || h->pages[pi + i].len != i)
            return "slab inner page entry is wrong";
    for (uint32_t i = 0; i < e->len; i++)
        if (h->slab_at[pi + i] != _anr_slab_at_make(e->cls, i))
            return "slab_at entry of a slab page is wrong";
    *objs += used;
    *bytes += (size_t)used * c->size;
    return NULL;
}

static size_t count_list(const anr_heap *h, uint32_t head, size_t max)
{
    size_t n = 0;
    for (uint32_t i = head; i != _ANR_NIL && n <= max; i = h->pages[i].next)
        n++;
    return n;
}

const char *anr_core_verify(anr_heap *h)
{
    const char *bad = NULL;
    size_t in_use = 0, dirty = 0, purging = 0, objs = 0, bytes = 0;
    size_t free_runs = 0, dirty_runs = 0, partial = 0;
    uint8_t prev_kind = _ANR_PK_NONE;
    const _anr_tcache *own = _anr_tc_mine(h);
    uint32_t mine = own ? own->slot + 1 : 0;

    _anr_lock(h);
    _anr_drain_all(h);
    for (uint32_t pi = 0; pi < h->top && !bad;) {
        const _anr_page *e = &h->pages[pi];
        uint8_t kind = e->kind;
        if (kind == _ANR_PK_NONE || (kind & _ANR_TAIL) || kind == _ANR_PK_SLAB_INNER) {
            bad = "page below top is not the head of a run";
            break;
        }
        if (e->len == 0 || (uint64_t)pi + e->len > h->top) {
            bad = "run length runs past top";
            break;
        }
        uint32_t len = e->len;
        if (kind != _ANR_PK_SLAB) {
            if (len > 1 && (h->pages[pi + len - 1].kind != (kind | _ANR_TAIL) ||
                            h->pages[pi + len - 1].len != len))
                bad = "run tail tag does not match its head";
            for (uint32_t i = 1; i + 1 < len && !bad; i++)
                if (h->pages[pi + i].kind != _ANR_PK_NONE)
                    bad = "interior page of a run is tagged";
            for (uint32_t i = 0; i < len && !bad; i++)
                if (h->slab_at[pi + i])
                    bad = "page outside any slab has a slab_at entry";
        }
        if (bad)
            break;
        switch (kind) {
        case _ANR_PK_FREE_DIRTY:
        case _ANR_PK_FREE_CLEAN:
            if (prev_kind == kind)
                bad = "two adjacent free runs of the same state";
            free_runs++;
            if (kind == _ANR_PK_FREE_DIRTY) {
                dirty += len;
                dirty_runs++;
            }
            break;
        case _ANR_PK_PURGING:
            purging += len;
            break;
        case _ANR_PK_LARGE:
            in_use += len;
            objs++;
            bytes += (size_t)len << h->page_shift;
            break;
        case _ANR_PK_SLAB:
            in_use += len;
            bad = check_slab(h, pi, mine, &objs, &bytes);
            if (!bad && e->nfree && !e->owner)
                partial++;
            break;
        default:
            bad = "unknown page kind";
        }
        prev_kind = kind;
        pi += len;
    }
    if (!bad && prev_kind == _ANR_PK_FREE_CLEAN && h->advice == ANR_PURGE_DONTNEED)
        bad = "clean free run touches top";
    for (uint32_t pi = h->top; !bad && pi < h->pm_hwm; pi++)
        if (h->pages[pi].kind != _ANR_PK_NONE || h->slab_at[pi])
            bad = "page at or above top is tagged";
    if (!bad && in_use != h->pages_in_use)
        bad = "pages_in_use differs from the page map";
    if (!bad && dirty != h->pages_dirty)
        bad = "pages_dirty differs from the page map";
    if (!bad && purging != h->pages_purging)
        bad = "pages_purging differs from the page map";
    if (!bad && (objs != h->objects_in_use || bytes != h->bytes_in_use))
        bad = "objects or bytes in use differ from the page map";
    if (!bad) {
        size_t in_bins = 0;
        const _anr_bins *sets[2] = {&h->dirty_bins, &h->clean_bins};
        for (int b = 0; b < 2; b++)
            for (unsigned f = 0; f < _ANR_FL_COUNT; f++)
                for (unsigned s = 0; s < _ANR_SL_COUNT; s++) {
                    uint32_t head = sets[b]->head[f][s];
                    bool bit = (sets[b]->fl_map >> f & 1) && (sets[b]->sl_map[f] >> s & 1);
                    if ((head != _ANR_NIL) != bit)
                        bad = "bin bitmap disagrees with bin list";
                    for (uint32_t i = head; i != _ANR_NIL && !bad; i = h->pages[i].next) {
                        if (!is_free(h->pages[i].kind))
                            bad = "bin holds a run that is not free";
                        in_bins++;
                        if (in_bins > free_runs)
                            bad = "bins hold more runs than the page map";
                    }
                }
        if (!bad && in_bins != free_runs)
            bad = "a free run is missing from the bins";
    }
    if (!bad) {
        size_t n = 0;
        for (uint32_t i = h->fifo_head; i != _ANR_NIL && !bad; i = h->pages[i].fifo_next)
            if (++n > dirty_runs || h->pages[i].kind != _ANR_PK_FREE_DIRTY)
                bad = "dirty age list is wrong";
        if (!bad && n != dirty_runs)
            bad = "a dirty run is missing from the age list";
    }
    if (!bad) {
        size_t n = 0;
        for (unsigned c = 0; c < h->nclasses; c++)
            n += count_list(h, h->partial[c], partial);
        if (n != partial)
            bad = "partial slab lists differ from the page map";
    }
    _anr_unlock(h);
    return bad;
}

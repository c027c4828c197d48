/* Per-thread caches of small objects, carved from the one mapping.
 *
 * A thread cache OWNS slabs: per size class one it allocates from (`cur`), a
 * list of others with free slots (`avail`) and a list of full ones (`full`).
 * The owner allocates from and frees into its slabs without the heap lock:
 * only the owner ever writes an owned slab's bitmap, so double frees are
 * still caught exactly, by the bitmap. A free from another thread pushes the
 * object onto the slab's lock-free `remote` list (never blocks, never waits
 * for the owner); the owner collects it when it runs out of free slots (a
 * bounded scan of its full slabs). The lock is taken only to get new slabs
 * (once per 16 to 256 objects; for classes of a few objects per slab, a few
 * slabs at once) and to give slabs back: when the free bytes a
 * cache holds pass `tc_max_bytes` (its `avail` slabs go back), when a size
 * class goes quiet (bin_gc_step: its bin and free slabs go back), at thread
 * exit, when the heap asks every cache to flush (limit reached, full purge),
 * and in a forked child for the threads that did not come along.
 *
 * Ownership lives in the slab's `remote` word: bit 0 set = owned (the rest
 * is the list head), 0 = shared. The lock holder only changes it with the
 * lock held, so under the lock ownership is stable; a remote free that finds
 * 0 takes the locked path instead.
 *
 * Accounting: when a cache takes a slab, the heap counts every free slot as
 * in use ("lent" to the cache) and the cache counts it as cached; the heap's
 * figures change again only when the slab comes back. Statistics subtract
 * the cached bytes.
 *
 * In front of the slabs sit the bins: per class, a short list of objects
 * this thread freed, linked through the objects. free() checks the pointer
 * (page map, slot, bitmap bit, free key) and pushes it; malloc() pops. The
 * bitmap still counts a binned object as in use, so only the key in its
 * word 1 tells it is free: a second free, a realloc or a check of it sees
 * the key and reports a double free. A full bin sends its older half home
 * (own slabs: bitmap; other threads' slabs: their remote lists; shared
 * slabs: under the lock, or the deferred list if the lock is busy); an
 * empty bin is refilled with up to half its capacity from `cur`. Links are
 * stored XORed with the key and checked when followed, so a use after free
 * that scribbles on one is reported instead of handing out a wild pointer.
 *
 * Freed page runs past the largest class wait in run bins (runbins.c),
 * which go back with the rest of the cache.
 *
 * The fast paths themselves, and their instruction budget, are in fast.h.
 */
#include <stdalign.h>
#include <string.h>

#include "fast.h"

#define REMOTE_OWNED ((uint64_t)1)

/* This thread's cache (fast.h); initial-exec, so that a preloaded
 * library's TLS comes from the static surplus and never calls
 * __tls_get_addr. */
__thread _anr_tls_state _anr_tls __attribute__((tls_model("initial-exec")));

static _Atomic uint64_t heap_generation;

/* Largest bin capacity: about BIN_BYTES per class, between BIN_MIN and
 * BIN_MAX objects (64 KiB, so that classes up to 1 KiB reach BIN_MAX: at
 * 32 KiB a program that mallocs and frees 64 blocks of 1 KiB in turn sent half
 * of them through the lock each round, 2.5 times slower). A bin starts at
 * BIN_START (or less) and adapts between BIN_FLOOR and that. Classes from
 * BIG_CLASS up (a slab of one object or a few: each binned one pins its
 * slab, and an object that goes home empties a slab, which goes back under
 * the lock) start at about BIG_START_BYTES and may grow to about
 * BIG_BIN_BYTES (at least 2), within tc_max_bytes for all their bins
 * together (bin_grown); their floor is about BIG_FLOOR_BYTES (at least 1). A
 * program that mallocs and frees 64 blocks of 4 KiB in turn then keeps them
 * all in its bin, where a 64 KiB bin sent 48 of them home and took 48 slabs
 * back under the lock each round (10 times slower). */
#define BIN_BYTES 65536u
#define BIN_MIN 16u
#define BIN_MAX 64u
#define BIN_START 16u
#define BIN_FLOOR 4u
#define BIN_SHRINK_AFTER 4u
#define BIG_CLASS 4096u
#define BIG_BIN_BYTES 262144u
#define BIG_START_BYTES 65536u
#define BIG_FLOOR_BYTES 16384u

static uint16_t bin_max_of(uint32_t size)
{
    uint32_t cap = (size >= BIG_CLASS ? BIG_BIN_BYTES : BIN_BYTES) / size;
    if (size >= BIG_CLASS)
        return (uint16_t)(cap < 2 ? 2 : cap);
    return (uint16_t)(cap < BIN_MIN ? BIN_MIN : cap > BIN_MAX ? BIN_MAX : cap);
}

static unsigned bin_floor_of(uint32_t size)
{
    if (size <= BIG_CLASS)
        return BIN_FLOOR;
    return BIG_FLOOR_BYTES / size ? BIG_FLOOR_BYTES / size : 1;
}

/* A new cache's bin capacity for `cls`: from BIG_CLASS up, `share` bytes
 * (BIG_START_BYTES, or less so that those bins start within tc_max_bytes
 * together), at least one object. */
static uint16_t bin_start_of(const anr_heap *h, unsigned cls, size_t share)
{
    uint32_t size = h->cls[cls].size;
    size_t start = size >= BIG_CLASS ? share / size : BIN_START;
    if (start < 1)
        start = 1;
    return (uint16_t)(start < h->bin_max[cls] ? start : h->bin_max[cls]);
}

/* Owner: the capacity of the bin of `cls` doubled, up to its largest and,
 * from BIG_CLASS up, to what keeps the capacities of those classes' bins
 * within tc_max_bytes together (about 1 MiB by default, where 256 KiB
 * each would allow 2.8 MiB). */
static uint16_t bin_grown(const anr_heap *h, const _anr_tcache *tc, unsigned cls)
{
    unsigned cap = tc->bin_cap[cls] * 2u;
    if (cap > h->bin_max[cls])
        cap = h->bin_max[cls];
    uint32_t size = h->cls[cls].size;
    if (size < BIG_CLASS || cap <= tc->bin_cap[cls])
        return (uint16_t)cap;
    size_t sum = 0; /* classes ascend: the big ones are last */
    for (unsigned c = h->tc_classes; c-- > 0 && h->cls[c].size >= BIG_CLASS;)
        sum += (size_t)tc->bin_cap[c] * h->cls[c].size;
    size_t more = sum < h->tc_max_bytes ? (h->tc_max_bytes - sum) / size : 0;
    if (cap - tc->bin_cap[cls] > more)
        cap = tc->bin_cap[cls] + (unsigned)more;
    return (uint16_t)cap;
}

/* Owner: halves the bin capacity of `cls`, not below its floor (it doubles
 * again when a malloc finds the bin empty). */
static void bin_shrink(const anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    if (tc->bin_cap[cls] > bin_floor_of(h->cls[cls].size))
        tc->bin_cap[cls] = (uint16_t)(tc->bin_cap[cls] / 2u);
}

static inline uint8_t *slab_addr(const anr_heap *h, uint32_t head)
{
    return _anr_page_addr(h, head);
}

/* Owner only: objects and bytes of free slots it holds. Relaxed stores, so
 * statistics may read them from another thread. */
static inline void tc_adjust(_anr_tcache *tc, long objs, size_t size)
{
    size_t o = atomic_load_explicit(&tc->cached_objs, memory_order_relaxed);
    size_t b = atomic_load_explicit(&tc->cached_bytes, memory_order_relaxed);
    atomic_store_explicit(&tc->cached_objs, o + (size_t)objs, memory_order_relaxed);
    atomic_store_explicit(&tc->cached_bytes, b + (size_t)objs * size, memory_order_relaxed);
}

/* --- owned-slab rings (owner only; linked through prev/next) --- */

/* Adds `pi` behind the others (just before *head) of a circular list. */
static void ring_push(anr_heap *h, uint32_t *head, uint32_t pi, uint32_t where)
{
    _anr_page *e = &h->pages[pi];
    e->where = where;
    if (*head == _ANR_NIL) {
        e->prev = e->next = pi;
        *head = pi;
        return;
    }
    _anr_page *first = &h->pages[*head];
    e->next = *head;
    e->prev = first->prev;
    h->pages[first->prev].next = pi;
    first->prev = pi;
}

static void ring_remove(anr_heap *h, uint32_t *head, uint32_t pi)
{
    _anr_page *e = &h->pages[pi];
    if (e->next == pi) {
        *head = _ANR_NIL;
        return;
    }
    h->pages[e->prev].next = e->next;
    h->pages[e->next].prev = e->prev;
    if (*head == pi)
        *head = e->next;
}

/* --- set-up --- */

void _anr_tc_init(anr_heap *h, const anr_core_options *o, _anr_tcache *table, uint32_t slots)
{
    h->gen = atomic_fetch_add(&heap_generation, 1) + 1;
    h->tcaches = table; /* slots are set up when first handed out */
    h->tc_slots = slots;
    h->tc_unused = 0;
    h->tc_free = _ANR_NIL;
    size_t max_size = o->tcache_max_size ? o->tcache_max_size : 16384;
    unsigned n = 0;
    while (n < h->nclasses && h->cls[n].size <= max_size)
        n++;
    h->tc_classes = n;
    h->tc_max_bytes = o->tcache_max_bytes ? o->tcache_max_bytes : (size_t)1 << 20;
    unsigned big = 0;
    for (unsigned c = 0; c < n; c++) {
        h->bin_max[c] = bin_max_of(h->cls[c].size);
        big += h->cls[c].size >= BIG_CLASS;
    }
    size_t share = big ? h->tc_max_bytes / big : 0;
    if (share > BIG_START_BYTES)
        share = BIG_START_BYTES;
    for (unsigned c = 0; c < n; c++)
        h->bin_start[c] = bin_start_of(h, c, share);
    h->tc_on = o->thread_cache && slots > 0 && n > 0;
    h->tc_fast_max = h->tc_on ? h->cls[n - 1].size : 0;
    _anr_run_bins_init(h, o->tcache_run_bytes);
    atomic_init(&h->tc_key_state, 0);
    atomic_init(&h->flush_epoch, 0);
    atomic_init(&h->idle_epoch, UINT32_MAX); /* none yet */
    atomic_init(&h->idle_flushed, false);
}

/* --- collecting remote frees --- */

/* Owner (or lock holder releasing the slab): applies a detached remote list
 * to the bitmap. Each link is checked before it is followed: a list broken
 * by a double free or a use after free ends the walk (the rest leaks)
 * instead of corrupting the slab. Returns objects freed. */
static unsigned apply_remote(anr_heap *h, uint32_t head, uint64_t list)
{
    _anr_page *e = &h->pages[head];
    const _anr_class *c = &h->cls[e->cls];
    uint8_t *base = slab_addr(h, head);
    unsigned n = 0;
    uintptr_t p = (uintptr_t)(list & ~REMOTE_OWNED);
    while (p) {
        size_t off = p - (uintptr_t)base;
        size_t idx;
        if (!_anr_slot_exact(c, off, &idx)) { /* also a pointer below the slab (off wraps) */
            _anr_report(h, ANR_ERR_DEFERRED_LIST, ANR_OP_FREE, (void *)p);
            break;
        }
        uint64_t m = (uint64_t)1 << (idx & 63);
        uint64_t b = __atomic_load_n(&e->bits[idx >> 6], __ATOMIC_RELAXED);
        if (!(b & m)) {
            _anr_report(h, ANR_ERR_DOUBLE_FREE, ANR_OP_FREE, (void *)p);
            break;
        }
        uintptr_t next = *(uintptr_t *)p;
        _anr_key_clear((void *)p);
        /* Release: the key is gone before the slot reads as free (see bin_fill). */
        __atomic_store_n(&e->bits[idx >> 6], b & ~m, __ATOMIC_RELEASE);
        n++;
        p = next;
    }
    e->nfree = (uint16_t)(e->nfree + n);
    return n;
}

/* Owner: collects the slab's remote frees into the cache's count. */
static unsigned collect(anr_heap *h, _anr_tcache *tc, uint32_t pi)
{
    _anr_page *e = &h->pages[pi];
    if (atomic_load_explicit(&e->remote, memory_order_seq_cst) == REMOTE_OWNED)
        return 0; /* seq_cst: see hint_owner */
    uint64_t list = atomic_exchange_explicit(&e->remote, REMOTE_OWNED, memory_order_seq_cst);
    unsigned n = apply_remote(h, pi, list);
    tc_adjust(tc, (long)n, h->cls[e->cls].size);
    return n;
}

/* --- giving slabs back --- */

/* Lock held. Hands an owned slab (already off the cache's lists) back. */
static void release_slab(anr_heap *h, _anr_tcache *tc, uint32_t pi)
{
    _anr_page *e = &h->pages[pi];
    const _anr_class *c = &h->cls[e->cls];
    uint64_t list = atomic_exchange(&e->remote, 0);
    apply_remote(h, pi, list);
    /* Recount from the bitmap: a forked child may have caught an owner
     * between its bitmap store and its counter update. */
    unsigned used = 0;
    for (unsigned w = 0; w < _ANR_BITMAP_WORDS; w++)
        used += (unsigned)__builtin_popcountll(e->bits[w]);
    unsigned nfree = ANR_SLAB_MAX_OBJECTS - used;
    unsigned before = e->nfree;
    e->nfree = (uint16_t)nfree;
    e->where = 0;
    __atomic_store_n(&e->owner, 0, __ATOMIC_RELAXED);
    h->bytes_in_use -= (size_t)nfree * c->size;
    h->objects_in_use -= nfree;
    /* The cache counted the slots it knew of; remote frees applied here
     * were never in its count. */
    tc_adjust(tc, -(long)(before < nfree ? before : nfree), c->size);
    _anr_slab_put(h, pi);
}

static void release_spare(anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    uint32_t pi = tc->spare[cls];
    if (pi != _ANR_NIL) {
        tc->spare[cls] = _ANR_NIL;
        release_slab(h, tc, pi);
    }
}

static void release_list(anr_heap *h, _anr_tcache *tc, uint32_t *head)
{
    while (*head != _ANR_NIL) {
        uint32_t pi = *head;
        ring_remove(h, head, pi);
        release_slab(h, tc, pi);
    }
}

/* --- bins --- */

/* A use after free broke a link after `at`: the rest of the bin is dropped
 * (those objects stay counted in use: a leak, never a corruption). */
static void bin_broken(anr_heap *h, const void *at)
{
    _anr_report(h, ANR_ERR_DEFERRED_LIST, ANR_OP_FREE, at);
}

/* False if the bin of `cls` is empty, or if its top lacks the free key (a
 * fast pop followed a scribbled link to it: fast.h's bin_link_next):
 * reported, and the bin dropped, as for a broken link. */
static bool bin_sound(anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    void *top = tc->bin[cls];
    if (!top)
        return false;
    if (bin_top_ok(h, top))
        return true;
    bin_broken(h, top);
    tc->bin[cls] = NULL;
    bin_count(tc, cls, 0);
    return false;
}

/* The bin's newest object, or NULL if the bin is empty or was dropped. */
static void *bin_pop(anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    if (!bin_sound(h, tc, cls))
        return NULL;
    void *p = tc->bin[cls];
    void *next = bin_next(h, p);
    unsigned n = tc->bin_n[cls] - 1u;
    if (next == BIN_BAD) {
        bin_broken(h, p);
        next = NULL;
        n = 0;
    }
    tc->bin[cls] = next;
    bin_count(tc, cls, n);
    tc->gc_used[cls] = 1;
    _anr_key_clear(p);
    return p;
}

/* The head page of the slab holding `p` (a checked object). */
static inline uint32_t slab_of(const anr_heap *h, const void *p)
{
    uint32_t pi = _anr_page_index(h, p);
    return pi + 1u - _anr_slab_at_back(atomic_load_explicit(&h->slab_at[pi], memory_order_relaxed));
}

static inline size_t slot_of(const anr_heap *h, uint32_t head, const void *p)
{
    const _anr_class *c = &h->cls[h->pages[head].cls];
    return _anr_slot_of(c, (size_t)((const uint8_t *)p - slab_addr(h, head)));
}

/* After a push onto owned slab e's remote list: tells its owner. The push
 * (a CAS) and the owner's clearing of the hint (an exchange) are seq_cst, as
 * are the loads after each, so an owner whose scan missed the push finds the
 * hint set again (plain loads on x86; the store only when it was clear). */
static void hint_owner(anr_heap *h, const _anr_page *e)
{
    uint32_t owner = __atomic_load_n(&e->owner, __ATOMIC_RELAXED);
    unsigned cls = __atomic_load_n(&e->cls, __ATOMIC_RELAXED);
    /* Once the push is in, the owner (or a flush) may apply the list and
     * give the slab back, and its pages may become a free run whose entry
     * reuses `owner` (fifo_prev): an index that large is no cache. A stale
     * one within range only sets a hint that costs one scan. */
    if (!owner || owner > h->tc_slots || cls >= ANR_MAX_CLASSES)
        return; /* shared now: whoever released it applied the list */
    _Atomic uint8_t *hint = &h->tcaches[owner - 1].remote_hint[cls];
    if (!atomic_load_explicit(hint, memory_order_seq_cst))
        atomic_store_explicit(hint, 1, memory_order_release);
}

/* Pushes `p` (key already set) onto an owned slab's remote list. False if
 * the slab is shared (or just became so): the locked path must free it. */
static bool remote_push(anr_heap *h, _anr_page *e, void *p)
{
    uint64_t w = atomic_load_explicit(&e->remote, memory_order_relaxed);
    while (w & REMOTE_OWNED) {
        *(uintptr_t *)p = (uintptr_t)(w & ~REMOTE_OWNED);
        if (atomic_compare_exchange_weak_explicit(&e->remote, &w,
                                                  (uint64_t)(uintptr_t)p | REMOTE_OWNED,
                                                  memory_order_seq_cst, memory_order_relaxed)) {
            hint_owner(h, e);
            return true;
        }
    }
    return false;
}

/* What a bin's spill leaves for the heap lock, taken once for all of it:
 * objects whose slab is shared, and owned slabs it emptied (they stay on
 * `avail` until then; more than EMPTY_MAX stay there for a trim). */
#define EMPTY_MAX 32u
typedef struct locked_batch {
    void *first, *last;
    size_t n;
    unsigned nempty;
    uint32_t empty[EMPTY_MAX];
} locked_batch;

/* Owner, lock not held: gives slot `idx` of its own slab `pi` back. */
static void own_free(anr_heap *h, _anr_tcache *tc, uint32_t pi, size_t idx, locked_batch *lb)
{
    _anr_page *e = &h->pages[pi];
    unsigned cls = e->cls;
    const _anr_class *c = &h->cls[cls];
    uint64_t *word = &e->bits[idx >> 6];
    /* Release: the caller cleared the key first (see bin_fill). */
    __atomic_store_n(word, *word & ~((uint64_t)1 << (idx & 63)), __ATOMIC_RELEASE);
    if (e->nfree++ == 0 && e->where == _ANR_TC_FULL) {
        ring_remove(h, &tc->full[cls], pi);
        ring_push(h, &tc->avail[cls], pi, _ANR_TC_AVAIL);
    }
    tc_adjust(tc, 1, c->size);
    if (e->nfree != c->nobj || e->where != _ANR_TC_AVAIL)
        return;
    /* An empty slab is kept as the class's spare if it has none (classes up
     * to BIG_CLASS: past it, a slab holds a few objects, the bins already
     * keep that many, and a spare would pin up to 16 pages); any other goes
     * back with the spill's batch, so an idle thread holds no free pages
     * beyond its `cur` and spare slabs. If the lock is busy it waits on
     * `avail` (free() never waits): the next trim or flush gives it back. */
    if (tc->spare[cls] == _ANR_NIL && c->size <= BIG_CLASS) {
        ring_remove(h, &tc->avail[cls], pi);
        tc->spare[cls] = pi;
        e->where = _ANR_TC_SPARE;
    } else if (lb->nempty < EMPTY_MAX) {
        lb->empty[lb->nempty++] = pi;
    }
}

/* Owner, lock not held: sends an object out of a bin back to its slab. */
static void send_home(anr_heap *h, _anr_tcache *tc, void *p, locked_batch *lb)
{
    uint32_t pi = slab_of(h, p);
    _anr_page *e = &h->pages[pi];
    uint32_t owner = __atomic_load_n(&e->owner, __ATOMIC_RELAXED);
    if (owner == tc->slot + 1) {
        _anr_key_clear(p);
        own_free(h, tc, pi, slot_of(h, pi, p), lb);
        return;
    }
    if (owner && remote_push(h, e, p))
        return; /* the key stays: it is queued */
    *(void **)p = lb->first;
    lb->first = p;
    if (!lb->last)
        lb->last = p;
    lb->n++;
}

static void send_locked(anr_heap *h, _anr_tcache *tc, locked_batch *lb)
{
    if (!lb->n && !lb->nempty)
        return;
    if (!_anr_trylock(h)) {
        if (lb->n)
            _anr_defer_chain(h, lb->first, lb->last, lb->n);
        return;
    }
    for (void *p = lb->first; p;) {
        void *next = (p == lb->last) ? NULL : *(void **)p;
        _anr_key_clear(p);
        _anr_free_locked(h, p, ANR_OP_FREE);
        p = next;
    }
    for (unsigned i = 0; i < lb->nempty; i++) {
        uint32_t pi = lb->empty[i];
        _anr_page *e = &h->pages[pi];
        ring_remove(h, &tc->avail[e->cls], pi);
        release_slab(h, tc, pi);
    }
    _anr_unlock_and_purge(h, false);
}

/* Owner, lock not held: all but the newest `keep` objects of the bin of
 * `cls` (full, or of a quiet class) go home (keep 0: all of them). */
static void bin_spill(anr_heap *h, _anr_tcache *tc, unsigned cls, unsigned keep)
{
    if (!bin_sound(h, tc, cls))
        return;
    void *p = tc->bin[cls], *rest;
    unsigned kept = 1;
    if (!keep) { /* all of it */
        rest = p;
        p = NULL;
        tc->bin[cls] = NULL;
        kept = 0;
    } else {
        for (; kept < keep; kept++) {
            void *next = bin_next(h, p);
            if (next == BIN_BAD) {
                bin_broken(h, p);
                *(uintptr_t *)p = bin_link(h, p, NULL);
                next = NULL;
            }
            if (!next)
                break;
            p = next;
        }
        rest = bin_next(h, p);
        *(uintptr_t *)p = bin_link(h, p, NULL);
    }
    bin_count(tc, cls, kept);
    /* Fields one by one: an initializer would clear `empty` too (a rep
     * stos of 160 bytes, a quarter of a spill's time in python3). */
    locked_batch lb;
    lb.first = lb.last = NULL;
    lb.n = 0;
    lb.nempty = 0;
    void *last = p; /* the object whose link is followed */
    while (rest && rest != BIN_BAD) {
        void *next = bin_next(h, rest);
        send_home(h, tc, rest, &lb);
        last = rest;
        rest = next;
    }
    if (rest == BIN_BAD)
        bin_broken(h, last);
    send_locked(h, tc, &lb);
}

/* Owner: quiet class c has an empty bin: its current slab, if no object
 * of it is live, and its spare go back (empty slabs on `avail` went back
 * when they emptied, or wait there for a trim if the lock was busy then).
 * If the lock is busy now, a later visit tries again. */
static void release_quiet(anr_heap *h, _anr_tcache *tc, unsigned c)
{
    uint32_t pi = tc->cur[c];
    bool cur_free = pi != _ANR_NIL && h->pages[pi].nfree == h->cls[c].nobj;
    if ((!cur_free && tc->spare[c] == _ANR_NIL) || !_anr_trylock(h))
        return;
    if (cur_free) {
        tc->cur[c] = _ANR_NIL;
        release_slab(h, tc, pi);
    }
    release_spare(h, tc, c);
    _anr_unlock_and_purge(h, false);
}

/* Owner, on its slow paths (a refill, a full bin): every GC_EVERY of them,
 * the next class in turn is looked at. A class that served no malloc and
 * took no slow path since its last visit is quiet: the older half of its
 * bin goes home (all of it if one object is left) and its capacity halves;
 * once its bin is empty, its free current slab and its spare go too. Each
 * binned object pins its slab, and a bin only shrank when it kept filling
 * up, so a class that went quiet (a program that freed its data and moved
 * on) kept up to a bin of objects and their slabs for as long as the
 * thread lived. A class in use (even in malloc/free pairs that leave its
 * bin's count unchanged) stays whole. The visits ride on calls that take
 * the lock anyway; the fast malloc pays one byte store for the mark. */
#define GC_EVERY 4u
static void bin_gc_step(anr_heap *h, _anr_tcache *tc)
{
    if (++tc->gc_tick < GC_EVERY)
        return;
    tc->gc_tick = 0;
    unsigned c = tc->gc_next;
    tc->gc_next = (uint8_t)(c + 1u < h->tc_classes ? c + 1u : 0u);
    if (tc->gc_used[c]) {
        tc->gc_used[c] = 0;
        return;
    }
    unsigned n = tc->bin_n[c];
    if (n) {
        bin_shrink(h, tc, c); /* as for a bin that keeps filling up */
        bin_spill(h, tc, c, n / 2u);
    } else {
        release_quiet(h, tc, c);
    }
}

/* Lock held: empties a bin (of this thread, or in a forked child of a
 * thread that did not come along: at most bin_max + 1 links are followed,
 * in case that thread was caught mid-push). */
static void bin_drain_locked(anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    void *p = bin_sound(h, tc, cls) ? tc->bin[cls] : NULL;
    unsigned left = h->bin_max[cls] + 1u;
    tc->bin[cls] = NULL;
    bin_count(tc, cls, 0);
    while (p && left--) {
        void *next = bin_next(h, p);
        uint32_t pi = slab_of(h, p);
        _anr_page *e = &h->pages[pi];
        if (e->owner == tc->slot + 1) {
            /* Its slab is given back right after: clearing the bit is enough. */
            size_t idx = slot_of(h, pi, p);
            _anr_key_clear(p);
            /* Release: the key is gone before the slot reads as free (see
             * bin_fill). */
            __atomic_store_n(&e->bits[idx >> 6], e->bits[idx >> 6] & ~((uint64_t)1 << (idx & 63)),
                             __ATOMIC_RELEASE);
            e->nfree++;
        } else if (!e->owner || !remote_push(h, e, p)) {
            _anr_key_clear(p);
            _anr_free_locked(h, p, ANR_OP_FREE);
        }
        if (next == BIN_BAD) {
            bin_broken(h, p);
            break;
        }
        p = next;
    }
}

/* Owner: moves up to `want` free slots of `cur` into the empty bin, lowest
 * addresses on top. Each word's slots are marked taken in the bitmap before
 * any of them gets the free key: no instant may show a free slot carrying
 * the key, or a fork then (another thread's) leaves the child a free slot
 * that its next allocation hands out with the key in word 1, and the
 * object's first free reads as a double free. (The child loses the slots
 * taken but not yet binned: a leak in the child, nothing worse.) */
static void bin_fill(anr_heap *h, _anr_tcache *tc, unsigned cls, unsigned want)
{
    uint32_t head = tc->cur[cls];
    _anr_page *e = &h->pages[head];
    uint32_t size = h->cls[cls].size;
    uint8_t *base = slab_addr(h, head);
    void *list = tc->bin[cls];
    unsigned got = 0;
    for (unsigned w = _ANR_BITMAP_WORDS; w-- > 0 && got < want && got < e->nfree;) {
        uint64_t b = e->bits[w], freeb = ~b, take = 0;
        for (; freeb && got < want; got++) {
            uint64_t bit = (uint64_t)1 << (63u - (unsigned)__builtin_clzll(freeb));
            freeb &= ~bit;
            take |= bit;
        }
        if (!take)
            continue;
        __atomic_store_n(&e->bits[w], b | take, __ATOMIC_RELAXED);
        atomic_thread_fence(memory_order_release); /* the bits before the keys */
        while (take) {
            unsigned bit = 63u - (unsigned)__builtin_clzll(take);
            take &= ~((uint64_t)1 << bit);
            void *p = base + (size_t)(w * 64 + bit) * size;
            *(uintptr_t *)p = bin_link(h, p, list);
            _anr_key_set(h, p);
            list = p;
        }
    }
    e->nfree = (uint16_t)(e->nfree - got);
    tc_adjust(tc, -(long)got, size);
    tc->bin[cls] = list;
    bin_count(tc, cls, tc->bin_n[cls] + got);
}

/* Lock held: gives back every slab the cache owns. */
static void flush_locked(anr_heap *h, _anr_tcache *tc)
{
    for (unsigned c = 0; c < h->tc_classes; c++)
        bin_drain_locked(h, tc, c);
    _anr_run_bins_drain_locked(h, tc);
    for (unsigned c = 0; c < h->tc_classes; c++) {
        if (tc->cur[c] != _ANR_NIL) {
            uint32_t pi = tc->cur[c];
            tc->cur[c] = _ANR_NIL;
            release_slab(h, tc, pi);
        }
        release_list(h, tc, &tc->avail[c]);
        release_list(h, tc, &tc->full[c]);
        release_spare(h, tc, c);
    }
    atomic_store_explicit(&tc->cached_objs, 0, memory_order_relaxed);
    atomic_store_explicit(&tc->cached_bytes, 0, memory_order_relaxed);
}

/* Owner: the cache holds too many free bytes; its spare slabs go back. */
static void trim(anr_heap *h, _anr_tcache *tc)
{
    if (!_anr_trylock(h))
        return; /* called from free(), which never waits: a later free tries again */
    for (unsigned c = 0; c < h->tc_classes; c++) {
        release_list(h, tc, &tc->avail[c]);
        release_spare(h, tc, c);
    }
    _anr_unlock_and_purge(h, false);
}

/* Lock held. Flushes the cache and returns its slot to the free list. */
static void retire_locked(anr_heap *h, _anr_tcache *tc)
{
    flush_locked(h, tc);
    tc->active = false;
    tc->next_free = h->tc_free;
    h->tc_free = tc->slot;
    h->tc_active--;
}

static void thread_exit(void *v)
{
    _anr_tcache *tc = v;
    anr_heap *h = tc->heap;
    _anr_tls.state = TLS_DEAD;
    _anr_tls.tc = NULL;
    _anr_tls.heap = NULL;
    _anr_lock(h);
    retire_locked(h, tc);
    _anr_unlock_and_purge(h, true);
}

/* --- taking a cache --- */

static bool key_ready(anr_heap *h)
{
    int s = atomic_load_explicit(&h->tc_key_state, memory_order_acquire);
    if (s == 2)
        return true;
    int zero = 0;
    if (s != 0 || !atomic_compare_exchange_strong(&h->tc_key_state, &zero, 1))
        return false; /* another thread is creating it: go without a cache this time */
    if (pthread_key_create(&h->tc_key, thread_exit) != 0) {
        atomic_store(&h->tc_key_state, 3); /* never */
        return false;
    }
    atomic_store_explicit(&h->tc_key_state, 2, memory_order_release);
    return true;
}

/* Fast mallocs between two looks at whether the heap went quiet: one lock
 * round trip per this many (~0.1% of a fast malloc's time at full speed),
 * so that a program whose calls all hit its bins still sees its dirty
 * pages go back a decay time after it left them (at 10,000 mallocs a
 * second, within 0.1 s of the deadline). */
#define QUIET_EVERY 1024

/* Owner, lock not held: a program whose mallocs all hit this thread's bins
 * never takes the lock, and only a call that does looks at the clock: the
 * dirty pages it freed, and what the caches hold, would stay however long
 * it left them (DECAY_MS, heap.c _anr_unlock). Every QUIET_EVERY fast
 * mallocs, one lock round trip makes that look (the clock is read only
 * while dirty pages wait). Never waits: if the lock is busy, its holder's
 * unlock looks, and the purge round it may start takes the lock only if
 * it is free (may_block false: nor does it call a hook that waits, as
 * gmalloc's membroker quota does). A background purger looks on its own;
 * with DECAY_MS never there is nothing to look for. */
void _anr_tc_quiet_look(anr_heap *h, _anr_tcache *tc)
{
    tc->quiet_tick = QUIET_EVERY;
    if (!h->bg_purge && h->decay_ns && _anr_trylock(h))
        _anr_unlock_and_purge(h, false);
}

/* Lock held. A free slot, or NULL when all are in use. */
static _anr_tcache *slot_take(anr_heap *h)
{
    _anr_tcache *tc;
    if (h->tc_free != _ANR_NIL) {
        tc = &h->tcaches[h->tc_free];
        h->tc_free = tc->next_free;
    } else if (h->tc_unused < h->tc_slots) {
        tc = &h->tcaches[h->tc_unused];
        tc->slot = h->tc_unused++;
    } else {
        return NULL;
    }
    h->tc_active++;
    tc->heap = h;
    tc->active = true;
    tc->epoch = atomic_load(&h->flush_epoch);
    atomic_store_explicit(&tc->cached_bytes, 0, memory_order_relaxed);
    atomic_store_explicit(&tc->cached_objs, 0, memory_order_relaxed);
    for (unsigned c = 0; c < ANR_MAX_CLASSES; c++) {
        tc->cur[c] = tc->avail[c] = tc->full[c] = tc->spare[c] = _ANR_NIL;
        tc->bin[c] = NULL;
        tc->bin_n[c] = 0;
        tc->bin_cap[c] = c < h->tc_classes ? h->bin_start[c] : 0;
        tc->bin_spills[c] = 0;
        tc->gc_used[c] = 0;
    }
    tc->gc_next = tc->gc_tick = 0;
    tc->quiet_tick = QUIET_EVERY;
    tc->last_slow_ns = 0;
    _anr_run_bins_reset(h, tc);
    return tc;
}

static _anr_tcache *tc_create(anr_heap *h)
{
    if (_anr_tls.state != TLS_NONE || (_anr_tls.heap && _anr_tls.heap != h))
        return NULL; /* re-entered, exiting, or caching another heap */
    _anr_tls.state = TLS_BUSY;
    _anr_tcache *tc = NULL;
    if (key_ready(h)) {
        _anr_lock(h);
        tc = slot_take(h);
        _anr_unlock(h);
        /* May allocate (glibc, for high key numbers): we are TLS_BUSY, so
         * that re-entry takes the locked path. */
        if (tc && pthread_setspecific(h->tc_key, tc) != 0) {
            _anr_lock(h);
            retire_locked(h, tc);
            _anr_unlock(h);
            tc = NULL;
        }
    }
    /* Without a slot this thread runs uncached for good (slots are many). */
    _anr_tls.heap = h;
    _anr_tls.gen = h->gen;
    _anr_tls.tc = tc;
    _anr_tls.state = TLS_NONE;
    return tc;
}

static inline _anr_tcache *tc_get(anr_heap *h)
{
    if (__builtin_expect(_anr_tls.gen == h->gen, 1)) /* the heap too: see _anr_tc_mine */
        return _anr_tls.tc;
    return tc_create(h);
}

_anr_tcache *_anr_tc_get(anr_heap *h) { return tc_get(h); }

/* With a background purger, a slow path notes the time (see note_idle_flush). */
static inline void note_slow(const anr_heap *h, _anr_tcache *tc)
{
    if (h->bg_purge)
        tc->last_slow_ns = _anr_now_ns();
}

/* After a flush asked for because memory sat a decay time
 * (_anr_tc_decay_locked): if a background purger runs and this thread took
 * no slow path for that long (it went quiet), the purger's next tick hands
 * the freed pages back (malloc and free leave purging to it); a busy
 * thread's pages stay under the usual decay. Without a purger the call's
 * own decay rounds act. */
static void note_idle_flush(anr_heap *h, const _anr_tcache *tc)
{
    if (!h->bg_purge || tc->epoch != atomic_load_explicit(&h->idle_epoch, memory_order_relaxed) ||
        _anr_now_ns() - tc->last_slow_ns < _anr_half_decay_ns(h))
        return;
    atomic_store_explicit(&h->idle_flushed, true, memory_order_relaxed);
}

void _anr_tc_sync_try(anr_heap *h, _anr_tcache *tc)
{
    if (tc->epoch == atomic_load_explicit(&h->flush_epoch, memory_order_relaxed) ||
        !_anr_trylock(h))
        return;
    tc->epoch = atomic_load(&h->flush_epoch);
    flush_locked(h, tc);
    note_idle_flush(h, tc);
    _anr_unlock_and_purge(h, false);
}

void _anr_tc_sync(anr_heap *h, _anr_tcache *tc)
{
    if (tc->epoch != atomic_load_explicit(&h->flush_epoch, memory_order_relaxed)) {
        tc->epoch = atomic_load(&h->flush_epoch);
        _anr_lock(h);
        flush_locked(h, tc);
        note_idle_flush(h, tc);
        _anr_unlock_and_purge(h, true);
    }
}

/* Lock held: from anr_core_tick, and from a call that finds dirty pages
 * left alone for the decay time (without a background purger). At most
 * every half decay time (100 ms at least), while any cache holds free
 * memory, asks every cache to flush on its next malloc: a thread that went
 * quiet gives its free slabs back on its first malloc after that (no other
 * thread may touch them before: the owner uses them without the lock). A
 * busy thread pays one flush and refill per half decay time. Without a
 * background purger the request rides on calls that take the lock, so a
 * process whose every call is served from its caches makes none. */
void _anr_tc_decay_locked(anr_heap *h, uint64_t now)
{
    if (!h->tc_on || !h->tc_active || !h->decay_ns || now - h->tc_decay_since < _anr_half_decay_ns(h))
        return;
    h->tc_decay_since = now; /* also when the caches are empty: one scan per period */
    size_t objs, bytes;
    _anr_tc_cached(h, &objs, &bytes);
    if (!objs)
        return;
    uint32_t e = atomic_fetch_add(&h->flush_epoch, 1) + 1;
    atomic_store_explicit(&h->idle_epoch, e, memory_order_relaxed);
}

/* Lock held. Takes a new slab of `cls` from the heap for the cache, or
 * _ANR_NIL at the limit. */
static uint32_t take_owned(anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    const _anr_class *c = &h->cls[cls];
    _anr_run_result res;
    uint32_t head = _anr_slab_take(h, cls, &res);
    if (head == _ANR_NIL)
        return _ANR_NIL;
    _anr_page *e = &h->pages[head];
    __atomic_store_n(&e->owner, tc->slot + 1, __ATOMIC_RELAXED);
    atomic_store_explicit(&e->remote, REMOTE_OWNED, memory_order_release);
    h->bytes_in_use += (size_t)e->nfree * c->size;
    h->objects_in_use += e->nfree;
    tc_adjust(tc, (long)e->nfree, c->size);
    _anr_note_peak(h);
    return head;
}

/* Lock held. Takes a new slab of `cls` as the cache's `cur`; false at the
 * limit. A class with fewer objects per slab than the thread is likely to
 * want (`want`: this object and a bin's fill; from 4 KiB up a slab holds
 * one object), whose thread has used up slabs of it before (two or more
 * are full), also gets more onto `avail` (up to REFILL_SLABS and
 * REFILL_BYTES): the next mallocs take them from there without the lock,
 * instead of one lock round trip each. They count as cached: a trim or a
 * flush gives them back. Not in a heap with a limit: until an idle owner's
 * next call they would count against it for other threads. */
#define REFILL_SLABS 8u
#define REFILL_BYTES ((size_t)64 << 10)
static bool refill_locked(anr_heap *h, _anr_tcache *tc, unsigned cls, unsigned want)
{
    uint32_t head = take_owned(h, tc, cls);
    if (head == _ANR_NIL)
        return false;
    h->pages[head].where = _ANR_TC_CUR;
    tc->cur[cls] = head;
    const _anr_class *c = &h->cls[cls];
    size_t most = REFILL_BYTES / ((size_t)c->pages << h->page_shift);
    uint32_t full = tc->full[cls];
    if (h->limit_pages || full == _ANR_NIL || h->pages[full].next == full)
        most = 0;
    else if (most > REFILL_SLABS)
        most = REFILL_SLABS;
    for (unsigned got = c->nobj, extra = 0; got < want && extra < most; got += c->nobj, extra++) {
        uint32_t more = take_owned(h, tc, cls);
        if (more == _ANR_NIL)
            break;
        ring_push(h, &tc->avail[cls], more, _ANR_TC_AVAIL);
    }
    return true;
}

/* Owner: looks for remote frees on up to SCAN full slabs of `cls` (rotated,
 * so all get looked at), if another thread has pushed any since the last
 * look: a slab that has some moves to the avail list. */
#define SCAN 16u
static void scan_full(anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    if (tc->full[cls] == _ANR_NIL ||
        !atomic_exchange_explicit(&tc->remote_hint[cls], 0, memory_order_seq_cst))
        return;
    uint32_t start = tc->full[cls];
    bool all = false; /* every full slab looked at, none had frees */
    for (unsigned i = 0; i < SCAN && tc->avail[cls] == _ANR_NIL && tc->full[cls] != _ANR_NIL;
         i++) {
        uint32_t f = tc->full[cls];
        if (collect(h, tc, f)) {
            ring_remove(h, &tc->full[cls], f);
            ring_push(h, &tc->avail[cls], f, _ANR_TC_AVAIL);
        } else {
            tc->full[cls] = h->pages[f].next; /* rotate */
            if (tc->full[cls] == start) {
                all = true;
                break;
            }
        }
    }
    if (!all && tc->full[cls] != _ANR_NIL) /* more may wait: look again next time */
        atomic_store_explicit(&tc->remote_hint[cls], 1, memory_order_relaxed);
}

/* Owner: `cur` of `cls` is full (or missing). Files it as full, then finds
 * an owned slab with free slots: the avail list, else remote frees on the
 * full ones (scan_full), else the spare. */
static bool next_slab(anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    uint32_t pi = tc->cur[cls];
    if (pi != _ANR_NIL) {
        if (collect(h, tc, pi))
            return true;
        tc->cur[cls] = _ANR_NIL;
        ring_push(h, &tc->full[cls], pi, _ANR_TC_FULL);
    }
    if (tc->avail[cls] == _ANR_NIL)
        scan_full(h, tc, cls);
    pi = tc->avail[cls];
    if (pi != _ANR_NIL) {
        ring_remove(h, &tc->avail[cls], pi);
    } else if ((pi = tc->spare[cls]) != _ANR_NIL) {
        tc->spare[cls] = _ANR_NIL;
    } else {
        return false;
    }
    h->pages[pi].where = _ANR_TC_CUR;
    tc->cur[cls] = pi;
    return true;
}

/* --- the fast paths --- */

static inline void *take_slot(anr_heap *h, _anr_tcache *tc, uint32_t head, unsigned cls)
{
    _anr_page *e = &h->pages[head];
    unsigned w = 0;
    uint64_t b;
    while ((b = e->bits[w]) == ~(uint64_t)0)
        w++;
    unsigned bit = (unsigned)__builtin_ctzll(~b);
    __atomic_store_n(&e->bits[w], b | ((uint64_t)1 << bit), __ATOMIC_RELAXED);
    e->nfree--;
    uint32_t size = h->cls[cls].size;
    tc_adjust(tc, -1, size);
    return slab_addr(h, head) + (size_t)(w * 64 + bit) * size;
}

static void *alloc_slow(anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    _anr_tc_sync(h, tc);
    note_slow(h, tc);
    if (tc->bin[cls]) { /* the fast path found a broken link: report, drop the rest */
        void *p = bin_pop(h, tc, cls);
        if (p)
            return p;
    }
    tc->gc_used[cls] = 1;
    bin_gc_step(h, tc);
    uint32_t head = tc->cur[cls];
    if (head == _ANR_NIL || h->pages[head].nfree == 0) {
        if (!next_slab(h, tc, cls)) {
            _anr_lock(h);
            /* The object, and the bin's fill (it is empty: below). */
            bool ok = refill_locked(h, tc, cls, 1u + tc->bin_cap[cls]);
            _anr_unlock_and_purge(h, true);
            if (!ok)
                return NULL;
        }
    }
    void *p = take_slot(h, tc, tc->cur[cls], cls);
    if (!tc->bin[cls]) {
        /* Ran dry: this class is being allocated; let its bin grow. */
        tc->bin_cap[cls] = bin_grown(h, tc, cls);
        tc->bin_spills[cls] = 0;
        bin_fill(h, tc, cls, tc->bin_cap[cls] / 2u);
    }
    return p;
}

void *_anr_tc_alloc(anr_heap *h, unsigned cls)
{
    _anr_tcache *tc = tc_get(h);
    if (!tc)
        return NULL;
    if (__builtin_expect(tc->bin[cls] != NULL &&
                             tc->epoch == atomic_load_explicit(&h->flush_epoch,
                                                               memory_order_relaxed),
                         1)) {
        void *p = bin_pop(h, tc, cls);
        if (p)
            return p;
    }
    return alloc_slow(h, tc, cls);
}

/* Owner: a free found the bin full; its older half goes home first. */
static void bin_full(anr_heap *h, _anr_tcache *tc, unsigned cls)
{
    note_slow(h, tc);
    tc->gc_used[cls] = 1;
    /* Full again and again without running dry between: more frees than
     * mallocs here (a consumer, or a program freeing everything): shrink. */
    if (++tc->bin_spills[cls] >= BIN_SHRINK_AFTER) {
        tc->bin_spills[cls] = 0;
        bin_shrink(h, tc, cls);
    }
    bin_spill(h, tc, cls, tc->bin_cap[cls] > 1u ? tc->bin_cap[cls] / 2u : 1u);
    bin_gc_step(h, tc);
    if (__builtin_expect(atomic_load_explicit(&tc->cached_bytes, memory_order_relaxed) >
                             h->tc_max_bytes,
                         0))
        trim(h, tc);
}

/* Frees `p` if it is a small object of a cached class: into this thread's
 * bin, or, for a thread without a cache, onto the owner's remote list.
 * Returns true if done (*err says how it went), false if the locked path
 * must handle it (shared slab without a cache, large object, or a pointer
 * that does not look like an object: the locked path reports it). */
bool _anr_tc_free(anr_heap *h, void *p, anr_error *err)
{
    *err = ANR_ERR_NONE;
    unsigned cls;
    size_t idx;
    _anr_page *e = _anr_tc_slot(h, p, &cls, &idx);
    if (!e)
        return false;
    if (!_anr_slot_live(h, e, idx, p)) {
        _anr_report(h, ANR_ERR_DOUBLE_FREE, ANR_OP_FREE, p);
        *err = ANR_ERR_DOUBLE_FREE;
        return true;
    }
    _anr_tcache *tc = _anr_tc_mine(h);
    if (__builtin_expect(tc != NULL, 1)) {
        if (__builtin_expect(tc->bin_n[cls] >= tc->bin_cap[cls], 0))
            bin_full(h, tc, cls);
        bin_push(h, tc, cls, p);
        return true;
    }
    /* A thread without a cache: an owned slab takes it on its remote list. */
    if (!__atomic_load_n(&e->owner, __ATOMIC_RELAXED))
        return false;
    _anr_key_set(h, p);
    if (remote_push(h, e, p))
        return true;
    _anr_key_clear(p);
    return false; /* just became shared: the locked path frees it */
}

/* Lock held: a free of an object in an owned slab found by the locked path
 * (a deferred free, or a race with a slab being taken). */
void _anr_tc_push_locked(anr_heap *h, uint32_t head, void *p)
{
    _anr_key_set(h, p);
    /* Cannot fail: a slab's owner and its REMOTE_OWNED tag are set and
     * cleared together under the lock, which is held here. */
    (void)remote_push(h, &h->pages[head], p);
}

/* The heap is being destroyed: this thread may cache the next one. (Other
 * threads that cached it keep stale TLS and go uncached for other heaps;
 * a thread caches one heap at a time.) */
void _anr_tc_forget(anr_heap *h)
{
    if (_anr_tls.heap == h && _anr_tls.state != TLS_BUSY) {
        _anr_tls.heap = NULL;
        _anr_tls.tc = NULL;
        _anr_tls.gen = 0;
        _anr_tls.state = TLS_NONE;
    }
}

/* --- flushing on demand --- */

void anr_core_flush_thread_cache(anr_heap *h)
{
    _anr_tcache *tc = h->tc_on ? _anr_tc_mine(h) : NULL;
    if (!tc)
        return;
    _anr_lock(h);
    flush_locked(h, tc);
    _anr_unlock(h);
}

void _anr_tc_flush_all(anr_heap *h)
{
    if (!h->tc_on)
        return;
    atomic_fetch_add(&h->flush_epoch, 1);
    anr_core_flush_thread_cache(h);
}

/* Lock held. Free slots held by caches: objects and bytes. */
void _anr_tc_cached(const anr_heap *h, size_t *objs, size_t *bytes)
{
    *objs = *bytes = 0;
    for (uint32_t i = 0; h->tc_on && i < h->tc_unused; i++) { /* past tc_unused: never used */
        const _anr_tcache *tc = &h->tcaches[i];
        if (!tc->active)
            continue;
        *objs += atomic_load_explicit(&tc->cached_objs, memory_order_relaxed);
        *bytes += atomic_load_explicit(&tc->cached_bytes, memory_order_relaxed);
        for (unsigned c = 0; c < h->tc_classes; c++) {
            size_t n = __atomic_load_n(&tc->bin_n[c], __ATOMIC_RELAXED);
            *objs += n;
            *bytes += n * h->cls[c].size;
        }
        _anr_run_bins_cached(h, tc, objs, bytes);
    }
}

/* Forked child, lock held: only this thread came along; the other threads'
 * caches are given back. Their rings may have been caught mid-update, so
 * their slabs are found by scanning the page map for the owner, not by
 * following the rings (O(heap), once per fork). */
void _anr_tc_fork_child(anr_heap *h)
{
    if (!h->tc_on)
        return;
    const _anr_tcache *own = _anr_tc_mine(h);
    uint32_t mine = own ? own->slot + 1 : 0;
    /* Their bins first: the objects go home while the slabs are still owned. */
    for (uint32_t i = 0; i < h->tc_unused; i++)
        if (i + 1 != mine && h->tcaches[i].active)
            for (unsigned c = 0; c < h->tc_classes; c++)
                bin_drain_locked(h, &h->tcaches[i], c);
    for (uint32_t i = 0; i < h->tc_unused; i++)
        if (i + 1 != mine && h->tcaches[i].active)
            _anr_run_bins_drain_locked(h, &h->tcaches[i]);
    for (uint32_t pi = 0; pi < h->top;) {
        _anr_page *e = &h->pages[pi];
        /* Releasing a slab may merge it with its neighbours, leaving tails
         * and cleared entries behind: step over those one page at a time. */
        uint8_t kind = e->kind;
        uint32_t len = (kind == _ANR_PK_NONE || (kind & _ANR_TAIL) || kind == _ANR_PK_SLAB_INNER ||
                        e->len == 0)
                           ? 1
                           : e->len;
        if (kind == _ANR_PK_SLAB && e->owner && e->owner != mine)
            release_slab(h, &h->tcaches[e->owner - 1], pi);
        pi += len;
    }
    h->tc_free = _ANR_NIL;
    h->tc_active = 0;
    for (uint32_t i = h->tc_unused; i-- > 0;) {
        _anr_tcache *tc = &h->tcaches[i];
        if (i + 1 == mine) {
            h->tc_active++;
            continue;
        }
        tc->active = false;
        tc->next_free = h->tc_free;
        h->tc_free = i;
    }
}

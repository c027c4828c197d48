/* The allocation fast paths, inline: a malloc served from this thread's bin
 * and a free into it. Included by heap.c (anr_core_alloc/anr_core_free try
 * them first) and by gmalloc's entry points, so that the common case is a
 * few dozen instructions with no call inside the library. Anything unusual
 * (no cache yet, an empty or full bin, a flush request, a pointer that does
 * not check out) returns NULL/false and the caller takes the full path,
 * which handles and reports it.
 *
 * Budget (x86-64, gcc -O2, counted up to the return, not including it, in
 * the disassembly of gmalloc's malloc and free): malloc 51 instructions
 * (one heap test, TLS generation and cache, class lookup, flush epoch,
 * the quiet tick, bin pop with a link check (range, alignment, the free
 * key of the object popped), the count, the quiet-class mark, the free
 * key cleared); free 82, a sixth of them branches to the
 * full path (the heap, TLS, the page's slab_at entry: class and slab
 * head; slot check by one multiply while the head's page-map entry is
 * prefetched; that entry's kind and class, bitmap bit and free key, bin
 * bound, push). The build does not assume strict aliasing, so every load
 * is made before the first store into the object (a load after it would
 * be made again). The page-run pop and push (_anr_fast_run_alloc/free,
 * for blocks past the largest class up to 64 KiB) run out of line in
 * gmalloc (malloc_run, free_run), reached from malloc's size test and from
 * free's zero slab_at entry with the heap and the cache already found:
 * malloc 7 instructions to the jump, malloc_run 71 (size range, TLS, bin
 * pop with a link check, counts; an empty bin borrows from the one a page
 * longer); free about 35 to the jump, free_run 66
 * (page-map entry, length range, bin bounds, free key, a second look at
 * the entry, push).
 */
#ifndef ANR_CORE_FAST_H
#define ANR_CORE_FAST_H

#include <stdalign.h>

#include "internal.h"

/* A thread's view of its cache (tcache.c defines it). */
typedef struct _anr_tls_state {
    anr_heap *heap;
    _anr_tcache *tc;
    uint64_t gen;
    unsigned state; /* TLS_NONE, TLS_BUSY (creating: re-entry goes uncached), TLS_DEAD */
} _anr_tls_state;
enum { TLS_NONE = 0, TLS_BUSY, TLS_DEAD };

extern __thread _anr_tls_state _anr_tls __attribute__((tls_model("initial-exec")));

#define _ANR_ALIGN (alignof(max_align_t))
#define BIN_BAD ((void *)1)

/* This thread's cache of `h`, or NULL (none yet, none possible, or stale
 * TLS from a destroyed heap at the same address). A heap's generation is
 * unique in the process (a counter bumped by every init, never 0) and set
 * in TLS together with the heap, so it alone tells the heap: no second
 * compare on the fast paths. */
static inline _anr_tcache *_anr_tc_mine(const anr_heap *h)
{
    return _anr_tls.gen == h->gen ? _anr_tls.tc : NULL;
}

/* The link stored in `at`, a binned object, to `next`: encoded with the
 * heap's key and with `at` itself, so that a stray pointer does not decode
 * to an address in the data, and a link copied from another freed object
 * (a use after free that copies a block's first word) does not decode to
 * that object's successor, which may be of another class and carries the
 * key. Copied from `from`, it decodes to next ^ from ^ at: mostly not an
 * object that carries the key, so the pop refuses it; by chance, for
 * holders in one page, a free slot of this class, which is harmless. Not
 * a guarantee. */
static inline uintptr_t bin_link(const anr_heap *h, const void *at, const void *next)
{
    return (uintptr_t)next ^ (uintptr_t)h->free_key ^ (uintptr_t)at;
}

/* Decodes the link in `p`, a binned object, into *next (NULL at the end).
 * False if the link was overwritten so that it does not decode to an
 * aligned address in the data. (One test, no sentinel to compare on the
 * fast paths.)
 *
 * That check alone is not enough: on 32 bits a scribbled link decodes to
 * a random 32-bit value and passed it about once in 256, and a link
 * encoded as links are passes it always. So an object is taken from a bin
 * only if it carries the free key (every binned object and run does, and
 * a live one does not): the fast pops check the object they pop, whose
 * word 1 is on the line they read the link from, and the slow paths
 * check a bin's top before using it (bin_top_ok) and each object they
 * follow a link to (bin_next). Checking the object after the one popped
 * instead cost the fast pop a cache line of its own: +0.8 D1 misses a
 * step on random 1-64 KiB under cachegrind. */
static inline uintptr_t bin_link_decode(const anr_heap *h, const void *p)
{
    /* The key and `p` first, beside the load: one xor after it, not two,
     * on the chain from one pop to the next. */
    uintptr_t salt = (uintptr_t)h->free_key ^ (uintptr_t)p;
    return *(const uintptr_t *)p ^ salt;
}

/* A decoded link is the end (0) or the start of a `unit`-aligned block of
 * at least `unit` bytes in the data (unit: a power of two). */
static inline bool bin_link_lands(const anr_heap *h, uintptr_t v, size_t unit)
{
    return !v || (v - (uintptr_t)h->data <= h->data_size - unit && !(v & (unit - 1)));
}

static inline bool bin_link_next(const anr_heap *h, const void *p, void **next)
{
    uintptr_t v = bin_link_decode(h, p);
    *next = (void *)v;
    return bin_link_lands(h, v, _ANR_ALIGN);
}

/* A bin's top (not NULL) can be used: it carries the free key. */
static inline bool bin_top_ok(const anr_heap *h, const void *top)
{
    return _anr_key_is_set(h, top);
}

/* Slow paths: the object after `p` in a bin, NULL at the end, BIN_BAD if
 * the link was overwritten (it decodes to no aligned address in the data,
 * or the object there lacks the free key). */
static inline void *bin_next(const anr_heap *h, const void *p)
{
    void *next;
    return bin_link_next(h, p, &next) && (!next || bin_top_ok(h, next)) ? next : BIN_BAD;
}

static inline void bin_count(_anr_tcache *tc, unsigned cls, unsigned n)
{
    __atomic_store_n(&tc->bin_n[cls], (uint16_t)n, __ATOMIC_RELAXED);
}

/* Every load before the first store into `p`: the build does not assume
 * strict aliasing, so a load after it would be made again. */
static inline void bin_push(const anr_heap *h, _anr_tcache *tc, unsigned cls, void *p)
{
    uintptr_t link = bin_link(h, p, tc->bin[cls]);
    unsigned n = tc->bin_n[cls];
    _anr_key_set(h, p);
    *(uintptr_t *)p = link;
    tc->bin[cls] = p;
    bin_count(tc, cls, n + 1u);
}

/* Run bins (runbins.c): the run after `p`, NULL at the end, BIN_BAD if the
 * link was overwritten (it does not decode to a page start in the data).
 * The data starts on a page, so a mask tests the page start (a divide by
 * the page size cost a fifth of a pop). */
static inline bool _anr_run_link_next(const anr_heap *h, const void *p, void **next)
{
    uintptr_t v = bin_link_decode(h, p);
    *next = (void *)v;
    return bin_link_lands(h, v, h->page_size);
}

static inline void *_anr_run_next(const anr_heap *h, const void *p)
{
    void *next;
    return _anr_run_link_next(h, p, &next) && (!next || bin_top_ok(h, next)) ? next : BIN_BAD;
}

/* Owner: bin n gained a run (`in`) or lost one. (Statistics read the
 * counts from other threads, hence the atomic stores.) */
static inline void _anr_run_moved(const anr_heap *h, _anr_tcache *tc, uint32_t n, bool in)
{
    size_t run = (size_t)n << h->page_shift;
    size_t bytes = atomic_load_explicit(&tc->run_bytes, memory_order_relaxed);
    unsigned count = tc->run_n[n];
    __atomic_store_n(&tc->run_n[n], (uint16_t)(in ? count + 1u : count - 1u), __ATOMIC_RELAXED);
    atomic_store_explicit(&tc->run_bytes, in ? bytes + run : bytes - run, memory_order_relaxed);
}

/* Owner: puts the free run `p` of n pages on its bin, marked free. */
static inline void _anr_run_push(const anr_heap *h, _anr_tcache *tc, uint32_t n, void *p)
{
    /* Every load before the first store into `p`, as in bin_push (so the
     * key is stored here, not by _anr_key_set, which would load it after
     * the counts' stores). */
    uintptr_t link = bin_link(h, p, tc->run_bin[n]);
    uint64_t key = h->free_key;
    _anr_run_moved(h, tc, n, true);
    *(uintptr_t *)p = link;
    ((uint64_t *)p)[1] = key;
    tc->run_bin[n] = p;
}

/* Owner: a malloc found bin n empty. A bin that served mallocs since it
 * last ran dry, or that a phase of frees shrank to nothing, doubles its
 * capacity (up to its bound): runs of this length are freed and allocated
 * again here. One that never served one (a phase that only allocates)
 * stays small. */
static inline void _anr_run_missed(const anr_heap *h, _anr_tcache *tc, uint32_t n)
{
    if (tc->run_hit[n] || !tc->run_cap[n]) {
        unsigned cap = tc->run_cap[n] ? tc->run_cap[n] * 2u : 1u;
        tc->run_cap[n] = (uint16_t)(cap < h->run_bin_max[n] ? cap : h->run_bin_max[n]);
        tc->run_hit[n] = 0;
    }
    tc->run_spills[n] = 0;
}

/* malloc(size) of a page run (past the largest class) from this thread's
 * run bin of its length, or from the bin one page longer if that one is
 * empty (at most a fifth more, as a size class would round up: with
 * random lengths each bin empties often on its own, and a miss costs a
 * lock round trip); NULL for both empty, a flush request, a bad link, a
 * length the bins do not keep. runbins.c's _anr_run_bin_alloc handles
 * those. Tried after _anr_fast_alloc, out of line in gmalloc (malloc_run),
 * so that the small-object path keeps its registers. */
static inline __attribute__((always_inline)) void *_anr_fast_run_alloc(const anr_heap *h,
                                                                      size_t size)
{
    /* Not a size a slab class serves (the caller tries this whenever a
     * small-object bin is empty), nor any size with run bins off. */
    if (size < h->run_min_size)
        return NULL;
    size_t n = (size + h->page_size - 1) >> h->page_shift;
    if (n - h->run_min > (size_t)(h->run_max - h->run_min)) /* also a size that wrapped */
        return NULL;
    _anr_tcache *tc = _anr_tc_mine(h);
    if (__builtin_expect(!tc, 0))
        return NULL;
    void *p = tc->run_bin[n];
    size_t from = n;
    if (!p && (n == h->run_max || !(p = tc->run_bin[from = n + 1])))
        return NULL;
    if (tc->epoch != atomic_load_explicit(&((anr_heap *)h)->flush_epoch, memory_order_relaxed) ||
        --tc->quiet_tick < 0)
        return NULL;
    void *next;
    if (__builtin_expect(!bin_top_ok(h, p) || !_anr_run_link_next(h, p, &next), 0))
        return NULL; /* the full path reports it */
    if (from == n)
        tc->run_hit[n] = 1;
    else
        _anr_run_missed(h, tc, (uint32_t)n);
    tc->run_bin[from] = next;
    _anr_run_moved(h, tc, (uint32_t)from, false);
    _anr_key_clear(p);
    return p;
}

/* If `p` is the start of a page run (a large object, or one waiting in a
 * run bin) of a length the run bins keep: its head entry, with *n its
 * pages. NULL otherwise. Lock-free: a run's head entry changes only when
 * the run itself is freed or resized. */
static inline const _anr_page *_anr_run_head(const anr_heap *h, const void *p, uint32_t *n)
{
    size_t off = (size_t)((uintptr_t)p - (uintptr_t)h->data);
    if (off >= h->data_size || (off & (h->page_size - 1)))
        return NULL;
    const _anr_page *e = &h->pages[off >> h->page_shift];
    if (__atomic_load_n(&e->kind, __ATOMIC_RELAXED) != _ANR_PK_LARGE)
        return NULL;
    *n = __atomic_load_n(&e->len, __ATOMIC_RELAXED);
    if (*n - h->run_min > h->run_max - h->run_min)
        return NULL;
    if (!e) /* never: lets the compiler drop the callers' NULL test */
        __builtin_unreachable();
    return e;
}

/* Two threads freeing the same run at once (a double free racing itself):
 * the other one's locked free may have merged it into a free run since its
 * entry was read. Looking again before binning it narrows that window; it
 * cannot close it (only the lock could). Two unlocked frees racing each
 * other can both pass (neither push changes the entry) and bin it twice.
 * In a review's loop (two threads free one run at once, then each
 * allocates one) both got it in 19 997 of 20 000 rounds; with 64-byte
 * blocks, 19 995 here and all 20 000 under glibc and tcmalloc. An atomic
 * exchange for the small-object free's key store changed nothing there
 * (64-byte blocks, 19 995 rounds both ways): mostly the second free comes
 * after the first thread has handed the block out again, when it is live
 * and no check can tell that free from a legitimate one. */
static inline bool _anr_run_still(const _anr_page *e, uint32_t n)
{
    return __atomic_load_n(&e->kind, __ATOMIC_RELAXED) == _ANR_PK_LARGE &&
           __atomic_load_n(&e->len, __ATOMIC_RELAXED) == n;
}

/* free(p) of a live page run into `tc`, this thread's cache of h (its run
 * bin): true if done. False for anything else (a full bin, the byte
 * bound, a flush request, a pointer that is not a live run's start):
 * runbins.c's _anr_run_bin_free and the locked path handle and report
 * those. */
static inline __attribute__((always_inline)) bool _anr_fast_run_free_tc(const anr_heap *h,
                                                                        _anr_tcache *tc, void *p)
{
    uint32_t n = 0;
    const _anr_page *e = _anr_run_head(h, p, &n);
    if (!e || tc->run_n[n] >= tc->run_cap[n] ||
        tc->epoch != atomic_load_explicit(&((anr_heap *)h)->flush_epoch, memory_order_relaxed))
        return false;
    size_t bytes = (size_t)n << h->page_shift;
    if (atomic_load_explicit(&tc->run_bytes, memory_order_relaxed) + bytes > h->tc_run_bytes ||
        _anr_key_is_set(h, p) || !_anr_run_still(e, n))
        return false;
    _anr_run_push(h, tc, n, p);
    return true;
}

/* The same into this thread's cache of h, if it has one. */
static inline bool _anr_fast_run_free(const anr_heap *h, void *p)
{
    _anr_tcache *tc = _anr_tc_mine(h);
    return tc && _anr_fast_run_free_tc(h, tc, p);
}

/* malloc(size) from this thread's bin, or NULL. */
static inline void *_anr_fast_alloc(const anr_heap *h, size_t size)
{
    if (size > h->tc_fast_max) /* 0 with caches off */
        return NULL;
    unsigned cls = h->class_of[(size + 15) >> 4];
    _anr_tcache *tc = _anr_tc_mine(h);
    if (__builtin_expect(!tc, 0))
        return NULL;
    void *p = tc->bin[cls];
    if (__builtin_expect(!p || tc->epoch != atomic_load_explicit(&((anr_heap *)h)->flush_epoch,
                                                                  memory_order_relaxed) ||
                             --tc->quiet_tick < 0,
                         0))
        return NULL;
    void *next;
    if (__builtin_expect(!bin_top_ok(h, p) || !bin_link_next(h, p, &next), 0))
        return NULL; /* the full path reports it */
    unsigned n = tc->bin_n[cls];
    tc->bin[cls] = next;
    bin_count(tc, cls, n - 1u);
    tc->gc_used[cls] = 1; /* the bin serves mallocs: not a quiet class (tcache.c) */
    _anr_key_clear(p);
    return p;
}

/* A page-map entry's kind and class in one load (they are its first two
 * bytes), and the value they have for a given kind and class. */
static inline unsigned _anr_kind_cls(const _anr_page *e)
{
    return __atomic_load_n((const uint16_t *)(const void *)&e->kind, __ATOMIC_RELAXED);
}

static inline unsigned _anr_kind_cls_of(unsigned kind, unsigned cls)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return cls << 8 | kind;
#else
    return kind << 8 | cls;
#endif
}

/* If the address at `off` in the data (below data_size; `at` is its page's
 * slab_at entry) is the start of a slot in a slab of a class below
 * `nclasses`: its slab's head entry, with *cls and *idx set. NULL
 * otherwise (not a slab, a class from nclasses up, not at a slot's start).
 * Lock-free: the kinds, classes and offsets of a live object's pages do not
 * change under it. The class comes from the page's slab_at entry, before
 * the head entry is fetched; the head entry must then say the same (a
 * slab of that class), or a bad free racing with that slab's release and
 * a new slab of another class at the same pages could test a slot of one
 * class against the other's bitmap (its padding bits read as used). */
static inline _anr_page *_anr_slab_slot_at(const anr_heap *h, size_t off, unsigned at,
                                           unsigned *cls, size_t *idx, unsigned nclasses)
{
    uint32_t pi = (uint32_t)(off >> h->page_shift);
    unsigned back = _anr_slab_at_back(at), c = _anr_slab_at_cls(at);
    if (!back || back - 1u > pi || c >= nclasses)
        return NULL;
    pi -= back - 1u;
    _anr_page *e = &h->pages[pi];
    /* The entry (for the bitmap bit) is the likely cache miss: start it
     * while the multiply finds the slot. */
    __builtin_prefetch(e);
    size_t i;
    if (!_anr_slot_exact(&h->cls[c], off - ((size_t)pi << h->page_shift), &i))
        return NULL;
    if (_anr_kind_cls(e) != _anr_kind_cls_of(_ANR_PK_SLAB, c))
        return NULL;
    if (!e) /* never: lets the compiler drop the callers' NULL test here */
        __builtin_unreachable();
    *cls = c;
    *idx = i;
    return e;
}

/* The slab_at entry of the page at `off` (below data_size). */
static inline unsigned _anr_slab_at_of(const anr_heap *h, size_t off)
{
    return atomic_load_explicit(&h->slab_at[off >> h->page_shift], memory_order_relaxed);
}

/* The same for a pointer `p` (NULL also if it is not in the data). */
static inline _anr_page *_anr_slab_slot(const anr_heap *h, const void *p, unsigned *cls,
                                        size_t *idx, unsigned nclasses)
{
    size_t off = (size_t)((uintptr_t)p - (uintptr_t)h->data);
    if (off >= h->data_size)
        return NULL;
    return _anr_slab_slot_at(h, off, _anr_slab_at_of(h, off), cls, idx, nclasses);
}

/* The same for a class the thread caches serve. */
static inline _anr_page *_anr_tc_slot(const anr_heap *h, const void *p, unsigned *cls,
                                      size_t *idx)
{
    return _anr_slab_slot(h, p, cls, idx, h->tc_classes);
}

/* A slot of a live object: its bit is set (until it is freed, whoever owns
 * the slab) and it does not carry the free key (a binned or queued object
 * does). */
static inline bool _anr_slot_bit(const _anr_page *e, size_t idx)
{
    return __atomic_load_n(&e->bits[idx >> 6], __ATOMIC_RELAXED) & ((uint64_t)1 << (idx & 63));
}

static inline bool _anr_slot_live(const anr_heap *h, const _anr_page *e, size_t idx,
                                  const void *p)
{
    return _anr_slot_bit(e, idx) && !_anr_key_is_set(h, p);
}

/* What _anr_fast_free_tc did with a pointer. */
enum { FF_FULL = 0, FF_DONE, FF_NOT_SLAB };

/* free(p) into `tc`, this thread's cache of h: FF_DONE if done.
 * FF_NOT_SLAB if p lies in the data on a page no slab holds: a page run's
 * start, perhaps, for _anr_fast_run_free_tc (telling it apart costs the
 * slab path nothing: a zero slab_at entry fails it anyway). FF_FULL for
 * anything else, including every bad pointer (the full path checks and
 * reports). */
static inline int _anr_fast_free_tc(const anr_heap *h, _anr_tcache *tc, void *p)
{
    size_t off = (size_t)((uintptr_t)p - (uintptr_t)h->data);
    if (off >= h->data_size)
        return FF_FULL;
    unsigned at = _anr_slab_at_of(h, off);
    unsigned cls;
    size_t idx;
    const _anr_page *e = _anr_slab_slot_at(h, off, at, &cls, &idx, h->tc_classes);
    if (!e)
        return _anr_slab_at_back(at) ? FF_FULL : FF_NOT_SLAB;
    if (!_anr_slot_live(h, e, idx, p))
        return FF_FULL;
    if (__builtin_expect(tc->bin_n[cls] >= tc->bin_cap[cls], 0))
        return FF_FULL;
    bin_push(h, tc, cls, p);
    return FF_DONE;
}

#endif

/* anr_core internals: the heap struct, the page map and their invariants.
 *
 * Mapping layout (one mmap, never changed after init):
 *
 *   [ struct anr_heap | thread caches | page map: one struct _anr_page per
 *     data page | slab_at: two bytes per data page | data pages ]
 *
 * Page-map invariants (anr_core_verify() checks them all):
 *  - Every data page below `top` belongs to exactly one run: a free run
 *    (dirty or clean), a run being purged, a large object or a slab.
 *  - A run's first page entry (the head) holds its kind and length; for runs
 *    longer than one page the last entry (the tail) holds the same with
 *    _ANR_TAIL set: these are the boundary tags that make coalescing O(1).
 *  - Every slab page has an entry (head: class and bitmap; others: offset to
 *    the head), so any pointer into a slab finds its slab in O(1).
 *  - Every other entry (interior pages of free runs and large objects, and all
 *    pages at or above `top`) is zero (_ANR_PK_NONE), so a pointer into the
 *    middle of a large object is recognised as not an object.
 *  - Two adjacent free runs never have the same state (they would have been
 *    merged), and no clean free run touches `top` (it would have been absorbed).
 *  - Clean free runs and pages at or above `top` read as zero.
 */
#ifndef ANR_CORE_INTERNAL_H
#define ANR_CORE_INTERNAL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anr_core.h"

#define _ANR_NIL UINT32_MAX

/* Page kinds. */
enum {
    _ANR_PK_NONE = 0,
    _ANR_PK_FREE_DIRTY, /* free, may be resident: counts against the limit */
    _ANR_PK_FREE_CLEAN, /* free, handed back (or never touched): reads as zero */
    _ANR_PK_PURGING,    /* taken out of the bins while madvise runs unlocked */
    _ANR_PK_LARGE,      /* a large object: one run */
    _ANR_PK_SLAB,       /* first page of a slab */
    _ANR_PK_SLAB_INNER, /* other pages of a slab; len = offset to the head */
};
#define _ANR_TAIL 0x80u

/* Where an owned slab sits in its thread cache. */
enum { _ANR_TC_CUR = 0, _ANR_TC_AVAIL, _ANR_TC_FULL, _ANR_TC_SPARE };
#define _ANR_KIND(e) ((e)->kind & 0x7fu)

#define _ANR_BITMAP_WORDS (ANR_SLAB_MAX_OBJECTS / 64)

/* One entry per data page; 64 bytes so that a slab's bitmap fits its head. */
typedef struct _anr_page {
    uint8_t kind;       /* _ANR_PK_* | _ANR_TAIL */
    uint8_t cls;        /* slab: size class */
    uint16_t nfree;     /* slab: free slots */
    uint32_t len;       /* run: pages; slab inner: offset to the head */
    uint32_t prev, next; /* free run: bin list; slab: partial list; purging: pending list */
    union {
        struct {
            uint32_t fifo_prev, fifo_next; /* dirty free run: age order (oldest first) */
        };
        struct {
            /* Slab owned by a thread cache (tcache.c): the cache's slot + 1,
             * 0 = shared. Written under the lock; read by any thread. */
            uint32_t owner;
            uint32_t where; /* owner only: _ANR_TC_CUR, _ANR_TC_AVAIL or _ANR_TC_FULL */
        };
    };
    /* Owned slab: frees from other threads, a lock-free list of objects
     * tagged with bit 0 (_ANR_REMOTE_OWNED). 0 = shared slab. Unused by
     * other kinds (always 0 there). Also keeps the entry 64 bytes on i386. */
    _Atomic uint64_t remote;
    uint64_t bits[_ANR_BITMAP_WORDS]; /* slab: 1 = slot in use (or past the last slot) */
} _anr_page;

_Static_assert(sizeof(_anr_page) == 64, "page-map entry must stay 64 bytes");
_Static_assert(offsetof(_anr_page, kind) == 0 && offsetof(_anr_page, cls) == 1,
               "kind and class are read together (fast.h, _anr_kind_cls)");

/* Two-level segregated fit over run lengths in pages (TLSF's index): a
 * bitmap of non-empty first levels and, per first level, of non-empty
 * second levels, so that finding a fitting bin is a couple of ffs(). */
#define _ANR_SL_BITS 3
#define _ANR_SL_COUNT (1u << _ANR_SL_BITS)
#define _ANR_FL_COUNT 30

typedef struct _anr_bins {
    uint32_t fl_map;
    uint8_t sl_map[_ANR_FL_COUNT];
    uint32_t head[_ANR_FL_COUNT][_ANR_SL_COUNT];
} _anr_bins;

typedef struct _anr_class {
    uint32_t size;  /* bytes per object */
    uint16_t nobj;  /* objects per slab */
    uint8_t pages;  /* pages per slab */
#ifdef __SIZEOF_INT128__
    uint64_t magic; /* ceil(2^64 / size): see _anr_slot_exact */
#else
    uint32_t recip; /* ceil(2^32 / size): slot = (off * recip) >> 32 */
#endif
} _anr_class;

/* The slot of byte offset `off` in a slab of class `c`, without a divide,
 * for an offset inside the slab. */
static inline size_t _anr_slot_of(const _anr_class *c, size_t off)
{
#ifdef __SIZEOF_INT128__
    return (size_t)(((unsigned __int128)c->magic * off) >> 64);
#else
    /* Exact while off * size < 2^32: every class up to 4 KiB in a slab of
     * at most 16 pages of up to 64 KiB; larger classes divide. */
    if (c->size <= 4096)
        return (size_t)(((uint64_t)off * c->recip) >> 32);
    return off / c->size;
#endif
}

/* True if byte offset `off` (any value: a pointer below the slab wraps)
 * is the start of a slot of a slab of class `c`, with *idx its slot. One
 * multiply where 128-bit products exist: with M = ceil(2^64 / size), for
 * every n < 2^32, n / size = (M * n) >> 64 and size divides n iff
 * (M * n) mod 2^64 < M (Lemire, Kaser and Kurz, "Faster remainder by
 * direct computation", 2019). Slabs are at most 16 pages of at most
 * 64 KiB, so slot offsets are below 2^20; a larger `off` gives a quotient
 * past nobj. */
static inline bool _anr_slot_exact(const _anr_class *c, size_t off, size_t *idx)
{
#ifdef __SIZEOF_INT128__
    unsigned __int128 x = (unsigned __int128)c->magic * off;
    *idx = (size_t)(x >> 64);
    return (uint64_t)x < c->magic && *idx < c->nobj;
#else
    *idx = _anr_slot_of(c, off);
    return *idx < c->nobj && *idx * c->size == off;
#endif
}

/* Size-class lookup by (size + 15) / 16. */
#define _ANR_LOOKUP_LEN (ANR_SLAB_MAX_SIZE / 16 + 1)

/* Runs purged per pass: madvise calls are made from a stack array of this size. */
#define _ANR_PURGE_BATCH 32

/* Thread caches also keep freed page runs of up to this many pages (and
 * 64 KiB) in bins by length (runbins.c). */
#define _ANR_RUN_BIN_PAGES 16u

/* A thread's cache (tcache.c). A fixed table of these sits after the heap
 * struct; a slot is taken on a thread's first small allocation. */
typedef struct _anr_tcache {
    /* Each on its own cache lines: the owner writes its counters and bins
     * all the time, and the next slot belongs to another thread. */
    alignas(64) anr_heap *heap;
    uint32_t slot;          /* index in heap->tcaches */
    uint32_t next_free;     /* free-slot list, under the heap lock */
    bool active;
    uint32_t epoch;         /* the heap's flush_epoch last seen */
    /* Fast mallocs left before the owner looks whether the heap went
     * quiet (tcache.c, _anr_tc_quiet_look); below 0, every fast malloc
     * steps aside to the slow path, which looks and resets it. */
    int32_t quiet_tick;
    _Atomic size_t cached_objs, cached_bytes; /* free slots in its slabs; only the owner writes */
    /* Owned slabs per class: the one allocated from, those with free slots,
     * and full ones (lists linked through the page map's prev/next). */
    uint32_t cur[ANR_MAX_CLASSES], avail[ANR_MAX_CLASSES], full[ANR_MAX_CLASSES];
    /* One empty slab kept per class up to 4 KiB, so that a class hovering
     * around a slab boundary does not take the lock on every other call. */
    uint32_t spare[ANR_MAX_CLASSES];
    /* Bins: objects this thread freed, per class, ready for its next malloc
     * of that class without touching a bitmap (tcache.c). A singly linked
     * list through the objects; `bin_n` is read by statistics. */
    void *bin[ANR_MAX_CLASSES];
    uint16_t bin_n[ANR_MAX_CLASSES];
    /* A bin's capacity adapts (tcache.c): it doubles when malloc finds the
     * bin empty and halves when it fills a few times in a row with no such
     * refill between, or when its class is found quiet, so a thread that
     * only frees keeps few objects (each one pins a slab). `bin_spills`
     * counts those fills. */
    uint16_t bin_cap[ANR_MAX_CLASSES];
    uint8_t bin_spills[ANR_MAX_CLASSES];
    /* Quiet bins (tcache.c, bin_gc_step): each slow path of the owner counts
     * one tick; every few ticks one class is visited, round robin, and a
     * class that served no malloc and took no slow path since its last
     * visit gives half its bin back. */
    uint8_t gc_used[ANR_MAX_CLASSES]; /* a malloc, or a bin run dry or full, since */
    uint8_t gc_next, gc_tick;
    /* Run bins (runbins.c): freed page runs by length, the same way. */
    void *run_bin[_ANR_RUN_BIN_PAGES + 1];
    uint16_t run_n[_ANR_RUN_BIN_PAGES + 1];
    uint16_t run_cap[_ANR_RUN_BIN_PAGES + 1];
    uint8_t run_spills[_ANR_RUN_BIN_PAGES + 1];
    uint8_t run_hit[_ANR_RUN_BIN_PAGES + 1]; /* served a malloc since it last ran dry */
    _Atomic size_t run_bytes; /* in all run bins; only the owner writes */
    /* With a background purger: when the owner last took a slow path
     * (refill or spill), to tell a quiet thread from a busy one when the
     * heap asks caches back (tcache.c). */
    uint64_t last_slow_ns;
    /* Per class: set by other threads after they push onto the remote list
     * of one of this cache's slabs, cleared by the owner before it scans its
     * full slabs for those frees, so that a refill does not look at slabs
     * nobody freed into (tcache.c). On a line of its own: others write it. */
    alignas(64) _Atomic uint8_t remote_hint[ANR_MAX_CLASSES];
} _anr_tcache;

struct anr_heap {
    /* Set at init, then read-only. */
    uint8_t *map;            /* the mapping */
    size_t map_size;
    uint8_t *data;           /* first data page */
    _anr_page *pages;        /* the page map */
    /* Per data page: 0 if it is in no slab, else its slab's class in the
     * high byte and 1 + its offset in the slab in the low byte
     * (_anr_slab_at_make). Written under the lock; the free fast path
     * reads it without, so that one load from a dense array (usually
     * cached) gives the class and the slab's head entry, and the multiply
     * that finds the slot need not wait for the 64-byte page-map entry.
     * Never handed back, unlike the page map: a 4 KiB page of it covers
     * 8 MiB of data, and it is resident only where slabs have been. */
    _Atomic uint16_t *slab_at;
    uint32_t npages;         /* data pages */
    size_t page_size;
    unsigned page_shift;
    size_t pm_offset;        /* page map bytes before `data` start here */
    uint32_t nclasses;
    _anr_class cls[ANR_MAX_CLASSES];
    uint8_t class_of[_ANR_LOOKUP_LEN];
    anr_core_hooks hooks;
    unsigned rounds;
    anr_purge_advice advice;
    uint32_t round_pages;    /* pages a purge round inside malloc/free hands back at least */
    bool bg_purge;           /* anr_core_tick() is called often: hot paths purge only past
                              * ANR_BACKGROUND_PURGE_SLACK x the ceiling */
    uint64_t young_ns;       /* reuse window: see reuse_keep (purge.c); 0 = off */
    /* Thread caches, set at init. */
    bool tc_on;
    unsigned tc_classes;     /* classes [0, tc_classes) are cached */
    size_t tc_fast_max;      /* largest size the fast path serves; 0 = caches off */
    size_t tc_max_bytes;     /* free bytes one cache may hold before it trims */
    size_t tc_run_bytes;     /* bytes of runs one cache's run bins may hold */
    uint32_t tc_slots;
    uint32_t tc_unused;      /* slots from here on were never handed out (under lock) */
    _anr_tcache *tcaches;
    uint64_t gen;            /* tells a thread's stale TLS from this heap */
    pthread_key_t tc_key;    /* its destructor flushes an exiting thread's cache */
    _Atomic int tc_key_state; /* 0 none, 1 being made, 2 ready, 3 failed */
    _Atomic uint32_t flush_epoch; /* bumped to make every cache flush */
    /* The flush_epoch set because memory sat a decay time; idle_flushed: a
     * cache flushed for it, so the background purger's next tick hands the
     * dirty pages back (tcache.c, heap.c). */
    _Atomic uint32_t idle_epoch;
    _Atomic bool idle_flushed;
    uint64_t decay_ns;       /* quiet time after which dirty pages go back */
    size_t data_size;        /* npages << page_shift */
    /* Random, never 0: written into word 1 of a freed object that waits on
     * a list (bin, remote or deferred), so a second free of it is seen
     * before the object is queued twice; also scrambles bin links. */
    uint64_t free_key;
    uint16_t bin_max[ANR_MAX_CLASSES]; /* largest bin capacity per class */
    uint16_t bin_start[ANR_MAX_CLASSES]; /* a new cache's bin capacity per class */
    uint32_t run_min, run_max; /* run lengths the run bins keep; 0 = none */
    /* Smallest request the run bins serve: past the largest class (a run
     * of run_min pages may be shorter than a class when the largest class
     * is not a whole number of pages). SIZE_MAX = none. */
    size_t run_min_size;
    uint16_t run_bin_max[_ANR_RUN_BIN_PAGES + 1]; /* largest run bin capacity */

    /* Under `lock`. On a cache line of its own: the fast paths read the
     * fields above on every call and must not share a line with the lock. */
    alignas(64) uint32_t tc_free;
    uint32_t tc_active;
    uint64_t dirty_since;    /* first time a quiet-time check saw dirty pages (ns) */
    uint64_t tc_decay_since; /* when the caches were last asked to flush (ns) */
    bool draining;           /* dirty pages passed the ceiling and are not yet at the floor */
    uint32_t freed_run;      /* pages of the last run freed: the next hot purge round
                              * hands back at least as many (see purge.c) */
    pthread_mutex_t lock;
    _Atomic bool lock_held;  /* a hint for spinners (heap.c); the mutex is the lock */
    void *deferred_local;    /* deferred frees taken off the shared list, not yet done */
    uint32_t top;            /* first never-used page; all above is NONE and zero */
    uint32_t pm_hwm;         /* entries below this may be resident */
    uint32_t pm_sweep;       /* the page-map sweep's next page-map page (purge.c) */
    uint64_t pm_swept_purged; /* pages_purged when the last sweep started */
    uint64_t pm_swept_ns;     /* and when */
    uint32_t top_max;        /* highest top ever */
    uint32_t partial[ANR_MAX_CLASSES]; /* slabs with free slots, per class */
    _anr_bins dirty_bins, clean_bins;
    uint32_t fifo_head, fifo_tail; /* dirty runs, oldest first */
    size_t pages_in_use, pages_dirty, pages_purging, pages_peak;
    size_t limit_pages;      /* 0 = none */
    size_t ceiling, floor;
    /* Reuse (young_ns != 0; purge.c): pages handed back by size lately, and
     * when; pages of those the program then had to fault in afresh, which is
     * how many young dirty pages are now kept past the ceiling. */
    size_t purged_recent, reuse_keep;
    uint64_t purged_ns;
    size_t bytes_in_use, objects_in_use;
    uint64_t alloc_failures;

    /* Lock-free. */
    alignas(64) _Atomic(void *) deferred;          /* frees that found the lock busy */
    _Atomic uint32_t purged_pending;   /* purged runs waiting for the lock */
    _Atomic uint64_t deferred_frees;
    _Atomic uint64_t bad_pointers;
    _Atomic uint64_t pages_purged, madvise_calls; /* madvise runs unlocked */
};

/* --- page map helpers --- */
/* slab_at's entries: a class fits the high byte (ANR_MAX_CLASSES), an
 * offset + 1 the low one (slabs are at most 16 pages). */
_Static_assert(ANR_MAX_CLASSES <= 256, "a class must fit slab_at's high byte");
static inline uint16_t _anr_slab_at_make(unsigned cls, uint32_t i) { return (uint16_t)(cls << 8 | (i + 1u)); }
static inline unsigned _anr_slab_at_back(unsigned v) { return v & 0xffu; }
static inline unsigned _anr_slab_at_cls(unsigned v) { return v >> 8; }

static inline uint8_t *_anr_page_addr(const anr_heap *h, uint32_t pi)
{
    return h->data + ((size_t)pi << h->page_shift);
}

static inline uint32_t _anr_page_index(const anr_heap *h, const void *p)
{
    return (uint32_t)(((uintptr_t)p - (uintptr_t)h->data) >> h->page_shift);
}

static inline bool _anr_in_data(const anr_heap *h, const void *p)
{
    uintptr_t a = (uintptr_t)p, d = (uintptr_t)h->data;
    return a >= d && a - d < ((size_t)h->npages << h->page_shift);
}

/* With thread caches on, a freed object waiting on a list (a bin, a remote
 * or the deferred list) carries the heap's key in word 1, so that a second
 * free of it is caught although its bitmap bit is still set. Heaps without
 * caches (anr_malloc's, the real-time mode) never read or write the key:
 * there the bitmap alone says what is free, and no engine access touches a
 * block the caller may have handed to valgrind as free. */
static inline void _anr_key_set(const anr_heap *h, void *p) { ((uint64_t *)p)[1] = h->free_key; }
static inline void _anr_key_clear(void *p) { ((uint64_t *)p)[1] = 0; }
static inline bool _anr_key_is_set(const anr_heap *h, const void *p)
{
    return ((const uint64_t *)p)[1] == h->free_key;
}
/* The key check for paths that serve both kinds of heap. */
static inline bool _anr_key_found(const anr_heap *h, const void *p)
{
    return h->tc_on && _anr_key_is_set(h, p);
}

/* Lock held: the ceiling in force. Never more dirty pages than pages in
 * use (above the floor): a heap that empties out hands back all but the
 * floor, not all but the ceiling. */
static inline size_t _anr_ceiling(const anr_heap *h)
{
    size_t c = h->pages_in_use > h->floor ? h->pages_in_use : h->floor;
    return c < h->ceiling ? c : h->ceiling;
}

static inline size_t _anr_limit_use(const anr_heap *h)
{
    return h->pages_in_use + h->pages_dirty + h->pages_purging;
}

/* The coarse monotonic clock (a vDSO read), in ns. */
uint64_t _anr_now_ns(void);

/* The shortest time between two of the decay's slower jobs (asking the
 * thread caches back, sweeping the page map): half the decay time, 100 ms
 * at least. */
static inline uint64_t _anr_half_decay_ns(const anr_heap *h)
{
    return h->decay_ns / 2 > 100000000u ? h->decay_ns / 2 : 100000000u;
}
/* When a dirty run was filed: kept in its head entry's first bitmap word,
 * which free runs do not otherwise use. */
#define _ANR_FREED_AT(e) ((e)->bits[0])

/* Writes a run's boundary tags (head, and tail if longer than a page). */
void _anr_run_tag(anr_heap *h, uint32_t head, uint32_t len, uint8_t kind);
/* Clears a run's boundary tags back to NONE. */
void _anr_run_untag(anr_heap *h, uint32_t head, uint32_t len);

/* --- region.c: the only calls to the OS memory API --- */
void *_anr_os_reserve(size_t *size);  /* tries smaller sizes on failure */
void _anr_os_release(void *p, size_t size);
int _anr_os_purge(void *p, size_t size, anr_purge_advice advice);
/* mincore(): bit 0 of vec[i] set if page i of [p, p + size) is resident. */
int _anr_os_resident(const void *p, size_t size, unsigned char *vec);
size_t _anr_os_page_size(void);
size_t _anr_os_default_mapping(void);

/* --- runs.c: free page runs (lock held) --- */
typedef enum { _ANR_RUN_OK, _ANR_RUN_LIMIT, _ANR_RUN_FULL } _anr_run_result;
/* Takes a run of `n` pages whose first page is aligned to `align_pages`.
 * Sets *zero if the pages are known to be zero. */
_anr_run_result _anr_run_alloc(anr_heap *h, uint32_t n, uint32_t align_pages, uint32_t *head,
                               bool *zero);
/* Gives back a run of in-use pages as dirty, coalescing with dirty neighbours. */
void _anr_run_free(anr_heap *h, uint32_t head, uint32_t n);
/* Makes a purged run clean, coalescing with clean neighbours and `top`.
 * Returns the head of the merged clean run, or _ANR_NIL if `top` took it. */
uint32_t _anr_run_insert_clean(anr_heap *h, uint32_t head, uint32_t n);
/* The largest dirty run (near enough: the first of the highest bin). */
uint32_t _anr_run_largest_dirty(const anr_heap *h);
/* Removes a dirty run from the bins and the age list. */
void _anr_run_remove(anr_heap *h, uint32_t head);
/* A dirty run just removed: untags it and files all but its first `keep`
 * pages back as a dirty run (the caller tags those `keep` pages). */
void _anr_run_give_back_tail(anr_heap *h, uint32_t head, uint32_t len, uint32_t keep);
/* Grows the large object at `head` from `n` to `m` pages in place if the
 * neighbour allows it. */
_anr_run_result _anr_run_grow(anr_heap *h, uint32_t head, uint32_t n, uint32_t m);
void _anr_run_shrink(anr_heap *h, uint32_t head, uint32_t n, uint32_t m);

/* --- slab.c --- */
int _anr_classes_init(anr_heap *h, const uint32_t *sizes, size_t n);
void *_anr_slab_alloc(anr_heap *h, unsigned cls, _anr_run_result *res);
void _anr_slab_free(anr_heap *h, uint32_t head, unsigned idx);
/* The smallest class that holds `size` with objects aligned to `align`, or -1. */
int _anr_class_for(const anr_heap *h, size_t size, size_t align);

/* --- pagemap.c: pointer validation --- */
typedef struct _anr_obj {
    uint32_t head;  /* head page of the slab or large run */
    unsigned idx;   /* slab slot */
    bool slab;
    size_t usable;
} _anr_obj;
anr_error _anr_lookup(const anr_heap *h, const void *p, _anr_obj *obj);
/* No lock needed: ANR_ERR_NONE if `p` looks like a live object's start
 * (exact for live objects), else the error a locked lookup would give. */
anr_error _anr_lookup_unlocked(const anr_heap *h, const void *p);

/* --- purge.c --- */
void _anr_fifo_push(anr_heap *h, uint32_t head);
void _anr_fifo_remove(anr_heap *h, uint32_t head);
/* Purges until dirty pages <= target. Called WITHOUT the lock held; takes it
 * (with trylock only if !may_block). `reuse`: young pages within the reuse
 * allowance stay (background purging; not trim or limit). Returns pages
 * handed back. */
size_t _anr_purge(anr_heap *h, size_t target, bool may_block, bool reuse);
/* One bounded round of the same (a batch of runs; a few inside free()): what
 * malloc and free do when they leave dirty pages over the ceiling. */
size_t _anr_purge_round(anr_heap *h, size_t target, bool may_block);
void _anr_drain_purged_list(anr_heap *h);
/* Lock held: files the runs whose purge finished unlocked. A plain load
 * first, inline (every lock looks): the list is nearly always empty, and
 * an exchange each time would take the line exclusive. */
static inline void _anr_drain_purged(anr_heap *h)
{
    if (atomic_load_explicit(&h->purged_pending, memory_order_relaxed) != _ANR_NIL)
        _anr_drain_purged_list(h);
}
/* Lock held: `n` pages are about to be faulted in afresh (reuse window). */
void _anr_reuse_note_fresh(anr_heap *h, uint32_t n);
/* Lock held: true while the dirty pages over the ceiling are young pages
 * within the reuse allowance (no purge round would hand any back). */
bool _anr_reuse_waits(const anr_heap *h);
bool _anr_pagemap_trim(anr_heap *h);
/* Lock held: one step of the page-map sweep; false once it has gone round. */
bool _anr_pagemap_sweep(anr_heap *h);
/* Takes the lock: a whole sweep if pages were purged since the last (and,
 * unless `force`, half a decay time passed). */
void _anr_pagemap_sweep_all(anr_heap *h, bool force);

/* --- tcache.c --- */
void _anr_tc_init(anr_heap *h, const anr_core_options *o, _anr_tcache *table, uint32_t slots);
void *_anr_tc_alloc(anr_heap *h, unsigned cls);
bool _anr_tc_free(anr_heap *h, void *p, anr_error *err);
void _anr_tc_push_locked(anr_heap *h, uint32_t head, void *p);
void _anr_tc_flush_all(anr_heap *h);
void _anr_tc_cached(const anr_heap *h, size_t *objs, size_t *bytes);
void _anr_tc_fork_child(anr_heap *h);
/* Owner, lock not held: this thread's fast mallocs ran out their quiet
 * tick (tcache.c). */
void _anr_tc_quiet_look(anr_heap *h, _anr_tcache *tc);
void _anr_tc_forget(anr_heap *h);
/* This thread's cache of `h`, made on first use; NULL if it cannot have one. */
_anr_tcache *_anr_tc_get(anr_heap *h);
/* Owner: flushes the cache if the heap asked every cache to (flush_epoch). */
void _anr_tc_sync(anr_heap *h, _anr_tcache *tc);
/* The same from free(), which never waits: only if the lock is free. */
void _anr_tc_sync_try(anr_heap *h, _anr_tcache *tc);
/* Lock held, when the decay is due: asks the caches to flush (at most every
 * half decay time). */
void _anr_tc_decay_locked(anr_heap *h, uint64_t now);

/* --- runbins.c: freed page runs kept by thread caches --- */
void _anr_run_bins_init(anr_heap *h, size_t run_bytes);
void _anr_run_bins_reset(const anr_heap *h, _anr_tcache *tc);
/* A run of `size` bytes from this thread's bins, or NULL. */
void *_anr_run_bin_alloc(anr_heap *h, size_t size);
/* The same, aligned to `align` (past the page size), or NULL. */
void *_anr_run_bin_alloc_aligned(anr_heap *h, size_t size, size_t align);
/* Frees `p` into this thread's bins if it is a run they keep: true if done
 * (*err says how it went). */
bool _anr_run_bin_free(anr_heap *h, void *p, anr_error *err);
/* Lock held: frees every run in the cache's bins. */
void _anr_run_bins_drain_locked(anr_heap *h, _anr_tcache *tc);
void _anr_run_bins_cached(const anr_heap *h, const _anr_tcache *tc, size_t *objs, size_t *bytes);

/* --- slab.c: slabs handed to and from thread caches (lock held) --- */
/* A slab of `cls` with free slots, off the partial list (new if none). */
uint32_t _anr_slab_take(anr_heap *h, unsigned cls, _anr_run_result *res);
/* Back from a cache: onto the partial list, or freed if empty. */
void _anr_slab_put(anr_heap *h, uint32_t head);

/* --- heap.c --- */
/* anr_core_alloc and anr_core_free past their inline fast tries (fast.h),
 * for a caller that made those itself (gmalloc's slow halves): a second
 * try would only fail again, at some 50 (malloc) to 100 (free)
 * instructions. */
void *_anr_alloc_after_fast(anr_heap *h, size_t size, size_t align, unsigned flags);
anr_error _anr_free_after_fast(anr_heap *h, void *p);
void _anr_report(anr_heap *h, anr_error err, anr_op op, const void *p);
void _anr_lock(anr_heap *h);
bool _anr_trylock(anr_heap *h);
/* Unlocks; returns the number of dirty pages to purge down to (the floor
 * past the ceiling, 0 after the quiet time), or _ANR_NO_PURGE. */
#define _ANR_NO_PURGE SIZE_MAX
size_t _anr_unlock(anr_heap *h);
/* Unlocks and runs the purge _anr_unlock asks for. */
void _anr_unlock_and_purge(anr_heap *h, bool may_block);
void _anr_free_locked(anr_heap *h, void *p, anr_op op);
/* Lock held: does every queued deferred free (lock holders do DRAIN_MAX). */
void _anr_drain_all(anr_heap *h);
/* Queues a chain of frees (linked through word 0, `last` ends it) for the
 * next lock holder; never blocks. */
void _anr_defer_chain(anr_heap *h, void *first, void *last, size_t n);
void _anr_note_peak(anr_heap *h);

#endif

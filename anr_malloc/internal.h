/* anr_malloc internals: the heap struct, its side tables and their rules.
 *
 * Side mapping (one mmap at heap creation, never changed; munmap at destroy):
 *
 *   [ struct anr_mheap | FDR ring | record pool | granule table ]
 *
 * Granule table: one uint32 per granule (the engine alignment, 16 bytes) of
 * the engine's data span, indexed by (address - span) / granule. Bits 0-23:
 * the index of the debug record of the block whose USER pointer (and, for a
 * guarded block, whose engine block) starts in that granule; 0 = none.
 * Bits 24-31: the GC epoch in which the block was last marked. Pages of the
 * table are touched only where records or marks exist.
 *
 * Records (fixed size: header + stack_depth frames) are taken from a pool
 * with a free list, under `dlock`. A record holds no raw pointer (offsets
 * from the span only), so Valgrind's leak checker never sees our metadata as
 * references to user blocks; the FDR stores pointers bit-inverted for the
 * same reason.
 *
 * Invariants (anr_heap_verify checks them):
 *  - A live record r is referenced by table[g(user)] and, if guarded with a
 *    front guard, by table[g(block)]; nothing else references it.
 *  - A guarded block: [block, user) and [user + size, + ANR_GUARD_SIZE) hold
 *    ANR_GUARD_BYTE; anr_usable_size(user) == size.
 *  - Marks: a block is marked in the current collection iff its table entry
 *    holds the current epoch (1..255). Sweeps reset visited entries to 0, so
 *    a stale epoch lives at most until the next sweep, which differs.
 *
 * Lock order: dlock may be held while calling into the engine; the engine
 * lock is never held while taking dlock (walk visitors only collect). No
 * user callback is called with any lock held.
 */
#ifndef ANR_MALLOC_INTERNAL_H
#define ANR_MALLOC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anr_core.h"
#include "anr_malloc.h"
#include "quota.h"

#define _AM_RI_MASK 0x00ffffffu
#define _AM_EPOCH_SHIFT 24
#define _AM_MAX_RECORDS _AM_RI_MASK

enum {
    _AM_REC_LIVE = 0x1,
    _AM_REC_GUARDED = 0x2,
    _AM_REC_INFO = 0x4, /* debug_info set */
    _AM_REC_DYING = 0x8, /* being freed: findable by block (so a sweep does not
                          * misjudge it) until the engine has freed it */
};

typedef struct _am_rec {
    uint32_t next_free; /* pool free list (free records only) */
    uint16_t flags;     /* _AM_REC_* */
    uint16_t nframes;
    uint32_t front;     /* user - block */
    uint32_t tid;
    uintptr_t block_off; /* block - span */
    size_t size;         /* size asked for */
    uintptr_t info;
    uint64_t seq;
    uintptr_t frames[];  /* the heap's max_depth */
} _am_rec;

typedef struct _am_cb {
    void (*fn)(void);
    void *ctx;
} _am_cb;

typedef struct _am_fdr_slot {
    _Atomic uint64_t seq; /* 0 while being written */
    anr_fdr_entry e;
} _am_fdr_slot;

struct anr_mheap {
    anr_heap *core;
    char name[32];
    uintptr_t span;       /* engine data span */
    size_t span_len;
    size_t gran;          /* granule = engine alignment */
    unsigned gshift;
    uint8_t *side;        /* the side mapping (this struct at its start) */
    size_t side_size;
    bool has_side;        /* record pool, table and FDR exist */
    bool vg;              /* Valgrind client requests on */
    bool abort_on_full;
    bool is_default;
    int slot;             /* in the registry */
    _Atomic unsigned debug;
    _Atomic unsigned stack_depth;
    unsigned max_depth;

    /* Callbacks and the fault handler, under cb_lock (copied out, then called). */
    pthread_mutex_t cb_lock;
    _am_cb more[ANR_MAX_CALLBACKS];
    unsigned n_more;
    _am_cb markers[ANR_MAX_CALLBACKS];
    unsigned n_markers;
    _am_cb full;
    _am_cb fault;

    /* Debug records and the table, under dlock (table marks: atomic). */
    pthread_mutex_t dlock;
    _Atomic uint32_t *table;
    uint8_t *recs;
    size_t rec_size;
    uint32_t rec_cap, rec_hwm, rec_free;
    uint64_t alloc_seq;
    _Atomic size_t live_records;

    /* Flight data recorder (lock-free). */
    _am_fdr_slot *fdr;
    size_t fdr_cap;
    _Atomic uint64_t fdr_seq;

    /* Garbage collection. */
    pthread_mutex_t gc_lock;
    _Atomic bool gc_running;
    _Atomic uint32_t epoch;
    /* An allocation that begins during a collection holds gc_gate shared
     * from before its engine call until its block is marked; the sweep holds
     * it exclusive while it judges a batch, so it never sees a new block
     * before that block's mark. */
    pthread_rwlock_t gc_gate;

    char verify_msg[256];

    _Atomic uint64_t more_calls, more_freed, full_calls, gc_runs, gc_garbage, gc_freed;
    _Atomic uint64_t records_dropped, faults;

    _am_quota quota; /* membroker (quota.c) */
};

/* --- heap.c --- */
anr_mheap *_am_heap_of(const void *p);
anr_mheap *_am_default(void);
/* Reports a fault through the heap's handler (or the foreign handler if h is NULL). */
void _am_fault(anr_mheap *h, anr_fault f, const char *op, const void *p, const char *detail,
               size_t size, const uintptr_t *stack, unsigned nframes);
/* An allocation finally failed: memory-full callback, abort if asked, errno. */
void _am_alloc_failed(anr_mheap *h, size_t size, bool hooks);
void _am_copy_cbs(anr_mheap *h, const _am_cb *src, const unsigned *n, _am_cb *dst,
                  unsigned *nout);
/* Runs the heap's need-more-memory callbacks once (not the quota link), in
 * the heap's callback frame; 0 if this thread is already inside one. */
size_t _am_more_memory_chain(anr_mheap *h, size_t size);
/* The debug socket's view of the registry: the heap in slot i (or NULL);
 * hold(true) keeps every heap from being destroyed until hold(false). */
anr_mheap *_am_heap_at(unsigned i);
void _am_registry_hold(bool on);
/* Gives another front end's engine heap (libgmalloc.so's) side tables and a
 * slot; it keeps its own hooks and cannot be destroyed. NULL + errno. */
anr_mheap *_am_heap_adopt(anr_heap *core, const anr_options *opts);

static inline bool _am_in_span(const anr_mheap *h, const void *p)
{
    uintptr_t a = (uintptr_t)p;
    return a >= h->span && a - h->span < h->span_len;
}

static inline size_t _am_gi(const anr_mheap *h, const void *p)
{
    return ((uintptr_t)p - h->span) >> h->gshift;
}

/* --- alloc.c --- */
void *_am_alloc(anr_mheap *h, size_t size, size_t align, unsigned op, bool zero, bool hooks,
                uintptr_t caller);
void _am_free(anr_mheap *h, void *p, unsigned op, uintptr_t caller);
/* glibc realloc semantics, with the caller to record. */
void *_am_realloc(anr_mheap *h, void *p, size_t size, uintptr_t caller);
size_t _am_usable(anr_mheap *h, const void *p);

/* --- debug.c: records, guards, trash --- */
uint32_t _am_rec_take(anr_mheap *h);              /* dlock held; 0 if the pool is empty */
void _am_rec_give(anr_mheap *h, uint32_t ri);     /* dlock held */
_am_rec *_am_rec_open(anr_mheap *h, uint32_t ri); /* dlock held; Valgrind: accessible */
void _am_rec_close(anr_mheap *h, _am_rec *r);
/* dlock held: the live record whose user pointer is p, or 0. */
uint32_t _am_rec_find(anr_mheap *h, const void *p);
/* dlock held: the live or dying record whose engine block is b, or 0. */
uint32_t _am_rec_find_block(anr_mheap *h, const void *b);
void _am_tab_set_ri(anr_mheap *h, size_t gi, uint32_t ri);
/* Clears the record index at gi if it is still ri (a newer block may own it). */
void _am_tab_clear_ri(anr_mheap *h, size_t gi, uint32_t ri);
void _am_tab_set_epoch(anr_mheap *h, size_t gi, uint32_t epoch);
void _am_write_guards(anr_mheap *h, uint8_t *block, size_t front, uint8_t *end);
/* Checks a record's guards (dlock held, record open); false + detail if damaged. */
bool _am_guards_ok(anr_mheap *h, const _am_rec *r, char *detail, size_t cap);
void _am_fill(void *p, size_t n, uint32_t pattern);
/* anr_heap_verify; `report` false: no call to the fault handler. */
const char *_am_verify(anr_mheap *h, bool report);

/* --- fdr.c --- */
void _am_fdr_add(anr_mheap *h, unsigned op, const void *p, const void *old, size_t size,
                 uintptr_t caller);

/* --- stack.c --- */
unsigned _am_stack_capture(uintptr_t *frames, unsigned depth, uintptr_t caller);
size_t _am_symbolize(uintptr_t addr, char *buf, size_t cap);
uint32_t _am_tid(void);

/* --- gc.c --- */
/* Gathers a block's record (dlock taken inside). frames: ANR_MAX_STACK_DEPTH. */
bool _am_block_info(anr_mheap *h, void *user, size_t usable, anr_block_info *out,
                    uintptr_t *frames);

/* --- Valgrind façade: the only place that names client requests. --- */
void _am_vg_malloclike(const anr_mheap *h, void *p, size_t n, bool zeroed);
void _am_vg_freelike(const anr_mheap *h, void *p);
void _am_vg_noaccess(const anr_mheap *h, const void *p, size_t n);
void _am_vg_undefined(const anr_mheap *h, const void *p, size_t n);
void _am_vg_defined(const anr_mheap *h, const void *p, size_t n);
bool _am_vg_running(void);

#endif

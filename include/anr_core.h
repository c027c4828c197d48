/* anr_core: the allocation engine.
 *
 * One heap = one fixed mapping reserved at init. Metadata (the heap struct and
 * a page map with one entry per page) sits in side tables at the head of the
 * mapping; objects follow. After anr_core_init() the engine makes no mmap,
 * munmap, mremap, mprotect or brk call: the only memory syscall is madvise.
 *
 * The engine knows nothing of libc symbol names, config files, sockets or
 * stdio: front ends (gmalloc, anr_malloc) pass a plain options struct and
 * hooks, and own all reporting.
 */
#ifndef ANR_CORE_H
#define ANR_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct anr_heap anr_heap;

/* The most size classes SLAB_SIZES may name. */
#define ANR_MAX_CLASSES 64
/* Objects per slab are capped so that a slab's bitmap fits its page-map entry. */
#define ANR_SLAB_MAX_OBJECTS 256
/* The largest slab class accepted (bigger sizes are page runs). */
#define ANR_SLAB_MAX_SIZE 32768
/* With background_purge, malloc and free purge only past this many times
 * the ceiling: a churning real-time thread can outrun a purger that ticks
 * every few milliseconds, and a madvise inside its free costs 0.1-3 ms on a
 * VM (TLB shootdowns), where nothing else in free grows with the heap. */
#define ANR_BACKGROUND_PURGE_SLACK 16u

/* What a bad pointer turned out to be; handed to the on_error hook. */
typedef enum anr_error {
    ANR_ERR_NONE = 0,
    ANR_ERR_DOUBLE_FREE,    /* points at an object that is already free */
    ANR_ERR_NOT_AN_OBJECT,  /* inside the mapping, but not at a live object's start */
    ANR_ERR_FOREIGN,        /* outside the mapping (e.g. the loader's own memory) */
    ANR_ERR_DEFERRED_LIST,  /* a list of freed blocks (deferred, remote, a thread cache's bin) held a broken link: a use after free? */
} anr_error;

/* Which operation met the bad pointer. */
typedef enum anr_op {
    ANR_OP_FREE = 0,
    ANR_OP_REALLOC,
    ANR_OP_USABLE_SIZE,
} anr_op;

typedef enum anr_purge_advice {
    ANR_PURGE_DONTNEED = 0, /* RSS drops at once; purged pages read back as zero */
    ANR_PURGE_FREE,         /* cheaper; RSS drops only under memory pressure */
} anr_purge_advice;

typedef struct anr_core_hooks {
    /* Called (heap lock NOT held) when an allocation of `size` bytes would pass
     * the limit, after dirty pages were handed back. Return true if the caller
     * raised the limit or freed memory and the engine should retry. Called at
     * most `more_memory_rounds` times per allocation. May call into the heap. */
    bool (*more_memory)(void *ctx, anr_heap *heap, size_t size);
    /* Called for every bad pointer found. May be called with the heap lock held
     * (for frees drained from the deferred list): it must not allocate from
     * this heap. It may abort. */
    void (*on_error)(void *ctx, anr_error err, anr_op op, const void *ptr);
    /* Called (heap lock NOT held) after a purge handed `pages` pages back,
     * and after every anr_core_purge() (pages may be 0 then: purges inside
     * free() may have done the work). `may_block` is false when the purge
     * ran inside free(): the hook must then not wait for anything (e.g. not
     * talk to a daemon). Optional. */
    void (*purged)(void *ctx, anr_heap *heap, size_t pages, bool may_block);
    void *ctx;
} anr_core_hooks;

typedef struct anr_core_options {
    size_t mapping_size;     /* bytes to reserve; 0 = default (4x RAM on 64-bit, 512 MiB on 32-bit) */
    size_t limit;            /* bytes of pages in use allowed; 0 = no limit (the mapping bounds it) */
    /* Free-but-dirty pages allowed before a purge; 0 = default (1024). The
     * ceiling in force is never above the pages in use (nor below the
     * floor): raise the floor, not the ceiling, to keep pages in a heap
     * that empties out. */
    size_t page_ceiling;
    size_t page_floor;       /* a purge goes down to this many dirty pages; default anr_core_default_floor */
    const uint32_t *slab_sizes; /* increasing multiples of the alignment; NULL = built-in classes */
    size_t n_slab_sizes;
    anr_purge_advice purge_advice;
    unsigned more_memory_rounds; /* 0 = default (4) */
    anr_core_hooks hooks;
    /* Per-thread caches of small objects (off = the deterministic real-time
     * mode: every operation takes the heap lock and is bounded). */
    bool thread_cache;
    size_t tcache_max_size;  /* largest size cached; 0 = default (16 KiB: every built-in class) */
    size_t tcache_max_bytes; /* free bytes one thread may hold before it trims; 0 = 1 MiB */
    /* Freed page runs (past the largest class, up to 16 pages and 64 KiB)
     * one thread keeps for its next mallocs of the same length; 0 = default
     * (2 MiB); less than one such run (e.g. 1) = none. */
    size_t tcache_run_bytes;
    unsigned tcache_slots;   /* threads that can have a cache at once; 0 = default (256) */
    /* Dirty pages left alone this long go back on the next call into the
     * heap (or by anr_core_tick()); 0 = default (1000 ms); UINT32_MAX = never. */
    uint32_t decay_ms;
    /* Someone calls anr_core_tick() every few milliseconds (a background
     * purger): malloc and free then leave purging to it and only purge
     * themselves past ANR_BACKGROUND_PURGE_SLACK times the ceiling (a hard
     * bound for when the ticks do not keep up), which keeps madvise out of
     * real-time threads. */
    bool background_purge;
    /* The reuse window. Pages that must be faulted in afresh within it
     * after a purge were handed back too soon: as many pages freed less
     * than young_ms ago then stay past the ceiling (memory a program frees
     * and allocates again, a buffer per request, is reused instead of
     * handed back and faulted in again); kept pages not reused within the
     * window go back, and the allowance shrinks by them. A heap that only
     * frees earns none. 0 = off (the default; gmalloc: REUSE_MS, 1000). */
    uint32_t young_ms;
} anr_core_options;

/* Flags for anr_core_alloc. */
#define ANR_ALLOC_ZERO 0x1u       /* return zeroed memory (skips clearing known-zero pages) */
/* Succeed only if memory is there now: never call more_memory, never purge,
 * never wait for the heap lock (NULL if another thread holds it). */
#define ANR_ALLOC_NO_HOOKS 0x2u

typedef struct anr_core_stats {
    size_t mapping_size;     /* bytes reserved at init */
    size_t page_size;
    size_t limit;            /* bytes; 0 = none */
    size_t bytes_in_use;     /* usable bytes of live objects */
    size_t objects_in_use;
    size_t pages_in_use;     /* pages holding slabs or large objects */
    size_t pages_dirty;      /* free pages that may still be resident */
    size_t pages_peak;       /* highest pages_in_use + pages_dirty seen */
    size_t pages_high_water; /* pages of the mapping ever handed out */
    size_t metadata_bytes;   /* heap struct, cache table, page map and slab_at entries in use */
    uint64_t pages_purged;   /* pages handed back with madvise, in total */
    uint64_t madvise_calls;
    uint64_t deferred_frees; /* frees that found the lock busy and were queued */
    uint64_t alloc_failures; /* allocations that returned NULL */
    uint64_t bad_pointers;   /* bad frees / reallocs / usable_size calls seen */
    uint64_t map_calls;      /* mmap/munmap/mremap/mprotect/brk made by the engine (1: init) */
    size_t bytes_cached;     /* free bytes held by thread caches (not in bytes_in_use) */
    size_t thread_caches;    /* threads with a cache now */
} anr_core_stats;

/* Sets `*opts` to the defaults. */
void anr_core_default_options(anr_core_options *opts);

/* The floor that goes with a ceiling when none is given: a sixteenth of it
 * (64 pages, 256 KiB, of the default ceiling), so that a heap that empties
 * out keeps little. A program that frees and soon allocates again in
 * bursts larger than that faults pages in afresh; the reuse window
 * (young_ms, off by default here, on in gmalloc) keeps such pages past
 * the ceiling, or a larger floor can be given. */
size_t anr_core_default_floor(size_t page_ceiling);

/* Reserves the mapping and sets up a heap. Returns 0, or an errno value
 * (EINVAL for bad options, ENOMEM if no mapping could be had, even after
 * retrying smaller sizes). */
int anr_core_init(anr_heap **out, const anr_core_options *opts);

/* Unmaps the heap (for tests and anr_malloc heaps; gmalloc never calls it). */
void anr_core_destroy(anr_heap *heap);

/* Allocates `size` bytes aligned to `align` (a power of two; 0 means the
 * default alignment, alignof(max_align_t)). size 0 gives a unique minimal
 * object. Returns NULL if the limit or the mapping is exhausted or size is
 * absurd; never aborts. */
void *anr_core_alloc(anr_heap *heap, size_t size, size_t align, unsigned flags);

/* Frees `ptr` (NULL is ignored). Never blocks: if the heap lock is busy the
 * block is queued and freed by the next lock holder. Returns ANR_ERR_NONE,
 * or what was wrong with the pointer (on_error has been called then). A
 * queued pointer's errors are reported through on_error when drained. */
anr_error anr_core_free(anr_heap *heap, void *ptr);

/* realloc semantics on the engine: NULL ptr allocates; grows or shrinks in
 * place when possible; on failure returns NULL and leaves ptr intact. A bad
 * ptr returns NULL with *err set (err may be NULL). size 0 is NOT special here:
 * front ends decide what realloc(p, 0) means. */
void *anr_core_realloc(anr_heap *heap, void *ptr, size_t size, anr_error *err);

/* Bytes usable at ptr (>= the size asked for); 0 for NULL or a bad pointer. */
size_t anr_core_usable_size(anr_heap *heap, const void *ptr);

/* True if ptr lies in the heap's mapping (says nothing about liveness). */
bool anr_core_owns(const anr_heap *heap, const void *ptr);

/* Checks a pointer without changing anything: ANR_ERR_NONE if it is the start
 * of a live object. Takes the heap lock. Does not call on_error. */
anr_error anr_core_check(anr_heap *heap, const void *ptr);

/* Moves the limit (bytes; 0 = none). Lowering it below the current use is
 * allowed: allocations needing new pages fail until use drops. */
void anr_core_set_limit(anr_heap *heap, size_t limit);
/* Moves the purge ceiling and floor (pages); a floor above the ceiling is
 * taken as the ceiling. */
void anr_core_set_page_ceiling(anr_heap *heap, size_t ceiling, size_t floor);

/* Hands back free pages now: all dirty ones if `all`, else down to the floor.
 * Returns the number of pages handed back. */
size_t anr_core_purge(anr_heap *heap, bool all);

void anr_core_get_stats(anr_heap *heap, anr_core_stats *out);

/* Full consistency check of the page map, bins and slabs (O(heap); for
 * tests and debugging). Returns NULL if sound, else a static string naming
 * the first broken invariant. Safe beside running threads: the slabs that
 * other threads' caches own are checked only as far as their owners cannot
 * change them meanwhile. */
const char *anr_core_verify(anr_heap *heap);

/* Gives this thread's cached objects back to the heap (no-op without a
 * cache). Thread exit does this by itself. */
void anr_core_flush_thread_cache(anr_heap *heap);

/* Hands back dirty pages past the ceiling (down to the floor) and those
 * left alone longer than the decay time, and page-map pages that describe
 * only free memory. With thread caches, every half decay time it asks each
 * cache to flush on its thread's next allocation, which then hands back the
 * dirty pages at once. Cheap when there is nothing to do; for a caller's own
 * idle loop or a background purger. Returns the data pages handed back. */
size_t anr_core_tick(anr_heap *heap);

/* Turns background_purge on or off at run time (e.g. off when the purger
 * thread could not start, or in a forked child that has none). */
void anr_core_set_background_purge(anr_heap *heap, bool on);

/* fork() support: prepare takes every lock, parent releases them, child
 * re-creates them (the child's thread does not own the parent's locks). */
void anr_core_fork_prepare(anr_heap *heap);
void anr_core_fork_parent(anr_heap *heap);
void anr_core_fork_child(anr_heap *heap);

/* The default alignment, alignof(max_align_t). */
size_t anr_core_alignment(void);

/* The built-in slab classes (for documentation and tests). */
size_t anr_core_default_slab_sizes(const uint32_t **sizes);

#ifdef __cplusplus
}
#endif
#endif

/* ---- Object walk (anr_core/walk.c; added for anr_malloc's GC, leak reports
 * and snapshots). Kept as an appended block with its own guard so that it
 * merges cleanly with other work on this header. ---- */
#ifndef ANR_CORE_WALK_H
#define ANR_CORE_WALK_H
#ifdef __cplusplus
extern "C" {
#endif

/* Called for each live object with the heap lock held: it must not call into
 * this heap. Return false to stop (e.g. when a batch is full). */
typedef bool (*anr_core_visit_fn)(void *ctx, void *ptr, size_t usable);

/* Visits the live objects at addresses >= `from` (NULL: all) in address
 * order, under the heap lock. Returns the address to resume from if `visit`
 * stopped the walk, NULL once every object was visited. Objects allocated or
 * freed between two calls may or may not be seen. */
void *anr_core_walk(anr_heap *heap, const void *from, anr_core_visit_fn visit, void *ctx);

/* The span of the mapping where objects live: every pointer anr_core_alloc
 * returns lies in [*start, *start + *len). Fixed for the heap's life. */
void anr_core_data_span(const anr_heap *heap, uintptr_t *start, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* ANR_CORE_WALK_H */

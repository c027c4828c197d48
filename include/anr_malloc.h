/* anr_malloc: the allocator API for code written against it (firmware,
 * long-running services), over the anr_core engine.
 *
 * Heaps. Each heap (anr_mheap) owns one fixed mapping and one limit, reserved
 * by anr_heap_create(); a subsystem can have its own budget. A default heap is
 * created on first use (thread-safely) for anr_malloc() and friends. Besides
 * the engine mapping, a heap reserves one fixed-size side mapping at creation
 * for its own metadata (callbacks, mark bits, debug records, the flight data
 * recorder). After anr_heap_create() returns, no mmap/munmap/mprotect/brk is
 * made for that heap; only madvise.
 *
 * Pointers. anr_free(), anr_realloc() and anr_usable_size() find the heap
 * owning a pointer themselves (any heap may be passed to the anr_heap_*
 * variants, but the pointer must belong to it). A pointer that is not the
 * start of a live block is reported through the heap's fault handler
 * (default: a message on stderr, then abort()); it never corrupts the heap.
 *
 * Memory pressure. When an allocation would pass the limit, the engine first
 * hands back free dirty pages, then calls the heap's "need more memory"
 * callbacks in registration order (each returns the bytes it freed), and
 * retries, for at most `retry_rounds` rounds. If it still fails, the "memory
 * full" callback is called with the size, the limit and the use, and NULL is
 * returned (errno ENOMEM), or the process aborts if `abort_on_full` is set.
 * Callbacks run without any heap lock held and may allocate from or free to
 * the same heap; an allocation made from inside a callback of the same heap
 * does not call the callbacks again.
 *
 * Garbage collection (opt-in). Subsystems register marker callbacks;
 * anr_heap_gc() calls them, each calls anr_mark() on every block it still
 * owns; the blocks left unmarked are garbage: reported (address, size,
 * allocation stack, client debug data) and/or freed. Blocks allocated while a
 * collection runs count as marked, and blocks their owners free meanwhile are
 * left alone. Contract: a block malloc returned before a collection started
 * must be reachable by a marker when that marker runs (a subsystem that
 * allocates concurrently with anr_heap_gc() holds, across malloc-and-publish,
 * a lock its marker also takes).
 *
 * The debug kit, switchable per heap at run time (anr_heap_set_debug) or from
 * a config string (anr_debug_parse): flight data recorder, guard words, call
 * stacks per allocation, client debug data, trash fill, anr_verify(), and
 * Valgrind client requests.
 */
#ifndef ANR_MALLOC_H
#define ANR_MALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct anr_mheap anr_mheap;

/* --- debug flags (anr_options.debug, anr_heap_set_debug) --- */
#define ANR_DEBUG_FDR 0x01u         /* flight data recorder: the last N operations */
#define ANR_DEBUG_GUARDS 0x02u      /* guard bytes before and after each new block */
#define ANR_DEBUG_STACKS 0x04u      /* an allocation call stack stored per new block */
#define ANR_DEBUG_TRASH_FREE 0x08u  /* freed blocks are filled with ANR_TRASH_FREE */
#define ANR_DEBUG_TRASH_ALLOC 0x10u /* new (non-calloc) blocks are filled with ANR_TRASH_ALLOC */
#define ANR_DEBUG_VALGRIND 0x20u    /* client requests; fixed at creation (default: on under valgrind) */
#define ANR_DEBUG_ALL 0x1fu         /* everything that can be switched at run time */

/* Recognisable patterns (32-bit words, stored little-end first in memory). */
#define ANR_TRASH_FREE 0xdeadbeefu  /* freed blocks: bytes ef be ad de ... */
#define ANR_TRASH_ALLOC 0xbaadf00du /* new blocks:   bytes 0d f0 ad ba ... */
#define ANR_GUARD_BYTE 0xfdu        /* guard bytes */
#define ANR_GUARD_SIZE 16u          /* guard bytes after a block (before: at least this) */

/* The most frames stored per allocation stack. */
#define ANR_MAX_STACK_DEPTH 64u
/* The most callbacks of one kind per heap. */
#define ANR_MAX_CALLBACKS 16u
/* The most heaps that may exist at once (including the default heap). */
#define ANR_MAX_HEAPS 64u

/* membroker (the system-wide quota service, membroker/README.md). */
typedef enum anr_membroker_mode {
    ANR_MEMBROKER_OFF = 0,       /* the limit is options.limit */
    ANR_MEMBROKER_SIMPLE,        /* the limit is the quota held: asked for, surplus returned */
    ANR_MEMBROKER_BIDIRECTIONAL, /* ... and given back when the broker asks */
} anr_membroker_mode;

/* A one-line notice about a heap (no newline), e.g. "membroker unreachable".
 * May be called from an allocation's slow path: it must not allocate from
 * that heap. */
typedef void (*anr_message_fn)(void *ctx, anr_mheap *heap, const char *msg);

typedef struct anr_options {
    const char *name;         /* for reports; NULL = "anr" */
    size_t mapping_size;      /* bytes reserved for blocks; 0 = engine default (a few x RAM) */
    size_t limit;             /* bytes of pages in use allowed; 0 = none (the mapping bounds it) */
    size_t page_ceiling;      /* free dirty pages before a purge; 0 = engine default */
    size_t page_floor;        /* a purge goes down to this; 0 = anr_core_default_floor;
                               * above the ceiling (given or default): EINVAL */
    const uint32_t *slab_sizes; /* NULL = the engine's classes */
    size_t n_slab_sizes;
    unsigned retry_rounds;    /* "need more memory" rounds per allocation; 0 = 4 */
    bool abort_on_full;       /* abort() with a message instead of returning NULL */
    /* Debug kit. Side tables for it are reserved unless no_debug is set. */
    bool no_debug;            /* no side tables: no GC, no guards, stacks or debug data (saves
                               * address space: about mapping_size / 4 + records) */
    unsigned debug;           /* ANR_DEBUG_* on from the start */
    unsigned stack_depth;     /* frames stored per stack; 0 = 16; max ANR_MAX_STACK_DEPTH */
    size_t fdr_entries;       /* flight data recorder slots; 0 = 4096 */
    size_t debug_records;     /* most live blocks with guards/stack/debug data at once;
                               * 0 = 1M on 64-bit, 64K on 32-bit. Past it blocks get none
                               * (counted in anr_heap_stats.records_dropped). */
    /* membroker quota (see "Quota from membroker" below). */
    anr_membroker_mode membroker; /* OFF (default), SIMPLE or BIDIRECTIONAL */
    const char *membroker_socket; /* NULL = $MEMBROKER_SOCKET, else /run/membroker.sock */
    size_t membroker_chunk;       /* least bytes asked for at once; 0 = 1 MiB */
    anr_message_fn on_message;    /* notices; NULL = one line on stderr (write(2)) */
    void *message_ctx;
} anr_options;

/* Sets `*opts` to the defaults (all zero but the fields above name defaults). */
void anr_default_options(anr_options *opts);

/* Creates a heap. Returns NULL with errno set (EINVAL: bad options; ENOMEM:
 * no mapping; EMFILE: ANR_MAX_HEAPS heaps exist). opts may be NULL. */
anr_mheap *anr_heap_create(const anr_options *opts);
/* Unmaps the heap and everything in it. The default heap cannot be destroyed. */
void anr_heap_destroy(anr_mheap *heap);
/* The default heap (created on first call); NULL if it could not be created. */
anr_mheap *anr_default_heap(void);
/* The heap whose mapping holds ptr, or NULL. */
anr_mheap *anr_heap_of(const void *ptr);
const char *anr_heap_name(const anr_mheap *heap);

/* --- allocation: default heap --- */
void *anr_malloc(size_t size);
void *anr_calloc(size_t n, size_t size);
/* glibc semantics: NULL ptr = malloc; size 0 frees and returns NULL. */
void *anr_realloc(void *ptr, size_t size);
/* align: a power of two that is a multiple of sizeof(void *), else NULL/EINVAL. */
void *anr_memalign(size_t align, size_t size);
void anr_free(void *ptr);
/* Bytes usable at ptr (>= the size asked for; with guards, exactly that size). */
size_t anr_usable_size(const void *ptr);
/* Succeeds only if memory is there now: never calls a callback and never
 * waits for memory (it still takes the heap's priority-inheritance lock). */
void *anr_malloc_if_available(size_t size);

/* --- allocation: a given heap --- */
void *anr_heap_malloc(anr_mheap *heap, size_t size);
void *anr_heap_calloc(anr_mheap *heap, size_t n, size_t size);
void *anr_heap_realloc(anr_mheap *heap, void *ptr, size_t size);
void *anr_heap_memalign(anr_mheap *heap, size_t align, size_t size);
void anr_heap_free(anr_mheap *heap, void *ptr);
size_t anr_heap_usable_size(anr_mheap *heap, const void *ptr);
void *anr_heap_malloc_if_available(anr_mheap *heap, size_t size);

/* --- callbacks --- */
/* "Need more memory": `size` bytes could not be had (the engine's size: it
 * includes guard bytes when guards are on). Free what you can (caches,
 * a GC, quota from a broker...) and return the bytes freed; 0 means "nothing":
 * when every callback of a round returns 0 the allocation fails. */
typedef size_t (*anr_more_memory_fn)(void *ctx, anr_mheap *heap, size_t size);
/* "Memory full": an allocation of `size` finally failed; limit 0 = none. */
typedef void (*anr_memory_full_fn)(void *ctx, anr_mheap *heap, size_t size, size_t limit,
                                   size_t use);

/* Returns 0, or ENOSPC when ANR_MAX_CALLBACKS are registered. */
int anr_heap_add_more_memory(anr_mheap *heap, anr_more_memory_fn fn, void *ctx);
/* Removes the first registration of (fn, ctx). Returns 0 or ENOENT. */
int anr_heap_remove_more_memory(anr_mheap *heap, anr_more_memory_fn fn, void *ctx);
/* Sets (or with fn NULL clears) the memory-full callback. */
void anr_heap_set_memory_full(anr_mheap *heap, anr_memory_full_fn fn, void *ctx);

/* --- limits and statistics --- */
void anr_heap_set_limit(anr_mheap *heap, size_t limit);
/* Lowers the limit by `bytes` (a heap without a limit starts from its
 * mapping size) and hands back free pages. Returns the new limit. */
size_t anr_heap_shrink(anr_mheap *heap, size_t bytes);
/* Raises the limit by `bytes` (no-op without a limit). Returns the new limit. */
size_t anr_heap_expand(anr_mheap *heap, size_t bytes);
/* Hands back all free dirty pages now; returns the bytes handed back. */
size_t anr_heap_trim(anr_mheap *heap);

typedef struct anr_heap_stats {
    size_t mapping_size;      /* bytes reserved for blocks */
    size_t side_size;         /* bytes reserved for this heap's side tables */
    size_t page_size;
    size_t limit;             /* 0 = none */
    size_t use;               /* bytes of pages counted against the limit */
    size_t bytes_in_use;      /* engine bytes of live blocks (incl. guards, rounding) */
    size_t objects_in_use;
    size_t pages_in_use;
    size_t pages_dirty;
    size_t pages_peak;
    uint64_t alloc_failures;
    uint64_t bad_pointers;     /* faults reported (bad frees, guard damage, ...) */
    uint64_t more_memory_calls; /* "need more memory" callbacks called */
    uint64_t more_memory_freed; /* bytes they reported freed */
    uint64_t memory_full_calls;
    uint64_t gc_runs, gc_garbage, gc_freed;
    size_t debug_records;      /* live blocks with a debug record */
    uint64_t records_dropped;  /* blocks that got no record because the pool was full */
    uint64_t fdr_ops;          /* operations recorded since creation */
    unsigned debug;            /* ANR_DEBUG_* now on */
} anr_heap_stats;
void anr_heap_get_stats(anr_mheap *heap, anr_heap_stats *out);

/* --- quota from membroker (options.membroker) ---
 *
 * A heap made with options.membroker != OFF registers with the membroker
 * daemon at creation (options.membroker_socket, else $MEMBROKER_SOCKET) and
 * its limit becomes the quota it holds (options.limit, if set, is the most
 * it will hold). It starts with none; the limit is then one page, since the
 * engine has no zero limit.
 *  - Asking: quota is the FIRST link of the need-more-memory chain. When an
 *    allocation would pass the limit (after dirty pages went back), the heap
 *    sends a REQUEST for max(membroker_chunk, use / 8, the size + a page)
 *    and waits for the answer; only if nothing is granted do the heap's own
 *    callbacks run, and only if they free nothing does the allocation fail
 *    (NULL/ENOMEM, or abort_on_full). A free page of the pool costs no one
 *    anything; the heap's caches have value.
 *  - Returning: surplus above the pages in use (in use + dirty) goes back
 *    once it exceeds two chunks, down to one chunk of headroom, from
 *    anr_heap_trim(), anr_heap_membroker_dispatch() and
 *    anr_heap_membroker_return_surplus(); never from free() (free never
 *    blocks).
 *  - Giving back (BIDIRECTIONAL): asked for N pages, the heap hands back all
 *    dirty pages, runs its need-more-memory callbacks (once for a normal
 *    request, up to retry_rounds times for an urgent one, while it is short),
 *    hands back pages again, lowers its limit and gives what is now above its
 *    use, at most N. The request is handled when the application calls
 *    anr_heap_membroker_dispatch() (put anr_heap_membroker_fd() in its poll
 *    loop: the library starts no thread), or inline while the heap itself
 *    waits in a REQUEST or RESERVE. While it runs, other threads' quota
 *    requests for the heap wait.
 *  - A heap that cannot reach the daemon at creation (or loses it later, or
 *    is in a forked child) runs with options.limit (0 = none) and says so
 *    once through options.on_message.
 * The broker's page size is used for quota (anr_membroker_status.page_size). */
typedef struct anr_membroker_status {
    anr_membroker_mode mode; /* as asked in the options */
    bool connected;          /* registered with the daemon now */
    size_t held;             /* bytes of quota held (the limit while connected) */
    size_t page_size;        /* the broker's page */
    uint64_t requests;       /* REQUESTs sent */
    uint64_t granted;        /* bytes granted (REQUEST and RESERVE) */
    uint64_t returned;       /* bytes returned as surplus */
    uint64_t givebacks;      /* give-back requests answered */
    uint64_t given_back;     /* bytes given back on request */
} anr_membroker_status;
void anr_heap_membroker_status(anr_mheap *heap, anr_membroker_status *out);
/* The connection's descriptor for the application's poll loop (POLLIN: call
 * anr_heap_membroker_dispatch); -1 unless BIDIRECTIONAL and connected. */
int anr_heap_membroker_fd(const anr_mheap *heap);
/* Answers the give-back requests that have arrived (without waiting), then
 * returns surplus quota. Returns how many requests were answered, or a
 * negative errno (-ENOTCONN: not connected; the heap runs with its local
 * limit). Also useful for a SIMPLE heap, on a timer, for the surplus. */
int anr_heap_membroker_dispatch(anr_mheap *heap);
/* RESERVE: all of `bytes` (rounded up to pages) or nothing, waiting up to
 * timeout_ms while the broker asks others to give back. 0, or -ENOSPC (past
 * options.limit or the pool), -ETIMEDOUT, -EAGAIN, -ENOTCONN. */
int anr_heap_membroker_reserve(anr_mheap *heap, size_t bytes, int timeout_ms);
/* Returns surplus quota now (the hysteresis above); the bytes returned. */
size_t anr_heap_membroker_return_surplus(anr_mheap *heap);

/* --- faults (bad pointers, damaged guards, a broken heap) --- */
typedef enum anr_fault {
    ANR_FAULT_DOUBLE_FREE = 1, /* the block is already free */
    ANR_FAULT_NOT_AN_OBJECT,   /* inside a heap, but not the start of a live block */
    ANR_FAULT_FOREIGN,         /* in no heap */
    ANR_FAULT_FREE_LIST,       /* the engine's deferred-free list was broken (use after free) */
    ANR_FAULT_GUARD,           /* a guard was overwritten (overrun or underrun) */
    ANR_FAULT_CORRUPT,         /* anr_verify() found a broken invariant */
} anr_fault;

typedef struct anr_fault_info {
    anr_fault fault;
    const char *op;           /* "free", "realloc", "usable_size", "check", "verify", ... */
    const void *ptr;          /* the pointer given (or the damaged block) */
    anr_mheap *heap;          /* NULL for a pointer in no heap */
    const char *detail;       /* one line, e.g. "3 bytes after the block overwritten" */
    size_t size;              /* the block's size if known, else 0 */
    const void *const *stack; /* the block's allocation stack if recorded */
    unsigned nframes;
} anr_fault_info;

/* A fault handler may return (the bad operation is then ignored: free does
 * nothing, realloc returns NULL). It may be called with the engine lock held:
 * it must not allocate from or free to that heap. */
typedef void (*anr_fault_fn)(void *ctx, const anr_fault_info *info);
/* Sets the heap's handler; NULL restores the default (message, abort). */
void anr_heap_set_fault_handler(anr_mheap *heap, anr_fault_fn fn, void *ctx);
/* The default handler: writes anr_fault_format() to stderr and aborts. */
void anr_fault_default(void *ctx, const anr_fault_info *info);
/* Formats a fault with its symbolized stack; returns the length (truncated to cap-1). */
size_t anr_fault_format(const anr_fault_info *info, char *buf, size_t cap);
/* Handler for pointers in no heap (anr_free of a foreign pointer). */
void anr_set_foreign_fault_handler(anr_fault_fn fn, void *ctx);

/* --- garbage collection and leak reports --- */
typedef void (*anr_marker_fn)(void *ctx, anr_mheap *heap);
int anr_heap_add_marker(anr_mheap *heap, anr_marker_fn fn, void *ctx);
int anr_heap_remove_marker(anr_mheap *heap, anr_marker_fn fn, void *ctx);
/* Marks a block as still owned. Only meaningful from a marker during a
 * collection; returns false (and does nothing) otherwise, or if ptr is not
 * the start of a live block of a heap. */
bool anr_mark(const void *ptr);

typedef struct anr_block_info {
    void *ptr;                /* what malloc returned */
    size_t size;              /* the size asked for if recorded, else the usable size */
    uintptr_t debug_info;     /* anr_set_debug_info(); valid if has_debug_info */
    bool has_debug_info;
    uint32_t tid;             /* allocating thread, if recorded (else 0) */
    uint64_t seq;             /* allocation number on this heap, if recorded (else 0) */
    unsigned nframes;         /* 0 if no stack was recorded */
    const void *const *stack;
} anr_block_info;

typedef void (*anr_leak_fn)(void *ctx, anr_mheap *heap, const anr_block_info *leak);

#define ANR_GC_FREE 0x1u   /* free the garbage */
#define ANR_GC_REPORT 0x2u /* call on_leak for each garbage block (before it is freed) */

typedef struct anr_gc_result {
    size_t live;          /* blocks seen */
    size_t marked;
    size_t garbage;
    size_t garbage_bytes;
    size_t freed;
} anr_gc_result;

/* Runs a collection: markers in registration order, then the sweep. Returns 0,
 * EBUSY if a collection of this heap is already running, ENOTSUP for a heap
 * made with no_debug. on_leak may be NULL; out may be NULL. */
int anr_heap_gc(anr_mheap *heap, unsigned flags, anr_leak_fn on_leak, void *ctx,
                anr_gc_result *out);
int anr_gc(unsigned flags, anr_leak_fn on_leak, void *ctx, anr_gc_result *out);

/* Ready-made leak reporters: ctx is an anr_report_sink. JSON: one object per
 * line, {"heap":..,"ptr":..,"size":..,"tid":..,"seq":..,"debug_info":..,
 * "stack":["0x..",..],"symbols":["fn+0x1c (libx.so+0x2a1c)",..]}. */
typedef struct anr_report_sink {
    int fd;
    bool json;
} anr_report_sink;
void anr_leak_report(void *ctx, anr_mheap *heap, const anr_block_info *leak);
size_t anr_block_format(anr_mheap *heap, const anr_block_info *b, bool json, char *buf,
                        size_t cap);

/* --- debug kit --- */
/* Switches ANR_DEBUG_* flags (all but ANR_DEBUG_VALGRIND, fixed at creation;
 * a no_debug heap ignores them all). Blocks keep what they were given at
 * allocation: a guarded block stays guarded, a recorded stack stays. Returns
 * the previous flags (with ANR_DEBUG_VALGRIND if that is on). */
unsigned anr_heap_set_debug(anr_mheap *heap, unsigned flags);
unsigned anr_heap_get_debug(const anr_mheap *heap);
/* Frames kept per new stack (1..the heap's stack_depth). */
void anr_heap_set_stack_depth(anr_mheap *heap, unsigned depth);

/* A config string for front ends: comma- or space-separated words "fdr",
 * "guards", "stacks", "trash" (free), "trash-alloc", "valgrind", "all",
 * "none", and "stacks=N", "fdr=N" (N: depth / slots). */
typedef struct anr_debug_config {
    unsigned flags;
    unsigned stack_depth; /* 0 if not given */
    size_t fdr_entries;   /* 0 if not given */
} anr_debug_config;
/* Returns 0, or -1 with *bad (if given) pointing at the first word not understood. */
int anr_debug_parse(const char *spec, anr_debug_config *out, const char **bad);

/* Attaches a word to a block (shown in leak and fault reports). Returns 0,
 * EINVAL if ptr is not a live block, ENOSPC if the record pool is full,
 * ENOTSUP on a no_debug heap. */
int anr_set_debug_info(void *ptr, uintptr_t value);
/* Reads it back: 0 and *value, or ENOENT. */
int anr_get_debug_info(const void *ptr, uintptr_t *value);
/* Everything recorded about a live block. Returns 0 or EINVAL. The stack
 * points into `frames` (ANR_MAX_STACK_DEPTH entries, caller's). */
int anr_block_get_info(const void *ptr, anr_block_info *out, const void **frames);

/* Checks one block's guards now: 0 if sound (or unguarded), else reports
 * through the fault handler and returns ANR_FAULT_GUARD (or the pointer fault). */
int anr_check(const void *ptr);
/* Full consistency check: the engine's page map, bins and slabs, every debug
 * record, and every guarded block. NULL if sound; else a description of the
 * first problem (also reported through the fault handler). */
const char *anr_heap_verify(anr_mheap *heap);
const char *anr_verify(void); /* every heap */

/* Flight data recorder. */
typedef enum anr_fdr_op {
    ANR_FDR_MALLOC = 1,
    ANR_FDR_CALLOC,
    ANR_FDR_REALLOC,
    ANR_FDR_MEMALIGN,
    ANR_FDR_FREE,
    ANR_FDR_GC_FREE, /* freed by a collection */
    ANR_FDR_BAD,     /* a bad pointer given to free/realloc */
} anr_fdr_op;

typedef struct anr_fdr_entry {
    uint64_t seq;        /* operation number on this heap, from 1 */
    uint64_t time_ns;    /* CLOCK_MONOTONIC */
    uintptr_t ptr;       /* the block (NULL for a failed allocation) */
    uintptr_t old_ptr;   /* realloc: the old block */
    size_t size;         /* size asked for */
    uintptr_t caller;    /* return address into the caller of the API */
    uint32_t tid;
    uint32_t op;         /* anr_fdr_op */
} anr_fdr_entry;

/* Copies the recorded operations, oldest first, at most max; returns the count. */
size_t anr_fdr_read(anr_mheap *heap, anr_fdr_entry *out, size_t max);
/* Capacity of the recorder (0 for a no_debug heap). */
size_t anr_fdr_capacity(const anr_mheap *heap);
const char *anr_fdr_op_name(unsigned op);

/* --- live allocations (for snapshot / diff front ends) --- */
/* Calls fn for every live block, without any lock held (blocks allocated or
 * freed meanwhile may or may not be seen). fn may allocate and free. */
void anr_heap_foreach(anr_mheap *heap, void (*fn)(void *ctx, const anr_block_info *b),
                      void *ctx);

typedef struct anr_stack_group {
    uint64_t hash;        /* of the frames; 0 = the group of blocks without a stack */
    size_t count;         /* live blocks */
    size_t bytes;         /* their sizes */
    unsigned nframes;
    uintptr_t frames[ANR_MAX_STACK_DEPTH];
} anr_stack_group;
/* Groups the live blocks by allocation stack into `groups` (caller's array
 * of `max`, used as a hash table). Returns the groups filled; blocks that did
 * not fit are counted in *dropped (may be NULL). Groups come in no order. */
size_t anr_heap_snapshot(anr_mheap *heap, anr_stack_group *groups, size_t max,
                         size_t *dropped);
/* Writes "  #i 0xaddr fn+0xoff (module+0xoff)" lines for a stack. */
size_t anr_stack_format(const void *const *stack, unsigned nframes, char *buf, size_t cap);

/* --- the debug socket (opt-in; one per process, for every heap) --- */
/* Listens on <dir>/anr-<pid>.sock (dir NULL: $XDG_RUNTIME_DIR if set, else
 * /tmp), mode 0600, answering only peers of this process's effective uid
 * (SO_PEERCRED). Requests (one line each; tools/anrctl is the client):
 * stats, fdr [N], verify, leaks, snapshot, diff, help. Nothing is served
 * unless this is called. Without ANR_DSOCK_NO_THREAD a thread (all signals
 * blocked) serves requests; with it, poll anr_debug_socket_fd() for input and
 * call anr_debug_socket_serve(). The server never allocates; `leaks` runs a
 * report-only collection (markers are called from the serving thread).
 * Returns 0, EALREADY if running, or an errno (EEXIST: the path holds
 * something that is not a socket; EADDRINUSE: another server of this pid
 * answers there, e.g. libgmalloc.so's). A fork()ed child does not serve. */
#define ANR_DSOCK_NO_THREAD 0x1u
int anr_debug_socket_start(const char *dir, unsigned flags);
/* Stops serving and removes the socket (also done at exit). */
void anr_debug_socket_stop(void);
/* The listening descriptor (non-blocking), or -1. */
int anr_debug_socket_fd(void);
/* Accepts and answers one waiting connection: 0, EAGAIN if none, or an errno. */
int anr_debug_socket_serve(void);
/* Copies the socket path ("" if not serving); returns its length. */
size_t anr_debug_socket_path(char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif

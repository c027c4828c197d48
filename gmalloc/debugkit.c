/* The debug kit for libgmalloc.so (DEBUG / DEBUG_SOCKET; GMALLOC_DEBUG=...,
 * GMALLOC_DEBUG_SOCKET=1): anr_malloc's debug layer over gmalloc's own
 * engine heap.
 *
 * How: init makes the engine heap exactly as without the kit (same options,
 * same hooks: limit policy, quota, error reports), then anr_malloc "adopts"
 * it: side tables (debug records, flight recorder) and a registry slot, so
 * that the debug socket sees it. _gm_dbg then points at the adopted heap and
 * every entry point takes its one `if (_gm_dbg)` branch to the functions
 * here, which call anr_malloc's allocation paths with the program's return
 * address. Without the kit _gm_dbg stays NULL and the entry points are as
 * before plus that one predictable branch.
 *
 * Timing: the kit is adopted during first-call init (no malloc, no stdio),
 * with everything but stack capture on; stacks and the socket's thread
 * start from a constructor, once libc is up (glibc's backtrace may dlopen
 * libgcc_s; pthread_create allocates).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#include "../anr_malloc/internal.h"

struct anr_mheap *_gm_dbg;
static unsigned want_flags; /* the flags asked for, on from the constructor */

/* Faults the debug layer finds itself (damaged guards, a bad pointer given to
 * realloc) follow ON_ERROR like the engine's. */
static void on_fault(void *ctx, const anr_fault_info *info)
{
    (void)ctx;
    if (_gm_cfg.on_error == GM_ON_ERROR_IGNORE) return;
    char buf[8192];
    size_t n = anr_fault_format(info, buf, sizeof(buf));
    for (size_t off = 0; off < n;) {
        ssize_t w = write(2, buf + off, n - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    if (_gm_cfg.on_error == GM_ON_ERROR_ABORT) abort();
}

void _gm_debug_init(anr_heap *core)
{
    if (!_gm_cfg.debug && !_gm_cfg.debug_socket) return;
    anr_options o;
    anr_default_options(&o);
    o.name = "gmalloc";
    o.debug = _gm_cfg.debug & ANR_DEBUG_VALGRIND;
    if (_gm_cfg.debug_stack_depth) o.stack_depth = _gm_cfg.debug_stack_depth;
    if (_gm_cfg.debug_fdr_entries) o.fdr_entries = _gm_cfg.debug_fdr_entries;
    anr_mheap *h = _am_heap_adopt(core, &o);
    if (!h) {
        _gm_quota_note("DEBUG: no room for the debug side tables; the kit is off", errno);
        return;
    }
    anr_heap_set_fault_handler(h, on_fault, NULL);
    want_flags = _gm_cfg.debug & ANR_DEBUG_ALL;
    anr_heap_set_debug(h, want_flags & ~ANR_DEBUG_STACKS);
    __atomic_store_n(&_gm_dbg, h, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void debug_start(void)
{
    gm_heap(); /* init, if nothing allocated yet */
    anr_mheap *h = _gm_dbg;
    if (!h) return;
    anr_heap_set_debug(h, want_flags);
    if (_gm_cfg.debug_socket) {
        int err = anr_debug_socket_start(NULL, 0);
        if (err) _gm_quota_note("DEBUG_SOCKET: cannot serve the debug socket", err);
    }
}

/* --- the routed entry points (caller: the program's return address) --- */

void *_gm_dbg_alloc(const char *fn, size_t size, size_t align, bool zero, void *caller)
{
    unsigned op = zero ? ANR_FDR_CALLOC : align ? ANR_FDR_MEMALIGN : ANR_FDR_MALLOC;
    void *p = _am_alloc(_gm_dbg, size, align, op, zero, true, (uintptr_t)caller);
    return p ? p : _gm_alloc_failed(fn, size);
}

void _gm_dbg_free(void *p, void *caller)
{
    anr_mheap *h = _gm_dbg;
    if (!anr_core_owns(h->core, p)) return; /* the loader's early memory */
    int saved = errno;
    _am_free(h, p, ANR_FDR_FREE, (uintptr_t)caller);
    errno = saved;
}

void *_gm_dbg_realloc(void *p, size_t size, void *caller)
{
    anr_mheap *h = _gm_dbg;
    if (p && size && !anr_core_owns(h->core, p)) {
        _gm_on_error(NULL, ANR_ERR_FOREIGN, ANR_OP_REALLOC, p);
        errno = ENOMEM;
        return NULL;
    }
    if (p && !size) {
        _gm_dbg_free(p, caller);
        return NULL;
    }
    errno = 0;
    void *q = _am_realloc(h, p, size, (uintptr_t)caller);
    if (q) return q;
    if (errno == ENOMEM) return _gm_alloc_failed("realloc", size);
    errno = EINVAL; /* a bad pointer, reported */
    return NULL;
}

size_t _gm_dbg_usable(void *p)
{
    anr_mheap *h = _gm_dbg;
    return anr_core_owns(h->core, p) ? _am_usable(h, p) : 0;
}

/* --- fork: the layer's locks are taken before the engine's --- */

static void relock_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT);
    pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
}

void _gm_debug_fork_prepare(void)
{
    if (_gm_dbg) {
        pthread_mutex_lock(&_gm_dbg->cb_lock);
        pthread_mutex_lock(&_gm_dbg->dlock);
    }
}

void _gm_debug_fork_parent(void)
{
    if (_gm_dbg) {
        pthread_mutex_unlock(&_gm_dbg->dlock);
        pthread_mutex_unlock(&_gm_dbg->cb_lock);
    }
}

void _gm_debug_fork_child(void)
{
    /* PI mutexes belong to the parent's thread id: make them anew. */
    if (_gm_dbg) {
        relock_init(&_gm_dbg->dlock);
        relock_init(&_gm_dbg->cb_lock);
    }
}

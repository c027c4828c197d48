/* gmalloc internals shared by entry.c, init.c and report.c. */
#ifndef GMALLOC_INTERNAL_H
#define GMALLOC_INTERNAL_H

#include <stddef.h>

#include "anr_core.h"
#include "config.h"

/* The one heap, published by init. */
extern anr_heap *_gm_heap;
/* The same once published, if the debug kit is off (it is decided before
 * publication and never changes); NULL otherwise. malloc and free test
 * only this before their inline fast paths. */
extern anr_heap *_gm_fast_heap;
extern gm_config _gm_cfg;

/* The heap, initialising on first use (before constructors, without malloc). */
anr_heap *_gm_init_slow(void);

static inline anr_heap *gm_heap(void)
{
    anr_heap *h = __atomic_load_n(&_gm_heap, __ATOMIC_ACQUIRE);
    return __builtin_expect(h != NULL, 1) ? h : _gm_init_slow();
}

/* report.c: all output goes through write(2) from stack buffers. */
void _gm_on_error(void *ctx, anr_error err, anr_op op, const void *ptr);
/* An allocation of `size` by `fn` failed: aborts if ON_LIMIT abort (and the
 * size was plausible), else sets ENOMEM. Returns NULL. */
void *_gm_alloc_failed(const char *fn, size_t size);
void _gm_config_report(void *ctx, const char *file, unsigned line, const char *msg);
void _gm_fatal(const char *what, int err) __attribute__((noreturn));
/* A one-line notice: "gmalloc: <what> (error N)". */
void _gm_quota_note(const char *what, int err);

/* debugkit.c: anr_malloc's debug kit over our heap (DEBUG, DEBUG_SOCKET).
 * _gm_dbg is NULL unless it is on; then every entry point routes here. */
#include <stdbool.h>
struct anr_mheap;
extern struct anr_mheap *_gm_dbg;
void _gm_debug_init(anr_heap *core);
void *_gm_dbg_alloc(const char *fn, size_t size, size_t align, bool zero, void *caller);
void _gm_dbg_free(void *p, void *caller);
void *_gm_dbg_realloc(void *p, size_t size, void *caller);
size_t _gm_dbg_usable(void *p);
void _gm_debug_fork_prepare(void);
void _gm_debug_fork_parent(void);
void _gm_debug_fork_child(void);
/* The one branch the entry points pay for the kit. */
#define GM_DEBUG_ON() __builtin_expect(_gm_dbg != NULL, 0)
#define GM_CALLER __builtin_return_address(0)

/* purger.c: the child of a fork has no purger thread: purging goes back
 * into malloc and free there. */
void _gm_purger_fork_child(void);

/* quota.c: membroker quota (MEMBROKER on). */
void _gm_quota_hooks(anr_core_hooks *hooks);
void _gm_quota_start(anr_heap *h);
void _gm_quota_fork_child(void);

#endif

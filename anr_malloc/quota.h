/* anr_malloc internals: a heap's membroker quota (quota.c).
 *
 * Invariant (while connected): the engine limit is `held` broker pages in
 * bytes (one page when `held` is 0: the engine has no zero limit). `held`
 * and the engine limit change together under `lock`, which is never held
 * across an mb_* call. Lock order: the mb_client's own mutex (a give-back
 * callback runs under it), then `lock`, then the engine lock.
 */
#ifndef ANR_MALLOC_QUOTA_H
#define ANR_MALLOC_QUOTA_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anr_malloc.h"
#include "membroker.h"

typedef struct _am_quota {
    int mode; /* anr_membroker_mode asked for */
    _Atomic bool connected;
    bool said_lost;       /* the "lost" notice went out (under lock) */
    mb_client client;     /* caller storage for libmbclient (lives in the side mapping) */
    pthread_mutex_t lock; /* held + engine limit */
    uint64_t held;        /* broker pages held */
    size_t mb_page;       /* broker page size */
    size_t chunk;         /* least bytes asked for at once */
    size_t cap;           /* options.limit: local limit and quota ceiling (0 = none) */
    unsigned rounds;      /* urgent give-back rounds (options.retry_rounds) */
    anr_message_fn msg;
    void *msg_ctx;
    char socket[108]; /* the path asked for ("" = libmbclient's choice) */
    _Atomic uint64_t requests, granted, returned, givebacks, given_back;
} _am_quota;

struct anr_mheap;
/* Connects if options ask for it; sets the limit. Never fails: an
 * unreachable daemon leaves the local limit and one notice. */
void _am_quota_init(struct anr_mheap *h, const anr_options *o);
void _am_quota_fini(struct anr_mheap *h);
/* First link of the need-more-memory chain: REQUEST a chunk. True if the
 * limit moved (quota granted, or the daemon was lost: local limit). */
bool _am_quota_more(struct anr_mheap *h, size_t size);
/* Returns surplus quota (hysteresis) after pages were handed back. */
size_t _am_quota_surplus(struct anr_mheap *h);

#endif

/* The opt-in background purger (PURGE_THREAD on): a thread that wakes every
 * half DECAY_MS and hands back dirty pages left alone longer than that, so a
 * process that goes completely quiet still gives its free memory back.
 * Without it the same happens on the next call into the allocator.
 *
 * Started from a constructor (libc is up by then; creating a thread from
 * the first malloc, which the loader may make, is not safe). It runs at
 * SCHED_IDLE and is not restarted in forked children.
 */
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "internal.h"

static void *purger(void *arg)
{
    anr_heap *h = arg;
    struct sched_param none = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
    uint32_t ms = _gm_cfg.decay_ms && _gm_cfg.decay_ms != UINT32_MAX ? _gm_cfg.decay_ms : 1000;
    struct timespec nap = {(time_t)(ms / 2000), (long)(ms / 2 % 1000) * 1000000L};
    for (;;) {
        nanosleep(&nap, NULL);
        anr_core_tick(h);
    }
    return NULL;
}

__attribute__((constructor)) static void start_purger(void)
{
    anr_heap *h = gm_heap();
    if (!_gm_cfg.purge_thread || _gm_cfg.decay_ms == UINT32_MAX)
        return;
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, purger, h) != 0)
        _gm_quota_note("PURGE_THREAD: cannot start the purger thread", 0);
    pthread_attr_destroy(&a);
}

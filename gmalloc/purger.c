/* The opt-in background purger (PURGE_THREAD on): a thread that wakes every
 * POLL_MS and hands back dirty pages past the ceiling and those left alone
 * longer than DECAY_MS, so a process that goes completely quiet still gives
 * its free memory back, and malloc/free leave purging (madvise, tens to
 * hundreds of microseconds here) to it unless dirty pages pass
 * ANR_BACKGROUND_PURGE_SLACK (16) times the ceiling: the setting for
 * real-time threads. Without it the same happens
 * inside the allocator's calls.
 *
 * Started from a constructor (libc is up by then; creating a thread from
 * the first malloc, which the loader may make, is not safe). It runs at
 * SCHED_IDLE and is not restarted in forked children.
 */
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "internal.h"

/* A tick with nothing to do is a lock round trip: cheap at this rate. */
#define POLL_MS 5

static void *purger(void *arg)
{
    anr_heap *h = arg;
    struct sched_param none = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
    struct timespec nap = {0, POLL_MS * 1000000L};
    for (;;) {
        nanosleep(&nap, NULL);
        anr_core_tick(h);
    }
    return NULL;
}

__attribute__((constructor)) static void start_purger(void)
{
    anr_heap *h = gm_heap();
    if (!_gm_cfg.purge_thread)
        return;
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, purger, h) != 0) {
        _gm_quota_note("PURGE_THREAD: cannot start the purger thread; malloc and free purge", 0);
        anr_core_set_background_purge(h, false);
    }
    pthread_attr_destroy(&a);
}

void _gm_purger_fork_child(void)
{
    if (_gm_cfg.purge_thread)
        anr_core_set_background_purge(_gm_heap, false);
}

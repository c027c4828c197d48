/* Churn workload for counting memory-map system calls after init.
 *
 * THREADS worker threads are created and each makes one small, one medium
 * and one large allocation (the allocator's per-thread init), then they wait
 * at a barrier. The main thread calls getppid() as a start marker, releases
 * the workers, which each run OPS steps of: free a random one of 2000 slots,
 * allocate a new object of mixed size (bench_mixed_size) there and write it;
 * every 100th step also allocates, writes and frees a 1-8 MiB block. When all
 * have finished the main thread calls getppid() again as the end marker,
 * before the workers free their slots and exit (thread exit makes its own
 * madvise/munmap calls in libc, which are not the allocator's).
 *
 * The driver runs this under `strace -f -e trace=%memory,getppid` and counts
 * the memory calls between the two markers.
 *
 * Usage: bench_mapcalls THREADS OPS
 * Aborts if an object's contents changed. */
#include <pthread.h>

#include "bench_common.h"

#define SLOTS 2000

static pthread_barrier_t ready, go, done, leave;
static size_t ops;

static void *worker(void *arg)
{
    bench_rng r = {(uint64_t)(uintptr_t)arg};
    static __thread char *slot[SLOTS];
    static __thread size_t len[SLOTS];
    free(malloc(32));
    free(malloc(3000));
    free(malloc(300000));
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&go);
    for (size_t k = 0; k < ops; k++) {
        size_t i = bench_below(&r, SLOTS);
        if (slot[i]) {
            if (slot[i][0] != (char)i || slot[i][len[i] - 1] != (char)i)
                bench_die("object %p (%zu bytes) changed", (void *)slot[i], len[i]);
            free(slot[i]);
        }
        len[i] = bench_mixed_size(&r);
        slot[i] = malloc(len[i]);
        if (!slot[i])
            bench_die("malloc(%zu) returned NULL", len[i]);
        memset(slot[i], (char)i, len[i]);
        if (k % 100 == 99) {
            size_t n = bench_range(&r, MiB, 8 * MiB);
            char *big = malloc(n);
            if (!big)
                bench_die("malloc(%zu) returned NULL", n);
            for (size_t j = 0; j < n; j += 4096)
                big[j] = 1;
            free(big);
        }
    }
    pthread_barrier_wait(&done);
    pthread_barrier_wait(&leave);
    for (size_t i = 0; i < SLOTS; i++)
        free(slot[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_mapcalls THREADS OPS\n");
        return 2;
    }
    int nt = atoi(argv[1]);
    ops = (size_t)strtoull(argv[2], NULL, 10);
    if (nt < 1 || nt > 64) {
        fprintf(stderr, "bench_mapcalls: THREADS in 1..64\n");
        return 2;
    }
    pthread_barrier_init(&ready, NULL, (unsigned)nt + 1);
    pthread_barrier_init(&go, NULL, (unsigned)nt + 1);
    pthread_barrier_init(&done, NULL, (unsigned)nt + 1);
    pthread_barrier_init(&leave, NULL, (unsigned)nt + 1);
    pthread_t th[64];
    for (int i = 0; i < nt; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i + 1)) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    pthread_barrier_wait(&ready);
    uint64_t t = bench_now_ns();
    (void)getppid(); /* start marker */
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&done);
    (void)getppid(); /* end marker */
    t = bench_now_ns() - t;
    pthread_barrier_wait(&leave);
    for (int i = 0; i < nt; i++)
        pthread_join(th[i], NULL);
    bench_result("churn ops", (double)ops * nt, "count");
    bench_result("churn time (under strace)", (double)t / 1e9, "s");
    return 0;
}

/* Latency next to real-time work.
 *
 * A SCHED_FIFO thread (priority 50; SCHED_OTHER if that is not permitted,
 * reported as "sched_fifo 0") wakes every 1 ms on an absolute deadline,
 * touches a fresh page of a private mapping made up front (a page fault:
 * it needs the process's mmap lock for reading, which an allocator's
 * mmap/munmap takes for writing), and makes and frees one small allocation.
 * Meanwhile CHURN threads (SCHED_OTHER) allocate, touch and free large blocks
 * (64 KiB - 4 MiB) as fast as they can.
 *
 * Reports the RT thread's lateness (wake-up time minus deadline) at
 * p50/p99/p99.9/max, the worst single malloc and free in the RT thread, and
 * the worst in the churn threads.
 *
 * Usage: bench_latency SECONDS CHURN_THREADS [LATENESS_FILE]
 * LATENESS_FILE gets the sorted lateness samples in microseconds, one a line.
 * Aborts if a block's contents changed (a wrong result). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "bench_common.h"

#define MAX_TICKS 60000
#define CHURN_SLOTS 8

static uint64_t lateness[MAX_TICKS];
static unsigned n_ticks;
static char *pages;
static size_t page_size;
static uint64_t rt_worst_malloc, rt_worst_free;
static atomic_bool stop;

struct churn {
    pthread_t th;
    uint64_t seed;
    uint64_t ops;
    uint64_t worst_malloc, worst_free;
};

static void *churn_main(void *arg)
{
    struct churn *c = arg;
    bench_rng r = {c->seed};
    char *slot[CHURN_SLOTS] = {0};
    size_t len[CHURN_SLOTS] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        size_t i = bench_below(&r, CHURN_SLOTS);
        if (slot[i]) {
            if (slot[i][0] != (char)i || slot[i][len[i] - 1] != (char)i)
                bench_die("churn block %p (%zu bytes) changed", (void *)slot[i], len[i]);
            uint64_t t = bench_now_ns();
            free(slot[i]);
            t = bench_now_ns() - t;
            if (t > c->worst_free)
                c->worst_free = t;
        }
        /* 64 KiB .. 4 MiB, log-uniform. */
        size_t n = (size_t)64 * KiB << bench_below(&r, 7);
        n += bench_below(&r, n);
        uint64_t t = bench_now_ns();
        char *p = malloc(n);
        t = bench_now_ns() - t;
        if (!p)
            bench_die("malloc(%zu) returned NULL in a churn thread", n);
        if (t > c->worst_malloc)
            c->worst_malloc = t;
        for (size_t k = 0; k < n; k += page_size)
            p[k] = (char)i;
        p[n - 1] = (char)i;
        slot[i] = p;
        len[i] = n;
        c->ops++;
    }
    for (size_t i = 0; i < CHURN_SLOTS; i++)
        free(slot[i]);
    return NULL;
}

static void *rt_main(void *arg)
{
    (void)arg;
    bench_rng r = {7};
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (unsigned i = 0; i < n_ticks; i++) {
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
        uint64_t now = bench_now_ns();
        uint64_t due = (uint64_t)next.tv_sec * 1000000000ull + (uint64_t)next.tv_nsec;
        lateness[i] = now > due ? now - due : 0;

        pages[(size_t)i * page_size] = 1; /* a fresh page: a fault */
        size_t n = bench_range(&r, 16, 256);
        uint64_t t = bench_now_ns();
        unsigned char *p = malloc(n);
        t = bench_now_ns() - t;
        if (!p)
            bench_die("malloc(%zu) returned NULL in the RT thread", n);
        if (t > rt_worst_malloc)
            rt_worst_malloc = t;
        memset(p, 0xa5, n);
        if (p[0] != 0xa5 || p[n - 1] != 0xa5)
            bench_die("RT block changed");
        t = bench_now_ns();
        free(p);
        t = bench_now_ns() - t;
        if (t > rt_worst_free)
            rt_worst_free = t;
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double us_at(double q)
{
    size_t i = (size_t)(q * (double)(n_ticks - 1) + 0.5);
    return (double)lateness[i] / 1000.0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_latency SECONDS CHURN_THREADS [LATENESS_FILE]\n");
        return 2;
    }
    double secs = strtod(argv[1], NULL);
    int n_churn = atoi(argv[2]);
    const char *out = argc > 3 ? argv[3] : NULL;
    n_ticks = (unsigned)(secs * 1000.0);
    if (n_ticks < 10 || n_ticks > MAX_TICKS || n_churn < 0 || n_churn > 16) {
        fprintf(stderr, "bench_latency: SECONDS in 0.01..60, CHURN_THREADS in 0..16\n");
        return 2;
    }
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    pages = mmap(NULL, (size_t)n_ticks * page_size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (pages == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    free(malloc(1)); /* the allocator is initialised before the start */

    struct churn churn[16];
    memset(churn, 0, sizeof(churn));
    for (int i = 0; i < n_churn; i++) {
        churn[i].seed = 1000 + (uint64_t)i;
        if (pthread_create(&churn[i].th, NULL, churn_main, &churn[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    }
    if (n_churn > 0) {
        struct timespec warm = {0, 100 * 1000 * 1000};
        nanosleep(&warm, NULL);
    }

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
    pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
    struct sched_param sp = {.sched_priority = 50};
    pthread_attr_setschedparam(&attr, &sp);
    pthread_t rt;
    int fifo = 1;
    int err = pthread_create(&rt, &attr, rt_main, NULL);
    if (err != 0) {
        fprintf(stderr, "bench_latency: SCHED_FIFO not permitted (%s); measuring with SCHED_OTHER\n",
                strerror(err));
        fifo = 0;
        err = pthread_create(&rt, NULL, rt_main, NULL);
        if (err != 0) {
            fprintf(stderr, "pthread_create failed: %s\n", strerror(err));
            return 2;
        }
    }
    pthread_attr_destroy(&attr);
    pthread_join(rt, NULL);
    atomic_store(&stop, true);
    uint64_t ops = 0, cw_m = 0, cw_f = 0;
    for (int i = 0; i < n_churn; i++) {
        pthread_join(churn[i].th, NULL);
        ops += churn[i].ops;
        if (churn[i].worst_malloc > cw_m)
            cw_m = churn[i].worst_malloc;
        if (churn[i].worst_free > cw_f)
            cw_f = churn[i].worst_free;
    }

    qsort(lateness, n_ticks, sizeof(lateness[0]), cmp_u64);
    bench_result("sched_fifo", fifo, "bool");
    bench_result("lateness p50", us_at(0.5), "us");
    bench_result("lateness p99", us_at(0.99), "us");
    bench_result("lateness p99.9", us_at(0.999), "us");
    bench_result("lateness max", us_at(1.0), "us");
    bench_result("RT worst malloc", (double)rt_worst_malloc / 1000.0, "us");
    bench_result("RT worst free", (double)rt_worst_free / 1000.0, "us");
    if (n_churn > 0) {
        bench_result("churn worst malloc", (double)cw_m / 1000.0, "us");
        bench_result("churn worst free", (double)cw_f / 1000.0, "us");
        bench_result("churn ops/s", (double)ops / secs, "ops/s");
    }
    if (out) {
        FILE *f = fopen(out, "w");
        if (!f) {
            perror(out);
            return 2;
        }
        for (unsigned i = 0; i < n_ticks; i++)
            fprintf(f, "%.3f\n", (double)lateness[i] / 1000.0);
        fclose(f);
    }
    return 0;
}

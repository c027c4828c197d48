/* Latency next to real-time work.
 *
 * A SCHED_FIFO thread (priority 50; SCHED_OTHER if that is not permitted,
 * reported as "sched_fifo 0") wakes every 1 ms on an absolute deadline,
 * touches a fresh page of a private mapping made up front (a page fault:
 * it needs the process's mmap lock for reading, which an allocator's
 * mmap/munmap takes for writing), and makes and frees one small allocation.
 * CHURN threads (SCHED_OTHER) allocate, touch and free large blocks
 * (64 KiB - 4 MiB) as fast as they can, but only in every other window of
 * WINDOW_TICKS wake-ups: the windows between them are the quiet ones. The
 * RT thread drives the windows, so "quiet" and "churn" are measured in the
 * same process, 100 ms apart: on a shared VM the
 * host's hiccups move a tail percentile more than an allocator does, and
 * two separate runs compared the host's two moments. The first
 * SETTLE_TICKS of each window count in neither, nor do a quiet window's
 * ticks before every churn thread has stopped (a churn operation under
 * way when its window closes runs to its end). Work the churn left to the
 * allocator (a purge, a cache's decay) may still fall in a quiet window.
 *
 * Reports, as "quiet: ..." and "churn: ...", the RT thread's lateness
 * (wake-up time minus deadline) at p50/p99/p99.9/max and its worst single
 * malloc and free; then the worst malloc and free of the churn threads and
 * their throughput, both over the churn windows only (not the warm-up). With 0 churn threads every
 * window is quiet.
 *
 * Usage: bench_latency SECONDS CHURN_THREADS [LATENESS_PREFIX]
 * LATENESS_PREFIX-quiet.txt and -churn.txt get the sorted lateness samples
 * in microseconds, one a line. Aborts if a block's contents changed (a
 * wrong result). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "bench_common.h"

#define MAX_TICKS 60000
#define CHURN_SLOTS 8
#define WINDOW_TICKS 100 /* 100 ms quiet, 100 ms churn, ... */
#define SETTLE_TICKS 10

enum { QUIET, CHURN, PHASES };
static const char *const phase_name[PHASES] = {"quiet", "churn"};

/* Per phase: the lateness samples and the RT thread's worst calls. */
static struct phase {
    uint64_t lateness[MAX_TICKS];
    unsigned n;
    uint64_t worst_malloc, worst_free;
} phase[PHASES];

static unsigned n_ticks;
static int n_churn;
static char *pages;
static size_t page_size;
static atomic_bool stop;

/* The churn threads run while churn_on is set and wait on `gate` otherwise
 * (a condition variable: waiting allocates nothing). */
static atomic_bool churn_on = true;
static pthread_mutex_t gate_lock; /* priority inheritance: the RT thread takes it */
static pthread_cond_t gate = PTHREAD_COND_INITIALIZER;
static atomic_int parked;        /* churn threads waiting on `gate` */
static atomic_bool measuring;    /* set by the RT thread over its ticks */
static unsigned churn_ticks;     /* ticks in churn windows: the churn's time */

static void set_churn(bool on)
{
    pthread_mutex_lock(&gate_lock);
    atomic_store(&churn_on, on);
    pthread_cond_broadcast(&gate);
    pthread_mutex_unlock(&gate_lock);
}

static void wait_for_churn_window(void)
{
    pthread_mutex_lock(&gate_lock);
    atomic_fetch_add(&parked, 1);
    while (!atomic_load(&churn_on) && !atomic_load(&stop))
        pthread_cond_wait(&gate, &gate_lock);
    atomic_fetch_sub(&parked, 1);
    pthread_mutex_unlock(&gate_lock);
}

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
        if (!atomic_load_explicit(&churn_on, memory_order_relaxed)) {
            wait_for_churn_window();
            continue;
        }
        /* Counted over the RT thread's ticks only (not the warm-up). */
        bool count = atomic_load_explicit(&measuring, memory_order_relaxed);
        size_t i = bench_below(&r, CHURN_SLOTS);
        if (slot[i]) {
            if (slot[i][0] != (char)i || slot[i][len[i] - 1] != (char)i)
                bench_die("churn block %p (%zu bytes) changed", (void *)slot[i], len[i]);
            uint64_t t = bench_now_ns();
            free(slot[i]);
            t = bench_now_ns() - t;
            if (count && t > c->worst_free)
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
        if (count && t > c->worst_malloc)
            c->worst_malloc = t;
        for (size_t k = 0; k < n; k += page_size)
            p[k] = (char)i;
        p[n - 1] = (char)i;
        slot[i] = p;
        len[i] = n;
        c->ops += count;
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
    atomic_store(&measuring, true);
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
        uint64_t late = now > due ? now - due : 0;

        /* Windows alternate quiet, churn, quiet, ... (all quiet without
         * churn threads); a window's first ticks are left out. */
        int ph = n_churn > 0 && (i / WINDOW_TICKS) % 2 ? CHURN : QUIET;
        if (i % WINDOW_TICKS == 0 && n_churn > 0)
            set_churn(ph == CHURN);
        churn_ticks += ph == CHURN;
        bool settled = i % WINDOW_TICKS >= SETTLE_TICKS &&
                       (ph == CHURN || atomic_load(&parked) == n_churn);
        struct phase *f = settled ? &phase[ph] : NULL;
        if (f)
            f->lateness[f->n++] = late;

        pages[(size_t)i * page_size] = 1; /* a fresh page: a fault */
        size_t n = bench_range(&r, 16, 256);
        uint64_t t = bench_now_ns();
        unsigned char *p = malloc(n);
        t = bench_now_ns() - t;
        if (!p)
            bench_die("malloc(%zu) returned NULL in the RT thread", n);
        if (f && t > f->worst_malloc)
            f->worst_malloc = t;
        memset(p, 0xa5, n);
        if (p[0] != 0xa5 || p[n - 1] != 0xa5)
            bench_die("RT block changed");
        t = bench_now_ns();
        free(p);
        t = bench_now_ns() - t;
        if (f && t > f->worst_free)
            f->worst_free = t;
    }
    atomic_store(&measuring, false);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double us_at(const struct phase *f, double q)
{
    size_t i = (size_t)(q * (double)(f->n - 1) + 0.5);
    return (double)f->lateness[i] / 1000.0;
}

/* A RESULT line named "<phase>: <metric>". */
static void phase_result(int ph, const char *metric, double value, const char *unit)
{
    char name[96];
    snprintf(name, sizeof(name), "%s: %s", phase_name[ph], metric);
    bench_result(name, value, unit);
}

static int write_samples(const char *prefix, int ph)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s-%s.txt", prefix, phase_name[ph]);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return -1;
    }
    for (unsigned i = 0; i < phase[ph].n; i++)
        fprintf(f, "%.3f\n", (double)phase[ph].lateness[i] / 1000.0);
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_latency SECONDS CHURN_THREADS [LATENESS_PREFIX]\n");
        return 2;
    }
    double secs = strtod(argv[1], NULL);
    n_churn = atoi(argv[2]);
    const char *out = argc > 3 ? argv[3] : NULL;
    n_ticks = (unsigned)(secs * 1000.0);
    /* At least one window of each kind, each with samples after settling. */
    if (n_ticks < 2 * WINDOW_TICKS || n_ticks > MAX_TICKS || n_churn < 0 || n_churn > 16) {
        fprintf(stderr, "bench_latency: SECONDS in %.1f..%d, CHURN_THREADS in 0..16\n",
                2.0 * WINDOW_TICKS / 1000.0, MAX_TICKS / 1000);
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
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setprotocol(&ma, PTHREAD_PRIO_INHERIT);
    pthread_mutex_init(&gate_lock, &ma);
    pthread_mutexattr_destroy(&ma);

    struct churn churn[16];
    memset(churn, 0, sizeof(churn));
    for (int i = 0; i < n_churn; i++) {
        churn[i].seed = 1000 + (uint64_t)i;
        if (pthread_create(&churn[i].th, NULL, churn_main, &churn[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    }
    if (n_churn > 0) { /* the heap has churned before the first window */
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
    set_churn(false); /* wakes the waiting ones; they see `stop` */
    uint64_t ops = 0, cw_m = 0, cw_f = 0;
    for (int i = 0; i < n_churn; i++) {
        pthread_join(churn[i].th, NULL);
        ops += churn[i].ops;
        if (churn[i].worst_malloc > cw_m)
            cw_m = churn[i].worst_malloc;
        if (churn[i].worst_free > cw_f)
            cw_f = churn[i].worst_free;
    }

    bench_result("sched_fifo", fifo, "bool");
    for (int ph = 0; ph < PHASES; ph++) {
        struct phase *f = &phase[ph];
        if (!f->n)
            continue;
        qsort(f->lateness, f->n, sizeof(f->lateness[0]), cmp_u64);
        phase_result(ph, "lateness p50", us_at(f, 0.5), "us");
        phase_result(ph, "lateness p99", us_at(f, 0.99), "us");
        phase_result(ph, "lateness p99.9", us_at(f, 0.999), "us");
        phase_result(ph, "lateness max", us_at(f, 1.0), "us");
        phase_result(ph, "RT worst malloc", (double)f->worst_malloc / 1000.0, "us");
        phase_result(ph, "RT worst free", (double)f->worst_free / 1000.0, "us");
        if (out && write_samples(out, ph) != 0)
            return 2;
    }
    if (n_churn > 0) {
        phase_result(CHURN, "churn worst malloc", (double)cw_m / 1000.0, "us");
        phase_result(CHURN, "churn worst free", (double)cw_f / 1000.0, "us");
        /* Throughput over the churn windows. */
        phase_result(CHURN, "churn ops/s", (double)ops / ((double)churn_ticks / 1000.0), "ops/s");
    }
    return 0;
}

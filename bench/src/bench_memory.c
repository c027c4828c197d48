/* Memory benchmark: does RSS follow the live data?
 *
 * Allocates TOTAL MiB in mixed sizes (bench_mixed_size), writes every byte,
 * frees 90% of the objects in random order, and reports RSS against the live
 * bytes at once, after IDLE ms with no allocator call at all, and after one
 * more malloc/free pair ("poke": an allocator that purges on its next call
 * after a quiet period shows it here). Then frees everything and reports RSS
 * minus the starting RSS the same three ways. A sampler thread records RSS
 * every 10 ms (it never allocates) for the RSS-over-time plot.
 *
 * RSS is /proc/self/statm; "growth" is RSS minus the RSS measured just before
 * the first allocation (the pointer arrays are mmap'd and touched before).
 *
 * Usage: bench_memory TOTAL_MIB IDLE_MS [SAMPLES_FILE]
 *        bench_memory small COUNT
 * The second form, in a process of its own, allocates COUNT objects of
 * 16-256 B (the small end of the mix) and reports what each costs beyond
 * the bytes asked for (headers, rounding, slab tails, metadata: RSS growth
 * minus the bytes, per object) and, for gmalloc, its own metadata per
 * object (the "few bits" a small object may cost).
 * Prints RESULT lines; aborts if a surviving object was changed. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "anr_core.h"
#include "bench_common.h"

#define MAX_SAMPLES 20000
#define MAX_EVENTS 16

static struct {
    double t_ms;
    double rss_mib;
} samples[MAX_SAMPLES];
static atomic_int n_samples;
static atomic_bool stop;
static uint64_t t0;

static struct {
    double t_ms;
    const char *what;
} events[MAX_EVENTS];
static int n_events;

static double mib(size_t b) { return (double)b / (double)MiB; }

static void event(const char *what)
{
    if (n_events < MAX_EVENTS) {
        events[n_events].t_ms = (double)(bench_now_ns() - t0) / 1e6;
        events[n_events].what = what;
        n_events++;
    }
}

static void *sampler(void *arg)
{
    (void)arg;
    struct timespec tick = {0, 10 * 1000 * 1000};
    while (!atomic_load(&stop)) {
        int i = atomic_load(&n_samples);
        if (i >= MAX_SAMPLES)
            break;
        samples[i].t_ms = (double)(bench_now_ns() - t0) / 1e6;
        samples[i].rss_mib = mib(bench_rss());
        atomic_store(&n_samples, i + 1);
        nanosleep(&tick, NULL);
    }
    return NULL;
}

static void *map_array(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 0x5a, bytes);
    return p;
}

static void idle_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* One malloc/free pair, kept from being optimised away. */
static void poke(void)
{
    void *volatile p = malloc(32);
    free(p);
}

typedef int (*get_stats_fn)(anr_core_stats *);

/* gmalloc's own view of its heap, when it is the allocator. */
static get_stats_fn gmalloc_stats(void)
{
    return (get_stats_fn)dlsym(RTLD_DEFAULT, "gmalloc_get_stats");
}

/* Room for gmalloc's statistics, in case the struct grew since this was
 * built. */
typedef union stats_room {
    anr_core_stats s;
    char room[4096];
} stats_room;

/* gmalloc's statistics reader, with the first reading in *st0 (both
 * cleared first); NULL when gmalloc is not the allocator. */
static get_stats_fn first_stats(stats_room *st0, stats_room *st1)
{
    memset(st0, 0, sizeof(*st0));
    memset(st1, 0, sizeof(*st1));
    get_stats_fn get_stats = gmalloc_stats();
    return get_stats && get_stats(&st0->s) == 0 ? get_stats : NULL;
}

static int small_objects(size_t count)
{
    char **ptr = map_array(count * sizeof(*ptr));
    uint8_t *len = map_array(count);
    poke();
    stats_room st0, st1;
    get_stats_fn get_stats = first_stats(&st0, &st1);
    size_t start = bench_rss(), asked = 0;
    bench_rng r = {20240602};
    for (size_t i = 0; i < count; i++) {
        size_t n = bench_range(&r, 16, 256);
        ptr[i] = malloc(n);
        if (!ptr[i])
            bench_die("malloc(%zu) returned NULL after %zu objects", n, i);
        memset(ptr[i], (int)(i % 251) + 1, n);
        len[i] = (uint8_t)(n - 1);
        asked += n;
    }
    size_t end = bench_rss();
    bool have_st1 = get_stats && get_stats(&st1.s) == 0;
    for (size_t i = 0; i < count; i++) {
        char c = (char)(i % 251 + 1);
        if (ptr[i][0] != c || ptr[i][len[i]] != c)
            bench_die("small object %zu (%p) changed", i, (void *)ptr[i]);
        free(ptr[i]);
    }
    double growth = end > start ? (double)(end - start) : 0.0;
    bench_result("small objects (16-256 B): count", (double)count, "count");
    bench_result("small objects (16-256 B): overhead per object (RSS growth minus bytes asked)",
                 (growth - (double)asked) / (double)count, "B");
    if (have_st1 && st1.s.objects_in_use > st0.s.objects_in_use)
        bench_result("small objects (16-256 B): gmalloc metadata per object (gmalloc stats)",
                     8.0 * (double)(st1.s.metadata_bytes - st0.s.metadata_bytes) /
                         (double)(st1.s.objects_in_use - st0.s.objects_in_use),
                     "bit");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "small") == 0)
        return small_objects((size_t)strtoull(argv[2], NULL, 10));
    if (argc < 3) {
        fprintf(stderr, "usage: bench_memory TOTAL_MIB IDLE_MS [SAMPLES_FILE]\n"
                        "       bench_memory small COUNT\n");
        return 2;
    }
    size_t total_goal = (size_t)strtoull(argv[1], NULL, 10) * MiB;
    unsigned idle = (unsigned)strtoul(argv[2], NULL, 10);
    const char *samples_file = argc > 3 ? argv[3] : NULL;

    /* The objects average ~7 KiB; room for far more than needed. */
    size_t cap = total_goal / 1024 + 1024;
    char **ptr = map_array(cap * sizeof(*ptr));
    size_t *size = map_array(cap * sizeof(*size));
    size_t *order = map_array(cap * sizeof(*order));
    poke(); /* the allocator is initialised before the start */

    stats_room st0, st1;
    get_stats_fn get_stats = first_stats(&st0, &st1);

    t0 = bench_now_ns();
    pthread_t th;
    if (pthread_create(&th, NULL, sampler, NULL) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 2;
    }
    idle_ms(50);
    size_t start = bench_rss();
    event("start");

    bench_rng r = {20240601};
    size_t n = 0, total = 0;
    while (total < total_goal && n < cap) {
        size[n] = bench_mixed_size(&r);
        ptr[n] = malloc(size[n]);
        if (!ptr[n])
            bench_die("malloc(%zu) returned NULL after %zu objects", size[n], n);
        memset(ptr[n], (int)(n % 251) + 1, size[n]);
        total += size[n];
        n++;
    }
    size_t peak = bench_rss();
    event("allocated");

    if (get_stats && get_stats(&st1.s) == 0 && st1.s.objects_in_use > st0.s.objects_in_use) {
        bench_result("gmalloc metadata per object, all of it (gmalloc stats)",
                     8.0 * (double)st1.s.metadata_bytes / (double)st1.s.objects_in_use, "bit");
        bench_result("gmalloc metadata per object, added by these objects (gmalloc stats)",
                     8.0 * (double)(st1.s.metadata_bytes - st0.s.metadata_bytes) /
                         (double)(st1.s.objects_in_use - st0.s.objects_in_use),
                     "bit");
    }

    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = bench_below(&r, i + 1);
        size_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    size_t n_free = n - n / 10;
    for (size_t i = 0; i < n_free; i++) {
        free(ptr[order[i]]);
        ptr[order[i]] = NULL;
    }
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ptr[i])
            continue;
        live += size[i];
        char c = (char)(i % 251 + 1);
        if (ptr[i][0] != c || ptr[i][size[i] / 2] != c || ptr[i][size[i] - 1] != c)
            bench_die("object %zu (%p, %zu bytes) changed", i, (void *)ptr[i], size[i]);
    }
    size_t now = bench_rss();
    event("freed 90%");
    idle_ms(idle);
    size_t idled = bench_rss();
    poke();
    size_t poked = bench_rss();
    event("idle + poke");

    for (size_t i = 0; i < n; i++)
        free(ptr[i]);
    size_t end = bench_rss();
    event("freed all");
    /* What gmalloc still holds of it: free pages not yet handed back, and
     * free blocks in thread caches. */
    anr_core_stats st2;
    bool have_st2 = get_stats && get_stats(&st2) == 0;
    idle_ms(idle);
    size_t end_idle = bench_rss();
    poke();
    size_t end_poke = bench_rss();
    event("idle + poke");
    /* A background purger acts on what that call did within a tick. */
    idle_ms(100);
    size_t end_later = bench_rss();
    atomic_store(&stop, true);
    pthread_join(th, NULL);

    double g = (double)live;
#define GROWTH(x) ((double)((x) > start ? (x) - start : 0))
    bench_result("allocated", mib(total), "MiB");
    bench_result("objects", (double)n, "count");
    bench_result("live after freeing 90%", mib(live), "MiB");
    bench_result("peak RSS growth / allocated", GROWTH(peak) / (double)total, "x");
    bench_result("peak overhead per object", (GROWTH(peak) - (double)total) / (double)n, "B");
    bench_result("RSS growth / live, at once", GROWTH(now) / g, "x");
    bench_result("RSS growth / live, after idle", GROWTH(idled) / g, "x");
    bench_result("RSS growth / live, after idle + 1 call", GROWTH(poked) / g, "x");
    bench_result("RSS above start, all freed, at once", mib(end) - mib(start), "MiB");
    bench_result("RSS above start, all freed, after idle", mib(end_idle) - mib(start), "MiB");
    bench_result("RSS above start, all freed, after idle + 1 call", mib(end_poke) - mib(start), "MiB");
    bench_result("RSS above start, all freed, 100 ms after that call", mib(end_later) - mib(start),
                 "MiB");
    if (have_st2) {
        bench_result("gmalloc dirty free pages, all freed, at once (gmalloc stats)",
                     mib(st2.pages_dirty * st2.page_size), "MiB");
        bench_result("gmalloc thread-cache bytes, all freed, at once (gmalloc stats)",
                     mib(st2.bytes_cached), "MiB");
        bench_result("gmalloc metadata, all freed, at once (gmalloc stats)",
                     mib(st2.metadata_bytes), "MiB");
        bench_result("gmalloc pages in use, all freed, at once (gmalloc stats)",
                     mib(st2.pages_in_use * st2.page_size), "MiB");
    }

    if (samples_file) {
        FILE *f = fopen(samples_file, "w");
        if (!f) {
            perror(samples_file);
            return 2;
        }
        for (int i = 0; i < n_events; i++)
            fprintf(f, "# event %.1f %s\n", events[i].t_ms, events[i].what);
        fprintf(f, "# t_ms rss_mib (start RSS %.1f MiB)\n", mib(start));
        int k = atomic_load(&n_samples);
        for (int i = 0; i < k; i++)
            fprintf(f, "%.1f %.2f\n", samples[i].t_ms, samples[i].rss_mib);
        fclose(f);
    }
    munmap(ptr, cap * sizeof(*ptr));
    munmap(size, cap * sizeof(*size));
    munmap(order, cap * sizeof(*order));
    return 0;
}

/* Real-time flatness: does the worst single malloc/free grow with the heap?
 *
 * The live heap grows in mixed sizes (bench_mixed_size) from 1 MiB to
 * MAX_MIB, doubling. At each size, OPS steps each free one random live object
 * and allocate one new object of a random size (so the heap keeps its size
 * and fragments), and every single malloc and free is timed. Reports, per
 * heap size, the worst and the 99.9th percentile malloc and free.
 *
 * The measuring thread asks for SCHED_FIFO (reported as "sched_fifo"), so
 * that being preempted by other work shows less in the worst case; on a
 * shared machine the worst case still carries some scheduler and interrupt
 * noise: compare allocators within one run, and the shape over heap sizes.
 *
 * Usage: bench_flat MAX_MIB OPS
 * Aborts if an object's contents changed. */
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include "bench_common.h"

#define MAX_OPS 100000

static uint64_t t_malloc[MAX_OPS], t_free[MAX_OPS];

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
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

static size_t page_size;

/* Writes a tag on the first byte, on every page and on the last byte. */
static void fill(char *p, size_t n, char tag)
{
    for (size_t k = 0; k < n; k += page_size)
        p[k] = tag;
    p[n - 1] = tag;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_flat MAX_MIB OPS\n");
        return 2;
    }
    size_t max_mib = (size_t)strtoull(argv[1], NULL, 10);
    size_t ops = (size_t)strtoull(argv[2], NULL, 10);
    if (max_mib < 1 || ops < 1 || ops > MAX_OPS) {
        fprintf(stderr, "bench_flat: MAX_MIB >= 1, OPS in 1..%d\n", MAX_OPS);
        return 2;
    }
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    struct sched_param sp = {.sched_priority = 40};
    int fifo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
    if (!fifo)
        fprintf(stderr, "bench_flat: SCHED_FIFO not permitted; measuring with SCHED_OTHER\n");
    bench_result("sched_fifo", fifo, "bool");

    size_t cap = max_mib * MiB / 1024 + 4096;
    char **ptr = map_array(cap * sizeof(*ptr));
    size_t *len = map_array(cap * sizeof(*len));
    bench_rng r = {99};
    size_t n = 0, live = 0;
    free(malloc(1));

    for (size_t level = 1; level <= max_mib; level *= 2) {
        while (live < level * MiB) {
            if (n == cap)
                bench_die("pointer array full");
            len[n] = bench_mixed_size(&r);
            ptr[n] = malloc(len[n]);
            if (!ptr[n])
                bench_die("malloc(%zu) returned NULL", len[n]);
            fill(ptr[n], len[n], (char)n);
            live += len[n];
            n++;
        }
        for (size_t k = 0; k < ops; k++) {
            size_t i = bench_below(&r, n);
            char *p = ptr[i];
            if (p[0] != p[len[i] - 1])
                bench_die("object %p (%zu bytes) changed", (void *)p, len[i]);
            uint64_t t = bench_now_ns();
            free(p);
            t_free[k] = bench_now_ns() - t;
            live -= len[i];
            len[i] = bench_mixed_size(&r);
            t = bench_now_ns();
            p = malloc(len[i]);
            t_malloc[k] = bench_now_ns() - t;
            if (!p)
                bench_die("malloc(%zu) returned NULL", len[i]);
            fill(p, len[i], (char)k);
            ptr[i] = p;
            live += len[i];
        }
        qsort(t_malloc, ops, sizeof(uint64_t), cmp_u64);
        qsort(t_free, ops, sizeof(uint64_t), cmp_u64);
        size_t q = (size_t)(0.999 * (double)(ops - 1) + 0.5);
        char name[96];
        snprintf(name, sizeof(name), "worst malloc @ %zu MiB", level);
        bench_result(name, (double)t_malloc[ops - 1] / 1000.0, "us");
        snprintf(name, sizeof(name), "worst free @ %zu MiB", level);
        bench_result(name, (double)t_free[ops - 1] / 1000.0, "us");
        snprintf(name, sizeof(name), "p99.9 malloc @ %zu MiB", level);
        bench_result(name, (double)t_malloc[q] / 1000.0, "us");
        snprintf(name, sizeof(name), "p99.9 free @ %zu MiB", level);
        bench_result(name, (double)t_free[q] / 1000.0, "us");
        fflush(stdout);
    }
    for (size_t i = 0; i < n; i++)
        free(ptr[i]);
    return 0;
}

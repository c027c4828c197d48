/* Helpers shared by the workload benchmarks: a fixed-seed RNG, a monotonic
 * clock, RSS read without allocating, and a way to fail loudly.
 *
 * Nothing here calls malloc: the workloads measure the allocator, not
 * themselves. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* splitmix64: small, fast, fixed seed, same sequence on every allocator. */
typedef struct {
    uint64_t s;
} bench_rng;

static inline uint64_t bench_next(bench_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static inline size_t bench_below(bench_rng *r, size_t n)
{
    return (size_t)(bench_next(r) % n);
}

/* Uniform in [lo, hi]. */
static inline size_t bench_range(bench_rng *r, size_t lo, size_t hi)
{
    return lo + bench_below(r, hi - lo + 1);
}

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Resident set size in bytes, from /proc/self/statm (second field), read
 * with raw open/read into a stack buffer; 0 if it cannot be read. */
static inline size_t bench_rss(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = buf;
    while (*p && *p != ' ')
        p++;
    unsigned long long pages = strtoull(p, NULL, 10);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* A wrong result: print why and abort, so the driver sees a crash. */
__attribute__((noreturn, format(printf, 1, 2))) static inline void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: WRONG RESULT: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

/* Result lines on stdout, one per figure: "metric<TAB>value<TAB>unit". The
 * driver turns them into the raw records of the result file. */
static inline void bench_result(const char *metric, double value, const char *unit)
{
    printf("RESULT\t%s\t%.6g\t%s\n", metric, value, unit);
}

/* Size of the next object in the "mixed sizes" pattern (as in
 * tests/drop_in/test_rss.c): 60% 16-256 B, 25% 257 B-4 KiB,
 * 12% 4-32 KiB, 3% 32-256 KiB. */
static inline size_t bench_mixed_size(bench_rng *r)
{
    size_t c = bench_below(r, 100);
    if (c < 60)
        return bench_range(r, 16, 256);
    if (c < 85)
        return bench_range(r, 257, 4 * KiB);
    if (c < 97)
        return bench_range(r, 4 * KiB + 1, 32 * KiB);
    return bench_range(r, 32 * KiB + 1, 256 * KiB);
}

#endif

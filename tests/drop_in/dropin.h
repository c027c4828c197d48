/* Helpers shared by the drop-in tests (tests/drop_in/test_*.c).
 *
 * The tests are ordinary C programs using the standard allocation API. Built
 * with DROPIN_GMALLOC they are linked with libgmalloc.so (which then serves
 * malloc for the whole process) and may use include/gmalloc.h; built without
 * it they run on plain glibc, as a reference.
 *
 * Nothing here allocates: /proc is read with open/read into stack buffers.
 */
#ifndef DROPIN_H
#define DROPIN_H

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#ifdef DROPIN_GMALLOC
#include <gmalloc.h>
#define DR_GMALLOC 1
#else
#define DR_GMALLOC 0
#endif

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* Hides a value from the optimiser (so that malloc(SIZE_MAX) or a double free
 * is neither folded nor diagnosed at compile time). */
static inline size_t dr_opaque(size_t v)
{
    __asm__ volatile("" : "+r"(v));
    return v;
}

static inline void *dr_launder(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

/* splitmix64 */
static inline uint64_t dr_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct dr_rng {
    uint64_t s;
} dr_rng;

static inline uint64_t dr_next(dr_rng *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    return dr_mix(r->s);
}

/* Uniform in [0, n) (n > 0; the modulo bias does not matter here). */
static inline size_t dr_below(dr_rng *r, size_t n) { return (size_t)(dr_next(r) % n); }

/* Uniform in [lo, hi]. */
static inline size_t dr_range(dr_rng *r, size_t lo, size_t hi)
{
    return lo + dr_below(r, hi - lo + 1);
}

static inline uint64_t dr_key(const void *p, size_t size, uint64_t seed)
{
    return dr_mix((uint64_t)(uintptr_t)p ^ dr_mix(size ^ (seed << 1)));
}

/* Fills n bytes at p with a pattern derived from key. */
static inline void dr_fill(void *p, size_t n, uint64_t key)
{
    unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = dr_mix(key + i);
        memcpy(b + i, &w, 8);
    }
    if (i < n) {
        uint64_t w = dr_mix(key + i);
        memcpy(b + i, &w, n - i);
    }
}

/* Returns the offset of the first byte that differs from dr_fill's pattern,
 * or SIZE_MAX if all n bytes match. */
static inline size_t dr_check(const void *p, size_t n, uint64_t key)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i < n; i += 8) {
        uint64_t w = dr_mix(key + i);
        size_t len = n - i < 8 ? n - i : 8;
        if (memcmp(b + i, &w, len) != 0) {
            const unsigned char *e = (const unsigned char *)&w;
            for (size_t j = 0; j < len; j++)
                if (b[i + j] != e[j])
                    return i + j;
        }
    }
    return SIZE_MAX;
}

/* Reads a small file into buf (NUL-terminated); returns the length or -1. */
static inline ssize_t dr_read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* The process's resident set in bytes, from /proc/self/smaps_rollup (0 if
 * it cannot be read). */
static inline size_t dr_rss(void)
{
    char buf[4096];
    if (dr_read_file("/proc/self/smaps_rollup", buf, sizeof(buf)) <= 0)
        return 0;
    const char *p = strstr(buf, "\nRss:");
    if (!p)
        return 0;
    p += 5;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t kb = 0;
    while (*p >= '0' && *p <= '9')
        kb = kb * 10 + (size_t)(*p++ - '0');
    return kb * 1024;
}

static inline size_t dr_page(void) { return (size_t)sysconf(_SC_PAGESIZE); }

#endif

/* Promise 2: freed memory goes back to the kernel, so RSS follows the live
 * data, not the peak.
 *
 * ~300 MB in mixed sizes (16 B .. 256 KiB, most small, fixed seed) are
 * allocated and written; 90% of the objects are freed in random order. Then
 *     RSS - start RSS <= 2 * live bytes + the page ceiling
 * (the ceiling: free-but-dirty pages the allocator may keep, 1024 pages by
 * default or GMALLOC_PAGE_CEILING). After the rest is freed, RSS must be
 * within the ceiling + the engine's own metadata (its page map, 64 bytes per
 * page ever used: ~5 MiB here) + 1 MiB of the start: the dirty pages may sit
 * anywhere between 0 and the ceiling then, depending on when the last purge
 * round and the quiet-time purge ran. RSS is Rss from /proc/self/smaps_rollup. The
 * pointer arrays are allocated and touched before the start measurement.
 *
 * Usage: test_rss [reference-binary]. The glibc build of this file prints the
 * same figures without asserting; given its path, the gmalloc build runs it
 * afterwards for comparison. Exit status: 0 pass, 1 fail. */
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dropin.h"

#define TOTAL (300 * MiB)
#define CAP 400000

static size_t rss_size(dr_rng *r)
{
    size_t c = dr_below(r, 100);
    if (c < 60)
        return dr_range(r, 16, 256);
    if (c < 85)
        return dr_range(r, 257, 4 * KiB);
    if (c < 97)
        return dr_range(r, 4 * KiB + 1, 32 * KiB);
    return dr_range(r, 32 * KiB + 1, 256 * KiB);
}

static double mib(size_t b) { return (double)b / (double)MiB; }

static size_t page_ceiling_pages(void)
{
    const char *e = getenv("GMALLOC_PAGE_CEILING");
    if (e && *e) {
        char *end;
        unsigned long long v = strtoull(e, &end, 10);
        if (*end == '\0' && v > 0)
            return (size_t)v;
    }
    return 1024;
}

/* The engine's metadata now (0 for the glibc build). */
static size_t engine_metadata(void)
{
#ifdef DROPIN_GMALLOC
    anr_core_stats s;
    gmalloc_get_stats(&s);
    return s.metadata_bytes;
#else
    return 0; /* the glibc reference, which is not asserted */
#endif
}

static void print_engine(const char *when)
{
#ifdef DROPIN_GMALLOC
    anr_core_stats s;
    gmalloc_get_stats(&s);
    printf("  [%s] engine: bytes in use %.1f MiB in %zu objects, pages in use %.1f MiB, dirty "
           "%.1f MiB, metadata %.1f MiB, high water %.1f MiB, purged %.1f MiB in %llu madvise "
           "calls\n",
           when, mib(s.bytes_in_use), s.objects_in_use, mib(s.pages_in_use * s.page_size),
           mib(s.pages_dirty * s.page_size), mib(s.metadata_bytes),
           mib(s.pages_high_water * s.page_size), mib((size_t)s.pages_purged * s.page_size),
           (unsigned long long)s.madvise_calls);
#else
    (void)when;
#endif
}

static int run_reference(const char *path)
{
    printf("\n---- the same pattern on the reference build (%s) ----\n", path);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char *argv[] = {(char *)path, NULL};
        execv(path, argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return st;
}

int main(int argc, char **argv)
{
    const char *who = DR_GMALLOC ? "gmalloc" : "glibc (reference, not asserted)";
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t pg = dr_page();

    /* Everything the measurement needs exists before the start. */
    char **ptr = malloc(CAP * sizeof(*ptr));
    size_t *size = malloc(CAP * sizeof(*size));
    size_t *order = malloc(CAP * sizeof(*order));
    if (!ptr || !size || !order) {
        printf("FAIL: cannot allocate the arrays\n");
        return 1;
    }
    /* Make them resident now. (Not with zeros: the compiler turns malloc +
     * memset(0) into calloc, which need not touch fresh pages.) */
    memset(ptr, 0x5a, CAP * sizeof(*ptr));
    memset(size, 0x5a, CAP * sizeof(*size));
    memset(order, 0x5a, CAP * sizeof(*order));
    printf("RSS test on %s\n", who);

    size_t start = dr_rss();
    if (start == 0) {
        printf("FAIL: cannot read /proc/self/smaps_rollup\n");
        return 1;
    }

    dr_rng r = {20240601};
    size_t n = 0, total = 0;
    while (total < TOTAL && n < CAP) {
        size[n] = rss_size(&r);
        ptr[n] = malloc(size[n]);
        if (!ptr[n]) {
            printf("FAIL: malloc(%zu) returned NULL after %zu objects\n", size[n], n);
            return 1;
        }
        memset(ptr[n], (int)(n % 251) + 1, size[n]);
        total += size[n];
        n++;
    }
    size_t peak = dr_rss();
    printf("allocated %zu objects, %.1f MiB; RSS start %.1f MiB, after allocating %.1f MiB\n", n,
           mib(total), mib(start), mib(peak));
    print_engine("peak");

    /* Free 90% of the objects in random order. */
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = dr_below(&r, i + 1);
        size_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    size_t n_free = n - n / 10;
    for (size_t i = 0; i < n_free; i++) {
        size_t k = order[i];
        free(ptr[k]);
        ptr[k] = NULL;
    }
    size_t live = 0, live_n = 0;
    for (size_t i = 0; i < n; i++)
        if (ptr[i]) {
            live += size[i];
            live_n++;
        }
    /* The survivors are intact. */
    for (size_t i = 0; i < n; i++)
        if (ptr[i] && (ptr[i][0] != (char)(i % 251 + 1) || ptr[i][size[i] - 1] != (char)(i % 251 + 1))) {
            printf("FAIL: object %zu (%p, %zu bytes) changed\n", i, (void *)ptr[i], size[i]);
            return 1;
        }
    size_t after = dr_rss();
    size_t grown = after > start ? after - start : 0;
    size_t ceiling = page_ceiling_pages() * pg;
    size_t bound = 2 * live + ceiling;
    printf("freed 90%%: %zu objects live, %.1f MiB live; RSS %.1f MiB, %.1f MiB above the start\n",
           live_n, mib(live), mib(after), mib(grown));
    printf("  RSS growth / live = %.2f; bound 2 * live + ceiling (%.1f MiB) = %.1f MiB; peak growth "
           "/ live = %.2f\n",
           (double)grown / (double)live, mib(ceiling), mib(bound),
           (double)(peak - start) / (double)live);
    print_engine("90% freed");

    bool ok = true;
    if (grown > bound) {
        printf("%s: RSS growth %.1f MiB > bound %.1f MiB\n", DR_GMALLOC ? "FAIL" : "over the bound",
               mib(grown), mib(bound));
        ok = false;
    }

    for (size_t i = 0; i < n; i++)
        free(ptr[i]);
    size_t end = dr_rss();
    printf("freed all: RSS %.1f MiB (start %.1f MiB, difference %+.1f MiB)\n", mib(end), mib(start),
           mib(end) - mib(start));
    print_engine("all freed");
    size_t allowed = ceiling + engine_metadata() + MiB;
    if (end > start + allowed) {
        printf("%s: RSS stays %.1f MiB above the start (allowed: the ceiling + metadata + 1 MiB = "
               "%.1f MiB)\n",
               DR_GMALLOC ? "FAIL" : "over the bound", mib(end - start), mib(allowed));
        ok = false;
    }
    malloc_trim(0);
    printf("after malloc_trim(0): RSS %.1f MiB (not asserted)\n", mib(dr_rss()));
    print_engine("trimmed");
    free(ptr);
    free(size);
    free(order);

    if (argc > 1) {
        int st = run_reference(argv[1]);
        printf("---- reference exit status %d ----\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    if (!DR_GMALLOC)
        return 0; /* figures only */
    printf("%s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}

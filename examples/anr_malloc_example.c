/* A subsystem with its own heap and budget: a cache that gives memory back
 * when the heap runs short, a "memory full" report, the debug kit, and a
 * garbage collection that finds a block nobody owns.
 *
 *   ./anr_malloc_example          (prints what happens; exits 0)
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "anr_malloc.h"

#define CACHE_SLOTS 64

/* A cache of 16 KiB buffers that it can drop at any time. */
static void *cache[CACHE_SLOTS];

static size_t drop_cache(void *ctx, anr_mheap *heap, size_t size)
{
    (void)ctx;
    size_t freed = 0;
    for (int i = 0; i < CACHE_SLOTS && freed < size; i++) {
        if (cache[i]) {
            freed += anr_heap_usable_size(heap, cache[i]);
            anr_heap_free(heap, cache[i]);
            cache[i] = NULL;
        }
    }
    printf("  need more memory (%zu bytes): cache dropped %zu bytes\n", size, freed);
    return freed;
}

static void full(void *ctx, anr_mheap *heap, size_t size, size_t limit, size_t use)
{
    (void)ctx;
    printf("  heap '%s' full: %zu bytes wanted, limit %zu, in use %zu\n", anr_heap_name(heap),
           size, limit, use);
}

/* The GC asks each subsystem for the blocks it still owns. */
static void mark_cache(void *ctx, anr_mheap *heap)
{
    (void)ctx;
    (void)heap;
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (cache[i])
            anr_mark(cache[i]);
}

int main(void)
{
    anr_options o;
    anr_default_options(&o);
    o.name = "example";
    o.mapping_size = (size_t)64 << 20;
    o.limit = (size_t)1 << 20; /* a 1 MiB budget */
    o.debug = ANR_DEBUG_STACKS | ANR_DEBUG_GUARDS | ANR_DEBUG_FDR;
    anr_mheap *h = anr_heap_create(&o);
    if (!h) {
        perror("anr_heap_create");
        return 1;
    }
    anr_heap_add_more_memory(h, drop_cache, NULL);
    anr_heap_set_memory_full(h, full, NULL);
    anr_heap_add_marker(h, mark_cache, NULL);

    printf("filling the cache\n");
    int filled = 0;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        cache[i] = anr_heap_malloc_if_available(h, 16 << 10); /* never calls the callbacks */
        if (!cache[i])
            break;
        filled++;
    }
    printf("  %d buffers of 16 KiB before the budget ran out\n", filled);

    printf("allocating 256 KiB for real work\n");
    char *work = anr_heap_malloc(h, 256 << 10);
    printf("  %s\n", work ? "got it (the cache gave memory back)" : "failed");
    anr_set_debug_info(work, 0xC0FFEE);

    printf("asking for 4 MiB, more than the budget\n");
    void *big = anr_heap_malloc(h, 4 << 20);
    printf("  %s\n", big ? "got it?!" : "NULL, as expected");

    printf("collecting garbage: 'work' is owned by no marker\n");
    anr_report_sink sink = {STDOUT_FILENO, false};
    anr_gc_result r;
    fflush(stdout);
    anr_heap_gc(h, ANR_GC_REPORT | ANR_GC_FREE, anr_leak_report, &sink, &r);
    printf("  %zu live, %zu marked, %zu garbage (%zu bytes) freed\n", r.live, r.marked, r.garbage,
           r.garbage_bytes);

    const char *bad = anr_heap_verify(h);
    printf("verify: %s\n", bad ? bad : "sound");

    anr_fdr_entry last[4];
    size_t n = anr_fdr_read(h, last, 4);
    printf("last %zu operations:\n", n);
    for (size_t i = 0; i < n; i++)
        printf("  #%llu %s %p (%zu bytes)\n", (unsigned long long)last[i].seq,
               anr_fdr_op_name(last[i].op), (void *)last[i].ptr, last[i].size);

    anr_heap_stats s;
    anr_heap_get_stats(h, &s);
    printf("stats: %zu objects, %zu bytes in use, %llu callback calls, %llu full\n",
           s.objects_in_use, s.bytes_in_use, (unsigned long long)s.more_memory_calls,
           (unsigned long long)s.memory_full_calls);
    anr_heap_destroy(h);
    return 0;
}

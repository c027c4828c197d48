/* A program using anr_malloc, run under memcheck by test_valgrind:
 *   clean     every API call, debug kit on: memcheck must find nothing
 *   uaf       reads a block after anr_heap_free: "Invalid read"
 *   leak      loses a 48-byte block: "definitely lost"
 *   overrun   writes one byte past a guarded block: "Invalid write" */
#include <stdio.h>
#include <string.h>

#include "anr_malloc.h"

static anr_mheap *heap;

__attribute__((noinline)) static void *leak_here(void)
{
    char *p = anr_heap_malloc(heap, 48);
    memset(p, 1, 48);
    return NULL; /* the only reference is dropped */
}

static void clean(void)
{
    anr_heap_set_debug(heap, ANR_DEBUG_ALL);
    char *a = anr_heap_malloc(heap, 100);
    memset(a, 'a', 100);
    char *b = anr_heap_calloc(heap, 10, 10);
    if (b[50] != 0)
        printf("calloc not zero\n");
    a = anr_heap_realloc(heap, a, 70000);
    memset(a + 100, 'b', 69900);
    char *c = anr_heap_memalign(heap, 4096, 5000);
    memset(c, 'c', anr_heap_usable_size(heap, c));
    anr_set_debug_info(c, 7);
    const char *bad = anr_heap_verify(heap);
    if (bad)
        printf("verify: %s\n", bad);
    anr_gc_result r;
    anr_heap_gc(heap, 0, NULL, NULL, &r);
    anr_fdr_entry e[8];
    anr_fdr_read(heap, e, 8);
    anr_heap_free(heap, a);
    anr_heap_free(heap, b);
    anr_heap_free(heap, c);
    anr_heap_set_debug(heap, 0);
    for (int i = 0; i < 1000; i++) {
        char *p = anr_heap_malloc(heap, (size_t)(i % 300) + 1);
        p[0] = 1;
        anr_heap_free(heap, p);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "clean";
    anr_options o;
    anr_default_options(&o);
    o.name = "victim";
    o.mapping_size = (size_t)64 << 20;
    o.debug_records = 1024;
    o.fdr_entries = 64;
    heap = anr_heap_create(&o);
    if (!heap)
        return 2;
    if (!strcmp(mode, "uaf")) {
        volatile char *p = anr_heap_malloc(heap, 32);
        p[0] = 'x';
        anr_heap_free(heap, (void *)p);
        printf("read after free: %d\n", p[5]);
    } else if (!strcmp(mode, "leak")) {
        leak_here();
        char *q = anr_heap_malloc(heap, 16); /* reuses registers and stack */
        anr_heap_free(heap, q);
    } else if (!strcmp(mode, "overrun")) {
        anr_heap_set_debug(heap, ANR_DEBUG_GUARDS);
        volatile char *p = anr_heap_malloc(heap, 40);
        p[40] = 1;
        anr_heap_set_fault_handler(heap, NULL, NULL);
        /* no free: the guard report would abort; memcheck has spoken */
    } else {
        clean();
    }
    /* The heap is not destroyed: memcheck's leak check runs at exit. */
    return 0;
}

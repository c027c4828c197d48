/* Shared helpers for the anr_malloc tests: a small heap per test (so they
 * also fit a 32-bit address space) and a fault handler that records instead
 * of aborting. */
#ifndef AM_TEST_H
#define AM_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "anr_malloc.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

typedef struct fault_log {
    int calls;
    anr_fault fault;
    const void *ptr;
    char op[32];
    char detail[256];
    size_t size;
    unsigned nframes;
    const void *frame0;
    char text[4096]; /* anr_fault_format() of the last fault */
} fault_log;

static inline void record_fault(void *ctx, const anr_fault_info *info)
{
    fault_log *l = ctx;
    l->calls++;
    l->fault = info->fault;
    l->ptr = info->ptr;
    snprintf(l->op, sizeof(l->op), "%s", info->op ? info->op : "");
    snprintf(l->detail, sizeof(l->detail), "%s", info->detail ? info->detail : "");
    l->size = info->size;
    l->nframes = info->nframes;
    l->frame0 = info->nframes ? info->stack[0] : NULL;
    anr_fault_format(info, l->text, sizeof(l->text));
}

/* A heap of `limit` bytes (0 = none) in a 64 MiB mapping, faults recorded in *log. */
static inline anr_mheap *small_heap(size_t limit, unsigned debug, fault_log *log)
{
    anr_options o;
    anr_default_options(&o);
    o.name = "test";
    o.mapping_size = 64 * MiB;
    o.limit = limit;
    o.debug = debug;
    o.debug_records = 4096;
    o.fdr_entries = 64;
    anr_mheap *h = anr_heap_create(&o);
    assert_non_null(h);
    if (log) {
        memset(log, 0, sizeof(*log));
        anr_heap_set_fault_handler(h, record_fault, log);
    }
    return h;
}

/* Keeps the compiler from seeing through a pointer or size. */
static inline void *opaque(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

#endif

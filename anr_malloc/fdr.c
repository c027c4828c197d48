/* The flight data recorder: a ring of the last N operations, written
 * lock-free (a seqlock per slot: 0 while being written, then the operation's
 * number), read oldest first. Pointers are stored bit-inverted so that
 * memcheck's leak checker does not count the ring as a reference. */
#include <time.h>

#include "internal.h"

void _am_fdr_add(anr_mheap *h, unsigned op, const void *p, const void *old, size_t size,
                 uintptr_t caller)
{
    if (!h->fdr || !(atomic_load_explicit(&h->debug, memory_order_relaxed) & ANR_DEBUG_FDR))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t seq = atomic_fetch_add(&h->fdr_seq, 1) + 1;
    _am_fdr_slot *s = &h->fdr[(seq - 1) % h->fdr_cap];
    _am_vg_defined(h, s, sizeof(*s));
    atomic_store_explicit(&s->seq, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    s->e.seq = seq;
    s->e.time_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    s->e.ptr = ~(uintptr_t)p;
    s->e.old_ptr = ~(uintptr_t)old;
    s->e.size = size;
    s->e.caller = caller;
    s->e.tid = _am_tid();
    s->e.op = op;
    atomic_store_explicit(&s->seq, seq, memory_order_release);
    _am_vg_noaccess(h, s, sizeof(*s));
}

size_t anr_fdr_read(anr_mheap *h, anr_fdr_entry *out, size_t max)
{
    if (!h->fdr || max == 0)
        return 0;
    uint64_t last = atomic_load(&h->fdr_seq);
    if (last == 0)
        return 0;
    uint64_t first = last > h->fdr_cap ? last - h->fdr_cap + 1 : 1;
    if (last - first + 1 > max)
        first = last - max + 1;
    size_t n = 0;
    for (uint64_t seq = first; seq <= last; seq++) {
        _am_fdr_slot *s = &h->fdr[(seq - 1) % h->fdr_cap];
        _am_vg_defined(h, s, sizeof(*s));
        uint64_t s1 = atomic_load_explicit(&s->seq, memory_order_acquire);
        anr_fdr_entry e = s->e;
        atomic_thread_fence(memory_order_acquire);
        uint64_t s2 = atomic_load_explicit(&s->seq, memory_order_relaxed);
        _am_vg_noaccess(h, s, sizeof(*s));
        if (s1 != seq || s2 != seq)
            continue; /* being written, or already overwritten by a newer operation */
        e.ptr = ~e.ptr;
        e.old_ptr = ~e.old_ptr;
        out[n++] = e;
    }
    return n;
}

size_t anr_fdr_capacity(const anr_mheap *h) { return h->fdr ? h->fdr_cap : 0; }

const char *anr_fdr_op_name(unsigned op)
{
    static const char *const names[] = {"?",        "malloc", "calloc",  "realloc",
                                        "memalign", "free",   "gc-free", "bad-pointer"};
    return op < sizeof(names) / sizeof(names[0]) ? names[op] : "?";
}

/* The debug kit's per-block part: the record pool, the granule table, guard
 * bytes, trash fill, client debug data, anr_check() and anr_heap_verify();
 * and the run-time switches (anr_heap_set_debug, anr_debug_parse). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* --- the record pool (dlock held) --- */

_am_rec *_am_rec_open(anr_mheap *h, uint32_t ri)
{
    _am_rec *r = (_am_rec *)(h->recs + (size_t)ri * h->rec_size);
    _am_vg_defined(h, r, h->rec_size);
    return r;
}

void _am_rec_close(anr_mheap *h, _am_rec *r) { _am_vg_noaccess(h, r, h->rec_size); }

uint32_t _am_rec_take(anr_mheap *h)
{
    uint32_t ri = h->rec_free;
    if (ri) {
        _am_rec *r = _am_rec_open(h, ri);
        h->rec_free = r->next_free;
        r->flags = 0;
        _am_rec_close(h, r);
        return ri;
    }
    if (h->rec_hwm > h->rec_cap)
        return 0;
    return h->rec_hwm++;
}

void _am_rec_give(anr_mheap *h, uint32_t ri)
{
    _am_rec *r = _am_rec_open(h, ri);
    r->flags = 0;
    r->next_free = h->rec_free;
    _am_rec_close(h, r);
    h->rec_free = ri;
}

/* --- the granule table --- */

static inline uint32_t tab_load(const anr_mheap *h, size_t gi)
{
    return atomic_load_explicit(&h->table[gi], memory_order_acquire);
}

void _am_tab_set_ri(anr_mheap *h, size_t gi, uint32_t ri)
{
    uint32_t old = tab_load(h, gi);
    while (!atomic_compare_exchange_weak(&h->table[gi], &old, (old & ~_AM_RI_MASK) | ri))
        ;
}

void _am_tab_clear_ri(anr_mheap *h, size_t gi, uint32_t ri)
{
    uint32_t old = tab_load(h, gi);
    while ((old & _AM_RI_MASK) == ri &&
           !atomic_compare_exchange_weak(&h->table[gi], &old, old & ~_AM_RI_MASK))
        ;
}

void _am_tab_set_epoch(anr_mheap *h, size_t gi, uint32_t epoch)
{
    uint32_t old = tab_load(h, gi);
    if ((old >> _AM_EPOCH_SHIFT) == epoch)
        return; /* also keeps untouched table pages untouched */
    while (!atomic_compare_exchange_weak(&h->table[gi], &old,
                                         (old & _AM_RI_MASK) | (epoch << _AM_EPOCH_SHIFT)))
        ;
}

uint32_t _am_rec_find(anr_mheap *h, const void *p)
{
    if (!h->has_side || !_am_in_span(h, p))
        return 0;
    uint32_t ri = tab_load(h, _am_gi(h, p)) & _AM_RI_MASK;
    if (!ri || ri >= h->rec_hwm)
        return 0;
    _am_rec *r = _am_rec_open(h, ri);
    bool ok = (r->flags & _AM_REC_LIVE) && h->span + r->block_off + r->front == (uintptr_t)p;
    _am_rec_close(h, r);
    return ok ? ri : 0;
}

uint32_t _am_rec_find_block(anr_mheap *h, const void *b)
{
    if (!h->has_side || !_am_in_span(h, b))
        return 0;
    uint32_t ri = tab_load(h, _am_gi(h, b)) & _AM_RI_MASK;
    if (!ri || ri >= h->rec_hwm)
        return 0;
    _am_rec *r = _am_rec_open(h, ri);
    bool ok = (r->flags & (_AM_REC_LIVE | _AM_REC_DYING)) && h->span + r->block_off == (uintptr_t)b;
    _am_rec_close(h, r);
    return ok ? ri : 0;
}

/* --- guards and trash --- */

void _am_fill(void *p, size_t n, uint32_t pattern)
{
    uint8_t *b = p;
    uint8_t pat[4] = {(uint8_t)pattern, (uint8_t)(pattern >> 8), (uint8_t)(pattern >> 16),
                      (uint8_t)(pattern >> 24)};
    for (size_t i = 0; i < n; i++)
        b[i] = pat[i & 3];
}

void _am_write_guards(anr_mheap *h, uint8_t *block, size_t front, uint8_t *end)
{
    _am_vg_undefined(h, block, front);
    _am_vg_undefined(h, end, ANR_GUARD_SIZE);
    memset(block, ANR_GUARD_BYTE, front);
    memset(end, ANR_GUARD_BYTE, ANR_GUARD_SIZE);
    /* Under memcheck the guards are out of bounds: an overrun is caught as it happens. */
    _am_vg_noaccess(h, block, front);
    _am_vg_noaccess(h, end, ANR_GUARD_SIZE);
}

bool _am_guards_ok(anr_mheap *h, const _am_rec *r, char *detail, size_t cap)
{
    const uint8_t *b = (const uint8_t *)(h->span + r->block_off);
    const uint8_t *end = b + r->front + r->size;
    _am_vg_defined(h, b, r->front);
    _am_vg_defined(h, end, ANR_GUARD_SIZE);
    size_t under = 0, over = 0; /* 1-based distance of the nearest damaged byte; 0 = none */
    for (size_t i = r->front; i-- > 0 && !under;)
        if (b[i] != ANR_GUARD_BYTE)
            under = r->front - i;
    for (size_t i = 0; i < ANR_GUARD_SIZE && !over; i++)
        if (end[i] != ANR_GUARD_BYTE)
            over = i + 1;
    _am_vg_noaccess(h, b, r->front);
    _am_vg_noaccess(h, end, ANR_GUARD_SIZE);
    if (over)
        snprintf(detail, cap,
                 "overrun: guard after the block overwritten at byte %zu (offset +%zu of a "
                 "%zu-byte block)",
                 over - 1, r->size + over - 1, r->size);
    else if (under)
        snprintf(detail, cap,
                 "underrun: guard before the block overwritten at offset -%zu of a %zu-byte block",
                 under, r->size);
    return !over && !under;
}

/* --- switches --- */

unsigned anr_heap_get_debug(const anr_mheap *h)
{
    return atomic_load(&((anr_mheap *)h)->debug) | (h->vg ? ANR_DEBUG_VALGRIND : 0);
}

unsigned anr_heap_set_debug(anr_mheap *h, unsigned flags)
{
    unsigned want = h->has_side ? (flags & ANR_DEBUG_ALL) : 0;
    unsigned old = atomic_exchange(&h->debug, want);
    return old | (h->vg ? ANR_DEBUG_VALGRIND : 0);
}

void anr_heap_set_stack_depth(anr_mheap *h, unsigned depth)
{
    if (depth < 1)
        depth = 1;
    if (depth > h->max_depth)
        depth = h->max_depth;
    atomic_store(&h->stack_depth, depth);
}

static bool word_is(const char *w, size_t n, const char *name)
{
    return strlen(name) == n && memcmp(w, name, n) == 0;
}

int anr_debug_parse(const char *spec, anr_debug_config *out, const char **bad)
{
    memset(out, 0, sizeof(*out));
    const char *s = spec ? spec : "";
    while (*s) {
        while (*s == ',' || *s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        const char *w = s;
        while (*s && *s != ',' && *s != ' ' && *s != '\t' && *s != '=')
            s++;
        size_t n = (size_t)(s - w);
        unsigned long num = 0;
        bool has_num = false;
        if (*s == '=') {
            char *e;
            errno = 0;
            num = strtoul(s + 1, &e, 10);
            if (e == s + 1 || errno || (*e && *e != ',' && *e != ' ' && *e != '\t')) {
                if (bad)
                    *bad = w;
                return -1;
            }
            has_num = true;
            s = e;
        }
        if (word_is(w, n, "fdr")) {
            out->flags |= ANR_DEBUG_FDR;
            if (has_num)
                out->fdr_entries = num;
        } else if (word_is(w, n, "stacks")) {
            out->flags |= ANR_DEBUG_STACKS;
            if (has_num) {
                if (num < 1 || num > ANR_MAX_STACK_DEPTH) {
                    if (bad)
                        *bad = w;
                    return -1;
                }
                out->stack_depth = (unsigned)num;
            }
        } else if (!has_num && word_is(w, n, "guards")) {
            out->flags |= ANR_DEBUG_GUARDS;
        } else if (!has_num && word_is(w, n, "trash")) {
            out->flags |= ANR_DEBUG_TRASH_FREE;
        } else if (!has_num && word_is(w, n, "trash-alloc")) {
            out->flags |= ANR_DEBUG_TRASH_ALLOC;
        } else if (!has_num && word_is(w, n, "valgrind")) {
            out->flags |= ANR_DEBUG_VALGRIND;
        } else if (!has_num && word_is(w, n, "all")) {
            out->flags |= ANR_DEBUG_ALL;
        } else if (!has_num && word_is(w, n, "none")) {
            out->flags = 0;
        } else {
            if (bad)
                *bad = w;
            return -1;
        }
    }
    return 0;
}

/* --- client debug data --- */

static anr_mheap *debug_heap(const void *p, int *err)
{
    anr_mheap *h = _am_heap_of(p);
    *err = !h ? EINVAL : !h->has_side ? ENOTSUP : 0;
    return h;
}

int anr_set_debug_info(void *p, uintptr_t value)
{
    int err;
    anr_mheap *h = debug_heap(p, &err);
    if (err)
        return err;
    pthread_mutex_lock(&h->dlock);
    uint32_t ri = _am_rec_find(h, p);
    if (!ri) {
        /* An unrecorded block: give it a record (lock order dlock -> engine). */
        size_t usable = 0;
        if (!_am_in_span(h, p) || anr_core_check(h->core, p) != ANR_ERR_NONE ||
            (usable = anr_core_usable_size(h->core, p)) == 0) {
            err = EINVAL;
        } else if (!(ri = _am_rec_take(h))) {
            err = ENOSPC;
        } else {
            _am_rec *r = _am_rec_open(h, ri);
            memset(r, 0, sizeof(*r));
            r->flags = _AM_REC_LIVE;
            r->tid = 0;
            r->block_off = (uintptr_t)p - h->span;
            r->size = usable;
            _am_rec_close(h, r);
            _am_tab_set_ri(h, _am_gi(h, p), ri);
            atomic_fetch_add(&h->live_records, 1);
        }
    }
    if (ri) {
        _am_rec *r = _am_rec_open(h, ri);
        r->info = value;
        r->flags |= _AM_REC_INFO;
        _am_rec_close(h, r);
    }
    pthread_mutex_unlock(&h->dlock);
    return err;
}

int anr_get_debug_info(const void *p, uintptr_t *value)
{
    int err;
    anr_mheap *h = debug_heap(p, &err);
    if (err)
        return ENOENT;
    err = ENOENT;
    pthread_mutex_lock(&h->dlock);
    uint32_t ri = _am_rec_find(h, p);
    if (ri) {
        _am_rec *r = _am_rec_open(h, ri);
        if (r->flags & _AM_REC_INFO) {
            *value = r->info;
            err = 0;
        }
        _am_rec_close(h, r);
    }
    pthread_mutex_unlock(&h->dlock);
    return err;
}

/* --- checks --- */

int anr_check(const void *p)
{
    anr_mheap *h = _am_heap_of(p);
    if (!h) {
        _am_fault(NULL, ANR_FAULT_FOREIGN, "check", p, "the pointer lies in no anr_malloc heap", 0,
                  NULL, 0);
        return ANR_FAULT_FOREIGN;
    }
    char detail[160];
    uintptr_t frames[ANR_MAX_STACK_DEPTH];
    unsigned nframes = 0;
    size_t size = 0;
    bool found = false, bad = false;
    if (h->has_side) {
        pthread_mutex_lock(&h->dlock);
        uint32_t ri = _am_rec_find(h, p);
        if (ri) {
            _am_rec *r = _am_rec_open(h, ri);
            found = true;
            if ((r->flags & _AM_REC_GUARDED) && !_am_guards_ok(h, r, detail, sizeof(detail))) {
                bad = true;
                size = r->size;
                nframes = r->nframes;
                memcpy(frames, r->frames, nframes * sizeof(frames[0]));
            }
            _am_rec_close(h, r);
        }
        pthread_mutex_unlock(&h->dlock);
    }
    if (bad) {
        _am_fault(h, ANR_FAULT_GUARD, "check", p, detail, size, frames, nframes);
        return ANR_FAULT_GUARD;
    }
    if (!found) {
        anr_error e = anr_core_check(h->core, p);
        if (e != ANR_ERR_NONE) {
            anr_fault f = e == ANR_ERR_DOUBLE_FREE ? ANR_FAULT_DOUBLE_FREE : ANR_FAULT_NOT_AN_OBJECT;
            _am_fault(h, f, "check", p, NULL, 0, NULL, 0);
            return f;
        }
    }
    return 0;
}

const char *anr_heap_verify(anr_mheap *h) { return _am_verify(h, true); }

const char *_am_verify(anr_mheap *h, bool report)
{
    const char *bad = anr_core_verify(h->core);
    if (bad) {
        snprintf(h->verify_msg, sizeof(h->verify_msg), "engine: %s", bad);
        if (report)
            _am_fault(h, ANR_FAULT_CORRUPT, "verify", NULL, h->verify_msg, 0, NULL, 0);
        return h->verify_msg;
    }
    if (!h->has_side)
        return NULL;

    char detail[160] = "";
    uintptr_t frames[ANR_MAX_STACK_DEPTH];
    unsigned nframes = 0;
    size_t size = 0, live = 0;
    const void *where = NULL;
    anr_fault fault = ANR_FAULT_CORRUPT;
    pthread_mutex_lock(&h->dlock);
    for (uint32_t ri = 1; ri < h->rec_hwm && !where; ri++) {
        _am_rec *r = _am_rec_open(h, ri);
        if (r->flags & _AM_REC_LIVE) {
            live++;
            uint8_t *b = (uint8_t *)(h->span + r->block_off);
            uint8_t *u = b + r->front;
            if (!_am_in_span(h, b) || (tab_load(h, _am_gi(h, u)) & _AM_RI_MASK) != ri ||
                (r->front && (tab_load(h, _am_gi(h, b)) & _AM_RI_MASK) != ri)) {
                where = u;
                snprintf(detail, sizeof(detail), "debug record %u is not in the granule table", ri);
            } else if (anr_core_check(h->core, b) != ANR_ERR_NONE) {
                where = u;
                snprintf(detail, sizeof(detail), "debug record %u names a block that is not live",
                         ri);
            } else if ((r->flags & _AM_REC_GUARDED) && !_am_guards_ok(h, r, detail, sizeof(detail))) {
                where = u;
                fault = ANR_FAULT_GUARD;
            }
            if (where) {
                size = r->size;
                nframes = r->nframes;
                memcpy(frames, r->frames, nframes * sizeof(frames[0]));
            }
        }
        _am_rec_close(h, r);
    }
    if (!where && live != atomic_load(&h->live_records)) {
        snprintf(detail, sizeof(detail), "%zu live debug records, %zu counted", live,
                 (size_t)atomic_load(&h->live_records));
        where = h;
    }
    pthread_mutex_unlock(&h->dlock);
    if (!where)
        return NULL;
    snprintf(h->verify_msg, sizeof(h->verify_msg), "%p: %s", where, detail);
    if (report)
        _am_fault(h, fault, "verify", where, detail, size, frames, nframes);
    return h->verify_msg;
}

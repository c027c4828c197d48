/* Heaps: creation (the engine mapping plus one side mapping), the registry
 * that routes a pointer to its heap, the default heap, callbacks, limits,
 * statistics and fault dispatch. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_DEPTH 16u
#define DEFAULT_FDR 4096u
#define DEFAULT_RECORDS (sizeof(void *) >= 8 ? ((size_t)1 << 20) : ((size_t)1 << 16))

/* Every heap, so that anr_free(p) finds p's heap. A slot holds RESERVED
 * while its heap is being built. */
static _Atomic(anr_mheap *) registry[ANR_MAX_HEAPS];
#define RESERVED ((anr_mheap *)1)

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static anr_mheap *default_heap;

static pthread_mutex_t foreign_lock = PTHREAD_MUTEX_INITIALIZER;
static _am_cb foreign_handler;

/* Which more-memory callbacks this thread is inside (a list on its stack):
 * an allocation made from a callback of heap H does not call H's callbacks. */
typedef struct cb_frame {
    anr_mheap *heap;
    struct cb_frame *up;
} cb_frame;
static __thread cb_frame *tls_cb __attribute__((tls_model("initial-exec")));

static size_t page_round(size_t n, size_t page) { return (n + page - 1) & ~(page - 1); }

void anr_default_options(anr_options *o)
{
    memset(o, 0, sizeof(*o));
    o->retry_rounds = 4;
    o->stack_depth = DEFAULT_DEPTH;
    o->fdr_entries = DEFAULT_FDR;
    o->debug_records = DEFAULT_RECORDS;
}

/* --- engine hooks --- */

static anr_mheap *hook_heap(void *ctx)
{
    anr_mheap *h = atomic_load((_Atomic(anr_mheap *) *)ctx);
    return h == RESERVED ? NULL : h;
}

static bool in_frame(const anr_mheap *h)
{
    for (cb_frame *f = tls_cb; f; f = f->up)
        if (f->heap == h)
            return true;
    return false;
}

/* One round of the heap's callbacks; the caller has pushed the frame. */
static size_t run_more_memory(anr_mheap *h, size_t size)
{
    _am_cb cbs[ANR_MAX_CALLBACKS];
    unsigned n;
    _am_copy_cbs(h, h->more, &h->n_more, cbs, &n);
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t freed = ((anr_more_memory_fn)cbs[i].fn)(cbs[i].ctx, h, size);
        atomic_fetch_add(&h->more_calls, 1);
        atomic_fetch_add(&h->more_freed, freed);
        total += freed;
    }
    return total;
}

size_t _am_more_memory_chain(anr_mheap *h, size_t size)
{
    if (in_frame(h))
        return 0;
    cb_frame frame = {h, tls_cb};
    tls_cb = &frame;
    size_t total = run_more_memory(h, size);
    tls_cb = frame.up;
    return total;
}

static bool hook_more_memory(void *ctx, anr_heap *core, size_t size)
{
    (void)core;
    anr_mheap *h = hook_heap(ctx);
    if (!h || in_frame(h))
        return false; /* re-entered from one of our own callbacks */
    cb_frame frame = {h, tls_cb};
    tls_cb = &frame;
    /* Membroker quota is the first link (quota.c says why), then the callbacks. */
    bool more = _am_quota_more(h, size) || run_more_memory(h, size) > 0;
    tls_cb = frame.up;
    return more;
}

static void hook_error(void *ctx, anr_error err, anr_op op, const void *p)
{
    anr_mheap *h = hook_heap(ctx);
    anr_fault f = ANR_FAULT_NOT_AN_OBJECT;
    switch (err) {
    case ANR_ERR_DOUBLE_FREE:
        f = ANR_FAULT_DOUBLE_FREE;
        break;
    case ANR_ERR_FOREIGN:
        f = ANR_FAULT_FOREIGN;
        break;
    case ANR_ERR_DEFERRED_LIST:
        f = ANR_FAULT_FREE_LIST;
        break;
    default:
        break;
    }
    const char *name = op == ANR_OP_FREE ? "free" : op == ANR_OP_REALLOC ? "realloc" : "usable_size";
    if (h && op != ANR_OP_USABLE_SIZE)
        _am_fdr_add(h, ANR_FDR_BAD, p, NULL, 0, 0);
    _am_fault(h, f, name, p, NULL, 0, NULL, 0);
}

/* --- creation --- */

static int registry_reserve(void)
{
    for (unsigned i = 0; i < ANR_MAX_HEAPS; i++) {
        anr_mheap *expect = NULL;
        if (atomic_compare_exchange_strong(&registry[i], &expect, RESERVED))
            return (int)i;
    }
    return -1;
}

static void *side_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static int lock_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT);
    int rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

/* adopt: an engine heap made by another front end (libgmalloc.so's), given
 * side tables and a registry slot; its hooks stay the front end's. */
static anr_mheap *create(const anr_options *opts, bool is_default, anr_heap *adopt)
{
    anr_options def;
    if (!opts) {
        anr_default_options(&def);
        opts = &def;
    }
    unsigned depth = opts->stack_depth ? opts->stack_depth : DEFAULT_DEPTH;
    size_t fdr_cap = opts->fdr_entries ? opts->fdr_entries : DEFAULT_FDR;
    size_t rec_cap = opts->debug_records ? opts->debug_records : DEFAULT_RECORDS;
    if (depth > ANR_MAX_STACK_DEPTH || rec_cap > _AM_MAX_RECORDS ||
        (opts->debug & ~(ANR_DEBUG_ALL | ANR_DEBUG_VALGRIND)) ||
        fdr_cap > ((size_t)1 << 28)) {
        errno = EINVAL;
        return NULL;
    }
    int slot = registry_reserve();
    if (slot < 0) {
        errno = EMFILE;
        return NULL;
    }

    anr_core_options co;
    anr_core_default_options(&co);
    co.mapping_size = opts->mapping_size;
    co.limit = opts->limit;
    if (opts->page_ceiling) {
        co.page_ceiling = opts->page_ceiling;
        co.page_floor = anr_core_default_floor(opts->page_ceiling);
    }
    if (opts->page_floor) /* also with the default ceiling; above it: EINVAL */
        co.page_floor = opts->page_floor;
    co.slab_sizes = opts->slab_sizes;
    co.n_slab_sizes = opts->n_slab_sizes;
    co.more_memory_rounds = opts->retry_rounds;
    co.hooks.more_memory = hook_more_memory;
    co.hooks.on_error = hook_error;
    co.hooks.ctx = (void *)&registry[slot];
    anr_heap *core = adopt;
    int rc = adopt ? 0 : anr_core_init(&core, &co);
    if (rc != 0) {
        atomic_store(&registry[slot], NULL);
        errno = rc;
        return NULL;
    }

    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t span;
    size_t span_len;
    anr_core_data_span(core, &span, &span_len);
    size_t gran = anr_core_alignment();
    bool debug = !opts->no_debug;
    size_t rec_size = (sizeof(_am_rec) + depth * sizeof(uintptr_t) + 7) & ~(size_t)7;

    size_t off_fdr = page_round(sizeof(anr_mheap), page);
    size_t off_recs = off_fdr + (debug ? page_round(fdr_cap * sizeof(_am_fdr_slot), page) : 0);
    size_t off_tab = off_recs + (debug ? page_round((rec_cap + 1) * rec_size, page) : 0);
    size_t total = off_tab + (debug ? page_round((span_len / gran) * sizeof(uint32_t), page) : 0);
    uint8_t *side = side_map(total);
    if (!side) {
        if (!adopt)
            anr_core_destroy(core);
        atomic_store(&registry[slot], NULL);
        errno = ENOMEM;
        return NULL;
    }

    anr_mheap *h = (anr_mheap *)side;
    h->core = core;
    snprintf(h->name, sizeof(h->name), "%s", opts->name ? opts->name : (is_default ? "default" : "anr"));
    h->span = span;
    h->span_len = span_len;
    h->gran = gran;
    h->gshift = (unsigned)__builtin_ctzl((unsigned long)gran);
    h->side = side;
    h->side_size = total;
    h->has_side = debug;
    h->abort_on_full = opts->abort_on_full;
    h->is_default = is_default;
    h->slot = slot;
    h->vg = (opts->debug & ANR_DEBUG_VALGRIND) || _am_vg_running();
    unsigned flags = debug ? (opts->debug & ANR_DEBUG_ALL) : 0;
    atomic_init(&h->debug, flags);
    h->max_depth = depth;
    atomic_init(&h->stack_depth, depth);
    lock_init(&h->cb_lock);
    lock_init(&h->dlock);
    lock_init(&h->gc_lock);
    pthread_rwlock_init(&h->gc_gate, NULL); /* readers first: a callback may allocate again */
    if (debug) {
        h->fdr = (_am_fdr_slot *)(side + off_fdr);
        h->fdr_cap = fdr_cap;
        h->recs = side + off_recs;
        h->rec_size = rec_size;
        h->rec_cap = (uint32_t)rec_cap;
        h->rec_hwm = 1; /* index 0 means "no record" */
        h->table = (_Atomic uint32_t *)(side + off_tab);
        /* Metadata is out of bounds for the program: memcheck flags a stray access. */
        _am_vg_noaccess(h, side + off_fdr, off_tab - off_fdr);
    }
    atomic_init(&h->epoch, 0);
    if (!adopt)
        _am_quota_init(h, opts); /* may move the limit to the quota held */
    if (h->vg) {
        /* The engine's heap struct (and ours) hold the address where data
         * starts: memcheck would take it for a reference to whatever block
         * is first there. Park a block there that memcheck never sees. */
        anr_core_alloc(core, 1, 0, ANR_ALLOC_NO_HOOKS);
    }
    atomic_store(&registry[slot], h);
    return h;
}

anr_mheap *anr_heap_create(const anr_options *opts) { return create(opts, false, NULL); }

/* An adopted heap cannot be destroyed (is_default). */
anr_mheap *_am_heap_adopt(anr_heap *core, const anr_options *opts)
{
    return create(opts, true, core);
}

/* Held shared by the debug socket while it reads heaps: destroy waits. */
static pthread_rwlock_t registry_hold = PTHREAD_RWLOCK_INITIALIZER;

void _am_registry_hold(bool on)
{
    if (on)
        pthread_rwlock_rdlock(&registry_hold);
    else
        pthread_rwlock_unlock(&registry_hold);
}

anr_mheap *_am_heap_at(unsigned i)
{
    anr_mheap *h = i < ANR_MAX_HEAPS ? atomic_load_explicit(&registry[i], memory_order_acquire)
                                     : NULL;
    return h == RESERVED ? NULL : h;
}

void anr_heap_destroy(anr_mheap *h)
{
    if (!h || h->is_default)
        return;
    pthread_rwlock_wrlock(&registry_hold);
    atomic_store(&registry[h->slot], NULL);
    _am_quota_fini(h);
    anr_core_destroy(h->core);
    pthread_mutex_destroy(&h->cb_lock);
    pthread_mutex_destroy(&h->dlock);
    pthread_mutex_destroy(&h->gc_lock);
    pthread_rwlock_destroy(&h->gc_gate);
    _am_vg_defined(h, h->side, h->side_size);
    munmap(h->side, h->side_size);
    pthread_rwlock_unlock(&registry_hold);
}

static void default_create(void)
{
    anr_options o;
    anr_default_options(&o);
    int saved = errno;
    default_heap = create(&o, true, NULL);
    if (!default_heap) {
        /* Side tables are address space only, but strict overcommit charges
         * them: a heap without the debug kit is better than none. */
        o.no_debug = true;
        default_heap = create(&o, true, NULL);
    }
    errno = saved;
}

anr_mheap *anr_default_heap(void)
{
    pthread_once(&default_once, default_create);
    return default_heap;
}

anr_mheap *_am_default(void) { return anr_default_heap(); }

anr_mheap *_am_heap_of(const void *p)
{
    anr_mheap *d = default_heap;
    if (d && anr_core_owns(d->core, p))
        return d;
    for (unsigned i = 0; i < ANR_MAX_HEAPS; i++) {
        anr_mheap *h = atomic_load_explicit(&registry[i], memory_order_acquire);
        if (h && h != RESERVED && anr_core_owns(h->core, p))
            return h;
    }
    return NULL;
}

anr_mheap *anr_heap_of(const void *p) { return _am_heap_of(p); }

const char *anr_heap_name(const anr_mheap *h) { return h->name; }

/* --- callbacks --- */

void _am_copy_cbs(anr_mheap *h, const _am_cb *src, const unsigned *n, _am_cb *dst,
                  unsigned *nout)
{
    pthread_mutex_lock(&h->cb_lock);
    memcpy(dst, src, *n * sizeof(*dst));
    *nout = *n;
    pthread_mutex_unlock(&h->cb_lock);
}

static int cb_add(anr_mheap *h, _am_cb *arr, unsigned *n, void (*fn)(void), void *ctx)
{
    int rc = 0;
    pthread_mutex_lock(&h->cb_lock);
    if (*n >= ANR_MAX_CALLBACKS)
        rc = ENOSPC;
    else
        arr[(*n)++] = (_am_cb){fn, ctx};
    pthread_mutex_unlock(&h->cb_lock);
    return rc;
}

static int cb_remove(anr_mheap *h, _am_cb *arr, unsigned *n, void (*fn)(void), void *ctx)
{
    int rc = ENOENT;
    pthread_mutex_lock(&h->cb_lock);
    for (unsigned i = 0; i < *n; i++) {
        if (arr[i].fn == fn && arr[i].ctx == ctx) {
            memmove(&arr[i], &arr[i + 1], (*n - i - 1) * sizeof(*arr));
            (*n)--;
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&h->cb_lock);
    return rc;
}

int anr_heap_add_more_memory(anr_mheap *h, anr_more_memory_fn fn, void *ctx)
{
    return cb_add(h, h->more, &h->n_more, (void (*)(void))fn, ctx);
}

int anr_heap_remove_more_memory(anr_mheap *h, anr_more_memory_fn fn, void *ctx)
{
    return cb_remove(h, h->more, &h->n_more, (void (*)(void))fn, ctx);
}

int anr_heap_add_marker(anr_mheap *h, anr_marker_fn fn, void *ctx)
{
    return cb_add(h, h->markers, &h->n_markers, (void (*)(void))fn, ctx);
}

int anr_heap_remove_marker(anr_mheap *h, anr_marker_fn fn, void *ctx)
{
    return cb_remove(h, h->markers, &h->n_markers, (void (*)(void))fn, ctx);
}

void anr_heap_set_memory_full(anr_mheap *h, anr_memory_full_fn fn, void *ctx)
{
    pthread_mutex_lock(&h->cb_lock);
    h->full = (_am_cb){(void (*)(void))fn, ctx};
    pthread_mutex_unlock(&h->cb_lock);
}

void anr_heap_set_fault_handler(anr_mheap *h, anr_fault_fn fn, void *ctx)
{
    pthread_mutex_lock(&h->cb_lock);
    h->fault = (_am_cb){(void (*)(void))fn, ctx};
    pthread_mutex_unlock(&h->cb_lock);
}

void anr_set_foreign_fault_handler(anr_fault_fn fn, void *ctx)
{
    pthread_mutex_lock(&foreign_lock);
    foreign_handler = (_am_cb){(void (*)(void))fn, ctx};
    pthread_mutex_unlock(&foreign_lock);
}

void _am_fault(anr_mheap *h, anr_fault f, const char *op, const void *p, const char *detail,
               size_t size, const uintptr_t *stack, unsigned nframes)
{
    _am_cb cb;
    if (h) {
        atomic_fetch_add(&h->faults, 1);
        pthread_mutex_lock(&h->cb_lock);
        cb = h->fault;
        pthread_mutex_unlock(&h->cb_lock);
    } else {
        pthread_mutex_lock(&foreign_lock);
        cb = foreign_handler;
        pthread_mutex_unlock(&foreign_lock);
    }
    const void *frames[ANR_MAX_STACK_DEPTH];
    if (nframes > ANR_MAX_STACK_DEPTH)
        nframes = ANR_MAX_STACK_DEPTH;
    for (unsigned i = 0; i < nframes; i++)
        frames[i] = (const void *)stack[i];
    anr_fault_info info = {f, op, p, h, detail, size, nframes ? frames : NULL, nframes};
    if (cb.fn)
        ((anr_fault_fn)cb.fn)(cb.ctx, &info);
    else
        anr_fault_default(NULL, &info);
}

void _am_alloc_failed(anr_mheap *h, size_t size, bool hooks)
{
    if (hooks) {
        anr_core_stats s;
        anr_core_get_stats(h->core, &s);
        size_t use = (s.pages_in_use + s.pages_dirty) * s.page_size;
        _am_cb cb;
        pthread_mutex_lock(&h->cb_lock);
        cb = h->full;
        pthread_mutex_unlock(&h->cb_lock);
        if (cb.fn) {
            atomic_fetch_add(&h->full_calls, 1);
            ((anr_memory_full_fn)cb.fn)(cb.ctx, h, size, s.limit, use);
        }
        if (h->abort_on_full) {
            char msg[256];
            int n = snprintf(msg, sizeof(msg),
                             "anr_malloc: heap '%s': out of memory allocating %zu bytes "
                             "(limit %zu, in use %zu)\n",
                             h->name, size, s.limit, use);
            if (n > 0 && write(2, msg, (size_t)n) < 0)
                n = 0;
            abort();
        }
    }
    errno = ENOMEM;
}

/* --- limits and statistics --- */

void anr_heap_set_limit(anr_mheap *h, size_t limit) { anr_core_set_limit(h->core, limit); }

static size_t current_limit(anr_mheap *h, size_t *page, size_t *mapping)
{
    anr_core_stats s;
    anr_core_get_stats(h->core, &s);
    *page = s.page_size;
    *mapping = s.mapping_size;
    return s.limit;
}

size_t anr_heap_shrink(anr_mheap *h, size_t bytes)
{
    size_t page, mapping;
    size_t limit = current_limit(h, &page, &mapping);
    if (limit == 0)
        limit = mapping;
    limit = bytes >= limit ? page : limit - bytes;
    anr_core_set_limit(h->core, limit);
    anr_core_purge(h->core, true);
    return limit;
}

size_t anr_heap_expand(anr_mheap *h, size_t bytes)
{
    size_t page, mapping;
    size_t limit = current_limit(h, &page, &mapping);
    if (limit == 0)
        return 0;
    limit = limit + bytes < limit ? 0 : limit + bytes;
    anr_core_set_limit(h->core, limit);
    return limit;
}

size_t anr_heap_trim(anr_mheap *h)
{
    anr_core_stats s;
    anr_core_get_stats(h->core, &s);
    size_t bytes = anr_core_purge(h->core, true) * s.page_size;
    _am_quota_surplus(h); /* pages went back: so may surplus quota */
    return bytes;
}

void anr_heap_get_stats(anr_mheap *h, anr_heap_stats *out)
{
    anr_core_stats s;
    anr_core_get_stats(h->core, &s);
    memset(out, 0, sizeof(*out));
    out->mapping_size = s.mapping_size;
    out->side_size = h->side_size;
    out->page_size = s.page_size;
    out->limit = s.limit;
    out->use = (s.pages_in_use + s.pages_dirty) * s.page_size;
    out->bytes_in_use = s.bytes_in_use;
    out->objects_in_use = s.objects_in_use;
    out->pages_in_use = s.pages_in_use;
    out->pages_dirty = s.pages_dirty;
    out->pages_peak = s.pages_peak;
    out->alloc_failures = s.alloc_failures;
    out->bad_pointers = atomic_load(&h->faults);
    out->more_memory_calls = atomic_load(&h->more_calls);
    out->more_memory_freed = atomic_load(&h->more_freed);
    out->memory_full_calls = atomic_load(&h->full_calls);
    out->gc_runs = atomic_load(&h->gc_runs);
    out->gc_garbage = atomic_load(&h->gc_garbage);
    out->gc_freed = atomic_load(&h->gc_freed);
    out->debug_records = atomic_load(&h->live_records);
    out->records_dropped = atomic_load(&h->records_dropped);
    out->fdr_ops = atomic_load(&h->fdr_seq);
    out->debug = anr_heap_get_debug(h);
}

const char *anr_verify(void)
{
    for (unsigned i = 0; i < ANR_MAX_HEAPS; i++) {
        anr_mheap *h = atomic_load_explicit(&registry[i], memory_order_acquire);
        if (h && h != RESERVED) {
            const char *bad = anr_heap_verify(h);
            if (bad)
                return bad;
        }
    }
    return NULL;
}

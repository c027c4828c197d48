/* Threads against one heap: the lock discipline of the purge and a bounded
 * multi-threaded stress (malloc/calloc/realloc/free of mixed sizes, objects
 * freed by other threads, a tiny page ceiling and a 1 ms decay so that purges,
 * quiet-time purges and page-map trims run all the time). Every object's
 * contents are checked before it is freed or moved, anr_core_verify() runs at
 * quiet points, and every heap-lock unlock must come from the thread that
 * holds the lock.
 *
 * Regression: _anr_purge(may_block = true) filed the purged runs as clean and
 * unlocked without having re-taken the lock after madvise (`if (may_block ||
 * _anr_trylock(h))`), so another thread's allocation or free raced with it on
 * the bins and the page map: "double free" reports on valid frees, objects
 * handed out twice, broken bins.
 *
 * The lock check interposes pthread_mutex_lock/trylock/unlock (this
 * executable links the engine statically, so its calls land here) and keeps,
 * per thread, the mutexes it holds: an unlock of a mutex the thread does not
 * hold is counted. It makes the regression deterministic: one purge is enough. */
#include "core_test.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>

/* --- lock discipline checker --- */

static int (*real_lock)(pthread_mutex_t *);
static int (*real_trylock)(pthread_mutex_t *);
static int (*real_unlock)(pthread_mutex_t *);
static atomic_int lock_violations;
#define MAX_HELD 8
static __thread pthread_mutex_t *held[MAX_HELD];
static __thread int nheld;

static void resolve(void)
{
    if (!real_unlock) {
        real_lock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
        real_trylock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_trylock");
        real_unlock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_unlock");
    }
}

static void note_held(pthread_mutex_t *m)
{
    if (nheld < MAX_HELD)
        held[nheld++] = m;
}

int pthread_mutex_lock(pthread_mutex_t *m)
{
    resolve();
    int rc = real_lock(m);
    if (rc == 0)
        note_held(m);
    return rc;
}

int pthread_mutex_trylock(pthread_mutex_t *m)
{
    resolve();
    int rc = real_trylock(m);
    if (rc == 0)
        note_held(m);
    return rc;
}

int pthread_mutex_unlock(pthread_mutex_t *m)
{
    resolve();
    int i = nheld - 1;
    while (i >= 0 && held[i] != m)
        i--;
    if (i < 0) {
        atomic_fetch_add(&lock_violations, 1);
    } else {
        held[i] = held[--nheld];
    }
    return real_unlock(m);
}

#define assert_lock_discipline()                                                                   \
    do {                                                                                           \
        int n_ = atomic_load(&lock_violations);                                                    \
        if (n_ != 0)                                                                               \
            fail_msg("%d unlock(s) of a mutex the calling thread did not hold", n_);               \
    } while (0)

/* --- patterns (8 bytes at a time; large objects get a mark per page) --- */

#define SPARSE (64 * KiB)

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void fill_n(unsigned char *p, size_t n, uint64_t key)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = mix64(key + i);
        memcpy(p + i, &w, n - i < 8 ? n - i : 8);
    }
}

static bool same_n(const unsigned char *p, size_t n, uint64_t key)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = mix64(key + i);
        if (memcmp(p + i, &w, n - i < 8 ? n - i : 8) != 0)
            return false;
    }
    return true;
}

typedef struct obj {
    unsigned char *p;
    size_t size;
    uint64_t key;
} obj;

static void obj_fill(const obj *o)
{
    if (o->size < SPARSE) {
        fill_n(o->p, o->size, o->key);
        return;
    }
    for (size_t off = 0; off + 32 <= o->size; off += 4096)
        fill_n(o->p + off, 16, o->key + off);
    fill_n(o->p + o->size - 16, 16, o->key - 1);
}

/* True if the first `upto` bytes (all of them: o->size) still hold the pattern. */
static bool obj_ok(const obj *o, size_t upto)
{
    if (o->size < SPARSE)
        return same_n(o->p, upto, o->key);
    for (size_t off = 0; off + 32 <= o->size && off + 16 <= upto; off += 4096)
        if (!same_n(o->p + off, 16, o->key + off))
            return false;
    return upto < o->size || same_n(o->p + o->size - 16, 16, o->key - 1);
}

/* --- deterministic: every purge path unlocks only what it locked --- */

static anr_heap *quiet_heap(void **state, size_t ceiling)
{
    anr_core_options o;
    test_options(&o);
    o.page_ceiling = ceiling;
    o.page_floor = ceiling / 4;
    o.decay_ms = UINT32_MAX; /* no quiet-time purge unless asked */
    return fx_init(state, &o);
}

/* Frees `n` large objects of `pages` pages each (dirty pages for a purge). */
static void make_dirty(anr_heap *h, int n, size_t pages)
{
    void *p[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        p[i] = anr_core_alloc(h, pages * sys_page(), 0, 0);
        assert_non_null(p[i]);
        memset(p[i], 0x5a, pages * sys_page());
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
}

static void test_purge_holds_lock(void **state)
{
    size_t run = min_large_pages();
    anr_heap *h = quiet_heap(state, 100000);
    atomic_store(&lock_violations, 0);

    /* anr_core_purge(all) */
    make_dirty(h, 8, run);
    uint64_t before = stats_of(h).pages_purged;
    assert_true(anr_core_purge(h, true) > 0);
    assert_true(stats_of(h).pages_purged > before);
    assert_lock_discipline();
    assert_verify(h);

    /* down to the floor */
    make_dirty(h, 8, run);
    anr_core_purge(h, false);
    assert_lock_discipline();

    /* a lowered ceiling */
    make_dirty(h, 8, run);
    anr_core_set_page_ceiling(h, run, 0);
    assert_int_equal(stats_of(h).pages_dirty, 0);
    assert_lock_discipline();

    /* a realloc that shrinks in place past the (now low) ceiling */
    void *p = anr_core_alloc(h, 8 * run * sys_page(), 0, 0);
    assert_non_null(p);
    p = anr_core_realloc(h, p, run * sys_page(), NULL);
    assert_non_null(p);
    anr_core_free(h, p);
    assert_lock_discipline();
    assert_verify(h);
}

static void test_tick_holds_lock(void **state)
{
    anr_core_options o;
    test_options(&o);
    o.page_ceiling = 100000;
    o.page_floor = 100000; /* the frees leave it all dirty, for the tick */
    o.decay_ms = 1;
    runs_uncached(&o); /* the frees must reach the heap's dirty pages */
    anr_heap *h = fx_init(state, &o);
    atomic_store(&lock_violations, 0);
    make_dirty(h, 4, min_large_pages());
    /* The first tick starts the quiet-time clock; a later one purges. */
    size_t purged = 0;
    for (int i = 0; i < 200 && !purged; i++) {
        purged = anr_core_tick(h);
        usleep(2000);
    }
    assert_true(purged > 0);
    assert_lock_discipline();
    assert_verify(h);
}

/* --- threaded stress --- */

#define NTHREADS 4
#define NSLOTS 128
#define NMAIL 32
#define ROUND 1000

typedef struct shared {
    anr_heap *h;
    pthread_barrier_t bar;
    long rounds;
    _Atomic(obj *) mail[NMAIL];
    atomic_long bad_data, bad_calls, not_zero;
    atomic_int verify_failed;
    const char *why;
} shared;

typedef struct worker {
    shared *s;
    int id;
    uint64_t rng;
    obj slot[NSLOTS];
} worker;

static uint64_t wnext(worker *w) { return mix64(w->rng += 0x9e3779b97f4a7c15ull); }
static size_t wbelow(worker *w, size_t n) { return (size_t)(wnext(w) % n); }

static size_t pick_size(worker *w)
{
    size_t c = wbelow(w, 1000);
    if (c < 900)
        return 1 + wbelow(w, 2048);
    if (c < 990)
        return 2049 + wbelow(w, 30 * KiB);
    return 32 * KiB + wbelow(w, 224 * KiB);
}

static void release(worker *w, obj *o)
{
    if (!obj_ok(o, o->size))
        atomic_fetch_add(&w->s->bad_data, 1);
    if (anr_core_free(w->s->h, o->p) != ANR_ERR_NONE)
        atomic_fetch_add(&w->s->bad_calls, 1);
    o->p = NULL;
}

static void one_op(worker *w)
{
    anr_heap *h = w->s->h;
    obj *o = &w->slot[wbelow(w, NSLOTS)];
    if (!o->p) {
        obj n = {NULL, pick_size(w), wnext(w)};
        unsigned how = (unsigned)wbelow(w, 8);
        size_t align = how == 1 ? (size_t)16 << wbelow(w, 9) : 0;
        n.p = anr_core_alloc(h, n.size, align, how == 0 ? ANR_ALLOC_ZERO : 0);
        if (!n.p) {
            atomic_fetch_add(&w->s->bad_calls, 1);
            return;
        }
        if (align && !is_aligned(n.p, align))
            atomic_fetch_add(&w->s->bad_calls, 1);
        if (how == 0)
            for (size_t i = 0; i < n.size; i += n.size < SPARSE ? 1 : 4095)
                if (n.p[i]) {
                    atomic_fetch_add(&w->s->not_zero, 1);
                    break;
                }
        obj_fill(&n);
        *o = n;
        return;
    }
    size_t k = wbelow(w, 8);
    if (k < 2) { /* realloc: the kept prefix must survive */
        if (!obj_ok(o, o->size))
            atomic_fetch_add(&w->s->bad_data, 1);
        size_t ns = pick_size(w);
        unsigned char *q = anr_core_realloc(h, o->p, ns, NULL);
        if (!q) {
            atomic_fetch_add(&w->s->bad_calls, 1);
            return;
        }
        size_t keep = o->size < ns ? o->size : ns;
        obj view = {q, o->size, o->key};
        bool ok = o->size < SPARSE ? same_n(q, keep, o->key)
                  : ns < SPARSE    ? same_n(q, keep < 16 ? keep : 16, o->key)
                                   : obj_ok(&view, keep);
        if (!ok)
            atomic_fetch_add(&w->s->bad_data, 1);
        o->p = q;
        o->size = ns;
        o->key = wnext(w);
        obj_fill(o);
    } else if (k < 4) { /* hand it to whichever thread looks in this box next */
        obj *rec = malloc(sizeof *rec);
        if (!rec)
            return;
        *rec = *o;
        o->p = NULL;
        obj *got = atomic_exchange(&w->s->mail[wbelow(w, NMAIL)], rec);
        if (got) {
            if (wbelow(w, 2))
                release(w, got); /* a cross-thread free */
            else
                *o = *got; /* kept, freed later by this thread */
            free(got);
        }
    } else if (k == 4) {
        if (anr_core_usable_size(h, o->p) < o->size)
            atomic_fetch_add(&w->s->bad_calls, 1);
    } else {
        release(w, o);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    shared *s = w->s;
    for (long r = 0; r < s->rounds; r++) {
        for (int i = 0; i < ROUND; i++) {
            one_op(w);
            if (wbelow(w, 2000) == 0)
                anr_core_purge(s->h, wbelow(w, 2));
            if (w->id == 0 && wbelow(w, 1000) == 0)
                anr_core_tick(s->h);
            if (wbelow(w, 1500) == 0)
                anr_core_flush_thread_cache(s->h);
        }
        if (w->id == 0 && r % 8 == 1) {
            /* A block big enough that its purge moves `top` back past the
             * page-map trim threshold (when nothing sits above it). */
            obj big = {anr_core_alloc(s->h, 72 * MiB, 0, 0), 72 * MiB, wnext(w)};
            if (big.p) {
                obj_fill(&big);
                release(w, &big);
            }
        }
        pthread_barrier_wait(&s->bar);
        if (w->id == 0) {
            const char *why = anr_core_verify(s->h);
            if (why && !atomic_exchange(&s->verify_failed, 1))
                s->why = why;
        }
        pthread_barrier_wait(&s->bar);
    }
    for (int i = 0; i < NSLOTS; i++)
        if (w->slot[i].p)
            release(w, &w->slot[i]);
    return NULL;
}

static void test_threads_stress(void **state)
{
    anr_core_options o;
    test_options(&o);
    o.page_ceiling = 16;
    o.page_floor = 4;
    o.decay_ms = 1;
    o.tcache_max_bytes = 64 * KiB;
    static shared s;
    static worker w[NTHREADS];
    memset(&s, 0, sizeof s);
    s.h = fx_init(state, &o);
    const char *env = getenv("ANR_TEST_STRESS_ROUNDS");
    s.rounds = env ? atol(env) : 40;
    atomic_store(&lock_violations, 0);
    assert_int_equal(pthread_barrier_init(&s.bar, NULL, NTHREADS), 0);
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].s = &s;
        w[i].id = i;
        w[i].rng = 12345 + (uint64_t)i;
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&s.bar);
    worker last = {.s = &s, .id = -1};
    for (int i = 0; i < NMAIL; i++) {
        obj *got = atomic_exchange(&s.mail[i], NULL);
        if (got) {
            release(&last, got);
            free(got);
        }
    }

    if (atomic_load(&s.verify_failed))
        fail_msg("anr_core_verify at a quiet point: %s", s.why);
    assert_int_equal(atomic_load(&s.bad_data), 0);
    assert_int_equal(atomic_load(&s.not_zero), 0);
    assert_int_equal(atomic_load(&s.bad_calls), 0);
    assert_lock_discipline();
    anr_core_stats st = stats_of(s.h);
    assert_int_equal(st.bad_pointers, 0);
    assert_int_equal(st.objects_in_use, 0);
    assert_true(st.pages_purged > 0);
    assert_verify(s.h);
}

int main(void)
{
    resolve();
    const struct CMUnitTest tests[] = {
        UNIT(test_purge_holds_lock),
        UNIT(test_tick_holds_lock),
        UNIT(test_threads_stress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

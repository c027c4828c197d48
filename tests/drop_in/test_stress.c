/* Multi-threaded stress and fork() from a non-main thread.
 *
 * Threads allocate random sizes (mostly small, some up to 1 MiB), fill every
 * object with a pattern derived from (pointer, size, seed), realloc some, pass
 * some to other threads through a bounded mailbox, and check every object's
 * pattern before it is freed. A mismatch is reported on stderr with the
 * object's address, size and first bad offset, and aborts the run. Threads
 * are created and joined over several rounds; at the end the engine's count
 * of live objects must be back near where it started.
 *
 * The fork test forks from a non-main thread while other threads allocate and
 * free; the child allocates and frees a lot and must exit 0. A child stuck on
 * a lock that nobody will release is killed by alarm() and reported.
 *
 * Fixed seeds and bounded loops; a few seconds on 2 cores. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dropin.h"

#define NTHREADS 8
#define ROUNDS 4
#define OPS 40000
#define LOCAL_MAX 256
#define MB_CAP 64

typedef struct obj {
    unsigned char *p;
    size_t size;
    uint64_t seed;
} obj;

static void stress_fail(const char *what, const obj *o, size_t off)
{
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "STRESS FAILURE: %s: object %p size %zu seed %llu offset %zu\n",
                     what, (void *)o->p, o->size, (unsigned long long)o->seed, off);
    if (write(2, buf, (size_t)n) < 0)
        abort();
    abort();
}

static void obj_fill(obj *o) { dr_fill(o->p, o->size, dr_key(o->p, o->size, o->seed)); }

static void obj_verify(const obj *o, const char *when)
{
    size_t bad = dr_check(o->p, o->size, dr_key(o->p, o->size, o->seed));
    if (bad != SIZE_MAX)
        stress_fail(when, o, bad);
}

static size_t random_size(dr_rng *r)
{
    size_t c = dr_below(r, 1000);
    if (c < 850)
        return dr_range(r, 0, 256);
    if (c < 970)
        return dr_range(r, 257, 16 * KiB);
    if (c < 997)
        return dr_range(r, 16 * KiB + 1, 256 * KiB);
    return dr_range(r, 256 * KiB + 1, MiB);
}

/* ---- the mailbox: bounded, lock-protected, shared by all threads ---- */

static struct {
    pthread_mutex_t mu;
    obj slot[MB_CAP];
    size_t head, count;
} mailbox = {.mu = PTHREAD_MUTEX_INITIALIZER};

static bool mb_put(const obj *o)
{
    bool ok = false;
    pthread_mutex_lock(&mailbox.mu);
    if (mailbox.count < MB_CAP) {
        mailbox.slot[(mailbox.head + mailbox.count++) % MB_CAP] = *o;
        ok = true;
    }
    pthread_mutex_unlock(&mailbox.mu);
    return ok;
}

static bool mb_get(obj *o)
{
    bool ok = false;
    pthread_mutex_lock(&mailbox.mu);
    if (mailbox.count > 0) {
        *o = mailbox.slot[mailbox.head];
        mailbox.head = (mailbox.head + 1) % MB_CAP;
        mailbox.count--;
        ok = true;
    }
    pthread_mutex_unlock(&mailbox.mu);
    return ok;
}

/* ---- one thread's workload ---- */

typedef struct worker {
    pthread_t tid;
    uint64_t seed;
    long ops;            /* bounded run; < 0: until *stop */
    atomic_bool *stop;
    atomic_long done;    /* operations done so far */
    bool use_mailbox;
    obj live[LOCAL_MAX];
    size_t n;
} worker;

static void w_alloc(worker *w, dr_rng *r)
{
    obj o = {.size = random_size(r), .seed = dr_next(r)};
    size_t kind = dr_below(r, 20);
    if (kind == 0) {
        o.p = calloc(1, o.size);
        if (!o.p)
            stress_fail("calloc returned NULL", &o, 0);
        for (size_t i = 0; i < o.size; i++)
            if (o.p[i])
                stress_fail("calloc memory not zero", &o, i);
    } else if (kind == 1) {
        size_t align = (size_t)16 << dr_below(r, 9); /* 16 .. 4096 */
        void *p = NULL;
        if (posix_memalign(&p, align, o.size) != 0)
            stress_fail("posix_memalign failed", &o, align);
        o.p = p;
        if ((uintptr_t)o.p % align)
            stress_fail("posix_memalign misaligned", &o, align);
    } else {
        o.p = malloc(o.size);
        if (!o.p)
            stress_fail("malloc returned NULL", &o, 0);
    }
    if (malloc_usable_size(o.p) < o.size)
        stress_fail("usable size too small", &o, malloc_usable_size(o.p));
    obj_fill(&o);
    w->live[w->n++] = o;
}

static obj w_take(worker *w, dr_rng *r)
{
    size_t i = dr_below(r, w->n);
    obj o = w->live[i];
    w->live[i] = w->live[--w->n];
    return o;
}

static void w_realloc(worker *w, dr_rng *r)
{
    obj *o = &w->live[dr_below(r, w->n)];
    obj_verify(o, "before realloc");
    obj old = *o;
    size_t nsize = dr_below(r, 4) ? random_size(r) : o->size + dr_below(r, 4096);
    if (nsize == 0)
        nsize = 1; /* realloc(p, 0) frees: tested elsewhere */
    uint64_t old_key = dr_key(old.p, old.size, old.seed);
    unsigned char *q = realloc(o->p, nsize);
    if (!q)
        stress_fail("realloc returned NULL", o, nsize);
    size_t keep = old.size < nsize ? old.size : nsize;
    size_t bad = dr_check(q, keep, old_key);
    if (bad != SIZE_MAX) {
        obj moved = {.p = q, .size = nsize, .seed = old.seed};
        stress_fail("realloc lost contents", &moved, bad);
    }
    o->p = q;
    o->size = nsize;
    o->seed = dr_next(r);
    obj_fill(o);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    dr_rng r = {w->seed};
    w->n = 0;
    for (long op = 0; w->ops < 0 ? !atomic_load(w->stop) : op < w->ops; op++) {
        size_t c = dr_below(&r, 100);
        obj o;
        if (w->n == 0 || (c < 42 && w->n < LOCAL_MAX)) {
            w_alloc(w, &r);
        } else if (c < 64) {
            o = w_take(w, &r);
            obj_verify(&o, "before free");
            free(o.p);
        } else if (c < 76) {
            w_realloc(w, &r);
        } else if (c < 88 && w->use_mailbox) {
            o = w_take(w, &r);
            obj_verify(&o, "before handing over");
            if (!mb_put(&o)) {
                free(o.p);
            }
        } else if (w->use_mailbox && w->n < LOCAL_MAX && mb_get(&o)) {
            obj_verify(&o, "received from another thread");
            if (dr_below(&r, 2)) {
                free(o.p); /* a cross-thread free */
            } else {
                o.seed = dr_next(&r);
                obj_fill(&o);
                w->live[w->n++] = o;
            }
        } else if (w->n > 0) {
            o = w_take(w, &r);
            obj_verify(&o, "before free");
            free(o.p);
        }
        atomic_store_explicit(&w->done, op + 1, memory_order_relaxed);
    }
    while (w->n > 0) {
        obj o = w->live[--w->n];
        obj_verify(&o, "at thread end");
        free(o.p);
    }
    return NULL;
}

static size_t objects_in_use(void)
{
#ifdef DROPIN_GMALLOC
    anr_core_stats s;
    gmalloc_get_stats(&s);
    return s.objects_in_use;
#else
    return 0;
#endif
}

static void print_stats(const char *when)
{
#ifdef DROPIN_GMALLOC
    anr_core_stats s;
    gmalloc_get_stats(&s);
    print_message("%s: objects %zu, bytes %zu, pages in use %zu, dirty %zu, peak %zu, purged %llu, "
                  "deferred frees %llu, map calls %llu, bad pointers %llu\n",
                  when, s.objects_in_use, s.bytes_in_use, s.pages_in_use, s.pages_dirty,
                  s.pages_peak, (unsigned long long)s.pages_purged,
                  (unsigned long long)s.deferred_frees, (unsigned long long)s.map_calls,
                  (unsigned long long)s.bad_pointers);
#else
    (void)when;
#endif
}

static worker workers[NTHREADS];

static void test_threads_rounds(void **state)
{
    (void)state;
    /* Warm up libc (stdio buffers etc.) before the baseline. */
    print_stats("start");
    size_t start = objects_in_use();
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < NTHREADS; i++) {
            workers[i].seed = 1000u * (uint64_t)round + (uint64_t)i + 1;
            workers[i].ops = OPS;
            workers[i].use_mailbox = true;
            atomic_store(&workers[i].done, 0);
            assert_int_equal(pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]), 0);
        }
        for (int i = 0; i < NTHREADS; i++)
            assert_int_equal(pthread_join(workers[i].tid, NULL), 0);
        print_message("round %d done, mailbox holds %zu\n", round, mailbox.count);
    }
    obj o;
    while (mb_get(&o)) {
        obj_verify(&o, "left in the mailbox");
        free(o.p);
    }
    /* One more lock holder drains anything left on a deferred list. */
    free(malloc(100));
    size_t end = objects_in_use();
    print_stats("end");
    print_message("objects in use: start %zu, end %zu\n", start, end);
    if (DR_GMALLOC) {
        size_t diff = end > start ? end - start : start - end;
        /* Slack: libc keeps a few allocations per cached thread stack (DTVs). */
        if (diff > 64)
            fail_msg("objects_in_use %zu at the end, %zu at the start", end, start);
    }
}

/* ---- fork() from a non-main thread ---- */

#define FORKS 6
#define FORK_WORKERS 3

static atomic_bool fork_stop;
static worker fork_workers[FORK_WORKERS];
static int child_status[FORKS];

static void child_fail(const char *what)
{
    if (write(2, what, strlen(what)) < 0)
        _exit(4);
    _exit(3);
}

/* In the child: only this thread exists; whatever lock another thread held
 * at fork() must have been dealt with by the allocator's fork handlers. */
static void child_workload(obj *mine, size_t n_mine, uint64_t seed)
{
    alarm(60);
    for (size_t i = 0; i < n_mine; i++) {
        if (dr_check(mine[i].p, mine[i].size, dr_key(mine[i].p, mine[i].size, mine[i].seed)) !=
            SIZE_MAX)
            child_fail("child: a parent object lost its contents\n");
        free(mine[i].p);
    }
    worker w = {.seed = seed, .ops = 20000, .use_mailbox = false};
    worker_main(&w);
    void *big = malloc(16 * MiB);
    if (!big)
        child_fail("child: malloc(16 MiB) failed\n");
    memset(big, 1, 16 * MiB);
    free(big);
#ifdef DROPIN_GMALLOC
    anr_core_stats s;
    gmalloc_get_stats(&s);
#endif
    /* Threads in the child work too. */
    pthread_t t;
    worker w2 = {.seed = seed + 1, .ops = 5000, .use_mailbox = false};
    if (pthread_create(&t, NULL, worker_main, &w2) != 0)
        child_fail("child: pthread_create failed\n");
    pthread_join(t, NULL);
    _exit(0);
}

static void *forker_main(void *arg)
{
    (void)arg;
    dr_rng r = {4242};
    for (int i = 0; i < FORKS; i++) {
        /* Wait until every worker has made progress (no clock involved). */
        long target[FORK_WORKERS];
        for (int k = 0; k < FORK_WORKERS; k++)
            target[k] = atomic_load(&fork_workers[k].done) + 2000;
        for (int k = 0; k < FORK_WORKERS; k++)
            while (atomic_load(&fork_workers[k].done) < target[k])
                sched_yield();
        /* Some objects of our own, live across the fork. */
        obj mine[32];
        for (int k = 0; k < 32; k++) {
            mine[k].size = random_size(&r);
            mine[k].seed = dr_next(&r);
            mine[k].p = malloc(mine[k].size);
            if (!mine[k].p)
                stress_fail("malloc failed in the forker", &mine[k], 0);
            obj_fill(&mine[k]);
        }
        pid_t pid = fork();
        if (pid == 0)
            child_workload(mine, 32, 777 + (uint64_t)i);
        if (pid < 0) {
            child_status[i] = -1;
        } else {
            int st;
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            child_status[i] = st;
        }
        for (int k = 0; k < 32; k++) {
            obj_verify(&mine[k], "forker object after fork");
            free(mine[k].p);
        }
    }
    return NULL;
}

static void test_fork_from_thread(void **state)
{
    (void)state;
    atomic_store(&fork_stop, false);
    for (int k = 0; k < FORK_WORKERS; k++) {
        fork_workers[k].seed = 99 + (uint64_t)k;
        fork_workers[k].ops = -1;
        fork_workers[k].stop = &fork_stop;
        fork_workers[k].use_mailbox = true;
        atomic_store(&fork_workers[k].done, 0);
        assert_int_equal(pthread_create(&fork_workers[k].tid, NULL, worker_main, &fork_workers[k]),
                         0);
    }
    pthread_t forker;
    assert_int_equal(pthread_create(&forker, NULL, forker_main, NULL), 0);
    assert_int_equal(pthread_join(forker, NULL), 0);
    atomic_store(&fork_stop, true);
    for (int k = 0; k < FORK_WORKERS; k++)
        assert_int_equal(pthread_join(fork_workers[k].tid, NULL), 0);
    obj o;
    while (mb_get(&o)) {
        obj_verify(&o, "left in the mailbox");
        free(o.p);
    }
    int bad = 0;
    for (int i = 0; i < FORKS; i++) {
        int st = child_status[i];
        if (st == -1) {
            print_message("fork #%d failed\n", i);
            bad++;
        } else if (WIFSIGNALED(st)) {
            print_message("child #%d killed by signal %d%s\n", i, WTERMSIG(st),
                          WTERMSIG(st) == SIGALRM ? " (hung: deadlock after fork?)" : "");
            bad++;
        } else if (WEXITSTATUS(st) != 0) {
            print_message("child #%d exited %d\n", i, WEXITSTATUS(st));
            bad++;
        }
    }
    print_stats("after the fork test");
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_rounds),
        cmocka_unit_test(test_fork_from_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

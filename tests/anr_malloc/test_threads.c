/* Several threads allocating and freeing with the whole debug kit on while
 * another runs collections: no fault, no lost block, a sound heap after.
 * (Counts only: no timing.) */
#include "am_test.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdatomic.h>

#define THREADS 4
#define ROUNDS 4000
#define LIVE 64

static anr_mheap *heap;
static fault_log log_;
/* Each worker publishes its live blocks here for the marker. */
static void *_Atomic live[THREADS][LIVE];
/* A subsystem's own lock: held while it changes what it owns, and by its
 * marker, so a collection never sees a block between malloc and publish. */
static pthread_mutex_t owner_lock[THREADS] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                             PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};
static _Atomic int stop;

/* cmocka's asserts only work on the test's own thread. */
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void marker(void *ctx, anr_mheap *h)
{
    (void)ctx;
    (void)h;
    for (int t = 0; t < THREADS; t++) {
        pthread_mutex_lock(&owner_lock[t]);
        for (int i = 0; i < LIVE; i++) {
            void *p = atomic_load(&live[t][i]);
            if (p)
                CHECK(anr_mark(p));
        }
        pthread_mutex_unlock(&owner_lock[t]);
    }
}

static void *worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    unsigned seed = (unsigned)t * 7919u + 1;
    for (int r = 0; r < ROUNDS; r++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % LIVE);
        pthread_mutex_lock(&owner_lock[t]);
        void *old = atomic_load(&live[t][i]);
        size_t size = (seed >> 4) % 3 == 0 ? 20000 + (seed % 50000) : 1 + (seed >> 12) % 500;
        void *p = anr_heap_malloc(heap, size);
        CHECK(p != NULL);
        memset(p, t, size);
        atomic_store(&live[t][i], p);
        if (old) {
            anr_set_debug_info(old, (uintptr_t)r);
            anr_heap_free(heap, old);
        }
        pthread_mutex_unlock(&owner_lock[t]);
    }
    return NULL;
}

static void *collector(void *arg)
{
    (void)arg;
    int runs = 0;
    while (!atomic_load(&stop)) {
        anr_gc_result r;
        int rc = anr_heap_gc(heap, ANR_GC_FREE, NULL, NULL, &r);
        CHECK(rc == 0);
        CHECK(r.garbage == 0);
        runs++;
    }
    return (void *)(intptr_t)runs;
}

static void test_concurrent_debug_and_gc(void **state)
{
    (void)state;
    heap = small_heap(0, ANR_DEBUG_ALL, &log_);
    anr_heap_add_marker(heap, marker, NULL);
    pthread_t w[THREADS], c;
    assert_int_equal(pthread_create(&c, NULL, collector, NULL), 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&w[t], NULL, worker, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(w[t], NULL);
    atomic_store(&stop, 1);
    void *runs;
    pthread_join(c, &runs);
    assert_true((intptr_t)runs >= 1);
    assert_int_equal(log_.calls, 0);
    assert_null(anr_heap_verify(heap));
    anr_heap_stats s;
    anr_heap_get_stats(heap, &s);
    size_t n = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < LIVE; i++)
            if (live[t][i]) {
                n++;
                assert_int_equal(anr_check(live[t][i]), 0);
                anr_heap_free(heap, live[t][i]);
            }
    assert_int_equal(s.objects_in_use, n);
    anr_heap_get_stats(heap, &s);
    assert_int_equal(s.objects_in_use, 0);
    assert_int_equal(s.debug_records, 0);
    anr_heap_destroy(heap);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_debug_and_gc),
    };
    return cmocka_run_group_tests_name("anr_malloc_threads", tests, NULL, NULL);
}

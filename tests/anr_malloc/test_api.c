/* The allocation API: heaps, the default heap, glibc corner cases, limits,
 * statistics, if_available, and bad pointers through the fault handler. */
#include "am_test.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_heap_basics(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, 0, &log);
    char *p = anr_heap_malloc(h, 100);
    assert_non_null(p);
    memset(p, 0x5a, 100);
    assert_true(anr_heap_usable_size(h, p) >= 100);
    assert_ptr_equal(anr_heap_of(p), h);
    assert_string_equal(anr_heap_name(h), "test");

    char *q = anr_heap_realloc(h, p, 5000);
    assert_non_null(q);
    for (int i = 0; i < 100; i++)
        assert_int_equal((unsigned char)q[i], 0x5a);

    int *z = anr_heap_calloc(h, 1000, sizeof(int));
    assert_non_null(z);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(z[i], 0);

    void *a = anr_heap_memalign(h, 4096, 100);
    assert_non_null(a);
    assert_int_equal((uintptr_t)a % 4096, 0);
    errno = 0;
    assert_null(anr_heap_memalign(h, 24, 100));
    assert_int_equal(errno, EINVAL);

    anr_heap_stats s;
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.objects_in_use, 3);
    assert_int_equal(s.mapping_size > 0, 1);
    /* realloc(p, 0) frees and returns NULL (glibc). */
    assert_null(anr_heap_realloc(h, q, 0));
    anr_heap_free(h, z);
    anr_heap_free(h, a);
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.objects_in_use, 0);
    assert_int_equal(log.calls, 0);

    errno = 0;
    assert_null(anr_heap_calloc(h, SIZE_MAX / 2, 3));
    assert_int_equal(errno, ENOMEM);
    anr_heap_destroy(h);
}

static void test_default_heap_and_routing(void **state)
{
    (void)state;
    anr_mheap *h = small_heap(0, 0, NULL);
    char *d = anr_malloc(10);
    assert_non_null(d);
    assert_ptr_equal(anr_heap_of(d), anr_default_heap());
    char *x = anr_heap_malloc(h, 10);
    assert_ptr_equal(anr_heap_of(x), h);
    assert_null(anr_heap_of(&d));
    anr_heap_stats s;
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.objects_in_use, 1);
    anr_free(x); /* routed to h */
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.objects_in_use, 0);
    void *r = anr_realloc(d, 100000);
    assert_non_null(r);
    assert_true(anr_usable_size(r) >= 100000);
    anr_free(r);
    int *c = anr_calloc(4, 4);
    assert_non_null(c);
    assert_int_equal(c[3], 0);
    anr_free(c);
    void *m = anr_memalign(64, 64);
    assert_int_equal((uintptr_t)m % 64, 0);
    anr_free(m);
    anr_free(NULL);
    assert_null(anr_realloc(anr_malloc(1), 0));
    anr_heap_destroy(h);
}

static void test_bad_pointers_reported(void **state)
{
    (void)state;
    fault_log log;
    anr_mheap *h = small_heap(0, 0, &log);
    char *p = anr_heap_malloc(h, 64);
    char *big = anr_heap_malloc(h, 100000);
    anr_heap_free(h, p);
    anr_heap_free(h, p);
    assert_int_equal(log.calls, 1);
    assert_int_equal(log.fault, ANR_FAULT_DOUBLE_FREE);
    assert_ptr_equal(log.ptr, p);
    assert_string_equal(log.op, "free");
    assert_non_null(strstr(log.text, "double free"));

    anr_heap_free(h, big + 8);
    assert_int_equal(log.calls, 2);
    assert_int_equal(log.fault, ANR_FAULT_NOT_AN_OBJECT);
    assert_null(anr_heap_realloc(h, big + 4096, 10));
    assert_int_equal(log.calls, 3);
    assert_string_equal(log.op, "realloc");

    int local;
    anr_heap_free(h, &local);
    assert_int_equal(log.calls, 4);
    assert_int_equal(log.fault, ANR_FAULT_FOREIGN);

    fault_log flog;
    memset(&flog, 0, sizeof(flog));
    anr_set_foreign_fault_handler(record_fault, &flog);
    anr_free(&local);
    assert_int_equal(flog.calls, 1);
    assert_int_equal(flog.fault, ANR_FAULT_FOREIGN);
    anr_set_foreign_fault_handler(NULL, NULL);

    /* The heap is intact after all that. */
    assert_null(anr_heap_verify(h));
    anr_heap_free(h, big);
    anr_heap_destroy(h);
}

/* The default handler: a message naming the fault on stderr, then abort. */
static void test_default_handler_aborts(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        anr_mheap *h = small_heap(0, 0, NULL);
        void *p = anr_heap_malloc(h, 32);
        anr_heap_free(h, p);
        anr_heap_free(h, opaque(p));
        _exit(0); /* not reached */
    }
    close(fds[1]);
    char buf[2048] = {0};
    size_t len = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    close(fds[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGABRT);
    assert_non_null(strstr(buf, "heap 'test': free("));
    assert_non_null(strstr(buf, "double free"));
}

static void test_limits(void **state)
{
    (void)state;
    anr_mheap *h = small_heap(1 * MiB, 0, NULL);
    anr_heap_stats s;
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.limit, 1 * MiB);
    errno = 0;
    assert_null(anr_heap_malloc(h, 2 * MiB));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(anr_heap_expand(h, 2 * MiB), 3 * MiB);
    void *p = anr_heap_malloc(h, 2 * MiB);
    assert_non_null(p);
    anr_heap_free(h, p);
    assert_int_equal(anr_heap_shrink(h, 2 * MiB), 1 * MiB);
    assert_null(anr_heap_malloc(h, 2 * MiB));
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.pages_dirty, 0); /* shrink handed the pages back */
    assert_true(s.alloc_failures >= 2);
    anr_heap_set_limit(h, 0);
    p = anr_heap_malloc(h, 8 * MiB);
    assert_non_null(p);
    anr_heap_free(h, p);
    anr_heap_destroy(h);
}

/* A floor given without a ceiling is kept (under the default ceiling):
 * freeing 3 MiB leaves that many dirty pages, not the default share. */
static void test_floor_without_ceiling(void **state)
{
    (void)state;
    anr_options o;
    anr_default_options(&o);
    o.name = "floor";
    o.mapping_size = 64 * MiB;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    o.page_floor = 2 * MiB / page; /* above the default share of the ceiling */
    anr_mheap *h = anr_heap_create(&o);
    assert_non_null(h);
    enum { N = 24 }; /* 3 MiB in runs: a purge takes whole runs */
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = anr_heap_malloc(h, 128 * KiB);
        assert_non_null(p[i]);
        memset(p[i], 1, 128 * KiB);
    }
    for (int i = 0; i < N; i++)
        anr_heap_free(h, p[i]);
    anr_heap_stats s;
    anr_heap_get_stats(h, &s);
    if (s.pages_dirty < o.page_floor)
        fail_msg("%zu dirty pages left, floor %zu", s.pages_dirty, o.page_floor);
    anr_heap_destroy(h);

    o.page_floor = 100000; /* above the default ceiling: refused */
    errno = 0;
    assert_null(anr_heap_create(&o));
    assert_int_equal(errno, EINVAL);
}

static int more_calls;
static size_t count_more(void *ctx, anr_mheap *h, size_t size)
{
    (void)ctx;
    (void)h;
    (void)size;
    more_calls++;
    return 4096;
}

static void test_if_available_calls_nothing(void **state)
{
    (void)state;
    anr_mheap *h = small_heap(256 * KiB, 0, NULL);
    more_calls = 0;
    anr_heap_add_more_memory(h, count_more, NULL);
    void *p = anr_heap_malloc_if_available(h, 64 * KiB);
    assert_non_null(p);
    errno = 0;
    assert_null(anr_heap_malloc_if_available(h, 512 * KiB));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(more_calls, 0);
    anr_heap_stats s;
    anr_heap_get_stats(h, &s);
    assert_int_equal(s.memory_full_calls, 0);
    /* The ordinary call does ask. */
    assert_null(anr_heap_malloc(h, 512 * KiB));
    assert_true(more_calls > 0);
    anr_heap_free(h, p);
    assert_non_null(anr_malloc_if_available(16));
    anr_heap_destroy(h);
}

static void test_create_errors(void **state)
{
    (void)state;
    anr_options o;
    anr_default_options(&o);
    o.stack_depth = ANR_MAX_STACK_DEPTH + 1;
    errno = 0;
    assert_null(anr_heap_create(&o));
    assert_int_equal(errno, EINVAL);
    anr_default_options(&o);
    o.mapping_size = 64 * MiB;
    o.no_debug = true;
    anr_mheap *h = anr_heap_create(&o);
    assert_non_null(h);
    assert_int_equal(anr_heap_gc(h, 0, NULL, NULL, NULL), ENOTSUP);
    void *p = anr_heap_malloc(h, 10);
    assert_int_equal(anr_set_debug_info(p, 1), ENOTSUP);
    anr_heap_free(h, p);
    anr_heap_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heap_basics),
        cmocka_unit_test(test_default_heap_and_routing),
        cmocka_unit_test(test_bad_pointers_reported),
        cmocka_unit_test(test_default_handler_aborts),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_floor_without_ceiling),
        cmocka_unit_test(test_if_available_calls_nothing),
        cmocka_unit_test(test_create_errors),
    };
    return cmocka_run_group_tests_name("anr_malloc_api", tests, NULL, NULL);
}

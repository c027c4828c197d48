/* The debug socket inside one process (anr_malloc heaps): every request,
 * snapshot and diff by allocation stack, the poll-loop mode, and refusals
 * (malformed, oversized, unknown, wrong uid) that leave the process and its
 * heaps as they were. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sys/stat.h>

#include "anr_malloc.h"
#include "dsock_client.h"

#define REPLY (1u << 20)
static char reply[REPLY];
static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/anr-dsock-test-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    anr_debug_socket_stop();
    rmdir(dir);
    return 0;
}

static void start(unsigned flags)
{
    assert_int_equal(anr_debug_socket_start(dir, flags), 0);
    assert_true(anr_debug_socket_path(path, sizeof(path)) > 0);
    char want[128];
    snprintf(want, sizeof(want), "%s/anr-%d.sock", dir, (int)getpid());
    assert_string_equal(path, want);
}

static size_t ask(const char *req)
{
    return ds_request(path, req, strlen(req), reply, sizeof(reply), NULL);
}

static bool has(const char *needle)
{
    return strstr(reply, needle) != NULL;
}

static unsigned count_lines(const char *tag)
{
    unsigned n = 0;
    size_t len = strlen(tag);
    for (const char *s = reply; s && *s; s = strchr(s, '\n'), s = s ? s + 1 : NULL)
        if (strncmp(s, tag, len) == 0) n++;
    return n;
}

static anr_mheap *make_heap(const char *name)
{
    anr_options o;
    anr_default_options(&o);
    o.name = name;
    o.mapping_size = 64 * 1024 * 1024;
    o.debug_records = 4096;
    o.debug = ANR_DEBUG_STACKS | ANR_DEBUG_FDR;
    anr_mheap *h = anr_heap_create(&o);
    assert_non_null(h);
    return h;
}

/* Two call sites, so two allocation stacks. */
__attribute__((noinline)) static void *site_a(anr_mheap *h, size_t n)
{
    void *p = anr_heap_malloc(h, n);
    __asm__ volatile("" ::: "memory");
    return p;
}

__attribute__((noinline)) static void *site_b(anr_mheap *h, size_t n)
{
    void *p = anr_heap_malloc(h, n);
    __asm__ volatile("" ::: "memory");
    return p;
}

/* One place that calls site_a, so that its blocks share one stack. */
__attribute__((noinline)) static void fill_a(anr_mheap *h, void **keep, int from, int to)
{
    for (int i = from; i < to; i++)
        keep[i] = site_a(h, 100);
}

/* The group line of the stack whose first frame lies in fn, or NULL. */
static const char *group_of(const char *tag, void *fn_addr_lo, size_t span)
{
    for (const char *s = reply; s && *s; s = strchr(s, '\n'), s = s ? s + 1 : NULL) {
        if (strncmp(s, tag, strlen(tag)) != 0) continue;
        /* TAG HEAP COUNT BYTES DCOUNT DBYTES N F0 ... */
        char heap[64];
        unsigned long long c, b, n, f0;
        long long dc, db;
        char fmt[64];
        snprintf(fmt, sizeof(fmt), "%s %%63s %%llu %%llu %%lld %%lld %%llu %%llx", tag);
        if (sscanf(s, fmt, heap, &c, &b, &dc, &db, &n, &f0) == 7 && n > 0 &&
            f0 >= (uintptr_t)fn_addr_lo && f0 < (uintptr_t)fn_addr_lo + span)
            return s;
    }
    return NULL;
}

static void parse_group(const char *line, const char *tag, unsigned long long *count,
                        unsigned long long *bytes, long long *dbytes)
{
    char heap[64], fmt[64];
    unsigned long long n;
    long long dc;
    snprintf(fmt, sizeof(fmt), "%s %%63s %%llu %%llu %%lld %%lld %%llu", tag);
    assert_int_equal(sscanf(line, fmt, heap, count, bytes, &dc, dbytes, &n), 6);
}

static void test_requests(void **state)
{
    (void)state;
    anr_mheap *h = make_heap("dsock one");
    start(0);
    void *keep[40];
    fill_a(h, keep, 0, 10);

    assert_true(ask("stats\n") > 0);
    assert_true(has("anr-debug 1 pid="));
    assert_true(has("stat dsock_one objects_in_use"));
    assert_true(has("\nend\n"));

    assert_true(ask("help\n") > 0);
    assert_true(has("help snapshot"));

    assert_true(ask("fdr 5\n") > 0);
    assert_true(has("fdrheap dsock_one 4096 5\n"));
    assert_int_equal(count_lines("fdr dsock_one "), 5);
    assert_true(has("module 0x"));

    assert_true(ask("verify\n") > 0);
    assert_true(has("verify dsock_one ok\n"));

    assert_true(ask("leaks\n") > 0);
    assert_true(has("leaks dsock_one nomarkers\n"));

    /* snapshot: site_a's ten blocks in one group. */
    assert_true(ask("snapshot\n") > 0);
    const char *g = group_of("group", (void *)site_a, 64);
    assert_non_null(g);
    unsigned long long c, b;
    long long db;
    parse_group(g, "group", &c, &b, &db);
    assert_int_equal(c, 10);
    assert_int_equal(b, 1000);

    /* diff: site_b grew by 30 blocks, site_a shrank by 5. */
    for (int i = 10; i < 40; i++)
        keep[i] = site_b(h, 50);
    for (int i = 0; i < 5; i++)
        anr_free(keep[i]);
    assert_true(ask("diff\n") > 0);
    g = group_of("change", (void *)site_b, 64);
    assert_non_null(g);
    parse_group(g, "change", &c, &b, &db);
    assert_int_equal(c, 30);
    assert_int_equal(db, 1500);
    g = group_of("change", (void *)site_a, 64);
    assert_non_null(g);
    parse_group(g, "change", &c, &b, &db);
    assert_int_equal(c, 5);
    assert_int_equal(db, -500);

    /* The baseline stays: a second diff says the same; then shrink site_b. */
    for (int i = 10; i < 40; i++)
        anr_free(keep[i]);
    assert_true(ask("diff\n") > 0);
    assert_null(group_of("change", (void *)site_b, 64)); /* back to the baseline */

    for (int i = 5; i < 10; i++)
        anr_free(keep[i]);
    anr_debug_socket_stop();
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0); /* removed */
    anr_heap_destroy(h);
}

typedef struct owned {
    void *p[8];
    int n;
} owned;

static void mark_owned(void *ctx, anr_mheap *h)
{
    (void)h;
    owned *o = ctx;
    for (int i = 0; i < o->n; i++)
        anr_mark(o->p[i]);
}

/* leaks: a report-only collection; nothing is freed. */
static void test_leaks(void **state)
{
    (void)state;
    anr_mheap *h = make_heap("dsock gc");
    owned o = {.n = 0};
    void *lost[3];
    for (int i = 0; i < 5; i++)
        o.p[o.n++] = site_a(h, 40);
    for (int i = 0; i < 3; i++)
        lost[i] = site_b(h, 24);
    assert_int_equal(anr_heap_add_marker(h, mark_owned, &o), 0);
    start(0);
    anr_heap_stats before, after;
    anr_heap_get_stats(h, &before);
    assert_true(ask("leaks\n") > 0);
    assert_int_equal(count_lines("leak dsock_gc "), 3);
    assert_true(has("leaks dsock_gc live=8 marked=5 garbage=3 bytes=72 shown=3\n"));
    anr_heap_get_stats(h, &after);
    assert_int_equal(after.objects_in_use, before.objects_in_use); /* not freed */
    for (int i = 0; i < 3; i++)
        assert_int_equal(anr_check(lost[i]), 0);
    anr_debug_socket_stop();
    for (int i = 0; i < 3; i++)
        anr_free(lost[i]);
    for (int i = 0; i < o.n; i++)
        anr_free(o.p[i]);
    anr_heap_destroy(h);
}

static void test_mode_and_owner(void **state)
{
    (void)state;
    start(0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(anr_debug_socket_start(dir, 0), EALREADY);
    anr_debug_socket_stop();
}

static void test_refusals(void **state)
{
    (void)state;
    anr_mheap *h = make_heap("dsock two");
    void *p = site_a(h, 77);
    start(0);
    anr_heap_stats before, after;
    anr_heap_get_stats(h, &before);

    /* Unknown, malformed, oversized, two lines, bad argument, nothing at all. */
    const char *bad[] = {"frobnicate\n",   "stats extra\n", "sta\x01ts\n",    "fdr 0\n",
                         "fdr 99999999\n", "fdr x\n",       "stats\nstats\n", "stats"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_true(ds_request(path, bad[i], strlen(bad[i]), reply, sizeof(reply), NULL) > 0);
        assert_true(strncmp(reply, "error: ", 7) == 0);
        assert_ptr_equal(strchr(reply, '\n'), reply + strlen(reply) - 1); /* one line */
    }
    char big[70000];
    memset(big, 'a', sizeof(big));
    assert_true(ds_request(path, big, sizeof(big), reply, sizeof(reply), NULL) > 0);
    assert_string_equal(reply, "error: request too long (at most 255 bytes)\n");

    /* A peer that connects and says nothing is timed out; others wait, then go on. */
    int idle = ds_connect(path);
    assert_true(idle >= 0);
    char tmp[256];
    assert_true(ds_exchange(idle, "", 0, tmp, sizeof(tmp)) > 0);
    assert_string_equal(tmp, "error: timed out waiting for a request\n");
    close(idle);

    /* Another uid: the 0600 file keeps nobody out; with CAP_DAC_OVERRIDE it
     * gets in, and SO_PEERCRED refuses it. */
    char out[4096];
    assert_int_equal(ds_as_nobody(path, false, out, sizeof(out)), 0);
    char want[32];
    snprintf(want, sizeof(want), "E%d", EACCES);
    assert_string_equal(out, want);
    assert_int_equal(ds_as_nobody(path, true, out, sizeof(out)), 0);
    assert_string_equal(out, "error: permission denied (peer uid 65534)\n");

    /* Nothing was disturbed: the heap is as it was and the server answers. */
    anr_heap_get_stats(h, &after);
    assert_int_equal(after.objects_in_use, before.objects_in_use);
    assert_int_equal(after.bad_pointers, 0);
    assert_true(ask("verify\n") > 0);
    assert_true(has("verify dsock_two ok\n"));
    assert_int_equal(anr_check(p), 0);
    anr_free(p);
    anr_heap_destroy(h);
    anr_debug_socket_stop();
}

static void serve_all(void)
{
    while (anr_debug_socket_serve() == 0)
        ;
}

static void test_poll_mode(void **state)
{
    (void)state;
    start(ANR_DSOCK_NO_THREAD);
    assert_true(anr_debug_socket_fd() >= 0);
    assert_int_equal(anr_debug_socket_serve(), EAGAIN); /* nobody waiting */
    assert_true(ds_request(path, "stats\n", 6, reply, sizeof(reply), serve_all) > 0);
    assert_true(has("anr-debug 1"));
    assert_true(has("\nend\n"));
    anr_debug_socket_stop();
    assert_int_equal(anr_debug_socket_fd(), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leaks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mode_and_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_mode, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* libmbclient never allocates: this program interposes malloc & co. with
 * counters (forwarding to glibc's __libc_* functions) and runs every client
 * call against a real daemon while the counters are armed, including a
 * give-back handled through mb_client_dispatch and one handled inline while
 * waiting for a reply, a refused connect and a status read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mbtest.h"
#include "membroker.h"

/* ---- counting allocator ---- */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_bool armed;
static atomic_uint allocs;

static void count(void)
{
    if (atomic_load(&armed)) atomic_fetch_add(&allocs, 1);
}

void *malloc(size_t n)
{
    count();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t s)
{
    count();
    return __libc_calloc(n, s);
}

void *realloc(void *p, size_t n)
{
    count();
    return __libc_realloc(p, n);
}

void *memalign(size_t a, size_t n)
{
    count();
    return __libc_memalign(a, n);
}

void *aligned_alloc(size_t a, size_t n)
{
    count();
    return __libc_memalign(a, n);
}

int posix_memalign(void **out, size_t a, size_t n)
{
    count();
    void *p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    count();
    return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void free(void *p)
{
    __libc_free(p);
}

static void arm(void)
{
    atomic_store(&allocs, 0);
    atomic_store(&armed, true);
}

static unsigned disarm(void)
{
    atomic_store(&armed, false);
    return atomic_load(&allocs);
}

/* ---- the give-back side ---- */

static uint64_t held;
static unsigned callbacks;

static uint64_t give_back(void *ctx, uint64_t pages, mb_urgency urgency)
{
    (void)ctx;
    (void)urgency;
    callbacks++;
    uint64_t n = pages < held ? pages : held;
    held -= n;
    return n;
}

/* A child that RESERVEs `pages` (forcing a give-back from us), reports the
 * result on a pipe byte and exits. Spawned while disarmed. */
static pid_t spawn_reserver(const char *sock, uint64_t pages, int *result_fd)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        mb_client c;
        char r = 'x';
        if (mb_client_connect(&c, sock, MB_SIMPLE, NULL, NULL) == 0 &&
            mb_reserve(&c, pages, 10000) == 0)
            r = 'k';
        if (write(p[1], &r, 1) != 1) _exit(2);
        mb_client_close(&c);
        _exit(0);
    }
    close(p[1]);
    *result_fd = p[0];
    return pid;
}

static void test_client_never_allocates(void **state)
{
    (void)state;
    mbt_daemon d;
    static const char *const extra[] = {"--giveback-timeout", "10000", NULL};
    mbt_start(&d, "1M", extra);
    uint64_t pool = (UINT64_C(1) << 20) / (uint64_t)sysconf(_SC_PAGESIZE);
    char missing[256];
    snprintf(missing, sizeof missing, "%s/missing.sock", d.dir);

    mb_client c;
    mb_balance b;
    mb_pool_info pi;
    int rc_connect, rc_missing, rc_reserve_try, rc_return_bad, rc_status, rc_query;
    int64_t got;

    arm();
    rc_missing = mb_client_connect(&c, missing, MB_BIDIRECTIONAL, give_back, NULL);
    rc_connect = mb_client_connect(&c, d.sock, MB_BIDIRECTIONAL, give_back, NULL);
    got = mb_request(&c, pool);
    rc_reserve_try = mb_reserve(&c, 1, 0);
    rc_return_bad = mb_return(&c, pool + 1);
    rc_query = mb_query(&c, &b);
    rc_status = mb_status(d.sock, &pi, NULL, NULL);
    unsigned n1 = disarm();
    assert_int_equal(rc_missing, -ENOENT);
    assert_int_equal(rc_connect, 0);
    assert_int_equal(got, (int64_t)pool);
    assert_int_equal(rc_reserve_try, -EAGAIN);
    assert_int_equal(rc_return_bad, -EINVAL);
    assert_int_equal(rc_query, 0);
    assert_int_equal(b.held_pages, pool);
    assert_int_equal(rc_status, 0);
    assert_int_equal(pi.clients, 1);
    assert_int_equal(n1, 0);
    held = pool;

    /* a give-back through the caller's poll loop and mb_client_dispatch */
    int result_fd;
    pid_t pid = spawn_reserver(d.sock, 10, &result_fd);
    arm();
    int dispatched = 0;
    struct pollfd p[2] = {{.fd = mb_client_fd(&c), .events = POLLIN},
                          {.fd = result_fd, .events = POLLIN}};
    while (!p[1].revents) {
        if (poll(p, 2, 20000) <= 0) break;
        if (p[0].revents) {
            int r = mb_client_dispatch(&c);
            if (r < 0) break;
            dispatched += r;
        }
    }
    unsigned n2 = disarm();
    char r;
    assert_int_equal(read(result_fd, &r, 1), 1);
    assert_int_equal(r, 'k');
    close(result_fd);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_int_equal(dispatched, 1);
    assert_int_equal(callbacks, 1);
    assert_int_equal(n2, 0);

    /* a give-back handled inline while this thread waits for a reply: a
     * second client of ours holds the rest, and asks for more (it is never
     * asked to give back itself while it waits), so the daemon asks `c` */
    mb_client c2;
    assert_int_equal(mb_client_connect(&c2, d.sock, MB_SIMPLE, NULL, NULL), 0);
    /* c2 takes the 10 pages the first child left free when it exited, so
     * that the next RESERVE needs a give-back from c */
    assert_int_equal(mb_reserve(&c2, 10, 10000), 0);
    pid = spawn_reserver(d.sock, 5, &result_fd);
    /* the child's RESERVE waits for a give-back from `c`; mb_query on `c`
     * receives the GIVEBACK before (or after) its reply and handles it */
    arm();
    int rc_q2 = 0;
    unsigned before = callbacks;
    while (callbacks == before && rc_q2 == 0) {
        struct pollfd pc = {.fd = mb_client_fd(&c), .events = POLLIN};
        if (poll(&pc, 1, 20000) <= 0) break;
        rc_q2 = mb_query(&c, &b); /* finds the GIVEBACK waiting ahead of its reply */
    }
    int rc_ret = mb_return(&c, 1);
    int64_t got2 = mb_request(&c2, 1);
    mb_client_close(&c);
    mb_client_close(&c2);
    unsigned n3 = disarm();
    assert_int_equal(rc_q2, 0);
    assert_int_equal(callbacks, before + 1);
    assert_int_equal(rc_ret, 0);
    assert_true(got2 >= 0);
    assert_int_equal(n3, 0);
    assert_int_equal(read(result_fd, &r, 1), 1);
    assert_int_equal(r, 'k');
    close(result_fd);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    mbt_stop(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_never_allocates),
    };
    return cmocka_run_group_tests_name("membroker_noalloc", tests, NULL, NULL);
}

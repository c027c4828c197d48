/* mb_bench: how long a REQUEST and a RESERVE with one give-back take.
 *
 *   mb_bench MEMBROKERD [ITERATIONS]
 *
 * Starts its own membrokerd (pool 64 MiB) on a socket in a temporary
 * directory, then measures, over ITERATIONS rounds (default 2000):
 *  - REQUEST: mb_request of 1 page with the pool free (one round trip);
 *    the page is returned between rounds (not timed);
 *  - RESERVE with one give-back: a bidirectional client in another process
 *    holds the whole pool and gives back when asked; mb_reserve of 16 pages
 *    waits for the daemon to ask it, for its answer, and for the grant. The
 *    helper takes the pages back between rounds (not timed).
 * Prints the median, p99 and max in microseconds.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "membroker.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *ns, int n)
{
    qsort(ns, (size_t)n, sizeof *ns, cmp_u64);
    printf("%-32s n=%d  median %7.1f us  p99 %7.1f us  max %7.1f us\n", what, n,
           (double)ns[n / 2] / 1000.0, (double)ns[(size_t)n * 99 / 100] / 1000.0,
           (double)ns[n - 1] / 1000.0);
}

static void die(const char *what, long rc)
{
    fprintf(stderr, "mb_bench: %s: %s\n", what, strerror((int)-rc));
    exit(1);
}

/* ---- the bidirectional helper ---- */

static uint64_t helper_held;

static uint64_t give(void *ctx, uint64_t pages, mb_urgency u)
{
    (void)ctx;
    (void)u;
    uint64_t n = pages < helper_held ? pages : helper_held;
    helper_held -= n;
    return n;
}

/* Holds the pool; on each byte from `cmd` takes back what it gave. */
static void helper(const char *sock, int cmd, int ack)
{
    mb_client c;
    if (mb_client_connect(&c, sock, MB_BIDIRECTIONAL, give, NULL) != 0) _exit(2);
    mb_balance b;
    if (mb_query(&c, &b) != 0) _exit(3);
    int64_t got = mb_request(&c, b.pool_pages);
    if (got != (int64_t)b.pool_pages) _exit(4);
    helper_held = (uint64_t)got;
    char x = 'r';
    if (write(ack, &x, 1) != 1) _exit(5);
    struct pollfd p[2] = {{.fd = cmd, .events = POLLIN},
                          {.fd = mb_client_fd(&c), .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) continue;
        if (p[1].revents && mb_client_dispatch(&c) < 0) _exit(6);
        if (p[0].revents) {
            if (read(cmd, &x, 1) != 1) break;
            int64_t back = mb_request(&c, b.pool_pages - helper_held);
            if (back < 0) _exit(7);
            helper_held += (uint64_t)back;
            if (write(ack, &x, 1) != 1) _exit(8);
        }
    }
    mb_client_close(&c);
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: mb_bench MEMBROKERD [ITERATIONS]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 2000;
    if (n < 10) n = 10;
    signal(SIGPIPE, SIG_IGN);

    char dir[] = "/tmp/mb_bench.XXXXXX", sock[100], notify[100];
    if (!mkdtemp(dir)) die("mkdtemp", -errno);
    snprintf(sock, sizeof sock, "%s/mb.sock", dir);
    snprintf(notify, sizeof notify, "%s/notify", dir);
    int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", notify);
    if (bind(nfd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind", -errno);
    pid_t dpid = fork();
    if (dpid == 0) {
        setenv("NOTIFY_SOCKET", notify, 1);
        execl(argv[1], argv[1], "--socket", sock, "--pool", "64M", "--log-level", "warning",
              (char *)NULL);
        _exit(127);
    }
    char buf[128];
    struct pollfd np = {.fd = nfd, .events = POLLIN};
    if (poll(&np, 1, 10000) <= 0 || recv(nfd, buf, sizeof buf, 0) <= 0)
        die("daemon start", -ETIMEDOUT);

    uint64_t *t = calloc((size_t)n, sizeof *t);
    mb_client c;
    int rc = mb_client_connect(&c, sock, MB_SIMPLE, NULL, NULL);
    if (rc < 0) die("connect", rc);

    /* REQUEST, pool free */
    for (int i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        int64_t got = mb_request(&c, 1);
        t[i] = now_ns() - t0;
        if (got != 1) die("request", got < 0 ? got : -EIO);
        if ((rc = mb_return(&c, 1)) < 0) die("return", rc);
    }
    report("REQUEST (1 page, pool free)", t, n);

    /* RETURN, for reference */
    for (int i = 0; i < n; i++) {
        if (mb_request(&c, 1) != 1) die("request", -EIO);
        uint64_t t0 = now_ns();
        rc = mb_return(&c, 1);
        t[i] = now_ns() - t0;
        if (rc < 0) die("return", rc);
    }
    report("RETURN (1 page)", t, n);

    /* RESERVE with one give-back */
    int cmd[2], ack[2];
    if (pipe(cmd) < 0 || pipe(ack) < 0) die("pipe", -errno);
    pid_t hpid = fork();
    if (hpid == 0) {
        close(cmd[1]);
        close(ack[0]);
        helper(sock, cmd[0], ack[1]);
    }
    close(cmd[0]);
    close(ack[1]);
    char x;
    if (read(ack[0], &x, 1) != 1) die("helper start", -EIO);
    for (int i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        rc = mb_reserve(&c, 16, 5000);
        t[i] = now_ns() - t0;
        if (rc < 0) die("reserve", rc);
        if ((rc = mb_return(&c, 16)) < 0) die("return", rc);
        x = 'g';
        if (write(cmd[1], &x, 1) != 1 || read(ack[0], &x, 1) != 1) die("helper", -EIO);
    }
    report("RESERVE (16 pages, 1 give-back)", t, n);

    close(cmd[1]);
    waitpid(hpid, NULL, 0);
    mb_client_close(&c);
    kill(dpid, SIGTERM);
    waitpid(dpid, NULL, 0);
    unlink(notify);
    rmdir(dir);
    free(t);
    return 0;
}

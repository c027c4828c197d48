/* Helpers for the multi-process membroker tests (mbtest.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mbtest.h"

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

#define WAIT_MS 20000 /* "something is wrong", not a performance bound */

/* Daemons still running when the program exits (a failed assertion skips
 * mbt_stop) are killed, so that a failure does not hang the test runner. */
static pid_t spawned[16];

static void kill_spawned(void)
{
    for (size_t i = 0; i < sizeof spawned / sizeof spawned[0]; i++)
        if (spawned[i] > 0 && waitpid(spawned[i], NULL, WNOHANG) == 0) {
            kill(spawned[i], SIGKILL);
            waitpid(spawned[i], NULL, 0);
        }
}

static void remember(pid_t pid)
{
    static bool registered;
    if (!registered) atexit(kill_spawned);
    registered = true;
    for (size_t i = 0; i < sizeof spawned / sizeof spawned[0]; i++)
        if (spawned[i] <= 0 || waitpid(spawned[i], NULL, WNOHANG) != 0) {
            spawned[i] = pid;
            return;
        }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void mbt_prepare(mbt_daemon *d)
{
    memset(d, 0, sizeof *d);
    d->pid = -1;
    d->stderr_fd = -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(d->dir, sizeof d->dir, "%s/mbtest.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(d->dir));
    snprintf(d->sock, sizeof d->sock, "%s/mb.sock", d->dir);
    snprintf(d->notify, sizeof d->notify, "%s/notify.sock", d->dir);
    d->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(d->notify_fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", d->notify);
    assert_int_equal(bind(d->notify_fd, (struct sockaddr *)&sa, sizeof sa), 0);
}

void mbt_spawn(mbt_daemon *d, const char *const *args, int listen_fd, bool capture_stderr)
{
    const char *daemon = getenv("MEMBROKERD");
    if (!daemon) fail_msg("MEMBROKERD is not set (run through meson test)");
    int errp[2] = {-1, -1};
    if (capture_stderr) assert_int_equal(pipe2(errp, O_CLOEXEC), 0);
    /* meson test sets MESON_EXE_WRAPPER for a cross build (qemu-i386 for
     * the 32-bit one): the daemon runs through it like the tests do */
    static char wrapper[256];
    const char *argv[40];
    size_t n = 0;
    const char *w = getenv("MESON_EXE_WRAPPER");
    if (w && *w) {
        snprintf(wrapper, sizeof wrapper, "%s", w);
        for (char *tok = strtok(wrapper, " "); tok && n < 8; tok = strtok(NULL, " "))
            argv[n++] = tok;
    }
    argv[n++] = daemon;
    for (size_t i = 0; args && args[i] && n < 39; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("NOTIFY_SOCKET", d->notify, 1);
        if (capture_stderr) dup2(errp[1], 2);
        if (listen_fd >= 0) {
            if (listen_fd != 3) {
                dup2(listen_fd, 3);
            } else {
                fcntl(3, F_SETFD, 0);
            }
            char pidbuf[32];
            snprintf(pidbuf, sizeof pidbuf, "%ld", (long)getpid());
            setenv("LISTEN_PID", pidbuf, 1);
            setenv("LISTEN_FDS", "1", 1);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    d->pid = pid;
    remember(pid);
    if (capture_stderr) {
        close(errp[1]);
        d->stderr_fd = errp[0];
        fcntl(d->stderr_fd, F_SETFL, O_NONBLOCK);
    }
}

bool mbt_wait_notify(mbt_daemon *d, const char *what)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    while (now_ms() < deadline) {
        struct pollfd p = {.fd = d->notify_fd, .events = POLLIN};
        int n = poll(&p, 1, 100);
        if (n > 0) {
            char buf[256];
            ssize_t len = recv(d->notify_fd, buf, sizeof buf - 1, 0);
            if (len > 0) {
                buf[len] = '\0';
                if (strstr(buf, what)) return true;
            }
        } else if (!mbt_alive(d)) {
            return false;
        }
    }
    return false;
}

void mbt_start(mbt_daemon *d, const char *pool, const char *const *extra)
{
    mbt_prepare(d);
    const char *args[24];
    size_t n = 0;
    args[n++] = "--socket";
    args[n++] = d->sock;
    args[n++] = "--pool";
    args[n++] = pool;
    for (size_t i = 0; extra && extra[i] && n < 23; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    mbt_spawn(d, args, -1, false);
    if (!mbt_wait_notify(d, "READY=1")) fail_msg("membrokerd did not become ready");
}

bool mbt_alive(mbt_daemon *d)
{
    if (d->pid <= 0) return false;
    int st;
    pid_t r = waitpid(d->pid, &st, WNOHANG);
    if (r == d->pid) {
        fprintf(stderr, "membrokerd exited (status 0x%x)\n", st);
        d->pid = -1;
        return false;
    }
    return true;
}

int mbt_wait_exit(mbt_daemon *d)
{
    int st = -1;
    if (d->pid > 0) {
        assert_int_equal(waitpid(d->pid, &st, 0), d->pid);
        d->pid = -1;
    }
    return st;
}

void mbt_cleanup_dir(mbt_daemon *d)
{
    if (d->notify_fd > 0) close(d->notify_fd);
    d->notify_fd = -1;
    if (d->stderr_fd >= 0) close(d->stderr_fd);
    d->stderr_fd = -1;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
    if (d->dir[0]) (void)!system(cmd);
}

void mbt_stop(mbt_daemon *d)
{
    bool was_alive = mbt_alive(d);
    if (was_alive) {
        kill(d->pid, SIGTERM);
        int st = mbt_wait_exit(d);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    mbt_cleanup_dir(d);
    if (!was_alive) fail_msg("membrokerd died during the test");
}

size_t mbt_read_stderr(mbt_daemon *d, char *buf, size_t cap)
{
    size_t len = 0;
    while (d->stderr_fd >= 0 && len + 1 < cap) {
        ssize_t n = read(d->stderr_fd, buf + len, cap - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return len;
}

int mbt_raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

void mbt_raw_send(int fd, const void *buf, size_t len)
{
    /* a refused connection may already be closed: that is for the caller
     * to see on the next receive */
    (void)!send(fd, buf, len, MSG_NOSIGNAL);
}

void mbt_raw_send_msg(int fd, const mb_msg *m)
{
    uint8_t buf[MB_MSG_SIZE];
    assert_int_equal(_mb_msg_encode(m, buf), MB_MSG_SIZE);
    mbt_raw_send(fd, buf, sizeof buf);
}

int mbt_raw_recv(int fd, mb_msg *m)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, WAIT_MS) <= 0) return -1;
    uint8_t buf[MB_MSG_SIZE + 16];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    /* a peer that closed with our records unread reports ECONNRESET once,
     * ahead of the records it sent before closing */
    if (n < 0 && errno == ECONNRESET) n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return 0;
    assert_int_equal(_mb_msg_decode(buf, (size_t)n, m), 0);
    return 1;
}

void mbt_check_serves(const char *sock, uint64_t pool_pages, uint64_t free_pages)
{
    mb_client c;
    assert_int_equal(mb_client_connect(&c, sock, MB_SIMPLE, NULL, NULL), 0);
    mb_balance b;
    assert_int_equal(mb_query(&c, &b), 0);
    assert_int_equal(b.pool_pages, pool_pages);
    assert_int_equal(b.free_pages, free_pages);
    assert_int_equal(b.held_pages, 0);
    if (free_pages > 0) {
        assert_int_equal(mb_request(&c, 1), 1);
        assert_int_equal(mb_query(&c, &b), 0);
        assert_int_equal(b.held_pages, 1);
        assert_int_equal(b.free_pages, free_pages - 1);
        assert_int_equal(mb_return(&c, 1), 0);
    }
    assert_int_equal(mb_return(&c, 1), -EINVAL);
    mb_client_close(&c);
}

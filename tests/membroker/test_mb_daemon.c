/* Multi-process tests: the real membrokerd on a socket in a temporary
 * directory, clients in this process and in forked children.
 *
 * No test depends on timing: waits are for events (a reply, a notify
 * message, a pipe byte); the only time limits are the daemon's own
 * deadlines under test and a 20 s "something is wrong" bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mbtest.h"
#include "membroker.h"
#include "protocol.h"

#define POOL "1M"

static uint64_t pool_pages(void)
{
    return (UINT64_C(1) << 20) / (uint64_t)sysconf(_SC_PAGESIZE);
}

static int setup_daemon(void **state)
{
    static mbt_daemon d;
    static const char *const extra[] = {"--giveback-timeout", "100", "--request-timeout", "100",
                                        NULL};
    mbt_start(&d, POOL, extra);
    *state = &d;
    return 0;
}

static int teardown_daemon(void **state)
{
    mbt_stop(*state);
    return 0;
}

/* ---- child processes ---- */

typedef struct child {
    pid_t pid;
    int to_child;   /* parent writes; closing it tells the child to leave */
    int from_child; /* child writes one byte when ready */
} child;

static uint64_t child_held;

static uint64_t give_all_asked(void *ctx, uint64_t pages, mb_urgency urgency)
{
    (void)ctx;
    (void)urgency;
    uint64_t n = pages < child_held ? pages : child_held;
    child_held -= n;
    return n;
}

typedef enum child_mode {
    CHILD_GIVES_BACK, /* bidirectional, dispatches give-backs */
    CHILD_SILENT,     /* bidirectional, never answers */
    CHILD_SIMPLE,     /* simple, holds until told or killed */
} child_mode;

/* A child that takes `pages` (the whole pool if it can) and holds them. */
static child spawn_holder(const char *sock, child_mode mode, uint64_t pages)
{
    int down[2], up[2];
    assert_int_equal(pipe2(down, O_CLOEXEC), 0);
    assert_int_equal(pipe2(up, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        mb_client c;
        mb_kind kind = mode == CHILD_SIMPLE ? MB_SIMPLE : MB_BIDIRECTIONAL;
        if (mb_client_connect(&c, sock, kind, give_all_asked, NULL) != 0) _exit(10);
        int64_t got = mb_request(&c, pages);
        if (got != (int64_t)pages) _exit(11);
        child_held = pages;
        char ok = 'r';
        if (write(up[1], &ok, 1) != 1) _exit(12);
        struct pollfd p[2] = {{.fd = down[0], .events = POLLIN},
                              {.fd = mb_client_fd(&c), .events = POLLIN}};
        for (;;) {
            int nfds = mode == CHILD_GIVES_BACK ? 2 : 1;
            if (poll(p, (nfds_t)nfds, -1) < 0) continue;
            if (p[0].revents) break;
            if (p[1].revents && mb_client_dispatch(&c) < 0) _exit(13);
        }
        /* report what it holds now, as the daemon sees it */
        mb_balance b;
        if (mb_query(&c, &b) != 0) _exit(14);
        mb_client_close(&c);
        _exit(b.held_pages == child_held ? 0 : 15);
    }
    close(down[0]);
    close(up[1]);
    child ch = {.pid = pid, .to_child = down[1], .from_child = up[0]};
    char ok;
    assert_int_equal(read(ch.from_child, &ok, 1), 1);
    return ch;
}

static void finish_child(child *ch)
{
    close(ch->to_child);
    close(ch->from_child);
    int st;
    assert_int_equal(waitpid(ch->pid, &st, 0), ch->pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void kill_child(child *ch)
{
    kill(ch->pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(ch->pid, &st, 0), ch->pid);
    close(ch->to_child);
    close(ch->from_child);
}

/* ---- tests ---- */

/* A greedy client takes quota until the pool is empty, then gets 0 and
 * -EAGAIN; what it returns is free again. */
static void test_greedy_until_empty(void **state)
{
    mbt_daemon *d = *state;
    uint64_t pool = pool_pages(), total = 0;
    mb_client c;
    assert_int_equal(mb_client_connect(&c, d->sock, MB_SIMPLE, NULL, NULL), 0);
    for (;;) {
        int64_t got = mb_request(&c, 10);
        assert_true(got >= 0 && got <= 10);
        if (got == 0) break;
        total += (uint64_t)got;
    }
    assert_int_equal(total, pool);
    assert_int_equal(mb_request(&c, 1), 0);
    assert_int_equal(mb_reserve(&c, 1, 0), -EAGAIN);
    assert_int_equal(mb_reserve(&c, pool + 1, 1000), -ENOSPC);
    mb_balance b;
    assert_int_equal(mb_query(&c, &b), 0);
    assert_int_equal(b.held_pages, pool);
    assert_int_equal(b.free_pages, 0);
    assert_int_equal(b.pool_pages, pool);
    assert_int_equal(b.page_size, (uint64_t)sysconf(_SC_PAGESIZE));
    /* a second process gets nothing either */
    mbt_check_serves(d->sock, pool, 0);
    assert_int_equal(mb_return(&c, pool + 1), -EINVAL); /* more than held: nothing returned */
    assert_int_equal(mb_return(&c, pool), 0);
    assert_int_equal(mb_query(&c, &b), 0);
    assert_int_equal(b.free_pages, pool);
    mb_client_close(&c);
    assert_false(mb_client_connected(&c));
    assert_int_equal(mb_request(&c, 1), -ENOTCONN);
}

/* A bidirectional client gives back so that another's RESERVE succeeds. */
static void test_giveback_lets_reserve_succeed(void **state)
{
    mbt_daemon *d = *state;
    uint64_t pool = pool_pages();
    child ch = spawn_holder(d->sock, CHILD_GIVES_BACK, pool);
    mb_client c;
    assert_int_equal(mb_client_connect(&c, d->sock, MB_SIMPLE, NULL, NULL), 0);
    assert_int_equal(mb_reserve(&c, pool / 4, 10000), 0);
    mb_balance b;
    assert_int_equal(mb_query(&c, &b), 0);
    assert_int_equal(b.held_pages, pool / 4);
    assert_int_equal(b.free_pages, 0);
    /* the daemon's table agrees: the child holds the rest */
    mb_pool_info pi;
    assert_int_equal(mb_status(d->sock, &pi, NULL, NULL), 0);
    assert_int_equal(pi.clients, 2);
    /* a REQUEST (normal urgency) is also served by a give-back */
    assert_int_equal(mb_request(&c, pool / 4), (int64_t)(pool / 4));
    finish_child(&ch); /* checks the child's own count matches the daemon's */
    mb_client_close(&c);
    assert_int_equal(mb_client_connect(&c, d->sock, MB_SIMPLE, NULL, NULL), 0);
    assert_int_equal(mb_reserve(&c, pool, 10000), 0); /* everything came back */
    mb_client_close(&c);
}

/* A client killed with SIGKILL gives its quota back. */
static void test_killed_client_returns_quota(void **state)
{
    mbt_daemon *d = *state;
    uint64_t pool = pool_pages();
    child ch = spawn_holder(d->sock, CHILD_SIMPLE, pool);
    mb_client c;
    assert_int_equal(mb_client_connect(&c, d->sock, MB_SIMPLE, NULL, NULL), 0);
    assert_int_equal(mb_reserve(&c, pool, 0), -EAGAIN);
    kill_child(&ch);
    /* waits for the event (the daemon seeing the death), not for a time */
    assert_int_equal(mb_reserve(&c, pool, 10000), 0);
    mb_client_close(&c);
}

/* A bidirectional client that never answers a give-back: the RESERVE and the
 * REQUEST still resolve after the give-back deadline, and the daemon goes on
 * serving everyone. */
static void test_silent_giveback_client(void **state)
{
    mbt_daemon *d = *state;
    uint64_t pool = pool_pages();
    child ch = spawn_holder(d->sock, CHILD_SILENT, pool);
    mb_client c;
    assert_int_equal(mb_client_connect(&c, d->sock, MB_SIMPLE, NULL, NULL), 0);
    assert_int_equal(mb_reserve(&c, 10, 1000), -ETIMEDOUT);
    assert_int_equal(mb_request(&c, 10), 0);
    mbt_check_serves(d->sock, pool, 0);
    mb_pool_info pi;
    assert_int_equal(mb_status(d->sock, &pi, NULL, NULL), 0);
    assert_int_equal(pi.free_pages, 0);
    kill_child(&ch);
    assert_int_equal(mb_reserve(&c, 10, 10000), 0);
    mb_client_close(&c);
}

/* Receives the next record and checks it is an ERROR with `status`. */
static void expect_error(int fd, int status)
{
    mb_msg m;
    assert_int_equal(mbt_raw_recv(fd, &m), 1);
    assert_int_equal(m.type, MB_T_ERROR);
    assert_int_equal(m.status, status);
}

static void expect_eof(int fd)
{
    mb_msg m;
    assert_int_equal(mbt_raw_recv(fd, &m), 0);
}

static void hello(int fd)
{
    mb_msg h = {.type = MB_T_HELLO, .seq = 1, .kind = MB_SIMPLE}, m;
    mbt_raw_send_msg(fd, &h);
    assert_int_equal(mbt_raw_recv(fd, &m), 1);
    assert_int_equal(m.type, MB_T_WELCOME);
    assert_int_equal(m.seq, 1);
}

/* Malformed and truncated records, a bad version, an unknown type, records
 * out of order, a spoofed RETURN: each costs that client an error reply or
 * its connection, and the daemon still serves a well-behaved client. */
static void test_malformed_input(void **state)
{
    mbt_daemon *d = *state;
    uint64_t pool = pool_pages();
    uint8_t good[MB_MSG_SIZE];
    mb_msg h = {.type = MB_T_HELLO, .seq = 7, .kind = MB_SIMPLE};
    assert_int_equal(_mb_msg_encode(&h, good), MB_MSG_SIZE);

    /* garbage: error, then disconnect (framing cannot be trusted) */
    int fd = mbt_raw_connect(d->sock);
    uint8_t junk[MB_MSG_SIZE];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)(i * 37 + 11);
    mbt_raw_send(fd, junk, sizeof junk);
    expect_error(fd, -EBADMSG);
    expect_eof(fd);
    close(fd);
    mbt_check_serves(d->sock, pool, pool);

    /* truncated record */
    fd = mbt_raw_connect(d->sock);
    mbt_raw_send(fd, good, MB_MSG_SIZE / 2);
    expect_error(fd, -EBADMSG);
    expect_eof(fd);
    close(fd);

    /* a record longer than MB_MSG_SIZE */
    fd = mbt_raw_connect(d->sock);
    uint8_t big[3 * MB_MSG_SIZE];
    memset(big, 0, sizeof big);
    memcpy(big, good, sizeof good);
    mbt_raw_send(fd, big, sizeof big);
    expect_error(fd, -EBADMSG);
    expect_eof(fd);
    close(fd);

    /* an empty record */
    fd = mbt_raw_connect(d->sock);
    mbt_raw_send(fd, good, 0);
    expect_eof(fd);
    close(fd);
    mbt_check_serves(d->sock, pool, pool);

    /* another protocol version */
    fd = mbt_raw_connect(d->sock);
    uint8_t v2[MB_MSG_SIZE];
    memcpy(v2, good, sizeof v2);
    v2[4] = 2;
    mbt_raw_send(fd, v2, sizeof v2);
    expect_error(fd, -EPROTONOSUPPORT);
    expect_eof(fd);
    close(fd);

    /* unknown type, a field out of range, records out of order, a
     * daemon-only record: error replies, the connection stays usable */
    fd = mbt_raw_connect(d->sock);
    uint8_t unknown[MB_MSG_SIZE];
    memcpy(unknown, good, sizeof unknown);
    unknown[6] = 99;
    mbt_raw_send(fd, unknown, sizeof unknown);
    expect_error(fd, -EOPNOTSUPP);
    uint8_t badkind[MB_MSG_SIZE];
    memcpy(badkind, good, sizeof badkind);
    badkind[16] = 7;
    mbt_raw_send(fd, badkind, sizeof badkind);
    expect_error(fd, -EBADMSG);
    mb_msg req = {.type = MB_T_REQUEST, .seq = 2, .pages = 1};
    mbt_raw_send_msg(fd, &req); /* before HELLO */
    expect_error(fd, -EPROTO);
    hello(fd);
    mbt_raw_send_msg(fd, &h); /* second HELLO */
    expect_error(fd, -EPROTO);
    mb_msg gb = {.type = MB_T_GIVEBACK_REPLY, .seq = 5, .pages = 1}; /* never asked */
    mbt_raw_send_msg(fd, &gb);
    expect_error(fd, -EPROTO);
    mb_msg grant = {.type = MB_T_GRANT, .seq = 3, .pages = 100};
    mbt_raw_send_msg(fd, &grant); /* a daemon record, sent by a client */
    expect_error(fd, -EPROTO);

    /* spoofed RETURN: more than held is refused, nothing changes */
    mb_msg m;
    req.seq = 10;
    req.pages = 5;
    mbt_raw_send_msg(fd, &req);
    assert_int_equal(mbt_raw_recv(fd, &m), 1);
    assert_int_equal(m.type, MB_T_GRANT);
    assert_int_equal(m.pages, 5);
    mb_msg ret = {.type = MB_T_RETURN, .seq = 11, .pages = 6};
    mbt_raw_send_msg(fd, &ret);
    assert_int_equal(mbt_raw_recv(fd, &m), 1);
    assert_int_equal(m.type, MB_T_RETURNED);
    assert_int_equal(m.status, -EINVAL);
    assert_int_equal(m.held, 5);
    mbt_check_serves(d->sock, pool, pool - 5);
    ret.pages = UINT64_MAX; /* out of range on the wire */
    uint8_t raw[MB_MSG_SIZE];
    ret.pages = 5;
    assert_int_equal(_mb_msg_encode(&ret, raw), MB_MSG_SIZE);
    uint64_t huge = UINT64_MAX;
    memcpy(raw + 16, &huge, sizeof huge);
    mbt_raw_send(fd, raw, sizeof raw);
    expect_error(fd, -EBADMSG);
    /* still registered, still holding 5 */
    mb_msg q = {.type = MB_T_QUERY, .seq = 12};
    mbt_raw_send_msg(fd, &q);
    assert_int_equal(mbt_raw_recv(fd, &m), 1);
    assert_int_equal(m.type, MB_T_BALANCE);
    assert_int_equal(m.held, 5);
    assert_int_equal(m.free, pool - 5);
    close(fd);

    /* the 5 pages come back when it goes */
    mb_client c;
    assert_int_equal(mb_client_connect(&c, d->sock, MB_SIMPLE, NULL, NULL), 0);
    assert_int_equal(mb_reserve(&c, pool, 10000), 0);
    mb_client_close(&c);

    /* a client that keeps sending garbage with a valid header is cut off */
    fd = mbt_raw_connect(d->sock);
    for (int i = 0; i < 40; i++)
        mbt_raw_send(fd, badkind, sizeof badkind);
    int errors = 0;
    while (mbt_raw_recv(fd, &m) == 1)
        errors++;
    assert_true(errors > 0 && errors < 40);
    close(fd);
    assert_true(mbt_alive(d));
    mbt_check_serves(d->sock, pool, pool);
}

/* A flood of connections beyond the client table: the extra ones are
 * refused with -EBUSY and closed; the daemon serves normally after. */
static void test_connection_flood(void **state)
{
    (void)state;
    mbt_daemon d;
    static const char *const extra[] = {"--max-clients", "8", NULL};
    mbt_start(&d, POOL, extra);
    enum { N = 60 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = mbt_raw_connect(d.sock);
    int welcomed = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        mb_msg h = {.type = MB_T_HELLO, .seq = 1, .kind = MB_SIMPLE}, m;
        mbt_raw_send_msg(fds[i], &h);
        int r = mbt_raw_recv(fds[i], &m);
        if (r == 1 && m.type == MB_T_WELCOME) {
            welcomed++;
        } else {
            assert_true(r == 0 || (m.type == MB_T_ERROR && m.status == -EBUSY));
            refused++;
        }
    }
    assert_int_equal(welcomed, 8);
    assert_int_equal(refused, N - 8);
    /* the library reports a full table as -EBUSY */
    mb_client c;
    assert_int_equal(mb_client_connect(&c, d.sock, MB_SIMPLE, NULL, NULL), -EBUSY);
    assert_false(mb_client_connected(&c));
    mb_client_close(&c);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    /* the daemon sees the closes in its own time: wait until a slot is free */
    int rc;
    for (int tries = 0;
         (rc = mb_client_connect(&c, d.sock, MB_SIMPLE, NULL, NULL)) == -EBUSY && tries < 2000;
         tries++)
        usleep(10000);
    assert_int_equal(rc, 0);
    assert_int_equal(mb_reserve(&c, pool_pages(), 10000), 0);
    assert_int_equal(mb_return(&c, pool_pages()), 0);
    mb_client_close(&c);
    mbt_check_serves(d.sock, pool_pages(), pool_pages());
    mbt_stop(&d);
}

/* A forked child does not inherit the registration. */
static void test_fork_child_not_registered(void **state)
{
    mbt_daemon *d = *state;
    mb_client c;
    assert_int_equal(mb_client_connect(&c, d->sock, MB_SIMPLE, NULL, NULL), 0);
    assert_int_equal(mb_request(&c, 3), 3);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int code = 0;
        mb_balance b;
        if (mb_request(&c, 1) != -ENOTCONN) code |= 1;
        if (mb_query(&c, &b) != -ENOTCONN) code |= 2;
        if (mb_return(&c, 3) != -ENOTCONN) code |= 4;
        if (mb_client_connected(&c) || mb_client_fd(&c) != -1) code |= 8;
        if (mb_client_dispatch(&c) != -ENOTCONN) code |= 16;
        mb_client_close(&c); /* closes the child's copy only */
        if (mb_client_connect(&c, d->sock, MB_SIMPLE, NULL, NULL) != 0) code |= 32;
        if (mb_request(&c, 1) != 1) code |= 64;
        mb_client_close(&c);
        _exit(code);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    mb_balance b;
    assert_int_equal(mb_query(&c, &b), 0); /* the parent's registration is intact */
    assert_int_equal(b.held_pages, 3);
    assert_int_equal(mb_return(&c, 3), 0);
    mb_client_close(&c);
}

typedef struct shared_client {
    mb_client c;
    int failures;
} shared_client;

static void *hammer(void *arg)
{
    shared_client *sc = arg;
    for (int i = 0; i < 200; i++) {
        int64_t got = mb_request(&sc->c, 2);
        if (got != 2 || mb_return(&sc->c, 2) != 0)
            __atomic_add_fetch(&sc->failures, 1, __ATOMIC_RELAXED);
        mb_balance b;
        if (mb_query(&sc->c, &b) != 0) __atomic_add_fetch(&sc->failures, 1, __ATOMIC_RELAXED);
        mb_client_dispatch(&sc->c);
    }
    return NULL;
}

/* Several threads share one client: every call gets its own reply. */
static void test_threads_share_a_client(void **state)
{
    mbt_daemon *d = *state;
    static shared_client sc;
    sc.failures = 0;
    assert_int_equal(mb_client_connect(&sc.c, d->sock, MB_BIDIRECTIONAL, give_all_asked, NULL), 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &sc), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(sc.failures, 0);
    mb_balance b;
    assert_int_equal(mb_query(&sc.c, &b), 0);
    assert_int_equal(b.held_pages, 0);
    assert_int_equal(b.free_pages, pool_pages());
    mb_client_close(&sc.c);
}

/* No daemon: connect fails cleanly. */
static void test_no_daemon(void **state)
{
    mbt_daemon *d = *state;
    char path[256];
    snprintf(path, sizeof path, "%s/nobody.sock", d->dir);
    mb_client c;
    assert_int_equal(mb_client_connect(&c, path, MB_SIMPLE, NULL, NULL), -ENOENT);
    assert_false(mb_client_connected(&c));
    mb_client_close(&c);
    assert_int_equal(mb_client_connect(&c, d->sock, MB_BIDIRECTIONAL, NULL, NULL), -EINVAL);
    setenv("MEMBROKER_SOCKET", d->sock, 1); /* NULL path: the environment */
    assert_int_equal(mb_client_connect(&c, NULL, MB_SIMPLE, NULL, NULL), 0);
    unsetenv("MEMBROKER_SOCKET");
    assert_int_equal(mb_request(&c, 1), 1);
    mb_client_close(&c);
}

/* Socket activation: the daemon takes fd 3 from LISTEN_FDS/LISTEN_PID. */
static void test_socket_activation(void **state)
{
    (void)state;
    mbt_daemon d;
    mbt_prepare(&d);
    int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/activated.sock", d.dir);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 16), 0);
    char unused[200];
    snprintf(unused, sizeof unused, "%s/not-bound.sock", d.dir);
    const char *args[] = {"--pool", POOL, "--socket", unused, NULL};
    mbt_spawn(&d, args, lfd, false);
    close(lfd);
    assert_true(mbt_wait_notify(&d, "READY=1"));
    assert_int_equal(access(unused, F_OK), -1); /* it did not bind its own */
    mbt_check_serves(sa.sun_path, pool_pages(), pool_pages());
    mbt_stop(&d);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* --config, SIGHUP reload, a broken reload keeps the old configuration, and
 * a broken configuration at start is refused with file:line. */
static void test_config_and_reload(void **state)
{
    (void)state;
    mbt_daemon d;
    mbt_prepare(&d);
    char conf[256], text[512];
    snprintf(conf, sizeof conf, "%s/membroker.conf", d.dir);
    snprintf(text, sizeof text,
             "# test\nPOOL 1M\nSOCKET %s\nSOCKET_MODE 0604\nSOCKET_OWNER %u\n"
             "SOCKET_GROUP %u\nMAX_CLIENTS 4\n",
             d.sock, (unsigned)getuid(), (unsigned)getgid());
    write_file(conf, text);
    const char *args[] = {"--config", conf, NULL};
    mbt_spawn(&d, args, -1, false);
    assert_true(mbt_wait_notify(&d, "READY=1"));
    struct stat st;
    assert_int_equal(stat(d.sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0604);
    assert_int_equal(st.st_uid, getuid());
    assert_int_equal(st.st_gid, getgid());
    mbt_check_serves(d.sock, pool_pages(), pool_pages());

    snprintf(text, sizeof text, "POOL 2M\nSOCKET %s\nMAX_CLIENTS 4\nGIVEBACK_TIMEOUT 50\n", d.sock);
    write_file(conf, text);
    kill(d.pid, SIGHUP);
    assert_true(mbt_wait_notify(&d, "RELOADING=1"));
    assert_true(mbt_wait_notify(&d, "READY=1"));
    mbt_check_serves(d.sock, 2 * pool_pages(), 2 * pool_pages());

    snprintf(text, sizeof text, "POOL 3M\nSOCKET %s\nPOOL banana\n", d.sock);
    write_file(conf, text);
    kill(d.pid, SIGHUP);
    assert_true(mbt_wait_notify(&d, "RELOADING=1"));
    assert_true(mbt_wait_notify(&d, "READY=1"));
    mbt_check_serves(d.sock, 2 * pool_pages(), 2 * pool_pages()); /* kept */
    mbt_stop(&d);

    /* a broken file at start: refused, with the file and line named */
    mbt_prepare(&d);
    snprintf(conf, sizeof conf, "%s/broken.conf", d.dir);
    snprintf(text, sizeof text, "POOL 1M\nSOCKET %s\nREQUEST_TIMEOUT soon\n", d.sock);
    write_file(conf, text);
    const char *args2[] = {"--config", conf, NULL};
    mbt_spawn(&d, args2, -1, true);
    int status = mbt_wait_exit(&d);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
    char err[4096];
    mbt_read_stderr(&d, err, sizeof err);
    char where[300];
    snprintf(where, sizeof where, "%s:3:", conf);
    if (!strstr(err, where)) fail_msg("stderr \"%s\" does not name %s", err, where);
    assert_int_equal(access(d.sock, F_OK), -1);
    mbt_cleanup_dir(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greedy_until_empty, setup_daemon, teardown_daemon),
        cmocka_unit_test_setup_teardown(test_giveback_lets_reserve_succeed, setup_daemon,
                                        teardown_daemon),
        cmocka_unit_test_setup_teardown(test_killed_client_returns_quota, setup_daemon,
                                        teardown_daemon),
        cmocka_unit_test_setup_teardown(test_silent_giveback_client, setup_daemon, teardown_daemon),
        cmocka_unit_test_setup_teardown(test_malformed_input, setup_daemon, teardown_daemon),
        cmocka_unit_test(test_connection_flood),
        cmocka_unit_test_setup_teardown(test_fork_child_not_registered, setup_daemon,
                                        teardown_daemon),
        cmocka_unit_test_setup_teardown(test_threads_share_a_client, setup_daemon, teardown_daemon),
        cmocka_unit_test_setup_teardown(test_no_daemon, setup_daemon, teardown_daemon),
        cmocka_unit_test(test_socket_activation),
        cmocka_unit_test(test_config_and_reload),
    };
    return cmocka_run_group_tests_name("membroker_daemon", tests, NULL, NULL);
}

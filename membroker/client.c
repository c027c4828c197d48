/* libmbclient (include/membroker.h).
 *
 * Runs inside an allocator's slow path: no malloc, no stdio, no threads.
 * Only system calls (socket, connect, send, recv, poll, close, getpid,
 * clock_gettime), pthread mutexes, getenv and the protocol codec.
 *
 * One request at a time per client: a call sends its record and waits for
 * the reply with the same seq, under the client's mutex. Whatever else
 * arrives meanwhile is handled on the way:
 *  - GIVEBACK: the callback runs inline and its answer is sent at once;
 *  - a GRANT nobody waits for any more (the caller's wait ran out before the
 *    daemon answered): its pages are returned at once, so the daemon's count
 *    and the caller's agree;
 *  - any other stray reply is dropped.
 */
#include "membroker.h"

#include "protocol.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CLIENT_MAGIC 0x6d62636cu /* "mbcl" */
/* How long connect waits for the daemon's WELCOME. */
#define CONNECT_WAIT_MS 5000
/* The daemon answers a REQUEST within its REQUEST_TIMEOUT (60 s at most)
 * and a RESERVE by the client's deadline; beyond these a wait gives up. */
#define REQUEST_WAIT_MS 65000
#define RESERVE_SLACK_MS 5000
/* A send waits at most this long for room in the socket buffer. */
#define SEND_WAIT_MS 2000

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits for `events` on fd until `deadline` (ms, CLOCK_MONOTONIC).
 * Returns 0 when ready, -ETIMEDOUT, or -errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline) return -ETIMEDOUT;
        uint64_t left = deadline - now;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (n > 0) return 0;
        if (n < 0 && errno != EINTR) return -errno;
    }
}

static void drop(mb_client *c)
{
    if (c->_fd >= 0) close(c->_fd);
    c->_fd = -1;
}

/* Reads one record without waiting. Returns 0, -EAGAIN when none is there,
 * or -ENOTCONN/-EPROTO (the connection is then dropped). */
static int recv_now(mb_client *c, mb_msg *m)
{
    uint8_t buf[MB_MSG_SIZE + 16];
    bool reset = false;
    for (;;) {
        ssize_t n = recv(c->_fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        /* A peer that closed with our records unread reports ECONNRESET
         * once, ahead of what it sent before closing: read on. */
        if (n < 0 && errno == ECONNRESET && !reset) {
            reset = true;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return -EAGAIN;
        if (n <= 0) {
            drop(c);
            return -ENOTCONN;
        }
        if (_mb_msg_decode(buf, (size_t)n, m) != 0) {
            drop(c); /* a daemon we do not understand */
            return -EPROTO;
        }
        return 0;
    }
}

static int send_rec(mb_client *c, const mb_msg *m)
{
    uint8_t buf[MB_MSG_SIZE];
    if (_mb_msg_encode(m, buf) < 0) return -EINVAL;
    uint64_t deadline = now_ms() + SEND_WAIT_MS;
    for (;;) {
        ssize_t n = send(c->_fd, buf, sizeof buf, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n == (ssize_t)sizeof buf) return 0;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(c->_fd, POLLOUT, deadline);
            if (rc < 0) return rc;
            continue;
        }
        /* The daemon closed the connection; it may have said why first
         * (e.g. -EBUSY: its client table is full). */
        mb_msg why;
        if (recv_now(c, &why) == 0 && why.type == MB_T_ERROR) {
            drop(c);
            return why.status;
        }
        drop(c);
        return -ENOTCONN;
    }
}

static uint32_t next_seq(mb_client *c)
{
    if (++c->_seq == 0) c->_seq = 1;
    return c->_seq;
}

/* A record nobody waits for (see the top of the file). */
static void handle_other(mb_client *c, const mb_msg *m)
{
    if (m->type == MB_T_GIVEBACK) {
        uint64_t released = 0;
        if (c->_kind == MB_BIDIRECTIONAL && c->_fn)
            released = c->_fn(c->_ctx, m->pages, m->urgency ? MB_URGENT : MB_NORMAL);
        if (released > MB_MAX_PAGES) released = MB_MAX_PAGES;
        mb_msg r = {.type = MB_T_GIVEBACK_REPLY, .seq = m->seq, .pages = released};
        if (send_rec(c, &r) == 0 && released <= c->_held) c->_held -= released;
    } else if (m->type == MB_T_GRANT && m->status == 0 && m->pages > 0) {
        mb_msg r = {.type = MB_T_RETURN, .seq = next_seq(c), .pages = m->pages};
        send_rec(c, &r); /* its RETURNED reply is dropped like any stray */
    }
}

/* Receives the next record, waiting for one until `deadline` (ms). */
static int recv_wait(mb_client *c, mb_msg *out, uint64_t deadline)
{
    for (;;) {
        int rc = recv_now(c, out);
        if (rc != -EAGAIN) return rc;
        rc = wait_fd(c->_fd, POLLIN, deadline);
        if (rc < 0) return rc;
    }
}

/* Sends `req` and waits up to wait_ms for its `want` reply. An ERROR reply
 * returns its status. */
static int call(mb_client *c, mb_msg *req, uint16_t want, mb_msg *out, uint64_t wait_ms)
{
    req->seq = next_seq(c);
    int rc = send_rec(c, req);
    if (rc < 0) return rc;
    uint64_t deadline = now_ms() + wait_ms;
    for (;;) {
        rc = recv_wait(c, out, deadline);
        if (rc < 0) return rc;
        if (out->type == MB_T_ERROR && out->seq == 0) return out->status; /* refused */
        if (out->type != MB_T_GIVEBACK && out->seq == req->seq) {
            if (out->type == MB_T_ERROR) return out->status;
            if (out->type == want) return 0;
        }
        handle_other(c, out);
        if (c->_fd < 0) return -ENOTCONN;
    }
}

/* Takes the client's mutex if it is usable from this process. */
static int enter(mb_client *c)
{
    if (!c || c->_magic != CLIENT_MAGIC || c->_pid != (int)getpid()) return -ENOTCONN;
    pthread_mutex_lock(&c->_lock);
    if (c->_fd < 0) {
        pthread_mutex_unlock(&c->_lock);
        return -ENOTCONN;
    }
    return 0;
}

static void leave(mb_client *c)
{
    pthread_mutex_unlock(&c->_lock);
}

/* Opens a connection to the daemon (no registration). */
static int open_socket(const char *path)
{
    if (!path) path = getenv("MEMBROKER_SOCKET");
    if (!path || !*path) path = MB_DEFAULT_SOCKET;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path) return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int mb_client_connect(mb_client *c, const char *socket_path, mb_kind kind, mb_giveback_fn fn,
                      void *ctx)
{
    return mb_client_connect_class(c, socket_path, kind, fn, ctx, NULL);
}

int mb_client_connect_class(mb_client *c, const char *socket_path, mb_kind kind,
                            mb_giveback_fn fn, void *ctx, const char *class_name)
{
    if (!c) return -EINVAL;
    c->_magic = 0;
    c->_fd = -1;
    if ((kind != MB_SIMPLE && kind != MB_BIDIRECTIONAL) || (kind == MB_BIDIRECTIONAL && !fn))
        return -EINVAL;
    pthread_mutex_init(&c->_lock, NULL);
    c->_fn = fn;
    c->_ctx = ctx;
    c->_kind = kind;
    c->_seq = 0;
    c->_held = 0;
    c->_page_size = 0;
    c->_pid = (int)getpid();
    c->_magic = CLIENT_MAGIC;
    int fd = open_socket(socket_path);
    if (fd < 0) return fd;
    c->_fd = fd;
    mb_msg req = {.type = MB_T_HELLO, .kind = (uint32_t)kind}, rep;
    if (class_name) {
        size_t n = strlen(class_name);
        if (n >= sizeof req.comm) {
            drop(c);
            return -EINVAL;
        }
        memcpy(req.comm, class_name, n);
    }
    int rc = call(c, &req, MB_T_WELCOME, &rep, CONNECT_WAIT_MS);
    if (rc < 0) {
        drop(c);
        return rc == -ENOTCONN ? -ECONNREFUSED : rc;
    }
    c->_page_size = rep.page_size;
    return 0;
}

int64_t mb_request(mb_client *c, uint64_t pages)
{
    if (pages > MB_MAX_PAGES) return -EINVAL;
    int rc = enter(c);
    if (rc < 0) return rc;
    mb_msg req = {.type = MB_T_REQUEST, .pages = pages}, rep;
    rc = call(c, &req, MB_T_GRANT, &rep, REQUEST_WAIT_MS);
    if (rc == 0 && rep.status < 0) rc = rep.status;
    if (rc == 0) c->_held = rep.held;
    leave(c);
    return rc < 0 ? rc : (int64_t)rep.pages;
}

int mb_reserve(mb_client *c, uint64_t pages, int timeout_ms)
{
    if (timeout_ms < 0 || pages > MB_MAX_PAGES) return -EINVAL;
    int rc = enter(c);
    if (rc < 0) return rc;
    mb_msg req = {.type = MB_T_RESERVE, .pages = pages, .timeout_ms = (uint32_t)timeout_ms}, rep;
    rc = call(c, &req, MB_T_GRANT, &rep, (uint64_t)timeout_ms + RESERVE_SLACK_MS);
    if (rc == 0) {
        c->_held = rep.held;
        rc = rep.status;
        if (rc == 0 && rep.pages != pages) rc = -EPROTO; /* cannot happen: all or nothing */
    }
    leave(c);
    return rc;
}

int mb_return(mb_client *c, uint64_t pages)
{
    if (pages > MB_MAX_PAGES) return -EINVAL;
    int rc = enter(c);
    if (rc < 0) return rc;
    mb_msg req = {.type = MB_T_RETURN, .pages = pages}, rep;
    rc = call(c, &req, MB_T_RETURNED, &rep, REQUEST_WAIT_MS);
    if (rc == 0) {
        c->_held = rep.held;
        rc = rep.status;
    }
    leave(c);
    return rc;
}

int mb_query(mb_client *c, mb_balance *out)
{
    if (!out) return -EINVAL;
    int rc = enter(c);
    if (rc < 0) return rc;
    mb_msg req = {.type = MB_T_QUERY}, rep;
    rc = call(c, &req, MB_T_BALANCE, &rep, REQUEST_WAIT_MS);
    if (rc == 0) {
        c->_held = rep.held;
        out->held_pages = rep.held;
        out->pool_pages = rep.pool;
        out->free_pages = rep.free;
        out->page_size = rep.page_size;
    }
    leave(c);
    return rc;
}

int mb_client_fd(const mb_client *c)
{
    if (!c || c->_magic != CLIENT_MAGIC || c->_pid != (int)getpid()) return -1;
    return c->_fd;
}

int mb_client_dispatch(mb_client *c)
{
    if (!c || c->_magic != CLIENT_MAGIC || c->_pid != (int)getpid()) return -ENOTCONN;
    /* Another thread inside a call handles give-backs itself: do not wait. */
    if (pthread_mutex_trylock(&c->_lock) != 0) return 0;
    int handled = 0, rc = 0;
    while (c->_fd >= 0) {
        mb_msg m;
        rc = recv_now(c, &m);
        if (rc < 0) break;
        handled += m.type == MB_T_GIVEBACK;
        handle_other(c, &m);
    }
    if (c->_fd < 0) rc = -ENOTCONN;
    leave(c);
    return rc == -EAGAIN ? handled : rc;
}

void mb_client_close(mb_client *c)
{
    if (!c || c->_magic != CLIENT_MAGIC) return;
    if (c->_pid != (int)getpid()) {
        /* a forked child: close its copy only; the parent stays registered */
        if (c->_fd >= 0) close(c->_fd);
        c->_fd = -1;
        return;
    }
    pthread_mutex_lock(&c->_lock);
    drop(c);
    c->_held = 0;
    pthread_mutex_unlock(&c->_lock);
}

bool mb_client_connected(const mb_client *c)
{
    return mb_client_fd(c) >= 0;
}

int mb_status(const char *socket_path, mb_pool_info *pool, mb_status_fn fn, void *ctx)
{
    mb_client c = {._fd = -1, ._kind = MB_SIMPLE};
    int fd = open_socket(socket_path);
    if (fd < 0) return fd;
    c._fd = fd;
    uint32_t cursor = 0, ext = MB_STATUS_EXT, ci_class = 0;
    int rc = 0;
    for (;;) {
        mb_msg req = {.type = MB_T_STATUS, .cursor = cursor, .flags = ext}, m;
        req.seq = next_seq(&c);
        rc = send_rec(&c, &req);
        if (rc < 0) break;
        uint64_t deadline = now_ms() + CONNECT_WAIT_MS;
        bool end = false;
        while (!end) {
            rc = recv_now(&c, &m);
            if (rc == -EAGAIN) {
                rc = wait_fd(c._fd, POLLIN, deadline);
                if (rc < 0) break;
                continue;
            }
            if (rc < 0) break;
            if (m.seq != req.seq) continue;
            if (m.type == MB_T_ERROR) {
                rc = m.status;
                break;
            }
            if (m.type == MB_T_STATUS_ENTRY && fn) {
                ci_class = m.class_id;
                mb_client_info ci = {.pid = m.pid,
                                     .uid = m.uid,
                                     .slot = m.cursor,
                                     .kind = m.kind ? MB_BIDIRECTIONAL : MB_SIMPLE,
                                     .held_pages = m.held,
                                     .waiting_pages = m.waiting,
                                     .outstanding = m.count,
                                     .giveback_pending = (m.flags & MB_ENTRY_GIVEBACK) != 0};
                memcpy(ci.comm, m.comm, sizeof ci.comm);
                ci.class_id = ci_class;
                fn(ctx, &ci);
            } else if (m.type == MB_T_STATUS_END) {
                if (pool) {
                    pool->pool_pages = m.pool;
                    pool->free_pages = m.free;
                    pool->page_size = m.page_size;
                    pool->clients = m.count;
                    pool->capacity = m.capacity;
                }
                end = true;
                cursor = m.cursor;
                if (m.flags & MB_END_DONE) cursor = UINT32_MAX;
            }
        }
        /* a daemon older than MB_STATUS_EXT refuses the flag: ask again without */
        if (rc == -EBADMSG && ext && cursor == 0) {
            ext = 0;
            rc = 0;
            continue;
        }
        if (rc < 0 || cursor == UINT32_MAX) break;
    }
    drop(&c);
    return rc < 0 ? rc : 0;
}

/* ---- low-memory policy ---- */

static void to_event(const mb_msg *m, mb_event *ev)
{
    ev->level = (mb_level)m->level;
    ev->previous = (mb_level)m->prev;
    ev->reasons = m->reasons;
    ev->granted_pages = m->held;
    ev->pool_pages = m->pool;
    ev->available_pages = m->free;
    ev->page_size = m->page_size;
}

/* Sends one record on a short connection and waits for the reply `want`
 * with its seq (records of other types with that seq go to `each`). */
static int short_call(mb_client *c, mb_msg *req, uint16_t want, mb_msg *out,
                      void (*each)(void *ctx, const mb_msg *m), void *ctx)
{
    req->seq = next_seq(c);
    int rc = send_rec(c, req);
    if (rc < 0) return rc;
    uint64_t deadline = now_ms() + CONNECT_WAIT_MS;
    for (;;) {
        rc = recv_wait(c, out, deadline);
        if (rc < 0) return rc;
        if (out->seq != req->seq) continue;
        if (out->type == MB_T_ERROR) return out->status;
        if (out->type == want) return 0;
        if (each) each(ctx, out);
    }
}

int mb_watch_open(const char *socket_path, mb_event *now)
{
    mb_client c = {._fd = -1, ._kind = MB_SIMPLE};
    int fd = open_socket(socket_path);
    if (fd < 0) return fd;
    c._fd = fd;
    mb_msg req = {.type = MB_T_SUBSCRIBE}, rep;
    int rc = short_call(&c, &req, MB_T_NOTIFY, &rep, NULL, NULL);
    if (rc < 0) {
        drop(&c);
        return rc;
    }
    if (now) to_event(&rep, now);
    return c._fd;
}

int mb_watch_read(int fd, mb_event *ev, int timeout_ms)
{
    mb_client c = {._fd = fd, ._kind = MB_SIMPLE};
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        mb_msg m;
        uint8_t buf[MB_MSG_SIZE + 16];
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(fd, POLLIN, deadline);
            if (rc == -ETIMEDOUT) return 0;
            if (rc < 0) return rc;
            continue;
        }
        if (n <= 0) return -ENOTCONN;
        if (_mb_msg_decode(buf, (size_t)n, &m) != 0) return -EPROTO;
        (void)c;
        if (m.type != MB_T_NOTIFY) continue;
        to_event(&m, ev);
        return 1;
    }
}

typedef struct class_cb {
    mb_class_fn fn;
    void *ctx;
} class_cb;

static void on_class(void *ctx, const mb_msg *m)
{
    class_cb *cb = ctx;
    if (m->type != MB_T_CLASS_INFO || !cb->fn) return;
    mb_class_info ci = {.index = m->cursor,
                        .min_pages = m->pages,
                        .cap_pages = m->pool,
                        .granted_pages = m->held,
                        .clients = m->count};
    memcpy(ci.name, m->comm, sizeof ci.name);
    cb->fn(cb->ctx, &ci);
}

int mb_policy_status(const char *socket_path, mb_policy_info *info, mb_class_fn fn, void *ctx)
{
    mb_client c = {._fd = -1, ._kind = MB_SIMPLE};
    int fd = open_socket(socket_path);
    if (fd < 0) return fd;
    c._fd = fd;
    mb_msg req = {.type = MB_T_POLICY}, rep;
    /* POLICY_INFO comes first, then one CLASS_INFO per class */
    int rc = short_call(&c, &req, MB_T_POLICY_INFO, &rep, NULL, NULL);
    if (rc == 0) {
        if (info) {
            info->level = (mb_level)rep.level;
            info->reasons = rep.reasons;
            info->signal_pages = rep.pages;
            info->alloc_pages = rep.waiting;
            info->granted_pages = rep.held;
            info->pool_pages = rep.pool;
            info->available_pages = rep.free;
            info->page_size = rep.page_size;
            info->sources = rep.flags;
            info->classes = rep.count;
        }
        class_cb cb = {fn, ctx};
        uint64_t deadline = now_ms() + CONNECT_WAIT_MS;
        for (uint32_t got = 0; got < rep.count;) {
            mb_msg m;
            rc = recv_now(&c, &m);
            if (rc == -EAGAIN) {
                rc = wait_fd(c._fd, POLLIN, deadline);
                if (rc < 0) break;
                continue;
            }
            if (rc < 0) break;
            if (m.seq != req.seq || m.type != MB_T_CLASS_INFO) continue;
            on_class(&cb, &m);
            got++;
        }
    }
    drop(&c);
    return rc < 0 ? rc : 0;
}

int mb_report(const char *socket_path)
{
    mb_client c = {._fd = -1, ._kind = MB_SIMPLE};
    int fd = open_socket(socket_path);
    if (fd < 0) return fd;
    c._fd = fd;
    mb_msg req = {.type = MB_T_REPORT}, rep;
    int rc = short_call(&c, &req, MB_T_REPORTED, &rep, NULL, NULL);
    drop(&c);
    if (rc < 0) return rc;
    return rep.status < 0 ? rep.status : (int)rep.pages;
}

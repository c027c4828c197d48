/* membrokerd: the memory quota daemon (membroker/README.md).
 *
 * One thread, one epoll loop over the listening socket, a signalfd and the
 * client connections, all non-blocking. The decisions are broker.c's; this
 * file moves records between the sockets and the broker:
 *  - every table is allocated once at start (client table, request queue,
 *    per-connection output queues); nothing is allocated per message;
 *  - a client's bad input costs that client alone an error reply (or, when
 *    its framing cannot be trusted, its connection) and one log line;
 *  - a connection beyond the table's capacity gets an ERROR(-EBUSY) record
 *    and is closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "config.h"
#include "membroker.h"
#include "lowmem.h"
#include "policy.h"
#include "protocol.h"

/* Records a connection may have queued for sending when its socket buffer
 * is full; past this the client is not reading and is disconnected. */
#define OUTQ 32
/* Records read from one connection per wake-up (fairness between clients). */
#define READ_BATCH 16
/* Malformed records a connection may send before it is disconnected. */
#define MAX_BAD 16
/* Command-line KEY=value settings applied over the file. */
#define MAX_OVERRIDES 16

typedef struct conn {
    int fd;       /* -1: slot free */
    bool doomed;  /* close after the current event */
    bool pollout; /* EPOLLOUT registered */
    uint32_t pid, uid;
    uint32_t bad;
    uint32_t out_head, out_len;
    uint8_t out[OUTQ][MB_MSG_SIZE];
} conn;

typedef struct override {
    const char *key, *value;
} override;

static struct daemon {
    const char *config_path; /* NULL: no file */
    override overrides[MAX_OVERRIDES];
    unsigned n_overrides;
    mb_config cfg;
    uint64_t page_size;
    uint64_t pool_pages;
    mb_broker broker;
    mb_bclient *bclients;
    mb_pending *pending;
    conn *conns;
    uint32_t capacity;
    unsigned doomed;
    int ep, lfd, sfd, spare_fd;
    bool activated;      /* socket from systemd */
    bool created_socket; /* we bound the path: unlink it at exit */
    bool journal;        /* stderr goes to the journal: prefix <level> */
    int log_level;
} D = {.lfd = -1, .sfd = -1, .ep = -1, .spare_fd = -1, .log_level = 6};

/* ---- logging ---- */

static void logv(int level, const char *fmt, va_list ap)
{
    if (level > D.log_level) return;
    static const char *const names[8] = {"emerg",   "alert",  "crit", "error",
                                         "warning", "notice", "info", "debug"};
    char line[600];
    int n = 0;
    if (D.journal) n = snprintf(line, sizeof line, "<%d>", level);
    n += snprintf(line + n, sizeof line - (size_t)n, "membrokerd: %s: ", names[level & 7]);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    fprintf(stderr, "%s\n", line);
}

static void logm(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void logm(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    logv(level, fmt, ap);
    va_end(ap);
}

static void broker_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    logm(level, "%s", msg);
}

static void config_report(void *ctx, const char *file, unsigned line, const char *msg)
{
    (void)ctx;
    logm(3, "%s:%u: %s", file, line, msg);
}

/* ---- systemd, by hand ---- */

static void sd_notify_(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path) return;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@') sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        logm(4, "sd_notify to %s: %s", path, strerror(errno));
    close(fd);
}

/* The listening socket systemd passed (LISTEN_FDS/LISTEN_PID), or -1. */
static int activated_socket(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (!pid || !fds) return -1;
    if (strtol(pid, NULL, 10) != (long)getpid()) return -1;
    long n = strtol(fds, NULL, 10);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (n < 1) return -1;
    for (long i = 1; i < n; i++)
        close((int)(3 + i)); /* we listen on one socket */
    int fd = 3, type = 0, domain = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET) {
        logm(3, "LISTEN_FDS: fd 3 is not a SOCK_SEQPACKET socket (ListenSequentialPacket=)");
        return -2;
    }
    len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain != AF_UNIX) {
        logm(3, "LISTEN_FDS: fd 3 is not an AF_UNIX socket");
        return -2;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

/* ---- configuration ---- */

/* Builds a configuration from the file (if any) and the command line.
 * Returns false after logging every error. */
static bool build_config(mb_config *cfg, uint64_t *pool_pages)
{
    _mb_config_defaults(cfg);
    unsigned bad = 0;
    if (D.config_path) bad = _mb_config_load(cfg, D.config_path, config_report, NULL);
    for (unsigned i = 0; i < D.n_overrides; i++) {
        const char *why;
        if (!_mb_config_set(cfg, D.overrides[i].key, D.overrides[i].value, &why)) {
            logm(3, "command line: %s \"%s\": %s", D.overrides[i].key, D.overrides[i].value, why);
            bad++;
        }
    }
    if (bad) return false;
    const char *why = "";
    const char *src = D.config_path ? D.config_path : "command line";
    uint64_t mem_total = _mb_lowmem_mem_total(cfg);
    if (mem_total == 0) mem_total = _mb_mem_total();
    *pool_pages = _mb_pool_pages(&cfg->pool, mem_total, D.page_size, &why);
    if (*pool_pages == 0) {
        logm(3, "%s: POOL: %s", src, why);
        return false;
    }
    /* the policy's figures must make sense together (issue 7) */
    mb_th st = _mb_th_resolve(&cfg->policy.signal, *pool_pages, D.page_size, mem_total);
    mb_th mat = _mb_th_resolve(&cfg->policy.alloc, *pool_pages, D.page_size, mem_total);
    if (st.quota_pages && mat.quota_pages && mat.quota_pages < st.quota_pages) {
        logm(3, "%s: ALLOC_THRESHOLD (%llu pages) is below SIGNAL_THRESHOLD (%llu pages)", src,
             (unsigned long long)mat.quota_pages, (unsigned long long)st.quota_pages);
        bad++;
    }
    uint64_t mins = 0;
    for (uint32_t k = 0; k < cfg->n_classes; k++) {
        const mb_th_spec *m = &cfg->classes[k].min;
        mins += m->mode == MB_TH_BYTES      ? m->value / D.page_size
                : m->mode == MB_TH_POOL_PCT ? *pool_pages / 100 * m->value
                                            : 0;
    }
    if (mins > *pool_pages) {
        logm(3, "%s: the CLASS minimums (%llu pages) exceed the pool (%llu pages)", src,
             (unsigned long long)mins, (unsigned long long)*pool_pages);
        bad++;
    }
    return bad == 0;
}

static mb_broker_cfg broker_cfg(void)
{
    mb_broker_cfg b = {.pool_pages = D.pool_pages,
                       .page_size = D.page_size,
                       .request_timeout_ms = D.cfg.request_timeout_ms,
                       .giveback_timeout_ms = D.cfg.giveback_timeout_ms,
                       .reserve_max_ms = D.cfg.reserve_max_ms};
    return b;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void reload(void)
{
    sd_notify_("RELOADING=1");
    mb_config nc;
    uint64_t pages;
    if (!D.config_path) {
        logm(6, "SIGHUP: no configuration file to reload");
    } else if (!build_config(&nc, &pages)) {
        logm(3, "reload of %s failed: keeping the running configuration", D.config_path);
    } else {
        /* what is bound to the socket or the tables waits for a restart */
        if (strcmp(nc.socket, D.cfg.socket) || strcmp(nc.owner, D.cfg.owner) ||
            strcmp(nc.group, D.cfg.group) || nc.mode != D.cfg.mode)
            logm(4, "reload: SOCKET* changes take effect at restart");
        if (nc.max_clients != D.cfg.max_clients)
            logm(4, "reload: MAX_CLIENTS change takes effect at restart");
        memcpy(nc.socket, D.cfg.socket, sizeof nc.socket);
        memcpy(nc.owner, D.cfg.owner, sizeof nc.owner);
        memcpy(nc.group, D.cfg.group, sizeof nc.group);
        nc.mode = D.cfg.mode;
        nc.max_clients = D.cfg.max_clients;
        D.cfg = nc;
        D.pool_pages = pages;
        D.log_level = nc.log_level;
        mb_broker_cfg bc = broker_cfg();
        _mb_broker_configure(&D.broker, &bc, now_ms());
        _mb_lowmem_configure(&D.broker, &D.cfg, D.pool_pages, D.page_size, D.ep, logm, now_ms());
        logm(6, "reloaded %s: pool %llu pages, %llu free", D.config_path, (unsigned long long)pages,
             (unsigned long long)_mb_broker_free(&D.broker));
    }
    sd_notify_("READY=1");
}

/* ---- connections ---- */

static void doom(uint32_t slot)
{
    if (!D.conns[slot].doomed) {
        D.conns[slot].doomed = true;
        D.doomed++;
    }
}

static void set_pollout(uint32_t slot, bool on)
{
    conn *c = &D.conns[slot];
    if (c->pollout == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.u64 = slot + 2u};
    if (epoll_ctl(D.ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->pollout = on;
}

/* The broker's send callback: sends now, or queues when the socket is full. */
static void on_send(void *ctx, uint32_t slot, const mb_msg *m)
{
    (void)ctx;
    conn *c = &D.conns[slot];
    if (c->fd < 0 || c->doomed) return;
    uint8_t buf[MB_MSG_SIZE];
    if (_mb_msg_encode(m, buf) < 0) {
        logm(3, "internal: cannot encode a %s record", _mb_msg_type_name(m->type));
        return;
    }
    if (c->out_len == 0) {
        ssize_t n = send(c->fd, buf, sizeof buf, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n == (ssize_t)sizeof buf) return;
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            doom(slot); /* the peer is gone; its EOF follows */
            return;
        }
    }
    if (c->out_len == OUTQ) {
        logm(4, "pid %u does not read its replies (%u queued): disconnecting", c->pid, OUTQ);
        doom(slot);
        return;
    }
    memcpy(c->out[(c->out_head + c->out_len) % OUTQ], buf, sizeof buf);
    c->out_len++;
    set_pollout(slot, true);
}

static void flush_out(uint32_t slot)
{
    conn *c = &D.conns[slot];
    while (c->out_len) {
        ssize_t n = send(c->fd, c->out[c->out_head], MB_MSG_SIZE, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n != (ssize_t)MB_MSG_SIZE) {
            doom(slot);
            return;
        }
        c->out_head = (c->out_head + 1) % OUTQ;
        c->out_len--;
    }
    set_pollout(slot, false);
}

static void close_conn(uint32_t slot)
{
    conn *c = &D.conns[slot];
    if (c->fd < 0) return;
    epoll_ctl(D.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    logm(7, "pid %u disconnected", c->pid);
    if (c->doomed) D.doomed--;
    c->fd = -1;
    c->doomed = false;
    c->out_len = 0;
    _mb_broker_detach(&D.broker, slot, now_ms()); /* may doom others */
}

static void reap(void)
{
    while (D.doomed)
        for (uint32_t i = 0; i < D.capacity; i++)
            if (D.conns[i].doomed) close_conn(i);
}

static void read_comm(uint32_t pid, char comm[16])
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/comm", pid);
    comm[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, comm, 15);
    close(fd);
    if (n < 0) n = 0;
    comm[n] = '\0';
    char *nl = strchr(comm, '\n');
    if (nl) *nl = '\0';
}

static void refuse_conn(int fd, uint32_t pid, int err)
{
    mb_msg m = {.type = MB_T_ERROR, .status = err};
    uint8_t buf[MB_MSG_SIZE];
    if (_mb_msg_encode(&m, buf) > 0) (void)!send(fd, buf, sizeof buf, MSG_DONTWAIT | MSG_NOSIGNAL);
    close(fd);
    logm(4, "client table full (%u): refused pid %u", D.capacity, pid);
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(D.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if ((errno == EMFILE || errno == ENFILE) && D.spare_fd >= 0) {
                /* out of descriptors: accept with the spare one and close it,
                 * so that the listening socket does not stay readable */
                close(D.spare_fd);
                fd = accept4(D.lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd >= 0) close(fd);
                D.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                logm(4, "out of file descriptors: refused a connection");
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) logm(4, "accept: %s", strerror(errno));
            return;
        }
        struct ucred cred = {0};
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
            logm(4, "SO_PEERCRED: %s", strerror(errno));
            close(fd);
            continue;
        }
        char comm[16];
        read_comm((uint32_t)cred.pid, comm);
        int slot = _mb_broker_attach(&D.broker, (uint32_t)cred.pid, (uint32_t)cred.uid, comm);
        if (slot < 0) {
            refuse_conn(fd, (uint32_t)cred.pid, slot);
            continue;
        }
        _mb_broker_set_class(&D.broker, (uint32_t)slot,
                             _mb_lowmem_class_of((uint32_t)cred.pid, (uint32_t)cred.uid, comm));
        conn *c = &D.conns[slot];
        c->fd = fd;
        c->doomed = c->pollout = false;
        c->pid = (uint32_t)cred.pid;
        c->uid = (uint32_t)cred.uid;
        c->bad = 0;
        c->out_head = c->out_len = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)slot + 2u};
        if (epoll_ctl(D.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            logm(3, "epoll_ctl: %s", strerror(errno));
            c->fd = -1;
            close(fd);
            _mb_broker_detach(&D.broker, (uint32_t)slot, now_ms());
            continue;
        }
        logm(7, "pid %u (%s) connected in slot %d", c->pid, comm, slot);
    }
}

/* A record that did not decode: an error reply; a disconnect when its
 * framing cannot be trusted or the client keeps sending them. */
static void on_bad_record(uint32_t slot, int err, const mb_msg *m, ssize_t len)
{
    conn *c = &D.conns[slot];
    c->bad++;
    int status = err == MB_PERR_VERSION ? -EPROTONOSUPPORT
                 : err == MB_PERR_TYPE  ? -EOPNOTSUPP
                                        : -EBADMSG;
    bool fatal =
        err == MB_PERR_SIZE || err == MB_PERR_MAGIC || err == MB_PERR_VERSION || c->bad > MAX_BAD;
    logm(4, "pid %u (%s): bad record (%zd bytes, type %u): %s%s", c->pid, D.bclients[slot].comm,
         len, m->type, _mb_proto_strerror(err), fatal ? ": disconnecting" : "");
    mb_msg r = {.type = MB_T_ERROR,
                .seq = m->seq,
                .status = status,
                .flags = m->type < MB_T_COUNT_ ? m->type : 0};
    on_send(NULL, slot, &r);
    if (fatal) doom(slot);
}

static void on_readable(uint32_t slot)
{
    conn *c = &D.conns[slot];
    for (int k = 0; k < READ_BATCH && !c->doomed; k++) {
        uint8_t buf[MB_MSG_SIZE];
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            logm(7, "pid %u: recv: %s", c->pid, strerror(errno));
            doom(slot);
            return;
        }
        if (n == 0) { /* end of file (or an empty record, refused the same way) */
            doom(slot);
            return;
        }
        mb_msg m;
        size_t len = (mh.msg_flags & MSG_TRUNC) ? MB_MSG_SIZE + 1 : (size_t)n;
        int err = _mb_msg_decode(buf, len, &m);
        if (err) {
            on_bad_record(slot, err, &m, (mh.msg_flags & MSG_TRUNC) ? -1 : n);
            continue;
        }
        if (m.type == MB_T_REPORT) { /* writes files: the daemon's, not the broker's */
            int no = _mb_lowmem_report("asked for (mbctl report)");
            mb_msg r = {.type = MB_T_REPORTED,
                        .seq = m.seq,
                        .status = no < 0 ? no : 0,
                        .pages = no < 0 ? 0 : (uint64_t)no};
            on_send(NULL, slot, &r);
            continue;
        }
        const char *why;
        int rc = _mb_broker_handle(&D.broker, slot, &m, now_ms(), &why);
        if (rc < 0)
            logm(4, "pid %u (%s): %s refused: %s", c->pid, D.bclients[slot].comm,
                 _mb_msg_type_name(m.type), why);
    }
}

/* ---- start ---- */

static bool resolve_ids(uid_t *uid, gid_t *gid)
{
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    char *end;
    if (D.cfg.owner[0]) {
        unsigned long v = strtoul(D.cfg.owner, &end, 10);
        if (!*end) {
            *uid = (uid_t)v;
        } else {
            struct passwd *pw = getpwnam(D.cfg.owner);
            if (!pw) {
                logm(3, "SOCKET_OWNER \"%s\": no such user", D.cfg.owner);
                return false;
            }
            *uid = pw->pw_uid;
        }
    }
    if (D.cfg.group[0]) {
        unsigned long v = strtoul(D.cfg.group, &end, 10);
        if (!*end) {
            *gid = (gid_t)v;
        } else {
            struct group *gr = getgrnam(D.cfg.group);
            if (!gr) {
                logm(3, "SOCKET_GROUP \"%s\": no such group", D.cfg.group);
                return false;
            }
            *gid = gr->gr_gid;
        }
    }
    return true;
}

static int bind_socket(void)
{
    const char *path = D.cfg.socket;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            logm(3, "%s exists and is not a socket", path);
            return -1;
        }
        int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
            close(probe);
            logm(3, "another membrokerd listens on %s", path);
            return -1;
        }
        if (probe >= 0) close(probe);
        unlink(path); /* stale */
    }
    uid_t uid;
    gid_t gid;
    if (!resolve_ids(&uid, &gid)) return -1;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        logm(3, "socket: %s", strerror(errno));
        return -1;
    }
    mode_t old = umask(0177); /* no one else may connect before the chmod */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0) {
        logm(3, "bind %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    D.created_socket = true;
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(path, uid, gid) < 0) {
        logm(3, "chown %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(path, (mode_t)D.cfg.mode) < 0) {
        logm(3, "chmod %s %o: %s", path, D.cfg.mode, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, 128) < 0) {
        logm(3, "listen %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void raise_fd_limit(uint32_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want) return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want)
        logm(4, "RLIMIT_NOFILE %llu is below MAX_CLIENTS + 16: connections beyond it are refused",
             (unsigned long long)rl.rlim_cur);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: membrokerd [--config FILE] [--socket PATH] [--pool SIZE]\n"
            "                  [--max-clients N] [--request-timeout MS] [--giveback-timeout MS]\n"
            "                  [--set KEY=VALUE]... [--log-level LEVEL] [--check-config]\n"
            "Runs in the foreground. Without --config it reads %s, unless --socket\n"
            "or --pool is given (then no file is read). SIZE: 512M, 80%%, all-except 256M.\n",
            "/etc/membroker.conf");
}

static bool add_override(const char *key, const char *value)
{
    if (D.n_overrides == MAX_OVERRIDES) {
        fprintf(stderr, "membrokerd: too many command-line settings\n");
        return false;
    }
    D.overrides[D.n_overrides++] = (override){key, value};
    return true;
}

/* Returns -1 to go on, else an exit status. */
static int parse_args(int argc, char **argv, bool *check_only)
{
    static const struct {
        const char *opt, *key;
    } map[] = {{"--socket", "SOCKET"},
               {"--pool", "POOL"},
               {"--max-clients", "MAX_CLIENTS"},
               {"--request-timeout", "REQUEST_TIMEOUT"},
               {"--giveback-timeout", "GIVEBACK_TIMEOUT"},
               {"--log-level", "LOG_LEVEL"}};
    bool explicit_config = false, test_mode = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--check-config") == 0) {
            *check_only = true;
            continue;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--config") == 0) {
            D.config_path = v;
            explicit_config = true;
            continue;
        }
        if (strcmp(a, "--set") == 0) {
            char *eq = strchr(v, '=');
            if (!eq) {
                usage(stderr);
                return 2;
            }
            *eq = '\0';
            if (!add_override(v, eq + 1)) return 2;
            continue;
        }
        size_t k = 0;
        while (k < sizeof map / sizeof map[0] && strcmp(a, map[k].opt) != 0)
            k++;
        if (k == sizeof map / sizeof map[0]) {
            fprintf(stderr, "membrokerd: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!add_override(map[k].key, v)) return 2;
        if (k <= 1) test_mode = true;
    }
    if (!explicit_config && !test_mode) {
        if (access("/etc/membroker.conf", F_OK) == 0)
            D.config_path = "/etc/membroker.conf";
        else
            logm(6, "no /etc/membroker.conf: using the defaults");
    }
    return -1;
}

static bool setup_tables(void)
{
    D.capacity = D.cfg.max_clients;
    D.bclients = calloc(D.capacity, sizeof *D.bclients);
    D.pending = calloc((size_t)D.capacity * MB_MAX_INFLIGHT, sizeof *D.pending);
    D.conns = calloc(D.capacity, sizeof *D.conns);
    if (!D.bclients || !D.pending || !D.conns) {
        logm(3, "cannot allocate a client table of %u entries", D.capacity);
        return false;
    }
    for (uint32_t i = 0; i < D.capacity; i++)
        D.conns[i].fd = -1;
    mb_broker_cfg bc = broker_cfg();
    _mb_broker_init(&D.broker, &bc, D.bclients, D.capacity, D.pending, on_send, broker_log, NULL);
    return true;
}

static bool setup_loop(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    D.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    D.ep = epoll_create1(EPOLL_CLOEXEC);
    D.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (D.sfd < 0 || D.ep < 0) {
        logm(3, "signalfd/epoll: %s", strerror(errno));
        return false;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    struct epoll_event sev = {.events = EPOLLIN, .data.u64 = 1};
    if (epoll_ctl(D.ep, EPOLL_CTL_ADD, D.lfd, &ev) < 0 ||
        epoll_ctl(D.ep, EPOLL_CTL_ADD, D.sfd, &sev) < 0) {
        logm(3, "epoll_ctl: %s", strerror(errno));
        return false;
    }
    return true;
}

/* Returns false when asked to stop. */
static bool on_signal(void)
{
    struct signalfd_siginfo si;
    while (read(D.sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            reload();
        } else {
            logm(6, "signal %u: stopping", si.ssi_signo);
            return false;
        }
    }
    return true;
}

static void loop(void)
{
    struct epoll_event evs[64];
    for (;;) {
        uint64_t now = now_ms(), next = _mb_broker_next_deadline(&D.broker, now);
        uint64_t lm = _mb_lowmem_next(now);
        if (lm < next) next = lm;
        int timeout = next == UINT64_MAX   ? -1
                      : next <= now        ? 0
                      : next - now > 60000 ? 60000
                                           : (int)(next - now);
        int n = epoll_wait(D.ep, evs, 64, timeout);
        if (n < 0 && errno != EINTR) {
            logm(3, "epoll_wait: %s", strerror(errno));
            return;
        }
        for (int i = 0; i < n; i++) {
            uint64_t id = evs[i].data.u64;
            if (id == 0) {
                on_accept();
            } else if (id == 1) {
                if (!on_signal()) return;
            } else if (id >= MB_LOWMEM_ID) {
                _mb_lowmem_event(id, evs[i].events, now_ms());
            } else {
                uint32_t slot = (uint32_t)(id - 2);
                if (D.conns[slot].fd < 0) continue; /* closed earlier in this batch */
                if (evs[i].events & EPOLLOUT) flush_out(slot);
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(slot);
            }
            reap();
        }
        _mb_lowmem_tick(now_ms());
        _mb_broker_tick(&D.broker, now_ms());
        reap();
    }
}

int main(int argc, char **argv)
{
    D.journal = getenv("JOURNAL_STREAM") != NULL;
    setvbuf(stderr, NULL, _IOLBF, 0);
    bool check_only = false;
    int rc = parse_args(argc, argv, &check_only);
    if (rc >= 0) return rc;
    long ps = sysconf(_SC_PAGESIZE);
    D.page_size = ps > 0 ? (uint64_t)ps : 4096;
    if (!build_config(&D.cfg, &D.pool_pages)) {
        logm(3, "configuration refused: not starting");
        return 2;
    }
    D.log_level = D.cfg.log_level;
    if (check_only) {
        printf("configuration ok: pool %llu pages of %llu bytes, socket %s, %u clients\n",
               (unsigned long long)D.pool_pages, (unsigned long long)D.page_size, D.cfg.socket,
               D.cfg.max_clients);
        return 0;
    }
    raise_fd_limit(D.cfg.max_clients + 16);
    if (!setup_tables()) return 1;
    D.lfd = activated_socket();
    if (D.lfd == -2) return 1;
    D.activated = D.lfd >= 0;
    if (!D.activated) D.lfd = bind_socket();
    if (D.lfd < 0) return 1;
    if (!setup_loop()) return 1;
    _mb_lowmem_configure(&D.broker, &D.cfg, D.pool_pages, D.page_size, D.ep, logm, now_ms());
    logm(6, "listening on %s%s: pool %llu pages of %llu bytes, %u clients at most",
         D.activated ? "the socket passed by systemd" : D.cfg.socket, "",
         (unsigned long long)D.pool_pages, (unsigned long long)D.page_size, D.capacity);
    char ready[64];
    snprintf(ready, sizeof ready, "READY=1\nMAINPID=%ld", (long)getpid());
    sd_notify_(ready);
    loop();
    sd_notify_("STOPPING=1");
    _mb_lowmem_close();
    for (uint32_t i = 0; i < D.capacity; i++)
        if (D.conns[i].fd >= 0) close(D.conns[i].fd);
    close(D.lfd);
    if (D.created_socket) unlink(D.cfg.socket);
    free(D.conns);
    free(D.pending);
    free(D.bclients);
    return 0;
}

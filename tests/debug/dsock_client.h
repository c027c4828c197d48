/* Test helpers for the debug socket: a raw client, a wrong-uid client
 * (a forked child that becomes nobody), and output capture of a program. */
#ifndef DSOCK_CLIENT_H
#define DSOCK_CLIENT_H

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOBODY 65534

/* Connects to path; -errno on failure. */
static inline int ds_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a.sun_path)) {
        close(fd);
        return -ENAMETOOLONG;
    }
    memcpy(a.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Sends len bytes (errors ignored: the server may close early), then reads
 * the whole reply into buf (NUL-terminated). Returns the reply length. */
static inline size_t ds_exchange(int fd, const void *req, size_t len, char *buf, size_t cap)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, (const char *)req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += (size_t)n;
    }
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (got == cap - 1) break;
    }
    buf[got] = 0;
    return got;
}

/* One request on a new connection; serve (may be NULL) is called between
 * sending and reading (for a server without a thread). Returns the reply
 * length, or 0 if the connection failed. */
static inline size_t ds_request(const char *path, const void *req, size_t len, char *buf,
                                size_t cap, void (*serve)(void))
{
    int fd = ds_connect(path);
    if (fd < 0) {
        buf[0] = 0;
        return 0;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, (const char *)req + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0) break;
        off += (size_t)n;
    }
    if (off == len) shutdown(fd, SHUT_WR); /* the request is all there */
    if (serve) serve();
    size_t got = ds_exchange(fd, (const char *)req + off, len - off, buf, cap);
    close(fd);
    return got;
}

/* In a forked child: become nobody (keeping CAP_DAC_OVERRIDE in the effective
 * set if keep_dac, so that the 0600 socket file lets it connect and the
 * server's SO_PEERCRED check is what refuses it), connect, send "stats\n",
 * and write to the pipe: "E<errno>" if connect failed, else the reply. */
static inline void ds_child_as_nobody(const char *path, bool keep_dac, int out)
{
    if (keep_dac && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) _exit(10);
    if (setresgid(NOBODY, NOBODY, NOBODY) != 0 || setresuid(NOBODY, NOBODY, NOBODY) != 0) _exit(11);
    if (keep_dac) {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct d[2];
        memset(d, 0, sizeof(d));
        d[0].permitted = d[0].effective = 1u << CAP_DAC_OVERRIDE;
        if (syscall(SYS_capset, &h, d) != 0) _exit(12);
    }
    char buf[4096];
    int fd = ds_connect(path);
    int n;
    if (fd < 0) {
        n = snprintf(buf, sizeof(buf), "E%d", -fd);
    } else {
        n = (int)ds_exchange(fd, "stats\n", 6, buf, sizeof(buf));
        close(fd);
    }
    if (n > 0 && write(out, buf, (size_t)n) < 0) _exit(13);
    _exit(0);
}

/* Runs ds_child_as_nobody in a child (the server must have its own thread);
 * the child's output in buf. Returns the child's exit status (0 = it ran). */
static inline int ds_as_nobody(const char *path, bool keep_dac, char *buf, size_t cap)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        ds_child_as_nobody(path, keep_dac, p[1]);
    }
    close(p[1]);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(p[0], buf + got, cap - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    buf[got] = 0;
    close(p[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

#endif

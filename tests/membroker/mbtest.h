/* Helpers for the multi-process membroker tests: a real membrokerd on a
 * socket in a temporary directory, started and stopped by the test.
 *
 * The daemon's path comes from $MEMBROKERD (set by tests/membroker/meson.build).
 * Readiness is the daemon's own sd_notify("READY=1") on a datagram socket
 * the helper passes as $NOTIFY_SOCKET, so no test sleeps waiting for it.
 */
#ifndef MBTEST_H
#define MBTEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocol.h"

typedef struct mbt_daemon {
    pid_t pid;
    int notify_fd;    /* datagram socket the daemon notifies */
    int stderr_fd;    /* read end of the daemon's stderr, or -1 (inherited) */
    char dir[64];     /* temporary directory */
    char sock[100];   /* dir/mb.sock */
    char notify[100]; /* dir/notify.sock */
} mbt_daemon;

/* Makes the temporary directory and the notify socket; no daemon yet. */
void mbt_prepare(mbt_daemon *d);

/* Starts $MEMBROKERD with argv args (NULL-terminated, after argv[0]).
 * listen_fd >= 0: passed as fd 3 with LISTEN_FDS=1 (socket activation).
 * capture_stderr: the daemon's stderr goes to d->stderr_fd. */
void mbt_spawn(mbt_daemon *d, const char *const *args, int listen_fd, bool capture_stderr);

/* Waits for a notify message containing `what` (e.g. "READY=1"). False
 * if the daemon exits first or after 20 s (something is wrong). */
bool mbt_wait_notify(mbt_daemon *d, const char *what);

/* prepare + spawn `--socket dir/mb.sock --pool POOL` + extra args + wait READY. */
void mbt_start(mbt_daemon *d, const char *pool, const char *const *extra);

/* SIGTERM, wait, check that it exited with status 0; removes the directory. */
void mbt_stop(mbt_daemon *d);

/* Waits for the daemon to exit by itself; returns its wait status. */
int mbt_wait_exit(mbt_daemon *d);

/* True while the daemon process runs. */
bool mbt_alive(mbt_daemon *d);

/* Reads what the daemon wrote to stderr so far (capture_stderr) into buf. */
size_t mbt_read_stderr(mbt_daemon *d, char *buf, size_t cap);

void mbt_cleanup_dir(mbt_daemon *d);

/* ---- raw protocol access ---- */

int mbt_raw_connect(const char *path);
void mbt_raw_send(int fd, const void *buf, size_t len);
void mbt_raw_send_msg(int fd, const mb_msg *m);
/* Next record: 1 and *m, 0 on end of file, -1 after 20 s without one. */
int mbt_raw_recv(int fd, mb_msg *m);

/* A fresh, well-behaved client checks that the daemon serves correctly:
 * it gets one page, sees the pool as `pool_pages` with `free_pages` free
 * before its own page, returns it, leaves. */
void mbt_check_serves(const char *sock, uint64_t pool_pages, uint64_t free_pages);

#endif

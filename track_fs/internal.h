/* track_fs: a passthrough FUSE file system over a tmpfs directory whose
 * blocks are covered by membroker quota (issue 8; README.md here).
 *
 * Accounting invariant (bytes, under tf_quota.acct):
 *
 *   charged = sum of the blocks of the files under SOURCE_DIR (st_blocks * 512)
 *           + sum of the hole reservations of open files (tf_node.reserved)
 *           + estimates of operations in flight
 *
 * and, except for a short overdraft after an estimate that came out low,
 * charged <= held (the quota taken from membroker, or the local limit).
 * An operation that may add blocks charges its estimate first (ENOSPC if it
 * cannot be covered: nothing is done), runs under its file's lock, then
 * settles the difference between the estimate and the st_blocks change.
 */
#ifndef TRACK_FS_INTERNAL_H
#define TRACK_FS_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* ---- options (main.c) ---- */
typedef struct tf_options {
    char *source;         /* SOURCE_DIR, absolute */
    char *socket;         /* -o membroker=PATH (NULL: $MEMBROKER_SOCKET, else default) */
    char *limit_s;        /* -o limit=SIZE: the local limit without membroker */
    char *chunk_s;        /* -o chunk=SIZE: request granularity */
    char *slack_s;        /* -o slack=SIZE: surplus kept after a return */
    char *return_above_s; /* -o return_above=SIZE: surplus past which quota goes back */
    char *cache_dir;      /* -o cache_dir=DIR (relative to SOURCE_DIR): bidirectional */
    int nonurgent;        /* -o nonurgent: REQUEST only, never RESERVE */
    int reserve_timeout;  /* -o reserve_timeout=MS: the urgent RESERVE's wait */
    int no_membroker;     /* -o no_membroker: local limit only */
    int show_help;
    /* parsed */
    uint64_t limit, chunk, slack, return_above;
    bool foreground;
} tf_options;

extern tf_options tf_opt;
extern int tf_srcfd; /* SOURCE_DIR, open (O_DIRECTORY) */

/* Writes a line to stderr and, once daemonised, to syslog. */
void tf_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tf_log_daemonised(void);

/* Parses "123", "64K", "16M", "2G", "1T" (binary units). -1 on error. */
int tf_parse_size(const char *s, uint64_t *out);
void tf_format_size(uint64_t bytes, char *buf, size_t len);

/* ---- per-file state (node.c) ---- */
typedef struct tf_node {
    struct tf_node *next; /* hash chain (bucket lock) */
    ino_t ino;
    unsigned refs;        /* bucket lock */
    pthread_mutex_t lock; /* the file's lock: orders every change of its blocks and links */
    unsigned opens;       /* open track_fs handles (lock) */
    uint64_t cover;       /* holes below this size are covered while open (lock) */
    uint64_t reserved;    /* bytes of quota set aside for those holes (lock) */
} tf_node;

tf_node *tf_node_get(ino_t ino); /* NULL only when out of memory */
void tf_node_put(tf_node *n);

/* An open file: fi->fh. */
typedef struct tf_file {
    int fd;
    tf_node *node;
} tf_file;

/* ---- quota (quota.c) ---- */
/* Start: after daemonising. `existing` is what SOURCE_DIR already holds. */
int tf_quota_start(uint64_t existing);
void tf_quota_probe(void);
void tf_quota_stop(void);
/* Charges `bytes`, asking membroker when the quota held does not cover
 * them. 0 or -ENOSPC (nothing charged). */
int tf_quota_charge(uint64_t bytes);
/* charged += delta, without any check (settling an estimate, a credit). */
void tf_quota_adjust(int64_t delta);
/* Hands surplus back with hysteresis; never waits for the daemon's lock. */
void tf_quota_maybe_return(void);
/* For statfs: what track_fs has charged and what could still be had. */
void tf_quota_space(uint64_t *charged, uint64_t *avail);
/* Snapshot for logging and tests. */
typedef struct tf_quota_snapshot {
    uint64_t held, charged, page;
    bool broker;
} tf_quota_snapshot;
void tf_quota_snapshot_get(tf_quota_snapshot *s);

/* ---- operations (ops.c) ---- */
struct fuse_operations;
extern const struct fuse_operations tf_ops;
/* Sum of the blocks (bytes) of everything under SOURCE_DIR, hard links once. */
int tf_scan_source(uint64_t *bytes);
/* Unlinks `rel` (relative to SOURCE_DIR) the way track_fs's unlink does, but
 * skips it (-EBUSY) when its file lock is taken. Returns the bytes credited. */
int64_t tf_unlink_nowait(const char *rel);

/* ---- bidirectional mode (cache.c) ---- */
/* Deletes files from the cache directory, oldest first, until `bytes` are
 * credited or none are left. Returns the bytes credited. */
uint64_t tf_cache_evict(uint64_t bytes);

#endif

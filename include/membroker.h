/* libmbclient: the client side of membroker, the system-wide memory quota
 * service (membroker/README.md).
 *
 * Quota is counted in pages of the daemon's page size (mb_balance.page_size).
 * A client registers as MB_SIMPLE (asks and returns quota) or
 * MB_BIDIRECTIONAL (can also be asked to give quota back, through its
 * mb_giveback_fn).
 *
 * Rules the library keeps, because it runs inside an allocator's slow path:
 *  - it never calls malloc or anything that may allocate (no stdio, no
 *    printf); the mb_client is caller-provided storage;
 *  - it never starts a thread;
 *  - every call is thread-safe: a mutex inside mb_client serialises them, and
 *    a call that waits for the daemon (mb_request, mb_reserve) keeps the
 *    others waiting for as long (mb_client_dispatch does not wait: it returns
 *    0 at once while another thread is inside a call, since that thread
 *    handles give-back requests itself);
 *  - a give-back request that arrives while a call waits for its reply is
 *    handled inline: the callback runs in that thread, then the wait goes on;
 *  - after fork() the child does not inherit the registration: every call
 *    in the child returns -ENOTCONN (and sends nothing on the parent's
 *    connection); the child may mb_client_close() (which only closes its
 *    copy of the socket) and mb_client_connect() anew;
 *  - every descriptor is opened with close-on-exec.
 *
 * All functions return 0 or a count on success and a negative errno on
 * failure. -ENOTCONN: not connected (never connected, closed, forked child,
 * or the daemon went away: the connection is then closed and the quota the
 * daemon had counted for it is back in its pool).
 */
#ifndef MEMBROKER_H
#define MEMBROKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where the daemon listens when neither the caller nor $MEMBROKER_SOCKET says. */
#define MB_DEFAULT_SOCKET "/run/membroker.sock"

typedef enum { MB_SIMPLE = 0, MB_BIDIRECTIONAL = 1 } mb_kind;
typedef enum { MB_NORMAL = 0, MB_URGENT = 1 } mb_urgency;

/* Give-back callback of a bidirectional client: asked to free `pages` pages
 * with `urgency`; returns the number of pages it actually released (the
 * library then returns them to the daemon in its answer to the request).
 * Runs in the thread that calls mb_client_dispatch() or waits inside
 * mb_request/mb_reserve, with the client's mutex held: it must not call
 * mb_* functions on the same client. Returning more than the client holds
 * is refused by the daemon and counts as having given nothing. */
typedef uint64_t (*mb_giveback_fn)(void *ctx, uint64_t pages, mb_urgency urgency);

typedef struct mb_balance {
    uint64_t held_pages; /* this client's quota */
    uint64_t pool_pages; /* the whole pool */
    uint64_t free_pages; /* not held by anyone */
    uint64_t page_size;  /* bytes per page */
} mb_balance;

/* Caller-provided storage: the library never calls malloc. Fields are
 * private. Initialise it with mb_client_connect(); a failed connect leaves
 * it closed (mb_client_close() is then harmless). */
typedef struct mb_client {
    pthread_mutex_t _lock;
    mb_giveback_fn _fn;
    void *_ctx;
    uint64_t _page_size;
    uint64_t _held; /* as the daemon last reported it */
    int _fd;        /* -1: not connected */
    int _kind;
    int _pid;        /* getpid() at connect: a forked child is not connected */
    uint32_t _seq;   /* sequence number of the last record sent */
    uint32_t _magic; /* set by mb_client_connect */
} mb_client;

/* socket_path NULL: $MEMBROKER_SOCKET, else MB_DEFAULT_SOCKET. Registers with
 * the daemon (fn may be NULL only for MB_SIMPLE). Waits at most 5 s for the
 * daemon's welcome. Returns 0 or a negative errno: -ENOENT/-ECONNREFUSED no
 * daemon, -EBUSY the daemon's client table is full, -EINVAL bad arguments. */
int mb_client_connect(mb_client *c, const char *socket_path, mb_kind kind, mb_giveback_fn fn,
                      void *ctx);

/* Asks for up to `pages`. The daemon grants what it can, at once or after
 * a short, configured wait for give-backs. Returns the pages granted
 * (0..pages), or a negative errno. */
int64_t mb_request(mb_client *c, uint64_t pages);

/* Asks for exactly `pages`, waiting up to timeout_ms (capped by the daemon's
 * configuration) while other clients are asked to give back. Returns 0 when
 * all were granted; -EAGAIN (timeout_ms == 0 and not available at once),
 * -ETIMEDOUT (not available by the deadline) or -ENOSPC (more than the whole
 * pool) when none were; -EINVAL for timeout_ms < 0. */
int mb_reserve(mb_client *c, uint64_t pages, int timeout_ms);

/* Gives pages back. 0, or -EINVAL when returning more than held (nothing
 * is returned then). */
int mb_return(mb_client *c, uint64_t pages);

/* This client's balance and the pool's. */
int mb_query(mb_client *c, mb_balance *out);

/* The connection's descriptor, for the caller's poll loop (POLLIN means a
 * give-back request may be waiting: call mb_client_dispatch). -1 if not
 * connected. */
int mb_client_fd(const mb_client *c);

/* Handles the give-back requests that have arrived, without waiting.
 * Returns how many were handled, or a negative errno (-ENOTCONN when the
 * daemon has gone: the connection is closed). */
int mb_client_dispatch(mb_client *c);

/* Unregisters (the daemon takes back everything held) and closes. In a
 * forked child, only closes the child's copy of the descriptor. */
void mb_client_close(mb_client *c);

bool mb_client_connected(const mb_client *c);

/* ---- status: the daemon's view of the pool and its clients ---- */

typedef struct mb_pool_info {
    uint64_t pool_pages, free_pages, page_size;
    uint32_t clients;  /* registered clients */
    uint32_t capacity; /* size of the daemon's client table */
} mb_pool_info;

typedef struct mb_client_info {
    uint32_t pid, uid; /* from SO_PEERCRED */
    uint32_t slot;     /* index in the daemon's table */
    mb_kind kind;
    uint64_t held_pages;
    uint64_t waiting_pages; /* pages of its requests still waiting */
    uint32_t outstanding;   /* its requests still waiting */
    bool giveback_pending;  /* asked to give back, no answer yet */
    char comm[16];          /* /proc/PID/comm at registration, NUL-terminated */
    uint32_t class_id;      /* its class (mb_class_info.index); 0 from an older daemon */
} mb_client_info;

typedef void (*mb_status_fn)(void *ctx, const mb_client_info *ci);

/* Reads the pool and the client table over a short connection of its own
 * (it does not register). Calls fn (may be NULL) once per registered client.
 * The table is read a few entries at a time, so it is not one atomic
 * snapshot. socket_path as for mb_client_connect. */
int mb_status(const char *socket_path, mb_pool_info *pool, mb_status_fn fn, void *ctx);

/* ---- low-memory policy (membroker/README.md, "Low memory") ---- */

/* connect with a class asked for by name (the daemon's CLASS_BY_REQUEST
 * must allow it): -EPERM not allowed, -ESRCH no such class; otherwise as
 * mb_client_connect (class_name NULL or "": the daemon chooses). */
int mb_client_connect_class(mb_client *c, const char *socket_path, mb_kind kind,
                            mb_giveback_fn fn, void *ctx, const char *class_name);

typedef enum { MB_LEVEL_NORMAL = 0, MB_LEVEL_LOW = 1, MB_LEVEL_CRITICAL = 2 } mb_level;

/* Why the level is what it is (mb_event.reasons, mb_policy_info.reasons). */
#define MB_REASON_QUOTA 1u         /* granted quota past the threshold */
#define MB_REASON_MEMAVAILABLE 2u  /* MemTotal - MemAvailable past the threshold */
#define MB_REASON_PSI_SOME 4u      /* the kernel's PSI "some" trigger */
#define MB_REASON_PSI_FULL 8u      /* the kernel's PSI "full" trigger */
#define MB_REASON_CGROUP_HIGH 16u  /* cgroup memory.events high */
#define MB_REASON_CGROUP_MAX 32u   /* cgroup memory.events max / oom */

typedef struct mb_event {
    mb_level level, previous; /* equal in the first event (the state when subscribing) */
    uint32_t reasons;
    uint64_t granted_pages, pool_pages;
    uint64_t available_pages; /* MemAvailable in pages, 0 unknown */
    uint64_t page_size;
} mb_event;

/* Subscribes to the memory level without registering: returns a descriptor
 * (close it to unsubscribe) and the current state in *now. Every change of
 * level (up: low memory, down: all-clear) then arrives as one event. */
int mb_watch_open(const char *socket_path, mb_event *now);

/* The next event, waiting up to timeout_ms (-1: no limit). Returns 1 with
 * *ev, 0 on timeout, -ENOTCONN when the daemon has gone. */
int mb_watch_read(int fd, mb_event *ev, int timeout_ms);

typedef struct mb_policy_info {
    mb_level level;
    uint32_t reasons;
    uint64_t signal_pages, alloc_pages; /* thresholds on the quota, 0 = off */
    uint64_t granted_pages, pool_pages, available_pages, page_size;
    uint32_t sources; /* 1: PSI on /proc/pressure/memory, 2: on the cgroup, 4: memory.events */
    uint32_t classes;
} mb_policy_info;

typedef struct mb_class_info {
    uint32_t index;
    char name[16];
    uint64_t min_pages, cap_pages, granted_pages;
    uint32_t clients;
} mb_class_info;

typedef void (*mb_class_fn)(void *ctx, const mb_class_info *ci);

/* The daemon's thresholds, memory level, pressure sources and classes
 * (fn may be NULL), over a short connection of its own. */
int mb_policy_status(const char *socket_path, mb_policy_info *info, mb_class_fn fn, void *ctx);

/* Asks the daemon to write an OOM report to its REPORT_DIR. Returns the
 * report's number, or -ENOENT when no REPORT_DIR is configured. */
int mb_report(const char *socket_path);

#ifdef __cplusplus
}
#endif
#endif

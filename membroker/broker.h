/* The daemon's decisions, without sockets: the pool, the client table, the
 * queue of waiting requests and the give-back rounds. membrokerd feeds it
 * decoded records and the time; it answers through a send callback. The
 * tests drive it the same way (tests/membroker/test_mb_broker.c).
 *
 * Time is a monotonic clock in milliseconds, passed in by the caller.
 *
 * Order of service (membroker/README.md, "Fairness"):
 *  1. Waiting requests form one queue: every RESERVE (urgent) before every
 *     REQUEST (normal), each class first come, first served.
 *  2. Free pages go to the head of the queue. A request that cannot be served
 *     in full waits and claims all that is free, so nothing behind it is served
 *     before it (no starvation of large requests by small ones).
 *  3. A REQUEST is answered at its deadline (now + REQUEST_TIMEOUT) or as soon
 *     as no give-back is under way, with whatever it can get then (maybe 0).
 *     A RESERVE is answered in full when it reaches the head with enough
 *     free pages, or with -ETIMEDOUT at its deadline (-EAGAIN at once if its
 *     timeout is 0).
 *  4. While the queue is short of pages, bidirectional clients that have no
 *     request waiting are asked to give back the shortfall, largest holder
 *     first, each for at most what it holds, urgent if a RESERVE is waiting,
 *     to answer within GIVEBACK_TIMEOUT. No answer by then counts as 0. A
 *     client that answered with less than asked, or not at all, is not asked
 *     again for another GIVEBACK_TIMEOUT.
 */
#ifndef MEMBROKER_BROKER_H
#define MEMBROKER_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "policy.h"
#include "protocol.h"

/* Requests one client may have waiting at once. */
#define MB_MAX_INFLIGHT 4
/* Status entries per STATUS reply (followed by one STATUS_END). */
#define MB_STATUS_BATCH 8

typedef struct mb_broker_cfg {
    uint64_t pool_pages;
    uint64_t page_size;
    uint32_t request_timeout_ms;  /* longest a REQUEST waits for give-backs */
    uint32_t giveback_timeout_ms; /* how long a client has to answer a give-back */
    uint32_t reserve_max_ms;      /* cap on a RESERVE's own timeout */
} mb_broker_cfg;

typedef struct mb_bclient {
    bool in_use;     /* the slot has a connection */
    bool registered; /* HELLO received */
    uint8_t kind;    /* mb_kind */
    uint32_t pid, uid;
    char comm[16];
    uint64_t held;
    uint32_t outstanding; /* its waiting requests */
    /* give-back */
    bool gb_active;         /* asked, no answer yet */
    uint32_t gb_seq;        /* seq of the last give-back it was asked */
    uint64_t gb_target;     /* pages asked in the active one */
    uint64_t gb_deadline;   /* answer by */
    uint64_t gb_rest_until; /* not asked again before */
    uint8_t cls;            /* its class (index in mb_broker.classes) */
    bool subscribed;        /* gets NOTIFY on every change of the memory level */
} mb_bclient;

typedef struct mb_pending {
    int32_t next, prev; /* queue links (indices), -1 = none */
    uint32_t slot;      /* the client */
    uint32_t seq;       /* its request's seq */
    uint16_t type;      /* MB_T_REQUEST or MB_T_RESERVE */
    bool try_only;      /* RESERVE with timeout 0 */
    uint64_t pages;
    uint64_t deadline;
} mb_pending;

/* Sends a record to the client in `slot`. */
typedef void (*mb_send_fn)(void *ctx, uint32_t slot, const mb_msg *m);
/* Asks the daemon to terminate a process of the KILLABLE list (issue 7).
 * Returns true when a victim is being terminated (the daemon then calls
 * _mb_broker_kill_done when it is gone), false when there is none. */
typedef bool (*mb_kill_fn)(void *ctx, const char *why);
/* A line for the log (no newline), level as in syslog: 3 err, 4 warning, 6 info, 7 debug. */
typedef void (*mb_log_fn)(void *ctx, int level, const char *msg);

typedef struct mb_broker {
    mb_broker_cfg cfg;
    mb_bclient *clients; /* capacity entries */
    uint32_t capacity;
    mb_pending *pending; /* capacity * MB_MAX_INFLIGHT entries */
    uint32_t pending_cap;
    int32_t free_list;
    int32_t head[2], tail[2]; /* [0] RESERVE, [1] REQUEST */
    uint64_t held_total;
    uint32_t gb_seq;
    uint32_t gb_active; /* clients with an unanswered give-back */
    mb_send_fn send;
    mb_log_fn log;
    void *ctx;
    /* low-memory policy (issue 7) */
    mb_policy pol;
    mb_class classes[MB_MAX_CLASSES];
    uint32_t n_classes;
    bool class_by_request; /* HELLO may name a class */
    bool kill_on_urgent;   /* an unmet RESERVE after give-back asks for a kill */
    mb_kill_fn kill;
    bool kill_busy;        /* a victim is being terminated */
    uint64_t kill_quiet_until; /* no victim found: do not ask again before */
    uint32_t pressure_flags;   /* MB_PSI_* armed, for POLICY_INFO */
} mb_broker;

/* clients: capacity entries; pending: capacity * MB_MAX_INFLIGHT entries;
 * both owned by the caller. log may be NULL. */
void _mb_broker_init(mb_broker *b, const mb_broker_cfg *cfg, mb_bclient *clients, uint32_t capacity,
                     mb_pending *pending, mb_send_fn send, mb_log_fn log, void *ctx);

/* A new connection. Returns its slot, or -EBUSY when the table is full. */
int _mb_broker_attach(mb_broker *b, uint32_t pid, uint32_t uid, const char *comm);

/* The connection in `slot` is gone: its quota returns to the pool, its
 * waiting requests and its give-back are dropped. */
void _mb_broker_detach(mb_broker *b, uint32_t slot, uint64_t now);

/* One decoded record from the client in `slot`. Sends the replies. Returns
 * 0, or a negative errno when the record was refused (an error reply has
 * been sent; the caller logs it with `why`): -EPROTO out of order or not a
 * client record, -EINVAL returning more than held, -EBUSY too many requests
 * waiting. */
int _mb_broker_handle(mb_broker *b, uint32_t slot, const mb_msg *m, uint64_t now, const char **why);

/* Handles deadlines that have passed. */
void _mb_broker_tick(mb_broker *b, uint64_t now);

/* When _mb_broker_tick next has something to do (UINT64_MAX: nothing waits). */
uint64_t _mb_broker_next_deadline(const mb_broker *b, uint64_t now);

/* New pool and timeouts (SIGHUP). A pool smaller than what is held leaves
 * nothing free until enough comes back. */
void _mb_broker_configure(mb_broker *b, const mb_broker_cfg *cfg, uint64_t now);

/* The policy (thresholds, classes with min/cap in pages, kill hook) and
 * MemTotal. Class 0 must be the default class. Clients whose class index
 * is beyond n move to class 0. */
void _mb_broker_set_policy(mb_broker *b, const mb_policy_cfg *pc, const mb_class *classes,
                           uint32_t n, bool class_by_request, bool kill_on_urgent,
                           uint64_t mem_total, mb_kill_fn kill, uint64_t now);

/* The class of the client in `slot` (from the daemon's match on uid, exe or
 * cgroup), before its HELLO. */
void _mb_broker_set_class(mb_broker *b, uint32_t slot, uint32_t cls);

/* MemAvailable in bytes (0: unknown), read by the daemon. */
void _mb_broker_meminfo(mb_broker *b, uint64_t mem_available, uint64_t now);

/* A kernel pressure event (MB_R_PSI_SOME, MB_R_PSI_FULL, MB_R_CG_HIGH, MB_R_CG_MAX). */
void _mb_broker_pressure(mb_broker *b, uint32_t reason, uint64_t now);

/* The victim asked for by the kill hook is gone (or could not be killed). */
void _mb_broker_kill_done(mb_broker *b, uint64_t now);

uint64_t _mb_broker_free(const mb_broker *b);
uint32_t _mb_broker_registered(const mb_broker *b);

#endif

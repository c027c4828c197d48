/* membroker's low-memory policy, without I/O (issue 7): the memory level
 * state machine, the kernel's figures parsed from text, client classes and
 * the choice of a victim. broker.c and daemon.c drive it; the tests feed it
 * text and numbers (tests/membroker/test_mb_policy.c).
 *
 * Levels, in the spirit of the Low Memory Watermark work:
 *   NORMAL    below the signal threshold (ST);
 *   LOW       past ST: bidirectional clients are asked to give back (normal
 *             urgency) and subscribers are told;
 *   CRITICAL  past the allocation threshold (MAT): REQUEST fails at once
 *             (-ENOMEM), only RESERVE proceeds (with urgent give-back); if it
 *             lasts past KILL_GRACE, a process of the KILLABLE list is
 *             terminated.
 *
 * Inputs, the worst of which sets the level:
 *   - the quota granted (pages) against ST/MAT on the pool's scale;
 *   - the system's own figure, MemTotal - MemAvailable, against ST/MAT on
 *     MemTotal's scale;
 *   - a PSI "some" trigger counts as past ST, a "full" one as past MAT,
 *     for PRESSURE_HOLD ms after it fired;
 *   - cgroup v2 memory.events: a new "high" counts as past ST, a new
 *     "max" or "oom" as past MAT, for PRESSURE_HOLD ms.
 * Going down needs the figures HYSTERESIS percent (of the pool, of MemTotal)
 * below the threshold, and no held kernel event.
 */
#ifndef MEMBROKER_POLICY_H
#define MEMBROKER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { MB_LVL_NORMAL = 0, MB_LVL_LOW = 1, MB_LVL_CRITICAL = 2 };

/* Why the level is what it is (bits; also on the wire in NOTIFY). */
#define MB_R_QUOTA 1u     /* granted quota past the threshold */
#define MB_R_MEMAVAIL 2u  /* MemTotal - MemAvailable past the threshold */
#define MB_R_PSI_SOME 4u  /* PSI "some" trigger fired */
#define MB_R_PSI_FULL 8u  /* PSI "full" trigger fired */
#define MB_R_CG_HIGH 16u  /* memory.events high went up */
#define MB_R_CG_MAX 32u   /* memory.events max or oom went up */
#define MB_R_ALL 63u

/* ---- thresholds ---- */

typedef enum mb_th_mode {
    MB_TH_OFF = 0,  /* none */
    MB_TH_BYTES,    /* 768M: quota and system use both compared with it */
    MB_TH_POOL_PCT, /* 90%: of the pool for the quota, of MemTotal for the system */
    MB_TH_MEM_PCT,  /* 90% memtotal: of MemTotal for both */
} mb_th_mode;

typedef struct mb_th_spec {
    mb_th_mode mode;
    uint64_t value; /* bytes or percent */
} mb_th_spec;

/* "none", "768M", "90%", "90% pool", "85% memtotal". */
bool _mb_parse_threshold(const char *s, mb_th_spec *out, const char **why);

/* A threshold resolved for a pool and a machine. 0 = off on that scale. */
typedef struct mb_th {
    uint64_t quota_pages; /* granted quota at or past this */
    uint64_t sys_bytes;   /* MemTotal - MemAvailable at or past this */
} mb_th;

mb_th _mb_th_resolve(const mb_th_spec *spec, uint64_t pool_pages, uint64_t page_size,
                     uint64_t mem_total);

/* ---- the state machine ---- */

typedef struct mb_policy_cfg {
    mb_th_spec signal, alloc; /* SIGNAL_THRESHOLD, ALLOC_THRESHOLD */
    uint32_t hysteresis_pct;  /* HYSTERESIS */
    uint32_t hold_ms;         /* PRESSURE_HOLD */
    uint32_t giveback_pct;    /* PRESSURE_GIVEBACK: share of each client's quota asked */
    uint32_t interval_ms;     /* PRESSURE_INTERVAL: repeat give-backs while pressed */
    uint32_t kill_grace_ms;   /* KILL_GRACE: CRITICAL this long -> kill; 0 never */
} mb_policy_cfg;

typedef struct mb_policy {
    mb_policy_cfg cfg;
    mb_th st, mat;
    uint64_t pool_pages, page_size, mem_total;
    /* inputs */
    uint64_t held;          /* granted quota */
    uint64_t mem_available; /* bytes; 0 = unknown */
    uint64_t until[6];      /* per kernel reason bit (PSI some/full, cg high/max): held until */
    /* state */
    int level;
    uint32_t reasons;
    uint64_t critical_since; /* when CRITICAL began */
    uint64_t next_round;     /* next repeated give-back round */
} mb_policy;

void _mb_policy_init(mb_policy *p);
/* New configuration, pool, page size or MemTotal (start, reload). */
void _mb_policy_configure(mb_policy *p, const mb_policy_cfg *cfg, uint64_t pool_pages,
                          uint64_t page_size, uint64_t mem_total);
bool _mb_policy_enabled(const mb_policy *p);

/* A kernel event (MB_R_PSI_SOME, MB_R_PSI_FULL, MB_R_CG_HIGH, MB_R_CG_MAX). */
void _mb_policy_event(mb_policy *p, uint32_t reason, uint64_t now);

/* Re-evaluates with the current inputs. Returns true when the level changed
 * (*prev: the level before). */
bool _mb_policy_eval(mb_policy *p, uint64_t now, int *prev);

/* Quota a REQUEST may still take before reaching MAT (UINT64_MAX: no MAT). */
uint64_t _mb_policy_request_room(const mb_policy *p);

/* When eval next has something to do by itself (a held event ends, a
 * round or the kill grace is due). UINT64_MAX: nothing. */
uint64_t _mb_policy_next(const mb_policy *p, uint64_t now);

/* True when CRITICAL has lasted past KILL_GRACE (the caller restarts the
 * grace with _mb_policy_grace_restart after acting). */
bool _mb_policy_kill_due(const mb_policy *p, uint64_t now);
void _mb_policy_grace_restart(mb_policy *p, uint64_t now);

const char *_mb_level_name(int level);
/* "quota,memavail,psi-some" into buf. */
const char *_mb_reasons_str(uint32_t reasons, char *buf, size_t cap);

/* ---- the kernel's figures, from text ---- */

typedef struct mb_meminfo {
    uint64_t mem_total, mem_available; /* bytes; 0 if missing */
} mb_meminfo;

/* /proc/meminfo text. False if MemTotal is missing. */
bool _mb_parse_meminfo(const char *text, mb_meminfo *out);

typedef struct mb_psi_line {
    double avg10, avg60, avg300;
    uint64_t total_us;
} mb_psi_line;

/* /proc/pressure/memory (or memory.pressure) text: the some and full lines.
 * False if the some line is missing (full may be missing: old kernels). */
bool _mb_parse_psi(const char *text, mb_psi_line *some, mb_psi_line *full);

/* A trigger string "some 150000 1000000" for the kernel. */
int _mb_psi_trigger(char *buf, size_t cap, bool full, uint32_t stall_us, uint32_t window_us);

/* The window an unprivileged trigger must use: a multiple of 2 s, at
 * least window_us (at most 10 s). */
uint32_t _mb_psi_unprivileged_window(uint32_t window_us);

typedef struct mb_memevents {
    uint64_t low, high, max, oom, oom_kill;
} mb_memevents;

/* cgroup v2 memory.events text. */
bool _mb_parse_memevents(const char *text, mb_memevents *out);
/* The reason bits of what went up from `old` to `now`. */
uint32_t _mb_memevents_diff(const mb_memevents *old, const mb_memevents *now);

/* ---- classes ---- */

#define MB_MAX_CLASSES 8
#define MB_CLASS_NAME 16
#define MB_MAX_MATCHES 32

typedef enum mb_match_kind { MB_MATCH_UID, MB_MATCH_EXE, MB_MATCH_CGROUP } mb_match_kind;

typedef struct mb_class_spec {
    char name[MB_CLASS_NAME];
    mb_th_spec min, cap; /* BYTES or POOL_PCT; cap OFF = the pool */
} mb_class_spec;

typedef struct mb_class_match {
    uint8_t cls;
    uint8_t kind; /* mb_match_kind */
    uint32_t uid;
    char name[64]; /* executable name or cgroup path */
} mb_class_match;

/* One class as the broker counts it. Class 0 is "default" (minimum 0,
 * cap the pool) unless the configuration defines it. */
typedef struct mb_class {
    char name[MB_CLASS_NAME];
    uint64_t min, cap; /* pages */
    uint64_t held;     /* granted to its clients */
    uint32_t clients;
} mb_class;

/* Pages class k may be granted now, `free_pages` being free in the pool:
 * up to its cap, and leaving what the other classes' guaranteed minimums
 * still need. */
uint64_t _mb_class_room(const mb_class *cls, uint32_t n, uint32_t k, uint64_t free_pages);

/* Pages of class j that may be asked back on behalf of class k: all of it
 * within k's own class, only what is above j's minimum otherwise. */
uint64_t _mb_class_reclaimable(const mb_class *cls, uint32_t j, uint32_t k);

/* The class of a process: the first CLASS_MEMBER line that matches (uid,
 * comm or executable basename, cgroup path or a parent of it), else 0. */
uint32_t _mb_class_match(const mb_class_match *m, uint32_t n, uint32_t uid, const char *comm,
                         const char *exe, const char *cgroup);

/* ---- never-kill and killable lists ---- */

#define MB_MAX_KILL_ENTRIES 32

typedef struct mb_proc {
    uint32_t pid;
    char comm[16];
    char exe[64];     /* basename of /proc/PID/exe, "" if unknown */
    char cgroup[128]; /* cgroup v2 path ("0::" line), "" if unknown */
    uint64_t private_bytes;
} mb_proc;

/* An entry matches a process by executable name (comm or exe basename)
 * or, when it starts with '/', by cgroup (the process's cgroup or one under
 * it). */
bool _mb_kill_entry_matches(const char *entry, const mb_proc *p);

/* The victim: the first KILLABLE entry (in order) that matches a running
 * process not matched by any NEVER_KILL entry and not `self`; among the
 * processes of that entry the one with the most private memory. Returns
 * its index in procs, or -1. */
int _mb_choose_victim(const mb_proc *procs, size_t n, const char (*killable)[64], size_t nk,
                      const char (*never)[64], size_t nn, uint32_t self);

#endif

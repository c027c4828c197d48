/* membrokerd configuration: /etc/membroker.conf (or --config FILE).
 *
 * Same format as gmalloc's: one `KEY value` per line, `#` starts a comment,
 * keys are case-insensitive. Every key is documented in conf/membroker.conf.
 * Unlike gmalloc, a bad line is an error: the daemon refuses to start (and a
 * reload keeps the configuration it had).
 */
#ifndef MEMBROKER_CONFIG_H
#define MEMBROKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

typedef enum mb_pool_mode {
    MB_POOL_BYTES = 0,  /* POOL 512M */
    MB_POOL_PERCENT,    /* POOL 80%  (of MemTotal) */
    MB_POOL_ALL_EXCEPT, /* POOL all-except 256M  (MemTotal minus that) */
} mb_pool_mode;

typedef struct mb_pool_spec {
    mb_pool_mode mode;
    uint64_t value; /* bytes, or percent (1..100) */
} mb_pool_spec;

#define MB_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) */
#define MB_NAME_MAX 64

typedef struct mb_config {
    mb_pool_spec pool;            /* POOL; default 80% */
    char socket[MB_PATH_MAX];     /* SOCKET; default MB_DEFAULT_SOCKET */
    char owner[MB_NAME_MAX];      /* SOCKET_OWNER user or uid; "" = the daemon's */
    char group[MB_NAME_MAX];      /* SOCKET_GROUP group or gid; "" = the daemon's */
    uint32_t mode;                /* SOCKET_MODE octal; default 0660 */
    uint32_t request_timeout_ms;  /* REQUEST_TIMEOUT; default 50 */
    uint32_t giveback_timeout_ms; /* GIVEBACK_TIMEOUT; default 200 */
    uint32_t reserve_max_ms;      /* RESERVE_MAX_TIMEOUT; default 60000 */
    uint32_t max_clients;         /* MAX_CLIENTS; default 256 */
    int log_level;                /* LOG_LEVEL error|warning|info|debug -> 3|4|6|7; default info */

    /* low-memory policy (issue 7); every default is "off" */
    mb_policy_cfg policy;              /* SIGNAL_THRESHOLD ALLOC_THRESHOLD HYSTERESIS
                                          PRESSURE_HOLD PRESSURE_GIVEBACK PRESSURE_INTERVAL
                                          KILL_GRACE */
    char meminfo[MB_PATH_MAX];         /* MEMINFO; default /proc/meminfo */
    uint32_t meminfo_interval_ms;      /* MEMINFO_INTERVAL; default 1000 */
    uint32_t psi_stall_us[2];          /* PSI_SOME, PSI_FULL: stall; 0 = off */
    uint32_t psi_window_us[2];         /*   and window */
    char psi_cgroup[MB_PATH_MAX];      /* PSI_CGROUP: a cgroup v2 directory; "" none */
    mb_class_spec classes[MB_MAX_CLASSES]; /* CLASS lines; [0] "default" */
    uint32_t n_classes;
    mb_class_match matches[MB_MAX_MATCHES]; /* CLASS_MEMBER lines, in order */
    uint32_t n_matches;
    bool class_by_request;             /* CLASS_BY_REQUEST */
    char never_kill[MB_MAX_KILL_ENTRIES][64]; /* NEVER_KILL */
    uint32_t n_never;
    char killable[MB_MAX_KILL_ENTRIES][64]; /* KILLABLE, in order */
    uint32_t n_killable;
    uint32_t kill_timeout_ms;          /* KILL_TIMEOUT: SIGTERM to SIGKILL; default 5000 */
    bool kill_on_urgent;               /* KILL_ON_URGENT; default yes */
    bool oom_score_adj;                /* OOM_SCORE_ADJ; default yes */
    char report_dir[MB_PATH_MAX];      /* REPORT_DIR; "" none */
} mb_config;

/* file, 1-based line, message naming the key and the value. */
typedef void (*mb_config_report_fn)(void *ctx, const char *file, unsigned line, const char *msg);

void _mb_config_defaults(mb_config *cfg);

/* Sets one key (the command line uses it too). Returns false with *why. */
bool _mb_config_set(mb_config *cfg, const char *key, const char *value, const char **why);

/* Parses a file's text. Reports every bad line; returns how many there were
 * (0: cfg holds the result; otherwise cfg is unspecified). */
unsigned _mb_config_parse(mb_config *cfg, const char *text, size_t len, const char *file,
                          mb_config_report_fn report, void *ctx);

/* Reads and parses `path`; an unreadable file is one error (line 0). */
unsigned _mb_config_load(mb_config *cfg, const char *path, mb_config_report_fn report, void *ctx);

/* Sizes: a number with an optional K/M/G/T suffix (binary; a trailing B or
 * iB is accepted), e.g. 4096, 64M, 1.5G is refused (integers only). */
bool _mb_parse_size(const char *s, uint64_t *out);

/* POOL's value: "512M", "80%", "all-except 256M". */
bool _mb_parse_pool(const char *s, mb_pool_spec *out, const char **why);

/* The pool in pages for a machine with mem_total bytes of RAM. Returns 0
 * (with *why) if that leaves no page. */
uint64_t _mb_pool_pages(const mb_pool_spec *spec, uint64_t mem_total, uint64_t page_size,
                        const char **why);

/* MemTotal from /proc/meminfo in bytes, 0 if unreadable. */
uint64_t _mb_mem_total(void);

#endif

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

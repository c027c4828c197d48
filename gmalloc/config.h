/* gmalloc configuration: the `.conf` file format and environment overrides.
 *
 * Format: one `KEY value...` per line, `#` starts a comment, blank lines are
 * ignored, keys are case-insensitive. The environment overrides the file:
 * GMALLOC_<KEY>=value (e.g. GMALLOC_LIMIT=64M). Sizes take K/M/G/T suffixes
 * (binary; an optional trailing B or iB is accepted).
 *
 * Runs inside malloc's init: no malloc, no stdio, no locale; only stack
 * buffers and the caller's report callback.
 */
#ifndef GMALLOC_CONFIG_H
#define GMALLOC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anr_core.h"

typedef enum gm_on_limit { GM_ON_LIMIT_NULL = 0, GM_ON_LIMIT_ABORT } gm_on_limit;
typedef enum gm_on_error { GM_ON_ERROR_ABORT = 0, GM_ON_ERROR_REPORT, GM_ON_ERROR_IGNORE } gm_on_error;

typedef struct gm_config {
    size_t mapping;        /* MAPPING: bytes to reserve; 0 = engine default */
    size_t limit;          /* LIMIT: bytes of pages in use; 0 = none */
    size_t page_ceiling;   /* PAGE_CEILING: dirty free pages before a purge; 0 = default */
    size_t page_floor;     /* PAGE_FLOOR: a purge goes down to this; 0 = default */
    uint32_t slab_sizes[ANR_MAX_CLASSES]; /* SLAB_SIZES */
    size_t n_slab_sizes;   /* 0 = engine's built-in classes */
    gm_on_limit on_limit;  /* ON_LIMIT null|abort */
    gm_on_error on_error;  /* ON_ERROR abort|report|ignore: bad / double free */
    anr_purge_advice purge_advice; /* PURGE dontneed|free */
    bool stats;            /* STATS 0|1|yes|no|on|off: print statistics at exit */
    bool thread_cache;     /* THREAD_CACHE on|off: per-thread caches of small objects */
    size_t tcache_max_size; /* THREAD_CACHE_MAX_SIZE: largest size cached; 0 = default */
    size_t tcache_max_bytes; /* THREAD_CACHE_BYTES: free bytes per thread; 0 = default */
    size_t tcache_run_bytes; /* THREAD_CACHE_RUN_BYTES: freed page runs per thread; 0 = default */
    uint32_t decay_ms;     /* DECAY_MS: quiet time before dirty pages go back; 0 = default */
    uint32_t reuse_ms;     /* REUSE_MS: the reuse window (anr_core young_ms); 0 = off */
    bool purge_thread;     /* PURGE_THREAD on|off: a background thread applies DECAY_MS */
    bool membroker;        /* MEMBROKER on|off: take the limit as quota from membroker */
    unsigned debug;        /* DEBUG stacks[=N],guards,fdr[=N],trash,trash-alloc,valgrind,all,none:
                            * ANR_DEBUG_* flags of anr_malloc's debug kit; 0 = off */
    unsigned debug_stack_depth; /* DEBUG stacks=N: frames per stack; 0 = default (16) */
    size_t debug_fdr_entries;   /* DEBUG fdr=N: flight recorder slots; 0 = default (4096) */
    bool debug_socket;     /* DEBUG_SOCKET on|off: serve the debug socket (tools/anrctl) */
} gm_config;

/* Called once per bad line or bad environment value. `file` is the file name
 * (or "environment"), `line` the 1-based line (0 for the environment), `msg`
 * a NUL-terminated description that names the key and the offending value. */
typedef void (*gm_config_report_fn)(void *ctx, const char *file, unsigned line, const char *msg);

void gm_config_defaults(gm_config *cfg);

/* Sets one key. Returns true on success; on failure leaves cfg unchanged
 * and points *why at a static explanation. */
bool gm_config_set(gm_config *cfg, const char *key, size_t key_len, const char *value,
                   size_t value_len, const char **why);

/* Parses a whole file's text. Every bad line is reported (with `file` and the
 * line number) and skipped, keeping the previous value. Returns the number of
 * bad lines. */
unsigned gm_config_parse(gm_config *cfg, const char *text, size_t len, const char *file,
                         gm_config_report_fn report, void *ctx);

/* Applies GMALLOC_<KEY>=value entries of `envp` (NULL-terminated). GMALLOC_CONF
 * is skipped (it names the file). Returns the number of bad entries. */
unsigned gm_config_apply_env(gm_config *cfg, char *const *envp, gm_config_report_fn report,
                             void *ctx);

/* Parses a size with optional K/M/G/T suffix. Returns false on junk or overflow. */
bool gm_parse_size(const char *s, size_t len, size_t *out);

#endif

/* Initialisation on the first call into any entry point, which may come from
 * the dynamic loader before any constructor: no malloc, no stdio, no dlsym.
 * The config file and /proc are read with open/read into stack buffers.
 *
 * Order matters (DESIGN.md, "Re-entry during init"): the heap is made usable
 * and published first; only then are fork handlers registered, because
 * pthread_atfork may itself call malloc. */
#include <errno.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <anr_malloc.h> /* ANR_DEBUG_VALGRIND */
#include <gmalloc.h>

#include "internal.h"

extern char **environ;

anr_heap *_gm_heap;
anr_heap *_gm_fast_heap;
gm_config _gm_cfg;
static int init_state; /* 0 = not started, 1 = running, 2 = done */

#define CONF_MAX 16384
#define ENV_MAX 32768
#define ENV_ENTRIES 512

/* Reads up to cap-1 bytes of a file; returns the length or -1. */
static ssize_t read_file(const char *path, char *buf, size_t cap, bool *truncated)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0)
            continue; /* EINTR */
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap - 1)
            break;
    }
    char probe;
    *truncated = len == cap - 1 && read(fd, &probe, 1) == 1;
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

static const char *env_lookup(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

static void load_file(char *const *envp)
{
    const char *path = env_lookup(envp, "GMALLOC_CONF");
    bool explicit_path = path != NULL;
    if (!path)
        path = "/etc/gmalloc.conf";
    char text[CONF_MAX];
    bool truncated = false;
    ssize_t len = read_file(path, text, sizeof(text), &truncated);
    if (len < 0) {
        if (explicit_path)
            _gm_config_report(NULL, path, 0, "cannot be read; using the defaults");
        return;
    }
    if (truncated)
        _gm_config_report(NULL, path, 0, "is longer than 16 KiB; the rest is ignored");
    gm_config_parse(&_gm_cfg, text, (size_t)len, path, _gm_config_report, NULL);
}

/* environ may not be set yet when the loader makes the first call: then the
 * initial environment comes from /proc/self/environ. */
static void load_config(void)
{
    gm_config_defaults(&_gm_cfg);
    char *const *envp = environ;
    char buf[ENV_MAX];
    char *entries[ENV_ENTRIES];
    if (!envp) {
        bool truncated;
        ssize_t len = read_file("/proc/self/environ", buf, sizeof(buf), &truncated);
        size_t n = 0;
        for (ssize_t i = 0; len > 0 && i < len && n + 1 < ENV_ENTRIES;) {
            entries[n++] = buf + i;
            i += (ssize_t)strlen(buf + i) + 1;
        }
        entries[n] = NULL;
        envp = entries;
    }
    load_file(envp);
    gm_config_apply_env(&_gm_cfg, envp, _gm_config_report, NULL);
}

/* Parses "Key:   123 kB" from /proc/meminfo text. */
static size_t meminfo_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (!p)
        return 0;
    p += strlen(key);
    while (*p == ' ' || *p == ':')
        p++;
    size_t v = 0;
    while (*p >= '0' && *p <= '9')
        v = v * 10 + (size_t)(*p++ - '0');
    return v;
}

/* Under vm.overcommit_memory=2 the whole reservation is charged against
 * CommitLimit (MAP_NORESERVE is ignored): take at most half of what is left. */
static size_t strict_overcommit_mapping(void)
{
    char buf[4096];
    bool truncated;
    if (read_file("/proc/sys/vm/overcommit_memory", buf, sizeof(buf), &truncated) < 1 ||
        buf[0] != '2')
        return 0;
    if (read_file("/proc/meminfo", buf, sizeof(buf), &truncated) < 0)
        return 0;
    size_t limit = meminfo_kb(buf, "CommitLimit"), used = meminfo_kb(buf, "Committed_AS");
    if (limit <= used)
        return (size_t)64 << 20;
    uint64_t bytes = (uint64_t)(limit - used) * 1024 / 2;
    return bytes > SIZE_MAX ? SIZE_MAX : (size_t)bytes;
}

static void fork_prepare(void)
{
    _gm_debug_fork_prepare(); /* its locks come before the engine's */
    anr_core_fork_prepare(_gm_heap);
}
static void fork_parent(void)
{
    anr_core_fork_parent(_gm_heap);
    _gm_debug_fork_parent();
}
static void fork_child(void)
{
    anr_core_fork_child(_gm_heap);
    _gm_purger_fork_child();
    _gm_debug_fork_child();
    _gm_quota_fork_child();
}

static anr_heap *init_heap(void)
{
    load_config();

    anr_core_options opts;
    anr_core_default_options(&opts);
    opts.mapping_size = _gm_cfg.mapping;
    if (!opts.mapping_size)
        opts.mapping_size = strict_overcommit_mapping();
    opts.limit = _gm_cfg.limit;
    if (_gm_cfg.page_ceiling) {
        opts.page_ceiling = _gm_cfg.page_ceiling;
        opts.page_floor = anr_core_default_floor(_gm_cfg.page_ceiling);
    }
    if (_gm_cfg.page_floor)
        opts.page_floor = _gm_cfg.page_floor;
    if (opts.page_floor > opts.page_ceiling)
        opts.page_floor = opts.page_ceiling;
    if (_gm_cfg.n_slab_sizes) {
        opts.slab_sizes = _gm_cfg.slab_sizes;
        opts.n_slab_sizes = _gm_cfg.n_slab_sizes;
    }
    opts.purge_advice = _gm_cfg.purge_advice;
    /* Under DEBUG=valgrind the caches' lists live in freed blocks, which
     * memcheck has marked inaccessible: run uncached. */
    opts.thread_cache = _gm_cfg.thread_cache && !(_gm_cfg.debug & ANR_DEBUG_VALGRIND);
    opts.tcache_max_size = _gm_cfg.tcache_max_size;
    opts.tcache_max_bytes = _gm_cfg.tcache_max_bytes;
    opts.tcache_run_bytes = _gm_cfg.tcache_run_bytes;
    opts.background_purge = _gm_cfg.purge_thread; /* purger.c starts it (or turns this off) */
    opts.young_ms = _gm_cfg.reuse_ms;
    if (_gm_cfg.decay_ms)
        opts.decay_ms = _gm_cfg.decay_ms;
    opts.hooks.on_error = _gm_on_error;
    _gm_quota_hooks(&opts.hooks);

    anr_heap *h;
    int err = anr_core_init(&h, &opts);
    if (err && opts.slab_sizes) {
        _gm_config_report(NULL, "SLAB_SIZES", 0, "rejected by the engine; using the defaults");
        opts.slab_sizes = NULL;
        opts.n_slab_sizes = 0;
        err = anr_core_init(&h, &opts);
    }
    if (err)
        _gm_fatal("cannot reserve the heap mapping", err);
    return h;
}

anr_heap *_gm_init_slow(void)
{
    int expected = 0;
    if (__atomic_compare_exchange_n(&init_state, &expected, 1, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        int saved = errno; /* a missing config file is no error of the caller's */
        anr_heap *h = init_heap();
        _gm_debug_init(h); /* DEBUG / DEBUG_SOCKET: anr_malloc's kit adopts the heap */
        __atomic_store_n(&_gm_heap, h, __ATOMIC_RELEASE);
        if (!_gm_dbg)
            __atomic_store_n(&_gm_fast_heap, h, __ATOMIC_RELEASE);
        /* May call malloc: the heap is published, so that just works. */
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        _gm_quota_start(h);
        __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
        errno = saved;
        return h;
    }
    /* Another thread is initialising: wait for the heap to appear. */
    anr_heap *h;
    while (!(h = __atomic_load_n(&_gm_heap, __ATOMIC_ACQUIRE)))
        sched_yield();
    return h;
}

/* Runs after main's atexit handlers. */
/* STATS: the statistics go to the stderr the program started with. If the
 * program closed fd 2 and the number now names another file (coreutils
 * close stderr at exit; a daemon may reopen 2 onto its data), say nothing
 * rather than write into that file. */
static struct stat stderr_at_start;
static bool stderr_known;

__attribute__((constructor)) static void note_stderr(void)
{
    stderr_known = fstat(2, &stderr_at_start) == 0;
}

__attribute__((destructor)) static void print_stats_at_exit(void)
{
    struct stat now;
    if (!_gm_heap || !_gm_cfg.stats || !stderr_known || fstat(2, &now) != 0 ||
        now.st_dev != stderr_at_start.st_dev || now.st_ino != stderr_at_start.st_ino)
        return;
    gmalloc_print_stats(2);
}

/* --- the public gmalloc_* calls --- */

__attribute__((visibility("default"))) int gmalloc_get_stats(anr_core_stats *out)
{
    anr_core_get_stats(gm_heap(), out);
    return 0;
}

__attribute__((visibility("default"))) bool gmalloc_owns(const void *p)
{
    return anr_core_owns(gm_heap(), p);
}

__attribute__((visibility("default"))) void gmalloc_set_limit(size_t bytes)
{
    anr_core_set_limit(gm_heap(), bytes);
}

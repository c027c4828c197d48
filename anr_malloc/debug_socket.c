/* The debug socket: a per-process Unix socket (<dir>/anr-<pid>.sock, mode
 * 0600, same-uid peers only) that serves stats, fdr, verify, leaks, snapshot
 * and diff for every anr_malloc heap (and libgmalloc.so's, which is one when
 * its debug kit is on). tools/anrctl is its client.
 *
 * Protocol: one request line of at most 255 bytes ("snapshot\n"); the reply
 * is text lines, "anr-debug 1 pid=N" first and "end" last, or a single
 * "error: ..." line; then the server closes. Addresses go out raw with the
 * process's module list ("module BIAS LO HI PATH"); the client symbolizes.
 *
 * Rules (the process is never disturbed):
 *  - The server never allocates: its buffers are on its stack or in one
 *    private work mapping made when the socket is started. So it cannot
 *    allocate from a heap whose lock it holds, nor call malloc from inside
 *    an allocation path (it runs in its own thread or the caller's loop).
 *  - Heaps are read through anr_heap_foreach / anr_fdr_read / the verify
 *    walk, which bound their lock holds; replies are written with no lock
 *    held, with send timeouts, so a stalled client stalls nobody else.
 *  - A peer of another uid, a request that is too long, not text, or not a
 *    command gets one "error:" line and the connection closes.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define REQ_MAX 256u   /* request bytes, newline included */
#define GROUPS 4096u   /* stack groups per snapshot (a power of two) */
#define FDR_MAX 4096u  /* flight recorder entries per reply */
#define LEAK_MAX 1024u /* leak records per reply (the rest are counted) */
#define MODULES 512u
#define PATH_LEN 256u
#define RECV_TIMEOUT_MS 2000
#define SEND_TIMEOUT_MS 5000

/* --- the work mapping --- */

typedef struct group {
    uint64_t hash;
    uint32_t gen;  /* valid in table generation `gen` only: no clearing */
    uint32_t heap; /* registry slot */
    uint32_t nframes;
    uint64_t count, bytes;
    uintptr_t frames[ANR_MAX_STACK_DEPTH];
} group;

typedef struct table {
    group *g;
    uint32_t gen;
    bool valid;
    uint64_t time_ns;
    size_t groups, dropped, blocks, bytes;
} table;

typedef struct leak {
    uint32_t heap;
    uint32_t nframes;
    uintptr_t ptr, info;
    size_t size;
    uint32_t tid;
    bool has_info;
    uint64_t seq;
    uintptr_t frames[ANR_MAX_STACK_DEPTH];
} leak;

typedef struct module {
    uintptr_t bias, lo, hi;
    char path[PATH_LEN];
} module;

typedef struct work {
    group groups[2][GROUPS];
    anr_fdr_entry fdr[FDR_MAX];
    leak leaks[LEAK_MAX];
    module modules[MODULES];
} work;

static struct {
    pthread_mutex_t lock; /* start/stop and one request at a time */
    int listen_fd;
    int stop_pipe[2];
    bool running, threaded;
    pthread_t thread;
    pid_t pid;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    work *w;
    table cur, base;
    bool atfork_done;
} ds = {PTHREAD_MUTEX_INITIALIZER, -1, {-1, -1}, false, false, 0, 0, "", NULL, {0}, {0}, false};

/* --- the reply writer (a stack buffer flushed with send) --- */

typedef struct writer {
    int fd;
    bool failed;
    size_t len;
    char buf[8192];
} writer;

static void w_flush(writer *w)
{
    size_t off = 0;
    while (!w->failed && off < w->len) {
        ssize_t n = send(w->fd, w->buf + off, w->len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            w->failed = true; /* peer gone or stalled past the timeout: drop the rest */
        else
            off += (size_t)n;
    }
    w->len = 0;
}

static void w_put(writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void w_put(writer *w, const char *fmt, ...)
{
    if (w->failed) return;
    if (w->len > sizeof(w->buf) - 2048) w_flush(w);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->buf + w->len, sizeof(w->buf) - w->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof(w->buf) - w->len)
        n = (int)(sizeof(w->buf) - w->len - 1); /* one overlong line: cut */
    w->len += (size_t)n;
}

static void w_frames(writer *w, const uintptr_t *frames, unsigned n)
{
    w_put(w, " %u", n);
    for (unsigned i = 0; i < n; i++)
        w_put(w, " 0x%lx", (unsigned long)frames[i]);
    w_put(w, "\n");
}

/* A heap name as one token (reports are split on spaces). */
static const char *token(const char *name, char *buf, size_t cap)
{
    size_t i = 0;
    for (; name[i] && i + 1 < cap; i++)
        buf[i] = (name[i] <= ' ' || name[i] == 0x7f) ? '_' : name[i];
    buf[i] = 0;
    return i ? buf : "-";
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- modules (for symbolizing in the client) --- */

typedef struct mod_ctx {
    module *m;
    size_t n;
} mod_ctx;

static int mod_visit(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    mod_ctx *c = ctx;
    if (c->n >= MODULES) return 1;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        if (a < lo) lo = a;
        if (a + ph->p_memsz > hi) hi = a + ph->p_memsz;
    }
    if (hi <= lo) return 0;
    module *m = &c->m[c->n];
    m->bias = info->dlpi_addr;
    m->lo = lo;
    m->hi = hi;
    m->path[0] = 0;
    if (info->dlpi_name && info->dlpi_name[0]) {
        snprintf(m->path, sizeof(m->path), "%s", info->dlpi_name);
    } else if (c->n == 0) {
        /* The main program has no name here. */
        ssize_t n = readlink("/proc/self/exe", m->path, sizeof(m->path) - 1);
        m->path[n > 0 ? n : 0] = 0;
    }
    if (m->path[0]) c->n++;
    return 0;
}

/* Collected first, written after: dl_iterate_phdr holds the loader lock. */
static void put_modules(writer *w)
{
    mod_ctx c = {ds.w->modules, 0};
    dl_iterate_phdr(mod_visit, &c);
    for (size_t i = 0; i < c.n; i++) {
        const module *m = &c.m[i];
        char path[PATH_LEN];
        w_put(w, "module 0x%lx 0x%lx 0x%lx %s\n", (unsigned long)m->bias, (unsigned long)m->lo,
              (unsigned long)m->hi, token(m->path, path, sizeof(path)));
    }
}

/* --- heaps --- */

/* Calls fn for every heap, with heap destruction held off. */
static void each_heap(writer *w, void (*fn)(writer *, anr_mheap *, void *), void *ctx)
{
    _am_registry_hold(true);
    for (unsigned i = 0; i < ANR_MAX_HEAPS; i++) {
        anr_mheap *h = _am_heap_at(i);
        if (h) fn(w, h, ctx);
    }
    _am_registry_hold(false);
}

static void put_stats(writer *w, anr_mheap *h, void *ctx)
{
    (void)ctx;
    anr_heap_stats s;
    char name[64];
    anr_heap_get_stats(h, &s);
    token(h->name, name, sizeof(name));
#define S(k, v) w_put(w, "stat %s %s %llu\n", name, k, (unsigned long long)(v))
    S("mapping_size", s.mapping_size);
    S("side_size", s.side_size);
    S("page_size", s.page_size);
    S("limit", s.limit);
    S("use", s.use);
    S("bytes_in_use", s.bytes_in_use);
    S("objects_in_use", s.objects_in_use);
    S("pages_in_use", s.pages_in_use);
    S("pages_dirty", s.pages_dirty);
    S("pages_peak", s.pages_peak);
    S("alloc_failures", s.alloc_failures);
    S("bad_pointers", s.bad_pointers);
    S("more_memory_calls", s.more_memory_calls);
    S("more_memory_freed", s.more_memory_freed);
    S("memory_full_calls", s.memory_full_calls);
    S("gc_runs", s.gc_runs);
    S("gc_garbage", s.gc_garbage);
    S("gc_freed", s.gc_freed);
    S("debug_records", s.debug_records);
    S("records_dropped", s.records_dropped);
    S("fdr_ops", s.fdr_ops);
    S("debug", s.debug);
#undef S
}

static void put_verify(writer *w, anr_mheap *h, void *ctx)
{
    (void)ctx;
    char name[64];
    /* Quiet: a diagnostic request never runs the fault handler (which may abort). */
    const char *bad = _am_verify(h, false);
    token(h->name, name, sizeof(name));
    if (bad)
        w_put(w, "verify %s bad %s\n", name, bad);
    else
        w_put(w, "verify %s ok\n", name);
}

static void put_fdr(writer *w, anr_mheap *h, void *ctx)
{
    size_t want = *(size_t *)ctx;
    char name[64];
    token(h->name, name, sizeof(name));
    size_t n = anr_fdr_read(h, ds.w->fdr, want);
    w_put(w, "fdrheap %s %zu %zu\n", name, anr_fdr_capacity(h), n);
    for (size_t i = 0; i < n; i++) {
        const anr_fdr_entry *e = &ds.w->fdr[i];
        w_put(w, "fdr %s %llu %llu %u %s 0x%lx 0x%lx %zu 0x%lx\n", name, (unsigned long long)e->seq,
              (unsigned long long)e->time_ns, (unsigned)e->tid, anr_fdr_op_name(e->op),
              (unsigned long)e->ptr, (unsigned long)e->old_ptr, e->size, (unsigned long)e->caller);
    }
}

/* --- leaks (a report-only collection) --- */

typedef struct leak_ctx {
    uint32_t heap;
    size_t n;
} leak_ctx;

static void on_leak(void *ctx, anr_mheap *h, const anr_block_info *b)
{
    (void)h;
    leak_ctx *c = ctx;
    if (c->n >= LEAK_MAX) return;
    leak *l = &ds.w->leaks[c->n++];
    l->heap = c->heap;
    l->ptr = (uintptr_t)b->ptr;
    l->size = b->size;
    l->tid = b->tid;
    l->seq = b->seq;
    l->has_info = b->has_debug_info;
    l->info = b->debug_info;
    l->nframes = b->nframes;
    for (unsigned i = 0; i < b->nframes; i++)
        l->frames[i] = (uintptr_t)b->stack[i];
}

static void put_leaks(writer *w, anr_mheap *h, void *ctx)
{
    (void)ctx;
    char name[64];
    token(h->name, name, sizeof(name));
    unsigned markers;
    pthread_mutex_lock(&h->cb_lock);
    markers = h->n_markers;
    pthread_mutex_unlock(&h->cb_lock);
    if (!h->has_side) {
        w_put(w, "leaks %s unsupported\n", name);
        return;
    }
    if (markers == 0) {
        /* Without markers every block would count as garbage. */
        w_put(w, "leaks %s nomarkers\n", name);
        return;
    }
    leak_ctx c = {(uint32_t)h->slot, 0};
    anr_gc_result r;
    int rc = anr_heap_gc(h, ANR_GC_REPORT, on_leak, &c, &r); /* never ANR_GC_FREE */
    if (rc) {
        w_put(w, "leaks %s %s\n", name, rc == EBUSY ? "busy" : "error");
        return;
    }
    for (size_t i = 0; i < c.n; i++) {
        const leak *l = &ds.w->leaks[i];
        w_put(w, "leak %s 0x%lx %zu %u %llu ", name, (unsigned long)l->ptr, l->size,
              (unsigned)l->tid, (unsigned long long)l->seq);
        if (l->has_info)
            w_put(w, "0x%lx", (unsigned long)l->info);
        else
            w_put(w, "-");
        w_frames(w, l->frames, l->nframes);
    }
    w_put(w, "leaks %s live=%zu marked=%zu garbage=%zu bytes=%zu shown=%zu\n", name, r.live,
          r.marked, r.garbage, r.garbage_bytes, c.n);
}

/* --- snapshots: live blocks grouped by (heap, allocation stack) --- */

static uint64_t key_hash(uint32_t heap, const uintptr_t *f, unsigned n)
{
    uint64_t x = 1469598103934665603u ^ heap; /* FNV-1a over the heap and frames */
    x *= 1099511628211u;
    for (unsigned i = 0; i < n; i++) {
        x ^= (uint64_t)f[i];
        x *= 1099511628211u;
    }
    return x;
}

static group *lookup(table *t, uint64_t hash, uint32_t heap, const uintptr_t *f, unsigned n,
                     bool insert)
{
    for (size_t k = 0; k < GROUPS; k++) {
        group *g = &t->g[(hash + k) & (GROUPS - 1)];
        if (g->gen != t->gen) {
            if (!insert) return NULL;
            g->gen = t->gen;
            g->hash = hash;
            g->heap = heap;
            g->nframes = n;
            memcpy(g->frames, f, n * sizeof(*f));
            g->count = g->bytes = 0;
            t->groups++;
            return g;
        }
        if (g->hash == hash && g->heap == heap && g->nframes == n &&
            memcmp(g->frames, f, n * sizeof(*f)) == 0)
            return g;
    }
    return NULL;
}

typedef struct snap_ctx {
    table *t;
    uint32_t heap;
} snap_ctx;

static void snap_add(void *ctx, const anr_block_info *b)
{
    snap_ctx *c = ctx;
    uintptr_t f[ANR_MAX_STACK_DEPTH];
    unsigned n = b->nframes > ANR_MAX_STACK_DEPTH ? ANR_MAX_STACK_DEPTH : b->nframes;
    for (unsigned i = 0; i < n; i++)
        f[i] = (uintptr_t)b->stack[i];
    group *g = lookup(c->t, key_hash(c->heap, f, n), c->heap, f, n, true);
    c->t->blocks++;
    c->t->bytes += b->size;
    if (!g) {
        c->t->dropped++;
        return;
    }
    g->count++;
    g->bytes += b->size;
}

static void snap_heap(writer *w, anr_mheap *h, void *ctx)
{
    (void)w;
    snap_ctx c = {ctx, (uint32_t)h->slot};
    anr_heap_foreach(h, snap_add, &c); /* no lock held while snap_add runs */
}

static void take(table *t)
{
    t->gen++;
    if (t->gen == 0) t->gen = 1; /* 0 is what a fresh (zero) slot holds */
    t->groups = t->dropped = t->blocks = t->bytes = 0;
    t->time_ns = now_ns();
    each_heap(NULL, snap_heap, t);
    t->valid = true;
}

static const char *slot_name(uint32_t slot, char *buf, size_t cap)
{
    anr_mheap *h = _am_heap_at(slot);
    return token(h ? h->name : "?", buf, cap);
}

static void put_group(writer *w, const char *tag, const group *g, int64_t dcount, int64_t dbytes)
{
    char name[64];
    w_put(w, "%s %s %llu %llu %lld %lld", tag, slot_name(g->heap, name, sizeof(name)),
          (unsigned long long)g->count, (unsigned long long)g->bytes, (long long)dcount,
          (long long)dbytes);
    w_frames(w, g->frames, g->nframes);
}

static void put_snapshot(writer *w)
{
    take(&ds.cur);
    /* The new snapshot becomes the baseline for diff. */
    table t = ds.base;
    ds.base = ds.cur;
    ds.cur = t;
    const table *b = &ds.base;
    w_put(w, "snapshot groups=%zu blocks=%zu bytes=%zu dropped=%zu\n", b->groups, b->blocks,
          b->bytes, b->dropped);
    _am_registry_hold(true);
    for (size_t i = 0; i < GROUPS; i++)
        if (b->g[i].gen == b->gen) put_group(w, "group", &b->g[i], 0, 0);
    _am_registry_hold(false);
}

static void put_diff(writer *w)
{
    if (!ds.base.valid) {
        put_snapshot(w);
        w_put(w, "diff nobase\n");
        return;
    }
    take(&ds.cur);
    table *c = &ds.cur, *b = &ds.base;
    uint64_t age_ms = (c->time_ns - b->time_ns) / 1000000u;
    w_put(w,
          "diff age_ms=%llu groups=%zu blocks=%zu bytes=%zu dropped=%zu base_blocks=%zu "
          "base_bytes=%zu\n",
          (unsigned long long)age_ms, c->groups, c->blocks, c->bytes, c->dropped, b->blocks,
          b->bytes);
    _am_registry_hold(true);
    for (size_t i = 0; i < GROUPS; i++) {
        const group *g = &c->g[i];
        if (g->gen != c->gen) continue;
        const group *o = lookup(b, g->hash, g->heap, g->frames, g->nframes, false);
        int64_t dc = (int64_t)g->count - (int64_t)(o ? o->count : 0);
        int64_t db = (int64_t)g->bytes - (int64_t)(o ? o->bytes : 0);
        if (dc || db) put_group(w, "change", g, dc, db);
    }
    for (size_t i = 0; i < GROUPS; i++) {
        const group *o = &b->g[i];
        if (o->gen != b->gen || lookup(c, o->hash, o->heap, o->frames, o->nframes, false)) continue;
        group gone = *o;
        gone.count = gone.bytes = 0;
        put_group(w, "change", &gone, -(int64_t)o->count, -(int64_t)o->bytes);
    }
    _am_registry_hold(false);
    /* The baseline stays: each diff is against the last snapshot. */
}

/* --- requests --- */

static const char help_text[] =
    "help stats: per-heap statistics\n"
    "help fdr [N]: the last N (default all, at most 4096) flight recorder entries per heap\n"
    "help verify: a full consistency check of every heap\n"
    "help leaks: a report-only garbage collection of heaps with markers\n"
    "help snapshot: live blocks grouped by allocation stack; kept as the baseline\n"
    "help diff: the groups whose live count or bytes changed since the baseline\n";

static bool word(const char *req, const char *name, const char **rest)
{
    size_t n = strlen(name);
    if (strncmp(req, name, n) != 0 || (req[n] && req[n] != ' ')) return false;
    *rest = req + n;
    while (**rest == ' ')
        (*rest)++;
    return true;
}

/* Answers one request line (without its newline). Returns false after an error reply. */
static bool answer(writer *w, const char *req)
{
    const char *rest;
    size_t fdr_n = FDR_MAX;
    enum { STATS, FDR, VERIFY, LEAKS, SNAPSHOT, DIFF, HELP } cmd;
    if (word(req, "fdr", &rest)) {
        cmd = FDR;
        if (*rest) {
            char *end;
            unsigned long v = strtoul(rest, &end, 10);
            if (*end || v == 0 || v > FDR_MAX || *rest < '0' || *rest > '9') {
                w_put(w, "error: fdr takes a count from 1 to %u\n", FDR_MAX);
                return false;
            }
            fdr_n = v;
        }
    } else if (word(req, "stats", &rest) && !*rest) {
        cmd = STATS;
    } else if (word(req, "verify", &rest) && !*rest) {
        cmd = VERIFY;
    } else if (word(req, "leaks", &rest) && !*rest) {
        cmd = LEAKS;
    } else if (word(req, "snapshot", &rest) && !*rest) {
        cmd = SNAPSHOT;
    } else if (word(req, "diff", &rest) && !*rest) {
        cmd = DIFF;
    } else if (word(req, "help", &rest) && !*rest) {
        cmd = HELP;
    } else {
        w_put(w, "error: unknown request (try help)\n");
        return false;
    }
    w_put(w, "anr-debug 1 pid=%d\n", (int)getpid());
    if (cmd == FDR || cmd == LEAKS || cmd == SNAPSHOT || cmd == DIFF) put_modules(w);
    switch (cmd) {
    case STATS:
        each_heap(w, put_stats, NULL);
        break;
    case FDR:
        each_heap(w, put_fdr, &fdr_n);
        break;
    case VERIFY:
        each_heap(w, put_verify, NULL);
        break;
    case LEAKS:
        each_heap(w, put_leaks, NULL);
        break;
    case SNAPSHOT:
        put_snapshot(w);
        break;
    case DIFF:
        put_diff(w);
        break;
    case HELP:
        w_put(w, "%s", help_text);
        break;
    }
    w_put(w, "end\n");
    return true;
}

/* Reads one request line into req (NUL-terminated, newline and a CR dropped).
 * Returns NULL on success, else the error to send. */
static const char *read_request(int fd, char *req, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = recv(fd, req + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return "error: timed out waiting for a request\n";
        if (n == 0) return len ? "error: malformed request (no newline)\n" : "";
        char *nl = memchr(req + len, '\n', (size_t)n);
        len += (size_t)n;
        if (nl) {
            if ((size_t)(nl - req) + 1 != len)
                return "error: malformed request (one line per connection)\n";
            *nl = 0;
            if (nl > req && nl[-1] == '\r') nl[-1] = 0;
            break;
        }
        if (len >= cap - 1) return "error: request too long (at most 255 bytes)\n";
    }
    for (const char *p = req; *p; p++)
        if (*p < ' ' || *p > '~') return "error: malformed request (not printable text)\n";
    return NULL;
}

static void set_timeout(int fd, int opt, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

static void serve_conn(int fd)
{
    writer w;
    w.fd = fd;
    w.failed = false;
    w.len = 0;
    set_timeout(fd, SO_RCVTIMEO, RECV_TIMEOUT_MS);
    set_timeout(fd, SO_SNDTIMEO, SEND_TIMEOUT_MS);
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 || cred.uid != geteuid()) {
        w_put(&w, "error: permission denied (peer uid %u)\n", clen ? (unsigned)cred.uid : 0u);
        w_flush(&w);
        return;
    }
    char req[REQ_MAX + 1];
    const char *err = read_request(fd, req, sizeof(req));
    if (err) {
        w_put(&w, "%s", err);
        w_flush(&w);
        return;
    }
    pthread_mutex_lock(&ds.lock);
    if (ds.w) answer(&w, req);
    pthread_mutex_unlock(&ds.lock);
    w_flush(&w);
}

int anr_debug_socket_serve(void)
{
    int lfd = __atomic_load_n(&ds.listen_fd, __ATOMIC_ACQUIRE);
    if (lfd < 0) return EBADF;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? EAGAIN : errno;
    serve_conn(fd);
    close(fd);
    return 0;
}

static void *server_main(void *arg)
{
    (void)arg;
    struct pollfd p[2] = {{ds.listen_fd, POLLIN, 0}, {ds.stop_pipe[0], POLLIN, 0}};
    for (;;) {
        p[0].revents = p[1].revents = 0;
        int n = poll(p, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || p[1].revents) break;
        if (p[0].revents & POLLIN) anr_debug_socket_serve();
    }
    return NULL;
}

/* --- start and stop --- */

/* fork(): the child has no server thread; it must not answer for the parent. */
static void atfork_child(void)
{
    if (ds.listen_fd >= 0) close(ds.listen_fd);
    if (ds.stop_pipe[0] >= 0) {
        close(ds.stop_pipe[0]);
        close(ds.stop_pipe[1]);
    }
    ds.listen_fd = ds.stop_pipe[0] = ds.stop_pipe[1] = -1;
    ds.running = ds.threaded = false;
    ds.path[0] = 0;
    pthread_mutex_init(&ds.lock, NULL);
}

__attribute__((destructor)) static void unlink_at_exit(void)
{
    if (ds.running && ds.pid == getpid() && ds.path[0]) unlink(ds.path);
}

static int make_path(const char *dir, char *out, size_t cap)
{
    if (!dir || !*dir) {
        const char *x = getenv("XDG_RUNTIME_DIR");
        dir = x && x[0] == '/' ? x : "/tmp";
    }
    int n = snprintf(out, cap, "%s/anr-%d.sock", dir, (int)getpid());
    return n < 0 || (size_t)n >= cap ? ENAMETOOLONG : 0;
}

static int listen_on(const char *path)
{
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST; /* never remove anything but a stale socket of this pid */
        /* Someone in this process serves it already (a second copy of the
         * server, e.g. libgmalloc.so's beside libanr_malloc's): leave it. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool live = probe >= 0 && connect(probe, (struct sockaddr *)&a, sizeof(a)) == 0;
        if (probe >= 0) close(probe);
        if (live) return -EADDRINUSE;
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    /* Nobody can connect before listen(): chmod in between leaves no window. */
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (chmod(path, 0600) != 0 || listen(fd, 8) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return -e;
    }
    return fd;
}

int anr_debug_socket_start(const char *dir, unsigned flags)
{
    if (flags & ~ANR_DSOCK_NO_THREAD) return EINVAL;
    pthread_mutex_lock(&ds.lock);
    int rc = 0;
    if (ds.running) {
        rc = EALREADY;
        goto out;
    }
    char path[sizeof(ds.path)];
    if ((rc = make_path(dir, path, sizeof(path))) != 0) goto out;
    if (!ds.w) {
        void *m = mmap(NULL, sizeof(work), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            rc = ENOMEM;
            goto out;
        }
        ds.w = m;
        ds.cur.g = ds.w->groups[0];
        ds.base.g = ds.w->groups[1];
    }
    int fd = listen_on(path);
    if (fd < 0) {
        rc = -fd;
        goto out;
    }
    if (pipe2(ds.stop_pipe, O_CLOEXEC) != 0) {
        rc = errno;
        close(fd);
        unlink(path);
        goto out;
    }
    memcpy(ds.path, path, sizeof(path));
    ds.pid = getpid();
    ds.listen_fd = fd;
    ds.base.valid = false;
    if (!(flags & ANR_DSOCK_NO_THREAD)) {
        /* The server takes no signals of the program's. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&ds.thread, NULL, server_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc) {
            close(fd);
            close(ds.stop_pipe[0]);
            close(ds.stop_pipe[1]);
            ds.listen_fd = ds.stop_pipe[0] = ds.stop_pipe[1] = -1;
            unlink(path);
            ds.path[0] = 0;
            goto out;
        }
        pthread_setname_np(ds.thread, "anr-debug");
        ds.threaded = true;
    }
    if (!ds.atfork_done) {
        pthread_atfork(NULL, NULL, atfork_child);
        ds.atfork_done = true;
    }
    ds.running = true;
out:
    pthread_mutex_unlock(&ds.lock);
    return rc;
}

void anr_debug_socket_stop(void)
{
    pthread_mutex_lock(&ds.lock);
    if (!ds.running) {
        pthread_mutex_unlock(&ds.lock);
        return;
    }
    bool threaded = ds.threaded;
    pthread_t t = ds.thread;
    ds.running = ds.threaded = false;
    if (threaded) {
        char c = 1;
        while (write(ds.stop_pipe[1], &c, 1) < 0 && errno == EINTR)
            ;
    }
    pthread_mutex_unlock(&ds.lock); /* the server may be waiting for it */
    if (threaded) pthread_join(t, NULL);
    pthread_mutex_lock(&ds.lock);
    close(ds.listen_fd);
    close(ds.stop_pipe[0]);
    close(ds.stop_pipe[1]);
    __atomic_store_n(&ds.listen_fd, -1, __ATOMIC_RELEASE);
    ds.stop_pipe[0] = ds.stop_pipe[1] = -1;
    unlink(ds.path);
    ds.path[0] = 0;
    pthread_mutex_unlock(&ds.lock);
}

int anr_debug_socket_fd(void)
{
    return __atomic_load_n(&ds.listen_fd, __ATOMIC_ACQUIRE);
}

size_t anr_debug_socket_path(char *buf, size_t cap)
{
    pthread_mutex_lock(&ds.lock);
    int n = snprintf(buf, cap, "%s", ds.path);
    pthread_mutex_unlock(&ds.lock);
    return n < 0 ? 0 : (size_t)n;
}

/* anrctl: the client of the anr debug socket (anr_malloc/debug_socket.c).
 *
 *   anrctl [-s SOCKET] [-n TOP] [--raw] PID COMMAND [ARG]
 *
 * COMMAND: stats, fdr [N], verify, leaks, snapshot, diff, help. The process
 * sends raw addresses and its module list (load bias and address range of
 * each loaded object); anrctl turns each return address into function and
 * file:line with addr2line (binutils) on the module's file at
 * (address - 1 - bias), which handles PIE programs and shared libraries
 * alike. Without addr2line, or without symbols, frames show module+offset.
 *
 * Exit status: 0 done; 1 the process refused the request; 2 usage or
 * connection error; 3 `verify` found a problem.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_REPLY ((size_t)256 << 20)
#define BATCH 512 /* addresses per addr2line run */

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("anrctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) die(2, "out of memory");
    return p;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) die(2, "out of memory");
    return d;
}

/* --- finding and talking to the socket --- */

static bool is_socket(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* XDG_RUNTIME_DIR as the process sees it (readable for the same uid). */
static bool proc_runtime_dir(long pid, char *out, size_t cap)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/environ", pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char *buf = NULL;
    size_t len = 0;
    bool found = false;
    while (!found && getdelim(&buf, &len, '\0', f) > 0) {
        if (strncmp(buf, "XDG_RUNTIME_DIR=", 16) == 0 && buf[16] == '/') {
            snprintf(out, cap, "%s", buf + 16);
            found = true;
        }
    }
    free(buf);
    fclose(f);
    return found;
}

static void find_socket(long pid, char *out, size_t cap)
{
    char dirs[4][1024];
    int n = 0;
    if (proc_runtime_dir(pid, dirs[n], sizeof(dirs[n]))) n++;
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (x && x[0] == '/') snprintf(dirs[n++], sizeof(dirs[0]), "%s", x);
    snprintf(dirs[n++], sizeof(dirs[0]), "/run/user/%u", (unsigned)geteuid());
    snprintf(dirs[n++], sizeof(dirs[0]), "/tmp");
    for (int i = 0; i < n; i++) {
        snprintf(out, cap, "%s/anr-%ld.sock", dirs[i], pid);
        if (is_socket(out)) return;
    }
    die(2,
        "no debug socket for pid %ld (looked for anr-%ld.sock in $XDG_RUNTIME_DIR, "
        "/run/user/%u and /tmp); is it enabled (GMALLOC_DEBUG_SOCKET=1 or "
        "anr_debug_socket_start)?",
        pid, pid, (unsigned)geteuid());
}

static char *request(const char *path, const char *req, size_t *len_out)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die(2, "socket: %s", strerror(errno));
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a.sun_path)) die(2, "socket path too long: %s", path);
    strcpy(a.sun_path, path);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        die(2, "connect %s: %s", path, strerror(errno));
    size_t rl = strlen(req), off = 0;
    while (off < rl) {
        ssize_t n = send(fd, req + off, rl - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* the reply may still say why */
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    size_t cap = 65536, len = 0;
    char *buf = xrealloc(NULL, cap);
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= MAX_REPLY) die(2, "reply longer than %zu bytes", MAX_REPLY);
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die(2, "reading the reply: %s", strerror(errno));
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    *len_out = len;
    return buf;
}

/* --- the reply, split into lines and words --- */

typedef struct line {
    char **w;
    int n;
} line;

static line *split(char *text, size_t *nlines)
{
    size_t cap = 256, n = 0;
    line *ls = xrealloc(NULL, cap * sizeof(*ls));
    for (char *s = text; *s;) {
        char *nl = strchr(s, '\n');
        if (nl) *nl = 0;
        if (n == cap) {
            cap *= 2;
            ls = xrealloc(ls, cap * sizeof(*ls));
        }
        line *l = &ls[n++];
        l->w = NULL;
        l->n = 0;
        int wc = 0;
        for (char *t = strtok(s, " "); t; t = strtok(NULL, " ")) {
            if (l->n == wc) {
                wc = wc ? wc * 2 : 8;
                l->w = xrealloc(l->w, (size_t)wc * sizeof(char *));
            }
            l->w[l->n++] = t;
        }
        if (!nl) break;
        s = nl + 1;
    }
    *nlines = n;
    return ls;
}

static bool is(const line *l, const char *tag)
{
    return l->n > 0 && strcmp(l->w[0], tag) == 0;
}

static uint64_t num(const char *s)
{
    return strtoull(s, NULL, 0);
}
static int64_t snum(const char *s)
{
    return strtoll(s, NULL, 0);
}

/* "key=value" among words[from..]: the value, or 0. */
static uint64_t kv(const line *l, int from, const char *key)
{
    size_t k = strlen(key);
    for (int i = from; i < l->n; i++)
        if (strncmp(l->w[i], key, k) == 0 && l->w[i][k] == '=') return num(l->w[i] + k + 1);
    return 0;
}

/* --- symbolization --- */

typedef struct module {
    uintptr_t bias, lo, hi;
    const char *path, *base;
} module;

typedef struct sym {
    uintptr_t addr;
    char *text;
} sym;

static module *mods;
static size_t nmods;
static sym *syms; /* open addressing, cap a power of two */
static size_t syms_cap, syms_n;
static long target_pid;

static const module *module_of(uintptr_t a)
{
    for (size_t i = 0; i < nmods; i++)
        if (a >= mods[i].lo && a < mods[i].hi) return &mods[i];
    return NULL;
}

static sym *sym_slot(uintptr_t a)
{
    size_t i = (size_t)((a * 0x9e3779b97f4a7c15ull) >> 20) & (syms_cap - 1);
    while (syms[i].text && syms[i].addr != a)
        i = (i + 1) & (syms_cap - 1);
    return &syms[i];
}

static void sym_want(uintptr_t a)
{
    if (!a) return;
    if ((syms_n + 1) * 2 > syms_cap) {
        sym *old = syms;
        size_t oc = syms_cap;
        syms_cap = syms_cap ? syms_cap * 2 : 1024;
        syms = calloc(syms_cap, sizeof(*syms));
        if (!syms) die(2, "out of memory");
        for (size_t i = 0; i < oc; i++)
            if (old[i].text) *sym_slot(old[i].addr) = old[i];
        free(old);
    }
    sym *s = sym_slot(a);
    if (!s->text) {
        s->addr = a;
        s->text = xstrdup(""); /* filled in by resolve() */
        syms_n++;
    }
}

/* The module file as this process can open it (the target may live in
 * another mount namespace: try /proc/PID/root first). */
static const char *module_file(const module *m, char *buf, size_t cap)
{
    snprintf(buf, cap, "/proc/%ld/root%s", target_pid, m->path);
    if (access(buf, R_OK) == 0) return buf;
    return m->path;
}

/* Runs addr2line on n addresses of one module; fills out[i] ("" if unknown). */
static void addr2line(const module *m, const uintptr_t *rel, size_t n, char **func, char **where)
{
    char file[4200];
    const char *path = module_file(m, file, sizeof(file));
    char **argv = xrealloc(NULL, (n + 8) * sizeof(char *));
    char(*args)[24] = xrealloc(NULL, n * sizeof(*args));
    int k = 0;
    argv[k++] = "addr2line";
    argv[k++] = "-f";
    argv[k++] = "-C";
    argv[k++] = "-e";
    argv[k++] = (char *)path;
    for (size_t i = 0; i < n; i++) {
        snprintf(args[i], sizeof(args[i]), "0x%" PRIxPTR, rel[i]);
        argv[k++] = args[i];
    }
    argv[k] = NULL;
    for (size_t i = 0; i < n; i++)
        func[i] = where[i] = NULL;
    int p[2];
    if (pipe(p) != 0) goto done;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 2);
        execvp("addr2line", argv);
        _exit(127);
    }
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        goto done;
    }
    FILE *f = fdopen(p[0], "r");
    char *ln = NULL;
    size_t lc = 0;
    for (size_t i = 0; f && i < n; i++) {
        if (getline(&ln, &lc, f) <= 0) break;
        ln[strcspn(ln, "\n")] = 0;
        func[i] = xstrdup(ln);
        if (getline(&ln, &lc, f) <= 0) break;
        ln[strcspn(ln, "\n")] = 0;
        char *d = strstr(ln, " (discriminator");
        if (d) *d = 0;
        where[i] = xstrdup(ln);
    }
    free(ln);
    if (f) fclose(f);
    waitpid(pid, NULL, 0);
done:
    free(argv);
    free(args);
}

static void resolve(void)
{
    for (size_t mi = 0; mi < nmods; mi++) {
        const module *m = &mods[mi];
        uintptr_t rel[BATCH];
        sym *who[BATCH];
        char *func[BATCH], *where[BATCH];
        size_t n = 0;
        for (size_t i = 0; i <= syms_cap; i++) {
            bool flush = i == syms_cap ? n > 0 : n == BATCH;
            if (flush) {
                addr2line(m, rel, n, func, where);
                for (size_t j = 0; j < n; j++) {
                    char text[1024];
                    uintptr_t off = who[j]->addr - m->bias;
                    bool fn = func[j] && strcmp(func[j], "??") != 0;
                    bool fl = where[j] && strncmp(where[j], "??", 2) != 0;
                    if (fn && fl)
                        snprintf(text, sizeof(text), "%s at %s (%s+0x%" PRIxPTR ")", func[j],
                                 where[j], m->base, off);
                    else if (fn)
                        snprintf(text, sizeof(text), "%s (%s+0x%" PRIxPTR ")", func[j], m->base,
                                 off);
                    else
                        snprintf(text, sizeof(text), "%s+0x%" PRIxPTR, m->base, off);
                    free(who[j]->text);
                    who[j]->text = xstrdup(text);
                    free(func[j]);
                    free(where[j]);
                }
                n = 0;
            }
            if (i == syms_cap) break;
            if (!syms[i].text || syms[i].text[0] || module_of(syms[i].addr) != m) continue;
            who[n] = &syms[i];
            rel[n] = syms[i].addr - 1 - m->bias; /* a return address: the call is before it */
            n++;
        }
    }
}

static const char *sym_text(uintptr_t a)
{
    static char buf[32];
    if (a && syms_cap) {
        sym *s = sym_slot(a);
        if (s->text && s->text[0]) return s->text;
    }
    snprintf(buf, sizeof(buf), "0x%" PRIxPTR, a);
    return buf;
}

/* Frames: words[at] is the count, then the addresses. */
static void want_frames(const line *l, int at)
{
    if (at >= l->n) return;
    int n = (int)num(l->w[at]);
    for (int i = 0; i < n && at + 1 + i < l->n; i++)
        sym_want((uintptr_t)num(l->w[at + 1 + i]));
}

static void print_frames(const line *l, int at)
{
    if (at >= l->n) return;
    int n = (int)num(l->w[at]);
    if (n == 0)
        printf("    (no allocation stack recorded: turn on stacks, e.g. GMALLOC_DEBUG=stacks)\n");
    for (int i = 0; i < n && at + 1 + i < l->n; i++)
        printf("    #%d %s\n", i, sym_text((uintptr_t)num(l->w[at + 1 + i])));
}

/* --- reports --- */

/* "group|change HEAP COUNT BYTES DCOUNT DBYTES NFRAMES FRAMES..." */
enum { G_HEAP = 1, G_COUNT, G_BYTES, G_DCOUNT, G_DBYTES, G_FRAMES };

static int by_bytes(const void *a, const void *b)
{
    const line *x = *(line *const *)a, *y = *(line *const *)b;
    uint64_t bx = num(x->w[G_BYTES]), by = num(y->w[G_BYTES]);
    return bx < by ? 1 : bx > by ? -1 : 0;
}

static int by_growth(const void *a, const void *b)
{
    const line *x = *(line *const *)a, *y = *(line *const *)b;
    int64_t bx = snum(x->w[G_DBYTES]), by = snum(y->w[G_DBYTES]);
    return bx < by ? 1 : bx > by ? -1 : 0;
}

static size_t pick(line *ls, size_t n, const char *tag, bool grown_only, line ***out)
{
    line **sel = xrealloc(NULL, (n + 1) * sizeof(*sel));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is(&ls[i], tag) || ls[i].n <= G_FRAMES) continue;
        if (grown_only && snum(ls[i].w[G_DBYTES]) <= 0) continue;
        sel[k++] = &ls[i];
    }
    *out = sel;
    return k;
}

static void report_snapshot(line *ls, size_t n, size_t top)
{
    line **g;
    size_t k = pick(ls, n, "group", false, &g);
    qsort(g, k, sizeof(*g), by_bytes);
    for (size_t i = 0; i < n; i++)
        if (is(&ls[i], "snapshot"))
            printf("live: %" PRIu64 " blocks, %" PRIu64 " bytes, in %" PRIu64
                   " allocation stacks (pid %ld)%s\n",
                   kv(&ls[i], 1, "blocks"), kv(&ls[i], 1, "bytes"), kv(&ls[i], 1, "groups"),
                   target_pid,
                   kv(&ls[i], 1, "dropped") ? "; some blocks did not fit the table" : "");
    size_t shown = top && top < k ? top : k;
    for (size_t i = 0; i < shown; i++) {
        printf("\n%" PRIu64 " bytes in %" PRIu64 " blocks (heap %s)\n", num(g[i]->w[G_BYTES]),
               num(g[i]->w[G_COUNT]), g[i]->w[G_HEAP]);
        print_frames(g[i], G_FRAMES);
    }
    if (shown < k) printf("\n... %zu more stacks (-n 0 shows all)\n", k - shown);
    printf("\n(kept in the process as the baseline for 'anrctl %ld diff')\n", target_pid);
    free(g);
}

static void report_diff(line *ls, size_t n, size_t top)
{
    for (size_t i = 0; i < n; i++) {
        if (is(&ls[i], "diff") && ls[i].n > 1 && strcmp(ls[i].w[1], "nobase") == 0) {
            printf("no snapshot to compare with: one was taken now; run 'anrctl %ld diff' "
                   "again later\n",
                   target_pid);
            return;
        }
    }
    line **g;
    size_t k = pick(ls, n, "change", true, &g);
    qsort(g, k, sizeof(*g), by_growth);
    size_t shrank = 0;
    for (size_t i = 0; i < n; i++)
        if (is(&ls[i], "change") && ls[i].n > G_FRAMES && snum(ls[i].w[G_DBYTES]) < 0) shrank++;
    for (size_t i = 0; i < n; i++) {
        if (!is(&ls[i], "diff")) continue;
        uint64_t b0 = kv(&ls[i], 1, "base_bytes"), b1 = kv(&ls[i], 1, "bytes");
        printf("since the snapshot %.1f s ago: live bytes %" PRIu64 " -> %" PRIu64 " (%+" PRId64
               "), blocks %" PRIu64 " -> %" PRIu64 " (pid %ld)\n",
               (double)kv(&ls[i], 1, "age_ms") / 1000.0, b0, b1, (int64_t)(b1 - b0),
               kv(&ls[i], 1, "base_blocks"), kv(&ls[i], 1, "blocks"), target_pid);
    }
    if (k == 0)
        printf("no allocation stack grew\n");
    else
        printf("%zu allocation stack%s grew:\n", k, k == 1 ? "" : "s");
    size_t shown = top && top < k ? top : k;
    for (size_t i = 0; i < shown; i++) {
        printf("\n%+" PRId64 " bytes (%+" PRId64 " blocks), now %" PRIu64 " bytes in %" PRIu64
               " blocks (heap %s)\n",
               snum(g[i]->w[G_DBYTES]), snum(g[i]->w[G_DCOUNT]), num(g[i]->w[G_BYTES]),
               num(g[i]->w[G_COUNT]), g[i]->w[G_HEAP]);
        print_frames(g[i], G_FRAMES);
    }
    if (shown < k) printf("\n... %zu more stacks grew (-n 0 shows all)\n", k - shown);
    if (shrank) printf("\n(%zu stack%s shrank; not shown)\n", shrank, shrank == 1 ? "" : "s");
    free(g);
}

static void report_fdr(line *ls, size_t n)
{
    uint64_t last = 0;
    for (size_t i = 0; i < n; i++)
        if (is(&ls[i], "fdr") && ls[i].n >= 10 && num(ls[i].w[3]) > last) last = num(ls[i].w[3]);
    for (size_t i = 0; i < n; i++) {
        const line *l = &ls[i];
        if (is(l, "fdrheap") && l->n >= 4) {
            printf("heap %s: flight recorder of %s slots, %s entries (times relative to the "
                   "last)\n",
                   l->w[1], l->w[2], l->w[3]);
            if (num(l->w[2]) == 0) printf("  (no recorder: the heap has no debug side tables)\n");
            continue;
        }
        if (!is(l, "fdr") || l->n < 10) continue;
        /* fdr HEAP SEQ TIME TID OP PTR OLD SIZE CALLER */
        double dt = -(double)(last - num(l->w[3])) / 1e9;
        printf("  #%-8s %+11.6fs tid %-7s %-11s %-14s size %-8s", l->w[2], dt, l->w[4], l->w[5],
               l->w[6], l->w[8]);
        if (strcmp(l->w[5], "realloc") == 0) printf(" from %s", l->w[7]);
        uintptr_t caller = (uintptr_t)num(l->w[9]);
        printf(" %s\n", caller ? sym_text(caller) : "");
    }
}

static void report_leaks(line *ls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const line *l = &ls[i];
        if (is(l, "leak") && l->n >= 8) {
            /* leak HEAP PTR SIZE TID SEQ INFO NFRAMES FRAMES */
            printf("leak: %s, %s bytes (heap %s", l->w[2], l->w[3], l->w[1]);
            if (num(l->w[5])) printf(", allocation #%s by thread %s", l->w[5], l->w[4]);
            if (strcmp(l->w[6], "-") != 0) printf(", debug info %s", l->w[6]);
            printf(")\n");
            print_frames(l, 7);
        } else if (is(l, "leaks") && l->n >= 3) {
            if (strcmp(l->w[2], "nomarkers") == 0)
                printf("heap %s: no GC markers registered, so leaks cannot be told from live "
                       "blocks (use snapshot and diff)\n",
                       l->w[1]);
            else if (strcmp(l->w[2], "unsupported") == 0)
                printf("heap %s: made without debug side tables (no_debug): no GC\n", l->w[1]);
            else if (strcmp(l->w[2], "busy") == 0)
                printf("heap %s: a collection is already running; try again\n", l->w[1]);
            else
                printf("heap %s: %" PRIu64 " live blocks, %" PRIu64 " marked, %" PRIu64
                       " garbage (%" PRIu64 " bytes)%s\n",
                       l->w[1], kv(l, 2, "live"), kv(l, 2, "marked"), kv(l, 2, "garbage"),
                       kv(l, 2, "bytes"),
                       kv(l, 2, "shown") < kv(l, 2, "garbage") ? "; not all shown" : "");
        }
    }
}

static int report_verify(line *ls, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const line *l = &ls[i];
        if (!is(l, "verify") || l->n < 3) continue;
        if (strcmp(l->w[2], "ok") == 0) {
            printf("heap %s: ok\n", l->w[1]);
        } else {
            printf("heap %s: BROKEN:", l->w[1]);
            for (int k = 3; k < l->n; k++)
                printf(" %s", l->w[k]);
            printf("\n");
            rc = 3;
        }
    }
    return rc;
}

static void report_stats(line *ls, size_t n)
{
    const char *heap = NULL;
    for (size_t i = 0; i < n; i++) {
        const line *l = &ls[i];
        if (!is(l, "stat") || l->n < 4) continue;
        if (!heap || strcmp(heap, l->w[1]) != 0) {
            heap = l->w[1];
            printf("heap %s:\n", heap);
        }
        printf("  %-20s %s\n", l->w[2], l->w[3]);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: anrctl [-s SOCKET] [-n TOP] [--raw] PID COMMAND [ARG]\n"
                    "  stats      per-heap statistics\n"
                    "  fdr [N]    the last N flight recorder entries (default: all, at most 4096)\n"
                    "  verify     a full consistency check of every heap\n"
                    "  leaks      a report-only garbage collection (heaps with GC markers)\n"
                    "  snapshot   live blocks grouped by allocation stack; kept as the baseline\n"
                    "  diff       the allocation stacks whose live bytes grew since the snapshot\n"
                    "  help       what the process serves\n"
                    "  -n TOP     show the TOP biggest stacks (default 20; 0 = all)\n"
                    "  --raw      print the process's reply as it is (addresses not symbolized)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *sock = NULL;
    bool raw = false;
    size_t top = 20;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
            sock = argv[++i];
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            top = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--raw") == 0)
            raw = true;
        else
            usage();
    }
    if (argc - i < 2 || argc - i > 3) usage();
    char *end;
    target_pid = strtol(argv[i], &end, 10);
    if (*end || target_pid <= 0) usage();
    const char *cmd = argv[i + 1];
    char req[256];
    snprintf(req, sizeof(req), "%s%s%s\n", cmd, argc - i == 3 ? " " : "",
             argc - i == 3 ? argv[i + 2] : "");

    char path[4200];
    if (sock)
        snprintf(path, sizeof(path), "%s", sock);
    else
        find_socket(target_pid, path, sizeof(path));
    size_t len;
    char *reply = request(path, req, &len);
    if (len == 0) die(2, "the process closed the connection without a reply");
    if (strncmp(reply, "error:", 6) == 0) {
        fprintf(stderr, "anrctl: pid %ld: %s", target_pid, reply + 6 + (reply[6] == ' '));
        return 1;
    }
    if (raw) {
        fwrite(reply, 1, len, stdout);
        return 0;
    }
    size_t n;
    line *ls = split(reply, &n);
    if (n == 0 || !is(&ls[0], "anr-debug")) die(2, "not an anr debug socket reply");
    if (!is(&ls[n - 1], "end") && !(n >= 2 && ls[n - 1].n == 0 && is(&ls[n - 2], "end")))
        fprintf(stderr, "anrctl: warning: the reply was cut short\n");

    /* Modules and the addresses to symbolize. */
    for (size_t k = 0; k < n; k++) {
        const line *l = &ls[k];
        if (is(l, "module") && l->n >= 5) {
            mods = xrealloc(mods, (nmods + 1) * sizeof(*mods));
            module *m = &mods[nmods++];
            m->bias = (uintptr_t)num(l->w[1]);
            m->lo = (uintptr_t)num(l->w[2]);
            m->hi = (uintptr_t)num(l->w[3]);
            m->path = l->w[4];
            const char *b = strrchr(m->path, '/');
            m->base = b ? b + 1 : m->path;
        } else if ((is(l, "group") || is(l, "change")) && l->n > G_FRAMES) {
            want_frames(l, G_FRAMES);
        } else if (is(l, "leak") && l->n >= 8) {
            want_frames(l, 7);
        } else if (is(l, "fdr") && l->n >= 10) {
            sym_want((uintptr_t)num(l->w[9]));
        }
    }
    resolve();

    int rc = 0;
    if (strcmp(cmd, "snapshot") == 0)
        report_snapshot(ls, n, top);
    else if (strcmp(cmd, "diff") == 0)
        report_diff(ls, n, top);
    else if (strcmp(cmd, "fdr") == 0)
        report_fdr(ls, n);
    else if (strcmp(cmd, "leaks") == 0)
        report_leaks(ls, n);
    else if (strcmp(cmd, "verify") == 0)
        rc = report_verify(ls, n);
    else if (strcmp(cmd, "stats") == 0)
        report_stats(ls, n);
    else
        for (size_t k = 1; k < n; k++)
            if (ls[k].n && !is(&ls[k], "end")) {
                for (int j = is(&ls[k], "help") ? 1 : 0; j < ls[k].n; j++)
                    printf("%s%s", ls[k].w[j], j + 1 < ls[k].n ? " " : "\n");
            }
    return rc;
}

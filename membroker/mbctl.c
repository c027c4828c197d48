/* mbctl: look at and use membroker from the command line.
 *
 *   mbctl [--socket PATH] status [--json]
 *   mbctl [--socket PATH] query [--json]
 *   mbctl [--socket PATH] hold [--reserve] [--timeout MS] [--give-back] [--class NAME] AMOUNT
 *   mbctl [--socket PATH] watch [--json]
 *   mbctl [--socket PATH] report
 *
 * AMOUNT is a size (4096, 64M, 1G) rounded up to whole pages, or a count of
 * pages with a `p` suffix (100p). `hold` keeps what it got until SIGTERM or
 * SIGINT; with --give-back it registers as bidirectional and gives back
 * whatever it is asked for (up to what it holds).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "config.h"
#include "membroker.h"

static const char *sock_path; /* NULL: $MEMBROKER_SOCKET or the default */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mbctl [--socket PATH] status [--json]\n"
            "       mbctl [--socket PATH] query [--json]\n"
            "       mbctl [--socket PATH] hold [--reserve] [--timeout MS] [--give-back] [--class NAME] "
            "AMOUNT\n"
            "       mbctl [--socket PATH] watch [--json]\n"
            "       mbctl [--socket PATH] report\n"
            "AMOUNT: bytes with an optional K/M/G suffix (rounded up to pages), or pages as Np\n");
}

static int fail(const char *what, int err)
{
    fprintf(stderr, "mbctl: %s: %s\n", what, strerror(-err));
    return 1;
}

/* ---- status ---- */

typedef struct status_ctx {
    mb_client_info *v;
    size_t n, cap;
} status_ctx;

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void collect(void *ctx, const mb_client_info *ci)
{
    status_ctx *s = ctx;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        mb_client_info *v = realloc(s->v, cap * sizeof *v);
        if (!v) return; /* the list is cut short; the pool line stays right */
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = *ci;
}

static const char *kind_name(mb_kind k)
{
    return k == MB_BIDIRECTIONAL ? "bidirectional" : "simple";
}

static const char *level_name(mb_level l)
{
    return l == MB_LEVEL_CRITICAL ? "critical" : l == MB_LEVEL_LOW ? "low" : "normal";
}

static const char *reasons_str(uint32_t r, char *buf, size_t cap)
{
    static const char *const names[6] = {"quota",    "memavailable", "psi-some",
                                         "psi-full", "cgroup-high",  "cgroup-max"};
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < 6; i++)
        if (r & (1u << i)) {
            int n = snprintf(buf + len, cap - len, "%s%s", len ? "," : "", names[i]);
            if (n < 0 || (size_t)n >= cap - len) break;
            len += (size_t)n;
        }
    return buf;
}

typedef struct classes_ctx {
    mb_class_info v[16];
    size_t n;
} classes_ctx;

static void collect_class(void *ctx, const mb_class_info *ci)
{
    classes_ctx *c = ctx;
    if (c->n < sizeof c->v / sizeof c->v[0]) c->v[c->n++] = *ci;
}

static const char *class_name(const classes_ctx *cl, uint32_t id)
{
    for (size_t i = 0; i < cl->n; i++)
        if (cl->v[i].index == id) return cl->v[i].name;
    return "?";
}

static int cmd_status(int argc, char **argv)
{
    bool json = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            usage(stderr);
            return 2;
        }
    }
    status_ctx s = {0};
    mb_pool_info pool;
    int rc = mb_status(sock_path, &pool, collect, &s);
    if (rc < 0) return fail("status", rc);
    mb_policy_info pi;
    classes_ctx cl = {.n = 0};
    bool have_policy = mb_policy_status(sock_path, &pi, collect_class, &cl) == 0;
    char rbuf[96];
    if (json) {
        printf("{\"pool_pages\": %" PRIu64 ", \"free_pages\": %" PRIu64 ", \"page_size\": %" PRIu64
               ", \"capacity\": %" PRIu32 ", ",
               pool.pool_pages, pool.free_pages, pool.page_size, pool.capacity);
        if (have_policy) {
            printf("\"level\": \"%s\", \"reasons\": \"%s\", \"signal_threshold_pages\": %" PRIu64
                   ", \"alloc_threshold_pages\": %" PRIu64 ", \"granted_pages\": %" PRIu64
                   ", \"mem_available_pages\": %" PRIu64
                   ", \"psi_system\": %s, \"psi_cgroup\": %s, \"cgroup_events\": %s, \"classes\": [",
                   level_name(pi.level), reasons_str(pi.reasons, rbuf, sizeof rbuf),
                   pi.signal_pages, pi.alloc_pages, pi.granted_pages, pi.available_pages,
                   pi.sources & 1 ? "true" : "false", pi.sources & 2 ? "true" : "false",
                   pi.sources & 4 ? "true" : "false");
            for (size_t i = 0; i < cl.n; i++) {
                printf("%s{\"index\": %" PRIu32 ", \"name\": ", i ? ", " : "", cl.v[i].index);
                json_string(cl.v[i].name);
                printf(", \"min_pages\": %" PRIu64 ", \"cap_pages\": %" PRIu64
                       ", \"granted_pages\": %" PRIu64 ", \"clients\": %" PRIu32 "}",
                       cl.v[i].min_pages, cl.v[i].cap_pages, cl.v[i].granted_pages,
                       cl.v[i].clients);
            }
            printf("], ");
        }
        printf("\"clients\": [");
        for (size_t i = 0; i < s.n; i++) {
            const mb_client_info *ci = &s.v[i];
            printf("%s\n    {\"pid\": %" PRIu32 ", \"uid\": %" PRIu32 ", \"command\": ",
                   i ? "," : "", ci->pid, ci->uid);
            json_string(ci->comm);
            printf(", \"kind\": \"%s\", \"held_pages\": %" PRIu64 ", \"waiting_pages\": %" PRIu64
                   ", \"outstanding_requests\": %" PRIu32
                   ", \"giveback_pending\": %s, \"slot\": %" PRIu32 ", \"class\": ",
                   kind_name(ci->kind), ci->held_pages, ci->waiting_pages, ci->outstanding,
                   ci->giveback_pending ? "true" : "false", ci->slot);
            json_string(have_policy ? class_name(&cl, ci->class_id) : "default");
            printf("}");
        }
        printf("%s]}\n", s.n ? "\n  " : "");
    } else {
        printf("pool %" PRIu64 " pages (%" PRIu64 " KiB), free %" PRIu64
               " pages, page size %" PRIu64 ", clients %" PRIu32 " of %" PRIu32 "\n",
               pool.pool_pages, pool.pool_pages * pool.page_size / 1024, pool.free_pages,
               pool.page_size, pool.clients, pool.capacity);
        if (have_policy) {
            char st[64] = "off", mat[64] = "off";
            if (pi.signal_pages) snprintf(st, sizeof st, "%" PRIu64 " pages", pi.signal_pages);
            if (pi.alloc_pages) snprintf(mat, sizeof mat, "%" PRIu64 " pages", pi.alloc_pages);
            printf("memory %s%s%s%s, signal threshold %s, allocation threshold %s, granted %" PRIu64
                   " pages, MemAvailable %" PRIu64 " KiB\n",
                   level_name(pi.level), pi.reasons ? " (" : "",
                   reasons_str(pi.reasons, rbuf, sizeof rbuf), pi.reasons ? ")" : "", st, mat,
                   pi.granted_pages, pi.available_pages * pi.page_size / 1024);
            printf("pressure sources: PSI system %s, PSI cgroup %s, cgroup memory.events %s\n",
                   pi.sources & 1 ? "armed" : "off", pi.sources & 2 ? "armed" : "off",
                   pi.sources & 4 ? "watched" : "off");
            printf("%-16s %12s %12s %12s %7s\n", "CLASS", "MIN", "CAP", "GRANTED", "CLIENTS");
            for (size_t i = 0; i < cl.n; i++)
                printf("%-16s %12" PRIu64 " %12" PRIu64 " %12" PRIu64 " %7" PRIu32 "\n",
                       cl.v[i].name, cl.v[i].min_pages, cl.v[i].cap_pages,
                       cl.v[i].granted_pages, cl.v[i].clients);
        }
        if (s.n)
            printf("%8s  %-16s %-13s %-15s %12s %12s %5s %s\n", "PID", "COMMAND", "KIND",
                   "CLASS", "HELD", "WAITING", "REQS", "GIVEBACK");
        for (size_t i = 0; i < s.n; i++) {
            const mb_client_info *ci = &s.v[i];
            printf("%8" PRIu32 "  %-16s %-13s %-15s %12" PRIu64 " %12" PRIu64 " %5" PRIu32
                   " %s\n",
                   ci->pid, ci->comm, kind_name(ci->kind),
                   have_policy ? class_name(&cl, ci->class_id) : "default", ci->held_pages,
                   ci->waiting_pages, ci->outstanding, ci->giveback_pending ? "asked" : "-");
        }
    }
    free(s.v);
    return 0;
}

/* ---- watch, report ---- */

static void print_event(const mb_event *ev, bool json, bool first)
{
    char r[96];
    reasons_str(ev->reasons, r, sizeof r);
    const char *what = first                        ? "state"
                       : ev->level > ev->previous   ? "pressure"
                       : ev->level == MB_LEVEL_NORMAL ? "all-clear"
                                                      : "easing";
    if (json)
        printf("{\"event\": \"%s\", \"level\": \"%s\", \"previous\": \"%s\", \"reasons\": \"%s\", "
               "\"granted_pages\": %" PRIu64 ", \"pool_pages\": %" PRIu64
               ", \"mem_available_pages\": %" PRIu64 ", \"page_size\": %" PRIu64 "}\n",
               what, level_name(ev->level), level_name(ev->previous), r, ev->granted_pages,
               ev->pool_pages, ev->available_pages, ev->page_size);
    else
        printf("%s: %s -> %s (%s) granted %" PRIu64 " of %" PRIu64 " pages, MemAvailable %" PRIu64
               " KiB\n",
               what, level_name(ev->previous), level_name(ev->level), *r ? r : "-",
               ev->granted_pages, ev->pool_pages, ev->available_pages * ev->page_size / 1024);
    fflush(stdout);
}

static int cmd_watch(int argc, char **argv)
{
    bool json = argc == 1 && strcmp(argv[0], "--json") == 0;
    if (argc > 1 || (argc == 1 && !json)) {
        usage(stderr);
        return 2;
    }
    mb_event ev;
    int fd = mb_watch_open(sock_path, &ev);
    if (fd < 0) return fail("watch", fd);
    print_event(&ev, json, true);
    for (;;) {
        int rc = mb_watch_read(fd, &ev, -1);
        if (rc < 0) {
            close(fd);
            return fail("watch", rc);
        }
        if (rc > 0) print_event(&ev, json, false);
    }
}

static int cmd_report(int argc, char **argv)
{
    (void)argv;
    if (argc) {
        usage(stderr);
        return 2;
    }
    int rc = mb_report(sock_path);
    if (rc == -ENOENT) {
        fprintf(stderr, "mbctl: report: the daemon has no REPORT_DIR\n");
        return 1;
    }
    if (rc < 0) return fail("report", rc);
    printf("report %d written to the daemon's REPORT_DIR\n", rc);
    return 0;
}

/* ---- query ---- */

static int cmd_query(int argc, char **argv)
{
    bool json = argc == 1 && strcmp(argv[0], "--json") == 0;
    if (argc > 1 || (argc == 1 && !json)) {
        usage(stderr);
        return 2;
    }
    mb_client c;
    int rc = mb_client_connect(&c, sock_path, MB_SIMPLE, NULL, NULL);
    if (rc < 0) return fail("connect", rc);
    mb_balance b;
    rc = mb_query(&c, &b);
    mb_client_close(&c);
    if (rc < 0) return fail("query", rc);
    if (json)
        printf("{\"held_pages\": %" PRIu64 ", \"pool_pages\": %" PRIu64 ", \"free_pages\": %" PRIu64
               ", \"page_size\": %" PRIu64 "}\n",
               b.held_pages, b.pool_pages, b.free_pages, b.page_size);
    else
        printf("pool %" PRIu64 " pages, free %" PRIu64 " pages, page size %" PRIu64 "\n",
               b.pool_pages, b.free_pages, b.page_size);
    return 0;
}

/* ---- hold ---- */

static uint64_t held;

static uint64_t give_back(void *ctx, uint64_t pages, mb_urgency urgency)
{
    (void)ctx;
    uint64_t n = pages < held ? pages : held;
    held -= n;
    printf("gave back %" PRIu64 " pages (%s), holding %" PRIu64 "\n", n,
           urgency == MB_URGENT ? "urgent" : "normal", held);
    fflush(stdout);
    return n;
}

static bool parse_amount(const char *s, uint64_t *value, bool *in_pages)
{
    size_t n = strlen(s);
    if (n > 1 && (s[n - 1] == 'p' || s[n - 1] == 'P')) {
        char buf[32];
        if (n >= sizeof buf) return false;
        memcpy(buf, s, n - 1);
        buf[n - 1] = '\0';
        *in_pages = true;
        return _mb_parse_size(buf, value) && strpbrk(buf, "kKmMgGtTbB") == NULL;
    }
    *in_pages = false;
    return _mb_parse_size(s, value);
}

static int cmd_hold(int argc, char **argv)
{
    bool reserve = false, bidir = false;
    long timeout = 0;
    const char *amount = NULL, *cls = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--class") == 0 && i + 1 < argc) {
            cls = argv[++i];
        } else if (strcmp(argv[i], "--reserve") == 0) {
            reserve = true;
        } else if (strcmp(argv[i], "--give-back") == 0) {
            bidir = true;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            timeout = strtol(argv[++i], &end, 10);
            if (*end || timeout < 0 || timeout > 86400000) {
                fprintf(stderr, "mbctl: bad --timeout %s\n", argv[i]);
                return 2;
            }
        } else if (!amount && argv[i][0] != '-') {
            amount = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    uint64_t value;
    bool in_pages;
    if (!amount || !parse_amount(amount, &value, &in_pages)) {
        fprintf(stderr, "mbctl: bad AMOUNT %s\n", amount ? amount : "(none)");
        return 2;
    }
    /* block the stop signals first: they are read from a signalfd */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);

    mb_client c;
    int rc = mb_client_connect_class(&c, sock_path, bidir ? MB_BIDIRECTIONAL : MB_SIMPLE,
                                     bidir ? give_back : NULL, NULL, cls);
    if (rc < 0) return fail("connect", rc);
    mb_balance b;
    rc = mb_query(&c, &b);
    if (rc < 0) return fail("query", rc);
    uint64_t pages = in_pages ? value : (value + b.page_size - 1) / b.page_size;
    if (reserve) {
        rc = mb_reserve(&c, pages, (int)timeout);
        if (rc < 0) {
            fprintf(stderr, "mbctl: reserve of %" PRIu64 " pages: %s\n", pages, strerror(-rc));
            mb_client_close(&c);
            return 1;
        }
        held = pages;
    } else {
        int64_t got = mb_request(&c, pages);
        if (got < 0) return fail("request", (int)got);
        held = (uint64_t)got;
    }
    printf("held %" PRIu64 " pages (%" PRIu64 " bytes) of %" PRIu64 " asked\n", held,
           held * b.page_size, pages);
    fflush(stdout);

    struct pollfd p[2] = {{.fd = sfd, .events = POLLIN},
                          {.fd = mb_client_fd(&c), .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[0].revents) break;
        if (p[1].revents) {
            rc = mb_client_dispatch(&c);
            if (rc < 0) {
                fprintf(stderr, "mbctl: daemon connection lost: %s\n", strerror(-rc));
                return 1;
            }
        }
    }
    mb_client_close(&c);
    printf("released %" PRIu64 " pages\n", held);
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            sock_path = argv[i + 1];
            i += 2;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[i++];
    if (strcmp(cmd, "status") == 0) return cmd_status(argc - i, argv + i);
    if (strcmp(cmd, "query") == 0) return cmd_query(argc - i, argv + i);
    if (strcmp(cmd, "hold") == 0) return cmd_hold(argc - i, argv + i);
    if (strcmp(cmd, "watch") == 0) return cmd_watch(argc - i, argv + i);
    if (strcmp(cmd, "report") == 0) return cmd_report(argc - i, argv + i);
    fprintf(stderr, "mbctl: unknown command %s\n", cmd);
    usage(stderr);
    return 2;
}

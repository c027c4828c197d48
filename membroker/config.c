/* membrokerd configuration parser (config.h). Daemon side: may use stdio. */
#include "config.h"

#include "membroker.h"
#include "protocol.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_FILE (64 * 1024) /* a config file is short */
#define MAX_LINE 512

void _mb_config_defaults(mb_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->pool.mode = MB_POOL_PERCENT;
    cfg->pool.value = 80;
    snprintf(cfg->socket, sizeof cfg->socket, "%s", MB_DEFAULT_SOCKET);
    cfg->mode = 0660;
    cfg->request_timeout_ms = 50;
    cfg->giveback_timeout_ms = 200;
    cfg->reserve_max_ms = 60000;
    cfg->max_clients = 256;
    cfg->log_level = 6;
    cfg->policy.hysteresis_pct = 5;
    cfg->policy.hold_ms = 2000;
    cfg->policy.giveback_pct = 25;
    cfg->policy.interval_ms = 5000;
    cfg->policy.kill_grace_ms = 0;
    snprintf(cfg->meminfo, sizeof cfg->meminfo, "/proc/meminfo");
    cfg->meminfo_interval_ms = 1000;
    cfg->n_classes = 1;
    snprintf(cfg->classes[0].name, sizeof cfg->classes[0].name, "default");
    cfg->kill_timeout_ms = 5000;
    cfg->kill_on_urgent = true;
    cfg->oom_score_adj = true;
}

static bool parse_u64(const char *s, const char **end, uint64_t *out)
{
    if (!isdigit((unsigned char)*s)) return false;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *end = s;
    *out = v;
    return true;
}

bool _mb_parse_size(const char *s, uint64_t *out)
{
    const char *p;
    uint64_t v;
    if (!parse_u64(s, &p, &v)) return false;
    unsigned shift = 0;
    switch (toupper((unsigned char)*p)) {
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    default:
        break;
    }
    if (shift) {
        p++;
        if (*p == 'i' || *p == 'I') {
            p++;
            if (toupper((unsigned char)*p) != 'B') return false;
        }
        if (toupper((unsigned char)*p) == 'B') p++;
    } else if (toupper((unsigned char)*p) == 'B') {
        p++;
    }
    if (*p) return false;
    if (shift && v > (UINT64_MAX >> shift)) return false;
    *out = v << shift;
    return true;
}

static bool parse_u32(const char *s, int base, uint32_t max, uint32_t *out)
{
    if (!*s) return false;
    char *end;
    errno = 0;
    if (*s == '-' || *s == '+') return false;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end || v > max) return false;
    *out = (uint32_t)v;
    return true;
}

bool _mb_parse_pool(const char *s, mb_pool_spec *out, const char **why)
{
    static const char except[] = "all-except";
    if (strncasecmp(s, except, sizeof except - 1) == 0) {
        const char *p = s + sizeof except - 1;
        if (*p != ' ' && *p != '\t') {
            *why = "expected \"all-except SIZE\"";
            return false;
        }
        while (*p == ' ' || *p == '\t')
            p++;
        uint64_t v;
        if (!_mb_parse_size(p, &v)) {
            *why = "bad size after all-except (e.g. all-except 256M)";
            return false;
        }
        out->mode = MB_POOL_ALL_EXCEPT;
        out->value = v;
        return true;
    }
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == '%') {
        const char *p;
        uint64_t v;
        if (!parse_u64(s, &p, &v) || p != s + n - 1 || v == 0 || v > 100) {
            *why = "percentage must be 1% to 100%";
            return false;
        }
        out->mode = MB_POOL_PERCENT;
        out->value = v;
        return true;
    }
    uint64_t v;
    if (!_mb_parse_size(s, &v) || v == 0) {
        *why = "expected a size (512M), a percentage of RAM (80%) or all-except SIZE";
        return false;
    }
    out->mode = MB_POOL_BYTES;
    out->value = v;
    return true;
}

uint64_t _mb_pool_pages(const mb_pool_spec *spec, uint64_t mem_total, uint64_t page_size,
                        const char **why)
{
    uint64_t bytes;
    switch (spec->mode) {
    case MB_POOL_BYTES:
        bytes = spec->value;
        break;
    case MB_POOL_PERCENT:
        if (mem_total == 0) {
            *why = "MemTotal unknown (/proc/meminfo unreadable)";
            return 0;
        }
        bytes = mem_total / 100 * spec->value + mem_total % 100 * spec->value / 100;
        break;
    case MB_POOL_ALL_EXCEPT:
        if (mem_total == 0) {
            *why = "MemTotal unknown (/proc/meminfo unreadable)";
            return 0;
        }
        if (spec->value >= mem_total) {
            *why = "all-except leaves nothing: it is at least MemTotal";
            return 0;
        }
        bytes = mem_total - spec->value;
        break;
    default:
        *why = "bad pool mode";
        return 0;
    }
    uint64_t pages = bytes / page_size;
    if (pages == 0) {
        *why = "pool is smaller than one page";
        return 0;
    }
    if (pages > MB_MAX_PAGES) pages = MB_MAX_PAGES;
    return pages;
}

uint64_t _mb_mem_total(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

static int level_of(const char *s)
{
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"error", 3}, {"warning", 4}, {"info", 6}, {"debug", 7}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (strcasecmp(s, levels[i].name) == 0) return levels[i].level;
    return -1;
}

static bool parse_bool(const char *s, bool *out)
{
    if (!strcasecmp(s, "yes") || !strcasecmp(s, "on") || !strcasecmp(s, "true") || !strcmp(s, "1"))
        *out = true;
    else if (!strcasecmp(s, "no") || !strcasecmp(s, "off") || !strcasecmp(s, "false") ||
             !strcmp(s, "0"))
        *out = false;
    else
        return false;
    return true;
}

/* Splits value into at most `max` blank-separated tokens (in buf). */
static unsigned tokens(const char *value, char *buf, size_t cap, char **tok, unsigned max)
{
    snprintf(buf, cap, "%s", value);
    unsigned n = 0;
    for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == max) return max + 1;
        tok[n++] = t;
    }
    return n;
}

static bool valid_name(const char *s, size_t cap)
{
    if (!*s || strlen(s) >= cap) return false;
    for (; *s; s++)
        if (!isgraph((unsigned char)*s) || *s == '#') return false;
    return true;
}

/* A class size: a size or a percentage of the pool. */
static bool class_size(const char *s, mb_th_spec *out)
{
    const char *why;
    if (strcmp(s, "0") == 0) {
        *out = (mb_th_spec){MB_TH_BYTES, 0};
        return true;
    }
    return _mb_parse_threshold(s, out, &why) && out->mode != MB_TH_MEM_PCT;
}

/* The policy keys (issue 7). Returns -1 if `key` is not one of them. */
static int policy_set(mb_config *cfg, const char *key, const char *value, const char **why)
{
    char buf[512];
    char *tok[4];
    if (!strcasecmp(key, "SIGNAL_THRESHOLD") || !strcasecmp(key, "ALLOC_THRESHOLD")) {
        mb_th_spec *dst = toupper((unsigned char)key[0]) == 'S' ? &cfg->policy.signal
                                                                 : &cfg->policy.alloc;
        return _mb_parse_threshold(value, dst, why);
    }
    if (!strcasecmp(key, "PSI_SOME") || !strcasecmp(key, "PSI_FULL")) {
        int i = toupper((unsigned char)key[4]) == 'F';
        if (!strcasecmp(value, "none") || !strcasecmp(value, "off")) {
            cfg->psi_stall_us[i] = cfg->psi_window_us[i] = 0;
            return true;
        }
        uint32_t st, win;
        if (tokens(value, buf, sizeof buf, tok, 2) != 2 || !parse_u32(tok[0], 10, 10000000, &st) ||
            !parse_u32(tok[1], 10, 10000000, &win) || st == 0 || win < 1000 || st > win) {
            *why = "expected none or STALL_US WINDOW_US (e.g. 150000 1000000), stall <= window "
                   "<= 10000000";
            return false;
        }
        cfg->psi_stall_us[i] = st;
        cfg->psi_window_us[i] = win;
        return true;
    }
    if (!strcasecmp(key, "PSI_CGROUP") || !strcasecmp(key, "MEMINFO") ||
        !strcasecmp(key, "REPORT_DIR")) {
        char *dst = toupper((unsigned char)key[0]) == 'P'   ? cfg->psi_cgroup
                    : toupper((unsigned char)key[0]) == 'M' ? cfg->meminfo
                                                            : cfg->report_dir;
        if (!strcasecmp(value, "none") && dst != cfg->meminfo) {
            dst[0] = '\0';
            return true;
        }
        if (value[0] != '/' || strlen(value) >= MB_PATH_MAX || strpbrk(value, " \t")) {
            *why = "expected an absolute path without blanks (107 bytes at most)";
            return false;
        }
        snprintf(dst, MB_PATH_MAX, "%s", value);
        return true;
    }
    if (!strcasecmp(key, "CLASS")) {
        unsigned n = tokens(value, buf, sizeof buf, tok, 3);
        mb_class_spec c = {{0}, {MB_TH_OFF, 0}, {MB_TH_OFF, 0}};
        if (n != 3 || !valid_name(tok[0], MB_CLASS_NAME) || !class_size(tok[1], &c.min) ||
            !class_size(tok[2], &c.cap)) {
            *why = "expected CLASS NAME MINIMUM CAP (name up to 15 characters; sizes as 64M, "
                   "25% of the pool, or none)";
            return false;
        }
        snprintf(c.name, sizeof c.name, "%s", tok[0]);
        uint32_t k = 0;
        while (k < cfg->n_classes && strcmp(cfg->classes[k].name, c.name))
            k++;
        if (k == MB_MAX_CLASSES) {
            *why = "too many classes (8 at most, with default)";
            return false;
        }
        cfg->classes[k] = c;
        if (k == cfg->n_classes) cfg->n_classes++;
        return true;
    }
    if (!strcasecmp(key, "CLASS_MEMBER")) {
        unsigned n = tokens(value, buf, sizeof buf, tok, 3);
        if (n != 3) {
            *why = "expected CLASS_MEMBER CLASS uid|exe|cgroup VALUE";
            return false;
        }
        uint32_t k = 0;
        while (k < cfg->n_classes && strcmp(cfg->classes[k].name, tok[0]))
            k++;
        if (k == cfg->n_classes) {
            *why = "no such class (a CLASS line must come first)";
            return false;
        }
        if (cfg->n_matches == MB_MAX_MATCHES) {
            *why = "too many CLASS_MEMBER lines (32 at most)";
            return false;
        }
        mb_class_match m = {.cls = (uint8_t)k};
        if (!strcasecmp(tok[1], "uid")) {
            m.kind = MB_MATCH_UID;
            if (!parse_u32(tok[2], 10, UINT32_MAX - 1, &m.uid)) {
                *why = "uid must be a number";
                return false;
            }
        } else if (!strcasecmp(tok[1], "exe") || !strcasecmp(tok[1], "cgroup")) {
            m.kind = !strcasecmp(tok[1], "exe") ? MB_MATCH_EXE : MB_MATCH_CGROUP;
            if (!valid_name(tok[2], sizeof m.name) ||
                (m.kind == MB_MATCH_CGROUP) != (tok[2][0] == '/')) {
                *why = "exe: a name (no '/'); cgroup: a path starting with '/' (63 bytes at most)";
                return false;
            }
            snprintf(m.name, sizeof m.name, "%s", tok[2]);
        } else {
            *why = "match by uid, exe or cgroup";
            return false;
        }
        cfg->matches[cfg->n_matches++] = m;
        return true;
    }
    if (!strcasecmp(key, "NEVER_KILL") || !strcasecmp(key, "KILLABLE")) {
        bool never = toupper((unsigned char)key[0]) == 'N';
        char(*list)[64] = never ? cfg->never_kill : cfg->killable;
        uint32_t *count = never ? &cfg->n_never : &cfg->n_killable;
        char *t[MB_MAX_KILL_ENTRIES];
        unsigned n = tokens(value, buf, sizeof buf, t, MB_MAX_KILL_ENTRIES);
        for (unsigned i = 0; i < n && i < MB_MAX_KILL_ENTRIES; i++)
            if (!valid_name(t[i], 64)) {
                *why = "an executable name or a cgroup path (starting with '/'), 63 bytes at most";
                return false;
            }
        if (n > MB_MAX_KILL_ENTRIES || *count + n > MB_MAX_KILL_ENTRIES) {
            *why = "too many entries (32 at most per list)";
            return false;
        }
        for (unsigned i = 0; i < n; i++)
            snprintf(list[(*count)++], 64, "%s", t[i]);
        return true;
    }
    bool *flag = !strcasecmp(key, "CLASS_BY_REQUEST") ? &cfg->class_by_request
                 : !strcasecmp(key, "KILL_ON_URGENT") ? &cfg->kill_on_urgent
                 : !strcasecmp(key, "OOM_SCORE_ADJ")  ? &cfg->oom_score_adj
                                                      : NULL;
    if (flag) {
        if (!parse_bool(value, flag)) {
            *why = "expected yes or no";
            return false;
        }
        return true;
    }
    if (!strcasecmp(key, "HYSTERESIS") || !strcasecmp(key, "PRESSURE_GIVEBACK")) {
        size_t n = strlen(value);
        uint32_t v;
        char num[16];
        if (n < 2 || n > 4 || value[n - 1] != '%') {
            *why = "a percentage, 0% to 100%";
            return false;
        }
        memcpy(num, value, n - 1);
        num[n - 1] = '\0';
        if (!parse_u32(num, 10, 100, &v)) {
            *why = "a percentage, 0% to 100%";
            return false;
        }
        *(toupper((unsigned char)key[0]) == 'H' ? &cfg->policy.hysteresis_pct
                                                 : &cfg->policy.giveback_pct) = v;
        return true;
    }
    return -1;
}

bool _mb_config_set(mb_config *cfg, const char *key, const char *value, const char **why)
{
    if (!*value) {
        *why = "missing value";
        return false;
    }
    int p = policy_set(cfg, key, value, why);
    if (p >= 0) return p == 1;
    if (strcasecmp(key, "POOL") == 0) return _mb_parse_pool(value, &cfg->pool, why);
    if (strcasecmp(key, "SOCKET") == 0) {
        if (value[0] != '/' && value[0] != '.') {
            *why = "socket path must be absolute or start with ./";
            return false;
        }
        if (strlen(value) >= sizeof cfg->socket) {
            *why = "socket path too long (107 bytes at most)";
            return false;
        }
        snprintf(cfg->socket, sizeof cfg->socket, "%s", value);
        return true;
    }
    if (strcasecmp(key, "SOCKET_OWNER") == 0 || strcasecmp(key, "SOCKET_GROUP") == 0) {
        char *dst = toupper((unsigned char)key[7]) == 'O' ? cfg->owner : cfg->group;
        if (strlen(value) >= MB_NAME_MAX || strpbrk(value, " \t:")) {
            *why = "not a user/group name or number";
            return false;
        }
        snprintf(dst, MB_NAME_MAX, "%s", value);
        return true;
    }
    if (strcasecmp(key, "SOCKET_MODE") == 0) {
        uint32_t m;
        if (!parse_u32(value, 8, 0777, &m)) {
            *why = "mode must be octal, 0 to 0777 (e.g. 0660)";
            return false;
        }
        cfg->mode = m;
        return true;
    }
    struct {
        const char *key;
        uint32_t *dst;
        uint32_t min, max;
        const char *why;
    } nums[] = {
        {"REQUEST_TIMEOUT", &cfg->request_timeout_ms, 0, 60000, "milliseconds, 0 to 60000"},
        {"GIVEBACK_TIMEOUT", &cfg->giveback_timeout_ms, 1, 600000, "milliseconds, 1 to 600000"},
        {"RESERVE_MAX_TIMEOUT", &cfg->reserve_max_ms, 0, 86400000, "milliseconds, 0 to 86400000"},
        {"MAX_CLIENTS", &cfg->max_clients, 1, 65536, "a count, 1 to 65536"},
        {"PRESSURE_HOLD", &cfg->policy.hold_ms, 0, 600000, "milliseconds, 0 to 600000"},
        {"PRESSURE_INTERVAL", &cfg->policy.interval_ms, 0, 600000, "milliseconds, 0 to 600000"},
        {"KILL_GRACE", &cfg->policy.kill_grace_ms, 0, 86400000, "milliseconds, 0 to 86400000"},
        {"KILL_TIMEOUT", &cfg->kill_timeout_ms, 1, 600000, "milliseconds, 1 to 600000"},
        {"MEMINFO_INTERVAL", &cfg->meminfo_interval_ms, 10, 600000,
         "milliseconds, 10 to 600000"},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strcasecmp(key, nums[i].key) != 0) continue;
        uint32_t v;
        if (!parse_u32(value, 10, nums[i].max, &v) || v < nums[i].min) {
            *why = nums[i].why;
            return false;
        }
        *nums[i].dst = v;
        return true;
    }
    if (strcasecmp(key, "LOG_LEVEL") == 0) {
        int l = level_of(value);
        if (l < 0) {
            *why = "expected error, warning, info or debug";
            return false;
        }
        cfg->log_level = l;
        return true;
    }
    *why = "unknown key";
    return false;
}

static void report_line(mb_config_report_fn report, void *ctx, const char *file, unsigned line,
                        const char *key, const char *value, const char *why)
{
    char msg[MAX_LINE + 128];
    if (value)
        snprintf(msg, sizeof msg, "%s \"%s\": %s", key, value, why);
    else
        snprintf(msg, sizeof msg, "%s: %s", key, why);
    if (report) report(ctx, file, line, msg);
}

unsigned _mb_config_parse(mb_config *cfg, const char *text, size_t len, const char *file,
                          mb_config_report_fn report, void *ctx)
{
    unsigned bad = 0, lineno = 0;
    size_t pos = 0;
    while (pos < len) {
        size_t start = pos;
        while (pos < len && text[pos] != '\n')
            pos++;
        size_t n = pos - start;
        pos++; /* past '\n' */
        lineno++;
        char line[MAX_LINE];
        if (n >= sizeof line) {
            report_line(report, ctx, file, lineno, "line", NULL, "too long (511 bytes at most)");
            bad++;
            continue;
        }
        memcpy(line, text + start, n);
        line[n] = '\0';
        if (memchr(line, '\0', n)) {
            report_line(report, ctx, file, lineno, "line", NULL, "contains a NUL byte");
            bad++;
            continue;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        /* trim */
        char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        char *e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = '\0';
        if (!*s) continue;
        char *key = s;
        while (*s && !isspace((unsigned char)*s))
            s++;
        if (*s) *s++ = '\0';
        while (isspace((unsigned char)*s))
            s++;
        const char *why;
        if (!_mb_config_set(cfg, key, s, &why)) {
            report_line(report, ctx, file, lineno, key, *s ? s : NULL, why);
            bad++;
        }
    }
    return bad;
}

unsigned _mb_config_load(mb_config *cfg, const char *path, mb_config_report_fn report, void *ctx)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "cannot open: %s", strerror(errno));
        if (report) report(ctx, path, 0, msg);
        return 1;
    }
    static char text[MAX_FILE + 1];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, text + len, MAX_FILE + 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
        if (len > MAX_FILE) break;
    }
    close(fd);
    if (len > MAX_FILE) {
        if (report) report(ctx, path, 0, "file too large (64 KiB at most)");
        return 1;
    }
    return _mb_config_parse(cfg, text, len, path, report, ctx);
}

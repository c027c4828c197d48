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

bool _mb_config_set(mb_config *cfg, const char *key, const char *value, const char **why)
{
    if (!*value) {
        *why = "missing value";
        return false;
    }
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

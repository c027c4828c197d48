/* membroker's low-memory policy: pure decisions (policy.h). No I/O, no
 * clock, no allocation: the daemon reads the files and passes the text and
 * the time. */
#include "policy.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"

/* Kernel event reasons held for PRESSURE_HOLD, in policy.until[]. */
static const uint32_t held_reasons[4] = {MB_R_PSI_SOME, MB_R_PSI_FULL, MB_R_CG_HIGH, MB_R_CG_MAX};

/* ---- thresholds ---- */

bool _mb_parse_threshold(const char *s, mb_th_spec *out, const char **why)
{
    if (strcasecmp(s, "none") == 0 || strcasecmp(s, "off") == 0) {
        *out = (mb_th_spec){MB_TH_OFF, 0};
        return true;
    }
    const char *pct = strchr(s, '%');
    if (pct) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (!isdigit((unsigned char)*s) || end != pct || v == 0 || v > 100) {
            *why = "percentage must be 1% to 100%";
            return false;
        }
        const char *rest = pct + 1;
        while (*rest == ' ' || *rest == '\t')
            rest++;
        if (!*rest || strcasecmp(rest, "pool") == 0) {
            *out = (mb_th_spec){MB_TH_POOL_PCT, v};
        } else if (strcasecmp(rest, "memtotal") == 0) {
            *out = (mb_th_spec){MB_TH_MEM_PCT, v};
        } else {
            *why = "after the percentage: nothing, \"pool\" or \"memtotal\"";
            return false;
        }
        return true;
    }
    uint64_t b;
    if (!_mb_parse_size(s, &b) || b == 0) {
        *why = "expected none, a size (768M), N% (of the pool) or N% memtotal";
        return false;
    }
    *out = (mb_th_spec){MB_TH_BYTES, b};
    return true;
}

static uint64_t pct_of(uint64_t x, uint64_t pct)
{
    return x / 100 * pct + x % 100 * pct / 100;
}

mb_th _mb_th_resolve(const mb_th_spec *spec, uint64_t pool_pages, uint64_t page_size,
                     uint64_t mem_total)
{
    mb_th t = {0, 0};
    if (page_size == 0) return t;
    switch (spec->mode) {
    case MB_TH_BYTES:
        t.quota_pages = spec->value / page_size;
        t.sys_bytes = spec->value;
        break;
    case MB_TH_POOL_PCT:
        t.quota_pages = pct_of(pool_pages, spec->value);
        t.sys_bytes = pct_of(mem_total, spec->value);
        break;
    case MB_TH_MEM_PCT:
        t.sys_bytes = pct_of(mem_total, spec->value);
        t.quota_pages = t.sys_bytes / page_size;
        break;
    default:
        return t;
    }
    if (t.quota_pages == 0) t.quota_pages = 1; /* on, so at least one page */
    return t;
}

/* ---- the state machine ---- */

void _mb_policy_init(mb_policy *p)
{
    memset(p, 0, sizeof *p);
}

void _mb_policy_configure(mb_policy *p, const mb_policy_cfg *cfg, uint64_t pool_pages,
                          uint64_t page_size, uint64_t mem_total)
{
    p->cfg = *cfg;
    p->pool_pages = pool_pages;
    p->page_size = page_size;
    p->mem_total = mem_total;
    p->st = _mb_th_resolve(&cfg->signal, pool_pages, page_size, mem_total);
    p->mat = _mb_th_resolve(&cfg->alloc, pool_pages, page_size, mem_total);
}

bool _mb_policy_enabled(const mb_policy *p)
{
    return p->cfg.signal.mode != MB_TH_OFF || p->cfg.alloc.mode != MB_TH_OFF;
}

void _mb_policy_event(mb_policy *p, uint32_t reason, uint64_t now)
{
    for (int i = 0; i < 4; i++)
        if (reason & held_reasons[i]) p->until[i] = now + p->cfg.hold_ms + (p->cfg.hold_ms == 0);
}

/* The level each input asks for, with the thresholds lowered by the
 * hysteresis or not; *reasons gets the bits of the inputs at `want` or above
 * (want 0: of the highest). */
static int level_of(const mb_policy *p, uint64_t now, bool lowered, int want, uint32_t *reasons)
{
    uint64_t hq = lowered ? pct_of(p->pool_pages, p->cfg.hysteresis_pct) : 0;
    uint64_t hs = lowered ? pct_of(p->mem_total, p->cfg.hysteresis_pct) : 0;
    bool sys_known = p->mem_total > 0 && p->mem_available > 0;
    uint64_t used_s =
        sys_known && p->mem_available < p->mem_total ? p->mem_total - p->mem_available : 0;
    int lv[6] = {0};
    const mb_th *th[2] = {&p->mat, &p->st};
    for (int k = 0; k < 2; k++) {
        int l = k == 0 ? MB_LVL_CRITICAL : MB_LVL_LOW;
        if (th[k]->quota_pages && lv[0] == 0 && p->held + hq >= th[k]->quota_pages) lv[0] = l;
        if (th[k]->sys_bytes && sys_known && lv[1] == 0 && used_s + hs >= th[k]->sys_bytes)
            lv[1] = l;
    }
    static const int ev_level[4] = {MB_LVL_LOW, MB_LVL_CRITICAL, MB_LVL_LOW, MB_LVL_CRITICAL};
    for (int i = 0; i < 4; i++)
        if (p->until[i] > now) lv[2 + i] = ev_level[i];
    static const uint32_t bit[6] = {MB_R_QUOTA,    MB_R_MEMAVAIL, MB_R_PSI_SOME,
                                    MB_R_PSI_FULL, MB_R_CG_HIGH,  MB_R_CG_MAX};
    int max = 0;
    for (int i = 0; i < 6; i++)
        if (lv[i] > max) max = lv[i];
    if (want == 0) want = max;
    uint32_t r = 0;
    for (int i = 0; i < 6 && want > 0; i++)
        if (lv[i] >= want) r |= bit[i];
    *reasons = r;
    return max;
}

bool _mb_policy_eval(mb_policy *p, uint64_t now, int *prev)
{
    *prev = p->level;
    uint32_t r_strict, r_low;
    int strict = level_of(p, now, false, 0, &r_strict);
    int lowered = level_of(p, now, true, 0, &r_low);
    /* up at once; down only below the threshold minus the hysteresis */
    int keep = lowered < p->level ? lowered : p->level;
    int lvl = strict > keep ? strict : keep;
    uint32_t reasons = 0;
    if (lvl > 0) level_of(p, now, lvl > strict, lvl, &reasons);
    p->reasons = reasons;
    if (lvl == p->level) return false;
    if (lvl == MB_LVL_CRITICAL) p->critical_since = now;
    if (lvl > p->level) p->next_round = now; /* a give-back round is due now */
    p->level = lvl;
    return true;
}

uint64_t _mb_policy_request_room(const mb_policy *p)
{
    if (p->mat.quota_pages == 0) return UINT64_MAX;
    return p->held < p->mat.quota_pages ? p->mat.quota_pages - p->held : 0;
}

uint64_t _mb_policy_next(const mb_policy *p, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (int i = 0; i < 4; i++)
        if (p->until[i] > now && p->until[i] < next) next = p->until[i];
    if (p->level > 0 && p->cfg.interval_ms && p->next_round < next)
        next = p->next_round > now ? p->next_round : now;
    if (p->level == MB_LVL_CRITICAL && p->cfg.kill_grace_ms) {
        uint64_t k = p->critical_since + p->cfg.kill_grace_ms;
        if (k < next) next = k > now ? k : now;
    }
    return next;
}

bool _mb_policy_kill_due(const mb_policy *p, uint64_t now)
{
    return p->level == MB_LVL_CRITICAL && p->cfg.kill_grace_ms &&
           now >= p->critical_since + p->cfg.kill_grace_ms;
}

void _mb_policy_grace_restart(mb_policy *p, uint64_t now)
{
    p->critical_since = now;
}

const char *_mb_level_name(int level)
{
    return level == MB_LVL_CRITICAL ? "critical" : level == MB_LVL_LOW ? "low" : "normal";
}

const char *_mb_reasons_str(uint32_t reasons, char *buf, size_t cap)
{
    static const char *const names[6] = {"quota",    "memavailable", "psi-some",
                                         "psi-full", "cgroup-high",  "cgroup-max"};
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < 6; i++)
        if (reasons & (1u << i)) {
            int n = snprintf(buf + len, cap - len, "%s%s", len ? "," : "", names[i]);
            if (n < 0 || (size_t)n >= cap - len) break;
            len += (size_t)n;
        }
    if (!len) snprintf(buf, cap, "-");
    return buf;
}

/* ---- the kernel's figures ---- */

static bool line_value(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, key, klen) != 0) continue;
        const char *v = l + klen;
        while (*v == ' ' || *v == '\t')
            v++;
        if (!isdigit((unsigned char)*v)) return false;
        *out = strtoull(v, NULL, 10);
        return true;
    }
    return false;
}

bool _mb_parse_meminfo(const char *text, mb_meminfo *out)
{
    uint64_t t = 0, a = 0;
    memset(out, 0, sizeof *out);
    if (!line_value(text, "MemTotal:", &t)) return false;
    out->mem_total = t * 1024;
    if (line_value(text, "MemAvailable:", &a)) out->mem_available = a * 1024;
    return true;
}

static bool psi_line(const char *text, const char *kind, mb_psi_line *out)
{
    size_t klen = strlen(kind);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, kind, klen) != 0 || l[klen] != ' ') continue;
        unsigned long long total;
        if (sscanf(l + klen, " avg10=%lf avg60=%lf avg300=%lf total=%llu", &out->avg10,
                   &out->avg60, &out->avg300, &total) != 4)
            return false;
        out->total_us = total;
        return true;
    }
    return false;
}

bool _mb_parse_psi(const char *text, mb_psi_line *some, mb_psi_line *full)
{
    memset(some, 0, sizeof *some);
    memset(full, 0, sizeof *full);
    if (!psi_line(text, "some", some)) return false;
    psi_line(text, "full", full);
    return true;
}

int _mb_psi_trigger(char *buf, size_t cap, bool full, uint32_t stall_us, uint32_t window_us)
{
    return snprintf(buf, cap, "%s %u %u", full ? "full" : "some", stall_us, window_us);
}

uint32_t _mb_psi_unprivileged_window(uint32_t window_us)
{
    uint64_t w = ((uint64_t)window_us + 1999999u) / 2000000u * 2000000u;
    if (w < 2000000u) w = 2000000u;
    if (w > 10000000u) w = 10000000u;
    return (uint32_t)w;
}

bool _mb_parse_memevents(const char *text, mb_memevents *out)
{
    memset(out, 0, sizeof *out);
    bool any = line_value(text, "low ", &out->low);
    any |= line_value(text, "high ", &out->high);
    any |= line_value(text, "max ", &out->max);
    any |= line_value(text, "oom ", &out->oom);
    any |= line_value(text, "oom_kill ", &out->oom_kill);
    return any;
}

uint32_t _mb_memevents_diff(const mb_memevents *old, const mb_memevents *now)
{
    uint32_t r = 0;
    if (now->high > old->high) r |= MB_R_CG_HIGH;
    if (now->max > old->max || now->oom > old->oom || now->oom_kill > old->oom_kill)
        r |= MB_R_CG_MAX;
    return r;
}

/* ---- classes ---- */

uint64_t _mb_class_room(const mb_class *cls, uint32_t n, uint32_t k, uint64_t free_pages)
{
    uint64_t reserved = 0;
    for (uint32_t j = 0; j < n; j++)
        if (j != k && cls[j].min > cls[j].held) reserved += cls[j].min - cls[j].held;
    uint64_t room = free_pages > reserved ? free_pages - reserved : 0;
    uint64_t cap_room = cls[k].cap > cls[k].held ? cls[k].cap - cls[k].held : 0;
    return room < cap_room ? room : cap_room;
}

uint64_t _mb_class_reclaimable(const mb_class *cls, uint32_t j, uint32_t k)
{
    if (j == k) return cls[j].held;
    return cls[j].held > cls[j].min ? cls[j].held - cls[j].min : 0;
}

static bool cgroup_under(const char *cg, const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    if (n == 1 && path[0] == '/') return cg[0] == '/';
    return strncmp(cg, path, n) == 0 && (cg[n] == '\0' || cg[n] == '/');
}

uint32_t _mb_class_match(const mb_class_match *m, uint32_t n, uint32_t uid, const char *comm,
                         const char *exe, const char *cgroup)
{
    for (uint32_t i = 0; i < n; i++) {
        switch (m[i].kind) {
        case MB_MATCH_UID:
            if (m[i].uid == uid) return m[i].cls;
            break;
        case MB_MATCH_EXE:
            if ((comm && strcmp(comm, m[i].name) == 0) || (exe && strcmp(exe, m[i].name) == 0))
                return m[i].cls;
            break;
        case MB_MATCH_CGROUP:
            if (cgroup && *cgroup && cgroup_under(cgroup, m[i].name)) return m[i].cls;
            break;
        }
    }
    return 0;
}

/* ---- never-kill and killable lists ---- */

bool _mb_kill_entry_matches(const char *entry, const mb_proc *p)
{
    if (entry[0] == '/') return p->cgroup[0] && cgroup_under(p->cgroup, entry);
    return strcmp(p->comm, entry) == 0 || (p->exe[0] && strcmp(p->exe, entry) == 0);
}

int _mb_choose_victim(const mb_proc *procs, size_t n, const char (*killable)[64], size_t nk,
                      const char (*never)[64], size_t nn, uint32_t self)
{
    for (size_t e = 0; e < nk; e++) {
        int best = -1;
        for (size_t i = 0; i < n; i++) {
            const mb_proc *p = &procs[i];
            if (p->pid == self || p->pid <= 1 || !_mb_kill_entry_matches(killable[e], p)) continue;
            bool spared = false;
            for (size_t w = 0; w < nn && !spared; w++)
                spared = _mb_kill_entry_matches(never[w], p);
            if (spared) continue;
            if (best < 0 || p->private_bytes > procs[best].private_bytes) best = (int)i;
        }
        if (best >= 0) return best;
    }
    return -1;
}

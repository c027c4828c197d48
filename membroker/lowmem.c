/* membrokerd's low-memory I/O (lowmem.h). Runs in the daemon's one thread,
 * from its epoll loop. Nothing here is per message: the /proc scans happen
 * when a victim is chosen, a report is written, or oom_score_adj is kept
 * (at most every OOM_ADJ_EVERY_MS). */
#include "lowmem.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same number on every architecture */
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

#define MAX_PROCS 4096
#define OOM_ADJ_EVERY_MS 5000

enum { PSI_SYS_SOME, PSI_SYS_FULL, PSI_CG_SOME, PSI_CG_FULL, N_PSI };

static struct lowmem {
    mb_broker *b;
    mb_config cfg;
    mb_daemon_log_fn log;
    int ep;
    uint64_t page_size, pool_pages, mem_total;
    uint64_t next_meminfo, next_oom_adj;
    int psi_fd[N_PSI];
    char psi_path[N_PSI][MB_PATH_MAX + 32];
    int cg_events_fd;
    mb_memevents cg_events;
    int victim_fd;
    uint32_t victim_pid;
    char victim_comm[16];
    uint64_t victim_kill_at;
    unsigned reports;
    bool oom_adj_failed;
} L = {.psi_fd = {-1, -1, -1, -1}, .cg_events_fd = -1, .victim_fd = -1};

static mb_proc procs[MAX_PROCS];

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Reads a small file into buf (NUL-terminated). Returns its length or -1. */
static ssize_t read_text(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
        if (len == cap - 1) break;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

uint64_t _mb_lowmem_mem_total(const mb_config *cfg)
{
    char text[8192];
    mb_meminfo mi;
    if (read_text(cfg->meminfo, text, sizeof text) < 0 || !_mb_parse_meminfo(text, &mi)) return 0;
    return mi.mem_total;
}

static void read_meminfo(uint64_t now)
{
    char text[8192];
    mb_meminfo mi = {0, 0};
    if (read_text(L.cfg.meminfo, text, sizeof text) < 0 || !_mb_parse_meminfo(text, &mi)) {
        static bool said;
        if (!said) L.log(4, "%s: unreadable or without MemTotal: thresholds use the quota only",
                         L.cfg.meminfo);
        said = true;
    }
    if (L.b->pol.mem_available != mi.mem_available) _mb_broker_meminfo(L.b, mi.mem_available, now);
}

/* ---- processes ---- */

static void proc_comm(uint32_t pid, char comm[16])
{
    char path[64], buf[32];
    snprintf(path, sizeof path, "/proc/%u/comm", pid);
    comm[0] = '\0';
    if (read_text(path, buf, sizeof buf) <= 0) return;
    buf[strcspn(buf, "\n")] = '\0';
    size_t n = strlen(buf);
    if (n > 15) n = 15;
    memcpy(comm, buf, n);
    comm[n] = '\0';
}

static void proc_exe(uint32_t pid, char *exe, size_t cap)
{
    char path[64], target[512];
    snprintf(path, sizeof path, "/proc/%u/exe", pid);
    exe[0] = '\0';
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) return;
    target[n] = '\0';
    char *del = strstr(target, " (deleted)");
    if (del) *del = '\0';
    const char *base = strrchr(target, '/');
    base = base ? base + 1 : target;
    size_t len = strlen(base);
    if (len >= cap) len = cap - 1;
    memcpy(exe, base, len);
    exe[len] = '\0';
}

static void proc_cgroup(uint32_t pid, char *cg, size_t cap)
{
    char path[64], text[2048];
    snprintf(path, sizeof path, "/proc/%u/cgroup", pid);
    cg[0] = '\0';
    if (read_text(path, text, sizeof text) < 0) return;
    for (char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        if (strncmp(l, "0::", 3) == 0) {
            size_t n = strcspn(l + 3, "\n");
            if (n >= cap) n = cap - 1;
            memcpy(cg, l + 3, n);
            cg[n] = '\0';
            return;
        }
}

/* Private_Dirty (and Private_Clean) from smaps_rollup, bytes. */
static void proc_private(uint32_t pid, uint64_t *dirty, uint64_t *clean)
{
    char path[64], text[4096];
    snprintf(path, sizeof path, "/proc/%u/smaps_rollup", pid);
    *dirty = *clean = 0;
    if (read_text(path, text, sizeof text) < 0) return;
    const char *d = strstr(text, "Private_Dirty:"), *c = strstr(text, "Private_Clean:");
    if (d) *dirty = strtoull(d + 14, NULL, 10) * 1024;
    if (c) *clean = strtoull(c + 14, NULL, 10) * 1024;
}

/* Fills procs[] with every process (comm, exe, cgroup). Returns the count. */
static size_t scan_procs(void)
{
    DIR *dir = opendir("/proc");
    if (!dir) return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && n < MAX_PROCS) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        mb_proc *p = &procs[n];
        memset(p, 0, sizeof *p);
        p->pid = (uint32_t)strtoul(e->d_name, NULL, 10);
        proc_comm(p->pid, p->comm);
        if (!p->comm[0]) continue; /* gone, or a kernel oddity */
        proc_exe(p->pid, p->exe, sizeof p->exe);
        proc_cgroup(p->pid, p->cgroup, sizeof p->cgroup);
        n++;
    }
    closedir(dir);
    return n;
}

static bool on_list(const char (*list)[64], uint32_t n, const mb_proc *p)
{
    for (uint32_t i = 0; i < n; i++)
        if (_mb_kill_entry_matches(list[i], p)) return true;
    return false;
}

/* OOM_SCORE_ADJ: -1000 for NEVER_KILL, +1000 for KILLABLE, so that the
 * kernel's own killer, if it still runs, agrees. */
static void keep_oom_score_adj(void)
{
    if (!L.cfg.oom_score_adj || (L.cfg.n_never == 0 && L.cfg.n_killable == 0)) return;
    size_t n = scan_procs();
    for (size_t i = 0; i < n; i++) {
        const mb_proc *p = &procs[i];
        if (p->pid == (uint32_t)getpid()) continue;
        const char *want = on_list(L.cfg.never_kill, L.cfg.n_never, p)      ? "-1000"
                           : on_list(L.cfg.killable, L.cfg.n_killable, p) ? "1000"
                                                                           : NULL;
        if (!want) continue;
        char path[64], cur[16];
        snprintf(path, sizeof path, "/proc/%u/oom_score_adj", p->pid);
        if (read_text(path, cur, sizeof cur) > 0 && atoi(cur) == atoi(want)) continue;
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        bool ok = fd >= 0 && write(fd, want, strlen(want)) == (ssize_t)strlen(want);
        if (fd >= 0) close(fd);
        if (ok)
            L.log(6, "oom_score_adj %s for pid %u (%s)", want, p->pid, p->comm);
        else if (!L.oom_adj_failed) {
            L.oom_adj_failed = true;
            L.log(4, "cannot write %s: %s (further failures not logged)", path, strerror(errno));
        }
    }
}

/* ---- reports ---- */

static int by_dirty(const void *a, const void *b)
{
    const mb_proc *x = a, *y = b;
    return x->private_bytes < y->private_bytes ? 1 : x->private_bytes > y->private_bytes ? -1 : 0;
}

int _mb_lowmem_report(const char *why)
{
    if (!L.b || !L.cfg.report_dir[0]) return -ENOENT;
    mkdir(L.cfg.report_dir, 0750);
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    char stamp[32], path[MB_PATH_MAX + 64];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    unsigned no = ++L.reports;
    snprintf(path, sizeof path, "%s/membroker-report-%s-%u.txt", L.cfg.report_dir, stamp, no);
    FILE *f = fopen(path, "we");
    if (!f) {
        int e = errno;
        L.log(3, "report %s: %s", path, strerror(e));
        return -e;
    }
    char date[64], r[96];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %z", &tm);
    const mb_broker *b = L.b;
    fprintf(f, "membroker OOM report %u, %s\nreason: %s\n\n", no, date, why);
    fprintf(f, "## level %s (%s)\n", _mb_level_name(b->pol.level),
            _mb_reasons_str(b->pol.reasons, r, sizeof r));
    fprintf(f, "signal threshold %llu pages, allocation threshold %llu pages (0 = off)\n\n",
            (unsigned long long)b->pol.st.quota_pages, (unsigned long long)b->pol.mat.quota_pages);
    fprintf(f, "## pool: %llu pages of %llu bytes, granted %llu, free %llu\n",
            (unsigned long long)b->cfg.pool_pages, (unsigned long long)b->cfg.page_size,
            (unsigned long long)b->held_total, (unsigned long long)_mb_broker_free(b));
    fprintf(f, "%8s %-16s %-13s %-15s %12s\n", "PID", "COMMAND", "KIND", "CLASS", "HELD");
    for (uint32_t i = 0; i < b->capacity; i++) {
        const mb_bclient *c = &b->clients[i];
        if (!c->registered) continue;
        fprintf(f, "%8u %-16s %-13s %-15s %12llu\n", c->pid, c->comm,
                c->kind ? "bidirectional" : "simple",
                c->cls < b->n_classes ? b->classes[c->cls].name : "?",
                (unsigned long long)c->held);
    }
    char text[8192];
    fprintf(f, "\n## /proc/meminfo\n");
    if (read_text("/proc/meminfo", text, sizeof text) > 0) fputs(text, f);
    if (strcmp(L.cfg.meminfo, "/proc/meminfo") != 0 &&
        read_text(L.cfg.meminfo, text, sizeof text) > 0)
        fprintf(f, "\n## %s (MEMINFO)\n%s", L.cfg.meminfo, text);
    size_t n = scan_procs();
    for (size_t i = 0; i < n; i++) {
        uint64_t clean;
        proc_private(procs[i].pid, &procs[i].private_bytes, &clean);
    }
    qsort(procs, n, sizeof procs[0], by_dirty);
    fprintf(f, "\n## processes by private dirty memory (smaps_rollup), largest first\n");
    fprintf(f, "%8s %-16s %12s  %s\n", "PID", "COMMAND", "KiB", "CGROUP");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%8u %-16s %12llu  %s\n", procs[i].pid, procs[i].comm,
                (unsigned long long)(procs[i].private_bytes >> 10), procs[i].cgroup);
    fclose(f);
    L.log(6, "report %u written to %s", no, path);
    return (int)no;
}

/* ---- the terminator ---- */

static int pidfd_open_(uint32_t pid)
{
    return (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
}

static int pidfd_signal(int fd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

/* The broker's kill hook: the first running process of the KILLABLE list,
 * never one on NEVER_KILL, terminated through a pidfd. */
static bool kill_victim(void *ctx, const char *why)
{
    (void)ctx;
    if (L.victim_fd >= 0) return true;
    if (L.cfg.n_killable == 0) return false;
    size_t n = scan_procs();
    for (size_t i = 0; i < n; i++)
        if (on_list(L.cfg.killable, L.cfg.n_killable, &procs[i])) {
            uint64_t clean;
            proc_private(procs[i].pid, &procs[i].private_bytes, &clean);
        }
    int v = _mb_choose_victim(procs, n, (const char(*)[64])L.cfg.killable, L.cfg.n_killable,
                              (const char(*)[64])L.cfg.never_kill, L.cfg.n_never,
                              (uint32_t)getpid());
    if (v < 0) {
        L.log(3, "memory %s: %s; no running process of the KILLABLE list to terminate",
              _mb_level_name(L.b->pol.level), why);
        return false;
    }
    mb_proc p = procs[v];
    int fd = pidfd_open_(p.pid);
    char comm[16];
    proc_comm(p.pid, comm);
    /* the pidfd pins this process: if the PID was reused since the scan,
     * the name no longer matches and nothing is sent */
    if (fd < 0 || strcmp(comm, p.comm) != 0) {
        L.log(4, "victim pid %u (%s) went away before it could be terminated", p.pid, p.comm);
        if (fd >= 0) close(fd);
        return false;
    }
    char reason[300];
    snprintf(reason, sizeof reason, "terminating pid %u (%s): %s", p.pid, p.comm, why);
    _mb_lowmem_report(reason);
    char r[96];
    L.log(3,
          "memory %s (%s): %s; granted %llu of %llu pages, MemAvailable %llu KiB; victim "
          "private memory %llu KiB; SIGTERM, SIGKILL in %u ms",
          _mb_level_name(L.b->pol.level), _mb_reasons_str(L.b->pol.reasons, r, sizeof r), reason,
          (unsigned long long)L.b->held_total, (unsigned long long)L.b->cfg.pool_pages,
          (unsigned long long)(L.b->pol.mem_available >> 10),
          (unsigned long long)(p.private_bytes >> 10), L.cfg.kill_timeout_ms);
    if (pidfd_signal(fd, SIGTERM) < 0) {
        L.log(3, "pidfd_send_signal(%u, SIGTERM): %s", p.pid, strerror(errno));
        close(fd);
        return false;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = MB_LOWMEM_ID + 9};
    if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        L.log(3, "epoll_ctl(pidfd): %s", strerror(errno));
        close(fd);
        return false;
    }
    L.victim_fd = fd;
    L.victim_pid = p.pid;
    snprintf(L.victim_comm, sizeof L.victim_comm, "%s", p.comm);
    L.victim_kill_at = mono_ms() + L.cfg.kill_timeout_ms;
    return true;
}

static void victim_gone(uint64_t now)
{
    L.log(6, "victim pid %u (%s) has exited", L.victim_pid, L.victim_comm);
    epoll_ctl(L.ep, EPOLL_CTL_DEL, L.victim_fd, NULL);
    close(L.victim_fd);
    L.victim_fd = -1;
    _mb_broker_kill_done(L.b, now);
}

/* ---- kernel pressure sources ---- */

static void close_sources(void)
{
    for (int i = 0; i < N_PSI; i++)
        if (L.psi_fd[i] >= 0) {
            close(L.psi_fd[i]); /* also leaves the epoll set */
            L.psi_fd[i] = -1;
        }
    if (L.cg_events_fd >= 0) close(L.cg_events_fd);
    L.cg_events_fd = -1;
}

/* Arms one PSI trigger. On a refused window (unprivileged triggers need
 * multiples of 2 s) retries once with such a window; otherwise one clear
 * log line, and the thresholds keep working without it. */
static bool arm_psi(int idx, const char *path, bool full, uint32_t stall, uint32_t window)
{
    snprintf(L.psi_path[idx], sizeof L.psi_path[idx], "%s", path);
    const char *what = full ? "full" : "some";
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        L.log(4, "PSI: cannot open %s: %s: no %s trigger (thresholds keep working from the quota "
                 "and MemAvailable)",
              path, strerror(errno), what);
        return false;
    }
    char trig[64];
    int len = _mb_psi_trigger(trig, sizeof trig, full, stall, window);
    if (write(fd, trig, (size_t)len + 1) < 0) {
        int e = errno;
        uint32_t w2 = _mb_psi_unprivileged_window(window);
        uint32_t s2 = stall > w2 ? w2 : stall;
        len = _mb_psi_trigger(trig, sizeof trig, full, s2, w2);
        if ((e == EINVAL || e == EPERM) && w2 != window && write(fd, trig, (size_t)len + 1) >= 0) {
            L.log(4, "PSI: the kernel refused a %s trigger with a %u us window on %s (%s): using "
                     "%u us (unprivileged triggers need multiples of 2 s)",
                  what, window, path, strerror(e), w2);
        } else {
            L.log(4, "PSI: the kernel refused the trigger \"%s %u %u\" on %s: %s: no %s trigger "
                     "(thresholds keep working from the quota and MemAvailable)",
                  what, stall, window, path, strerror(e), what);
            close(fd);
            return false;
        }
    } else {
        L.log(6, "PSI: trigger \"%s\" armed on %s", trig, path);
    }
    struct epoll_event ev = {.events = EPOLLPRI, .data.u64 = MB_LOWMEM_ID + (uint64_t)idx};
    if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        L.log(3, "epoll_ctl(%s): %s", path, strerror(errno));
        close(fd);
        return false;
    }
    L.psi_fd[idx] = fd;
    return true;
}

static void read_cg_events(uint64_t now, bool first)
{
    char text[1024];
    ssize_t n = pread(L.cg_events_fd, text, sizeof text - 1, 0);
    if (n < 0) return;
    text[n] = '\0';
    mb_memevents ev;
    if (!_mb_parse_memevents(text, &ev)) return;
    uint32_t r = first ? 0 : _mb_memevents_diff(&L.cg_events, &ev);
    L.cg_events = ev;
    if (r) {
        L.log(6, "%s/memory.events: high %llu max %llu oom %llu", L.cfg.psi_cgroup,
              (unsigned long long)ev.high, (unsigned long long)ev.max, (unsigned long long)ev.oom);
        _mb_broker_pressure(L.b, r, now);
    }
}

static uint32_t arm_sources(void)
{
    uint32_t flags = 0;
    for (int full = 0; full < 2; full++) {
        if (!L.cfg.psi_stall_us[full]) continue;
        if (arm_psi(PSI_SYS_SOME + full, "/proc/pressure/memory", full, L.cfg.psi_stall_us[full],
                    L.cfg.psi_window_us[full]))
            flags |= MB_PSI_SYSTEM;
        if (L.cfg.psi_cgroup[0]) {
            char path[MB_PATH_MAX + 32];
            snprintf(path, sizeof path, "%s/memory.pressure", L.cfg.psi_cgroup);
            if (arm_psi(PSI_CG_SOME + full, path, full, L.cfg.psi_stall_us[full],
                        L.cfg.psi_window_us[full]))
                flags |= MB_PSI_CGROUP;
        }
    }
    if (L.cfg.psi_cgroup[0]) {
        char path[MB_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/memory.events", L.cfg.psi_cgroup);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLPRI, .data.u64 = MB_LOWMEM_ID + 8};
        if (fd < 0) {
            L.log(4, "cannot open %s: %s: no cgroup memory events (memory controller not enabled "
                     "there?)",
                  path, strerror(errno));
        } else if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            L.log(3, "epoll_ctl(%s): %s", path, strerror(errno));
            close(fd);
        } else {
            L.cg_events_fd = fd;
            read_cg_events(0, true);
            flags |= MB_CG_EVENTS;
        }
    }
    return flags;
}

/* ---- public ---- */

static uint64_t class_pages(const mb_th_spec *s, uint64_t pool_pages, uint64_t page_size,
                            uint64_t dflt)
{
    switch (s->mode) {
    case MB_TH_BYTES:
        return s->value / page_size;
    case MB_TH_POOL_PCT:
        return pool_pages / 100 * s->value + pool_pages % 100 * s->value / 100;
    default:
        return dflt;
    }
}

void _mb_lowmem_configure(mb_broker *b, const mb_config *cfg, uint64_t pool_pages,
                          uint64_t page_size, int ep, mb_daemon_log_fn log, uint64_t now)
{
    L.b = b;
    L.cfg = *cfg;
    L.ep = ep;
    L.log = log;
    L.page_size = page_size;
    L.pool_pages = pool_pages;
    L.mem_total = _mb_lowmem_mem_total(cfg);
    mb_class cls[MB_MAX_CLASSES];
    memset(cls, 0, sizeof cls);
    for (uint32_t k = 0; k < cfg->n_classes; k++) {
        snprintf(cls[k].name, sizeof cls[k].name, "%s", cfg->classes[k].name);
        cls[k].min = class_pages(&cfg->classes[k].min, pool_pages, page_size, 0);
        cls[k].cap = class_pages(&cfg->classes[k].cap, pool_pages, page_size, pool_pages);
    }
    close_sources();
    b->pressure_flags = arm_sources();
    _mb_broker_set_policy(b, &cfg->policy, cls, cfg->n_classes, cfg->class_by_request,
                          cfg->kill_on_urgent && cfg->n_killable > 0, L.mem_total, kill_victim,
                          now);
    char st[96] = "off", mat[96] = "off";
    if (b->pol.st.quota_pages)
        snprintf(st, sizeof st, "%llu pages granted or %llu MiB used",
                 (unsigned long long)b->pol.st.quota_pages,
                 (unsigned long long)(b->pol.st.sys_bytes >> 20));
    if (b->pol.mat.quota_pages)
        snprintf(mat, sizeof mat, "%llu pages granted or %llu MiB used",
                 (unsigned long long)b->pol.mat.quota_pages,
                 (unsigned long long)(b->pol.mat.sys_bytes >> 20));
    if (_mb_policy_enabled(&b->pol) || cfg->n_classes > 1 || cfg->n_killable)
        log(6, "low-memory policy: signal threshold %s; allocation threshold %s; %u classes; "
               "%u killable, %u never-kill entries",
            st, mat, cfg->n_classes, cfg->n_killable, cfg->n_never);
    L.next_meminfo = now;
    L.next_oom_adj = now;
    _mb_lowmem_tick(now);
}

void _mb_lowmem_event(uint64_t id, uint32_t events, uint64_t now)
{
    uint64_t idx = id - MB_LOWMEM_ID;
    if (idx < N_PSI) {
        int i = (int)idx;
        if (L.psi_fd[i] < 0) return;
        if (events & EPOLLERR) {
            L.log(4, "PSI: the trigger on %s is gone (cgroup removed?)", L.psi_path[i]);
            close(L.psi_fd[i]);
            L.psi_fd[i] = -1;
            return;
        }
        bool full = i == PSI_SYS_FULL || i == PSI_CG_FULL;
        L.log(6, "PSI: %s memory stall past the trigger on %s", full ? "full" : "some",
              L.psi_path[i]);
        _mb_broker_pressure(L.b, full ? MB_R_PSI_FULL : MB_R_PSI_SOME, now);
    } else if (idx == 8 && L.cg_events_fd >= 0) {
        read_cg_events(now, false);
    } else if (idx == 9 && L.victim_fd >= 0) {
        victim_gone(now);
    }
}

void _mb_lowmem_tick(uint64_t now)
{
    if (!L.b) return;
    if (now >= L.next_meminfo && (_mb_policy_enabled(&L.b->pol))) {
        read_meminfo(now);
        L.next_meminfo = now + L.cfg.meminfo_interval_ms;
    }
    if (now >= L.next_oom_adj) {
        keep_oom_score_adj();
        L.next_oom_adj = now + OOM_ADJ_EVERY_MS;
    }
    if (L.victim_fd >= 0 && now >= L.victim_kill_at) {
        L.log(3, "pid %u (%s) still runs %u ms after SIGTERM: SIGKILL", L.victim_pid,
              L.victim_comm, L.cfg.kill_timeout_ms);
        if (pidfd_signal(L.victim_fd, SIGKILL) < 0 && errno != ESRCH)
            L.log(3, "pidfd_send_signal(%u, SIGKILL): %s", L.victim_pid, strerror(errno));
        L.victim_kill_at = UINT64_MAX;
    }
}

uint64_t _mb_lowmem_next(uint64_t now)
{
    (void)now;
    if (!L.b) return UINT64_MAX;
    uint64_t next = UINT64_MAX;
    if (_mb_policy_enabled(&L.b->pol)) next = L.next_meminfo;
    if ((L.cfg.n_never || L.cfg.n_killable) && L.cfg.oom_score_adj && L.next_oom_adj < next)
        next = L.next_oom_adj;
    if (L.victim_fd >= 0 && L.victim_kill_at < next) next = L.victim_kill_at;
    return next;
}

uint32_t _mb_lowmem_class_of(uint32_t pid, uint32_t uid, const char *comm)
{
    if (L.cfg.n_matches == 0) return 0;
    char exe[64], cg[256];
    proc_exe(pid, exe, sizeof exe);
    proc_cgroup(pid, cg, sizeof cg);
    return _mb_class_match(L.cfg.matches, L.cfg.n_matches, uid, comm, exe, cg);
}

void _mb_lowmem_close(void)
{
    close_sources();
    if (L.victim_fd >= 0) close(L.victim_fd);
    L.victim_fd = -1;
}

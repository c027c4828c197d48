/* membrokerd's low-memory I/O (issue 7): reads MEMINFO, arms PSI triggers
 * and watches memory.events in the daemon's epoll loop, matches clients to
 * classes, writes oom_score_adj, terminates victims through a pidfd and
 * writes OOM reports. The decisions are policy.c's and broker.c's. */
#ifndef MEMBROKER_LOWMEM_H
#define MEMBROKER_LOWMEM_H

#include <stdbool.h>
#include <stdint.h>

#include "broker.h"
#include "config.h"

/* epoll ids used here: at or above MB_LOWMEM_ID (above every connection). */
#define MB_LOWMEM_ID (UINT64_C(1) << 40)

typedef void (*mb_daemon_log_fn)(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* MemTotal as MEMINFO says (the test's fake file, or /proc/meminfo); 0 unreadable. */
uint64_t _mb_lowmem_mem_total(const mb_config *cfg);

/* Applies cfg's policy to the broker and (re)arms the kernel sources.
 * Called at start and on every reload. */
void _mb_lowmem_configure(mb_broker *b, const mb_config *cfg, uint64_t pool_pages,
                          uint64_t page_size, int ep, mb_daemon_log_fn log, uint64_t now);

/* An epoll event with id >= MB_LOWMEM_ID. */
void _mb_lowmem_event(uint64_t id, uint32_t events, uint64_t now);

/* Timers: MEMINFO reads, the SIGKILL after KILL_TIMEOUT. */
void _mb_lowmem_tick(uint64_t now);
uint64_t _mb_lowmem_next(uint64_t now);

/* The class of a connecting process (CLASS_MEMBER lines). */
uint32_t _mb_lowmem_class_of(uint32_t pid, uint32_t uid, const char *comm);

/* Writes a report to REPORT_DIR. Returns its number (>= 1) or -errno
 * (-ENOENT: no REPORT_DIR). */
int _mb_lowmem_report(const char *why);

/* At exit: closes what it opened. */
void _mb_lowmem_close(void);

#endif

/* libgmalloc.so: the glibc drop-in. Programs need none of this to use it
 * (LD_PRELOAD=libgmalloc.so app); these calls are for programs that know
 * they run on gmalloc and want to look at or steer it. */
#ifndef GMALLOC_H
#define GMALLOC_H

#include <stdbool.h>
#include <stddef.h>

#include "anr_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills *out with the engine's statistics. Returns 0. */
int gmalloc_get_stats(anr_core_stats *out);

/* Writes the statistics to fd, as GMALLOC_STATS=1 does at exit (no allocation). */
void gmalloc_print_stats(int fd);

/* True if p lies in gmalloc's fixed mapping. */
bool gmalloc_owns(const void *p);

/* Moves the limit at run time (bytes of pages in use; 0 = none). */
void gmalloc_set_limit(size_t bytes);

/* Pages of membroker quota this process holds (0 without MEMBROKER on). */
uint64_t gmalloc_quota_pages(void);

#ifdef __cplusplus
}
#endif
#endif

/* Bidirectional mode (-o cache_dir=DIR): when membroker asks for quota back,
 * track_fs deletes files from DIR (relative to SOURCE_DIR), oldest
 * modification first, until enough is freed. A file that an operation is
 * working on right now (its lock is taken) is skipped; a file that is open
 * is deleted but frees its blocks only when it is closed. */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "internal.h"

typedef struct victim {
    struct timespec mtime;
    char *rel; /* relative to SOURCE_DIR */
} victim;

static victim *list;
static size_t count, cap;
static size_t prefix; /* strlen(SOURCE_DIR) + 1 */

static int collect(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F || !S_ISREG(st->st_mode)) return 0;
    if (count == cap) {
        size_t ncap = cap ? 2 * cap : 64;
        victim *nl = realloc(list, ncap * sizeof *nl);
        if (!nl) return 1;
        list = nl;
        cap = ncap;
    }
    char *r = strdup(p + prefix);
    if (!r) return 1;
    list[count].mtime = st->st_mtim;
    list[count].rel = r;
    count++;
    return 0;
}

static int older_first(const void *a, const void *b)
{
    const victim *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec) return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    if (x->mtime.tv_nsec != y->mtime.tv_nsec) return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
    return strcmp(x->rel, y->rel);
}

uint64_t tf_cache_evict(uint64_t bytes)
{
    /* Only the thread holding the client's mutex gets here: one at a time. */
    char dir[PATH_MAX];
    size_t sl = strlen(tf_opt.source);
    if (sl + 1 + strlen(tf_opt.cache_dir) >= sizeof dir) return 0;
    strcpy(dir, tf_opt.source);
    dir[sl] = '/';
    strcpy(dir + sl + 1, tf_opt.cache_dir);
    prefix = sl + 1;
    count = 0;
    nftw(dir, collect, 32, FTW_PHYS | FTW_MOUNT);
    qsort(list, count, sizeof *list, older_first);
    uint64_t freed = 0;
    unsigned deleted = 0;
    for (size_t i = 0; i < count; i++) {
        if (freed < bytes) {
            int64_t c = tf_unlink_nowait(list[i].rel);
            if (c >= 0) {
                freed += (uint64_t)c;
                deleted++;
            }
        }
        free(list[i].rel);
    }
    count = 0;
    if (deleted)
        tf_log(LOG_INFO, "cache: deleted %u files from %s for a give-back", deleted,
               tf_opt.cache_dir);
    return freed;
}

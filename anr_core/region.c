/* The OS primitive layer: the only file that calls mmap, munmap, madvise or
 * mincore. mmap/munmap run once per heap (init, destroy); after init only
 * madvise and mincore (which reads page tables, never changes the map). */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* Smallest reservation worth retrying with: below this a heap is useless. */
#define MIN_MAPPING ((size_t)16 << 20)

size_t _anr_os_page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

/* A few times physical RAM on 64-bit (the reservation costs only address
 * space with MAP_NORESERVE); 512 MiB on 32-bit, where address space is scarce. */
size_t _anr_os_default_mapping(void)
{
    if (sizeof(void *) < 8)
        return (size_t)512 << 20;
    long pages = sysconf(_SC_PHYS_PAGES);
    size_t ram = pages > 0 ? (size_t)pages * _anr_os_page_size() : ((size_t)4 << 30);
    size_t want = ram * 4;
    if (want < ((size_t)1 << 30))
        want = (size_t)1 << 30;
    return want;
}

/* Reserves *size bytes, halving on failure (strict overcommit charges the
 * whole reservation, so a smaller one may succeed). Sets *size to what was had. */
void *_anr_os_reserve(size_t *size)
{
    size_t want = *size;
    while (want >= MIN_MAPPING) {
        void *p = mmap(NULL, want, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            *size = want;
            return p;
        }
        want /= 2;
    }
    return NULL;
}

void _anr_os_release(void *p, size_t size)
{
    int saved = errno;
    munmap(p, size);
    errno = saved;
}

int _anr_os_purge(void *p, size_t size, anr_purge_advice advice)
{
    int saved = errno;
    int how = MADV_DONTNEED;
#ifdef MADV_FREE
    if (advice == ANR_PURGE_FREE)
        how = MADV_FREE;
#endif
    int rc = madvise(p, size, how);
    if (rc != 0 && how != MADV_DONTNEED)
        rc = madvise(p, size, MADV_DONTNEED); /* kernels before 4.5 lack MADV_FREE */
    errno = saved;
    return rc;
}

int _anr_os_resident(const void *p, size_t size, unsigned char *vec)
{
    return mincore((void *)p, size, vec);
}

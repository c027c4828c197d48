/* The Valgrind façade: the only file that names client requests. Each call
 * is a no-op unless the heap has ANR_DEBUG_VALGRIND (on by default when the
 * process runs under valgrind) and the headers were there at build time. */
#include "internal.h"

#ifdef ANR_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define ON(h) ((h)->vg)
#else
#define ON(h) ((void)(h), false)
#define VALGRIND_MALLOCLIKE_BLOCK(p, n, rz, z) ((void)(p), (void)(n), (void)(z))
#define VALGRIND_FREELIKE_BLOCK(p, rz) ((void)(p))
#define VALGRIND_MAKE_MEM_NOACCESS(p, n) ((void)(p), (void)(n))
#define VALGRIND_MAKE_MEM_UNDEFINED(p, n) ((void)(p), (void)(n))
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

void _am_vg_malloclike(const anr_mheap *h, void *p, size_t n, bool zeroed)
{
    if (ON(h))
        VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, zeroed);
}

void _am_vg_freelike(const anr_mheap *h, void *p)
{
    if (ON(h))
        VALGRIND_FREELIKE_BLOCK(p, 0);
}

void _am_vg_noaccess(const anr_mheap *h, const void *p, size_t n)
{
    if (ON(h) && n)
        VALGRIND_MAKE_MEM_NOACCESS(p, n);
}

void _am_vg_undefined(const anr_mheap *h, const void *p, size_t n)
{
    if (ON(h) && n)
        VALGRIND_MAKE_MEM_UNDEFINED(p, n);
}

void _am_vg_defined(const anr_mheap *h, const void *p, size_t n)
{
    if (ON(h) && n)
        VALGRIND_MAKE_MEM_DEFINED(p, n);
}

bool _am_vg_running(void)
{
#ifdef ANR_HAVE_VALGRIND
    return RUNNING_ON_VALGRIND != 0;
#else
    return false;
#endif
}

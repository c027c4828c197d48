/* Preloaded as the "glibc" allocator for programs that Debian links with
 * another malloc (redis-server needs libjemalloc.so.2, whose malloc would
 * otherwise serve the "glibc" run). Every entry point forwards to glibc's
 * own malloc (__libc_* or libc.so.6's symbol), so that "glibc" means glibc's
 * malloc in every column of every table. */
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

#define EXPORT __attribute__((visibility("default")))

EXPORT void *malloc(size_t n) { return __libc_malloc(n); }
EXPORT void free(void *p) { __libc_free(p); }
EXPORT void *calloc(size_t a, size_t b) { return __libc_calloc(a, b); }
EXPORT void *realloc(void *p, size_t n) { return __libc_realloc(p, n); }
EXPORT void *memalign(size_t a, size_t n) { return __libc_memalign(a, n); }
EXPORT void *valloc(size_t n) { return __libc_valloc(n); }
EXPORT void *pvalloc(size_t n) { return __libc_pvalloc(n); }

EXPORT void *aligned_alloc(size_t a, size_t n)
{
    if (a == 0 || (a & (a - 1))) {
        errno = EINVAL;
        return NULL;
    }
    return __libc_memalign(a, n);
}

EXPORT int posix_memalign(void **out, size_t a, size_t n)
{
    if (a < sizeof(void *) || (a & (a - 1)))
        return EINVAL;
    int saved = errno;
    void *p = __libc_memalign(a, n);
    if (!p)
        return ENOMEM;
    errno = saved;
    *out = p;
    return 0;
}

EXPORT size_t malloc_usable_size(void *p)
{
    static size_t (*libc_mus)(void *);
    if (!libc_mus) {
        void *h = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        if (h)
            libc_mus = (size_t (*)(void *))dlsym(h, "malloc_usable_size");
        if (!libc_mus)
            return 0;
    }
    return libc_mus(p);
}

/* Call stacks: captured raw at allocation (libunwind's unw_backtrace where
 * available, else glibc's backtrace), symbolized only when reported. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef ANR_HAVE_LIBUNWIND
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#else
#include <execinfo.h>
#endif

#include "internal.h"

#ifdef ANR_HAVE_LIBUNWIND
/* Under valgrind, libunwind's address validation (a write of stack bytes to
 * a pipe) is reported by memcheck; glibc's backtrace() is clean there. With
 * libunwind linked, `backtrace` resolves to libunwind's, so look in libc. */
typedef int (*bt_fn)(void **, int);
static bt_fn glibc_backtrace;
static pthread_once_t bt_once = PTHREAD_ONCE_INIT;

static void bt_init(void)
{
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    if (libc)
        glibc_backtrace = (bt_fn)(uintptr_t)dlsym(libc, "backtrace");
}
#endif

/* An unwinder that allocates (through an interposed malloc) must not recurse. */
static __thread bool tls_capturing __attribute__((tls_model("initial-exec")));

uint32_t _am_tid(void) { return (uint32_t)gettid(); }

unsigned _am_stack_capture(uintptr_t *frames, unsigned depth, uintptr_t caller)
{
    enum { EXTRA = 8 }; /* our own frames above the caller */
    void *buf[ANR_MAX_STACK_DEPTH + EXTRA];
    if (tls_capturing || depth == 0)
        return 0;
    if (depth > ANR_MAX_STACK_DEPTH)
        depth = ANR_MAX_STACK_DEPTH;
    tls_capturing = true;
#ifdef ANR_HAVE_LIBUNWIND
    int n = 0;
    if (_am_vg_running()) {
        pthread_once(&bt_once, bt_init);
        if (glibc_backtrace)
            n = glibc_backtrace(buf, (int)depth + EXTRA);
    } else {
        n = unw_backtrace(buf, (int)depth + EXTRA);
    }
#else
    int n = backtrace(buf, (int)depth + EXTRA);
#endif
    tls_capturing = false;
    if (n <= 0)
        return 0;
    /* Start at the API's caller: frames inside anr_malloc are noise. */
    int start = 0;
    for (int i = 0; i < n && i < EXTRA + 1; i++) {
        if ((uintptr_t)buf[i] == caller) {
            start = i;
            break;
        }
    }
    unsigned k = 0;
    for (int i = start; i < n && k < depth; i++)
        frames[k++] = (uintptr_t)buf[i];
    return k;
}

/* "fn+0x1c (libfoo.so+0x2a1c)", "libfoo.so+0x2a1c" or "0x7f..". */
static size_t symbolize(uintptr_t addr, char *buf, size_t cap)
{
    Dl_info di;
    int n;
    /* addr - 1: a return address may sit just past its call's function. */
    if (addr && dladdr((void *)(addr - 1), &di) && di.dli_fname) {
        const char *mod = strrchr(di.dli_fname, '/');
        mod = mod ? mod + 1 : di.dli_fname;
        uintptr_t moff = addr - (uintptr_t)di.dli_fbase;
        if (di.dli_sname && di.dli_saddr)
            n = snprintf(buf, cap, "%s+0x%lx (%s+0x%lx)", di.dli_sname,
                         (unsigned long)(addr - (uintptr_t)di.dli_saddr), mod, (unsigned long)moff);
        else
            n = snprintf(buf, cap, "%s+0x%lx", mod, (unsigned long)moff);
    } else {
        n = snprintf(buf, cap, "0x%lx", (unsigned long)addr);
    }
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

size_t _am_symbolize(uintptr_t addr, char *buf, size_t cap) { return symbolize(addr, buf, cap); }

size_t anr_stack_format(const void *const *stack, unsigned nframes, char *buf, size_t cap)
{
    size_t len = 0;
    if (cap == 0)
        return 0;
    buf[0] = 0;
    for (unsigned i = 0; i < nframes && len + 1 < cap; i++) {
        char sym[256];
        symbolize((uintptr_t)stack[i], sym, sizeof(sym));
        int n = snprintf(buf + len, cap - len, "    #%u %p %s\n", i, stack[i], sym);
        if (n < 0)
            break;
        len += (size_t)n >= cap - len ? cap - len - 1 : (size_t)n;
    }
    return len;
}

/* Promise 1: the memory map is fixed after init. Once the heap exists the
 * allocator makes no mmap, munmap, mremap, mprotect or brk call; madvise is
 * its only memory syscall.
 *
 * Each case runs in a forked child. After init (a first malloc) and after
 * creating the threads it needs, the child installs a seccomp-BPF filter
 * (built by hand; the architecture is checked) that turns those syscalls into
 * SIGSYS (SECCOMP_RET_TRAP). The handler counts them, records the syscall
 * number, its length argument and the caller, and makes the call fail with
 * EPERM. Then a churn workload runs (millions of malloc/free/realloc/calloc of
 * mixed sizes, large blocks of 1-64 MiB, enough frees to force purges), every
 * object's data is verified, and the count must be 0.
 *
 * The control case shows that the test can fail: direct calls made after the
 * filter are caught, while madvise still goes through. (The glibc build fails
 * the churn cases: glibc maps large blocks with mmap.)
 *
 * After the filter the child prints only with write(2) from stack buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#include "dropin.h"

#if defined(__x86_64__)
#define DR_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define DR_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__i386__)
#define DR_AUDIT_ARCH AUDIT_ARCH_I386
#elif defined(__arm__)
#define DR_AUDIT_ARCH AUDIT_ARCH_ARM
#elif defined(__riscv) && __riscv_xlen == 64
#define DR_AUDIT_ARCH AUDIT_ARCH_RISCV64
#endif

/* ------------------------------------------------------- output, no malloc */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 1)
        n = (int)sizeof(buf) - 1;
    if (n > 0 && write(1, buf, (size_t)n) < 0)
        _exit(9);
}

/* --------------------------------------------------------- the SIGSYS trap */

#define MAX_EVENTS 16
static atomic_int trap_count;
static struct {
    int nr;
    unsigned long len;   /* the second argument: mmap/munmap/mprotect length */
    uintptr_t call_addr; /* the syscall instruction */
    uintptr_t caller;    /* x86-64: the return address on top of the stack */
} trap_events[MAX_EVENTS];

static uintptr_t brk_at_filter; /* the program break when the filter went in */

static void on_sigsys(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    ucontext_t *uc = ucv;
    int n = atomic_fetch_add(&trap_count, 1);
    if (n < MAX_EVENTS) {
        trap_events[n].nr = si->si_syscall;
        trap_events[n].call_addr = (uintptr_t)si->si_call_addr;
#if defined(__x86_64__)
        trap_events[n].len = (unsigned long)uc->uc_mcontext.gregs[REG_RSI];
        trap_events[n].caller = *(uintptr_t *)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
        trap_events[n].len = (unsigned long)uc->uc_mcontext.regs[1];
        trap_events[n].caller = (uintptr_t)uc->uc_mcontext.regs[30];
#endif
    }
    /* The syscall was skipped; make it fail as the kernel would: -EPERM, or
     * for brk the unchanged break (brk reports failure that way). */
    long ret = -EPERM;
#ifdef SYS_brk
    if (si->si_syscall == SYS_brk)
        ret = (long)brk_at_filter;
#endif
#if defined(__x86_64__)
    uc->uc_mcontext.gregs[REG_RAX] = ret;
#elif defined(__aarch64__)
    uc->uc_mcontext.regs[0] = (unsigned long long)ret;
#else
    (void)ret;
    (void)uc;
#endif
}

static const char *sys_name(int nr)
{
    switch (nr) {
    case SYS_mmap:
        return "mmap";
    case SYS_munmap:
        return "munmap";
    case SYS_mremap:
        return "mremap";
    case SYS_mprotect:
        return "mprotect";
#ifdef SYS_brk
    case SYS_brk:
        return "brk";
#endif
#ifdef SYS_mmap2
    case SYS_mmap2:
        return "mmap2";
#endif
#ifdef SYS_pkey_mprotect
    case SYS_pkey_mprotect:
        return "pkey_mprotect";
#endif
    default:
        return "?";
    }
}

static void print_addr(const char *label, uintptr_t a)
{
    Dl_info info;
    if (a && dladdr((void *)a, &info) && info.dli_fname)
        say("    %s %#lx = %s(%s+%#lx)\n", label, (unsigned long)a, info.dli_fname,
            info.dli_sname ? info.dli_sname : "?",
            (unsigned long)(a - (uintptr_t)(info.dli_saddr ? info.dli_saddr : info.dli_fbase)));
    else
        say("    %s %#lx\n", label, (unsigned long)a);
}

static void print_traps(void)
{
    int n = atomic_load(&trap_count);
    say("  trapped map syscalls: %d\n", n);
    for (int i = 0; i < n && i < MAX_EVENTS; i++) {
#ifdef SYS_brk
        if (trap_events[i].nr == SYS_brk)
            say("  #%d brk\n", i);
        else
#endif
            say("  #%d %s(len %lu)\n", i, sys_name(trap_events[i].nr), trap_events[i].len);
        print_addr("syscall at", trap_events[i].call_addr);
        print_addr("called from", trap_events[i].caller);
    }
}

/* Installs the filter for every thread of the process (TSYNC; falls back to
 * prctl for this thread alone if the kernel lacks seccomp(2)). */
static bool no_filter; /* --churn-only */

static void install_filter(void)
{
    if (no_filter)
        return;
#ifndef DR_AUDIT_ARCH
    say("no seccomp architecture value for this target: the fixed map cannot be tested\n");
    _exit(1);
#else
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) != 0)
        _exit(10);

    const int nrs[] = {
        SYS_mmap, SYS_munmap, SYS_mremap, SYS_mprotect,
#ifdef SYS_brk
        SYS_brk,
#endif
#ifdef SYS_mmap2
        SYS_mmap2,
#endif
#ifdef SYS_pkey_mprotect
        SYS_pkey_mprotect,
#endif
    };
    enum { K = sizeof(nrs) / sizeof(nrs[0]) };
    struct sock_filter f[K + 6];
    unsigned i = 0;
    f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, arch));
    /* Another architecture: kill (the syscall numbers would mean other calls). */
    f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, DR_AUDIT_ARCH, 0, K + 3);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                          offsetof(struct seccomp_data, nr));
    for (unsigned k = 0; k < K; k++)
        f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nrs[k],
                                              (unsigned char)(K - k), 0);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    struct sock_fprog prog = {.len = (unsigned short)i, .filter = f};

#ifdef SYS_brk
    brk_at_filter = (uintptr_t)syscall(SYS_brk, 0);
#endif
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        say("PR_SET_NO_NEW_PRIVS failed: errno %d\n", errno);
        _exit(11);
    }
    long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
    if (rc != 0 && errno == ENOSYS)
        rc = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
    if (rc != 0) {
        say("installing the seccomp filter failed: rc %ld errno %d\n", rc, errno);
        _exit(12);
    }
#endif
}

/* --------------------------------------------------------------- workload */

typedef struct obj {
    unsigned char *p;
    size_t size;
    uint64_t seed;
} obj;

#define LARGE_MIN MiB      /* "large" blocks: 1-64 MiB, at most two live per churn */
#define SPARSE_MIN (64 * KiB) /* from here on objects carry a mark per page */
#define STRIDE 4096
#define MARK 16

/* Objects of SPARSE_MIN or more get a MARK-byte pattern on every page (so that
 * all of it is resident) and one in their last MARK bytes; smaller ones a full
 * pattern. A page mark that would overlap the end mark is left out. */
static bool page_mark(size_t off, size_t size) { return off + 2 * MARK <= size; }

static void obj_fill(const obj *o)
{
    uint64_t key = dr_key(o->p, o->size, o->seed);
    if (o->size < SPARSE_MIN) {
        dr_fill(o->p, o->size, key);
        return;
    }
    for (size_t off = 0; page_mark(off, o->size); off += STRIDE)
        dr_fill(o->p + off, MARK, key + off);
    dr_fill(o->p + o->size - MARK, MARK, key - 1);
}

/* Checks the first `upto` bytes of o's pattern for `key`; SIZE_MAX if intact. */
static size_t obj_check(const obj *o, uint64_t key, size_t upto)
{
    if (o->size < SPARSE_MIN)
        return dr_check(o->p, upto, key);
    for (size_t off = 0; page_mark(off, o->size) && off + MARK <= upto; off += STRIDE) {
        size_t bad = dr_check(o->p + off, MARK, key + off);
        if (bad != SIZE_MAX)
            return off + bad;
    }
    if (upto == o->size) {
        size_t bad = dr_check(o->p + o->size - MARK, MARK, key - 1);
        if (bad != SIZE_MAX)
            return o->size - MARK + bad;
    }
    return SIZE_MAX;
}

typedef struct churn {
    uint64_t seed;
    long ops;
    obj slot[4096];
    int n_large;
    long n_ops, n_large_allocs, n_reallocs, n_callocs, n_fail, n_bad;
} churn;

static size_t churn_size(dr_rng *r)
{
    size_t c = dr_below(r, 1000);
    if (c < 850)
        return dr_range(r, 1, 512);
    if (c < 980)
        return dr_range(r, 513, 32 * KiB);
    if (c < 998)
        return dr_range(r, 32 * KiB + 1, 256 * KiB);
    return dr_range(r, 256 * KiB + 1, MiB - 1);
}

static void churn_bad(churn *c, const char *what, const obj *o, size_t off)
{
    if (c->n_bad++ < 5)
        say("  DATA ERROR: %s: %p size %zu offset %zu\n", what, (void *)o->p, o->size, off);
}

static void churn_release(churn *c, obj *o)
{
    size_t bad = obj_check(o, dr_key(o->p, o->size, o->seed), o->size);
    if (bad != SIZE_MAX)
        churn_bad(c, "before free", o, bad);
    if (o->size >= LARGE_MIN)
        c->n_large--;
    free(o->p);
    o->p = NULL;
}

static void churn_run(churn *c)
{
    dr_rng r = {c->seed};
    const size_t n_slots = sizeof(c->slot) / sizeof(c->slot[0]);
    for (long op = 0; op < c->ops; op++) {
        obj *o = &c->slot[dr_below(&r, n_slots)];
        if (o->p) {
            if (dr_below(&r, 4) == 0) {
                /* realloc, sometimes of a large block */
                obj old = *o;
                uint64_t old_key = dr_key(old.p, old.size, old.seed);
                size_t bad = obj_check(o, old_key, o->size);
                if (bad != SIZE_MAX)
                    churn_bad(c, "before realloc", o, bad);
                size_t nsize = old.size >= LARGE_MIN && dr_below(&r, 2) == 0
                                   ? dr_range(&r, LARGE_MIN, 64 * MiB)
                                   : churn_size(&r);
                unsigned char *q = realloc(o->p, nsize);
                c->n_reallocs++;
                if (!q) {
                    c->n_fail++;
                    continue; /* old block intact */
                }
                o->p = q;
                o->size = nsize;
                size_t keep = old.size < nsize ? old.size : nsize;
                /* The kept prefix still carries the old pattern. */
                obj view = {.p = q, .size = old.size};
                if (old.size >= SPARSE_MIN && nsize < SPARSE_MIN) {
                    for (size_t off = 0; page_mark(off, old.size) && off + MARK <= keep;
                         off += STRIDE)
                        if (dr_check(q + off, MARK, old_key + off) != SIZE_MAX)
                            churn_bad(c, "realloc lost contents", o, off);
                } else if (old.size < SPARSE_MIN && nsize >= SPARSE_MIN) {
                    if (dr_check(q, keep, old_key) != SIZE_MAX)
                        churn_bad(c, "realloc lost contents", o, 0);
                } else {
                    bad = obj_check(&view, old_key, keep);
                    if (bad != SIZE_MAX)
                        churn_bad(c, "realloc lost contents", o, bad);
                }
                c->n_large += (nsize >= LARGE_MIN) - (old.size >= LARGE_MIN);
                o->seed = dr_next(&r);
                obj_fill(o);
            } else {
                churn_release(c, o);
            }
            continue;
        }
        obj n = {.seed = dr_next(&r)};
        bool zero = dr_below(&r, 8) == 0;
        if (c->n_large < 2 && dr_below(&r, 20000) == 0) {
            n.size = dr_range(&r, LARGE_MIN, 64 * MiB);
            c->n_large_allocs++;
        } else {
            n.size = churn_size(&r);
        }
        n.p = zero ? calloc(1, n.size) : malloc(n.size);
        if (!n.p) {
            c->n_fail++;
            continue;
        }
        if (zero) {
            c->n_callocs++;
            for (size_t i = 0; i < n.size; i += n.size < SPARSE_MIN ? 1 : STRIDE)
                if (n.p[i]) {
                    churn_bad(c, "calloc not zero", &n, i);
                    break;
                }
        }
        if (n.size >= LARGE_MIN)
            c->n_large++;
        obj_fill(&n);
        *o = n;
    }
    for (size_t i = 0; i < n_slots; i++)
        if (c->slot[i].p)
            churn_release(c, &c->slot[i]);
    c->n_ops = c->ops;
}

static void churn_report(const char *who, const churn *c)
{
    say("  %s: %ld ops, %ld large allocations, %ld reallocs, %ld callocs, %ld failed, %ld data "
        "errors\n",
        who, c->n_ops, c->n_large_allocs, c->n_reallocs, c->n_callocs, c->n_fail, c->n_bad);
}

/* ------------------------------------------------------------ child cases */

#define NTHREADS 2
static churn churns[NTHREADS + 1];
static pthread_barrier_t go;
static atomic_int finished;

static void *churn_thread(void *arg)
{
    pthread_barrier_wait(&go); /* the filter is in place */
    churn_run(arg);
    atomic_fetch_add(&finished, 1);
    for (;;)
        pause(); /* never exit: thread teardown may unmap; _exit ends us */
    return NULL;
}

static int finish(int nthreads, uint64_t purged_before, uint64_t madv_before)
{
    int traps = atomic_load(&trap_count);
    long bad = 0, fails = 0;
    for (int i = 0; i <= nthreads; i++) {
        bad += churns[i].n_bad;
        fails += churns[i].n_fail;
    }
    /* From here on output may use the heap; the count above is final. */
    for (int i = 0; i <= nthreads; i++)
        churn_report(i == 0 ? "main" : "thread", &churns[i]);
    print_traps();
    int rc = 0;
#ifdef DROPIN_GMALLOC
    anr_core_stats s;
    gmalloc_get_stats(&s);
    say("  engine: map calls %llu, pages purged during the run %llu, madvise calls %llu\n",
        (unsigned long long)s.map_calls, (unsigned long long)(s.pages_purged - purged_before),
        (unsigned long long)(s.madvise_calls - madv_before));
    if (s.map_calls != 1) {
        say("  FAIL: the engine counts %llu map calls (1 expected: init)\n",
            (unsigned long long)s.map_calls);
        rc = 4;
    }
    if (s.pages_purged == purged_before) {
        say("  FAIL: no page was handed back: the purge path was not exercised\n");
        rc = 5;
    }
#else
    (void)purged_before;
    (void)madv_before;
#endif
    if (fails) {
        say("  FAIL: %ld allocations failed\n", fails);
        rc = 6;
    }
    if (bad)
        rc = 2;
    if (traps)
        rc = 1;
    return rc;
}

static void engine_counters(uint64_t *purged, uint64_t *madv)
{
#ifdef DROPIN_GMALLOC
    anr_core_stats s;
    gmalloc_get_stats(&s);
    *purged = s.pages_purged;
    *madv = s.madvise_calls;
#else
    *purged = *madv = 0;
#endif
}

static int child_churn(int nthreads, long ops)
{
    free(malloc(1)); /* init */
    pthread_t t[NTHREADS];
    pthread_barrier_init(&go, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < nthreads; i++) {
        churns[i + 1].seed = 100 + (uint64_t)i;
        churns[i + 1].ops = ops;
        if (pthread_create(&t[i], NULL, churn_thread, &churns[i + 1]) != 0)
            return 13;
    }
    uint64_t purged, madv;
    engine_counters(&purged, &madv);
    install_filter();
    if (nthreads)
        pthread_barrier_wait(&go);
    churns[0].seed = 7;
    churns[0].ops = ops;
    churn_run(&churns[0]);
    while (atomic_load(&finished) < nthreads)
        sched_yield();
    return finish(nthreads, purged, madv);
}

/* Direct calls after the filter are caught; madvise is not. */
static int child_control(void)
{
    size_t pg = dr_page();
    char *mine = aligned_alloc(pg, 4 * pg);
    if (!mine)
        return 13;
    memset(mine, 1, 4 * pg);
    install_filter();
    int rc = 0;
    errno = 0;
    void *m = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED || errno != EPERM) {
        say("  mmap after the filter: %p errno %d (want MAP_FAILED, EPERM)\n", m, errno);
        rc = 20;
    }
    if (atomic_load(&trap_count) != 1) {
        say("  mmap was not counted\n");
        rc = 21;
    }
    errno = 0;
    if (munmap(mine + 3 * pg, pg) != -1 || errno != EPERM)
        rc = 22;
    if (mprotect(mine, pg, PROT_READ) != -1 || errno != EPERM)
        rc = 23;
    if (mremap(mine, pg, 2 * pg, MREMAP_MAYMOVE) != MAP_FAILED)
        rc = 24;
#ifdef SYS_brk
    syscall(SYS_brk, 0);
#endif
    int expect = 4;
#ifdef SYS_brk
    expect++;
#endif
    if (madvise(mine, pg, MADV_NORMAL) != 0) {
        say("  madvise was blocked: errno %d\n", errno);
        rc = 25;
    }
    mine[0] = 2; /* still writable: mprotect did not happen */
    int traps = atomic_load(&trap_count);
    print_traps();
    if (traps != expect) {
        say("  %d calls trapped, %d expected\n", traps, expect);
        rc = 26;
    }
    return rc;
}

/* ----------------------------------------------------------------- parent */

static int run_case(int (*fn)(int, long), int nthreads, long ops)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(120); /* a hang (e.g. a deadlock) ends as SIGALRM */
        _exit(fn(nthreads, ops));
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st))
        fail_msg("child killed by signal %d", WTERMSIG(st));
    return WEXITSTATUS(st);
}

static int control_adapter(int nthreads, long ops)
{
    (void)nthreads;
    (void)ops;
    return child_control();
}

static void test_control_caught(void **state)
{
    (void)state;
    assert_int_equal(run_case(control_adapter, 0, 0), 0);
}

static void expect_clean(int rc)
{
    switch (rc) {
    case 0:
        return;
    case 1:
        fail_msg("the allocator made map syscalls after init (listed above)");
        break;
    case 2:
        fail_msg("data corrupted (listed above)");
        break;
    default:
        fail_msg("child failed with code %d (see above)", rc);
        break;
    }
}

static void test_churn_single_thread(void **state)
{
    (void)state;
    expect_clean(run_case(child_churn, 0, 1200000));
}

static void test_churn_threads(void **state)
{
    (void)state;
    expect_clean(run_case(child_churn, NTHREADS, 400000));
}

int main(int argc, char **argv)
{
    /* For measuring: the churn alone, in this process, without the filter. */
    if (argc > 1 && !strcmp(argv[1], "--churn-only")) {
        no_filter = true;
        return child_churn(argc > 2 ? atoi(argv[2]) : 0, argc > 3 ? atol(argv[3]) : 1000000);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_control_caught),
        cmocka_unit_test(test_churn_single_thread),
        cmocka_unit_test(test_churn_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

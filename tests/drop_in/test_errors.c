/* Bad pointers, the limit and configuration errors, seen from outside.
 *
 * Every case runs in a child: fork() + execve() of this binary with
 * "--child <case>" and the environment in execve's envp, so that gmalloc reads
 * it at its first initialisation. The parent checks how the child ended and
 * what it wrote to stderr (a pipe). The child reports its own findings and
 * pointers on stdout (a second pipe), so stderr holds only gmalloc's words.
 *
 * Only meaningful with libgmalloc.so: the glibc build skips every case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dropin.h"

extern char **environ;

/* ------------------------------------------------------------------ child */

static void child_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void child_say(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 1)
        n = (int)sizeof(buf) - 1;
    if (n > 0 && write(1, buf, (size_t)n) < 0)
        _exit(5);
}

#define CHK(cond)                                                                        \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            child_say("child check failed at line %d: %s (errno %d)\n", __LINE__, #cond, \
                      errno);                                                            \
            _exit(3);                                                                    \
        }                                                                                \
    } while (0)

/* The heap still works and hands out distinct, intact objects: after an
 * ignored double free, a corrupted free list would hand one block out twice. */
static void child_heap_sane(size_t size)
{
    enum { N = 300 };
    static unsigned char *p[N];
    static size_t sz[N];
    for (int i = 0; i < N; i++) {
        sz[i] = i % 3 == 0 ? size : (size_t)(16 + i * 37 % 3000);
        p[i] = malloc(sz[i]);
        CHK(p[i] != NULL);
        dr_fill(p[i], sz[i], (uint64_t)i);
    }
    for (int i = 0; i < N; i++) {
        CHK(dr_check(p[i], sz[i], (uint64_t)i) == SIZE_MAX);
        for (int j = 0; j < i; j++)
            CHK(p[i] != p[j]);
    }
    for (int i = 0; i < N; i++)
        free(p[i]);
}

static void child_report_ptr(const void *p) { child_say("PTR %lx\n", (unsigned long)(uintptr_t)p); }

static void child_double_free(size_t size)
{
    unsigned char *p = malloc(size);
    CHK(p != NULL);
    memset(p, 0x5c, size);
    child_report_ptr(p);
    void *again = dr_launder(p);
    free(p);
    free(again);
    child_heap_sane(size);
}

static void child_interior_free(size_t size, size_t offset)
{
    unsigned char *p = malloc(size);
    CHK(p != NULL);
    memset(p, 0x5c, size);
    child_report_ptr(p + offset);
    free(dr_launder(p + offset));
    /* Ignored: the object itself is untouched and still freeable. */
    for (size_t i = 0; i < size; i++)
        CHK(p[i] == 0x5c);
    free(p);
    child_heap_sane(size);
}

static void child_interior_realloc(size_t size, size_t offset)
{
    unsigned char *p = malloc(size);
    CHK(p != NULL);
    memset(p, 0x5c, size);
    child_report_ptr(p + offset);
    void *q = realloc(dr_launder(p + offset), size * 2);
    CHK(q == NULL);
    for (size_t i = 0; i < size; i++)
        CHK(p[i] == 0x5c);
    free(p);
    child_heap_sane(size);
}

static void child_foreign_free(void)
{
    static char not_heap[256];
    char on_stack[64];
    memset(on_stack, 1, sizeof(on_stack));
    free(dr_launder(not_heap));
    free(dr_launder(not_heap + 16));
    free(dr_launder(on_stack));
    child_heap_sane(100);
}

#ifdef DROPIN_GMALLOC
static anr_core_stats child_stats(void)
{
    anr_core_stats s;
    CHK(gmalloc_get_stats(&s) == 0);
    return s;
}
#endif

/* GMALLOC_LIMIT=32M */
static void child_limit_null(void)
{
#ifdef DROPIN_GMALLOC
    CHK(child_stats().limit == 32 * MiB);
#endif
    errno = 0;
    CHK(malloc(dr_opaque(64 * MiB)) == NULL);
    CHK(errno == ENOMEM);
    errno = 0;
    CHK(calloc(1, dr_opaque(64 * MiB)) == NULL);
    CHK(errno == ENOMEM);
    void *al = NULL;
    CHK(posix_memalign(&al, 4096, dr_opaque(64 * MiB)) == ENOMEM);

    /* Smaller allocations still work, and a failed realloc keeps the block. */
    char *q = malloc(100);
    CHK(q != NULL);
    memset(q, 7, 100);
    errno = 0;
    CHK(realloc(dr_launder(q), dr_opaque(64 * MiB)) == NULL);
    CHK(errno == ENOMEM);
    for (int i = 0; i < 100; i++)
        CHK(q[i] == 7);
    char *m = malloc(8 * MiB);
    CHK(m != NULL);
    memset(m, 1, 8 * MiB);
    free(m);
    free(q);
    child_heap_sane(64);

    /* Fill up to the limit with 1 MiB blocks. */
    enum { N = 64 };
    static char *b[N];
    int n = 0;
    errno = 0;
    while (n < N && (b[n] = malloc(MiB)) != NULL) {
        memset(b[n], 2, MiB);
        n++;
    }
    CHK(errno == ENOMEM);
    child_say("1 MiB blocks under a 32 MiB limit: %d\n", n);
    CHK(n >= 28 && n <= 32);
    /* Room comes back with frees. */
    free(b[--n]);
    char *half = malloc(512 * KiB);
    CHK(half != NULL);
    free(half);
    while (n > 0)
        free(b[--n]);
    char *big = malloc(24 * MiB);
    CHK(big != NULL);
    memset(big, 3, 24 * MiB);
    free(big);
#ifdef DROPIN_GMALLOC
    /* The limit moves at run time. */
    gmalloc_set_limit(0);
    CHK(child_stats().limit == 0);
    big = malloc(64 * MiB);
    CHK(big != NULL);
    free(big);
    gmalloc_set_limit(16 * MiB);
    CHK(malloc(dr_opaque(32 * MiB)) == NULL);
#endif
}

/* GMALLOC_LIMIT=32M GMALLOC_ON_LIMIT=abort */
static void child_limit_abort(void)
{
    void *small = malloc(1000);
    CHK(small != NULL);
    void *p = malloc(dr_opaque(64 * MiB));
    child_say("malloc(64 MiB) returned %p\n", p);
}

static void child_expect_limit(const char *arg)
{
    size_t want = strtoull(arg, NULL, 10);
#ifdef DROPIN_GMALLOC
    CHK(child_stats().limit == want);
#else
    (void)want;
#endif
    child_heap_sane(1000);
    if (want == 0) {
        char *big = malloc(64 * MiB);
        CHK(big != NULL);
        memset(big, 1, 64 * MiB);
        free(big);
    }
}

static int child_main(int argc, char **argv)
{
    const char *c = argv[2];
    if (!strcmp(c, "double_free_small"))
        child_double_free(32);
    else if (!strcmp(c, "double_free_large"))
        child_double_free(MiB);
    else if (!strcmp(c, "double_free_run")) /* a page run the run bins keep */
        child_double_free(32 * KiB);
    else if (!strcmp(c, "interior_free_small"))
        child_interior_free(100, 16);
    else if (!strcmp(c, "interior_free_large"))
        child_interior_free(MiB, 4096);
    else if (!strcmp(c, "interior_realloc_small"))
        child_interior_realloc(100, 16);
    else if (!strcmp(c, "interior_realloc_large"))
        child_interior_realloc(MiB, 8192);
    else if (!strcmp(c, "foreign_free"))
        child_foreign_free();
    else if (!strcmp(c, "limit_null"))
        child_limit_null();
    else if (!strcmp(c, "limit_abort"))
        child_limit_abort();
    else if (!strcmp(c, "expect_limit") && argc > 3)
        child_expect_limit(argv[3]);
    else {
        child_say("unknown case %s\n", c);
        return 2;
    }
    return 0;
}

/* ----------------------------------------------------------------- parent */

typedef struct outcome {
    int status;
    char err[16384]; /* the child's stderr */
    size_t errlen;
    char out[16384]; /* the child's stdout */
    size_t outlen;
} outcome;

static outcome result; /* one at a time; too big for the stack of a test */

static void drain(int fd, char *buf, size_t *len, size_t cap, bool *open)
{
    char tmp[4096];
    ssize_t n = read(fd, tmp, sizeof(tmp));
    if (n < 0 && errno == EINTR)
        return;
    if (n <= 0) {
        *open = false;
        return;
    }
    size_t take = (size_t)n;
    if (take > cap - 1 - *len)
        take = cap - 1 - *len;
    memcpy(buf + *len, tmp, take);
    *len += take;
    buf[*len] = '\0';
}

/* Runs `--child <name> [arg]` with the parent's environment minus GMALLOC_*,
 * plus GMALLOC_CONF=/dev/null (unless env sets it) and `env` (NULL-ended). */
static outcome *run_child(const char *name, const char *arg, const char *const *env)
{
    outcome *r = &result;
    memset(r, 0, sizeof(*r));
    size_t n = 0;
    while (environ[n])
        n++;
    size_t n_extra = 0;
    while (env && env[n_extra])
        n_extra++;
    char **envp = calloc(n + n_extra + 2, sizeof(char *));
    assert_non_null(envp);
    size_t k = 0;
    bool has_conf = false;
    for (size_t i = 0; i < n_extra; i++) {
        envp[k++] = (char *)env[i];
        has_conf |= strncmp(env[i], "GMALLOC_CONF=", 13) == 0;
    }
    if (!has_conf)
        envp[k++] = "GMALLOC_CONF=/dev/null";
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "GMALLOC_", 8) != 0)
            envp[k++] = environ[i];
    envp[k] = NULL;

    char *argv[] = {"test_errors", "--child", (char *)name, (char *)arg, NULL};
    int errp[2], outp[2];
    assert_int_equal(pipe(errp), 0);
    assert_int_equal(pipe(outp), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(errp[1], 2);
        dup2(outp[1], 1);
        close(errp[0]);
        close(errp[1]);
        close(outp[0]);
        close(outp[1]);
        alarm(120); /* a hang shows as SIGALRM, not as a stuck test */
        execve("/proc/self/exe", argv, envp);
        _exit(127);
    }
    close(errp[1]);
    close(outp[1]);
    bool eopen = true, oopen = true;
    while (eopen || oopen) {
        struct pollfd pf[2] = {{.fd = errp[0], .events = POLLIN}, {.fd = outp[0], .events = POLLIN}};
        if (poll(pf, 2, -1) < 0) {
            assert_int_equal(errno, EINTR);
            continue;
        }
        if (eopen && (pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            drain(errp[0], r->err, &r->errlen, sizeof(r->err), &eopen);
        if (oopen && (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
            drain(outp[0], r->out, &r->outlen, sizeof(r->out), &oopen);
    }
    close(errp[0]);
    close(outp[0]);
    assert_int_equal(waitpid(pid, &r->status, 0), pid);
    free(envp);
    print_message("[child %s%s%s] %s", name, arg ? " " : "", arg ? arg : "",
                  WIFEXITED(r->status) ? "exit " : "signal ");
    print_message("%d\n", WIFEXITED(r->status) ? WEXITSTATUS(r->status) : WTERMSIG(r->status));
    if (r->outlen)
        print_message("  stdout: %s", r->out);
    if (r->errlen)
        print_message("  stderr: %s", r->err);
    return r;
}

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return true;
    return false;
}

static unsigned count_lines(const char *s)
{
    unsigned n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* The pointer the child reported ("PTR <hex>") appears in its stderr. */
static void assert_names_ptr(const outcome *r)
{
    const char *p = strstr(r->out, "PTR ");
    assert_non_null(p);
    char hex[32];
    size_t n = 0;
    for (p += 4; isxdigit((unsigned char)*p) && n + 1 < sizeof(hex); p++)
        hex[n++] = *p;
    hex[n] = '\0';
    assert_true(n > 0);
    if (!contains_ci(r->err, hex))
        fail_msg("stderr does not name the pointer %s", hex);
}

static void assert_aborted(const outcome *r)
{
    if (!WIFSIGNALED(r->status) || WTERMSIG(r->status) != SIGABRT)
        fail_msg("child did not die of SIGABRT (status 0x%x)", r->status);
}

static void assert_exit0(const outcome *r)
{
    if (!WIFEXITED(r->status) || WEXITSTATUS(r->status) != 0)
        fail_msg("child did not exit 0 (status 0x%x)", r->status);
}

/* Mentions a byte count as a decimal number or as "<n>M" / "<n> MiB" / "<n>.0 MiB". */
static bool mentions_size(const char *text, size_t bytes)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "%zu", bytes);
    if (strstr(text, pat))
        return true;
    if (bytes % MiB == 0) {
        const char *forms[] = {"%zuM", "%zu M", "%zu.0M", "%zu.0 M"};
        for (size_t i = 0; i < 4; i++) {
            snprintf(pat, sizeof(pat), forms[i], bytes / MiB);
            if (contains_ci(text, pat))
                return true;
        }
    }
    return false;
}

#define NEED_GMALLOC() \
    do {               \
        if (!DR_GMALLOC) \
            skip();    \
    } while (0)

static void double_free_aborts(const char *name)
{
    outcome *r = run_child(name, NULL, NULL);
    assert_aborted(r);
    assert_true(contains_ci(r->err, "free"));
    assert_true(contains_ci(r->err, "double"));
    assert_names_ptr(r);
}

static void test_double_free_small_aborts(void **state)
{
    (void)state;
    NEED_GMALLOC();
    double_free_aborts("double_free_small");
}

static void test_double_free_large_aborts(void **state)
{
    (void)state;
    NEED_GMALLOC();
    double_free_aborts("double_free_large");
}

static void test_double_free_run_aborts(void **state)
{
    (void)state;
    NEED_GMALLOC();
    double_free_aborts("double_free_run");
}

static void test_double_free_ignored(void **state)
{
    (void)state;
    NEED_GMALLOC();
    const char *env[] = {"GMALLOC_ON_ERROR=ignore", NULL};
    const char *cases[] = {"double_free_small", "double_free_large", "double_free_run"};
    for (int i = 0; i < 3; i++) {
        outcome *r = run_child(cases[i], NULL, env);
        assert_exit0(r);
        assert_int_equal(r->errlen, 0); /* ignore: not even a message */
    }
}

static void test_double_free_reported(void **state)
{
    (void)state;
    NEED_GMALLOC();
    const char *env[] = {"GMALLOC_ON_ERROR=report", NULL};
    const char *cases[] = {"double_free_small", "double_free_large", "double_free_run"};
    for (int i = 0; i < 3; i++) {
        outcome *r = run_child(cases[i], NULL, env);
        assert_exit0(r);
        assert_true(contains_ci(r->err, "double"));
        assert_names_ptr(r);
    }
}

static void test_interior_free_aborts(void **state)
{
    (void)state;
    NEED_GMALLOC();
    const char *cases[] = {"interior_free_small", "interior_free_large"};
    for (int i = 0; i < 2; i++) {
        outcome *r = run_child(cases[i], NULL, NULL);
        assert_aborted(r);
        assert_true(contains_ci(r->err, "free"));
        assert_true(contains_ci(r->err, "not"));
        assert_true(contains_ci(r->err, "live object"));
        assert_names_ptr(r);
    }
}

static void test_interior_realloc_aborts(void **state)
{
    (void)state;
    NEED_GMALLOC();
    const char *cases[] = {"interior_realloc_small", "interior_realloc_large"};
    for (int i = 0; i < 2; i++) {
        outcome *r = run_child(cases[i], NULL, NULL);
        assert_aborted(r);
        assert_true(contains_ci(r->err, "realloc"));
        assert_names_ptr(r);
    }
}

/* With ON_ERROR=ignore the interior pointers are left alone and the heap goes on. */
static void test_interior_ignored(void **state)
{
    (void)state;
    NEED_GMALLOC();
    const char *env[] = {"GMALLOC_ON_ERROR=ignore", NULL};
    const char *cases[] = {"interior_free_small", "interior_free_large", "interior_realloc_small",
                           "interior_realloc_large"};
    for (int i = 0; i < 4; i++) {
        outcome *r = run_child(cases[i], NULL, env);
        assert_exit0(r);
        assert_int_equal(r->errlen, 0);
    }
}

static void test_foreign_free_ignored(void **state)
{
    (void)state;
    NEED_GMALLOC();
    outcome *r = run_child("foreign_free", NULL, NULL);
    assert_exit0(r);
    assert_int_equal(r->errlen, 0);
}

static void test_limit_null(void **state)
{
    (void)state;
    NEED_GMALLOC();
    const char *env[] = {"GMALLOC_LIMIT=32M", NULL};
    outcome *r = run_child("limit_null", NULL, env);
    assert_exit0(r);
    assert_int_equal(r->errlen, 0);
}

static void test_limit_abort(void **state)
{
    (void)state;
    NEED_GMALLOC();
    const char *env[] = {"GMALLOC_LIMIT=32M", "GMALLOC_ON_LIMIT=abort", NULL};
    outcome *r = run_child("limit_abort", NULL, env);
    assert_aborted(r);
    assert_int_equal(count_lines(r->err), 1);
    assert_true(r->errlen > 0 && r->err[r->errlen - 1] == '\n');
    if (!mentions_size(r->err, 64 * MiB))
        fail_msg("the message does not name the request size (64 MiB)");
    if (!mentions_size(r->err, 32 * MiB))
        fail_msg("the message does not name the limit (32 MiB)");
}

/* Writes `text` to a temporary file; returns its path (static buffer). */
static const char *temp_conf(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/dropin-gmalloc-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* The one message names the file and (right after it, or as "line N") the line. */
static void assert_one_conf_message(const outcome *r, const char *path, unsigned line)
{
    assert_int_equal(count_lines(r->err), 1);
    const char *at = strstr(r->err, path);
    if (!at)
        fail_msg("the message does not name %s", path);
    char a[32], b[32];
    snprintf(a, sizeof(a), ":%u", line);
    snprintf(b, sizeof(b), "line %u", line);
    const char *after = at + strlen(path);
    if (strncmp(after, a, strlen(a)) != 0 && !contains_ci(r->err, b))
        fail_msg("the message does not name line %u", line);
}

static void conf_case(const char *text, unsigned bad_line, const char *expect_limit)
{
    const char *path = temp_conf(text);
    char conf[128];
    snprintf(conf, sizeof(conf), "GMALLOC_CONF=%s", path);
    const char *env[] = {conf, NULL};
    outcome *r = run_child("expect_limit", expect_limit, env);
    unlink(path);
    assert_exit0(r);
    assert_one_conf_message(r, path, bad_line);
}

/* An unknown key on line 3: reported once; the lines around it still apply. */
static void test_conf_unknown_key(void **state)
{
    (void)state;
    NEED_GMALLOC();
    conf_case("# drop-in test\nPAGE_CEILING 2048\nNO_SUCH_KEY 12\nLIMIT 256M\n", 3, "268435456");
}

/* A bad value on line 2: reported once; the default (no limit) stays. */
static void test_conf_bad_value(void **state)
{
    (void)state;
    NEED_GMALLOC();
    conf_case("ON_LIMIT null\nLIMIT banana\n\n# end\n", 2, "0");
}

static void test_env_garbage(void **state)
{
    (void)state;
    NEED_GMALLOC();
    const char *env[] = {"GMALLOC_LIMIT=garbage", NULL};
    outcome *r = run_child("expect_limit", "0", env);
    assert_exit0(r);
    assert_int_equal(count_lines(r->err), 1);
    assert_true(contains_ci(r->err, "LIMIT"));
    assert_true(contains_ci(r->err, "garbage"));
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "--child"))
        return child_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_double_free_small_aborts),
        cmocka_unit_test(test_double_free_large_aborts),
        cmocka_unit_test(test_double_free_run_aborts),
        cmocka_unit_test(test_double_free_ignored),
        cmocka_unit_test(test_double_free_reported),
        cmocka_unit_test(test_interior_free_aborts),
        cmocka_unit_test(test_interior_realloc_aborts),
        cmocka_unit_test(test_interior_ignored),
        cmocka_unit_test(test_foreign_free_ignored),
        cmocka_unit_test(test_limit_null),
        cmocka_unit_test(test_limit_abort),
        cmocka_unit_test(test_conf_unknown_key),
        cmocka_unit_test(test_conf_bad_value),
        cmocka_unit_test(test_env_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

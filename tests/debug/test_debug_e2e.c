/* End to end: a real program (leaky.c) under LD_PRELOAD=libgmalloc.so with
 * GMALLOC_DEBUG=stacks,guards,fdr and GMALLOC_DEBUG_SOCKET=1. anrctl takes a
 * snapshot, then `anrctl PID diff` must name the leaking function and not the
 * balanced one; malformed and oversized requests and a peer of another uid
 * are refused, and the program runs on undisturbed.
 * Arguments: leaky, anrctl, libgmalloc.so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <sys/stat.h>

#include "dsock_client.h"

static const char *leaky, *anrctl, *libgmalloc;
static char dir[64], sock[128];
static pid_t pid;
static char out[1 << 20];

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs anrctl PID ARGS; its stdout+stderr in out; returns its exit status. */
static int run_anrctl(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' %d %s 2>&1", anrctl, (int)pid, args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

static bool alive(void)
{
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

static int start_leaky(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/anr-e2e-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    pid = fork();
    if (pid == 0) {
        char e1[256], e2[128];
        snprintf(e1, sizeof(e1), "LD_PRELOAD=%s", libgmalloc);
        snprintf(e2, sizeof(e2), "XDG_RUNTIME_DIR=%s", dir);
        char *envp[] = {e1,
                        e2,
                        "GMALLOC_DEBUG=stacks,guards,fdr",
                        "GMALLOC_DEBUG_SOCKET=1",
                        "PATH=/usr/bin:/bin",
                        NULL};
        char *argv[] = {(char *)leaky, NULL};
        execve(leaky, argv, envp);
        _exit(127);
    }
    snprintf(sock, sizeof(sock), "%s/anr-%d.sock", dir, (int)pid);
    /* Wait for the socket (generous bound; not a timing threshold). */
    struct stat st;
    for (int i = 0; i < 600 && stat(sock, &st) != 0; i++) {
        if (!alive()) return -1;
        nap_ms(50);
    }
    return stat(sock, &st) == 0 ? 0 : -1;
}

static int stop_leaky(void **state)
{
    (void)state;
    if (pid > 0) {
        kill(pid, SIGTERM);
        int st;
        waitpid(pid, &st, 0);
    }
    unlink(sock);
    rmdir(dir);
    return 0;
}

static void test_socket_file(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(stat(sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_diff_finds_the_leak(void **state)
{
    (void)state;
    assert_int_equal(run_anrctl("snapshot"), 0);
    assert_non_null(strstr(out, "live: "));
    assert_non_null(strstr(out, "leaky_grow"));
    /* Wait until the leak shows (generous bound); then judge the output.
     * A diff taken while balanced_churn() holds its 16 blocks shows them
     * (they are live at that instant), so the leak must show in a diff
     * where the balanced stack does not: it always grows, the other never
     * stays. */
    bool found = false;
    for (int i = 0; i < 300 && !found; i++) {
        nap_ms(100);
        assert_int_equal(run_anrctl("diff"), 0);
        found = strstr(out, "leaky_grow") != NULL && strstr(out, "balanced_churn") == NULL;
    }
    print_message("%s", out);
    assert_true(found);
    assert_non_null(strstr(out, "grew"));
    assert_non_null(strstr(out, "leaky.c:")); /* file:line from the debug info */
    assert_true(alive());
}

static void test_other_requests(void **state)
{
    (void)state;
    assert_int_equal(run_anrctl("stats"), 0);
    assert_non_null(strstr(out, "heap gmalloc:"));
    assert_non_null(strstr(out, "objects_in_use"));
    assert_int_equal(run_anrctl("fdr 20"), 0);
    assert_non_null(strstr(out, "balanced_churn")); /* recent operations: the churn */
    assert_int_equal(run_anrctl("verify"), 0);
    assert_non_null(strstr(out, "heap gmalloc: ok"));
    assert_int_equal(run_anrctl("leaks"), 0);
    assert_non_null(strstr(out, "no GC markers"));
    assert_int_equal(run_anrctl("bogus"), 1);
    assert_non_null(strstr(out, "unknown request"));
}

static void test_refusals_leave_it_running(void **state)
{
    (void)state;
    char reply[4096];
    const char *bad[] = {"snapshot please\n", "\x7f\x45LF\n", "diff\ndiff\n", "leaks"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_true(ds_request(sock, bad[i], strlen(bad[i]), reply, sizeof(reply), NULL) > 0);
        assert_true(strncmp(reply, "error: ", 7) == 0);
    }
    static char big[1 << 16];
    memset(big, 'x', sizeof(big));
    assert_true(ds_request(sock, big, sizeof(big), reply, sizeof(reply), NULL) > 0);
    assert_string_equal(reply, "error: request too long (at most 255 bytes)\n");

    /* nobody: kept out by the file mode; with CAP_DAC_OVERRIDE, by SO_PEERCRED. */
    char want[32];
    snprintf(want, sizeof(want), "E%d", EACCES);
    assert_int_equal(ds_as_nobody(sock, false, reply, sizeof(reply)), 0);
    assert_string_equal(reply, want);
    assert_int_equal(ds_as_nobody(sock, true, reply, sizeof(reply)), 0);
    assert_string_equal(reply, "error: permission denied (peer uid 65534)\n");

    /* Undisturbed: still running, still answering, heap sound. */
    assert_true(alive());
    assert_int_equal(run_anrctl("verify"), 0);
    assert_non_null(strstr(out, "heap gmalloc: ok"));
    assert_int_equal(run_anrctl("stats"), 0);
    assert_non_null(strstr(out, "bad_pointers         0"));
}

static void test_exit_removes_socket(void **state)
{
    (void)state;
    kill(pid, SIGTERM);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    pid = -1;
    struct stat sb;
    assert_int_not_equal(stat(sock, &sb), 0);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s LEAKY ANRCTL LIBGMALLOC\n", argv[0]);
        return 2;
    }
    leaky = argv[1];
    anrctl = argv[2];
    libgmalloc = argv[3];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_socket_file),
        cmocka_unit_test(test_diff_finds_the_leak),
        cmocka_unit_test(test_other_requests),
        cmocka_unit_test(test_refusals_leave_it_running),
        cmocka_unit_test(test_exit_removes_socket),
    };
    return cmocka_run_group_tests(tests, start_leaky, stop_leaky);
}

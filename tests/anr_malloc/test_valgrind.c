/* memcheck sees every block of an anr_malloc heap: a use after free, a leak
 * and an overrun into a guard are caught in vg_victim, and a program that
 * exercises the whole API (debug kit on) runs clean.
 * argv[1]: valgrind, argv[2]: vg_victim. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *valgrind, *victim;

/* Runs the victim under memcheck; returns its exit status, log in buf. */
static int run(const char *mode, char *buf, size_t cap)
{
    char logpath[] = "/tmp/anr_vg_logXXXXXX";
    int fd = mkstemp(logpath);
    assert_true(fd >= 0);
    char logarg[64];
    snprintf(logarg, sizeof(logarg), "--log-fd=%d", fd);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execl(valgrind, valgrind, "--error-exitcode=99", "--leak-check=full",
              "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite", logarg,
              victim, mode, (char *)NULL);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    ssize_t n = pread(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
    unlink(logpath);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static char logbuf[1 << 16];

static void test_clean_run(void **state)
{
    (void)state;
    int rc = run("clean", logbuf, sizeof(logbuf));
    if (rc != 0)
        fprintf(stderr, "%s\n", logbuf);
    assert_int_equal(rc, 0);
    assert_null(strstr(logbuf, "Invalid"));
    assert_null(strstr(logbuf, "uninitialised"));
    assert_non_null(strstr(logbuf, "ERROR SUMMARY: 0 errors"));
}

static void test_use_after_free(void **state)
{
    (void)state;
    assert_int_equal(run("uaf", logbuf, sizeof(logbuf)), 99);
    assert_non_null(strstr(logbuf, "Invalid read of size 1"));
    assert_non_null(strstr(logbuf, "5 bytes inside a block of size 32 free'd"));
    assert_non_null(strstr(logbuf, "Block was alloc'd at"));
    assert_non_null(strstr(logbuf, "anr_heap_malloc"));
}

static void test_leak(void **state)
{
    (void)state;
    assert_int_equal(run("leak", logbuf, sizeof(logbuf)), 99);
    assert_non_null(strstr(logbuf, "48 bytes in 1 blocks are definitely lost"));
    assert_non_null(strstr(logbuf, "anr_heap_malloc"));
    assert_non_null(strstr(logbuf, "leak_here"));
}

static void test_overrun_into_guard(void **state)
{
    (void)state;
    assert_int_equal(run("overrun", logbuf, sizeof(logbuf)), 99);
    assert_non_null(strstr(logbuf, "Invalid write of size 1"));
    assert_non_null(strstr(logbuf, "0 bytes after a block of size 40 alloc'd"));
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s VALGRIND VICTIM\n", argv[0]);
        return 2;
    }
    valgrind = argv[1];
    victim = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_run),
        cmocka_unit_test(test_use_after_free),
        cmocka_unit_test(test_leak),
        cmocka_unit_test(test_overrun_into_guard),
    };
    return cmocka_run_group_tests_name("anr_malloc_valgrind", tests, NULL, NULL);
}

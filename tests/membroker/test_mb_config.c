/* membrokerd's configuration parser (membroker/config.c): every key, good
 * and bad values, errors with their line numbers, pool arithmetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "membroker.h"

#define MAX_REPORTS 16

typedef struct recorder {
    unsigned n;
    char file[MAX_REPORTS][128];
    unsigned line[MAX_REPORTS];
    char msg[MAX_REPORTS][512];
} recorder;

static void record(void *ctx, const char *file, unsigned line, const char *msg)
{
    recorder *r = ctx;
    if (r->n < MAX_REPORTS) {
        snprintf(r->file[r->n], sizeof r->file[0], "%s", file);
        r->line[r->n] = line;
        snprintf(r->msg[r->n], sizeof r->msg[0], "%s", msg);
    }
    r->n++;
}

static unsigned parse(mb_config *cfg, const char *text, recorder *r)
{
    memset(r, 0, sizeof *r);
    _mb_config_defaults(cfg);
    return _mb_config_parse(cfg, text, strlen(text), "test.conf", record, r);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static void test_defaults(void **state)
{
    (void)state;
    mb_config c;
    _mb_config_defaults(&c);
    assert_int_equal(c.pool.mode, MB_POOL_PERCENT);
    assert_int_equal(c.pool.value, 80);
    assert_string_equal(c.socket, MB_DEFAULT_SOCKET);
    assert_int_equal(c.mode, 0660);
    assert_string_equal(c.group, "");
    assert_int_equal(c.request_timeout_ms, 50);
    assert_int_equal(c.giveback_timeout_ms, 200);
    assert_int_equal(c.reserve_max_ms, 60000);
    assert_int_equal(c.max_clients, 256);
    assert_int_equal(c.log_level, 6);
}

static void test_every_key(void **state)
{
    (void)state;
    mb_config c;
    recorder r;
    const char *text = "# a comment\n"
                       "\n"
                       "POOL 512M\n"
                       "socket /run/test.sock   # trailing comment\n"
                       "  SOCKET_OWNER root\n"
                       "\tSOCKET_GROUP membroker\r\n"
                       "SOCKET_MODE 0640\n"
                       "REQUEST_TIMEOUT 25\n"
                       "GIVEBACK_TIMEOUT 500\n"
                       "RESERVE_MAX_TIMEOUT 10000\n"
                       "MAX_CLIENTS 1024\n"
                       "LOG_LEVEL debug"; /* no final newline */
    assert_int_equal(parse(&c, text, &r), 0);
    assert_int_equal(c.pool.mode, MB_POOL_BYTES);
    assert_int_equal(c.pool.value, UINT64_C(512) << 20);
    assert_string_equal(c.socket, "/run/test.sock");
    assert_string_equal(c.owner, "root");
    assert_string_equal(c.group, "membroker");
    assert_int_equal(c.mode, 0640);
    assert_int_equal(c.request_timeout_ms, 25);
    assert_int_equal(c.giveback_timeout_ms, 500);
    assert_int_equal(c.reserve_max_ms, 10000);
    assert_int_equal(c.max_clients, 1024);
    assert_int_equal(c.log_level, 7);
}

static void test_pool_forms(void **state)
{
    (void)state;
    mb_pool_spec p;
    const char *why;
    assert_true(_mb_parse_pool("75%", &p, &why));
    assert_int_equal(p.mode, MB_POOL_PERCENT);
    assert_int_equal(p.value, 75);
    assert_true(_mb_parse_pool("all-except 256M", &p, &why));
    assert_int_equal(p.mode, MB_POOL_ALL_EXCEPT);
    assert_int_equal(p.value, UINT64_C(256) << 20);
    assert_true(_mb_parse_pool("ALL-EXCEPT\t1G", &p, &why));
    assert_int_equal(p.value, UINT64_C(1) << 30);
    assert_true(_mb_parse_pool("8G", &p, &why)); /* more than 4 GiB on 32-bit too */
    assert_int_equal(p.value, UINT64_C(8) << 30);
    const char *bad[] = {"0%",
                         "101%",
                         "%",
                         "12.5%",
                         "all-except",
                         "all-except x",
                         "all-exceptional 1M",
                         "0",
                         "-5M",
                         "banana",
                         "5Q",
                         "1.5G",
                         ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        if (_mb_parse_pool(bad[i], &p, &why)) fail_msg("POOL \"%s\" accepted", bad[i]);
        assert_non_null(why);
    }
}

static void test_sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(_mb_parse_size("4096", &v));
    assert_int_equal(v, 4096);
    assert_true(_mb_parse_size("64k", &v));
    assert_int_equal(v, 65536);
    assert_true(_mb_parse_size("1MiB", &v));
    assert_int_equal(v, 1 << 20);
    assert_true(_mb_parse_size("2GB", &v));
    assert_int_equal(v, UINT64_C(2) << 30);
    assert_true(_mb_parse_size("3T", &v));
    assert_int_equal(v, UINT64_C(3) << 40);
    assert_true(_mb_parse_size("100B", &v));
    assert_int_equal(v, 100);
    assert_false(_mb_parse_size("", &v));
    assert_false(_mb_parse_size("K", &v));
    assert_false(_mb_parse_size("1Mi", &v));
    assert_false(_mb_parse_size("1 M", &v));
    assert_false(_mb_parse_size("18446744073709551616", &v)); /* 2^64 */
    assert_false(_mb_parse_size("16777216T", &v));            /* 2^64 bytes */
}

static void test_pool_pages(void **state)
{
    (void)state;
    const char *why = NULL;
    uint64_t gib = UINT64_C(1) << 30;
    mb_pool_spec p = {MB_POOL_BYTES, 10 * 4096 + 100};
    assert_int_equal(_mb_pool_pages(&p, 0, 4096, &why), 10); /* no MemTotal needed */
    p = (mb_pool_spec){MB_POOL_PERCENT, 50};
    assert_int_equal(_mb_pool_pages(&p, 4 * gib, 4096, &why), 2 * gib / 4096);
    assert_int_equal(_mb_pool_pages(&p, 0, 4096, &why), 0);
    assert_contains(why, "MemTotal");
    p = (mb_pool_spec){MB_POOL_ALL_EXCEPT, gib};
    assert_int_equal(_mb_pool_pages(&p, 4 * gib, 4096, &why), 3 * gib / 4096);
    assert_int_equal(_mb_pool_pages(&p, gib, 4096, &why), 0);
    assert_contains(why, "nothing");
    p = (mb_pool_spec){MB_POOL_BYTES, 100};
    assert_int_equal(_mb_pool_pages(&p, gib, 4096, &why), 0);
    assert_contains(why, "page");
    p = (mb_pool_spec){MB_POOL_PERCENT, 100};
    uint64_t big = UINT64_C(1) << 62; /* no overflow in the percentage */
    assert_int_equal(_mb_pool_pages(&p, big, UINT64_C(1) << 20, &why), UINT64_C(1) << 42);
    assert_true(_mb_mem_total() > 0);
}

/* Each bad line is reported with its number; the others still parse. */
static void test_bad_lines_with_numbers(void **state)
{
    (void)state;
    mb_config c;
    recorder r;
    const char *text = "POOL 1G\n"                 /* 1 ok */
                       "POOL\n"                    /* 2 missing value */
                       "FROBNICATE 3\n"            /* 3 unknown key */
                       "SOCKET relative.sock\n"    /* 4 */
                       "SOCKET_MODE 0999\n"        /* 5 not octal */
                       "REQUEST_TIMEOUT -1\n"      /* 6 */
                       "GIVEBACK_TIMEOUT 0\n"      /* 7 below 1 */
                       "MAX_CLIENTS 0\n"           /* 8 */
                       "MAX_CLIENTS 99999999999\n" /* 9 */
                       "LOG_LEVEL loud\n"          /* 10 */
                       "RESERVE_MAX_TIMEOUT 1e3\n" /* 11 */
                       "SOCKET_GROUP a b\n"        /* 12 */
                       "POOL 110%\n"               /* 13 */
                       "MAX_CLIENTS 12\n";         /* 14 ok */
    assert_int_equal(parse(&c, text, &r), 12);
    unsigned want[] = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
    for (unsigned i = 0; i < 12; i++) {
        assert_int_equal(r.line[i], want[i]);
        assert_string_equal(r.file[i], "test.conf");
    }
    assert_contains(r.msg[0], "POOL");
    assert_contains(r.msg[0], "missing");
    assert_contains(r.msg[1], "FROBNICATE");
    assert_contains(r.msg[1], "unknown key");
    assert_contains(r.msg[3], "0999");
    assert_contains(r.msg[8], "loud");
    assert_contains(r.msg[11], "110%");
    assert_int_equal(c.max_clients, 12); /* good lines after bad ones still count */
}

static void test_long_line_and_nul(void **state)
{
    (void)state;
    mb_config c;
    recorder r;
    char text[2000];
    memset(text, 'x', 1000);
    memcpy(text, "SOCKET /", 8);
    strcpy(text + 1000, "\nPOOL 1M\n");
    assert_int_equal(parse(&c, text, &r), 1);
    assert_int_equal(r.line[0], 1);
    assert_contains(r.msg[0], "too long");
    const char with_nul[] = "POOL 1M\nPO\0OL 2M\n";
    memset(&r, 0, sizeof r);
    _mb_config_defaults(&c);
    assert_int_equal(_mb_config_parse(&c, with_nul, sizeof with_nul - 1, "nul.conf", record, &r),
                     1);
    assert_int_equal(r.line[0], 2);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/mbconfXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "POOL all-except 64M\nMAX_CLIENTS 3\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    mb_config c;
    recorder r = {0};
    _mb_config_defaults(&c);
    assert_int_equal(_mb_config_load(&c, path, record, &r), 0);
    assert_int_equal(c.pool.mode, MB_POOL_ALL_EXCEPT);
    assert_int_equal(c.max_clients, 3);
    unlink(path);
    assert_int_equal(_mb_config_load(&c, path, record, &r), 1);
    assert_int_equal(r.line[0], 0);
    assert_contains(r.msg[0], "cannot open");
}

static void test_set_from_command_line(void **state)
{
    (void)state;
    mb_config c;
    _mb_config_defaults(&c);
    const char *why = NULL;
    assert_true(_mb_config_set(&c, "pool", "1M", &why));
    assert_true(_mb_config_set(&c, "Max_Clients", "8", &why));
    assert_int_equal(c.max_clients, 8);
    assert_false(_mb_config_set(&c, "POOL", "", &why));
    assert_contains(why, "missing");
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    assert_false(_mb_config_set(&c, "SOCKET", longpath, &why));
    assert_contains(why, "too long");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_pool_forms),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_pool_pages),
        cmocka_unit_test(test_bad_lines_with_numbers),
        cmocka_unit_test(test_long_line_and_nul),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_set_from_command_line),
    };
    return cmocka_run_group_tests_name("membroker_config", tests, NULL, NULL);
}

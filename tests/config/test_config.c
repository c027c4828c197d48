/* Unit tests for gmalloc/config.c (the .conf parser and GMALLOC_* variables)
 * and gmalloc/outbuf.c (the no-allocation message writer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "outbuf.h"
#include "anr_malloc.h" /* ANR_DEBUG_* */

/* ---- a report callback that records what it is told ---- */

#define MAX_REPORTS 16

typedef struct report {
    char file[64];
    unsigned line;
    char msg[512];
} report;

typedef struct recorder {
    unsigned n;
    report r[MAX_REPORTS];
} recorder;

static void record(void *ctx, const char *file, unsigned line, const char *msg)
{
    recorder *rec = ctx;
    assert_non_null(file);
    assert_non_null(msg);
    if (rec->n < MAX_REPORTS) {
        report *r = &rec->r[rec->n];
        snprintf(r->file, sizeof r->file, "%s", file);
        r->line = line;
        snprintf(r->msg, sizeof r->msg, "%s", msg);
    }
    rec->n++;
}

static unsigned parse(gm_config *cfg, const char *text, recorder *rec)
{
    memset(rec, 0, sizeof *rec);
    return gm_config_parse(cfg, text, strlen(text), "test.conf", record, rec);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle)) fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static void assert_defaults(const gm_config *cfg)
{
    gm_config d;
    gm_config_defaults(&d);
    assert_memory_equal(cfg, &d, sizeof d);
}

/* ---- defaults and good values ---- */

static void test_defaults(void **state)
{
    (void)state;
    gm_config cfg;
    memset(&cfg, 0xa5, sizeof cfg);
    gm_config_defaults(&cfg);
    assert_int_equal(cfg.mapping, 0);
    assert_int_equal(cfg.limit, 0);
    assert_int_equal(cfg.page_ceiling, 0);
    assert_int_equal(cfg.page_floor, 0);
    assert_int_equal(cfg.n_slab_sizes, 0);
    assert_int_equal(cfg.on_limit, GM_ON_LIMIT_NULL);
    assert_int_equal(cfg.on_error, GM_ON_ERROR_ABORT);
    assert_int_equal(cfg.purge_advice, ANR_PURGE_DONTNEED);
    assert_false(cfg.stats);

    /* An empty file and an empty environment change nothing. */
    recorder rec;
    assert_int_equal(parse(&cfg, "", &rec), 0);
    char *envp[] = {NULL};
    assert_int_equal(gm_config_apply_env(&cfg, envp, record, &rec), 0);
    assert_int_equal(gm_config_apply_env(&cfg, NULL, record, &rec), 0);
    assert_int_equal(rec.n, 0);
    assert_defaults(&cfg);
}

static void test_every_key(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    const char *text = "MAPPING 1G\n"
                       "LIMIT 64M\n"
                       "PAGE_CEILING 2048\n"
                       "PAGE_FLOOR 100\n"
                       "SLAB_SIZES 16 32 48 64 96 128\n"
                       "ON_LIMIT abort\n"
                       "ON_ERROR report\n"
                       "PURGE free\n"
                       "STATS 1\n";
    assert_int_equal(parse(&cfg, text, &rec), 0);
    assert_int_equal(rec.n, 0);
    assert_int_equal(cfg.mapping, (size_t)1 << 30);
    assert_int_equal(cfg.limit, (size_t)64 << 20);
    assert_int_equal(cfg.page_ceiling, 2048);
    assert_int_equal(cfg.page_floor, 100);
    assert_int_equal(cfg.n_slab_sizes, 6);
    const uint32_t want[] = {16, 32, 48, 64, 96, 128};
    assert_memory_equal(cfg.slab_sizes, want, sizeof want);
    assert_int_equal(cfg.on_limit, GM_ON_LIMIT_ABORT);
    assert_int_equal(cfg.on_error, GM_ON_ERROR_REPORT);
    assert_int_equal(cfg.purge_advice, ANR_PURGE_FREE);
    assert_true(cfg.stats);

    /* The other spellings, and back to the defaults. */
    text = "LIMIT none\nON_LIMIT null\nON_ERROR ignore\nPURGE dontneed\nSTATS off\n";
    assert_int_equal(parse(&cfg, text, &rec), 0);
    assert_int_equal(cfg.limit, 0);
    assert_int_equal(cfg.on_limit, GM_ON_LIMIT_NULL);
    assert_int_equal(cfg.on_error, GM_ON_ERROR_IGNORE);
    assert_int_equal(cfg.purge_advice, ANR_PURGE_DONTNEED);
    assert_false(cfg.stats);
    assert_int_equal(parse(&cfg, "ON_ERROR abort\nLIMIT 5K\nLIMIT 0\n", &rec), 0);
    assert_int_equal(cfg.on_error, GM_ON_ERROR_ABORT);
    assert_int_equal(cfg.limit, 0);
}

/* The purge timing keys: DECAY_MS and REUSE_MS. */
static void test_purge_timing_keys(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    assert_int_equal(cfg.decay_ms, 0);
    assert_int_equal(cfg.reuse_ms, 1000);
    recorder rec;
    assert_int_equal(parse(&cfg, "DECAY_MS 250\nREUSE_MS 100\n", &rec), 0);
    assert_int_equal(rec.n, 0);
    assert_int_equal(cfg.decay_ms, 250);
    assert_int_equal(cfg.reuse_ms, 100);
    assert_int_equal(parse(&cfg, "DECAY_MS never\nREUSE_MS off\n", &rec), 0);
    assert_int_equal(cfg.decay_ms, UINT32_MAX);
    assert_int_equal(cfg.reuse_ms, 0);
    /* Bad values are reported with their line and change nothing. */
    assert_int_equal(parse(&cfg, "REUSE_MS 50\nREUSE_MS soon\nDECAY_MS 0\nREUSE_MS 5000000000\n",
                           &rec),
                     3);
    assert_int_equal(rec.n, 3);
    assert_int_equal(cfg.reuse_ms, 50);
    assert_int_equal(cfg.decay_ms, UINT32_MAX);
}

/* The thread-cache keys: sizes with suffixes, 0 = the engine's default. */
static void test_thread_cache_keys(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    assert_int_equal(cfg.tcache_run_bytes, 0);
    recorder rec;
    assert_int_equal(parse(&cfg,
                           "THREAD_CACHE off\nTHREAD_CACHE_MAX_SIZE 8K\n"
                           "THREAD_CACHE_BYTES 512K\nTHREAD_CACHE_RUN_BYTES 4M\n",
                           &rec),
                     0);
    assert_int_equal(rec.n, 0);
    assert_false(cfg.thread_cache);
    assert_int_equal(cfg.tcache_max_size, 8192);
    assert_int_equal(cfg.tcache_max_bytes, 512 << 10);
    assert_int_equal(cfg.tcache_run_bytes, 4 << 20);
    /* A bad value is reported with its line and changes nothing. */
    assert_int_equal(parse(&cfg, "THREAD_CACHE_RUN_BYTES lots\nTHREAD_CACHE_RUN_BYTES 1\n", &rec),
                     1);
    assert_int_equal(rec.n, 1);
    assert_int_equal(cfg.tcache_run_bytes, 1);
}

/* DEBUG (the debug kit's words) and DEBUG_SOCKET. */
static void test_debug_keys(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    assert_int_equal(cfg.debug, 0);
    assert_false(cfg.debug_socket);
    recorder rec;
    assert_int_equal(parse(&cfg, "DEBUG stacks=8, guards fdr=100,trash\nDEBUG_SOCKET on\n", &rec),
                     0);
    assert_int_equal(cfg.debug,
                     ANR_DEBUG_STACKS | ANR_DEBUG_GUARDS | ANR_DEBUG_FDR | ANR_DEBUG_TRASH_FREE);
    assert_int_equal(cfg.debug_stack_depth, 8);
    assert_int_equal(cfg.debug_fdr_entries, 100);
    assert_true(cfg.debug_socket);
    assert_int_equal(parse(&cfg, "debug all\n", &rec), 0);
    assert_int_equal(cfg.debug, ANR_DEBUG_ALL);
    assert_int_equal(cfg.debug_stack_depth, 0);
    assert_int_equal(parse(&cfg, "DEBUG trash-alloc valgrind\nDEBUG_SOCKET 0\n", &rec), 0);
    assert_int_equal(cfg.debug, ANR_DEBUG_TRASH_ALLOC | ANR_DEBUG_VALGRIND);
    assert_false(cfg.debug_socket);
    assert_int_equal(parse(&cfg, "DEBUG all none\n", &rec), 0);
    assert_int_equal(cfg.debug, 0);

    /* Bad words: reported with the line, the previous value kept. */
    assert_int_equal(parse(&cfg, "DEBUG stacks\n", &rec), 0);
    const char *bad[] = {"DEBUG stacks,frob\n", "DEBUG stacks=0\n", "DEBUG stacks=65\n",
                         "DEBUG guards=3\n",    "DEBUG fdr=x\n",     "DEBUG\n",
                         "DEBUG_SOCKET maybe\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse(&cfg, bad[i], &rec), 1);
        assert_int_equal(rec.n, 1);
        assert_int_equal(rec.r[0].line, 1);
        assert_int_equal(cfg.debug, ANR_DEBUG_STACKS);
        assert_false(cfg.debug_socket);
    }
    assert_contains(rec.r[0].msg, "DEBUG_SOCKET");
    assert_int_equal(parse(&cfg, "DEBUG stacks,frob\n", &rec), 1);
    assert_contains(rec.r[0].msg, "frob");

    /* The environment: GMALLOC_DEBUG and GMALLOC_DEBUG_SOCKET. */
    char *envp[] = {"GMALLOC_DEBUG=stacks,guards,fdr", "GMALLOC_DEBUG_SOCKET=1", NULL};
    memset(&rec, 0, sizeof rec);
    assert_int_equal(gm_config_apply_env(&cfg, envp, record, &rec), 0);
    assert_int_equal(cfg.debug, ANR_DEBUG_STACKS | ANR_DEBUG_GUARDS | ANR_DEBUG_FDR);
    assert_true(cfg.debug_socket);
}

static void test_stats_spellings(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        bool want;
    } cases[] = {{"1", true},   {"0", false},   {"yes", true},  {"no", false},
                 {"on", true},  {"off", false}, {"true", true}, {"false", false},
                 {"YES", true}, {"Off", false}, {"TrUe", true}, {"FALSE", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gm_config cfg;
        gm_config_defaults(&cfg);
        cfg.stats = !cases[i].want;
        const char *why = NULL;
        assert_true(gm_config_set(&cfg, "STATS", 5, cases[i].v, strlen(cases[i].v), &why));
        assert_int_equal(cfg.stats, cases[i].want);
    }
    static const char *const bad[] = {"2", "y", "enable", "01", "-1", "truex"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gm_config cfg;
        gm_config_defaults(&cfg);
        const char *why = NULL;
        assert_false(gm_config_set(&cfg, "STATS", 5, bad[i], strlen(bad[i]), &why));
        assert_non_null(why);
        assert_false(cfg.stats);
    }
}

static void test_keys_case_insensitive(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    const char *text = "limit 2m\nOn_Limit ABORT\nslab_sizes 16 32\npurge FREE\nStats Yes\n"
                       "page_ceiling 10\nPage_Floor 2\nmapping 1g\nLIMIT NONE\n";
    assert_int_equal(parse(&cfg, text, &rec), 0);
    assert_int_equal(rec.n, 0);
    assert_int_equal(cfg.limit, 0); /* the later LIMIT line wins */
    assert_int_equal(cfg.on_limit, GM_ON_LIMIT_ABORT);
    assert_int_equal(cfg.n_slab_sizes, 2);
    assert_int_equal(cfg.purge_advice, ANR_PURGE_FREE);
    assert_true(cfg.stats);
    assert_int_equal(cfg.page_ceiling, 10);
    assert_int_equal(cfg.page_floor, 2);
    assert_int_equal(cfg.mapping, (size_t)1 << 30);
}

/* ---- sizes ---- */

static void test_size_suffixes(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t want;
    } cases[] = {
        {"0", 0},
        {"1", 1},
        {"4096", 4096},
        {"007", 7},
        {"1K", 1024},
        {"1k", 1024},
        {"3KB", 3072},
        {"3kib", 3072},
        {"3KiB", 3072},
        {"64M", 64u << 20},
        {"64mb", 64u << 20},
        {"64MiB", 64u << 20},
        {"2G", 2ull << 30},
        {"2GiB", 2ull << 30},
        {"100B", 100},
        {"100b", 100},
        {"4095M", 4095ull << 20},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t out = 12345;
        if (!gm_parse_size(cases[i].s, strlen(cases[i].s), &out))
            fail_msg("\"%s\" was refused", cases[i].s);
        assert_int_equal(out, cases[i].want);
    }
    /* Only `len` bytes are looked at. */
    size_t out = 0;
    assert_true(gm_parse_size("12Kjunk", 3, &out));
    assert_int_equal(out, 12 << 10);
    if (SIZE_MAX > UINT32_MAX) {
        assert_true(gm_parse_size("3T", 2, &out));
        assert_int_equal(out, 3ull << 40);
        assert_true(gm_parse_size("16777215T", 9, &out));
        assert_int_equal(out, 16777215ull << 40);
    }
}

static void test_size_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",     " ",   "K",     "KB",  "-1",   "+1",  "1.5M", "1 K", " 1", "1 ", "1X",  "1KK",
        "1KBB", "1iB", "1KiBB", "1Ki", "0x10", "1e6", "64M#", "abc", "1P", "1E", "1,0", "1\0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t out = 777;
        size_t len = strlen(bad[i]);
        if (i == sizeof bad / sizeof bad[0] - 1) len = 2; /* "1\0": an embedded NUL is junk */
        if (gm_parse_size(bad[i], len, &out)) fail_msg("\"%s\" was accepted as %zu", bad[i], out);
        assert_int_equal(out, 777);
    }
    size_t out = 0;
    assert_false(gm_parse_size(NULL, 0, &out));
}

static void test_size_overflow(void **state)
{
    (void)state;
    char buf[64];
    size_t out = 1;

    /* SIZE_MAX itself is fine, one more is not, on either width. */
    snprintf(buf, sizeof buf, "%zu", (size_t)SIZE_MAX);
    assert_true(gm_parse_size(buf, strlen(buf), &out));
    assert_true(out == SIZE_MAX);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)SIZE_MAX + 1ull);
    if ((unsigned long long)SIZE_MAX + 1ull != 0) /* 32-bit size_t */
        assert_false(gm_parse_size(buf, strlen(buf), &out));

    /* Overflows 64 bits in the digits, and in the shift. */
    static const char *const over[] = {
        "18446744073709551616",             /* 2^64 */
        "18446744073709551615K",            /* UINT64_MAX KiB */
        "99999999999999999999999999999999", /* far past 2^64 */
        "16777216T",                        /* 2^64 exactly */
        "17179869184G",                     /* 2^64 exactly */
        "999999999999999999999T",
    };
    for (size_t i = 0; i < sizeof over / sizeof over[0]; i++) {
        out = 5;
        if (gm_parse_size(over[i], strlen(over[i]), &out)) fail_msg("\"%s\" was accepted", over[i]);
        assert_int_equal(out, 5);
    }
    if (SIZE_MAX == UINT32_MAX) {
        assert_false(gm_parse_size("4G", 2, &out));
        assert_false(gm_parse_size("4294967296", 10, &out));
        assert_true(gm_parse_size("4095M", 5, &out));
    } else {
        assert_true(gm_parse_size("4G", 2, &out));
        assert_int_equal(out, 4ull << 30);
    }

    /* Through the parser: reported, value kept, the limit named. */
    gm_config cfg;
    gm_config_defaults(&cfg);
    cfg.limit = 4096;
    recorder rec;
    assert_int_equal(parse(&cfg, "LIMIT 99999999999999999999T\n", &rec), 1);
    assert_int_equal(rec.n, 1);
    assert_int_equal(cfg.limit, 4096);
    assert_contains(rec.r[0].msg, "LIMIT");
    assert_contains(rec.r[0].msg, "99999999999999999999T");
    snprintf(buf, sizeof buf, "max %zu", (size_t)SIZE_MAX);
    assert_contains(rec.r[0].msg, buf);
}

static void test_page_counts(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    /* Counts are plain decimal: no suffix, no sign. */
    const char *text = "PAGE_CEILING 1K\nPAGE_CEILING -5\nPAGE_FLOOR 1.5\n"
                       "PAGE_CEILING 99999999999999999999999\nPAGE_CEILING 4096\n";
    assert_int_equal(parse(&cfg, text, &rec), 4);
    assert_int_equal(rec.n, 4);
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(rec.r[i].line, i + 1);
    assert_contains(rec.r[0].msg, "PAGE_CEILING \"1K\"");
    assert_contains(rec.r[2].msg, "PAGE_FLOOR \"1.5\"");
    assert_int_equal(cfg.page_ceiling, 4096);
    assert_int_equal(cfg.page_floor, 0);
}

/* ---- SLAB_SIZES ---- */

static void test_slab_sizes_good(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;

    assert_int_equal(parse(&cfg, "SLAB_SIZES 16 1K 2KiB 32768\n", &rec), 0);
    const uint32_t want[] = {16, 1024, 2048, 32768};
    assert_int_equal(cfg.n_slab_sizes, 4);
    assert_memory_equal(cfg.slab_sizes, want, sizeof want);

    /* Commas work as separators too (handy in the environment). */
    assert_int_equal(parse(&cfg, "SLAB_SIZES 32,64, 128 ,\t256\n", &rec), 0);
    const uint32_t want2[] = {32, 64, 128, 256};
    assert_int_equal(cfg.n_slab_sizes, 4);
    assert_memory_equal(cfg.slab_sizes, want2, sizeof want2);

    /* Exactly ANR_MAX_CLASSES entries is allowed. */
    char line[1024];
    gm_outbuf o;
    gm_out_init(&o, line, sizeof line);
    gm_out_str(&o, "SLAB_SIZES");
    for (unsigned i = 1; i <= ANR_MAX_CLASSES; i++) {
        gm_out_str(&o, " ");
        gm_out_u64(&o, 16 * i);
    }
    gm_out_str(&o, "\n");
    assert_true(o.len < sizeof line - 1);
    assert_int_equal(parse(&cfg, line, &rec), 0);
    assert_int_equal(cfg.n_slab_sizes, ANR_MAX_CLASSES);
    assert_int_equal(cfg.slab_sizes[0], 16);
    assert_int_equal(cfg.slab_sizes[ANR_MAX_CLASSES - 1], 16 * ANR_MAX_CLASSES);
}

static void test_slab_sizes_bad(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *needle; /* part of the message */
    } cases[] = {
        {"SLAB_SIZES 16 64 32", "increasing"},
        {"SLAB_SIZES 16 32 32", "previous 32"},
        {"SLAB_SIZES 16 40 64", "at \"40\""},
        {"SLAB_SIZES 8", "multiple of 16"},
        {"SLAB_SIZES 0 16", "multiple of 16"},
        {"SLAB_SIZES 16 32784", "max 32768"},
        {"SLAB_SIZES 16 64K", "max 32768"},
        {"SLAB_SIZES", "missing value"},
        {"SLAB_SIZES   # nothing", "missing value"},
        {"SLAB_SIZES , ,", "missing value"},
        {"SLAB_SIZES 16 abc 64", "not a size"},
        {"SLAB_SIZES 16 -32", "not a size"},
        {"SLAB_SIZES 16 99999999999999999999999", "too large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gm_config cfg;
        gm_config_defaults(&cfg);
        recorder rec;
        assert_int_equal(parse(&cfg, "SLAB_SIZES 16 48 96\n", &rec), 0);
        char text[256];
        snprintf(text, sizeof text, "# old list above\n%s\nLIMIT 1M\n", cases[i].line);
        assert_int_equal(parse(&cfg, text, &rec), 1);
        assert_int_equal(rec.n, 1);
        assert_int_equal(rec.r[0].line, 2);
        assert_string_equal(rec.r[0].file, "test.conf");
        assert_contains(rec.r[0].msg, "SLAB_SIZES");
        assert_contains(rec.r[0].msg, cases[i].needle);
        /* The previous classes survive; the next line still applies. */
        const uint32_t old[] = {16, 48, 96};
        assert_int_equal(cfg.n_slab_sizes, 3);
        assert_memory_equal(cfg.slab_sizes, old, sizeof old);
        assert_int_equal(cfg.limit, 1 << 20);
    }
}

static void test_slab_sizes_one_bad(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    /* A value that is the one bad element is not quoted a second time. */
    assert_int_equal(parse(&cfg, "SLAB_SIZES 8\n", &rec), 1);
    assert_string_equal(rec.r[0].msg, "SLAB_SIZES \"8\": not a positive multiple of 16; "
                                      "keeping the previous value");
    assert_int_equal(cfg.n_slab_sizes, 0);
}

static void test_slab_sizes_too_many(void **state)
{
    (void)state;
    char line[1024];
    gm_outbuf o;
    gm_out_init(&o, line, sizeof line);
    gm_out_str(&o, "SLAB_SIZES");
    for (unsigned i = 1; i <= ANR_MAX_CLASSES + 1; i++) {
        gm_out_str(&o, " ");
        gm_out_u64(&o, 16 * i);
    }
    assert_true(o.len < sizeof line - 1);

    gm_config cfg, before;
    gm_config_defaults(&cfg);
    memcpy(&before, &cfg, sizeof cfg);
    recorder rec;
    assert_int_equal(parse(&cfg, line, &rec), 1);
    assert_int_equal(rec.n, 1);
    assert_int_equal(rec.r[0].line, 1);
    assert_contains(rec.r[0].msg, "too many");
    assert_contains(rec.r[0].msg, "max entries 64");
    assert_memory_equal(&cfg, &before, sizeof cfg);
}

/* ---- malformed files ---- */

static void test_malformed_lines(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    const char *text = "# a comment\n"          /* 1 */
                       "\n"                     /* 2 */
                       "   \t  \n"              /* 3 */
                       "BOGUS 12\n"             /* 4: unknown key */
                       "LIMIT\n"                /* 5: missing value */
                       "LIMIT 64M junk\n"       /* 6: junk after the value */
                       "ON_LIMIT sometimes\n"   /* 7: bad value */
                       "  # indented comment\n" /* 8 */
                       "MAPPING 12Q\n"          /* 9: bad size */
                       "STATS  # no value\n"    /* 10: missing value */
                       "PURGE free free";       /* 11: junk, no newline at EOF */
    assert_int_equal(parse(&cfg, text, &rec), 7);
    assert_int_equal(rec.n, 7);
    static const struct {
        unsigned line;
        const char *a, *b;
    } want[] = {
        {4, "unknown key BOGUS", "\"12\""},
        {5, "LIMIT", "missing value"},
        {6, "LIMIT \"64M junk\"", "at \"junk\""},
        {7, "ON_LIMIT \"sometimes\"", "null or abort"},
        {9, "MAPPING \"12Q\"", "not a size"},
        {10, "STATS", "missing value"},
        {11, "PURGE \"free free\"", "unexpected text"},
    };
    for (unsigned i = 0; i < 7; i++) {
        assert_string_equal(rec.r[i].file, "test.conf");
        assert_int_equal(rec.r[i].line, want[i].line);
        assert_contains(rec.r[i].msg, want[i].a);
        assert_contains(rec.r[i].msg, want[i].b);
    }
    assert_defaults(&cfg);
}

static void test_previous_value_kept(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    const char *text = "LIMIT 1M\nLIMIT lots\nON_ERROR report\nON_ERROR never\n";
    assert_int_equal(parse(&cfg, text, &rec), 2);
    assert_int_equal(rec.r[0].line, 2);
    assert_int_equal(rec.r[1].line, 4);
    assert_int_equal(cfg.limit, 1 << 20);
    assert_int_equal(cfg.on_error, GM_ON_ERROR_REPORT);
    assert_contains(rec.r[1].msg, "keeping the previous value");
}

static void test_comments_and_blanks(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    const char *text = "#LIMIT 1M\n"
                       "LIMIT 2M# right after the value\n"
                       "\tMAPPING\t 8M \t# tabs and spaces\n"
                       "# STATS 1\n"
                       "#\n"
                       "ON_LIMIT abort#\n"
                       "SLAB_SIZES 16 32 # 48 64\n"
                       "\n\n\n";
    assert_int_equal(parse(&cfg, text, &rec), 0);
    assert_int_equal(rec.n, 0);
    assert_int_equal(cfg.limit, 2 << 20);
    assert_int_equal(cfg.mapping, 8 << 20);
    assert_false(cfg.stats);
    assert_int_equal(cfg.on_limit, GM_ON_LIMIT_ABORT);
    assert_int_equal(cfg.n_slab_sizes, 2);
}

static void test_crlf(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    const char *text = "# windows\r\nLIMIT 3M\r\n\r\nSTATS yes\r\nNOPE 1\r\nPURGE free\r";
    assert_int_equal(parse(&cfg, text, &rec), 1);
    assert_int_equal(rec.n, 1);
    assert_int_equal(rec.r[0].line, 5);
    assert_contains(rec.r[0].msg, "NOPE");
    /* The CR never leaks into the message. */
    assert_null(strchr(rec.r[0].msg, '\r'));
    assert_int_equal(cfg.limit, 3 << 20);
    assert_true(cfg.stats);
    assert_int_equal(cfg.purge_advice, ANR_PURGE_FREE);
}

static void test_no_newline_at_eof(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    assert_int_equal(parse(&cfg, "STATS 1\nLIMIT 7K", &rec), 0);
    assert_int_equal(cfg.limit, 7 << 10);
    assert_int_equal(parse(&cfg, "STATS 1\nLIMIT 7Z", &rec), 1);
    assert_int_equal(rec.r[0].line, 2);
    /* Only `len` bytes count: the text need not be NUL-terminated. */
    const char text[] = {'L', 'I', 'M', 'I', 'T', ' ', '9', 'K', 'X'};
    memset(&rec, 0, sizeof rec);
    assert_int_equal(gm_config_parse(&cfg, text, 8, "t", record, &rec), 0);
    assert_int_equal(cfg.limit, 9 << 10);
    assert_int_equal(gm_config_parse(&cfg, NULL, 0, "t", record, &rec), 0);
}

static void test_long_line(void **state)
{
    (void)state;
    const size_t n = 200000;
    char *text = malloc(n + 64);
    assert_non_null(text);
    /* A bad line far longer than any buffer, then a good one. */
    memcpy(text, "LIMIT ", 6);
    memset(text + 6, '7', n);
    memcpy(text + 6 + n, "\nSTATS 1\n", 10);

    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    memset(&rec, 0, sizeof rec);
    assert_int_equal(gm_config_parse(&cfg, text, strlen(text), "big.conf", record, &rec), 1);
    assert_int_equal(rec.n, 1);
    assert_int_equal(rec.r[0].line, 1);
    assert_contains(rec.r[0].msg, "LIMIT \"777");
    assert_contains(rec.r[0].msg, "...");
    assert_contains(rec.r[0].msg, "too large");
    assert_true(strlen(rec.r[0].msg) < 384);
    assert_int_equal(cfg.limit, 0);
    assert_true(cfg.stats);

    /* A long line of blanks and a long comment are just ignored. */
    memset(text, ' ', n);
    text[n] = '\n';
    memset(text + n + 1, '#', 20);
    memcpy(text + n + 21, "\nLIMIT 1K", 10);
    assert_int_equal(gm_config_parse(&cfg, text, strlen(text), "big.conf", record, &rec), 0);
    assert_int_equal(cfg.limit, 1024);
    free(text);
}

static void test_nonprintable_escaped(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    assert_int_equal(parse(&cfg, "LIMIT 1\x1b[2J\n", &rec), 1);
    assert_null(strchr(rec.r[0].msg, '\x1b'));
    assert_contains(rec.r[0].msg, "\\x1b[2J");
}

static void test_null_report(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    const char *text = "BAD 1\nLIMIT 2M\nSTATS maybe\n";
    assert_int_equal(gm_config_parse(&cfg, text, strlen(text), NULL, NULL, NULL), 2);
    assert_int_equal(cfg.limit, 2 << 20);
    char *envp[] = {"GMALLOC_BAD=1", NULL};
    assert_int_equal(gm_config_apply_env(&cfg, envp, NULL, NULL), 1);
}

/* ---- gm_config_set ---- */

static void test_set_api(void **state)
{
    (void)state;
    gm_config cfg, before;
    gm_config_defaults(&cfg);
    const char *why = NULL;

    assert_true(gm_config_set(&cfg, "limit", 5, " 12M ", 5, &why));
    assert_int_equal(cfg.limit, 12 << 20);
    /* Lengths are honoured: "LIMITX" cut to "LIMIT". */
    assert_true(gm_config_set(&cfg, "LIMITX", 5, "1K2", 2, &why));
    assert_int_equal(cfg.limit, 1024);

    memcpy(&before, &cfg, sizeof cfg);
    static const struct {
        const char *k, *v;
    } bad[] = {
        {"NOPE", "1"},      {"LIMIT", ""},           {"LIMIT", "1M 2M"},  {"ON_ERROR", "crash"},
        {"PURGE", "never"}, {"SLAB_SIZES", "48 32"}, {"MAPPING", "huge"}, {"", "1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        assert_false(
            gm_config_set(&cfg, bad[i].k, strlen(bad[i].k), bad[i].v, strlen(bad[i].v), &why));
        assert_non_null(why);
        assert_true(strlen(why) > 0);
        assert_memory_equal(&cfg, &before, sizeof cfg);
    }
    assert_false(gm_config_set(&cfg, "LIMIT", 5, "x", 1, NULL)); /* why may be NULL */
}

/* ---- PAGE_FLOOR vs PAGE_CEILING ---- */

static void test_floor_ceiling(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;

    /* The order of the lines does not matter: checked at the end. */
    assert_int_equal(parse(&cfg, "PAGE_FLOOR 2000\nPAGE_CEILING 4096\n", &rec), 0);
    assert_int_equal(cfg.page_ceiling, 4096);
    assert_int_equal(cfg.page_floor, 2000);
    assert_int_equal(parse(&cfg, "PAGE_FLOOR 4096\n", &rec), 0); /* equal is fine */

    /* Floor above ceiling: both go back to their values before the parse. */
    const char *text = "PAGE_CEILING 100\n# x\nPAGE_FLOOR 200\nSTATS 1\n";
    assert_int_equal(parse(&cfg, text, &rec), 1);
    assert_int_equal(rec.n, 1);
    assert_int_equal(rec.r[0].line, 3);
    assert_contains(rec.r[0].msg, "PAGE_FLOOR 200 is above PAGE_CEILING 100");
    assert_int_equal(cfg.page_ceiling, 4096);
    assert_int_equal(cfg.page_floor, 4096);
    assert_true(cfg.stats);

    /* Floor above the default ceiling (1024) when no ceiling is given. */
    gm_config_defaults(&cfg);
    assert_int_equal(parse(&cfg, "PAGE_FLOOR 1025\n", &rec), 1);
    assert_contains(rec.r[0].msg, "PAGE_CEILING 1024 (the default)");
    assert_int_equal(cfg.page_floor, 0);
    assert_int_equal(parse(&cfg, "PAGE_FLOOR 1024\n", &rec), 0);
    assert_int_equal(cfg.page_floor, 1024);

    /* The environment lowering the ceiling below the file's floor. */
    gm_config_defaults(&cfg);
    assert_int_equal(parse(&cfg, "PAGE_CEILING 4096\nPAGE_FLOOR 2000\n", &rec), 0);
    char *envp[] = {"GMALLOC_PAGE_CEILING=100", NULL};
    memset(&rec, 0, sizeof rec);
    assert_int_equal(gm_config_apply_env(&cfg, envp, record, &rec), 1);
    assert_int_equal(rec.n, 1);
    assert_int_equal(rec.r[0].line, 0);
    assert_string_equal(rec.r[0].file, "environment");
    assert_contains(rec.r[0].msg, "GMALLOC_PAGE_FLOOR 2000 is above GMALLOC_PAGE_CEILING 100");
    assert_int_equal(cfg.page_ceiling, 4096);
    assert_int_equal(cfg.page_floor, 2000);

    /* Inconsistent values set by hand are repaired (floor back to default). */
    cfg.page_ceiling = 10;
    cfg.page_floor = 20;
    assert_int_equal(parse(&cfg, "STATS 0\n", &rec), 1);
    assert_contains(rec.r[0].msg, "PAGE_FLOOR set to its default");
    assert_int_equal(cfg.page_ceiling, 10);
    assert_int_equal(cfg.page_floor, 0);
}

/* ---- environment ---- */

static void test_env(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    recorder rec;
    assert_int_equal(parse(&cfg, "LIMIT 1M\nSTATS 0\nON_ERROR report\n", &rec), 0);

    char *envp[] = {
        "PATH=/usr/bin",
        "GMALLOC_CONF=/tmp/some.conf", /* names the file: skipped */
        "GMALLOC_LIMIT=64M",           /* overrides the file */
        "GMALLOC_STATS= yes ",         /* blanks trimmed */
        "GMALLOC_SLAB_SIZES=16,32 64",
        "GMALLOC_FROB=1",            /* unknown: reported */
        "GMALLOC_PAGE_CEILING=junk", /* bad: reported, kept */
        "GMALLOC_PURGE",             /* no '=': missing value */
        "gmalloc_limit=1K",          /* not our prefix: ignored */
        "XGMALLOC_LIMIT=1K",         /* not our prefix: ignored */
        "GMALLOC_mapping=2M",        /* key part is case-insensitive */
        "GMALLOC_ON_ERROR=ignore",
        NULL,
    };
    memset(&rec, 0, sizeof rec);
    assert_int_equal(gm_config_apply_env(&cfg, envp, record, &rec), 3);
    assert_int_equal(rec.n, 3);
    for (unsigned i = 0; i < 3; i++) {
        assert_string_equal(rec.r[i].file, "environment");
        assert_int_equal(rec.r[i].line, 0);
    }
    assert_contains(rec.r[0].msg, "GMALLOC_FROB");
    assert_contains(rec.r[0].msg, "\"1\"");
    assert_contains(rec.r[1].msg, "GMALLOC_PAGE_CEILING \"junk\"");
    assert_contains(rec.r[2].msg, "GMALLOC_PURGE");
    assert_contains(rec.r[2].msg, "missing value");

    assert_int_equal(cfg.limit, 64 << 20);
    assert_true(cfg.stats);
    assert_int_equal(cfg.n_slab_sizes, 3);
    assert_int_equal(cfg.slab_sizes[2], 64);
    assert_int_equal(cfg.page_ceiling, 0);
    assert_int_equal(cfg.purge_advice, ANR_PURGE_DONTNEED);
    assert_int_equal(cfg.mapping, 2 << 20);
    assert_int_equal(cfg.on_error, GM_ON_ERROR_IGNORE);
}

static void test_env_every_key(void **state)
{
    (void)state;
    gm_config cfg;
    gm_config_defaults(&cfg);
    char *envp[] = {
        "GMALLOC_MAPPING=256M",    "GMALLOC_LIMIT=none",
        "GMALLOC_PAGE_CEILING=64", "GMALLOC_PAGE_FLOOR=8",
        "GMALLOC_SLAB_SIZES=16",   "GMALLOC_ON_LIMIT=abort",
        "GMALLOC_ON_ERROR=report", "GMALLOC_PURGE=free",
        "GMALLOC_STATS=1",         NULL,
    };
    recorder rec;
    memset(&rec, 0, sizeof rec);
    assert_int_equal(gm_config_apply_env(&cfg, envp, record, &rec), 0);
    assert_int_equal(rec.n, 0);
    assert_int_equal(cfg.mapping, 256 << 20);
    assert_int_equal(cfg.limit, 0);
    assert_int_equal(cfg.page_ceiling, 64);
    assert_int_equal(cfg.page_floor, 8);
    assert_int_equal(cfg.n_slab_sizes, 1);
    assert_int_equal(cfg.slab_sizes[0], 16);
    assert_int_equal(cfg.on_limit, GM_ON_LIMIT_ABORT);
    assert_int_equal(cfg.on_error, GM_ON_ERROR_REPORT);
    assert_int_equal(cfg.purge_advice, ANR_PURGE_FREE);
    assert_true(cfg.stats);
}

/* ---- outbuf ---- */

static void test_outbuf_basic(void **state)
{
    (void)state;
    char buf[128];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof buf);
    assert_string_equal(buf, "");
    gm_out_str(&o, "n=");
    gm_out_u64(&o, 0);
    gm_out_str(&o, " ");
    gm_out_u64(&o, 1234567890);
    gm_out_str(&o, " ");
    gm_out_u64(&o, UINT64_MAX);
    gm_out_mem(&o, " xyz", 2);
    gm_out_str(&o, " ");
    gm_out_hex(&o, 0);
    gm_out_str(&o, " ");
    gm_out_hex(&o, 0xdeadbeef);
    gm_out_str(&o, " ");
    gm_out_hex(&o, UINTPTR_MAX);
    const char *want = SIZE_MAX > UINT32_MAX
                           ? "n=0 1234567890 18446744073709551615 x 0x0 0xdeadbeef "
                             "0xffffffffffffffff"
                           : "n=0 1234567890 18446744073709551615 x 0x0 0xdeadbeef 0xffffffff";
    assert_string_equal(buf, want);
    assert_int_equal(o.len, strlen(want));
}

static void test_outbuf_size(void **state)
{
    (void)state;
    static const struct {
        uint64_t v;
        const char *want;
    } cases[] = {
        {0, "0 B"},
        {1023, "1023 B"},
        {1024, "1024 (1.0 KiB)"},
        {1536, "1536 (1.5 KiB)"},
        {123456, "123456 (120.6 KiB)"},
        {67108864, "67108864 (64.0 MiB)"},
        {1048575, "1048575 (1.0 MiB)"}, /* 1023.999 KiB rounds up a unit */
        {1048524, "1048524 (1023.9 KiB)"},
        {(3ull << 30) + (1ull << 29), "3758096384 (3.5 GiB)"},
        {1ull << 40, "1099511627776 (1.0 TiB)"},
        {UINT64_MAX, "18446744073709551615 (16.0 EiB)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        gm_outbuf o;
        gm_out_init(&o, buf, sizeof buf);
        gm_out_size(&o, cases[i].v);
        assert_string_equal(buf, cases[i].want);
    }
}

static void test_outbuf_truncation(void **state)
{
    (void)state;
    char buf[8];
    memset(buf, 'Z', sizeof buf);
    gm_outbuf o;
    gm_out_init(&o, buf, 6); /* room for 5 characters */
    gm_out_str(&o, "abc");
    gm_out_u64(&o, 123456);
    assert_string_equal(buf, "abc12");
    assert_int_equal(o.len, 5);
    gm_out_str(&o, "more");
    gm_out_hex(&o, 0xff);
    gm_out_size(&o, 1 << 20);
    assert_string_equal(buf, "abc12");
    assert_int_equal(buf[6], 'Z'); /* nothing past cap was touched */
    assert_int_equal(buf[7], 'Z');

    /* cap 1 holds just the terminator. */
    memset(buf, 'Z', sizeof buf);
    gm_out_init(&o, buf, 1);
    gm_out_str(&o, "x");
    assert_int_equal(o.len, 0);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(buf[1], 'Z');

    /* cap 0 writes nothing at all. */
    buf[0] = 'Q';
    gm_out_init(&o, buf, 0);
    gm_out_str(&o, "x");
    gm_out_u64(&o, 9);
    assert_int_equal(o.len, 0);
    assert_int_equal(buf[0], 'Q');
    gm_out_write(&o, -1);
}

static void test_outbuf_write(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char buf[64];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof buf);
    gm_out_str(&o, "hello ");
    gm_out_size(&o, 2048);
    gm_out_str(&o, "\n");
    errno = 4242;
    gm_out_write(&o, fds[1]);
    assert_int_equal(errno, 4242);
    close(fds[1]);
    char got[64] = {0};
    ssize_t n = read(fds[0], got, sizeof got - 1);
    assert_int_equal(n, strlen("hello 2048 (2.0 KiB)\n"));
    assert_string_equal(got, "hello 2048 (2.0 KiB)\n");
    close(fds[0]);

    /* A failing write gives up quietly and keeps errno. */
    errno = 77;
    gm_out_write(&o, -1);
    assert_int_equal(errno, 77);
}

/* write(2) is interposed (this definition wins over libc's for the whole
 * executable) so that EINTR and short writes can be scripted. Only the fake
 * fd is scripted; every other fd goes to the real system call. */
#define FAKE_FD 1000

static struct {
    const int *script; /* per call: < 0 fails with errno -v, else writes up to v bytes */
    size_t steps, step;
    unsigned calls;
    char got[256];
    size_t got_len;
} fake;

ssize_t write(int fd, const void *buf, size_t n)
{
    if (fd != FAKE_FD) return syscall(SYS_write, fd, buf, n);
    fake.calls++;
    int act = fake.step < fake.steps ? fake.script[fake.step++] : INT_MAX;
    if (act < 0) {
        errno = -act;
        return -1;
    }
    size_t k = (size_t)act < n ? (size_t)act : n;
    assert_true(fake.got_len + k <= sizeof fake.got);
    memcpy(fake.got + fake.got_len, buf, k);
    fake.got_len += k;
    return (ssize_t)k;
}

static void fake_start(const int *script, size_t steps)
{
    memset(&fake, 0, sizeof fake);
    fake.script = script;
    fake.steps = steps;
}

static void test_outbuf_write_interrupted(void **state)
{
    (void)state;
    char buf[64];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof buf);
    gm_out_str(&o, "hello, world: ");
    gm_out_u64(&o, 42);

    /* EINTR and short writes are retried until every byte is out. */
    static const int retry[] = {-EINTR, 1, -EINTR, -EINTR, 5, 2, INT_MAX};
    fake_start(retry, sizeof retry / sizeof retry[0]);
    errno = 31337;
    gm_out_write(&o, FAKE_FD);
    assert_int_equal(errno, 31337);
    assert_int_equal(fake.calls, 7);
    assert_int_equal(fake.got_len, o.len);
    assert_memory_equal(fake.got, "hello, world: 42", o.len);

    /* Any other error gives up, keeping what was written and errno. */
    static const int io[] = {3, -EIO, INT_MAX};
    fake_start(io, sizeof io / sizeof io[0]);
    errno = 5150;
    gm_out_write(&o, FAKE_FD);
    assert_int_equal(errno, 5150);
    assert_int_equal(fake.calls, 2);
    assert_int_equal(fake.got_len, 3);

    /* A write that makes no progress does not spin. */
    static const int stuck[] = {0, 0, 0, INT_MAX};
    fake_start(stuck, sizeof stuck / sizeof stuck[0]);
    gm_out_write(&o, FAKE_FD);
    assert_int_equal(fake.calls, 1);

    /* An empty buffer makes no call at all. */
    gm_out_init(&o, buf, sizeof buf);
    fake_start(retry, sizeof retry / sizeof retry[0]);
    gm_out_write(&o, FAKE_FD);
    assert_int_equal(fake.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_purge_timing_keys),
        cmocka_unit_test(test_thread_cache_keys),
        cmocka_unit_test(test_debug_keys),
        cmocka_unit_test(test_stats_spellings),
        cmocka_unit_test(test_keys_case_insensitive),
        cmocka_unit_test(test_size_suffixes),
        cmocka_unit_test(test_size_bad),
        cmocka_unit_test(test_size_overflow),
        cmocka_unit_test(test_page_counts),
        cmocka_unit_test(test_slab_sizes_good),
        cmocka_unit_test(test_slab_sizes_bad),
        cmocka_unit_test(test_slab_sizes_one_bad),
        cmocka_unit_test(test_slab_sizes_too_many),
        cmocka_unit_test(test_malformed_lines),
        cmocka_unit_test(test_previous_value_kept),
        cmocka_unit_test(test_comments_and_blanks),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_no_newline_at_eof),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_nonprintable_escaped),
        cmocka_unit_test(test_null_report),
        cmocka_unit_test(test_set_api),
        cmocka_unit_test(test_floor_ceiling),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_env_every_key),
        cmocka_unit_test(test_outbuf_basic),
        cmocka_unit_test(test_outbuf_size),
        cmocka_unit_test(test_outbuf_truncation),
        cmocka_unit_test(test_outbuf_write),
        cmocka_unit_test(test_outbuf_write_interrupted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

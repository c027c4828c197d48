/* The page map's dirty-page accounting and the purge hysteresis: ceiling,
 * floor, anr_core_purge, anr_core_set_page_ceiling, madvise coalescing, a
 * real RSS drop, and zeroed reuse of handed-back memory. */
#include "core_test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>

/* Pages per run in the hysteresis tests: 4, or more if 4 pages would still
 * be a slab class (slab pages are not freed object by object). */
static size_t run_pages(void)
{
    size_t n = min_large_pages();
    return n < 4 ? 4 : n;
}
#define RUN run_pages()
#define CEIL (16 * RUN)
#define FLOOR (4 * RUN)
#define NRUNS 40

/* Test options, runs uncached, with this ceiling and floor (pages). */
static void marks_options(anr_core_options *o, size_t ceiling, size_t floor)
{
    test_options(o);
    runs_uncached(o);
    o->page_ceiling = ceiling;
    o->page_floor = floor;
}

static anr_heap *heap_with_marks(void **state, size_t ceiling, size_t floor)
{
    anr_core_options o;
    marks_options(&o, ceiling, floor);
    return fx_init(state, &o);
}

/* Live pages under the runs: the ceiling in force is never above the pages
 * in use, so the tests of the ceiling itself keep more than any ceiling
 * they set (1000) in use. */
#define BALLAST 1000u

/* A ballast (BALLAST pages, never freed), NRUNS runs of RUN pages (written)
 * and a final guard page. */
static void alloc_runs(anr_heap *h, char **runs, char **guard)
{
    size_t pg = sys_page();
    assert_non_null(anr_core_alloc(h, BALLAST * pg, 0, 0));
    for (int i = 0; i < NRUNS; i++) {
        runs[i] = anr_core_alloc(h, RUN * pg, 0, 0);
        assert_non_null(runs[i]);
        memset(runs[i], 0xa5, RUN * pg);
    }
    *guard = anr_core_alloc(h, pg, 0, 0);
    assert_non_null(*guard);
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.pages_dirty, 0);
    assert_int_equal(s.pages_purged, 0);
}

/* A purge round inside malloc/free hands back at least this many pages
 * (64 in the real-time mode, 1024 with thread caches) unless it reaches the
 * floor first. */
#define MIN_ROUND 64u

/* Freeing while dirty stays <= ceiling purges nothing; the free that passes
 * the ceiling starts purging, in bounded rounds, and the frees after it go
 * on until the floor is reached; dirty never stays above the ceiling. */
static void test_hysteresis(void **state)
{
    anr_heap *h = heap_with_marks(state, CEIL, FLOOR);
    char *runs[NRUNS], *guard;
    alloc_runs(h, runs, &guard);
    int purges = 0;
    bool draining = false;
    anr_core_stats prev = stats_of(h);
    for (int i = 0; i < NRUNS; i++) {
        assert_int_equal(anr_core_free(h, runs[i]), ANR_ERR_NONE);
        anr_core_stats s = stats_of(h);
        if (s.pages_dirty > CEIL)
            fail_msg("free #%d: pages_dirty %zu above the ceiling %zu", i, s.pages_dirty, CEIL);
        if (s.pages_purged == prev.pages_purged) {
            /* no purge: the freed pages are all dirty now */
            if (draining)
                fail_msg("free #%d: no purge round though dirty (%zu) is above the floor %zu "
                         "after passing the ceiling", i, prev.pages_dirty, FLOOR);
            if (s.pages_dirty != prev.pages_dirty + RUN)
                fail_msg("free #%d of %zu pages: pages_dirty %zu -> %zu without a purge", i, RUN,
                         prev.pages_dirty, s.pages_dirty);
            assert_int_equal(s.madvise_calls, prev.madvise_calls);
        } else {
            purges++;
            if (!draining && prev.pages_dirty + RUN <= CEIL)
                fail_msg("free #%d purged though dirty went only %zu -> %zu (ceiling %zu)", i,
                         prev.pages_dirty, prev.pages_dirty + RUN, CEIL);
            size_t round = (size_t)(s.pages_purged - prev.pages_purged);
            if (s.pages_dirty > FLOOR && round < MIN_ROUND)
                fail_msg("free #%d: a round of %zu pages left %zu dirty, floor %zu", i, round,
                         s.pages_dirty, FLOOR);
            draining = s.pages_dirty > FLOOR;
            assert_true(s.madvise_calls > prev.madvise_calls);
            /* pages conserved: dirty before + freed = dirty after + purged */
            assert_int_equal(prev.pages_dirty + RUN,
                             s.pages_dirty + (size_t)(s.pages_purged - prev.pages_purged));
        }
        prev = s;
    }
    /* 40 runs freed with a ceiling of 16 runs: at least two purges */
    if (purges < 2)
        fail_msg("%d purges while freeing %zu pages, ceiling %zu", purges, NRUNS * RUN, CEIL);
    assert_verify(h);
    assert_int_equal(anr_core_free(h, guard), ANR_ERR_NONE);
}

/* Freeing less than the ceiling purges nothing; purge(all) hands back every
 * dirty page; purge(false) goes down to the floor. */
static void test_below_ceiling_and_explicit_purge(void **state)
{
    anr_heap *h = heap_with_marks(state, CEIL, FLOOR);
    char *runs[NRUNS], *guard;
    alloc_runs(h, runs, &guard);
    for (int i = 0; i < 12; i++) /* 12 runs < the ceiling of 16 */
        assert_int_equal(anr_core_free(h, runs[i]), ANR_ERR_NONE);
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.pages_dirty, 12 * RUN);
    assert_int_equal(s.pages_purged, 0);
    assert_int_equal(s.madvise_calls, 0);

    size_t got = anr_core_purge(h, false);
    anr_core_stats t = stats_of(h);
    if (t.pages_dirty > FLOOR)
        fail_msg("purge(false) left %zu dirty, floor %zu", t.pages_dirty, FLOOR);
    assert_int_equal(got, s.pages_dirty - t.pages_dirty);
    assert_int_equal(t.pages_purged, got);
    assert_true(t.madvise_calls >= 1);

    for (int i = 12; i < 20; i++)
        assert_int_equal(anr_core_free(h, runs[i]), ANR_ERR_NONE);
    s = stats_of(h);
    assert_true(s.pages_dirty > 0);
    got = anr_core_purge(h, true);
    t = stats_of(h);
    assert_int_equal(t.pages_dirty, 0);
    assert_int_equal(got, s.pages_dirty);
    assert_int_equal(t.pages_purged, s.pages_purged + got);
    /* nothing left to hand back */
    assert_int_equal(anr_core_purge(h, true), 0);
    assert_int_equal(stats_of(h).madvise_calls, t.madvise_calls);
    assert_verify(h);
    for (int i = 20; i < NRUNS; i++)
        assert_int_equal(anr_core_free(h, runs[i]), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, guard), ANR_ERR_NONE);
    assert_verify(h);
}

/* anr_core_set_page_ceiling moves both marks. */
static void test_set_page_ceiling(void **state)
{
    anr_heap *h = heap_with_marks(state, CEIL, FLOOR);
    char *runs[NRUNS], *guard;
    alloc_runs(h, runs, &guard);
    for (int i = 0; i < 10; i++) /* 10 runs dirty, below the ceiling: no purge */
        assert_int_equal(anr_core_free(h, runs[i]), ANR_ERR_NONE);
    anr_core_stats s = stats_of(h);
    assert_int_equal(s.pages_dirty, 10 * RUN);
    assert_int_equal(s.pages_purged, 0);

    /* lower: the next free (if not the call itself) must bring dirty down */
    anr_core_set_page_ceiling(h, RUN, 2);
    assert_int_equal(anr_core_free(h, runs[10]), ANR_ERR_NONE);
    s = stats_of(h);
    if (s.pages_dirty > RUN)
        fail_msg("ceiling lowered to %zu: pages_dirty still %zu", RUN, s.pages_dirty);
    assert_true(s.pages_purged > 0);

    /* raise: 20 more runs freed, no purge */
    anr_core_set_page_ceiling(h, 1000, 500);
    for (int i = 11; i < 31; i++)
        assert_int_equal(anr_core_free(h, runs[i]), ANR_ERR_NONE);
    anr_core_stats t = stats_of(h);
    assert_int_equal(t.pages_purged, s.pages_purged);
    assert_int_equal(t.pages_dirty, s.pages_dirty + 20 * RUN);
    /* below the new floor: purge(false) has nothing to do */
    assert_int_equal(anr_core_purge(h, false), 0);
    /* floor moved down: purge(false) goes to it */
    anr_core_set_page_ceiling(h, 1000, 10);
    size_t got = anr_core_purge(h, false);
    anr_core_stats u = stats_of(h);
    if (u.pages_dirty > 10) fail_msg("floor 10: purge(false) left %zu dirty", u.pages_dirty);
    assert_int_equal(got, t.pages_dirty - u.pages_dirty);
    assert_verify(h);
}

/* Purging one large freed run costs a handful of madvise calls, not one per
 * page; likewise many neighbouring runs freed one by one (coalesced). */
static void test_madvise_coalesced(void **state)
{
    size_t pg = sys_page();
    const size_t n = 512;
    anr_heap *h = heap_with_marks(state, 100000, 50000);
    char *big = anr_core_alloc(h, n * pg, 0, 0);
    assert_non_null(big);
    char *guard = anr_core_alloc(h, pg, 0, 0);
    assert_non_null(guard);
    memset(big, 0x42, n * pg);
    /* 64 neighbouring runs, freed in shuffled order */
    char *r[64];
    for (int i = 0; i < 64; i++) {
        r[i] = anr_core_alloc(h, RUN * pg, 0, 0);
        assert_non_null(r[i]);
        memset(r[i], 0x24, RUN * pg);
    }
    char *guard2 = anr_core_alloc(h, pg, 0, 0);
    assert_non_null(guard2);

    anr_core_stats s0 = stats_of(h);
    assert_int_equal(anr_core_free(h, big), ANR_ERR_NONE);
    assert_int_equal(anr_core_purge(h, true), n);
    anr_core_stats s1 = stats_of(h);
    assert_int_equal(s1.pages_purged - s0.pages_purged, n);
    uint64_t calls = s1.madvise_calls - s0.madvise_calls;
    if (calls < 1 || calls > 4)
        fail_msg("purging one free run of %zu pages took %llu madvise calls", n,
                 (unsigned long long)calls);

    uint32_t seed = 12345;
    for (int i = 63; i > 0; i--) {
        int j = (int)(rng_next(&seed) % (uint32_t)(i + 1));
        char *t = r[i];
        r[i] = r[j];
        r[j] = t;
    }
    for (int i = 0; i < 64; i++)
        assert_int_equal(anr_core_free(h, r[i]), ANR_ERR_NONE);
    assert_int_equal(anr_core_purge(h, true), 64 * RUN);
    anr_core_stats s2 = stats_of(h);
    calls = s2.madvise_calls - s1.madvise_calls;
    if (calls < 1 || calls > 4)
        fail_msg("purging 64 coalesced %zu-page runs took %llu madvise calls", RUN,
                 (unsigned long long)calls);
    assert_verify(h);

    /* the automatic purge is coalesced too */
    anr_core_set_page_ceiling(h, 64, 1); /* pages */
    s2 = stats_of(h);
    char *again = anr_core_alloc(h, n * pg, 0, 0);
    assert_non_null(again);
    memset(again, 0x99, n * pg);
    assert_int_equal(anr_core_free(h, again), ANR_ERR_NONE);
    anr_core_stats s3 = stats_of(h);
    assert_true(s3.pages_purged > s2.pages_purged);
    calls = s3.madvise_calls - s2.madvise_calls;
    if (calls < 1 || calls > 4)
        fail_msg("automatic purge of a %zu-page run took %llu madvise calls", n,
                 (unsigned long long)calls);
    assert_verify(h);
}

/* Resident set size in bytes, from smaps_rollup (or statm). 0 if unknown. */
static size_t rss_bytes(void)
{
    char buf[4096];
    int fd = open("/proc/self/smaps_rollup", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
            buf[n] = 0;
            char *r = strstr(buf, "\nRss:");
            if (r != NULL) return (size_t)strtoull(r + 5, NULL, 10) * 1024;
        }
    }
    fd = open("/proc/self/statm", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
            buf[n] = 0;
            char *end;
            strtoull(buf, &end, 10);
            return (size_t)strtoull(end, NULL, 10) * sys_page();
        }
    }
    return 0;
}

/* RSS really falls when ~64 MiB is freed and purged. */
static void test_rss_drops(void **state)
{
    anr_heap *h = fx_init_runs(state);
    enum { N = 16 };
    char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = anr_core_alloc(h, 4 * MiB, 0, 0);
        assert_non_null(p[i]);
        memset(p[i], 0x5c, 4 * MiB);
    }
    size_t before = rss_bytes();
    if (before == 0) fail_msg("cannot read this process's RSS from /proc/self");
    for (int i = 0; i < N; i++)
        assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
    anr_core_purge(h, true);
    size_t after = rss_bytes();
    assert_int_equal(stats_of(h).pages_dirty, 0);
    size_t drop = before > after ? before - after : 0;
    if (drop < 48 * MiB)
        fail_msg("RSS %zu KiB -> %zu KiB after freeing and purging 64 MiB: dropped only %zu KiB",
                 before / KiB, after / KiB, drop / KiB);
}

/* Page-map tests: PM_N runs of PM_PAGES pages (24576 pages, 1.5 MiB of
 * page-map entries with 4 KiB pages), never written, so that the RSS that
 * grows is the page map's. */
enum { PM_N = 1536, PM_PAGES = 16 };
#define PM_BYTES ((size_t)PM_N * PM_PAGES * 64)

/* Allocates the runs into p[] and checks that the page map shows in the
 * RSS. Returns the RSS before. */
static size_t grow_page_map(anr_heap *h, char **p)
{
    size_t before = rss_bytes();
    if (before == 0) fail_msg("cannot read this process's RSS from /proc/self");
    for (int i = 0; i < PM_N; i++) {
        p[i] = anr_core_alloc(h, PM_PAGES * sys_page(), 0, 0);
        assert_non_null(p[i]);
    }
    size_t grown = rss_bytes();
    if (grown < before + PM_BYTES / 2)
        fail_msg("RSS %zu -> %zu KiB: the page map (%zu KiB) did not show", before / KiB,
                 grown / KiB, PM_BYTES / KiB);
    return before;
}

/* Frees the runs lowest first and checks that their page map is still
 * resident (in real-time mode a merge of runs hands none back), so that
 * what hands it back is what the test calls next. Returns the RSS. */
static size_t free_runs_keeping_page_map(anr_heap *h, char **p, size_t before)
{
    for (int i = 0; i < PM_N; i++)
        assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
    size_t freed = rss_bytes();
    if (freed < before + PM_BYTES / 2)
        fail_msg("RSS %zu -> %zu KiB: the page map (%zu KiB) already went back with the runs",
                 before / KiB, freed / KiB, PM_BYTES / KiB);
    return freed;
}

/* The heap emptied out (no dirty pages) and its page map went back down
 * to what is kept above the top (at most twice the 128 KiB slack), the
 * slab_at entries (two bytes per page) and 96 KiB for the rest of the process
 * (valgrind's own bookkeeping): RSS against `before`, the RSS before the
 * page map grew. */
static void page_map_went_back(anr_heap *h, size_t before, const char *after_what)
{
    size_t after = rss_bytes();
    assert_int_equal(stats_of(h).pages_dirty, 0);
    size_t left = after > before ? after - before : 0;
    if (left > 2 * 128 * KiB + 2 * (size_t)PM_N * PM_PAGES + 96 * KiB)
        fail_msg("RSS %zu KiB before, %zu KiB after %s: %zu KiB of page map left", before / KiB,
                 after / KiB, after_what, left / KiB);
}

/* With the default ceiling, a floor given is kept (it used to count only
 * with a ceiling given too), and one above the default ceiling is refused. */
static void test_floor_with_default_ceiling(void **state)
{
    anr_core_options o;
    test_options(&o);
    runs_uncached(&o);
    o.page_ceiling = 0;
    o.page_floor = 2 * MiB / sys_page();
    anr_heap *h = fx_init(state, &o);
    enum { N = 24 }; /* 3 MiB in runs kept apart by live spacers: a purge takes whole runs */
    void *p[N], *spacer[N];
    for (int i = 0; i < N; i++) {
        assert_non_null(p[i] = anr_core_alloc(h, 128 * KiB, 0, 0));
        memset(p[i], 1, 128 * KiB);
        assert_non_null(spacer[i] = anr_core_alloc(h, 256 * KiB, 0, 0));
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
    anr_core_purge(h, false);
    anr_core_stats t = stats_of(h);
    if (t.pages_dirty < o.page_floor)
        fail_msg("%zu dirty pages left, floor %zu", t.pages_dirty, o.page_floor);
    for (int i = 0; i < N; i++)
        assert_int_equal(anr_core_free(h, spacer[i]), ANR_ERR_NONE);

    anr_heap *bad = NULL;
    o.page_floor = 100000; /* above the default ceiling */
    assert_int_equal(anr_core_init(&bad, &o), EINVAL);
    assert_null(bad);
}

/* The page map follows the top: a heap that grew to 24576 pages (1.5 MiB
 * of page-map entries at 64 bytes each) and emptied out hands its page map
 * back as the top retreats, down to what is kept above the top (at most
 * twice the 128 KiB slack) plus the slab_at entries (two bytes per page) and
 * 96 KiB for the rest of the process (valgrind's own bookkeeping). The objects are never written, so the RSS that grows is the
 * page map's. A purge down to the floor (0), not anr_core_purge(all),
 * and no tick, which both sweep the page map: this is the bounded trim
 * that every call taking the lock does. */
static void test_page_map_follows_data(void **state)
{
    anr_core_options o;
    test_options(&o);
    runs_uncached(&o);
    o.page_floor = 0;
    anr_heap *h = fx_init(state, &o);
    static char *p[PM_N];
    void *warm = anr_core_alloc(h, 64, 0, 0); /* the heap's first slab, kept */
    assert_non_null(warm);
    size_t before = grow_page_map(h, p);
    /* Every other object first, so that no free run reaches the top until
     * the end, then the rest in reverse. */
    for (int i = 0; i < PM_N; i += 2)
        assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
    for (int i = PM_N - 1; i > 0; i -= 2)
        assert_int_equal(anr_core_free(h, p[i]), ANR_ERR_NONE);
    anr_core_purge(h, false);
    for (int i = 0; i < 64; i++) /* calls that take the lock */
        assert_int_equal(anr_core_free(h, anr_core_alloc(h, PM_PAGES * sys_page(), 0, 0)),
                         ANR_ERR_NONE);
    page_map_went_back(h, before, "emptying");
    assert_int_equal(anr_core_free(h, warm), ANR_ERR_NONE);
    assert_verify(h);
}

/* The same with no allocator call after the last free: one
 * anr_core_tick() (what the background purger runs) hands back the whole
 * page map above the retreated top, in bounded steps until none is left,
 * not one step per tick. Real-time mode, where merging runs hands back no
 * page map; the frees go lowest first and each hands back its run (the
 * ceiling is one run), so the top retreats only with the last one, whose
 * own unlock trims one bounded step. (The sweep, which would find those
 * pages too, is kept out by its rate limit.) */
static void test_tick_trims_whole_page_map(void **state)
{
    anr_core_options o;
    marks_options(&o, PM_PAGES, 0);
    o.thread_cache = false;
    o.decay_ms = 60000;
    anr_heap *h = fx_init(state, &o);
    static char *p[PM_N];
    void *warm = anr_core_alloc(h, 64, 0, 0);
    assert_non_null(warm);
    /* A purge with a page-map sweep now, so that the tick's own sweep
     * (at most every half decay time: 30 s) stays out of this test. */
    char *r = anr_core_alloc(h, PM_PAGES * sys_page(), 0, 0);
    assert_non_null(r);
    memset(r, 1, PM_PAGES * sys_page());
    assert_int_equal(anr_core_free(h, r), ANR_ERR_NONE);
    anr_core_purge(h, true);
    assert_true(stats_of(h).pages_purged > 0);
    size_t before = grow_page_map(h, p);
    free_runs_keeping_page_map(h, p, before);
    anr_core_tick(h);
    page_map_went_back(h, before, "one tick");
    assert_int_equal(anr_core_free(h, warm), ANR_ERR_NONE);
    assert_verify(h);
}

/* The same when a live object keeps the top from retreating, in real-time
 * mode (no thread caches: no page-map madvise as runs merge): each free
 * hands back its own run (the ceiling is one run), too short to free a
 * page-map page, so the merged clean run's page map stays resident until
 * the page-map sweep of anr_core_purge() finds it all zero. */
static void test_page_map_swept_below_live_top(void **state)
{
    size_t pg = sys_page();
    anr_core_options o;
    marks_options(&o, PM_PAGES, 0);
    o.thread_cache = false;
    anr_heap *h = fx_init(state, &o);
    static char *p[PM_N];
    void *warm = anr_core_alloc(h, 64, 0, 0);
    assert_non_null(warm);
    size_t before = grow_page_map(h, p);
    void *late = anr_core_alloc(h, PM_PAGES * pg, 0, 0); /* at the top */
    assert_non_null(late);
    size_t freed = free_runs_keeping_page_map(h, p, before);
    anr_core_purge(h, true);
    size_t after = rss_bytes();
    size_t left = after > before ? after - before : 0;
    /* An eighth of the page map: the slab_at entries and the late
     * object's entries stay, and under valgrind its own bookkeeping shows
     * in the RSS too (~100 KiB). */
    if (left > PM_BYTES / 8)
        fail_msg("RSS %zu KiB before, %zu KiB freed, %zu KiB after the sweep: %zu KiB left",
                 before / KiB, freed / KiB, after / KiB, left / KiB);
    assert_int_equal(anr_core_free(h, late), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, warm), ANR_ERR_NONE);
    assert_verify(h);
}

/* Memory handed back and reused reads as zero with ANR_ALLOC_ZERO, for both
 * purge advices (MADV_FREE pages may keep their old contents). */
static void zero_after_purge(void **state, anr_purge_advice advice)
{
    anr_core_options o;
    test_options(&o);
    runs_uncached(&o);
    o.purge_advice = advice;
    anr_heap *h = fx_init(state, &o);
    size_t pg = sys_page();
    size_t sizes[] = {64, 1000, 3 * pg, 40 * pg};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        void *v[64];
        for (int i = 0; i < 64; i++) {
            v[i] = anr_core_alloc(h, sizes[k], 0, 0);
            assert_non_null(v[i]);
            memset(v[i], 0xaa, anr_core_usable_size(h, v[i]));
        }
        for (int i = 0; i < 64; i++)
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
        anr_core_purge(h, true);
        if (advice == ANR_PURGE_DONTNEED) assert_int_equal(stats_of(h).pages_dirty, 0);
        for (int i = 0; i < 64; i++) {
            v[i] = anr_core_alloc(h, sizes[k], 0, ANR_ALLOC_ZERO);
            assert_non_null(v[i]);
            check_zero(v[i], sizes[k]);
        }
        for (int i = 0; i < 64; i++)
            assert_int_equal(anr_core_free(h, v[i]), ANR_ERR_NONE);
    }
    assert_verify(h);
}

static void test_zero_after_purge_dontneed(void **state)
{
    zero_after_purge(state, ANR_PURGE_DONTNEED);
}

static void test_zero_after_purge_free(void **state)
{
    zero_after_purge(state, ANR_PURGE_FREE);
}

/* Frees runs[*i...] up to the background hard bound (the slack times the
 * ceiling `ceil`), checking that none of those frees purges, then one more,
 * which must purge. Returns the statistics after it. */
static anr_core_stats free_past_hard_bound(anr_heap *h, char **runs, int *i, size_t ceil)
{
    size_t bound = ANR_BACKGROUND_PURGE_SLACK * ceil;
    for (; (size_t)(*i + 1) * RUN <= bound; (*i)++) {
        assert_int_equal(anr_core_free(h, runs[*i]), ANR_ERR_NONE);
        anr_core_stats s = stats_of(h);
        if (s.pages_purged != 0 || s.pages_dirty != (size_t)(*i + 1) * RUN)
            fail_msg("free #%d: %zu dirty, %llu purged below the hard bound %zu", *i,
                     s.pages_dirty, (unsigned long long)s.pages_purged, bound);
    }
    assert_true(stats_of(h).pages_dirty > ceil);
    assert_int_equal(anr_core_free(h, runs[(*i)++]), ANR_ERR_NONE);
    anr_core_stats s = stats_of(h);
    assert_true(s.pages_purged > 0);
    assert_true(s.pages_dirty <= bound);
    return s;
}

/* background_purge: malloc/free leave the ceiling to anr_core_tick() and
 * purge themselves only past ANR_BACKGROUND_PURGE_SLACK times the ceiling;
 * the tick goes down to the floor. (A ceiling of two runs, so that the hard
 * bound is reached within NRUNS runs.) */
static void test_background_purge(void **state)
{
    const size_t ceil = 2 * RUN, floor = RUN;
    assert_true(ANR_BACKGROUND_PURGE_SLACK * ceil < NRUNS * RUN);
    anr_core_options o;
    test_options(&o);
    runs_uncached(&o);
    o.page_ceiling = ceil;
    o.page_floor = floor;
    o.background_purge = true;
    anr_heap *h = fx_init(state, &o);
    char *runs[NRUNS], *guard;
    alloc_runs(h, runs, &guard);
    int i = 0;
    /* Up to the hard bound frees purge nothing; past it they do. */
    anr_core_stats s = free_past_hard_bound(h, runs, &i, ceil);
    /* The tick hands back down to the floor what that round left (a
     * real-time round is small; with caches it reached the floor). */
    uint64_t before = s.pages_purged;
    bool over = s.pages_dirty > ceil;
    size_t got = anr_core_tick(h);
    s = stats_of(h);
    assert_true(over ? got > 0 : got == 0);
    assert_true(s.pages_dirty <= (over ? floor : ceil));
    assert_int_equal(s.pages_purged - before, got);
    for (; i < NRUNS; i++)
        assert_int_equal(anr_core_free(h, runs[i]), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, guard), ANR_ERR_NONE);
    /* Switched off, malloc and free purge at the ceiling again. */
    anr_core_set_background_purge(h, false);
    assert_true(stats_of(h).pages_dirty <= ceil);
    assert_verify(h);
}

/* The ceiling in force is never above the pages in use (nor below the
 * floor): a heap that empties out keeps at most the floor dirty, though
 * everything it freed is under the configured ceiling. */
static void test_ceiling_follows_use(void **state)
{
    anr_heap *h = heap_with_marks(state, CEIL, FLOOR);
    enum { N = 8 }; /* N * RUN < CEIL */
    char *runs[N];
    for (int i = 0; i < N; i++) {
        runs[i] = anr_core_alloc(h, RUN * sys_page(), 0, 0);
        assert_non_null(runs[i]);
        memset(runs[i], 0xa5, RUN * sys_page());
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(anr_core_free(h, runs[i]), ANR_ERR_NONE);
        anr_core_stats s = stats_of(h);
        size_t in_force = s.pages_in_use > FLOOR ? s.pages_in_use : FLOOR;
        if (s.pages_dirty > in_force)
            fail_msg("free #%d: %zu dirty, %zu in use, floor %zu", i, s.pages_dirty,
                     s.pages_in_use, FLOOR);
    }
    anr_core_stats s = stats_of(h);
    assert_true(s.pages_purged > 0);
    assert_true(s.pages_dirty <= FLOOR);
    assert_verify(h);
}

/* young_ms, the reuse window: a heap that only frees earns no allowance
 * (the ceiling acts as without it); pages handed back and then faulted in
 * again within the window let as many young dirty pages stay past the
 * ceiling; once they are older than the window, the next call over the
 * ceiling hands them back. */
static void test_reuse_allowance(void **state)
{
    anr_core_options o;
    marks_options(&o, CEIL, FLOOR);
    o.young_ms = 1000; /* room for the frees below under valgrind */
    o.decay_ms = UINT32_MAX; /* only the ceiling acts here */
    anr_heap *h = fx_init(state, &o);
    char *runs[NRUNS], *guard;
    alloc_runs(h, runs, &guard);

    /* Only frees: the free that passes the ceiling purges. */
    int i = 0;
    while (stats_of(h).pages_purged == 0) {
        assert_true(i < NRUNS);
        assert_int_equal(anr_core_free(h, runs[i++]), ANR_ERR_NONE);
        assert_true(stats_of(h).pages_purged > 0 || stats_of(h).pages_dirty <= CEIL);
    }
    int freed = i;
    anr_core_stats s = stats_of(h);
    assert_true(s.pages_dirty <= CEIL);

    /* The same again at once: the purged pages fault in afresh. */
    uint64_t purged = s.pages_purged;
    for (int k = 0; k < freed; k++) {
        runs[k] = anr_core_alloc(h, RUN * sys_page(), 0, 0);
        assert_non_null(runs[k]);
        memset(runs[k], 0x5a, RUN * sys_page());
    }
    assert_int_equal(stats_of(h).pages_dirty, 0);
    /* Freed once more: now they stay, past the ceiling. */
    for (int k = 0; k < freed; k++)
        assert_int_equal(anr_core_free(h, runs[k]), ANR_ERR_NONE);
    s = stats_of(h);
    assert_int_equal(s.pages_purged, purged);
    assert_true(s.pages_dirty > CEIL);
    assert_int_equal(s.pages_dirty, (size_t)freed * RUN);

    /* Older than the window: the next call hands them back. */
    struct timespec nap = {1, 200 * 1000 * 1000};
    nanosleep(&nap, NULL);
    assert_int_equal(anr_core_free(h, runs[i++]), ANR_ERR_NONE);
    s = stats_of(h);
    assert_true(s.pages_purged > purged);
    while (i < NRUNS)
        assert_int_equal(anr_core_free(h, runs[i++]), ANR_ERR_NONE);
    assert_int_equal(anr_core_free(h, guard), ANR_ERR_NONE);
    assert_true(stats_of(h).pages_dirty <= CEIL + (size_t)freed * RUN);
    assert_verify(h);
}

/* The pattern the reuse window is for, down to nothing in use between
 * rounds: a batch of buffers allocated, written and all freed, again and
 * again (64 KiB blocks in bench_micro's size-class case). Once it has
 * learned (pages faulted in afresh after a purge), a round purges nothing
 * and faults nothing in. Capping the allowance by the pages in use (tried:
 * python3 then dropped its work at once) purged and refaulted every round:
 * 28 times slower in that benchmark. */
static void test_reuse_allowance_survives_free_all(void **state)
{
    anr_core_options o;
    marks_options(&o, CEIL, FLOOR);
    o.young_ms = 1000;
    o.decay_ms = UINT32_MAX;
    anr_heap *h = fx_init(state, &o);
    size_t pg = sys_page();
    char *runs[NRUNS];
    uint64_t purged_before = 0;
    for (int round = 0; round < 6; round++) {
        if (round == 3)
            purged_before = stats_of(h).pages_purged;
        for (int i = 0; i < NRUNS; i++) {
            runs[i] = anr_core_alloc(h, RUN * pg, 0, 0);
            assert_non_null(runs[i]);
            memset(runs[i], round, RUN * pg);
        }
        for (int i = 0; i < NRUNS; i++)
            assert_int_equal(anr_core_free(h, runs[i]), ANR_ERR_NONE);
    }
    anr_core_stats s = stats_of(h);
    assert_true(purged_before > 0); /* it had to learn: NRUNS * RUN is past the ceiling */
    if (s.pages_purged != purged_before)
        fail_msg("rounds 4-6 handed back %llu pages (all %zu freed each round)",
                 (unsigned long long)(s.pages_purged - purged_before), (size_t)NRUNS * RUN);
    assert_verify(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        UNIT(test_hysteresis),
        UNIT(test_below_ceiling_and_explicit_purge),
        UNIT(test_set_page_ceiling),
        UNIT(test_madvise_coalesced),
        UNIT(test_rss_drops), UNIT(test_page_map_follows_data),
        UNIT(test_page_map_swept_below_live_top), UNIT(test_tick_trims_whole_page_map),
        UNIT(test_zero_after_purge_dontneed),
        UNIT(test_zero_after_purge_free),
        UNIT(test_background_purge), UNIT(test_floor_with_default_ceiling),
        UNIT(test_ceiling_follows_use),
        UNIT(test_reuse_allowance), UNIT(test_reuse_allowance_survives_free_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The low-memory policy without I/O (issue 7): the threshold state machine
 * with hysteresis, meminfo / PSI / memory.events text, class arithmetic,
 * victim choice, and the broker's use of them (REQUEST refused past MAT,
 * NOTIFY to subscribers, give-back rounds, class caps and minimums). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "membroker.h"
#include "config.h"
#include "policy.h"

#define PAGE 4096u
#define MIB (UINT64_C(1) << 20)

static mb_policy pol_with(const char *st, const char *mat, uint64_t pool, uint64_t mem_total)
{
    mb_policy p;
    mb_policy_cfg c = {.hysteresis_pct = 5, .hold_ms = 1000, .giveback_pct = 25};
    const char *why;
    assert_true(_mb_parse_threshold(st, &c.signal, &why));
    assert_true(_mb_parse_threshold(mat, &c.alloc, &why));
    _mb_policy_init(&p);
    _mb_policy_configure(&p, &c, pool, PAGE, mem_total);
    return p;
}

static void test_threshold_forms(void **state)
{
    (void)state;
    mb_th_spec s;
    const char *why;
    assert_true(_mb_parse_threshold("none", &s, &why));
    assert_int_equal(s.mode, MB_TH_OFF);
    assert_true(_mb_parse_threshold("768M", &s, &why));
    assert_int_equal(s.mode, MB_TH_BYTES);
    assert_true(_mb_parse_threshold("90%", &s, &why));
    assert_int_equal(s.mode, MB_TH_POOL_PCT);
    assert_true(_mb_parse_threshold("85% memtotal", &s, &why));
    assert_int_equal(s.mode, MB_TH_MEM_PCT);
    assert_false(_mb_parse_threshold("0%", &s, &why));
    assert_false(_mb_parse_threshold("101%", &s, &why));
    assert_false(_mb_parse_threshold("50% disk", &s, &why));
    assert_false(_mb_parse_threshold("lots", &s, &why));
    /* resolved: 50% of a 1000-page pool, 50% of 1 GiB for the system */
    assert_true(_mb_parse_threshold("50%", &s, &why));
    mb_th t = _mb_th_resolve(&s, 1000, PAGE, 1024 * MIB);
    assert_int_equal(t.quota_pages, 500);
    assert_int_equal(t.sys_bytes, 512 * MIB);
    assert_true(_mb_parse_threshold("25% memtotal", &s, &why));
    t = _mb_th_resolve(&s, 1000, PAGE, 1024 * MIB);
    assert_int_equal(t.sys_bytes, 256 * MIB);
    assert_int_equal(t.quota_pages, 256 * MIB / PAGE);
}

/* Quota crossing ST and MAT, going down only below threshold - 5%. */
static void test_quota_thresholds_with_hysteresis(void **state)
{
    (void)state;
    mb_policy p = pol_with("60%", "90%", 1000, 0); /* no meminfo: quota only */
    int prev;
    p.held = 599;
    assert_false(_mb_policy_eval(&p, 0, &prev));
    assert_int_equal(p.level, MB_LVL_NORMAL);
    p.held = 600;
    assert_true(_mb_policy_eval(&p, 1, &prev));
    assert_int_equal(prev, MB_LVL_NORMAL);
    assert_int_equal(p.level, MB_LVL_LOW);
    assert_int_equal(p.reasons, MB_R_QUOTA);
    p.held = 560; /* below ST, within the hysteresis (50 pages): stays LOW */
    assert_false(_mb_policy_eval(&p, 2, &prev));
    assert_int_equal(p.level, MB_LVL_LOW);
    p.held = 900;
    assert_true(_mb_policy_eval(&p, 3, &prev));
    assert_int_equal(p.level, MB_LVL_CRITICAL);
    assert_int_equal(_mb_policy_request_room(&p), 0);
    p.held = 860; /* below MAT but within hysteresis */
    assert_false(_mb_policy_eval(&p, 4, &prev));
    assert_int_equal(p.level, MB_LVL_CRITICAL);
    p.held = 849; /* below MAT - 5%: down to LOW (still past ST) */
    assert_true(_mb_policy_eval(&p, 5, &prev));
    assert_int_equal(p.level, MB_LVL_LOW);
    assert_int_equal(_mb_policy_request_room(&p), 51);
    p.held = 551;
    assert_false(_mb_policy_eval(&p, 6, &prev));
    p.held = 549; /* all clear */
    assert_true(_mb_policy_eval(&p, 7, &prev));
    assert_int_equal(p.level, MB_LVL_NORMAL);
    assert_int_equal(p.reasons, 0);
}

/* MemAvailable from meminfo text is the worse figure when the quota is low. */
static void test_meminfo_input(void **state)
{
    (void)state;
    const char *text = "MemTotal:        1048576 kB\nMemFree:          10000 kB\n"
                       "MemAvailable:     400000 kB\nBuffers: 1 kB\n";
    mb_meminfo mi;
    assert_true(_mb_parse_meminfo(text, &mi));
    assert_int_equal(mi.mem_total, 1024 * MIB);
    assert_int_equal(mi.mem_available, UINT64_C(400000) * 1024);
    mb_meminfo none;
    assert_false(_mb_parse_meminfo("MemFree: 3 kB\n", &none));
    mb_policy p = pol_with("50%", "80%", 1000, mi.mem_total);
    int prev;
    p.held = 10;
    p.mem_available = mi.mem_available; /* 648000 kB used of 1048576: past 50% */
    assert_true(_mb_policy_eval(&p, 0, &prev));
    assert_int_equal(p.level, MB_LVL_LOW);
    assert_int_equal(p.reasons, MB_R_MEMAVAIL);
    p.mem_available = 100000 * 1024; /* 90% used: past 80% */
    assert_true(_mb_policy_eval(&p, 1, &prev));
    assert_int_equal(p.level, MB_LVL_CRITICAL);
    p.mem_available = 900000 * 1024;
    assert_true(_mb_policy_eval(&p, 2, &prev));
    assert_int_equal(p.level, MB_LVL_NORMAL);
    /* unknown MemAvailable (0) never counts as pressure */
    p.mem_available = 0;
    assert_false(_mb_policy_eval(&p, 3, &prev));
}

/* PSI text; a "some" trigger counts as ST, "full" as MAT, for PRESSURE_HOLD. */
static void test_psi_input(void **state)
{
    (void)state;
    const char *text = "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\n"
                       "full avg10=0.50 avg60=0.00 avg300=0.00 total=789\n";
    mb_psi_line some, full;
    assert_true(_mb_parse_psi(text, &some, &full));
    assert_int_equal(some.total_us, 123456);
    assert_int_equal(full.total_us, 789);
    assert_true(some.avg10 > 1.49 && some.avg10 < 1.51);
    assert_true(_mb_parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n", &some, &full));
    assert_int_equal(full.total_us, 0);
    assert_false(_mb_parse_psi("garbage\n", &some, &full));
    char trig[64];
    _mb_psi_trigger(trig, sizeof trig, false, 150000, 1000000);
    assert_string_equal(trig, "some 150000 1000000");
    assert_int_equal(_mb_psi_unprivileged_window(100000), 2000000);
    assert_int_equal(_mb_psi_unprivileged_window(3000000), 4000000);
    assert_int_equal(_mb_psi_unprivileged_window(4000000), 4000000);

    mb_policy p = pol_with("none", "none", 1000, 0);
    int prev;
    _mb_policy_event(&p, MB_R_PSI_SOME, 100);
    assert_true(_mb_policy_eval(&p, 100, &prev));
    assert_int_equal(p.level, MB_LVL_LOW);
    assert_int_equal(p.reasons, MB_R_PSI_SOME);
    assert_int_equal(_mb_policy_next(&p, 100), 1100); /* when the held event ends */
    _mb_policy_event(&p, MB_R_PSI_FULL, 500);
    assert_true(_mb_policy_eval(&p, 500, &prev));
    assert_int_equal(p.level, MB_LVL_CRITICAL);
    assert_false(_mb_policy_eval(&p, 1099, &prev)); /* some held until 1100, full until 1500 */
    assert_true(_mb_policy_eval(&p, 1500, &prev));
    assert_int_equal(p.level, MB_LVL_NORMAL);
    assert_int_equal(prev, MB_LVL_CRITICAL);
}

static void test_memevents_input(void **state)
{
    (void)state;
    mb_memevents a, b;
    assert_true(_mb_parse_memevents("low 0\nhigh 3\nmax 1\noom 0\noom_kill 0\n", &a));
    assert_int_equal(a.high, 3);
    assert_true(_mb_parse_memevents("low 0\nhigh 4\nmax 1\noom 0\noom_kill 0\n", &b));
    assert_int_equal(_mb_memevents_diff(&a, &b), MB_R_CG_HIGH);
    assert_true(_mb_parse_memevents("low 0\nhigh 4\nmax 1\noom 1\noom_kill 1\n", &a));
    assert_int_equal(_mb_memevents_diff(&b, &a), MB_R_CG_MAX);
    assert_int_equal(_mb_memevents_diff(&a, &a), 0);
}

static void test_class_arithmetic(void **state)
{
    (void)state;
    mb_class c[3] = {{"default", 0, 1000, 0, 0}, {"media", 200, 500, 50, 1}, {"ui", 100, 300, 250, 1}};
    /* 700 free: media may take up to its cap (450 more), default must leave
     * media's unmet minimum (150) */
    assert_int_equal(_mb_class_room(c, 3, 1, 700), 450);
    assert_int_equal(_mb_class_room(c, 3, 0, 700), 550);
    assert_int_equal(_mb_class_room(c, 3, 2, 700), 50); /* ui at 250 of cap 300 */
    c[2].held = 300;
    assert_int_equal(_mb_class_room(c, 3, 2, 700), 0); /* at its cap */
    /* give-back on behalf of media: ui only above its minimum */
    assert_int_equal(_mb_class_reclaimable(c, 2, 1), 200);
    assert_int_equal(_mb_class_reclaimable(c, 1, 1), 50); /* own class: all */
    c[2].held = 80;
    assert_int_equal(_mb_class_reclaimable(c, 2, 1), 0);
    mb_class_match m[3] = {{.cls = 2, .kind = MB_MATCH_EXE, .name = "player"},
                           {.cls = 1, .kind = MB_MATCH_CGROUP, .name = "/media.slice"},
                           {.cls = 2, .kind = MB_MATCH_UID, .uid = 1000}};
    assert_int_equal(_mb_class_match(m, 3, 0, "player", "", ""), 2);
    assert_int_equal(_mb_class_match(m, 3, 0, "x", "", "/media.slice/a.scope"), 1);
    assert_int_equal(_mb_class_match(m, 3, 0, "x", "", "/media.slicex"), 0);
    assert_int_equal(_mb_class_match(m, 3, 1000, "x", "", "/"), 2);
    assert_int_equal(_mb_class_match(m, 3, 1001, "x", "", "/"), 0);
}

static void test_victim_choice(void **state)
{
    (void)state;
    mb_proc p[5] = {
        {.pid = 10, .comm = "player", .cgroup = "/user.slice", .private_bytes = 900},
        {.pid = 11, .comm = "indexer", .cgroup = "/bg.slice/idx", .private_bytes = 100},
        {.pid = 12, .comm = "indexer", .cgroup = "/bg.slice/idx", .private_bytes = 300},
        {.pid = 13, .comm = "browser", .cgroup = "/user.slice", .private_bytes = 5000},
        {.pid = 1, .comm = "init", .cgroup = "/", .private_bytes = 1},
    };
    char killable[3][64] = {"updater", "/bg.slice", "browser"};
    char never[2][64] = {"player", "init"};
    /* the first entry with a running process wins; within it the largest */
    assert_int_equal(_mb_choose_victim(p, 5, killable, 3, never, 2, 999), 2);
    /* never-kill beats killable */
    char never2[1][64] = {"/bg.slice/idx"};
    assert_int_equal(_mb_choose_victim(p, 5, killable, 3, never2, 1, 999), 3);
    /* a process on no list is never chosen; nor the daemon itself */
    char only[1][64] = {"updater"};
    assert_int_equal(_mb_choose_victim(p, 5, only, 1, never, 2, 999), -1);
    char self[1][64] = {"browser"};
    assert_int_equal(_mb_choose_victim(p, 5, self, 1, never, 0, 13), -1);
}

/* ---- the broker with a policy ---- */

#define POOL 1000
#define CAP 8

static struct {
    mb_broker b;
    mb_bclient clients[CAP];
    mb_pending pending[CAP * MB_MAX_INFLIGHT];
    struct {
        uint32_t slot;
        mb_msg m;
    } out[128];
    size_t n_out, next;
    int kills;
} W;

static void rec_send(void *ctx, uint32_t slot, const mb_msg *m)
{
    (void)ctx;
    assert_true(W.n_out < 128);
    W.out[W.n_out].slot = slot;
    W.out[W.n_out++].m = *m;
}

static bool rec_kill(void *ctx, const char *why)
{
    (void)ctx;
    (void)why;
    W.kills++;
    return true;
}

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    mb_broker_cfg cfg = {.pool_pages = POOL,
                         .page_size = PAGE,
                         .request_timeout_ms = 50,
                         .giveback_timeout_ms = 100,
                         .reserve_max_ms = 10000};
    _mb_broker_init(&W.b, &cfg, W.clients, CAP, W.pending, rec_send, NULL, NULL);
    return 0;
}

static void policy(const char *st, const char *mat, const mb_class *cls, uint32_t n)
{
    mb_policy_cfg c = {.hysteresis_pct = 5, .hold_ms = 1000, .giveback_pct = 25};
    const char *why;
    assert_true(_mb_parse_threshold(st, &c.signal, &why));
    assert_true(_mb_parse_threshold(mat, &c.alloc, &why));
    _mb_broker_set_policy(&W.b, &c, cls, n, true, true, 0, rec_kill, 0);
}

static uint32_t client(mb_kind kind, const char *cls)
{
    int s = _mb_broker_attach(&W.b, 100, 0, "t");
    assert_true(s >= 0);
    const char *why;
    mb_msg h = {.type = MB_T_HELLO, .kind = kind};
    if (cls) snprintf(h.comm, sizeof h.comm, "%s", cls);
    assert_int_equal(_mb_broker_handle(&W.b, (uint32_t)s, &h, 0, &why), 0);
    W.n_out = W.next = 0;
    return (uint32_t)s;
}

static mb_msg ask(uint32_t slot, uint16_t type, uint64_t pages, uint64_t now)
{
    const char *why;
    size_t before = W.n_out;
    mb_msg m = {.type = type, .seq = 7, .pages = pages, .timeout_ms = type == MB_T_RESERVE ? 1000 : 0};
    assert_int_equal(_mb_broker_handle(&W.b, slot, &m, now, &why), 0);
    for (size_t i = before; i < W.n_out; i++)
        if (W.out[i].slot == slot && W.out[i].m.type == MB_T_GRANT) return W.out[i].m;
    return (mb_msg){0};
}

static size_t count_out(uint16_t type, uint32_t slot)
{
    size_t n = 0;
    for (size_t i = 0; i < W.n_out; i++)
        n += W.out[i].m.type == type && W.out[i].slot == slot;
    return n;
}

static const mb_msg *last_out(uint16_t type, uint32_t slot)
{
    for (size_t i = W.n_out; i-- > 0;)
        if (W.out[i].m.type == type && W.out[i].slot == slot) return &W.out[i].m;
    return NULL;
}

/* Past ST: subscribers are told, bidirectional clients asked (normal); past
 * MAT: REQUEST fails fast, RESERVE is served by an urgent give-back; below
 * again: the all-clear. */
static void test_broker_thresholds(void **state)
{
    (void)state;
    policy("50%", "80%", NULL, 0);
    uint32_t giver = client(MB_BIDIRECTIONAL, NULL), taker = client(MB_SIMPLE, NULL);
    int w = _mb_broker_attach(&W.b, 300, 0, "watch");
    const char *why;
    mb_msg sub = {.type = MB_T_SUBSCRIBE, .seq = 3};
    assert_int_equal(_mb_broker_handle(&W.b, (uint32_t)w, &sub, 0, &why), 0);
    assert_int_equal(last_out(MB_T_NOTIFY, (uint32_t)w)->level, MB_LVL_NORMAL);
    assert_int_equal(ask(giver, MB_T_REQUEST, 600, 1).pages, 600);
    const mb_msg *n = last_out(MB_T_NOTIFY, (uint32_t)w);
    assert_int_equal(n->level, MB_LVL_LOW);
    assert_int_equal(n->prev, MB_LVL_NORMAL);
    assert_int_equal(n->reasons, MB_R_QUOTA);
    const mb_msg *gb = last_out(MB_T_GIVEBACK, giver);
    assert_non_null(gb);
    assert_int_equal(gb->pages, 150); /* 25% */
    assert_int_equal(gb->urgency, 0);
    mb_msg rep = {.type = MB_T_GIVEBACK_REPLY, .seq = gb->seq, .pages = 0};
    assert_int_equal(_mb_broker_handle(&W.b, giver, &rep, 2, &why), 0);
    /* a REQUEST stops at MAT (800): 200 of 300 */
    ask(taker, MB_T_REQUEST, 300, 300); /* waits: the giver is asked for 100 */
    gb = last_out(MB_T_GIVEBACK, giver);
    assert_int_equal(gb->pages, 100);
    rep = (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = gb->seq, .pages = 0};
    assert_int_equal(_mb_broker_handle(&W.b, giver, &rep, 301, &why), 0);
    assert_int_equal(last_out(MB_T_GRANT, taker)->pages, 200);
    assert_int_equal(last_out(MB_T_NOTIFY, (uint32_t)w)->level, MB_LVL_CRITICAL);
    /* critical: REQUEST refused at once although pages are free */
    assert_int_equal(_mb_broker_free(&W.b), 200);
    mb_msg g = ask(taker, MB_T_REQUEST, 1, 400);
    assert_int_equal(g.status, -ENOMEM);
    assert_int_equal(g.pages, 0);
    /* a RESERVE proceeds: 250 > 200 free, an urgent give-back of 50 */
    W.n_out = 0;
    mb_msg m = {.type = MB_T_RESERVE, .seq = 9, .pages = 250, .timeout_ms = 1000};
    assert_int_equal(_mb_broker_handle(&W.b, taker, &m, 500, &why), 0);
    gb = last_out(MB_T_GIVEBACK, giver);
    assert_non_null(gb);
    assert_int_equal(gb->urgency, 1);
    assert_int_equal(gb->pages, 50);
    rep = (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = gb->seq, .pages = 50};
    assert_int_equal(_mb_broker_handle(&W.b, giver, &rep, 510, &why), 0);
    assert_int_equal(last_out(MB_T_GRANT, taker)->pages, 250);
    assert_int_equal(W.b.held_total, 1000);
    /* everything back: the all-clear */
    mb_msg ret = {.type = MB_T_RETURN, .seq = 11, .pages = 450};
    assert_int_equal(_mb_broker_handle(&W.b, taker, &ret, 600, &why), 0);
    _mb_broker_detach(&W.b, giver, 601);
    n = last_out(MB_T_NOTIFY, (uint32_t)w);
    assert_int_equal(n->level, MB_LVL_NORMAL);
    assert_int_equal(n->prev, MB_LVL_LOW);
}

/* An urgent RESERVE no give-back can meet asks for a kill; past MAT beyond
 * KILL_GRACE too. */
static void test_broker_kill_requests(void **state)
{
    (void)state;
    policy("none", "none", NULL, 0);
    uint32_t a = client(MB_SIMPLE, NULL), b = client(MB_SIMPLE, NULL);
    assert_int_equal(ask(a, MB_T_REQUEST, POOL, 0).pages, POOL);
    ask(b, MB_T_RESERVE, 10, 1);
    assert_int_equal(W.kills, 1);
    _mb_broker_tick(&W.b, 2); /* busy: not asked again until done */
    assert_int_equal(W.kills, 1);
    _mb_broker_detach(&W.b, a, 3); /* the victim's quota comes back */
    _mb_broker_kill_done(&W.b, 3);
    assert_int_equal(last_out(MB_T_GRANT, b)->pages, 10);
}

/* Classes: a class at its cap gets nothing while another is served; a
 * class's give-back on behalf of another stops at its minimum. */
static void test_broker_classes(void **state)
{
    (void)state;
    mb_class cls[3] = {{"default", 0, POOL, 0, 0}, {"small", 0, 250, 0, 0}, {"big", 300, POOL, 0, 0}};
    policy("none", "none", cls, 3);
    uint32_t s = client(MB_SIMPLE, "small"), bg = client(MB_BIDIRECTIONAL, "big"),
             d = client(MB_SIMPLE, NULL);
    assert_int_equal(W.clients[s].cls, 1);
    assert_int_equal(ask(s, MB_T_REQUEST, 400, 0).pages, 250); /* its cap */
    assert_int_equal(ask(s, MB_T_REQUEST, 1, 1).pages, 0);
    assert_int_equal(ask(bg, MB_T_REQUEST, 100, 2).pages, 100);
    /* default may not take big's unmet minimum (200): 650 free - 200 */
    assert_int_equal(ask(d, MB_T_REQUEST, 1000, 3).pages, 450);
    assert_int_equal(ask(bg, MB_T_REQUEST, 200, 4).pages, 200);
    /* default's RESERVE: big gives back only what it holds above 300 (0) */
    W.n_out = 0;
    const char *why;
    mb_msg m = {.type = MB_T_RESERVE, .seq = 5, .pages = 10, .timeout_ms = 0};
    assert_int_equal(_mb_broker_handle(&W.b, d, &m, 5, &why), 0);
    assert_int_equal(count_out(MB_T_GIVEBACK, bg), 0);
    assert_int_equal(last_out(MB_T_GRANT, d)->status, -EAGAIN);
    /* a class asked for that does not exist, or by request when not allowed */
    int x = _mb_broker_attach(&W.b, 5, 0, "x");
    mb_msg h = {.type = MB_T_HELLO, .comm = "nosuch"};
    assert_int_equal(_mb_broker_handle(&W.b, (uint32_t)x, &h, 6, &why), -ESRCH);
    /* more than the class's cap can never be reserved */
    m = (mb_msg){.type = MB_T_RESERVE, .seq = 6, .pages = 251, .timeout_ms = 100};
    assert_int_equal(_mb_broker_handle(&W.b, s, &m, 7, &why), 0);
    assert_int_equal(last_out(MB_T_GRANT, s)->status, -ENOSPC);
}

/* Config: the new keys, and their errors. */
static unsigned n_reports;
static unsigned report_lines[16];

static void report(void *ctx, const char *file, unsigned line, const char *msg)
{
    (void)ctx;
    (void)file;
    (void)msg;
    if (n_reports < 16) report_lines[n_reports] = line;
    n_reports++;
}

static void test_config_keys(void **state)
{
    (void)state;
    static const char good[] = "SIGNAL_THRESHOLD 70%\nALLOC_THRESHOLD 90% memtotal\n"
                               "HYSTERESIS 3%\nPSI_SOME 150000 1000000\nPSI_FULL none\n"
                               "PSI_CGROUP /sys/fs/cgroup/app\nCLASS media 64M 50%\n"
                               "CLASS_MEMBER media exe mpv\nCLASS_MEMBER media uid 1000\n"
                               "CLASS_BY_REQUEST yes\nNEVER_KILL sshd /system.slice\n"
                               "KILLABLE indexer\nKILLABLE /bg.slice\nKILL_GRACE 5000\n"
                               "KILL_TIMEOUT 2000\nREPORT_DIR /var/lib/membroker\n"
                               "MEMINFO /proc/meminfo\nMEMINFO_INTERVAL 500\n";
    mb_config c;
    _mb_config_defaults(&c);
    n_reports = 0;
    assert_int_equal(_mb_config_parse(&c, good, sizeof good - 1, "t", report, NULL), 0);
    assert_int_equal(c.policy.signal.mode, MB_TH_POOL_PCT);
    assert_int_equal(c.policy.alloc.mode, MB_TH_MEM_PCT);
    assert_int_equal(c.psi_stall_us[0], 150000);
    assert_int_equal(c.psi_stall_us[1], 0);
    assert_int_equal(c.n_classes, 2);
    assert_int_equal(c.n_matches, 2);
    assert_int_equal(c.n_never, 2);
    assert_int_equal(c.n_killable, 2);
    assert_string_equal(c.killable[1], "/bg.slice");
    static const char bad[] = "SIGNAL_THRESHOLD 150%\n"     /* 1 */
                              "# fine\n"                    /* 2 */
                              "CLASS x 10M\n"               /* 3 */
                              "CLASS_MEMBER nosuch uid 0\n" /* 4 */
                              "PSI_SOME 5 1\n"              /* 5 */
                              "KILLABLE\n"                  /* 6 */
                              "HYSTERESIS 5\n"              /* 7 */
                              "CLASS_BY_REQUEST maybe\n";   /* 8 */
    _mb_config_defaults(&c);
    n_reports = 0;
    assert_int_equal(_mb_config_parse(&c, bad, sizeof bad - 1, "t", report, NULL), 7);
    unsigned want[7] = {1, 3, 4, 5, 6, 7, 8};
    for (int i = 0; i < 7; i++)
        assert_int_equal(report_lines[i], want[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threshold_forms),
        cmocka_unit_test(test_quota_thresholds_with_hysteresis),
        cmocka_unit_test(test_meminfo_input),
        cmocka_unit_test(test_psi_input),
        cmocka_unit_test(test_memevents_input),
        cmocka_unit_test(test_class_arithmetic),
        cmocka_unit_test(test_victim_choice),
        cmocka_unit_test_setup(test_broker_thresholds, setup),
        cmocka_unit_test_setup(test_broker_kill_requests, setup),
        cmocka_unit_test_setup(test_broker_classes, setup),
        cmocka_unit_test(test_config_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The daemon's decisions (membroker/broker.c), driven without sockets: a
 * recorder stands in for the connections, time is a number we move. */
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

#define CAP 6
#define POOL 100
#define REQ_TIMEOUT 50
#define GB_TIMEOUT 100
#define RESERVE_MAX 1000

typedef struct sent {
    uint32_t slot;
    mb_msg m;
} sent;

typedef struct world {
    mb_broker b;
    mb_bclient clients[CAP];
    mb_pending pending[CAP * MB_MAX_INFLIGHT];
    sent out[256];
    unsigned n_out, read;
    unsigned n_log;
    uint64_t now;
    uint32_t seq;
} world;

static world W;

static void rec_send(void *ctx, uint32_t slot, const mb_msg *m)
{
    world *w = ctx;
    assert_true(w->n_out < sizeof w->out / sizeof w->out[0]);
    /* every record the broker sends must encode */
    uint8_t buf[MB_MSG_SIZE];
    assert_int_equal(_mb_msg_encode(m, buf), MB_MSG_SIZE);
    w->out[w->n_out++] = (sent){slot, *m};
}

static void rec_log(void *ctx, int level, const char *msg)
{
    world *w = ctx;
    (void)level;
    (void)msg;
    w->n_log++;
}

static int setup(void **state)
{
    memset(&W, 0, sizeof W);
    mb_broker_cfg cfg = {.pool_pages = POOL,
                         .page_size = 4096,
                         .request_timeout_ms = REQ_TIMEOUT,
                         .giveback_timeout_ms = GB_TIMEOUT,
                         .reserve_max_ms = RESERVE_MAX};
    _mb_broker_init(&W.b, &cfg, W.clients, CAP, W.pending, rec_send, rec_log, &W);
    W.now = 1000;
    *state = &W;
    return 0;
}

/* The next record sent; fails if there is none. */
static sent next_out(void)
{
    if (W.read >= W.n_out) fail_msg("expected a record, none was sent");
    return W.out[W.read++];
}

static void no_more_out(void)
{
    if (W.read < W.n_out)
        fail_msg("unexpected %s to slot %u", _mb_msg_type_name(W.out[W.read].m.type),
                 W.out[W.read].slot);
}

static int handle(uint32_t slot, mb_msg m)
{
    const char *why;
    if (!m.seq) m.seq = ++W.seq;
    return _mb_broker_handle(&W.b, slot, &m, W.now, &why);
}

static uint32_t client(mb_kind kind)
{
    int slot = _mb_broker_attach(&W.b, 100, 1000, "test");
    assert_true(slot >= 0);
    assert_int_equal(handle((uint32_t)slot, (mb_msg){.type = MB_T_HELLO, .kind = kind}), 0);
    sent s = next_out();
    assert_int_equal(s.slot, slot);
    assert_int_equal(s.m.type, MB_T_WELCOME);
    assert_int_equal(s.m.pool, POOL);
    assert_int_equal(s.m.cursor, slot);
    return (uint32_t)slot;
}

/* Sends a REQUEST/RESERVE, returns its seq. */
static uint32_t ask(uint32_t slot, uint16_t type, uint64_t pages, uint32_t timeout)
{
    uint32_t seq = ++W.seq;
    assert_int_equal(
        handle(slot, (mb_msg){.type = type, .seq = seq, .pages = pages, .timeout_ms = timeout}), 0);
    return seq;
}

static void expect_grant(uint32_t slot, uint32_t seq, uint64_t pages, int status)
{
    sent s = next_out();
    assert_int_equal(s.slot, slot);
    assert_int_equal(s.m.type, MB_T_GRANT);
    assert_int_equal(s.m.seq, seq);
    assert_int_equal(s.m.status, status);
    assert_int_equal(s.m.pages, pages);
}

static sent expect_giveback(uint32_t slot, uint64_t pages, uint32_t urgency)
{
    sent s = next_out();
    assert_int_equal(s.slot, slot);
    assert_int_equal(s.m.type, MB_T_GIVEBACK);
    assert_int_equal(s.m.pages, pages);
    assert_int_equal(s.m.urgency, urgency);
    assert_int_equal(s.m.timeout_ms, GB_TIMEOUT);
    return s;
}

static void expect_error(uint32_t slot, int status)
{
    sent s = next_out();
    assert_int_equal(s.slot, slot);
    assert_int_equal(s.m.type, MB_T_ERROR);
    assert_int_equal(s.m.status, status);
}

static void tick(uint64_t ms)
{
    W.now += ms;
    _mb_broker_tick(&W.b, W.now);
}

/* ---- tests ---- */

static void test_request_granted_in_full_and_in_part(void **state)
{
    (void)state;
    uint32_t a = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, 60, 0), 60, 0);
    assert_int_equal(_mb_broker_free(&W.b), 40);
    /* no one can give back: the part that is free, at once */
    expect_grant(a, ask(a, MB_T_REQUEST, 60, 0), 40, 0);
    expect_grant(a, ask(a, MB_T_REQUEST, 1, 0), 0, 0);
    expect_grant(a, ask(a, MB_T_REQUEST, 0, 0), 0, 0);
    assert_int_equal(W.clients[a].held, POOL);
    no_more_out();
    assert_int_equal(_mb_broker_next_deadline(&W.b, W.now), UINT64_MAX);
}

static void test_reserve_all_or_nothing(void **state)
{
    (void)state;
    uint32_t a = client(MB_SIMPLE), b = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_RESERVE, 70, 0), 70, 0);
    expect_grant(b, ask(b, MB_T_RESERVE, 40, 0), 0, -EAGAIN); /* timeout 0: try */
    expect_grant(b, ask(b, MB_T_RESERVE, POOL + 1, 500), 0, -ENOSPC);
    uint32_t seq = ask(b, MB_T_RESERVE, 40, 500);
    no_more_out(); /* waits */
    assert_int_equal(_mb_broker_next_deadline(&W.b, W.now), W.now + 500);
    tick(499);
    no_more_out();
    tick(1);
    expect_grant(b, seq, 0, -ETIMEDOUT);
    assert_int_equal(W.clients[b].held, 0);
    /* the timeout is capped by RESERVE_MAX */
    seq = ask(b, MB_T_RESERVE, 40, 100000);
    assert_int_equal(_mb_broker_next_deadline(&W.b, W.now), W.now + RESERVE_MAX);
    /* a RETURN lets it through */
    assert_int_equal(handle(a, (mb_msg){.type = MB_T_RETURN, .pages = 10}), 0);
    sent s = next_out();
    assert_int_equal(s.m.type, MB_T_RETURNED);
    assert_int_equal(s.m.held, 60);
    expect_grant(b, seq, 40, 0);
    no_more_out();
}

static void test_return_more_than_held_refused(void **state)
{
    (void)state;
    uint32_t a = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, 5, 0), 5, 0);
    const char *why;
    mb_msg r = {.type = MB_T_RETURN, .seq = 77, .pages = 6};
    assert_int_equal(_mb_broker_handle(&W.b, a, &r, W.now, &why), -EINVAL);
    assert_non_null(strstr(why, "more"));
    sent s = next_out();
    assert_int_equal(s.m.type, MB_T_RETURNED);
    assert_int_equal(s.m.seq, 77);
    assert_int_equal(s.m.status, -EINVAL);
    assert_int_equal(s.m.held, 5);
    assert_int_equal(_mb_broker_free(&W.b), POOL - 5);
}

static void test_out_of_order_records(void **state)
{
    (void)state;
    int slot = _mb_broker_attach(&W.b, 1, 1, "raw");
    assert_true(slot >= 0);
    uint32_t s = (uint32_t)slot;
    assert_int_equal(handle(s, (mb_msg){.type = MB_T_REQUEST, .pages = 1}), -EPROTO);
    expect_error(s, -EPROTO);
    assert_int_equal(handle(s, (mb_msg){.type = MB_T_QUERY}), -EPROTO);
    expect_error(s, -EPROTO);
    assert_int_equal(handle(s, (mb_msg){.type = MB_T_GRANT, .pages = 1}), -EPROTO);
    expect_error(s, -EPROTO);
    /* STATUS is allowed without HELLO */
    assert_int_equal(handle(s, (mb_msg){.type = MB_T_STATUS}), 0);
    assert_int_equal(next_out().m.type, MB_T_STATUS_END);
    assert_int_equal(handle(s, (mb_msg){.type = MB_T_HELLO}), 0);
    assert_int_equal(next_out().m.type, MB_T_WELCOME);
    assert_int_equal(handle(s, (mb_msg){.type = MB_T_HELLO}), -EPROTO);
    expect_error(s, -EPROTO);
    assert_int_equal(handle(s, (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = 3, .pages = 0}),
                     -EPROTO);
    expect_error(s, -EPROTO);
    no_more_out();
}

static void test_giveback_serves_reserve(void **state)
{
    (void)state;
    uint32_t a = client(MB_BIDIRECTIONAL), b = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, POOL, 0), POOL, 0);
    uint32_t seq = ask(b, MB_T_RESERVE, 30, 500);
    sent gb = expect_giveback(a, 30, MB_URGENT);
    no_more_out();
    assert_true(W.clients[a].gb_active);
    assert_int_equal(_mb_broker_next_deadline(&W.b, W.now), W.now + GB_TIMEOUT);
    tick(10);
    assert_int_equal(handle(a, (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = gb.m.seq, .pages = 30}),
                     0);
    expect_grant(b, seq, 30, 0);
    no_more_out();
    assert_int_equal(W.clients[a].held, POOL - 30);
    assert_false(W.clients[a].gb_active);
    assert_int_equal(W.b.gb_active, 0);
}

static void test_giveback_for_request_is_normal(void **state)
{
    (void)state;
    uint32_t a = client(MB_BIDIRECTIONAL), b = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, 90, 0), 90, 0);
    uint32_t seq = ask(b, MB_T_REQUEST, 30, 0);
    sent gb = expect_giveback(a, 20, MB_NORMAL); /* 10 are free */
    no_more_out();                               /* the REQUEST waits for it */
    assert_int_equal(handle(a, (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = gb.m.seq, .pages = 5}),
                     0);
    /* gave less: no give-back under way any more, the REQUEST takes what there is */
    expect_grant(b, seq, 15, 0);
    no_more_out();
    /* a client that gave less than asked rests before it is asked again */
    seq = ask(b, MB_T_REQUEST, 10, 0);
    expect_grant(b, seq, 0, 0);
    tick(GB_TIMEOUT);
    seq = ask(b, MB_T_REQUEST, 10, 0);
    gb = expect_giveback(a, 10, MB_NORMAL);
    tick(REQ_TIMEOUT); /* the REQUEST's own deadline */
    expect_grant(b, seq, 0, 0);
    no_more_out();
    /* a late answer still returns its pages */
    assert_int_equal(handle(a, (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = gb.m.seq, .pages = 10}),
                     0);
    assert_int_equal(W.clients[a].held, 75);
    assert_int_equal(_mb_broker_free(&W.b), 10);
}

static void test_silent_client_counts_as_zero(void **state)
{
    (void)state;
    uint32_t a = client(MB_BIDIRECTIONAL), b = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, POOL, 0), POOL, 0);
    uint32_t seq = ask(b, MB_T_RESERVE, 10, 250);
    expect_giveback(a, 10, MB_URGENT);
    tick(GB_TIMEOUT - 1);
    no_more_out();
    tick(1); /* no answer: counts as 0, a rests */
    no_more_out();
    assert_false(W.clients[a].gb_active);
    assert_true(W.n_log > 0);
    tick(GB_TIMEOUT); /* rest over, the RESERVE still waits: asked again */
    expect_giveback(a, 10, MB_URGENT);
    tick(50); /* the RESERVE's deadline */
    expect_grant(b, seq, 0, -ETIMEDOUT);
    no_more_out();
    assert_int_equal(W.clients[a].held, POOL);
}

static void test_largest_holder_first(void **state)
{
    (void)state;
    uint32_t a = client(MB_BIDIRECTIONAL), c = client(MB_BIDIRECTIONAL), s = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, 30, 0), 30, 0);
    expect_grant(c, ask(c, MB_T_REQUEST, 60, 0), 60, 0);
    expect_grant(s, ask(s, MB_T_REQUEST, 10, 0), 10, 0);
    uint32_t seq = ask(s, MB_T_RESERVE, 70, 500);
    sent g1 = expect_giveback(c, 60, MB_URGENT);
    sent g2 = expect_giveback(a, 10, MB_URGENT);
    no_more_out();
    handle(c, (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = g1.m.seq, .pages = 60});
    no_more_out(); /* 60 of 70 */
    handle(a, (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = g2.m.seq, .pages = 10});
    expect_grant(s, seq, 70, 0);
    no_more_out();
}

/* A waiting head claims what is free: nothing behind it is served first. */
static void test_waiting_head_claims_free_pages(void **state)
{
    (void)state;
    uint32_t h = client(MB_SIMPLE), r1 = client(MB_SIMPLE), v1 = client(MB_SIMPLE),
             v2 = client(MB_SIMPLE);
    expect_grant(h, ask(h, MB_T_REQUEST, 95, 0), 95, 0);
    uint32_t q1 = ask(v1, MB_T_RESERVE, 20, 1000); /* waits: 5 free */
    no_more_out();
    /* 3 <= 5 free, but v1 claims them; no give-back can come: 0 at once */
    expect_grant(r1, ask(r1, MB_T_REQUEST, 3, 0), 0, 0);
    uint32_t q3 = ask(v2, MB_T_RESERVE, 10, 1000);
    no_more_out();
    /* 20 come back: v1 (first come) is served; v2 still waits */
    handle(h, (mb_msg){.type = MB_T_RETURN, .pages = 20});
    assert_int_equal(next_out().m.type, MB_T_RETURNED);
    expect_grant(v1, q1, 20, 0);
    no_more_out();
    handle(h, (mb_msg){.type = MB_T_RETURN, .pages = 5});
    assert_int_equal(next_out().m.type, MB_T_RETURNED);
    expect_grant(v2, q3, 10, 0);
    no_more_out();
    assert_int_equal(_mb_broker_free(&W.b), 0);
}

/* Every RESERVE is served before every REQUEST, even one that came first. */
static void test_urgent_first(void **state)
{
    (void)state;
    uint32_t a = client(MB_BIDIRECTIONAL), r = client(MB_SIMPLE), v = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, POOL, 0), POOL, 0);
    uint32_t qr = ask(r, MB_T_REQUEST, 10, 0);
    sent g1 = expect_giveback(a, 10, MB_NORMAL);
    uint32_t qv = ask(v, MB_T_RESERVE, 10, 1000);
    no_more_out(); /* a is already being asked */
    handle(a, (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = g1.m.seq, .pages = 10});
    expect_grant(v, qv, 10, 0);                  /* the later RESERVE first */
    sent g2 = expect_giveback(a, 10, MB_NORMAL); /* then more for the REQUEST */
    handle(a, (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = g2.m.seq, .pages = 10});
    expect_grant(r, qr, 10, 0);
    no_more_out();
}

static void test_detach_returns_quota_and_serves_waiters(void **state)
{
    (void)state;
    uint32_t a = client(MB_BIDIRECTIONAL), b = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, POOL, 0), POOL, 0);
    uint32_t seq = ask(b, MB_T_RESERVE, 50, 1000);
    expect_giveback(a, 50, MB_URGENT);
    _mb_broker_detach(&W.b, a, W.now); /* dies while asked */
    expect_grant(b, seq, 50, 0);
    no_more_out();
    assert_int_equal(W.b.gb_active, 0);
    assert_false(W.clients[a].in_use);
    assert_int_equal(_mb_broker_free(&W.b), 50);
    /* its waiting requests go with it, unanswered */
    uint32_t c = client(MB_SIMPLE);
    expect_grant(c, ask(c, MB_T_REQUEST, 50, 0), 50, 0);
    ask(b, MB_T_RESERVE, 10, 1000);
    _mb_broker_detach(&W.b, b, W.now);
    no_more_out();
    assert_int_equal(_mb_broker_free(&W.b), 50);
    assert_int_equal(_mb_broker_next_deadline(&W.b, W.now), UINT64_MAX);
    _mb_broker_detach(&W.b, b, W.now); /* twice: harmless */
    _mb_broker_detach(&W.b, CAP + 5, W.now);
}

static void test_giveback_reply_more_than_held(void **state)
{
    (void)state;
    uint32_t a = client(MB_BIDIRECTIONAL), b = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, POOL, 0), POOL, 0);
    uint32_t seq = ask(b, MB_T_RESERVE, 10, 1000);
    sent gb = expect_giveback(a, 10, MB_URGENT);
    assert_int_equal(
        handle(a, (mb_msg){.type = MB_T_GIVEBACK_REPLY, .seq = gb.m.seq, .pages = POOL + 1}),
        -EINVAL);
    expect_error(a, -EINVAL);
    assert_int_equal(W.clients[a].held, POOL);
    assert_false(W.clients[a].gb_active); /* counts as 0 */
    tick(RESERVE_MAX);
    expect_grant(b, seq, 0, -ETIMEDOUT);
}

static void test_inflight_limit_and_table_full(void **state)
{
    (void)state;
    uint32_t a = client(MB_SIMPLE), b = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, POOL, 0), POOL, 0);
    for (int i = 0; i < MB_MAX_INFLIGHT; i++)
        ask(b, MB_T_RESERVE, 1, 1000);
    no_more_out();
    const char *why;
    mb_msg m = {.type = MB_T_RESERVE, .seq = 999, .pages = 1, .timeout_ms = 1000};
    assert_int_equal(_mb_broker_handle(&W.b, b, &m, W.now, &why), -EBUSY);
    expect_grant(b, 999, 0, -EBUSY);
    for (int i = 2; i < CAP; i++)
        client(MB_SIMPLE);
    assert_int_equal(_mb_broker_attach(&W.b, 1, 1, "x"), -EBUSY);
}

static void test_status_batches(void **state)
{
    (void)state;
    for (int i = 0; i < CAP; i++)
        client(i % 2 ? MB_BIDIRECTIONAL : MB_SIMPLE);
    expect_grant(1, ask(1, MB_T_REQUEST, 7, 0), 7, 0);
    _mb_broker_detach(&W.b, 2, W.now);
    uint32_t cursor = 0, entries = 0;
    for (int round = 0; round < 10; round++) {
        assert_int_equal(handle(0, (mb_msg){.type = MB_T_STATUS, .cursor = cursor}), 0);
        sent s;
        while ((s = next_out()).m.type == MB_T_STATUS_ENTRY) {
            assert_int_not_equal(s.m.cursor, 2);
            if (s.m.cursor == 1) {
                assert_int_equal(s.m.held, 7);
                assert_int_equal(s.m.kind, 1);
            }
            assert_string_equal(s.m.comm, "test");
            entries++;
        }
        assert_int_equal(s.m.type, MB_T_STATUS_END);
        assert_int_equal(s.m.pool, POOL);
        assert_int_equal(s.m.free, POOL - 7);
        assert_int_equal(s.m.count, CAP - 1);
        assert_int_equal(s.m.capacity, CAP);
        if (s.m.flags & MB_END_DONE) break;
        cursor = s.m.cursor;
    }
    assert_int_equal(entries, CAP - 1);
}

static void test_status_reports_waiting_and_giveback(void **state)
{
    (void)state;
    uint32_t a = client(MB_BIDIRECTIONAL), b = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, POOL, 0), POOL, 0);
    ask(b, MB_T_RESERVE, 10, 1000);
    expect_giveback(a, 10, MB_URGENT);
    handle(b, (mb_msg){.type = MB_T_STATUS});
    sent ea = next_out(), eb = next_out();
    assert_int_equal(ea.m.flags, MB_ENTRY_GIVEBACK);
    assert_int_equal(eb.m.count, 1);
    assert_int_equal(eb.m.waiting, 10);
    assert_int_equal(next_out().m.type, MB_T_STATUS_END);
}

static void test_pool_shrinks_on_reload(void **state)
{
    (void)state;
    uint32_t a = client(MB_SIMPLE);
    expect_grant(a, ask(a, MB_T_REQUEST, 80, 0), 80, 0);
    mb_broker_cfg cfg = W.b.cfg;
    cfg.pool_pages = 50;
    _mb_broker_configure(&W.b, &cfg, W.now);
    assert_int_equal(_mb_broker_free(&W.b), 0);
    expect_grant(a, ask(a, MB_T_REQUEST, 1, 0), 0, 0);
    handle(a, (mb_msg){.type = MB_T_RETURN, .pages = 40});
    assert_int_equal(next_out().m.type, MB_T_RETURNED);
    assert_int_equal(_mb_broker_free(&W.b), 10);
    assert_int_equal(_mb_broker_registered(&W.b), 1);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, setup)
    const struct CMUnitTest tests[] = {
        T(test_request_granted_in_full_and_in_part),
        T(test_reserve_all_or_nothing),
        T(test_return_more_than_held_refused),
        T(test_out_of_order_records),
        T(test_giveback_serves_reserve),
        T(test_giveback_for_request_is_normal),
        T(test_silent_client_counts_as_zero),
        T(test_largest_holder_first),
        T(test_waiting_head_claims_free_pages),
        T(test_urgent_first),
        T(test_detach_returns_quota_and_serves_waiters),
        T(test_giveback_reply_more_than_held),
        T(test_inflight_limit_and_table_full),
        T(test_status_batches),
        T(test_status_reports_waiting_and_giveback),
        T(test_pool_shrinks_on_reload),
    };
    return cmocka_run_group_tests_name("membroker_broker", tests, NULL, NULL);
}

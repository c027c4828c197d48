/* membroker's decisions: pool, client table, request queue, give-backs.
 * The rules are in broker.h; each is marked below where it is applied.
 * No sockets, no clock, no allocation: the daemon and the tests drive it.
 */
#include "broker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { Q_RESERVE = 0, Q_REQUEST = 1 };

static void logf_(mb_broker *b, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(mb_broker *b, int level, const char *fmt, ...)
{
    if (!b->log) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    b->log(b->ctx, level, line);
}

uint64_t _mb_broker_free(const mb_broker *b)
{
    return b->cfg.pool_pages > b->held_total ? b->cfg.pool_pages - b->held_total : 0;
}

uint32_t _mb_broker_registered(const mb_broker *b)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < b->capacity; i++)
        n += b->clients[i].registered;
    return n;
}

static void send(mb_broker *b, uint32_t slot, const mb_msg *m)
{
    b->send(b->ctx, slot, m);
}

static void send_error(mb_broker *b, uint32_t slot, const mb_msg *about, int err)
{
    mb_msg r = {.type = MB_T_ERROR, .seq = about->seq, .status = err, .flags = about->type};
    send(b, slot, &r);
}

/* ---- quota accounting: the pool, the client, its class ---- */

static void add_held(mb_broker *b, mb_bclient *c, uint64_t pages)
{
    c->held += pages;
    b->held_total += pages;
    if (c->cls < b->n_classes) b->classes[c->cls].held += pages;
}

static void sub_held(mb_broker *b, mb_bclient *c, uint64_t pages)
{
    c->held -= pages;
    b->held_total -= pages;
    if (c->cls < b->n_classes) b->classes[c->cls].held -= pages;
}

/* ---- the queue: two FIFO lists of pending entries, linked by index ---- */

static int queue_of(const mb_pending *p)
{
    return p->type == MB_T_RESERVE ? Q_RESERVE : Q_REQUEST;
}

static int32_t pend_alloc(mb_broker *b)
{
    int32_t i = b->free_list;
    if (i >= 0) b->free_list = b->pending[i].next;
    return i;
}

static void enqueue(mb_broker *b, int32_t i)
{
    mb_pending *p = &b->pending[i];
    int q = queue_of(p);
    p->next = -1;
    p->prev = b->tail[q];
    if (b->tail[q] >= 0)
        b->pending[b->tail[q]].next = i;
    else
        b->head[q] = i;
    b->tail[q] = i;
    b->clients[p->slot].outstanding++;
}

/* Unlinks entry i and puts it on the free list. */
static void dequeue(mb_broker *b, int32_t i)
{
    mb_pending *p = &b->pending[i];
    int q = queue_of(p);
    if (p->prev >= 0)
        b->pending[p->prev].next = p->next;
    else
        b->head[q] = p->next;
    if (p->next >= 0)
        b->pending[p->next].prev = p->prev;
    else
        b->tail[q] = p->prev;
    b->clients[p->slot].outstanding--;
    memset(p, 0, sizeof *p);
    p->next = b->free_list;
    p->prev = -1;
    b->free_list = i;
}

/* Answers entry i: `pages` granted (status 0) or none (status < 0). */
static void answer(mb_broker *b, int32_t i, uint64_t pages, int status)
{
    mb_pending *p = &b->pending[i];
    mb_bclient *c = &b->clients[p->slot];
    add_held(b, c, pages);
    mb_msg r = {
        .type = MB_T_GRANT, .seq = p->seq, .status = status, .pages = pages, .held = c->held};
    uint32_t slot = p->slot;
    dequeue(b, i);
    send(b, slot, &r);
}

/* ---- give-back ---- */

static void end_giveback(mb_broker *b, mb_bclient *c, uint64_t now, bool rest)
{
    c->gb_active = false;
    c->gb_target = 0;
    b->gb_active--;
    if (rest) c->gb_rest_until = now + b->cfg.giveback_timeout_ms;
}

static void expire_givebacks(mb_broker *b, uint64_t now)
{
    if (b->gb_active == 0) return;
    for (uint32_t i = 0; i < b->capacity; i++) {
        mb_bclient *c = &b->clients[i];
        if (c->gb_active && now >= c->gb_deadline) {
            logf_(b, 4,
                  "pid %u (%s) did not answer give-back of %llu pages within %u ms: counts as 0",
                  c->pid, c->comm, (unsigned long long)c->gb_target, b->cfg.giveback_timeout_ms);
            end_giveback(b, c, now, true);
        }
    }
}

static void ask_one(mb_broker *b, uint32_t slot, uint64_t pages, bool urgent, uint64_t now)
{
    mb_bclient *c = &b->clients[slot];
    if (++b->gb_seq == 0) b->gb_seq = 1;
    c->gb_active = true;
    c->gb_seq = b->gb_seq;
    c->gb_target = pages;
    c->gb_deadline = now + b->cfg.giveback_timeout_ms;
    b->gb_active++;
    mb_msg m = {.type = MB_T_GIVEBACK,
                .seq = c->gb_seq,
                .pages = pages,
                .urgency = urgent ? 1 : 0,
                .timeout_ms = b->cfg.giveback_timeout_ms};
    logf_(b, 7, "asking pid %u (%s) to give back %llu pages (%s)", c->pid, c->comm,
          (unsigned long long)pages, urgent ? "urgent" : "normal");
    send(b, slot, &m);
}

static bool can_ask(const mb_bclient *c, uint64_t now)
{
    return c->registered && c->kind == 1 && !c->gb_active && c->held > 0 && c->outstanding == 0 &&
           now >= c->gb_rest_until;
}

/* Rule 4: ask bidirectional clients without waiting requests, largest
 * holder first, for the part of `shortfall` not already asked for. On
 * behalf of class k, another class gives only what it holds above its
 * minimum (issue 7). */
static void ask_givebacks(mb_broker *b, uint64_t now, uint64_t shortfall, bool urgent, uint32_t k)
{
    uint64_t asked = 0;
    for (uint32_t i = 0; i < b->capacity && b->gb_active; i++)
        if (b->clients[i].gb_active) asked += b->clients[i].gb_target;
    if (shortfall <= asked) return;
    uint64_t want = shortfall - asked;
    uint64_t budget[MB_MAX_CLASSES];
    for (uint32_t j = 0; j < b->n_classes; j++)
        budget[j] = _mb_class_reclaimable(b->classes, j, k);
    while (want > 0) {
        mb_bclient *best = NULL;
        uint32_t best_slot = 0;
        for (uint32_t i = 0; i < b->capacity; i++) {
            mb_bclient *c = &b->clients[i];
            if (!can_ask(c, now) || (c->cls < b->n_classes && budget[c->cls] == 0)) continue;
            if (!best || c->held > best->held) {
                best = c;
                best_slot = i;
            }
        }
        if (!best) break;
        uint64_t t = best->held < want ? best->held : want;
        if (best->cls < b->n_classes) {
            if (t > budget[best->cls]) t = budget[best->cls];
            budget[best->cls] -= t;
        }
        ask_one(b, best_slot, t, urgent, now);
        want -= t;
    }
}

/* ---- low-memory policy (issue 7) ---- */

static void notify_all(mb_broker *b, int prev)
{
    const mb_policy *p = &b->pol;
    for (uint32_t i = 0; i < b->capacity; i++) {
        if (!b->clients[i].subscribed) continue;
        mb_msg m = {.type = MB_T_NOTIFY,
                    .held = b->held_total,
                    .pool = b->cfg.pool_pages,
                    .free = b->cfg.page_size ? p->mem_available / b->cfg.page_size : 0,
                    .page_size = b->cfg.page_size,
                    .level = (uint32_t)p->level,
                    .prev = (uint32_t)prev,
                    .reasons = p->reasons};
        if (m.free > MB_MAX_PAGES) m.free = MB_MAX_PAGES;
        send(b, i, &m);
    }
}

/* A give-back round: every bidirectional client that can be asked gives
 * PRESSURE_GIVEBACK percent of what it holds (urgent when CRITICAL). */
static void pressure_round(mb_broker *b, uint64_t now)
{
    mb_policy *p = &b->pol;
    p->next_round = p->cfg.interval_ms ? now + p->cfg.interval_ms : UINT64_MAX;
    if (p->cfg.giveback_pct == 0) return;
    bool urgent = p->level == MB_LVL_CRITICAL;
    unsigned n = 0;
    for (uint32_t i = 0; i < b->capacity; i++) {
        mb_bclient *c = &b->clients[i];
        if (!can_ask(c, now)) continue;
        uint64_t t = c->held / 100 * p->cfg.giveback_pct + c->held % 100 * p->cfg.giveback_pct / 100;
        ask_one(b, i, t ? t : 1, urgent, now);
        n++;
    }
    if (n) logf_(b, 6, "memory %s: asked %u clients to give back %u%% (%s)", _mb_level_name(p->level),
                 n, p->cfg.giveback_pct, urgent ? "urgent" : "normal");
}

static void ask_kill(mb_broker *b, uint64_t now, const char *why)
{
    if (!b->kill || b->kill_busy || now < b->kill_quiet_until) return;
    if (b->kill(b->ctx, why))
        b->kill_busy = true;
    else
        b->kill_quiet_until = now + b->cfg.giveback_timeout_ms + 1000;
}

/* Feeds the quota into the state machine; tells subscribers and asks for
 * give-backs when the level goes up. */
static void policy_update(mb_broker *b, uint64_t now)
{
    mb_policy *p = &b->pol;
    p->held = b->held_total;
    int prev;
    if (_mb_policy_eval(p, now, &prev)) {
        char r[96];
        _mb_reasons_str(p->reasons, r, sizeof r);
        logf_(b, p->level > prev ? 4 : 6,
              "memory level %s -> %s (%s): granted %llu of %llu pages, MemAvailable %llu KiB",
              _mb_level_name(prev), _mb_level_name(p->level), r, (unsigned long long)b->held_total,
              (unsigned long long)b->cfg.pool_pages, (unsigned long long)(p->mem_available >> 10));
        notify_all(b, prev);
        if (p->level > prev) pressure_round(b, now);
    } else if (p->level > 0 && p->cfg.interval_ms && now >= p->next_round) {
        pressure_round(b, now);
    }
    if (_mb_policy_kill_due(p, now)) {
        char why[160];
        snprintf(why, sizeof why, "past the allocation threshold for %u ms (granted %llu of %llu pages)",
                 p->cfg.kill_grace_ms, (unsigned long long)b->held_total,
                 (unsigned long long)b->cfg.pool_pages);
        _mb_policy_grace_restart(p, now);
        ask_kill(b, now, why);
    }
}

/* Rules 1-3: serve the queue in order, answer what has expired, then ask
 * for give-backs. */
static void run(mb_broker *b, uint64_t now)
{
    expire_givebacks(b, now);
    policy_update(b, now);
    bool critical = b->pol.level == MB_LVL_CRITICAL;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 1: no give-back is under way, so a waiting REQUEST has nothing
         * to wait for: answer it now (rule 3) */
        bool settle_requests = pass == 1;
        uint64_t avail = _mb_broker_free(b);
        uint64_t shortfall = 0;
        uint64_t unmet_urgent = 0;
        bool reserve_waits = false, request_waits = false;
        for (int q = Q_RESERVE; q <= Q_REQUEST; q++) {
            for (int32_t i = b->head[q], next; i >= 0; i = next) {
                mb_pending *p = &b->pending[i];
                next = p->next;
                uint32_t k = b->clients[p->slot].cls;
                /* what this request may take: what is free, within its class's
                 * cap and the other classes' minimums, and for a REQUEST
                 * below the allocation threshold (issue 7) */
                uint64_t room = avail;
                if (b->n_classes > 1 || b->classes[0].cap < b->cfg.pool_pages) {
                    uint64_t cr = _mb_class_room(b->classes, b->n_classes, k, avail);
                    if (cr < room) room = cr;
                }
                if (q == Q_REQUEST && b->pol.mat.quota_pages) {
                    uint64_t mr = b->pol.mat.quota_pages > b->held_total
                                      ? b->pol.mat.quota_pages - b->held_total
                                      : 0;
                    if (mr < room) room = mr;
                }
                if (q == Q_REQUEST && critical) { /* past MAT: REQUEST fails fast */
                    answer(b, i, 0, -ENOMEM);
                } else if (p->pages <= room) { /* rule 2: the head is served in full */
                    avail -= p->pages;
                    answer(b, i, p->pages, 0);
                } else if (q == Q_RESERVE && p->try_only) {
                    answer(b, i, 0, -EAGAIN);
                } else if (q == Q_RESERVE && now >= p->deadline) {
                    answer(b, i, 0, -ETIMEDOUT);
                } else if (q == Q_REQUEST && (settle_requests || now >= p->deadline)) {
                    uint64_t g = room; /* < p->pages here */
                    avail -= room;
                    answer(b, i, g, 0);
                } else { /* rule 2: it waits and claims all that it may take */
                    shortfall += p->pages - room;
                    avail -= room;
                    if (pass == 0)
                        ask_givebacks(b, now, shortfall, q == Q_RESERVE || reserve_waits, k);
                    if (q == Q_RESERVE) {
                        reserve_waits = true;
                        unmet_urgent += p->pages - room;
                    } else {
                        request_waits = true;
                    }
                }
            }
        }
        if (pass == 1) break;
        /* an urgent demand that no give-back can meet any more (issue 7) */
        if (unmet_urgent && b->gb_active == 0 && b->kill_on_urgent) {
            char why[128];
            snprintf(why, sizeof why, "a RESERVE is short of %llu pages after give-back",
                     (unsigned long long)unmet_urgent);
            ask_kill(b, now, why);
        }
        if (!request_waits || b->gb_active > 0) break;
    }
    policy_update(b, now);
}

/* ---- public ---- */

void _mb_broker_init(mb_broker *b, const mb_broker_cfg *cfg, mb_bclient *clients, uint32_t capacity,
                     mb_pending *pending, mb_send_fn send_fn, mb_log_fn log, void *ctx)
{
    memset(b, 0, sizeof *b);
    b->cfg = *cfg;
    b->clients = clients;
    b->capacity = capacity;
    b->pending = pending;
    b->pending_cap = capacity * MB_MAX_INFLIGHT;
    b->send = send_fn;
    b->log = log;
    b->ctx = ctx;
    memset(clients, 0, sizeof *clients * capacity);
    memset(pending, 0, sizeof *pending * b->pending_cap);
    for (uint32_t i = 0; i < b->pending_cap; i++) {
        pending[i].next = i + 1 < b->pending_cap ? (int32_t)(i + 1) : -1;
        pending[i].prev = -1;
    }
    b->free_list = b->pending_cap ? 0 : -1;
    b->head[0] = b->head[1] = b->tail[0] = b->tail[1] = -1;
    _mb_policy_init(&b->pol);
    b->n_classes = 1;
    snprintf(b->classes[0].name, sizeof b->classes[0].name, "default");
    b->classes[0].cap = MB_MAX_PAGES;
    mb_policy_cfg off = {0};
    _mb_policy_configure(&b->pol, &off, cfg->pool_pages, cfg->page_size, 0);
}

void _mb_broker_set_policy(mb_broker *b, const mb_policy_cfg *pc, const mb_class *classes,
                           uint32_t n, bool class_by_request, bool kill_on_urgent,
                           uint64_t mem_total, mb_kill_fn kill, uint64_t now)
{
    if (n == 0 || n > MB_MAX_CLASSES) n = 1;
    for (uint32_t k = 0; k < n; k++) {
        snprintf(b->classes[k].name, sizeof b->classes[k].name, "%s", classes ? classes[k].name : "default");
        b->classes[k].min = classes ? classes[k].min : 0;
        b->classes[k].cap = classes ? classes[k].cap : MB_MAX_PAGES;
        b->classes[k].held = 0;
        b->classes[k].clients = 0;
    }
    b->n_classes = n;
    for (uint32_t i = 0; i < b->capacity; i++) {
        mb_bclient *c = &b->clients[i];
        if (!c->in_use) continue;
        if (c->cls >= n) c->cls = 0;
        b->classes[c->cls].held += c->held;
        b->classes[c->cls].clients += c->registered;
    }
    b->class_by_request = class_by_request;
    b->kill_on_urgent = kill_on_urgent;
    b->kill = kill;
    _mb_policy_configure(&b->pol, pc, b->cfg.pool_pages, b->cfg.page_size, mem_total);
    run(b, now);
}

void _mb_broker_set_class(mb_broker *b, uint32_t slot, uint32_t cls)
{
    if (slot >= b->capacity || cls >= b->n_classes) return;
    mb_bclient *c = &b->clients[slot];
    if (c->registered || c->held) return; /* only before HELLO */
    c->cls = (uint8_t)cls;
}

void _mb_broker_meminfo(mb_broker *b, uint64_t mem_available, uint64_t now)
{
    b->pol.mem_available = mem_available;
    run(b, now);
}

void _mb_broker_pressure(mb_broker *b, uint32_t reason, uint64_t now)
{
    _mb_policy_event(&b->pol, reason, now);
    run(b, now);
}

void _mb_broker_kill_done(mb_broker *b, uint64_t now)
{
    b->kill_busy = false;
    _mb_policy_grace_restart(&b->pol, now);
    run(b, now);
}

void _mb_broker_configure(mb_broker *b, const mb_broker_cfg *cfg, uint64_t now)
{
    b->cfg = *cfg;
    _mb_policy_configure(&b->pol, &b->pol.cfg, cfg->pool_pages, cfg->page_size, b->pol.mem_total);
    run(b, now);
}

int _mb_broker_attach(mb_broker *b, uint32_t pid, uint32_t uid, const char *comm)
{
    for (uint32_t i = 0; i < b->capacity; i++) {
        mb_bclient *c = &b->clients[i];
        if (c->in_use) continue;
        memset(c, 0, sizeof *c);
        c->in_use = true;
        c->pid = pid;
        c->uid = uid;
        if (comm) snprintf(c->comm, sizeof c->comm, "%s", comm);
        return (int)i;
    }
    return -EBUSY;
}

void _mb_broker_detach(mb_broker *b, uint32_t slot, uint64_t now)
{
    if (slot >= b->capacity || !b->clients[slot].in_use) return;
    mb_bclient *c = &b->clients[slot];
    for (int q = Q_RESERVE; q <= Q_REQUEST; q++) {
        for (int32_t i = b->head[q], next; i >= 0; i = next) {
            next = b->pending[i].next;
            if (b->pending[i].slot == slot) dequeue(b, i);
        }
    }
    if (c->gb_active) end_giveback(b, c, now, false);
    if (c->held)
        logf_(b, 6, "pid %u (%s) gone: %llu pages back in the pool", c->pid, c->comm,
              (unsigned long long)c->held);
    sub_held(b, c, c->held);
    if (c->registered && c->cls < b->n_classes && b->classes[c->cls].clients)
        b->classes[c->cls].clients--;
    memset(c, 0, sizeof *c);
    run(b, now);
}

static void status_reply(mb_broker *b, uint32_t slot, const mb_msg *m)
{
    uint32_t i = m->cursor, sent = 0;
    for (; i < b->capacity && sent < MB_STATUS_BATCH; i++) {
        const mb_bclient *c = &b->clients[i];
        if (!c->registered) continue;
        mb_msg e = {.type = MB_T_STATUS_ENTRY,
                    .seq = m->seq,
                    .held = c->held,
                    .pid = c->pid,
                    .uid = c->uid,
                    .cursor = i,
                    .kind = c->kind,
                    .count = c->outstanding,
                    .flags = c->gb_active ? MB_ENTRY_GIVEBACK : 0,
                    .class_id = (m->flags & MB_STATUS_EXT) ? c->cls : 0};
        memcpy(e.comm, c->comm, sizeof e.comm);
        e.comm[sizeof e.comm - 1] = '\0';
        for (int q = Q_RESERVE; q <= Q_REQUEST; q++)
            for (int32_t k = b->head[q]; k >= 0; k = b->pending[k].next)
                if (b->pending[k].slot == i) e.waiting += b->pending[k].pages;
        send(b, slot, &e);
        sent++;
    }
    while (i < b->capacity && !b->clients[i].registered)
        i++;
    mb_msg end = {.type = MB_T_STATUS_END,
                  .seq = m->seq,
                  .pool = b->cfg.pool_pages,
                  .free = _mb_broker_free(b),
                  .page_size = b->cfg.page_size,
                  .cursor = i,
                  .count = _mb_broker_registered(b),
                  .capacity = b->capacity,
                  .flags = i >= b->capacity ? MB_END_DONE : 0};
    send(b, slot, &end);
}

static void policy_reply(mb_broker *b, uint32_t slot, const mb_msg *m)
{
    const mb_policy *p = &b->pol;
    mb_msg r = {.type = MB_T_POLICY_INFO,
                .seq = m->seq,
                .pages = p->st.quota_pages,
                .held = b->held_total,
                .pool = b->cfg.pool_pages,
                .free = b->cfg.page_size ? p->mem_available / b->cfg.page_size : 0,
                .waiting = p->mat.quota_pages,
                .page_size = b->cfg.page_size,
                .level = (uint32_t)p->level,
                .reasons = p->reasons,
                .count = b->n_classes,
                .flags = b->pressure_flags};
    if (r.free > MB_MAX_PAGES) r.free = MB_MAX_PAGES;
    if (r.pages > MB_MAX_PAGES) r.pages = MB_MAX_PAGES;
    if (r.waiting > MB_MAX_PAGES) r.waiting = MB_MAX_PAGES;
    send(b, slot, &r);
    for (uint32_t k = 0; k < b->n_classes; k++) {
        const mb_class *cl = &b->classes[k];
        mb_msg e = {.type = MB_T_CLASS_INFO,
                    .seq = m->seq,
                    .pages = cl->min < MB_MAX_PAGES ? cl->min : MB_MAX_PAGES,
                    .held = cl->held,
                    .pool = cl->cap < MB_MAX_PAGES ? cl->cap : MB_MAX_PAGES,
                    .cursor = k,
                    .count = cl->clients};
        snprintf(e.comm, sizeof e.comm, "%s", cl->name);
        send(b, slot, &e);
    }
}

static int refuse(mb_broker *b, uint32_t slot, const mb_msg *m, int err, const char **why,
                  const char *reason)
{
    send_error(b, slot, m, err);
    *why = reason;
    return err;
}

static int on_giveback_reply(mb_broker *b, uint32_t slot, const mb_msg *m, uint64_t now,
                             const char **why)
{
    mb_bclient *c = &b->clients[slot];
    if (c->gb_seq == 0 || m->seq == 0)
        return refuse(b, slot, m, -EPROTO, why, "give-back answer without a give-back request");
    bool current = c->gb_active && m->seq == c->gb_seq;
    if (m->pages > c->held) {
        if (current) end_giveback(b, c, now, true);
        run(b, now);
        return refuse(b, slot, m, -EINVAL, why, "give-back answer of more pages than held");
    }
    sub_held(b, c, m->pages);
    if (current)
        end_giveback(b, c, now, m->pages < c->gb_target);
    else
        logf_(b, 6, "pid %u (%s) answered a give-back late: %llu pages", c->pid, c->comm,
              (unsigned long long)m->pages);
    run(b, now);
    return 0;
}

int _mb_broker_handle(mb_broker *b, uint32_t slot, const mb_msg *m, uint64_t now, const char **why)
{
    static const char *none = "";
    *why = none;
    if (slot >= b->capacity || !b->clients[slot].in_use) return -EBADF;
    mb_bclient *c = &b->clients[slot];
    if (!_mb_msg_from_client(m->type))
        return refuse(b, slot, m, -EPROTO, why, "not a record a client may send");
    if (m->type == MB_T_STATUS) {
        status_reply(b, slot, m);
        return 0;
    }
    if (m->type == MB_T_SUBSCRIBE) {
        c->subscribed = true;
        const mb_policy *p = &b->pol;
        mb_msg r = {.type = MB_T_NOTIFY,
                    .seq = m->seq,
                    .held = b->held_total,
                    .pool = b->cfg.pool_pages,
                    .free = b->cfg.page_size ? p->mem_available / b->cfg.page_size : 0,
                    .page_size = b->cfg.page_size,
                    .level = (uint32_t)p->level,
                    .prev = (uint32_t)p->level,
                    .reasons = p->reasons};
        send(b, slot, &r);
        return 0;
    }
    if (m->type == MB_T_POLICY) {
        policy_reply(b, slot, m);
        return 0;
    }
    if (m->type == MB_T_REPORT) /* the daemon answers it (it writes files) */
        return refuse(b, slot, m, -EOPNOTSUPP, why, "REPORT not handled here");
    if (m->type == MB_T_HELLO) {
        if (c->registered) return refuse(b, slot, m, -EPROTO, why, "second HELLO");
        if (m->comm[0]) { /* a class asked for (issue 7) */
            if (!b->class_by_request)
                return refuse(b, slot, m, -EPERM, why, "class asked for, CLASS_BY_REQUEST is off");
            uint32_t k = 0;
            while (k < b->n_classes && strncmp(b->classes[k].name, m->comm, sizeof m->comm))
                k++;
            if (k == b->n_classes) return refuse(b, slot, m, -ESRCH, why, "no such class");
            c->cls = (uint8_t)k;
        }
        c->registered = true;
        if (c->cls < b->n_classes) b->classes[c->cls].clients++;
        c->kind = (uint8_t)m->kind;
        mb_msg r = {.type = MB_T_WELCOME,
                    .seq = m->seq,
                    .page_size = b->cfg.page_size,
                    .pool = b->cfg.pool_pages,
                    .cursor = slot,
                    .count = MB_MAX_INFLIGHT};
        send(b, slot, &r);
        return 0;
    }
    if (!c->registered) return refuse(b, slot, m, -EPROTO, why, "record before HELLO");

    switch (m->type) {
    case MB_T_REQUEST:
    case MB_T_RESERVE: {
        if (m->type == MB_T_RESERVE &&
            (m->pages > b->cfg.pool_pages || m->pages > b->classes[c->cls].cap)) {
            mb_msg r = {.type = MB_T_GRANT, .seq = m->seq, .status = -ENOSPC, .held = c->held};
            send(b, slot, &r);
            return 0;
        }
        if (c->outstanding >= MB_MAX_INFLIGHT) {
            mb_msg r = {.type = MB_T_GRANT, .seq = m->seq, .status = -EBUSY, .held = c->held};
            send(b, slot, &r);
            *why = "too many requests waiting";
            return -EBUSY;
        }
        int32_t i = pend_alloc(b);
        if (i < 0) /* cannot happen: MB_MAX_INFLIGHT per client */
            return refuse(b, slot, m, -EBUSY, why, "request queue full");
        mb_pending *p = &b->pending[i];
        p->slot = slot;
        p->seq = m->seq;
        p->type = m->type;
        p->pages = m->pages;
        if (m->type == MB_T_REQUEST) {
            p->deadline = now + b->cfg.request_timeout_ms;
        } else {
            uint32_t t =
                m->timeout_ms < b->cfg.reserve_max_ms ? m->timeout_ms : b->cfg.reserve_max_ms;
            p->try_only = t == 0;
            p->deadline = now + t;
        }
        enqueue(b, i);
        run(b, now);
        return 0;
    }
    case MB_T_RETURN: {
        mb_msg r = {.type = MB_T_RETURNED, .seq = m->seq};
        int rc = 0;
        if (m->pages > c->held) {
            r.status = -EINVAL;
            *why = "RETURN of more pages than held";
            rc = -EINVAL;
        } else {
            sub_held(b, c, m->pages);
        }
        r.held = c->held;
        send(b, slot, &r);
        if (rc == 0) run(b, now);
        return rc;
    }
    case MB_T_QUERY: {
        mb_msg r = {.type = MB_T_BALANCE,
                    .seq = m->seq,
                    .held = c->held,
                    .pool = b->cfg.pool_pages,
                    .free = _mb_broker_free(b),
                    .page_size = b->cfg.page_size};
        send(b, slot, &r);
        return 0;
    }
    case MB_T_GIVEBACK_REPLY:
        return on_giveback_reply(b, slot, m, now, why);
    default:
        return refuse(b, slot, m, -EPROTO, why, "not a record a client may send");
    }
}

void _mb_broker_tick(mb_broker *b, uint64_t now)
{
    run(b, now);
}

uint64_t _mb_broker_next_deadline(const mb_broker *b, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    bool waiting = false;
    for (int q = Q_RESERVE; q <= Q_REQUEST; q++)
        for (int32_t i = b->head[q]; i >= 0; i = b->pending[i].next) {
            waiting = true;
            if (b->pending[i].deadline < next) next = b->pending[i].deadline;
        }
    for (uint32_t i = 0; i < b->capacity; i++) {
        const mb_bclient *c = &b->clients[i];
        if (c->gb_active && c->gb_deadline < next) next = c->gb_deadline;
        /* a resting client may be asked again once its rest ends */
        if (waiting && !c->gb_active && c->gb_rest_until > now && c->gb_rest_until < next)
            next = c->gb_rest_until;
    }
    uint64_t p = _mb_policy_next(&b->pol, now);
    return p < next ? p : next;
}

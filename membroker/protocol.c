/* membroker wire records: encode and validating decode (protocol.h).
 *
 * Each type's body is a short list of (field, offset) pairs; encode writes
 * them, decode reads them, checks their ranges, and re-encodes to prove that
 * every byte the type does not use is 0. No allocation, no libc beyond
 * memcpy/memset: libmbclient links this inside an allocator's slow path.
 */
#include "protocol.h"

#include <string.h>

typedef enum field {
    F_END = 0,
    /* u64 */
    F_PAGES,
    F_HELD,
    F_POOL,
    F_FREE,
    F_PAGE_SIZE,
    F_WAITING,
    /* u32 */
    F_KIND,
    F_TIMEOUT,
    F_URGENCY,
    F_CURSOR,
    F_PID,
    F_UID,
    F_COUNT,
    F_CAPACITY,
    F_FLAGS,
    F_LEVEL,
    F_PREV,
    F_REASONS,
    F_CLASS,
    F_PFLAGS, /* POLICY_INFO flags */
    /* 16 bytes */
    F_COMM,
} field;

typedef struct slot {
    uint8_t f;   /* field */
    uint8_t off; /* byte offset in the record */
} slot;

#define MAX_FIELDS 11

typedef struct layout {
    const char *name;
    bool from_client; /* requests: status must be 0 */
    slot fields[MAX_FIELDS];
} layout;

static const layout layouts[MB_T_COUNT_] = {
    [MB_T_HELLO] = {"HELLO", true, {{F_KIND, 16}, {F_COMM, 32}}},
    [MB_T_WELCOME] = {"WELCOME",
                      false,
                      {{F_PAGE_SIZE, 16}, {F_POOL, 24}, {F_CURSOR, 32}, {F_COUNT, 36}}},
    [MB_T_REQUEST] = {"REQUEST", true, {{F_PAGES, 16}}},
    [MB_T_RESERVE] = {"RESERVE", true, {{F_PAGES, 16}, {F_TIMEOUT, 24}}},
    [MB_T_RETURN] = {"RETURN", true, {{F_PAGES, 16}}},
    [MB_T_QUERY] = {"QUERY", true, {{F_END, 0}}},
    [MB_T_STATUS] = {"STATUS", true, {{F_CURSOR, 16}, {F_FLAGS, 20}}},
    [MB_T_GRANT] = {"GRANT", false, {{F_PAGES, 16}, {F_HELD, 24}}},
    [MB_T_RETURNED] = {"RETURNED", false, {{F_HELD, 16}}},
    [MB_T_BALANCE] = {"BALANCE",
                      false,
                      {{F_HELD, 16}, {F_POOL, 24}, {F_FREE, 32}, {F_PAGE_SIZE, 40}}},
    [MB_T_STATUS_ENTRY] = {"STATUS_ENTRY",
                           false,
                           {{F_HELD, 16},
                            {F_WAITING, 24},
                            {F_COMM, 32},
                            {F_PID, 48},
                            {F_UID, 52},
                            {F_CURSOR, 56},
                            {F_KIND, 60},
                            {F_COUNT, 64},
                            {F_FLAGS, 68},
                            {F_CLASS, 72}}},
    [MB_T_STATUS_END] = {"STATUS_END",
                         false,
                         {{F_POOL, 16},
                          {F_FREE, 24},
                          {F_PAGE_SIZE, 32},
                          {F_CURSOR, 40},
                          {F_COUNT, 44},
                          {F_CAPACITY, 48},
                          {F_FLAGS, 52}}},
    [MB_T_GIVEBACK] = {"GIVEBACK", false, {{F_PAGES, 16}, {F_URGENCY, 24}, {F_TIMEOUT, 28}}},
    [MB_T_GIVEBACK_REPLY] = {"GIVEBACK_REPLY", true, {{F_PAGES, 16}}},
    [MB_T_ERROR] = {"ERROR", false, {{F_FLAGS, 16}}},
    [MB_T_SUBSCRIBE] = {"SUBSCRIBE", true, {{F_END, 0}}},
    [MB_T_NOTIFY] = {"NOTIFY",
                     false,
                     {{F_HELD, 16},
                      {F_POOL, 24},
                      {F_FREE, 32},
                      {F_PAGE_SIZE, 40},
                      {F_LEVEL, 48},
                      {F_PREV, 52},
                      {F_REASONS, 56}}},
    [MB_T_POLICY] = {"POLICY", true, {{F_END, 0}}},
    [MB_T_POLICY_INFO] = {"POLICY_INFO",
                          false,
                          {{F_PAGES, 16},
                           {F_HELD, 24},
                           {F_POOL, 32},
                           {F_FREE, 40},
                           {F_WAITING, 48},
                           {F_PAGE_SIZE, 56},
                           {F_LEVEL, 64},
                           {F_REASONS, 68},
                           {F_COUNT, 72},
                           {F_PFLAGS, 76}}},
    [MB_T_CLASS_INFO] = {"CLASS_INFO",
                         false,
                         {{F_PAGES, 16},
                          {F_HELD, 24},
                          {F_POOL, 32},
                          {F_COMM, 40},
                          {F_CURSOR, 56},
                          {F_COUNT, 60}}},
    [MB_T_REPORT] = {"REPORT", true, {{F_END, 0}}},
    [MB_T_REPORTED] = {"REPORTED", false, {{F_PAGES, 16}}},
};

static const layout *layout_of(uint16_t type)
{
    if (type == 0 || type >= MB_T_COUNT_) return NULL;
    return &layouts[type];
}

static uint64_t *u64_field(mb_msg *m, field f)
{
    switch (f) {
    case F_PAGES:
        return &m->pages;
    case F_HELD:
        return &m->held;
    case F_POOL:
        return &m->pool;
    case F_FREE:
        return &m->free;
    case F_PAGE_SIZE:
        return &m->page_size;
    case F_WAITING:
        return &m->waiting;
    default:
        return NULL;
    }
}

static uint32_t *u32_field(mb_msg *m, field f)
{
    switch (f) {
    case F_KIND:
        return &m->kind;
    case F_TIMEOUT:
        return &m->timeout_ms;
    case F_URGENCY:
        return &m->urgency;
    case F_CURSOR:
        return &m->cursor;
    case F_PID:
        return &m->pid;
    case F_UID:
        return &m->uid;
    case F_COUNT:
        return &m->count;
    case F_CAPACITY:
        return &m->capacity;
    case F_FLAGS:
    case F_PFLAGS:
        return &m->flags;
    case F_LEVEL:
        return &m->level;
    case F_PREV:
        return &m->prev;
    case F_REASONS:
        return &m->reasons;
    case F_CLASS:
        return &m->class_id;
    default:
        return NULL;
    }
}

/* Range rules, shared by encode (the caller's bug) and decode (the peer's). */
static bool valid(const mb_msg *m, const layout *l)
{
    if (l->from_client ? m->status != 0 : (m->status > 0 || m->status < -4095)) return false;
    if (m->type == MB_T_ERROR && m->status == 0) return false;
    for (const slot *s = l->fields; s < l->fields + MAX_FIELDS && s->f != F_END; s++) {
        switch ((field)s->f) {
        case F_PAGES:
        case F_HELD:
        case F_POOL:
        case F_FREE:
        case F_WAITING:
            if (*u64_field((mb_msg *)m, (field)s->f) > MB_MAX_PAGES) return false;
            break;
        case F_PAGE_SIZE:
            /* a power of two from 512 bytes to 1 GiB */
            if (m->page_size < 512 || m->page_size > (UINT64_C(1) << 30) ||
                (m->page_size & (m->page_size - 1)))
                return false;
            break;
        case F_KIND:
            if (m->kind > 1) return false;
            break;
        case F_URGENCY:
            if (m->urgency > 1) return false;
            break;
        case F_FLAGS:
            if (m->type == MB_T_ERROR ? m->flags >= MB_T_COUNT_ : m->flags > 1) return false;
            break;
        case F_PFLAGS:
            if (m->flags > MB_POLICY_FLAGS_MAX) return false;
            break;
        case F_LEVEL:
        case F_PREV:
            if (*u32_field((mb_msg *)m, (field)s->f) > 2) return false;
            break;
        case F_REASONS:
            if (m->reasons >= (1u << 8)) return false;
            break;
        case F_COMM:
            if (m->comm[sizeof m->comm - 1] != '\0') return false;
            break;
        default:
            break;
        }
    }
    return true;
}

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, sizeof v);
}
static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof v);
}
static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof v);
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Writes the record without checking ranges. */
static void encode_raw(const mb_msg *m, const layout *l, uint8_t buf[MB_MSG_SIZE])
{
    memset(buf, 0, MB_MSG_SIZE);
    put32(buf, MB_PROTO_MAGIC);
    put16(buf + 4, MB_PROTO_VERSION);
    put16(buf + 6, m->type);
    put32(buf + 8, m->seq);
    put32(buf + 12, (uint32_t)m->status);
    for (const slot *s = l->fields; s < l->fields + MAX_FIELDS && s->f != F_END; s++) {
        uint64_t *p64 = u64_field((mb_msg *)m, (field)s->f);
        uint32_t *p32 = u32_field((mb_msg *)m, (field)s->f);
        if (p64)
            put64(buf + s->off, *p64);
        else if (p32)
            put32(buf + s->off, *p32);
        else
            memcpy(buf + s->off, m->comm, sizeof m->comm);
    }
}

int _mb_msg_encode(const mb_msg *m, uint8_t buf[MB_MSG_SIZE])
{
    const layout *l = layout_of(m->type);
    if (!l) return MB_PERR_TYPE;
    if (!valid(m, l)) return MB_PERR_FIELD;
    encode_raw(m, l, buf);
    return (int)MB_MSG_SIZE;
}

int _mb_msg_decode(const uint8_t *buf, size_t len, mb_msg *m)
{
    memset(m, 0, sizeof *m);
    if (len != MB_MSG_SIZE) return MB_PERR_SIZE;
    if (get32(buf) != MB_PROTO_MAGIC) return MB_PERR_MAGIC;
    if (get16(buf + 4) != MB_PROTO_VERSION) return MB_PERR_VERSION;
    m->type = get16(buf + 6);
    m->seq = get32(buf + 8);
    const layout *l = layout_of(m->type);
    if (!l) return MB_PERR_TYPE;
    m->status = (int32_t)get32(buf + 12);
    for (const slot *s = l->fields; s < l->fields + MAX_FIELDS && s->f != F_END; s++) {
        uint64_t *p64 = u64_field(m, (field)s->f);
        uint32_t *p32 = u32_field(m, (field)s->f);
        if (p64)
            *p64 = get64(buf + s->off);
        else if (p32)
            *p32 = get32(buf + s->off);
        else
            memcpy(m->comm, buf + s->off, sizeof m->comm);
    }
    uint8_t again[MB_MSG_SIZE];
    encode_raw(m, l, again);
    if (!valid(m, l) || memcmp(again, buf, MB_MSG_SIZE) != 0) {
        uint16_t type = m->type;
        uint32_t seq = m->seq;
        memset(m, 0, sizeof *m);
        m->type = type;
        m->seq = seq;
        return MB_PERR_FIELD;
    }
    return 0;
}

bool _mb_msg_from_client(uint16_t type)
{
    const layout *l = layout_of(type);
    return l && l->from_client;
}

const char *_mb_msg_type_name(uint16_t type)
{
    const layout *l = layout_of(type);
    return l ? l->name : "unknown";
}

const char *_mb_proto_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case MB_PERR_SIZE:
        return "wrong record size";
    case MB_PERR_MAGIC:
        return "bad magic";
    case MB_PERR_VERSION:
        return "unsupported protocol version";
    case MB_PERR_TYPE:
        return "unknown record type";
    case MB_PERR_FIELD:
        return "field out of range or non-zero unused bytes";
    default:
        return "unknown protocol error";
    }
}

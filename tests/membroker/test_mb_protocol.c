/* The membroker wire codec (membroker/protocol.c): every type round-trips,
 * and every malformed, truncated, bad-version, bad-type or out-of-range
 * record is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "protocol.h"

/* One valid record of each type, every carried field non-zero. */
static mb_msg sample(uint16_t type)
{
    mb_msg m = {.type = type, .seq = 0x01020304u};
    switch (type) {
    case MB_T_HELLO:
        m.kind = 1;
        break;
    case MB_T_WELCOME:
        m.page_size = 4096;
        m.pool = 1000;
        m.cursor = 3;
        m.count = 4;
        break;
    case MB_T_REQUEST:
    case MB_T_RETURN:
    case MB_T_GIVEBACK_REPLY:
        m.pages = MB_MAX_PAGES;
        break;
    case MB_T_RESERVE:
        m.pages = 77;
        m.timeout_ms = 0xfffffffeu;
        break;
    case MB_T_QUERY:
        break;
    case MB_T_STATUS:
        m.cursor = 9;
        break;
    case MB_T_GRANT:
        m.status = -ETIMEDOUT;
        m.pages = 5;
        m.held = 6;
        break;
    case MB_T_RETURNED:
        m.status = -EINVAL;
        m.held = 12;
        break;
    case MB_T_BALANCE:
        m.held = 1;
        m.pool = 2;
        m.free = 1;
        m.page_size = 65536;
        break;
    case MB_T_STATUS_ENTRY:
        m.held = 10;
        m.waiting = 20;
        memcpy(m.comm, "fifteen-chars!!", 16);
        m.pid = 1234;
        m.uid = 1000;
        m.cursor = 2;
        m.kind = 1;
        m.count = 3;
        m.flags = MB_ENTRY_GIVEBACK;
        break;
    case MB_T_STATUS_END:
        m.pool = 100;
        m.free = 50;
        m.page_size = 4096;
        m.cursor = 8;
        m.count = 5;
        m.capacity = 256;
        m.flags = MB_END_DONE;
        break;
    case MB_T_GIVEBACK:
        m.pages = 9;
        m.urgency = 1;
        m.timeout_ms = 200;
        break;
    case MB_T_ERROR:
        m.status = -EPROTO;
        m.flags = MB_T_REQUEST;
        break;
    case MB_T_SUBSCRIBE:
    case MB_T_POLICY:
    case MB_T_REPORT:
        break;
    case MB_T_NOTIFY:
        m.held = 7;
        m.pool = 8;
        m.free = 9;
        m.page_size = 4096;
        m.level = 2;
        m.prev = 1;
        m.reasons = 5;
        break;
    case MB_T_POLICY_INFO:
        m.pages = 10;
        m.held = 11;
        m.pool = 12;
        m.free = 13;
        m.waiting = 14;
        m.page_size = 4096;
        m.level = 1;
        m.reasons = 3;
        m.count = 2;
        m.flags = MB_PSI_SYSTEM | MB_PSI_CGROUP;
        break;
    case MB_T_CLASS_INFO:
        m.pages = 1;
        m.held = 2;
        m.pool = 3;
        memcpy(m.comm, "media", 6);
        m.cursor = 1;
        m.count = 4;
        break;
    case MB_T_REPORTED:
        m.pages = 3;
        break;
    default:
        fail_msg("no sample for type %u", type);
    }
    return m;
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    for (uint16_t t = 1; t < MB_T_COUNT_; t++) {
        mb_msg m = sample(t), back;
        uint8_t buf[MB_MSG_SIZE];
        assert_int_equal(_mb_msg_encode(&m, buf), MB_MSG_SIZE);
        assert_int_equal(_mb_msg_decode(buf, sizeof buf, &back), 0);
        assert_memory_equal(&m, &back, sizeof m);
        assert_string_not_equal(_mb_msg_type_name(t), "unknown");
    }
}

static void test_header_layout(void **state)
{
    (void)state;
    mb_msg m = sample(MB_T_RESERVE);
    uint8_t buf[MB_MSG_SIZE];
    assert_int_equal(_mb_msg_encode(&m, buf), MB_MSG_SIZE);
    uint32_t magic, seq;
    uint16_t version, type;
    uint64_t pages;
    memcpy(&magic, buf, 4);
    memcpy(&version, buf + 4, 2);
    memcpy(&type, buf + 6, 2);
    memcpy(&seq, buf + 8, 4);
    memcpy(&pages, buf + 16, 8);
    assert_int_equal(magic, MB_PROTO_MAGIC);
    assert_int_equal(version, MB_PROTO_VERSION);
    assert_int_equal(type, MB_T_RESERVE);
    assert_int_equal(seq, 0x01020304u);
    assert_int_equal(pages, 77);
    assert_memory_equal(buf, "MBRK", 4); /* little-endian hosts */
}

static void test_wrong_sizes_refused(void **state)
{
    (void)state;
    mb_msg m = sample(MB_T_HELLO);
    uint8_t buf[2 * MB_MSG_SIZE] = {0};
    assert_int_equal(_mb_msg_encode(&m, buf), MB_MSG_SIZE);
    for (size_t len = 0; len < sizeof buf; len++) {
        if (len == MB_MSG_SIZE) continue;
        assert_int_equal(_mb_msg_decode(buf, len, &m), MB_PERR_SIZE);
    }
}

static void test_bad_magic_version_type(void **state)
{
    (void)state;
    mb_msg m = sample(MB_T_QUERY);
    uint8_t good[MB_MSG_SIZE], buf[MB_MSG_SIZE];
    assert_int_equal(_mb_msg_encode(&m, good), MB_MSG_SIZE);
    for (int byte = 0; byte < 4; byte++) {
        memcpy(buf, good, sizeof buf);
        buf[byte] ^= 0x20;
        assert_int_equal(_mb_msg_decode(buf, sizeof buf, &m), MB_PERR_MAGIC);
    }
    uint16_t versions[] = {0, 2, 0x100, 0xffff};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        memcpy(buf, good, sizeof buf);
        memcpy(buf + 4, &versions[i], 2);
        assert_int_equal(_mb_msg_decode(buf, sizeof buf, &m), MB_PERR_VERSION);
    }
    uint16_t types[] = {0, MB_T_COUNT_, 99, 0xffff};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        memcpy(buf, good, sizeof buf);
        memcpy(buf + 6, &types[i], 2);
        assert_int_equal(_mb_msg_decode(buf, sizeof buf, &m), MB_PERR_TYPE);
        assert_int_equal(m.type, types[i]); /* named in the error reply */
        assert_int_equal(m.seq, 0x01020304u);
    }
}

/* Changing any single byte of the body either gives another valid record
 * that encodes back to exactly those bytes, or is refused: no byte is
 * silently ignored. Unused bytes are always refused. */
static void test_no_byte_ignored(void **state)
{
    (void)state;
    for (uint16_t t = 1; t < MB_T_COUNT_; t++) {
        mb_msg m = sample(t), back;
        uint8_t good[MB_MSG_SIZE], buf[MB_MSG_SIZE], again[MB_MSG_SIZE];
        assert_int_equal(_mb_msg_encode(&m, good), MB_MSG_SIZE);
        for (size_t off = 8; off < MB_MSG_SIZE; off++) {
            for (int bit = 0; bit < 8; bit++) {
                memcpy(buf, good, sizeof buf);
                buf[off] ^= (uint8_t)(1u << bit);
                int rc = _mb_msg_decode(buf, sizeof buf, &back);
                if (rc == 0) {
                    assert_int_equal(_mb_msg_encode(&back, again), MB_MSG_SIZE);
                    assert_memory_equal(buf, again, sizeof buf);
                } else {
                    assert_int_equal(rc, MB_PERR_FIELD);
                    assert_int_equal(back.type, t);
                }
            }
        }
        /* the last 8 bytes are used by no type */
        memcpy(buf, good, sizeof buf);
        buf[MB_MSG_SIZE - 1] = 1;
        assert_int_equal(_mb_msg_decode(buf, sizeof buf, &back), MB_PERR_FIELD);
    }
}

static void expect_field_error(mb_msg m)
{
    uint8_t buf[MB_MSG_SIZE];
    assert_int_equal(_mb_msg_encode(&m, buf), MB_PERR_FIELD);
}

static void test_fields_out_of_range(void **state)
{
    (void)state;
    mb_msg m = sample(MB_T_HELLO);
    m.kind = 2;
    expect_field_error(m);
    m = sample(MB_T_REQUEST);
    m.pages = MB_MAX_PAGES + 1;
    expect_field_error(m);
    m = sample(MB_T_REQUEST);
    m.status = -1; /* requests carry no status */
    expect_field_error(m);
    m = sample(MB_T_GRANT);
    m.status = 1; /* replies: 0 or a negative errno */
    expect_field_error(m);
    m = sample(MB_T_GRANT);
    m.status = -5000;
    expect_field_error(m);
    m = sample(MB_T_BALANCE);
    m.page_size = 4097;
    expect_field_error(m);
    m = sample(MB_T_BALANCE);
    m.page_size = 256;
    expect_field_error(m);
    m = sample(MB_T_GIVEBACK);
    m.urgency = 2;
    expect_field_error(m);
    m = sample(MB_T_STATUS_ENTRY);
    memset(m.comm, 'x', sizeof m.comm); /* not NUL-terminated */
    expect_field_error(m);
    m = sample(MB_T_STATUS_END);
    m.flags = 2;
    expect_field_error(m);
    m = sample(MB_T_ERROR);
    m.status = 0; /* an error says which */
    expect_field_error(m);
    m = sample(MB_T_ERROR);
    m.flags = MB_T_COUNT_;
    expect_field_error(m);
    m.type = 0;
    uint8_t buf[MB_MSG_SIZE];
    assert_int_equal(_mb_msg_encode(&m, buf), MB_PERR_TYPE);
    m.type = MB_T_COUNT_;
    assert_int_equal(_mb_msg_encode(&m, buf), MB_PERR_TYPE);
    /* fields a type does not carry are ignored by encode, zero on the wire */
    m = sample(MB_T_QUERY);
    m.pages = 12;
    assert_int_equal(_mb_msg_encode(&m, buf), MB_MSG_SIZE);
    mb_msg back;
    assert_int_equal(_mb_msg_decode(buf, sizeof buf, &back), 0);
    assert_int_equal(back.pages, 0);
}

static void test_direction_and_names(void **state)
{
    (void)state;
    uint16_t from_client[] = {MB_T_HELLO,     MB_T_REQUEST,   MB_T_RESERVE, MB_T_RETURN,
                              MB_T_QUERY,     MB_T_STATUS,    MB_T_GIVEBACK_REPLY,
                              MB_T_SUBSCRIBE, MB_T_POLICY,    MB_T_REPORT};
    unsigned n = 0;
    for (uint16_t t = 0; t < MB_T_COUNT_ + 2; t++)
        n += _mb_msg_from_client(t);
    assert_int_equal(n, sizeof from_client / sizeof from_client[0]);
    for (size_t i = 0; i < sizeof from_client / sizeof from_client[0]; i++)
        assert_true(_mb_msg_from_client(from_client[i]));
    assert_false(_mb_msg_from_client(MB_T_GRANT));
    assert_string_equal(_mb_msg_type_name(MB_T_GIVEBACK), "GIVEBACK");
    assert_string_equal(_mb_msg_type_name(1000), "unknown");
    for (int e = MB_PERR_FIELD; e <= 0; e++)
        assert_string_not_equal(_mb_proto_strerror(e), "unknown protocol error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type), cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_wrong_sizes_refused),   cmocka_unit_test(test_bad_magic_version_type),
        cmocka_unit_test(test_no_byte_ignored),       cmocka_unit_test(test_fields_out_of_range),
        cmocka_unit_test(test_direction_and_names),
    };
    return cmocka_run_group_tests_name("membroker_protocol", tests, NULL, NULL);
}

/* membroker wire protocol: fixed-size, versioned records over an AF_UNIX
 * SOCK_SEQPACKET socket, one record per packet.
 *
 * Every record is MB_MSG_SIZE bytes, in the host's byte order (both ends run
 * on the same machine), at fixed offsets, so a 32-bit client and a 64-bit
 * daemon agree:
 *
 *   offset size
 *        0    4  magic   MB_PROTO_MAGIC
 *        4    2  version MB_PROTO_VERSION
 *        6    2  type    mb_msg_type
 *        8    4  seq     chosen by the sender of a request, echoed by its reply;
 *                        for GIVEBACK chosen by the daemon, echoed by GIVEBACK_REPLY
 *       12    4  status  0 or a negative errno (replies only; 0 in requests)
 *       16   64  body    per type, below; every byte a type does not use is 0
 *
 * Body fields (u64 at 8-byte offsets, u32 at 4-byte offsets):
 *
 *   client -> daemon
 *   HELLO          kind@16 (u32, mb_kind)                       must come first
 *   REQUEST        pages@16                                     -> GRANT
 *   RESERVE        pages@16 timeout_ms@24 (u32)                 -> GRANT
 *   RETURN         pages@16                                     -> RETURNED
 *   QUERY          -                                            -> BALANCE
 *   STATUS         cursor@16 (u32, first slot)                  -> ENTRY* END
 *                  (allowed without HELLO)
 *   GIVEBACK_REPLY pages@16 (released; counted as returned)
 *   SUBSCRIBE      -                                            -> NOTIFY now, then one per
 *                  (allowed without HELLO)                         change of the memory level
 *   POLICY         -                                            -> POLICY_INFO CLASS_INFO*
 *                  (allowed without HELLO)                         (count@64 of POLICY_INFO)
 *   REPORT         -                                            -> REPORTED
 *                  (allowed without HELLO)
 *
 *   Additions that old peers never see (protocol 1.1, same version field):
 *   HELLO          class@32 (16 bytes, NUL-terminated, "" = chosen by the daemon)
 *   STATUS         flags@20 (MB_STATUS_EXT: the entries carry class@72)
 *   STATUS_ENTRY   class@72 (u32, index of its class) only when asked with MB_STATUS_EXT
 *
 *   daemon -> client
 *   WELCOME        page_size@16 pool@24 cursor@32 (u32, its slot) count@36 (u32, requests in flight
 * allowed) GRANT          pages@16 (granted) held@24 RETURNED       held@16 BALANCE        held@16
 * pool@24 free@32 page_size@40 STATUS_ENTRY   held@16 waiting@24 comm@32 (16 bytes, NUL-terminated)
 *                  pid@48 uid@52 cursor@56 (slot) kind@60 count@64 (outstanding)
 *                  flags@68 (MB_ENTRY_GIVEBACK)
 *   STATUS_END     pool@16 free@24 page_size@32 cursor@40 (next slot)
 *                  count@44 (clients) capacity@48 flags@52 (MB_END_DONE)
 *   GIVEBACK       pages@16 (target) urgency@24 (u32) timeout_ms@28 (u32, answer within)
 *   ERROR          flags@16 (u32, the type of the record at fault, 0 if unreadable)
 *   NOTIFY         held@16 (granted) pool@24 free@32 (MemAvailable, pages; 0 unknown)
 *                  page_size@40 level@48 prev@52 reasons@56 (MB_REASON_*)
 *   POLICY_INFO    pages@16 (signal threshold, pages; 0 off) held@24 (granted)
 *                  pool@32 free@40 (MemAvailable pages) waiting@48 (alloc threshold; 0 off)
 *                  page_size@56 level@64 reasons@68 count@72 (classes) flags@76 (MB_PSI_*)
 *   CLASS_INFO     pages@16 (minimum) held@24 (granted) pool@32 (cap) comm@40 (name)
 *                  cursor@56 (index) count@60 (clients)
 *   REPORTED       pages@16 (report number; status -ENOENT when no REPORT_DIR)
 *
 * _mb_msg_decode() accepts a record only if it is exactly MB_MSG_SIZE bytes,
 * has the magic, the version and a known type, every field is in range and
 * every unused byte is 0 (it re-encodes what it read and compares).
 *
 * Internal to membroker (daemon, libmbclient, mbctl); not installed.
 */
#ifndef MEMBROKER_PROTOCOL_H
#define MEMBROKER_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MB_PROTO_MAGIC 0x4b52424du /* "MBRK" in little-endian memory */
#define MB_PROTO_VERSION 1u
#define MB_MSG_SIZE 80u
#define MB_MSG_HEADER 16u

/* No count of pages on the wire may exceed this (2^48 pages is far beyond
 * any machine), so that sums over a client table cannot overflow a u64. */
#define MB_MAX_PAGES (UINT64_C(1) << 48)

#define MB_ENTRY_GIVEBACK 1u /* STATUS_ENTRY flags */
#define MB_STATUS_EXT 1u     /* STATUS flags: entries carry their class */
/* POLICY_INFO flags: which kernel pressure sources are armed */
#define MB_PSI_SYSTEM 1u  /* trigger on /proc/pressure/memory */
#define MB_PSI_CGROUP 2u  /* trigger on the configured cgroup's memory.pressure */
#define MB_CG_EVENTS 4u   /* watching the cgroup's memory.events */
#define MB_POLICY_FLAGS_MAX 7u
#define MB_END_DONE 1u       /* STATUS_END flags */

typedef enum mb_msg_type {
    MB_T_HELLO = 1,
    MB_T_WELCOME = 2,
    MB_T_REQUEST = 3,
    MB_T_RESERVE = 4,
    MB_T_RETURN = 5,
    MB_T_QUERY = 6,
    MB_T_STATUS = 7,
    MB_T_GRANT = 8,
    MB_T_RETURNED = 9,
    MB_T_BALANCE = 10,
    MB_T_STATUS_ENTRY = 11,
    MB_T_STATUS_END = 12,
    MB_T_GIVEBACK = 13,
    MB_T_GIVEBACK_REPLY = 14,
    MB_T_ERROR = 15,
    MB_T_SUBSCRIBE = 16,
    MB_T_NOTIFY = 17,
    MB_T_POLICY = 18,
    MB_T_POLICY_INFO = 19,
    MB_T_CLASS_INFO = 20,
    MB_T_REPORT = 21,
    MB_T_REPORTED = 22,
    MB_T_COUNT_ /* one past the last */
} mb_msg_type;

/* A decoded record. Which fields a type carries is in the table above; the
 * others are 0 after decode and ignored by encode. */
typedef struct mb_msg {
    uint16_t type;
    uint32_t seq;
    int32_t status;
    uint64_t pages;
    uint64_t held;
    uint64_t pool;
    uint64_t free;
    uint64_t page_size;
    uint64_t waiting;
    uint32_t kind;
    uint32_t timeout_ms;
    uint32_t urgency;
    uint32_t cursor;
    uint32_t pid;
    uint32_t uid;
    uint32_t count;
    uint32_t capacity;
    uint32_t flags;
    uint32_t level, prev, reasons, class_id;
    char comm[16];
} mb_msg;

/* Why a record was refused. */
typedef enum mb_proto_err {
    MB_PERR_SIZE = -1,    /* not exactly MB_MSG_SIZE bytes */
    MB_PERR_MAGIC = -2,   /* wrong magic */
    MB_PERR_VERSION = -3, /* another protocol version */
    MB_PERR_TYPE = -4,    /* unknown type */
    MB_PERR_FIELD = -5,   /* a field out of range or a non-zero unused byte */
} mb_proto_err;

/* Writes m into buf[MB_MSG_SIZE]. Returns MB_MSG_SIZE, or MB_PERR_TYPE /
 * MB_PERR_FIELD if m would not decode (the caller's bug). */
int _mb_msg_encode(const mb_msg *m, uint8_t buf[MB_MSG_SIZE]);

/* Reads and validates one record of `len` bytes. Returns 0 or an
 * mb_proto_err; on MB_PERR_TYPE and MB_PERR_FIELD, m->type and m->seq hold
 * what the header said (so an error reply can name them). */
int _mb_msg_decode(const uint8_t *buf, size_t len, mb_msg *m);

/* True for the types a client may send to the daemon. */
bool _mb_msg_from_client(uint16_t type);

const char *_mb_msg_type_name(uint16_t type);
const char *_mb_proto_strerror(int err);

#endif

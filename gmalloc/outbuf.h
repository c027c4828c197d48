/* A message assembled in a caller's stack buffer and written with write(2):
 * the only way gmalloc prints, because stdio may allocate. */
#ifndef GMALLOC_OUTBUF_H
#define GMALLOC_OUTBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct gm_outbuf {
    char *buf;
    size_t cap;
    size_t len; /* bytes used; never more than cap - 1 (always NUL-terminated) */
} gm_outbuf;

void gm_out_init(gm_outbuf *o, char *buf, size_t cap);
void gm_out_str(gm_outbuf *o, const char *s);
void gm_out_mem(gm_outbuf *o, const char *s, size_t n);
void gm_out_u64(gm_outbuf *o, uint64_t v);
void gm_out_hex(gm_outbuf *o, uintptr_t v); /* 0x-prefixed */
void gm_out_size(gm_outbuf *o, uint64_t bytes); /* "123456 (120.6 KiB)" */
void gm_out_write(gm_outbuf *o, int fd); /* writes all, retrying on EINTR; keeps errno */

#endif

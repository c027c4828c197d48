/* A message builder over a caller's buffer: no allocation, no stdio, no locale.
 *
 * Invariant: cap == 0, or len <= cap - 1 and buf[len] == '\0'. Anything that
 * does not fit is dropped (the text is cut, never overrun).
 */
#include "outbuf.h"

#include <errno.h>
#include <unistd.h>

void gm_out_init(gm_outbuf *o, char *buf, size_t cap)
{
    o->buf = buf;
    o->cap = buf ? cap : 0;
    o->len = 0;
    if (o->cap > 0) o->buf[0] = '\0';
}

void gm_out_mem(gm_outbuf *o, const char *s, size_t n)
{
    if (o->cap == 0) return;
    size_t room = o->cap - 1 - o->len;
    if (n > room) n = room; /* truncate: the tail is lost, the buffer stays terminated */
    for (size_t i = 0; i < n; i++)
        o->buf[o->len + i] = s[i];
    o->len += n;
    o->buf[o->len] = '\0';
}

void gm_out_str(gm_outbuf *o, const char *s)
{
    if (!s) s = "(null)";
    size_t n = 0;
    while (s[n])
        n++;
    gm_out_mem(o, s, n);
}

void gm_out_u64(gm_outbuf *o, uint64_t v)
{
    char tmp[20]; /* UINT64_MAX has 20 digits */
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    gm_out_mem(o, tmp + i, sizeof tmp - i);
}

void gm_out_hex(gm_outbuf *o, uintptr_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[2 + 2 * sizeof(uintptr_t)];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = digits[v & 0xf];
        v >>= 4;
    } while (v);
    tmp[--i] = 'x';
    tmp[--i] = '0';
    gm_out_mem(o, tmp + i, sizeof tmp - i);
}

/* "N B" below 1 KiB, else "N (q.t XiB)" with one decimal, rounded to nearest;
 * a value that rounds up to 1024 of a unit is shown in the next unit. */
void gm_out_size(gm_outbuf *o, uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    const unsigned last = sizeof units / sizeof units[0] - 1;

    gm_out_u64(o, bytes);
    if (bytes < 1024) {
        gm_out_str(o, " B");
        return;
    }
    unsigned k = 0;
    while (k < last && bytes >> (10 * (k + 1)) != 0)
        k++;
    uint64_t unit = (uint64_t)1 << (10 * k);
    uint64_t q = bytes >> (10 * k);
    uint64_t r = bytes & (unit - 1);
    uint64_t tenths = (r * 10 + unit / 2) >> (10 * k); /* r < 2^60: r * 10 fits */
    if (tenths == 10) {
        q++;
        tenths = 0;
    }
    if (q == 1024 && k < last) {
        q = 1;
        k++;
    }
    gm_out_str(o, " (");
    gm_out_u64(o, q);
    gm_out_mem(o, ".", 1);
    gm_out_u64(o, tenths);
    gm_out_mem(o, " ", 1);
    gm_out_str(o, units[k]);
    gm_out_mem(o, ")", 1);
}

void gm_out_write(gm_outbuf *o, int fd)
{
    int saved = errno;
    const char *p = o->buf;
    size_t left = o->len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            break; /* nowhere else to report it */
        }
        if (n == 0) break; /* should not happen for left > 0; do not spin */
        p += n;
        left -= (size_t)n;
    }
    errno = saved;
}

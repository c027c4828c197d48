/* Reports: faults (default handler: message on stderr, then abort) and
 * leaks (text or one JSON object per line). Everything is formatted into
 * stack buffers and written with write(2); stacks are symbolized here only. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

typedef struct out {
    char *buf;
    size_t cap, len;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
    if (o->len + 1 >= o->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n >= o->cap - o->len ? o->cap - o->len - 1 : (size_t)n;
}

/* A JSON string body: quotes, backslashes and control bytes escaped. */
static void put_json_str(out *o, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            put(o, "\\%c", c);
        else if (c < 0x20)
            put(o, "\\u%04x", c);
        else
            put(o, "%c", c);
    }
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

static const char *fault_text(anr_fault f)
{
    switch (f) {
    case ANR_FAULT_DOUBLE_FREE:
        return "double free: the block is already free";
    case ANR_FAULT_NOT_AN_OBJECT:
        return "bad pointer: not the start of a live block";
    case ANR_FAULT_FOREIGN:
        return "bad pointer: outside the heap";
    case ANR_FAULT_FREE_LIST:
        return "the deferred-free list is broken (a write to a freed block?)";
    case ANR_FAULT_GUARD:
        return "guard bytes damaged";
    case ANR_FAULT_CORRUPT:
        return "heap corrupted";
    }
    return "fault";
}

size_t anr_fault_format(const anr_fault_info *info, char *buf, size_t cap)
{
    out o = {buf, cap, 0};
    if (cap)
        buf[0] = 0;
    put(&o, "anr_malloc: ");
    if (info->heap)
        put(&o, "heap '%s': ", info->heap->name);
    put(&o, "%s(%p): %s\n", info->op ? info->op : "?", info->ptr, fault_text(info->fault));
    if (info->detail)
        put(&o, "  %s\n", info->detail);
    if (info->nframes) {
        put(&o, "  the block (%zu bytes) was allocated at:\n", info->size);
        o.len += anr_stack_format(info->stack, info->nframes, o.buf + o.len, o.cap - o.len);
    }
    return o.len;
}

void anr_fault_default(void *ctx, const anr_fault_info *info)
{
    (void)ctx;
    char buf[8192];
    size_t n = anr_fault_format(info, buf, sizeof(buf));
    write_all(2, buf, n);
    abort();
}

size_t anr_block_format(anr_mheap *h, const anr_block_info *b, bool json, char *buf, size_t cap)
{
    out o = {buf, cap, 0};
    if (cap)
        buf[0] = 0;
    char sym[256];
    if (json) {
        put(&o, "{\"heap\":\"");
        put_json_str(&o, h ? h->name : "?");
        put(&o, "\",\"ptr\":\"%p\",\"size\":%zu,\"tid\":%u,\"seq\":%llu,\"debug_info\":", b->ptr,
            b->size, (unsigned)b->tid, (unsigned long long)b->seq);
        if (b->has_debug_info)
            put(&o, "\"0x%lx\"", (unsigned long)b->debug_info);
        else
            put(&o, "null");
        put(&o, ",\"stack\":[");
        for (unsigned i = 0; i < b->nframes; i++)
            put(&o, "%s\"%p\"", i ? "," : "", b->stack[i]);
        put(&o, "],\"symbols\":[");
        for (unsigned i = 0; i < b->nframes; i++) {
            _am_symbolize((uintptr_t)b->stack[i], sym, sizeof(sym));
            put(&o, "%s\"", i ? "," : "");
            put_json_str(&o, sym);
            put(&o, "\"");
        }
        put(&o, "]}\n");
        return o.len;
    }
    put(&o, "leak: %p, %zu bytes (heap '%s'", b->ptr, b->size, h ? h->name : "?");
    if (b->seq)
        put(&o, ", allocation #%llu by thread %u", (unsigned long long)b->seq, (unsigned)b->tid);
    if (b->has_debug_info)
        put(&o, ", debug info 0x%lx", (unsigned long)b->debug_info);
    put(&o, ")\n");
    if (b->nframes) {
        o.len += anr_stack_format(b->stack, b->nframes, o.buf + o.len, o.cap - o.len);
    } else {
        put(&o, "    (no allocation stack: turn on ANR_DEBUG_STACKS)\n");
    }
    return o.len;
}

void anr_leak_report(void *ctx, anr_mheap *h, const anr_block_info *leak)
{
    const anr_report_sink *sink = ctx;
    char buf[12288];
    size_t n = anr_block_format(h, leak, sink->json, buf, sizeof(buf));
    write_all(sink->fd, buf, n);
}

/* Everything gmalloc says: bad pointers, failed allocations, config errors and
 * the statistics. Messages are built on the stack and written with write(2),
 * because stdio may allocate and we may be inside malloc. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include <gmalloc.h>

#include "internal.h"
#include "outbuf.h"

static const char *op_name(anr_op op)
{
    switch (op) {
    case ANR_OP_REALLOC:
        return "realloc";
    case ANR_OP_USABLE_SIZE:
        return "malloc_usable_size";
    default:
        return "free";
    }
}

static const char *error_text(anr_error err)
{
    switch (err) {
    case ANR_ERR_DOUBLE_FREE:
        return "double free (the object is already free)";
    case ANR_ERR_NOT_AN_OBJECT:
        return "invalid pointer (not the start of a live object: double free or wild pointer)";
    case ANR_ERR_FOREIGN:
        return "pointer not allocated by gmalloc (outside its mapping)";
    case ANR_ERR_DEFERRED_LIST:
        return "list of freed blocks corrupted (a freed block was written to: use after free?)";
    default:
        return "bad pointer";
    }
}

void _gm_on_error(void *ctx, anr_error err, anr_op op, const void *ptr)
{
    (void)ctx;
    if (_gm_cfg.on_error == GM_ON_ERROR_IGNORE)
        return;
    char buf[256];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof(buf));
    gm_out_str(&o, "gmalloc: ");
    gm_out_str(&o, op_name(op));
    gm_out_str(&o, "(");
    gm_out_hex(&o, (uintptr_t)ptr);
    gm_out_str(&o, "): ");
    gm_out_str(&o, error_text(err));
    if (_gm_cfg.on_error == GM_ON_ERROR_ABORT)
        gm_out_str(&o, "; aborting (set GMALLOC_ON_ERROR=report or ignore to go on)");
    gm_out_str(&o, "\n");
    gm_out_write(&o, 2);
    if (_gm_cfg.on_error == GM_ON_ERROR_ABORT)
        abort();
}

void *_gm_alloc_failed(const char *fn, size_t size)
{
    anr_core_stats s;
    anr_core_get_stats(_gm_heap, &s);
    /* Absurd sizes are the caller's error, not memory pressure: never abort. */
    if (_gm_cfg.on_limit == GM_ON_LIMIT_ABORT && size <= s.mapping_size) {
        char buf[320];
        gm_outbuf o;
        gm_out_init(&o, buf, sizeof(buf));
        gm_out_str(&o, "gmalloc: ");
        gm_out_str(&o, fn);
        gm_out_str(&o, "(");
        gm_out_u64(&o, size);
        gm_out_str(&o, ") failed: limit ");
        if (s.limit)
            gm_out_size(&o, s.limit);
        else
            gm_out_str(&o, "none (mapping full)");
        gm_out_str(&o, ", in use ");
        gm_out_size(&o, (uint64_t)(s.pages_in_use + s.pages_dirty) * s.page_size);
        gm_out_str(&o, "; aborting (ON_LIMIT abort)\n");
        gm_out_write(&o, 2);
        abort();
    }
    errno = ENOMEM;
    return NULL;
}

void _gm_config_report(void *ctx, const char *file, unsigned line, const char *msg)
{
    (void)ctx;
    char buf[512];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof(buf));
    gm_out_str(&o, "gmalloc: ");
    gm_out_str(&o, file);
    if (line) {
        gm_out_str(&o, ":");
        gm_out_u64(&o, line);
    }
    gm_out_str(&o, ": ");
    gm_out_str(&o, msg);
    gm_out_str(&o, "\n");
    gm_out_write(&o, 2);
}

void _gm_quota_note(const char *what, int err)
{
    char buf[256];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof(buf));
    gm_out_str(&o, "gmalloc: ");
    gm_out_str(&o, what);
    if (err) {
        gm_out_str(&o, " (error ");
        gm_out_u64(&o, (uint64_t)err);
        gm_out_str(&o, ")");
    }
    gm_out_str(&o, "\n");
    gm_out_write(&o, 2);
}

void _gm_fatal(const char *what, int err)
{
    char buf[256];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof(buf));
    gm_out_str(&o, "gmalloc: ");
    gm_out_str(&o, what);
    gm_out_str(&o, " (error ");
    gm_out_u64(&o, (uint64_t)err);
    gm_out_str(&o, "); aborting\n");
    gm_out_write(&o, 2);
    abort();
}

static void line_size(gm_outbuf *o, const char *label, uint64_t bytes)
{
    gm_out_str(o, label);
    gm_out_size(o, bytes);
    gm_out_str(o, "\n");
}

static void line_u64(gm_outbuf *o, const char *label, uint64_t v)
{
    gm_out_str(o, label);
    gm_out_u64(o, v);
    gm_out_str(o, "\n");
}

__attribute__((visibility("default"))) void gmalloc_print_stats(int fd)
{
    anr_core_stats s;
    anr_core_get_stats(gm_heap(), &s);
    char buf[2048];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof(buf));
    gm_out_str(&o, "==== gmalloc statistics (pid ");
    gm_out_u64(&o, (uint64_t)getpid());
    gm_out_str(&o, ") ====\n");
    line_size(&o, "mapping reserved at init : ", s.mapping_size);
    gm_out_str(&o, "limit                    : ");
    if (s.limit)
        gm_out_size(&o, s.limit);
    else
        gm_out_str(&o, "none");
    gm_out_str(&o, "\n");
    line_size(&o, "in use now               : ", s.bytes_in_use);
    line_u64(&o, "objects in use           : ", s.objects_in_use);
    line_size(&o, "pages in use             : ", (uint64_t)s.pages_in_use * s.page_size);
    line_size(&o, "free pages kept (dirty)  : ", (uint64_t)s.pages_dirty * s.page_size);
    line_size(&o, "peak (in use + dirty)    : ", (uint64_t)s.pages_peak * s.page_size);
    line_size(&o, "heap high-water mark     : ", (uint64_t)s.pages_high_water * s.page_size);
    line_size(&o, "metadata                 : ", s.metadata_bytes);
    line_size(&o, "handed back (madvise)    : ", s.pages_purged * s.page_size);
    line_u64(&o, "madvise calls            : ", s.madvise_calls);
    line_u64(&o, "deferred frees           : ", s.deferred_frees);
    line_u64(&o, "threads with a cache     : ", s.thread_caches);
    line_size(&o, "free in thread caches    : ", s.bytes_cached);
    line_u64(&o, "failed allocations       : ", s.alloc_failures);
    line_u64(&o, "bad pointers seen        : ", s.bad_pointers);
    line_u64(&o, "map calls after init     : ", s.map_calls - 1);
    gm_out_write(&o, fd);
}

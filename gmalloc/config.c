/* gmalloc configuration: `KEY value...` lines and GMALLOC_<KEY> variables.
 *
 * Runs inside malloc's init, so nothing here may allocate: the text is parsed
 * in place (a line of any length is a pointer and a length, never copied), and
 * messages are built in a stack buffer with gm_outbuf. No stdio, no locale,
 * no getenv: the caller hands in the file's text and envp.
 *
 * A bad line is reported once and skipped; every key keeps its previous value.
 * PAGE_FLOOR <= PAGE_CEILING is checked once at the end of a parse or an
 * environment pass, when both have their final values (so the order of the
 * lines does not matter); if it fails, both go back to the values they had
 * before that pass and one bad line is counted.
 */
#include "config.h"
#include "anr_malloc.h" /* ANR_DEBUG_* for the DEBUG key */

#include "outbuf.h"

#include <string.h>

#define GM_STR_(x) #x
#define GM_STR(x) GM_STR_(x)

/* Mirrors anr_core's default for page_ceiling == 0 (anr_core.h); used only to
 * check an explicit PAGE_FLOOR when PAGE_CEILING is left at its default. */
#define GM_DEFAULT_PAGE_CEILING 1024
/* Slab classes are multiples of the engine's alignment, alignof(max_align_t). */
#define GM_SLAB_QUANTUM 16
/* How much of a value or token a message shows before cutting it with "...". */
#define GM_SHOW_VALUE 80
#define GM_SHOW_TOKEN 40

typedef enum gm_key {
    KEY_MAPPING,
    KEY_LIMIT,
    KEY_PAGE_CEILING,
    KEY_PAGE_FLOOR,
    KEY_SLAB_SIZES,
    KEY_ON_LIMIT,
    KEY_ON_ERROR,
    KEY_PURGE,
    KEY_STATS,
    KEY_THREAD_CACHE,
    KEY_THREAD_CACHE_MAX_SIZE,
    KEY_THREAD_CACHE_BYTES,
    KEY_THREAD_CACHE_RUN_BYTES,
    KEY_DECAY_MS,
    KEY_REUSE_MS,
    KEY_PURGE_THREAD,
    KEY_MEMBROKER,
    KEY_DEBUG,
    KEY_DEBUG_SOCKET,
    KEY_COUNT,
    KEY_UNKNOWN = -1,
} gm_key;

static const char *const key_names[KEY_COUNT] = {
    "MAPPING",  "LIMIT",    "PAGE_CEILING", "PAGE_FLOOR", "SLAB_SIZES",
    "ON_LIMIT", "ON_ERROR", "PURGE",        "STATS",
    "THREAD_CACHE", "THREAD_CACHE_MAX_SIZE", "THREAD_CACHE_BYTES",
    "THREAD_CACHE_RUN_BYTES", "DECAY_MS",
    "REUSE_MS", "PURGE_THREAD", "MEMBROKER", "DEBUG", "DEBUG_SOCKET",
};

/* Why a value was refused: a static reason, optionally the token at fault
 * and a number to show beside it (the limit it broke, or the size before it). */
typedef struct set_error {
    const char *why;
    const char *tok;
    size_t tok_len;
    const char *num_label; /* NULL: no number */
    uint64_t num;
} set_error;

/* ---- small text helpers (no locale) ---- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static char to_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

/* True if s[0..n) equals the NUL-terminated upper-case `word`, ignoring case. */
static bool eq_ci(const char *s, size_t n, const char *word)
{
    size_t i = 0;
    for (; i < n; i++)
        if (word[i] == '\0' || to_upper(s[i]) != word[i]) return false;
    return word[i] == '\0';
}

static void trim(const char **s, size_t *n)
{
    const char *p = *s;
    size_t len = *n;
    while (len > 0 && is_blank(p[0])) {
        p++;
        len--;
    }
    while (len > 0 && is_blank(p[len - 1]))
        len--;
    *s = p;
    *n = len;
}

/* Cuts the first blank-separated token off [*s, *s + *n); `comma` also makes
 * ',' a separator. Returns false when nothing is left. */
static bool next_token(const char **s, size_t *n, bool comma, const char **tok, size_t *tok_len)
{
    const char *p = *s;
    size_t left = *n;
    while (left > 0 && (is_blank(*p) || (comma && *p == ','))) {
        p++;
        left--;
    }
    if (left == 0) return false;
    size_t len = 0;
    while (len < left && !is_blank(p[len]) && !(comma && p[len] == ','))
        len++;
    *tok = p;
    *tok_len = len;
    *s = p + len;
    *n = left - len;
    return true;
}

static gm_key find_key(const char *k, size_t n)
{
    for (int i = 0; i < KEY_COUNT; i++)
        if (eq_ci(k, n, key_names[i])) return (gm_key)i;
    return KEY_UNKNOWN;
}

/* ---- numbers ---- */

typedef enum num_status { NUM_OK, NUM_EMPTY, NUM_JUNK, NUM_RANGE } num_status;

static const char *const size_why[] = {
    [NUM_EMPTY] = "missing value",
    [NUM_JUNK] = "not a size (digits, then optionally K, M, G or T, then optionally B or iB)",
    [NUM_RANGE] = "too large for size_t",
};

static const char *const count_why[] = {
    [NUM_EMPTY] = "missing value",
    [NUM_JUNK] = "not a page count (decimal digits)",
    [NUM_RANGE] = "too large for size_t",
};

/* Decimal digits into a u64; *overflow is set (and scanning goes on) when the
 * value passes UINT64_MAX. Returns the number of digits read. */
static size_t scan_digits(const char *s, size_t n, uint64_t *v, bool *overflow)
{
    size_t i = 0;
    *v = 0;
    *overflow = false;
    for (; i < n && is_digit(s[i]); i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (*v > (UINT64_MAX - d) / 10)
            *overflow = true;
        else
            *v = *v * 10 + d;
    }
    return i;
}

static num_status parse_size(const char *s, size_t n, size_t *out)
{
    if (n == 0) return NUM_EMPTY;
    uint64_t v;
    bool overflow;
    size_t i = scan_digits(s, n, &v, &overflow);
    if (i == 0) return NUM_JUNK;
    unsigned shift = 0;
    if (i < n) {
        switch (to_upper(s[i])) {
        case 'K':
            shift = 10;
            break;
        case 'M':
            shift = 20;
            break;
        case 'G':
            shift = 30;
            break;
        case 'T':
            shift = 40;
            break;
        default:
            break;
        }
        if (shift) i++;
    }
    /* "B" after digits or a suffix; "iB" only after a suffix ("5iB" is junk). */
    if (shift && n - i == 2 && eq_ci(s + i, 2, "IB"))
        i += 2;
    else if (n - i == 1 && to_upper(s[i]) == 'B')
        i += 1;
    if (i != n) return NUM_JUNK;
    if (overflow || v > ((uint64_t)SIZE_MAX >> shift)) return NUM_RANGE;
    *out = (size_t)(v << shift);
    return NUM_OK;
}

static num_status parse_count(const char *s, size_t n, size_t *out)
{
    if (n == 0) return NUM_EMPTY;
    uint64_t v;
    bool overflow;
    size_t i = scan_digits(s, n, &v, &overflow);
    if (i == 0 || i != n) return NUM_JUNK;
    if (overflow || v > (uint64_t)SIZE_MAX) return NUM_RANGE;
    *out = (size_t)v;
    return NUM_OK;
}

bool gm_parse_size(const char *s, size_t len, size_t *out)
{
    size_t v;
    if (!s || parse_size(s, len, &v) != NUM_OK) return false;
    *out = v;
    return true;
}

/* ---- one key ---- */

static bool fail(set_error *e, const char *why)
{
    e->why = why;
    return false;
}

static bool fail_num(set_error *e, const char *const *whys, num_status st)
{
    e->why = whys[st];
    if (st == NUM_RANGE) {
        e->num_label = "max";
        e->num = (uint64_t)SIZE_MAX;
    }
    return false;
}

/* SLAB_SIZES: parsed into a scratch array and committed only if all of it is
 * good, so a bad line leaves the previous classes in place. */
static bool set_slab_sizes(gm_config *cfg, const char *v, size_t n, set_error *e)
{
    uint32_t sizes[ANR_MAX_CLASSES];
    size_t count = 0;
    const char *tok;
    size_t tok_len;
    while (next_token(&v, &n, true, &tok, &tok_len)) {
        e->tok = tok;
        e->tok_len = tok_len;
        if (count == ANR_MAX_CLASSES) {
            e->num_label = "max entries";
            e->num = ANR_MAX_CLASSES;
            return fail(e, "too many sizes");
        }
        size_t sz = 0;
        num_status st = parse_size(tok, tok_len, &sz);
        if (st != NUM_OK) return fail_num(e, size_why, st);
        if (sz == 0 || sz % GM_SLAB_QUANTUM != 0)
            return fail(e, "not a positive multiple of " GM_STR(GM_SLAB_QUANTUM));
        if (sz > ANR_SLAB_MAX_SIZE) {
            e->num_label = "max";
            e->num = ANR_SLAB_MAX_SIZE;
            return fail(e, "larger than the biggest slab class");
        }
        if (count > 0 && sz <= sizes[count - 1]) {
            e->num_label = "previous";
            e->num = sizes[count - 1];
            return fail(e, "sizes must be strictly increasing");
        }
        sizes[count++] = (uint32_t)sz;
    }
    e->tok = NULL;
    if (count == 0) return fail(e, "missing value");
    memcpy(cfg->slab_sizes, sizes, count * sizeof sizes[0]);
    cfg->n_slab_sizes = count;
    return true;
}

/* DEBUG: the words of anr_debug_parse() (anr_malloc.h), comma or blank
 * separated: fdr[=N], guards, stacks[=N], trash, trash-alloc, valgrind, all,
 * none. Parsed here (no anr_malloc in the parser library) so that a bad word
 * is reported with its file and line. */
static bool set_debug(gm_config *cfg, const char *v, size_t n, set_error *e)
{
    unsigned flags = 0, depth = 0;
    size_t fdr = 0;
    const char *tok;
    size_t tok_len;
    while (next_token(&v, &n, true, &tok, &tok_len)) {
        e->tok = tok;
        e->tok_len = tok_len;
        size_t wlen = 0;
        while (wlen < tok_len && tok[wlen] != '=')
            wlen++;
        bool has_num = wlen < tok_len;
        size_t num = 0;
        if (has_num) {
            num_status st = parse_count(tok + wlen + 1, tok_len - wlen - 1, &num);
            if (st != NUM_OK) return fail_num(e, count_why, st);
        }
        if (eq_ci(tok, wlen, "FDR")) {
            if (has_num && (num == 0 || num > ((size_t)1 << 28)))
                return fail(e, "fdr=N takes 1 to 268435456 slots");
            flags |= ANR_DEBUG_FDR;
            if (has_num) fdr = num;
        } else if (eq_ci(tok, wlen, "STACKS")) {
            if (has_num && (num == 0 || num > ANR_MAX_STACK_DEPTH))
                return fail(e, "stacks=N takes 1 to " GM_STR(ANR_MAX_STACK_DEPTH) " frames");
            flags |= ANR_DEBUG_STACKS;
            if (has_num) depth = (unsigned)num;
        } else if (has_num) {
            return fail(e, "only fdr and stacks take =N");
        } else if (eq_ci(tok, wlen, "GUARDS")) {
            flags |= ANR_DEBUG_GUARDS;
        } else if (eq_ci(tok, wlen, "TRASH")) {
            flags |= ANR_DEBUG_TRASH_FREE;
        } else if (eq_ci(tok, wlen, "TRASH-ALLOC")) {
            flags |= ANR_DEBUG_TRASH_ALLOC;
        } else if (eq_ci(tok, wlen, "VALGRIND")) {
            flags |= ANR_DEBUG_VALGRIND;
        } else if (eq_ci(tok, wlen, "ALL")) {
            flags |= ANR_DEBUG_ALL;
        } else if (eq_ci(tok, wlen, "NONE") || eq_ci(tok, wlen, "OFF") || eq_ci(tok, wlen, "0")) {
            flags = 0;
        } else {
            return fail(e, "expected fdr[=N], guards, stacks[=N], trash, trash-alloc, valgrind, "
                           "all or none");
        }
    }
    e->tok = NULL;
    cfg->debug = flags;
    cfg->debug_stack_depth = depth;
    cfg->debug_fdr_entries = fdr;
    return true;
}

/* Sets a known key from a trimmed value. On failure cfg is unchanged. */
static bool set_key(gm_config *cfg, gm_key key, const char *v, size_t n, set_error *e)
{
    if (n == 0) return fail(e, "missing value");
    if (key == KEY_SLAB_SIZES) return set_slab_sizes(cfg, v, n, e);
    if (key == KEY_DEBUG) return set_debug(cfg, v, n, e);

    /* Every other key takes exactly one word. */
    const char *rest = v;
    size_t rest_len = n;
    const char *word;
    size_t wlen;
    next_token(&rest, &rest_len, false, &word, &wlen);
    trim(&rest, &rest_len);
    if (rest_len > 0) {
        e->tok = rest;
        e->tok_len = rest_len;
        return fail(e, "unexpected text after the value");
    }

    size_t num = 0;
    num_status st;
    switch (key) {
    case KEY_MAPPING:
        if ((st = parse_size(word, wlen, &num)) != NUM_OK) return fail_num(e, size_why, st);
        cfg->mapping = num;
        return true;
    case KEY_LIMIT:
        if (eq_ci(word, wlen, "NONE")) {
            cfg->limit = 0;
            return true;
        }
        if ((st = parse_size(word, wlen, &num)) != NUM_OK) return fail_num(e, size_why, st);
        cfg->limit = num;
        return true;
    case KEY_PAGE_CEILING:
    case KEY_PAGE_FLOOR:
        if ((st = parse_count(word, wlen, &num)) != NUM_OK) return fail_num(e, count_why, st);
        if (key == KEY_PAGE_CEILING)
            cfg->page_ceiling = num;
        else
            cfg->page_floor = num;
        return true;
    case KEY_ON_LIMIT:
        if (eq_ci(word, wlen, "NULL"))
            cfg->on_limit = GM_ON_LIMIT_NULL;
        else if (eq_ci(word, wlen, "ABORT"))
            cfg->on_limit = GM_ON_LIMIT_ABORT;
        else
            return fail(e, "expected null or abort");
        return true;
    case KEY_ON_ERROR:
        if (eq_ci(word, wlen, "ABORT"))
            cfg->on_error = GM_ON_ERROR_ABORT;
        else if (eq_ci(word, wlen, "REPORT"))
            cfg->on_error = GM_ON_ERROR_REPORT;
        else if (eq_ci(word, wlen, "IGNORE"))
            cfg->on_error = GM_ON_ERROR_IGNORE;
        else
            return fail(e, "expected abort, report or ignore");
        return true;
    case KEY_PURGE:
        if (eq_ci(word, wlen, "DONTNEED"))
            cfg->purge_advice = ANR_PURGE_DONTNEED;
        else if (eq_ci(word, wlen, "FREE"))
            cfg->purge_advice = ANR_PURGE_FREE;
        else
            return fail(e, "expected dontneed or free");
        return true;
    case KEY_STATS:
    case KEY_THREAD_CACHE:
    case KEY_PURGE_THREAD:
    case KEY_MEMBROKER:
    case KEY_DEBUG_SOCKET: {
        bool v;
        if (eq_ci(word, wlen, "1") || eq_ci(word, wlen, "YES") || eq_ci(word, wlen, "ON") ||
            eq_ci(word, wlen, "TRUE"))
            v = true;
        else if (eq_ci(word, wlen, "0") || eq_ci(word, wlen, "NO") || eq_ci(word, wlen, "OFF") ||
                 eq_ci(word, wlen, "FALSE"))
            v = false;
        else
            return fail(e, "expected 0, 1, yes, no, on, off, true or false");
        if (key == KEY_STATS)
            cfg->stats = v;
        else if (key == KEY_THREAD_CACHE)
            cfg->thread_cache = v;
        else if (key == KEY_PURGE_THREAD)
            cfg->purge_thread = v;
        else if (key == KEY_DEBUG_SOCKET)
            cfg->debug_socket = v;
        else
            cfg->membroker = v;
        return true;
    }
    case KEY_THREAD_CACHE_MAX_SIZE:
    case KEY_THREAD_CACHE_BYTES:
    case KEY_THREAD_CACHE_RUN_BYTES:
        if ((st = parse_size(word, wlen, &num)) != NUM_OK) return fail_num(e, size_why, st);
        if (key == KEY_THREAD_CACHE_MAX_SIZE)
            cfg->tcache_max_size = num;
        else if (key == KEY_THREAD_CACHE_BYTES)
            cfg->tcache_max_bytes = num;
        else
            cfg->tcache_run_bytes = num;
        return true;
    case KEY_DECAY_MS:
        if (eq_ci(word, wlen, "NEVER")) {
            cfg->decay_ms = UINT32_MAX;
            return true;
        }
        if ((st = parse_count(word, wlen, &num)) != NUM_OK) return fail_num(e, count_why, st);
        if (num == 0 || num >= UINT32_MAX)
            return fail(e, "expected milliseconds from 1 to 4294967294, or never");
        cfg->decay_ms = (uint32_t)num;
        return true;
    case KEY_REUSE_MS:
        if (eq_ci(word, wlen, "OFF")) {
            cfg->reuse_ms = 0;
            return true;
        }
        if ((st = parse_count(word, wlen, &num)) != NUM_OK) return fail_num(e, count_why, st);
        if (num >= UINT32_MAX)
            return fail(e, "expected milliseconds from 0 to 4294967294, or off");
        cfg->reuse_ms = (uint32_t)num;
        return true;
    default:
        return fail(e, "unknown key");
    }
}

void gm_config_defaults(gm_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->mapping = 0;      /* engine default: 4x RAM (64-bit), 512 MiB (32-bit) */
    cfg->limit = 0;        /* none */
    cfg->page_ceiling = 0; /* engine default: 1024 pages */
    cfg->page_floor = 0;   /* engine default: anr_core_default_floor */
    cfg->n_slab_sizes = 0; /* engine's built-in classes */
    cfg->on_limit = GM_ON_LIMIT_NULL;
    cfg->on_error = GM_ON_ERROR_ABORT;
    cfg->purge_advice = ANR_PURGE_DONTNEED;
    cfg->stats = false;
    cfg->thread_cache = true;
    cfg->decay_ms = 0;     /* engine default: 1000 ms */
    cfg->reuse_ms = 1000;  /* the engine's default is off (anr_malloc heaps) */
}

bool gm_config_set(gm_config *cfg, const char *key, size_t key_len, const char *value,
                   size_t value_len, const char **why)
{
    set_error e = {0};
    if (!key) key_len = 0;
    if (!value) value_len = 0;
    trim(&key, &key_len);
    trim(&value, &value_len);
    gm_key k = find_key(key, key_len);
    bool ok = (k == KEY_UNKNOWN) ? fail(&e, "unknown key") : set_key(cfg, k, value, value_len, &e);
    if (!ok && why) *why = e.why;
    return ok;
}

/* ---- reporting ---- */

/* Shows at most `max` bytes of s, non-printable bytes as \xNN, "..." if cut. */
static void out_shown(gm_outbuf *o, const char *s, size_t n, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t shown = n < max ? n : max;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            gm_out_mem(o, &s[i], 1);
        } else {
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 0xf]};
            gm_out_mem(o, esc, sizeof esc);
        }
    }
    if (shown < n) gm_out_str(o, "...");
}

static void out_quoted(gm_outbuf *o, const char *s, size_t n, size_t max)
{
    gm_out_mem(o, "\"", 1);
    out_shown(o, s, n, max);
    gm_out_mem(o, "\"", 1);
}

typedef struct gm_source {
    const char *file;   /* shown to the report callback */
    const char *prefix; /* put before key names: "" for a file, "GMALLOC_" for envp */
    gm_config_report_fn report;
    void *ctx;
} gm_source;

static void emit(const gm_source *src, unsigned line, gm_outbuf *o)
{
    if (src->report) src->report(src->ctx, src->file, line, o->buf);
}

static void report_unknown(const gm_source *src, unsigned line, const char *key, size_t key_len,
                           const char *value, size_t value_len)
{
    char buf[384];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof buf);
    gm_out_str(&o, src->prefix[0] ? "unknown variable " : "unknown key ");
    gm_out_str(&o, src->prefix);
    out_shown(&o, key, key_len, GM_SHOW_TOKEN);
    gm_out_str(&o, " (value ");
    out_quoted(&o, value, value_len, GM_SHOW_VALUE);
    gm_out_str(&o, "); ignored");
    emit(src, line, &o);
}

/* `KEY "value": why (at "tok", label N); keeping the previous value` */
static void report_bad(const gm_source *src, unsigned line, gm_key key, const char *value,
                       size_t value_len, const set_error *e)
{
    char buf[384];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof buf);
    gm_out_str(&o, src->prefix);
    gm_out_str(&o, key_names[key]);
    if (value_len > 0) {
        gm_out_mem(&o, " ", 1);
        out_quoted(&o, value, value_len, GM_SHOW_VALUE);
    }
    gm_out_str(&o, ": ");
    gm_out_str(&o, e->why);
    bool show_tok = e->tok && !(e->tok == value && e->tok_len == value_len);
    if (show_tok || e->num_label) {
        gm_out_str(&o, " (");
        if (show_tok) {
            gm_out_str(&o, "at ");
            out_quoted(&o, e->tok, e->tok_len, GM_SHOW_TOKEN);
        }
        if (show_tok && e->num_label) gm_out_str(&o, ", ");
        if (e->num_label) {
            gm_out_str(&o, e->num_label);
            gm_out_mem(&o, " ", 1);
            gm_out_u64(&o, e->num);
        }
        gm_out_mem(&o, ")", 1);
    }
    gm_out_str(&o, "; keeping the previous value");
    emit(src, line, &o);
}

/* Applies one `key value` pair, reporting it if bad. Returns true if good. */
static bool apply(gm_config *cfg, const gm_source *src, unsigned line, const char *key,
                  size_t key_len, const char *value, size_t value_len, gm_key *which)
{
    trim(&value, &value_len);
    gm_key k = find_key(key, key_len);
    *which = k;
    if (k == KEY_UNKNOWN) {
        report_unknown(src, line, key, key_len, value, value_len);
        return false;
    }
    set_error e = {0};
    if (!set_key(cfg, k, value, value_len, &e)) {
        report_bad(src, line, k, value, value_len, &e);
        return false;
    }
    return true;
}

/* ---- PAGE_FLOOR <= PAGE_CEILING, checked after a whole pass ---- */

typedef struct pair_state {
    size_t ceiling0, floor0; /* values before the pass */
    unsigned line;           /* last line that set either; 0 if none or envp */
} pair_state;

static void out_pages(gm_outbuf *o, size_t pages)
{
    if (pages == 0)
        gm_out_str(o, "default");
    else
        gm_out_u64(o, pages);
}

static bool pair_ok(size_t ceiling, size_t floor)
{
    /* floor 0 means the default share of the ceiling: always consistent */
    return floor == 0 || floor <= (ceiling ? ceiling : GM_DEFAULT_PAGE_CEILING);
}

/* Returns 1 (a bad line) if the pass left PAGE_FLOOR above PAGE_CEILING. Both
 * go back to their values before the pass; if those were inconsistent too (set
 * by the caller, not by a pass), PAGE_FLOOR goes back to its default. */
static unsigned check_pair(gm_config *cfg, const gm_source *src, const pair_state *ps)
{
    if (pair_ok(cfg->page_ceiling, cfg->page_floor)) return 0;

    char buf[384];
    gm_outbuf o;
    gm_out_init(&o, buf, sizeof buf);
    gm_out_str(&o, src->prefix);
    gm_out_str(&o, "PAGE_FLOOR ");
    gm_out_u64(&o, cfg->page_floor);
    gm_out_str(&o, " is above ");
    gm_out_str(&o, src->prefix);
    gm_out_str(&o, "PAGE_CEILING ");
    gm_out_u64(&o, cfg->page_ceiling ? cfg->page_ceiling : GM_DEFAULT_PAGE_CEILING);
    if (cfg->page_ceiling == 0) gm_out_str(&o, " (the default)");
    if (pair_ok(ps->ceiling0, ps->floor0)) {
        cfg->page_ceiling = ps->ceiling0;
        cfg->page_floor = ps->floor0;
        gm_out_str(&o, "; keeping the previous values (PAGE_CEILING ");
        out_pages(&o, cfg->page_ceiling);
        gm_out_str(&o, ", PAGE_FLOOR ");
        out_pages(&o, cfg->page_floor);
        gm_out_mem(&o, ")", 1);
    } else {
        cfg->page_floor = 0;
        gm_out_str(&o, "; PAGE_FLOOR set to its default (ceiling / 16)");
    }
    emit(src, ps->line, &o);
    return 1;
}

/* ---- whole passes ---- */

static unsigned parse_line(gm_config *cfg, const gm_source *src, unsigned line, const char *s,
                           size_t n, pair_state *ps)
{
    const char *hash = memchr(s, '#', n);
    if (hash) n = (size_t)(hash - s);
    trim(&s, &n);
    if (n == 0) return 0;
    size_t key_len = 0;
    while (key_len < n && !is_blank(s[key_len]))
        key_len++;
    gm_key k;
    if (!apply(cfg, src, line, s, key_len, s + key_len, n - key_len, &k)) return 1;
    if (k == KEY_PAGE_CEILING || k == KEY_PAGE_FLOOR) ps->line = line;
    return 0;
}

unsigned gm_config_parse(gm_config *cfg, const char *text, size_t len, const char *file,
                         gm_config_report_fn report, void *ctx)
{
    gm_source src = {file ? file : "(config)", "", report, ctx};
    pair_state ps = {cfg->page_ceiling, cfg->page_floor, 0};
    unsigned bad = 0, line = 0;
    if (!text) len = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end; /* the last line may lack its newline */
        bad += parse_line(cfg, &src, line, p, (size_t)(eol - p), &ps);
        p = nl ? nl + 1 : end;
    }
    return bad + check_pair(cfg, &src, &ps);
}

unsigned gm_config_apply_env(gm_config *cfg, char *const *envp, gm_config_report_fn report,
                             void *ctx)
{
    static const char prefix[] = "GMALLOC_";
    const size_t prefix_len = sizeof prefix - 1;
    gm_source src = {"environment", prefix, report, ctx};
    pair_state ps = {cfg->page_ceiling, cfg->page_floor, 0};
    unsigned bad = 0;
    for (; envp && *envp; envp++) {
        const char *name = *envp;
        if (strncmp(name, prefix, prefix_len) != 0) continue;
        name += prefix_len;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        if (eq_ci(name, name_len, "CONF")) continue; /* names the file; the caller reads it */
        const char *value = eq ? eq + 1 : name + name_len;
        gm_key k;
        if (!apply(cfg, &src, 0, name, name_len, value, strlen(value), &k)) bad++;
    }
    return bad + check_pair(cfg, &src, &ps);
}

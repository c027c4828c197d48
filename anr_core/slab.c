/* Bitmap slabs for small objects.
 *
 * A slab is a run of a few pages cut into objects of one size class. Its
 * bitmap (one bit per object, 1 = in use) lives in the page-map entry of its
 * first page, never next to the objects, so an overrun cannot reach it. Bits
 * past the last object are set at creation, so "find a free slot" is a
 * find-first-zero over at most four words. Slabs with free slots are on a
 * per-class list; a slab that empties goes back to the page runs at once (its
 * pages become dirty and are reused or purged under the hysteresis).
 */
#include <stdalign.h>
#include <string.h>

#include "internal.h"

#define ALIGN (alignof(max_align_t))
#define MAX_SLAB_PAGES 16u
/* Classes up to 2 KiB get at least this many objects per slab, so that a
 * thread cache refills (takes the lock) once per 16 objects or more. */
#define MIN_OBJECTS 16u

/* Every 16 bytes up to 256 (the sizes most programs allocate most of:
 * with steps of 32 above 128 a 16-256 B mix cost 15.7 bytes per object
 * beyond the bytes asked, now 11.6; bench/README.md), then 4 per
 * doubling. */
static const uint32_t default_sizes[] = {
    16,   32,   48,   64,   80,   96,   112,  128,  144,   160,   176,   192,  208,  224,
    240,  256,  320,  384,  448,  512,  640,  768,  896,   1024,  1280,  1536, 1792, 2048,
    2560, 3072, 3584, 4096, 4416, 4608, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384,
};

size_t anr_core_default_slab_sizes(const uint32_t **sizes)
{
    *sizes = default_sizes;
    return sizeof(default_sizes) / sizeof(default_sizes[0]);
}

/* Pages per slab: for classes up to a page, from enough for MIN_OBJECTS
 * objects (classes up to 2 KiB), the fewest that waste at most 1/16 of the
 * slab, else the least wasteful up to MAX_SLAB_PAGES (a longer slab would
 * be pinned longer by one live object). Above a page, the least wasteful up
 * to MAX_SLAB_PAGES: a slab holds a few objects, so any waste is paid by
 * each of them on top of the class's rounding (4608 took 6 pages for 5
 * objects under 1/16, 8 for 7 under 1/64; it fills 9 pages with 8). */
static void size_slab(size_t page, uint32_t size, _anr_class *c)
{
    unsigned best_k = 0, k_min = 1;
    if (size <= 2048)
        k_min = (unsigned)((MIN_OBJECTS * size + page - 1) / page);
    if (k_min > MAX_SLAB_PAGES)
        k_min = MAX_SLAB_PAGES;
    size_t best_waste = SIZE_MAX;
    for (unsigned k = k_min; k <= MAX_SLAB_PAGES; k++) {
        size_t bytes = k * page;
        size_t nobj = bytes / size;
        if (nobj == 0)
            continue;
        if (nobj > ANR_SLAB_MAX_OBJECTS)
            nobj = ANR_SLAB_MAX_OBJECTS;
        size_t waste = bytes - nobj * size;
        /* compare waste ratios: waste / bytes */
        if (best_waste == SIZE_MAX || waste * (best_k * page) < best_waste * bytes) {
            best_k = k;
            best_waste = waste;
        }
        if (size <= page && waste * 16 <= bytes)
            break;
    }
    size_t nobj = best_k * page / size;
    c->size = size;
#ifdef __SIZEOF_INT128__
    c->magic = UINT64_MAX / size + 1;
#else
    c->recip = (uint32_t)((((uint64_t)1 << 32) + size - 1) / size);
#endif
    c->pages = (uint8_t)best_k;
    c->nobj = (uint16_t)(nobj > ANR_SLAB_MAX_OBJECTS ? ANR_SLAB_MAX_OBJECTS : nobj);
}

int _anr_classes_init(anr_heap *h, const uint32_t *sizes, size_t n)
{
    if (!sizes) {
        n = anr_core_default_slab_sizes(&sizes);
    }
    if (n == 0 || n > ANR_MAX_CLASSES)
        return -1;
    for (size_t i = 0; i < n; i++) {
        /* 16 bytes at least: a freed object holds a link and the free key. */
        if (sizes[i] < 16 || sizes[i] % ALIGN || sizes[i] > ANR_SLAB_MAX_SIZE ||
            (i > 0 && sizes[i] <= sizes[i - 1]) || sizes[i] > MAX_SLAB_PAGES * h->page_size)
            return -1;
        size_slab(h->page_size, sizes[i], &h->cls[i]);
        h->partial[i] = _ANR_NIL;
    }
    h->nclasses = (uint32_t)n;
    unsigned c = 0;
    for (size_t i = 0; i < _ANR_LOOKUP_LEN; i++) {
        size_t size = i * 16;
        while (c < n && h->cls[c].size < size)
            c++;
        h->class_of[i] = (uint8_t)(c < n ? c : 0xff);
    }
    return 0;
}

int _anr_class_for(const anr_heap *h, size_t size, size_t align)
{
    if (size > h->cls[h->nclasses - 1].size)
        return -1;
    unsigned c = h->class_of[(size + 15) >> 4];
    if (align <= ALIGN)
        return (int)c;
    if (align > h->page_size)
        return -1;
    /* Slabs start on a page, so a class that is a multiple of align is aligned. */
    for (; c < h->nclasses; c++)
        if (h->cls[c].size % align == 0)
            return (int)c;
    return -1;
}

/* --- the partial list (doubly linked through the page map) --- */

static void partial_push(anr_heap *h, unsigned cls, uint32_t head)
{
    _anr_page *e = &h->pages[head];
    e->prev = _ANR_NIL;
    e->next = h->partial[cls];
    if (e->next != _ANR_NIL)
        h->pages[e->next].prev = head;
    h->partial[cls] = head;
}

static void partial_remove(anr_heap *h, unsigned cls, uint32_t head)
{
    _anr_page *e = &h->pages[head];
    if (e->prev != _ANR_NIL)
        h->pages[e->prev].next = e->next;
    else
        h->partial[cls] = e->next;
    if (e->next != _ANR_NIL)
        h->pages[e->next].prev = e->prev;
}

static uint32_t slab_new(anr_heap *h, unsigned cls, _anr_run_result *res)
{
    const _anr_class *c = &h->cls[cls];
    uint32_t head;
    bool zero;
    *res = _anr_run_alloc(h, c->pages, 1, &head, &zero);
    if (*res != _ANR_RUN_OK)
        return _ANR_NIL;
    _anr_page *e = &h->pages[head];
    memset(e, 0, sizeof(*e));
    e->kind = _ANR_PK_SLAB;
    e->cls = (uint8_t)cls;
    e->len = c->pages;
    e->nfree = c->nobj;
    /* Slots past the last object are marked used so they are never found
     * (a word at a time: a slab of big objects has a few and ~250 of these). */
    unsigned w = c->nobj >> 6;
    if (c->nobj & 63)
        e->bits[w++] = ~(uint64_t)0 << (c->nobj & 63);
    for (; w < ANR_SLAB_MAX_OBJECTS / 64; w++)
        e->bits[w] = ~(uint64_t)0;
    for (uint32_t i = 1; i < c->pages; i++) {
        _anr_page *in = &h->pages[head + i];
        memset(in, 0, sizeof(*in));
        in->kind = _ANR_PK_SLAB_INNER;
        in->len = i;
    }
    for (uint32_t i = 0; i < c->pages; i++)
        atomic_store_explicit(&h->slab_at[head + i], _anr_slab_at_make(cls, i), memory_order_relaxed);
    partial_push(h, cls, head);
    return head;
}

void *_anr_slab_alloc(anr_heap *h, unsigned cls, _anr_run_result *res)
{
    uint32_t head = h->partial[cls];
    if (head == _ANR_NIL) {
        head = slab_new(h, cls, res);
        if (head == _ANR_NIL)
            return NULL;
    }
    _anr_page *e = &h->pages[head];
    unsigned w = 0;
    while (e->bits[w] == ~(uint64_t)0) /* nfree > 0, so a zero bit exists */
        w++;
    unsigned bit = (unsigned)__builtin_ctzll(~e->bits[w]);
    e->bits[w] |= (uint64_t)1 << bit;
    if (--e->nfree == 0)
        partial_remove(h, cls, head);
    uint32_t size = h->cls[cls].size;
    h->bytes_in_use += size;
    h->objects_in_use++;
    *res = _ANR_RUN_OK;
    return _anr_page_addr(h, head) + (size_t)(w * 64 + bit) * size;
}

uint32_t _anr_slab_take(anr_heap *h, unsigned cls, _anr_run_result *res)
{
    uint32_t head = h->partial[cls];
    if (head == _ANR_NIL) {
        head = slab_new(h, cls, res);
        if (head == _ANR_NIL)
            return _ANR_NIL;
    }
    partial_remove(h, cls, head);
    *res = _ANR_RUN_OK;
    return head;
}

static void slab_release(anr_heap *h, uint32_t head, const _anr_class *c)
{
    for (uint32_t i = 1; i < c->pages; i++)
        memset(&h->pages[head + i], 0, sizeof(_anr_page));
    for (uint32_t i = 0; i < c->pages; i++)
        atomic_store_explicit(&h->slab_at[head + i], 0, memory_order_relaxed);
    _anr_run_free(h, head, c->pages);
}

void _anr_slab_put(anr_heap *h, uint32_t head)
{
    _anr_page *e = &h->pages[head];
    const _anr_class *c = &h->cls[e->cls];
    if (e->nfree == c->nobj)
        slab_release(h, head, c);
    else if (e->nfree)
        partial_push(h, e->cls, head);
}

void _anr_slab_free(anr_heap *h, uint32_t head, unsigned idx)
{
    _anr_page *e = &h->pages[head];
    unsigned cls = e->cls;
    const _anr_class *c = &h->cls[cls];
    e->bits[idx >> 6] &= ~((uint64_t)1 << (idx & 63));
    h->bytes_in_use -= c->size;
    h->objects_in_use--;
    if (e->nfree++ == 0)
        partial_push(h, cls, head);
    if (e->nfree == c->nobj) {
        partial_remove(h, cls, head);
        slab_release(h, head, c);
    }
}

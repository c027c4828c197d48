/* A fixed amount of bench_micro's random churn (BM_Random_16_1K and
 * BM_Random_1K_64K), for deterministic counts under cachegrind or perf
 * stat: on a shared VM the timings move more than most changes, and
 * instruction, cache-miss and mispredict counts do not.
 *
 * A working set of SLOTS live blocks; each of STEPS steps checks a random
 * one, frees it and allocates a block of the next precomputed size (LO..HI
 * bytes) in its place, writing its first and last byte. Same generator and
 * order as bench_micro's RandomChurn. Exits 1 on a wrong result.
 *
 * Usage: bench_churn LO HI SLOTS STEPS [SEED]
 *   valgrind --tool=cachegrind --cache-sim=yes --branch-sim=yes \
 *     --trace-children=yes env LD_PRELOAD=build/gmalloc/libgmalloc.so \
 *     build/bench/bench_churn 16 1024 1000 400000 1 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_common.h"

enum { SIZES = 1 << 16 };

/* bench_micro's Rng (splitmix64). */
static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: bench_churn LO HI SLOTS STEPS [SEED]\n");
        return 2;
    }
    size_t lo = strtoul(argv[1], NULL, 10), hi = strtoul(argv[2], NULL, 10);
    size_t slots = strtoul(argv[3], NULL, 10), steps = strtoul(argv[4], NULL, 10);
    uint64_t s = argc > 5 ? strtoull(argv[5], NULL, 10) : 1;
    if (lo == 0 || hi < lo || slots == 0) {
        fprintf(stderr, "bench_churn: need 0 < LO <= HI and SLOTS > 0\n");
        return 2;
    }
    static size_t size[SIZES], slot[SIZES];
    for (size_t i = 0; i < SIZES; i++) {
        size[i] = lo + next(&s) % (hi - lo + 1);
        slot[i] = next(&s) % slots;
    }
    unsigned char **live = calloc(slots, sizeof(*live));
    size_t *len = calloc(slots, sizeof(*len));
    if (!live || !len)
        bench_die("calloc failed");
    for (size_t i = 0; i < slots; i++) {
        len[i] = lo + next(&s) % (hi - lo + 1);
        if (!(live[i] = malloc(len[i])))
            bench_die("malloc(%zu) returned NULL", len[i]);
        live[i][0] = live[i][len[i] - 1] = (unsigned char)i;
    }
    for (size_t k = 0; k < steps; k++) {
        size_t j = k & (SIZES - 1), t = slot[j];
        unsigned char *c = live[t];
        if (c[0] != (unsigned char)t || c[len[t] - 1] != (unsigned char)t) {
            fprintf(stderr, "bench_churn: WRONG RESULT: block %p changed while live\n", (void *)c);
            return 1;
        }
        free(c);
        len[t] = size[j];
        if (!(c = malloc(len[t])))
            bench_die("malloc(%zu) returned NULL", len[t]);
        c[0] = c[len[t] - 1] = (unsigned char)t;
        live[t] = c;
    }
    for (size_t i = 0; i < slots; i++)
        free(live[i]);
    free(live);
    free(len);
    printf("bench_churn: %zu steps, %zu slots, %zu-%zu bytes: correct\n", steps, slots, lo, hi);
    return 0;
}

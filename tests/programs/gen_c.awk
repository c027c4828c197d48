# Generates a deterministic C program of a few thousand lines on stdout, for
# compiling with gcc under LD_PRELOAD. The program prints checksums; it has no
# undefined behaviour (unsigned arithmetic only) and compiles without warnings.
# Usage: awk -v nfunc=400 -f gen_c.awk > prog.c
function rnd(n) { return int(rand() * n) }
function op() { return substr("+-^|&*", 1 + rnd(6), 1) }
BEGIN {
    if (nfunc == "") nfunc = 400
    srand(777)
    print "#include <stdio.h>"
    print "#include <stdint.h>"
    print "#include <string.h>"
    print "#include <stdlib.h>"
    print ""
    print "struct rec { uint32_t a, b; uint64_t c; const char *name; unsigned char pad[13]; };"
    print ""
    printf "static const struct rec table[%d] = {\n", nfunc
    for (i = 0; i < nfunc; i++)
        printf "    { %.0fu, %.0fu, %.0full, \"rec_%d_%d\", { %d, %d, %d } },\n", rnd(1e9), rnd(1e9), rnd(1e9) * 1000 + rnd(1000), i, rnd(1e6), rnd(256), rnd(256), rnd(256)
    print "};"
    print ""
    for (i = 0; i < nfunc; i++) {
        printf "static uint64_t f%d(uint64_t x, uint32_t y)\n{\n", i
        printf "    uint64_t acc = %.0full;\n", rnd(1e9)
        printf "    for (uint32_t i = 0; i < %du; i++) {\n", 3 + rnd(20)
        printf "        acc = (acc %s (x >> (i & 7))) * %.0full + y;\n", op(), 1 + 2 * rnd(1000)
        printf "        x ^= acc << %d;\n", 1 + rnd(30)
        print  "    }"
        printf "    switch ((x ^ y) & 7) {\n"
        for (c = 0; c < 8; c++)
            printf "    case %d: acc += table[%d].a %s (uint64_t)table[%d].b; break;\n", c, rnd(nfunc), op(), rnd(nfunc)
        print  "    }"
        if (i > 0)
            printf "    if ((acc & 15) == %d) acc ^= f%d(x + 1, y ^ %du);\n", rnd(16), rnd(i), rnd(1000)
        printf "    acc += strlen(table[%d].name) + table[%d].pad[%d];\n", i, rnd(nfunc), rnd(13)
        print  "    return acc;"
        print  "}"
        print  ""
    }
    printf "typedef uint64_t (*fn_t)(uint64_t, uint32_t);\n"
    printf "static const fn_t fns[%d] = {\n", nfunc
    for (i = 0; i < nfunc; i++) printf "    f%d,\n", i
    print "};"
    print ""
    print "int main(void)"
    print "{"
    print "    uint64_t sum = 0;"
    print "    char *buf = malloc(1 << 16);"
    print "    if (!buf) return 1;"
    printf "    for (unsigned i = 0; i < %d; i++) {\n", nfunc
    print "        uint64_t v = fns[i](i * 2654435761u, i);"
    print "        sum = sum * 31 + v;"
    print "        snprintf(buf + (i % 64) * 1024, 1024, \"%s=%llu\", table[i].name, (unsigned long long)v);"
    print "        if (i % 50 == 0) puts(buf + (i % 64) * 1024);"
    print "    }"
    print "    printf(\"sum %llu\\n\", (unsigned long long)sum);"
    print "    free(buf);"
    print "    return 0;"
    print "}"
}

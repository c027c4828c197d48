/* tf_bench: write throughput in a directory (plain tmpfs or a track_fs
 * mount), for the table in README.md. Not a test.
 *   tf_bench DIR [ROUNDS]
 * Per round: sequential 1 MiB writes of a new 256 MiB file; then 32768
 * random 4 KiB writes (page-aligned) into a new 64 MiB file, first as a
 * sparse file (about 40% of the writes allocate a page) and again over the
 * now-written file (no allocation). Files are deleted after each step.
 * Prints the median over the rounds in MB/s (10^6 bytes). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEQ_TOTAL (256u << 20)
#define RAND_FILE (64u << 20)
#define RAND_OPS 32768u

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what, const char *path)
{
    perror(path ? path : what);
    exit(1);
}

static double seq(const char *path, char *buf)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("open", path);
    double t0 = now();
    for (unsigned done = 0; done < SEQ_TOTAL; done += 1u << 20)
        if (write(fd, buf, 1u << 20) != 1 << 20) die("write", path);
    double t = now() - t0;
    close(fd);
    return SEQ_TOTAL / t / 1e6;
}

static double rnd(const char *path, char *buf, unsigned *seed, int keep)
{
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    if (fd < 0) die("open", path);
    double t0 = now();
    for (unsigned i = 0; i < RAND_OPS; i++) {
        off_t off = (off_t)(rand_r(seed) % (RAND_FILE / 4096)) * 4096;
        if (pwrite(fd, buf, 4096, off) != 4096) die("pwrite", path);
    }
    double t = now() - t0;
    close(fd);
    if (!keep) unlink(path);
    return (double)RAND_OPS * 4096 / t / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tf_bench DIR [ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (rounds < 1 || rounds > 100) rounds = 5;
    char *buf = malloc(1u << 20);
    if (!buf) return 1;
    memset(buf, 0x5a, 1u << 20);
    char p1[4096], p2[4096];
    snprintf(p1, sizeof p1, "%s/tf_bench.seq", argv[1]);
    snprintf(p2, sizeof p2, "%s/tf_bench.rnd", argv[1]);
    double s[100], r1[100], r2[100];
    unsigned seed = 1;
    for (int i = 0; i < rounds; i++) {
        s[i] = seq(p1, buf);
        unlink(p1);
        unlink(p2);
        r1[i] = rnd(p2, buf, &seed, 1); /* sparse: allocates */
        r2[i] = rnd(p2, buf, &seed, 0); /* over what the first pass wrote */
    }
    qsort(s, (size_t)rounds, sizeof *s, cmp);
    qsort(r1, (size_t)rounds, sizeof *r1, cmp);
    qsort(r2, (size_t)rounds, sizeof *r2, cmp);
    printf("%-28s seq 1M %8.0f MB/s  rand 4K (sparse) %7.1f MB/s  rand 4K (overwrite) %7.1f MB/s  "
           "(median of %d; seq %.0f-%.0f)\n",
           argv[1], s[rounds / 2], r1[rounds / 2], r2[rounds / 2], rounds, s[0], s[rounds - 1]);
    return 0;
}

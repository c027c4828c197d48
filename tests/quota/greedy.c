/* A process under libgmalloc.so with MEMBROKER on: takes 1 MiB blocks
 * (written, so the pages are real) until malloc returns NULL or `max_mib`
 * is reached, reports, then follows commands on stdin:
 *   free   frees every block and calls malloc_trim(0) (surplus quota goes back)
 *   grab   takes blocks again until NULL
 *   quit   exits
 * Output lines: "got N MiB errno E quota Q" and "freed quota Q". */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gmalloc.h>

#define MAXB 4096
static void *blocks[MAXB];
static unsigned n;

static void grab(unsigned max_mib)
{
    errno = 0;
    while (n < MAXB && n < max_mib) {
        void *p = malloc(1 << 20);
        if (!p)
            break;
        memset(p, 0x5a, 1 << 20);
        blocks[n++] = p;
    }
    printf("got %u MiB errno %d quota %llu\n", n, errno == ENOMEM ? 12 : errno,
           (unsigned long long)gmalloc_quota_pages());
    fflush(stdout);
}

int main(int argc, char **argv)
{
    unsigned max_mib = argc > 1 ? (unsigned)atoi(argv[1]) : MAXB;
    setvbuf(stdin, NULL, _IONBF, 0);
    grab(max_mib);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "free", 4)) {
            for (unsigned i = 0; i < n; i++)
                free(blocks[i]);
            n = 0;
            malloc_trim(0);
            printf("freed quota %llu\n", (unsigned long long)gmalloc_quota_pages());
            fflush(stdout);
        } else if (!strncmp(line, "grab", 4)) {
            grab(max_mib);
        } else {
            break;
        }
    }
    return 0;
}

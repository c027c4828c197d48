/* A process that holds memory, for the track_fs tests: run under
 * LD_PRELOAD=libgmalloc.so with GMALLOC_MEMBROKER=1, its heap takes quota
 * from the same membroker pool as track_fs. Takes 1 MiB blocks (written, so
 * the pages are real) until malloc returns NULL or `max_mib` is reached,
 * prints "got N", then follows commands on stdin:
 *   free  frees every block and calls malloc_trim(0) (quota goes back), prints "freed"
 *   grab  takes blocks again until NULL, prints "got N"
 *   quit  exits
 * It uses only the malloc interface: nothing gmalloc-specific is linked. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXB 4096
static void *blocks[MAXB];
static unsigned n;

static void grab(unsigned max_mib)
{
    while (n < MAXB && n < max_mib) {
        void *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 0x5a, 1 << 20);
        blocks[n++] = p;
    }
    printf("got %u\n", n);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    unsigned max_mib = argc > 1 ? (unsigned)atoi(argv[1]) : MAXB;
    grab(max_mib);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "free", 4)) {
            for (unsigned i = 0; i < n; i++)
                free(blocks[i]);
            n = 0;
            malloc_trim(0);
            printf("freed\n");
            fflush(stdout);
        } else if (!strncmp(line, "grab", 4)) {
            grab(max_mib);
        } else {
            break;
        }
    }
    return 0;
}

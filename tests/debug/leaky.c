/* A program that leaks on purpose, for the debug socket's end-to-end test:
 * leaky_grow() leaks 512 bytes per round from one call stack while
 * balanced_churn() allocates and frees as much again. Runs under
 * LD_PRELOAD=libgmalloc.so with GMALLOC_DEBUG_SOCKET=1 until SIGTERM, then
 * exits normally (so the socket file is removed). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;
static void *volatile sink;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

__attribute__((noinline)) static void leaky_grow(void)
{
    char *p = malloc(512);
    memset(p, 0x5a, 512);
    sink = p; /* and forgotten */
}

__attribute__((noinline)) static void balanced_churn(void)
{
    char *keep[16];
    for (int i = 0; i < 16; i++) {
        keep[i] = malloc(32 + (size_t)i * 24);
        keep[i][0] = (char)i;
    }
    keep[3] = realloc(keep[3], 4000);
    for (int i = 0; i < 16; i++)
        free(keep[i]);
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    const struct timespec nap = {0, 2 * 1000 * 1000};
    /* At most about 10 minutes (~150 MB leaked) if nobody stops it. */
    for (long i = 0; !stop && i < 300000; i++) {
        leaky_grow();
        balanced_churn();
        nanosleep(&nap, NULL);
    }
    return 0;
}

/* track_fs: command line, mount and unmount. */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <syslog.h>
#include <unistd.h>

#include "internal.h"

tf_options tf_opt;
int tf_srcfd = -1;
static bool daemonised;

static const char usage[] =
    "NAME\n"
    "    track_fs - a tmpfs whose blocks are covered by membroker quota\n"
    "\n"
    "SYNOPSIS\n"
    "    track_fs SOURCE_DIR MOUNTPOINT [-f] [-s] [-d] [-o OPTION[,OPTION...]]\n"
    "    fusermount3 -u MOUNTPOINT\n"
    "\n"
    "DESCRIPTION\n"
    "    Mounts a passthrough of SOURCE_DIR (normally a directory on tmpfs) on\n"
    "    MOUNTPOINT. Before an operation adds blocks to a file (write, fallocate,\n"
    "    an extending truncate, a long symlink), track_fs makes sure the quota it\n"
    "    holds from the membroker daemon covers them; when the pool cannot give\n"
    "    it, the operation fails with ENOSPC and writes nothing. Quota goes back\n"
    "    when files shrink or are removed, and all of it when track_fs exits or\n"
    "    dies (the daemon reclaims it on disconnect).\n"
    "\n"
    "    Blocks are counted from st_blocks, so sparse files count what they\n"
    "    really use. At mount, what SOURCE_DIR already holds is counted. statfs\n"
    "    (df) shows as free what the quota held and the pool could still give.\n"
    "    Extending an open file with truncate covers its holes up to the new size\n"
    "    until the file is closed, so a shared writable mmap of it cannot fail\n"
    "    at write-back for lack of quota.\n"
    "\n"
    "    Without a reachable membroker, track_fs says so and runs with a local\n"
    "    limit (-o limit, default: the size of SOURCE_DIR's file system).\n"
    "\n"
    "OPTIONS\n"
    "    -o membroker=PATH      the daemon's socket (default: $MEMBROKER_SOCKET,\n"
    "                           else /run/membroker.sock)\n"
    "    -o limit=SIZE          the local limit when membroker cannot be reached\n"
    "    -o no_membroker        do not use membroker: the local limit only\n"
    "    -o chunk=SIZE          quota is asked for in chunks of this size (1M)\n"
    "    -o return_above=SIZE   surplus past which quota goes back (4 chunks)\n"
    "    -o slack=SIZE          surplus kept when quota goes back (1 chunk)\n"
    "    -o nonurgent           only normal REQUESTs: never an urgent RESERVE\n"
    "    -o reserve_timeout=MS  how long an urgent RESERVE may wait for other\n"
    "                           clients to give back (100)\n"
    "    -o cache_dir=DIR       bidirectional mode: when membroker asks for quota\n"
    "                           back, delete files under SOURCE_DIR/DIR, oldest\n"
    "                           first (a directory of disposable cache files)\n"
    "    SIZE is bytes, or a number with K, M, G or T (powers of 1024).\n"
    "\n"
    "    A write asks first for quota with a normal REQUEST (granted in part when\n"
    "    the pool is short); if that falls short, with an urgent all-or-nothing\n"
    "    RESERVE of the shortfall, which makes bidirectional clients give back.\n"
    "\n"
    "EXAMPLES\n"
    "    mount -t tmpfs -o size=1G tmpfs /run/big\n"
    "    track_fs /run/big /tmp/tracked -o membroker=/run/membroker.sock\n"
    "    track_fs /run/big /tmp/tracked -o cache_dir=cache,chunk=4M\n"
    "    track_fs /run/big /tmp/tracked -o no_membroker,limit=256M\n"
    "    fusermount3 -u /tmp/tracked\n"
    "\n"
    "EXIT STATUS\n"
    "    0 after a clean unmount; 1 on a usage or mount error.\n"
    "\n"
    "FUSE OPTIONS\n";

#define OPT(t, m, v)                                                                               \
    {                                                                                              \
        t, offsetof(tf_options, m), v                                                              \
    }
static const struct fuse_opt tf_fuse_opts[] = {
    OPT("membroker=%s", socket, 0),
    OPT("limit=%s", limit_s, 0),
    OPT("chunk=%s", chunk_s, 0),
    OPT("slack=%s", slack_s, 0),
    OPT("return_above=%s", return_above_s, 0),
    OPT("cache_dir=%s", cache_dir, 0),
    OPT("reserve_timeout=%d", reserve_timeout, 0),
    OPT("nonurgent", nonurgent, 1),
    OPT("no_membroker", no_membroker, 1),
    OPT("-h", show_help, 1),
    OPT("--help", show_help, 1),
    FUSE_OPT_END,
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)data, (void)outargs;
    if (key == FUSE_OPT_KEY_NONOPT && !tf_opt.source) {
        tf_opt.source = realpath(arg, NULL);
        if (!tf_opt.source) {
            fprintf(stderr, "track_fs: SOURCE_DIR %s: %s\n", arg, strerror(errno));
            return -1;
        }
        return 0; /* consumed; the next non-option is the mount point */
    }
    return 1;
}

void tf_log(int prio, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (daemonised)
        syslog(prio, "%s", line);
    else
        fprintf(stderr, "track_fs: %s\n", line);
}

void tf_log_daemonised(void)
{
    daemonised = true;
    openlog("track_fs", LOG_PID, LOG_DAEMON);
}

int tf_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-') return -1;
    unsigned shift = 0;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        end++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        end++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        end++;
        break;
    case 't':
    case 'T':
        shift = 40;
        end++;
        break;
    default:
        break;
    }
    if (*end || (shift && v > (UINT64_MAX >> shift))) return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

void tf_format_size(uint64_t b, char *buf, size_t len)
{
    if (b >= (1ull << 30) && b % (1ull << 20) == 0)
        snprintf(buf, len, "%.2f GiB", (double)b / (1ull << 30));
    else if (b >= (1ull << 20))
        snprintf(buf, len, "%.2f MiB", (double)b / (1ull << 20));
    else
        snprintf(buf, len, "%" PRIu64 " bytes", b);
}

static int size_opt(const char *name, const char *s, uint64_t def, uint64_t *out)
{
    *out = def;
    if (s && tf_parse_size(s, out) != 0) {
        fprintf(stderr, "track_fs: -o %s=%s: not a size (bytes, or a number with K, M, G, T)\n",
                name, s);
        return -1;
    }
    return 0;
}

static int check_options(void)
{
    struct statvfs sv;
    uint64_t fs_size = 0;
    if (fstatvfs(tf_srcfd, &sv) == 0) fs_size = (uint64_t)sv.f_blocks * sv.f_frsize;
    if (size_opt("limit", tf_opt.limit_s, fs_size, &tf_opt.limit) ||
        size_opt("chunk", tf_opt.chunk_s, 1u << 20, &tf_opt.chunk))
        return -1;
    if (tf_opt.chunk == 0) {
        fprintf(stderr, "track_fs: -o chunk=0: must be at least one byte\n");
        return -1;
    }
    if (size_opt("slack", tf_opt.slack_s, tf_opt.chunk, &tf_opt.slack) ||
        size_opt("return_above", tf_opt.return_above_s, 4 * tf_opt.chunk, &tf_opt.return_above))
        return -1;
    if (tf_opt.return_above < tf_opt.slack) {
        fprintf(stderr, "track_fs: -o return_above (%" PRIu64 ") is below -o slack (%" PRIu64 ")\n",
                tf_opt.return_above, tf_opt.slack);
        return -1;
    }
    if (tf_opt.reserve_timeout < 0) {
        fprintf(stderr, "track_fs: -o reserve_timeout=%d: must be 0 or more\n",
                tf_opt.reserve_timeout);
        return -1;
    }
    if (tf_opt.cache_dir) {
        while (*tf_opt.cache_dir == '/')
            tf_opt.cache_dir++;
        if (!*tf_opt.cache_dir || strstr(tf_opt.cache_dir, "..")) {
            fprintf(stderr, "track_fs: -o cache_dir must name a directory inside SOURCE_DIR\n");
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts copts = {0};
    tf_opt.reserve_timeout = 100;
    if (fuse_opt_parse(&args, &tf_opt, tf_fuse_opts, opt_proc) != 0) return 1;
    if (tf_opt.show_help) {
        fputs(usage, stdout);
        fuse_cmdline_help();
        fuse_lib_help(&args);
        return 0;
    }
    if (fuse_parse_cmdline(&args, &copts) != 0) return 1;
    if (copts.show_version) {
        printf("track_fs 0.1.0, FUSE library %s\n", fuse_pkgversion());
        return 0;
    }
    if (!tf_opt.source || !copts.mountpoint) {
        fprintf(stderr, "usage: track_fs SOURCE_DIR MOUNTPOINT [-o options] (see --help)\n");
        return 1;
    }
    tf_srcfd = open(tf_opt.source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tf_srcfd < 0) {
        fprintf(stderr, "track_fs: SOURCE_DIR %s: %s\n", tf_opt.source, strerror(errno));
        return 1;
    }
    if (check_options() != 0) return 1;
    tf_opt.foreground = copts.foreground;

    uint64_t existing = 0;
    if (tf_scan_source(&existing) != 0)
        fprintf(stderr, "track_fs: reading %s: %s (counted what could be read)\n", tf_opt.source,
                strerror(errno));

    struct fuse *f = fuse_new(&args, &tf_ops, sizeof tf_ops, NULL);
    if (!f) return 1;
    int ret = 1;
    /* The membroker registration must belong to the process that serves:
     * in the background, connect after fork()ing (and before, say on stderr
     * what it will find); in the foreground, before the mount appears. */
    if (copts.foreground)
        tf_quota_start(existing);
    else
        tf_quota_probe();
    if (fuse_mount(f, copts.mountpoint) != 0) goto out_quota;
    if (!copts.foreground) {
        if (fuse_daemonize(0) != 0) goto out_unmount;
        tf_log_daemonised();
        tf_quota_start(existing);
    }
    struct fuse_session *se = fuse_get_session(f);
    if (fuse_set_signal_handlers(se) != 0) goto out_unmount;
    /* The loop returns 0 after an unmount, the signal's number after
     * SIGTERM/SIGINT/SIGHUP (a clean end too), or a negative errno. */
    ret = (copts.singlethread ? fuse_loop(f) : fuse_loop_mt(f, copts.clone_fd)) < 0 ? 1 : 0;
    fuse_remove_signal_handlers(se);
out_unmount:
    fuse_unmount(f);
out_quota:
    tf_quota_stop();
    fuse_destroy(f);
    free(copts.mountpoint);
    fuse_opt_free_args(&args);
    return ret;
}

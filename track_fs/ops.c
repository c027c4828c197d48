/* The FUSE operations: a passthrough onto SOURCE_DIR (every path is resolved
 * relative to tf_srcfd with the *at() calls), with the accounting of
 * internal.h around every operation that can add or free blocks:
 *
 *   write, fallocate  charge the pages of the range that are holes now
 *                     (SEEK_DATA/SEEK_HOLE, so sparse files are right),
 *                     then settle with the st_blocks change;
 *   truncate          extending an open file covers its holes up to the new
 *                     size (tf_node.reserved) until it is closed, so that
 *                     pages a shared mapping dirties are already paid for;
 *                     shrinking credits what was freed;
 *   unlink, rename    credit the blocks when the last link goes and no
 *                     track_fs handle has the file open; else at the last
 *                     release;
 *   symlink           charges a page and settles.
 *
 * Every change of a file's blocks or link count made here runs under the
 * file's tf_node lock; reads and metadata operations take no lock.
 */
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <fuse.h>
#include <limits.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "internal.h"

static uint64_t sys_page;

static const char *rel(const char *path)
{
    while (*path == '/')
        path++;
    return *path ? path : ".";
}

static uint64_t blocks_of(const struct stat *st)
{
    return (uint64_t)st->st_blocks * 512;
}

static uint64_t round_down(uint64_t x)
{
    return x / sys_page * sys_page;
}
static uint64_t round_up(uint64_t x)
{
    return (x + sys_page - 1) / sys_page * sys_page;
}

/* Bytes of whole pages in [off, off + len) that hold no data now: what a
 * write or fallocate of that range may add. Without SEEK_DATA support the
 * file counts as data up to its size (then the settle step corrects). */
static uint64_t holes(int fd, uint64_t off, uint64_t len)
{
    if (len == 0) return 0;
    uint64_t a = round_down(off), b = round_up(off + len), data = 0, pos = a;
    while (pos < b) {
        off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
        if (d < 0 || (uint64_t)d >= b) break; /* ENXIO: no data from pos on */
        off_t h = lseek(fd, d, SEEK_HOLE);
        if (h < 0) h = (off_t)b;
        uint64_t s = round_down((uint64_t)d), e = round_up((uint64_t)h);
        if (s < pos) s = pos;
        if (e > b) e = b;
        if (e > s) data += e - s;
        pos = e > pos ? e : pos + sys_page;
    }
    return (b - a) - data;
}

/* ---- accounting around a change of a file's blocks (node locked) ---- */

/* The reservation that covers the holes of an open file below its cover size. */
static uint64_t cover_target(tf_node *n, int fd)
{
    return n->cover ? holes(fd, 0, n->cover) : 0;
}

/* After truncate/fallocate: st0 before, fd after; `charged` what was charged
 * for the operation. Recomputes the reservation and settles. */
static void settle_full(tf_node *n, int fd, const struct stat *st0, uint64_t charged)
{
    struct stat st1;
    if (fstat(fd, &st1) != 0) st1 = *st0;
    if (n->cover > (uint64_t)st1.st_size) n->cover = (uint64_t)st1.st_size;
    uint64_t r1 = cover_target(n, fd);
    int64_t delta = (int64_t)(blocks_of(&st1) - blocks_of(st0)) + (int64_t)(r1 - n->reserved) -
                    (int64_t)charged;
    n->reserved = r1;
    tf_quota_adjust(delta);
}

/* Truncates an open fd with accounting. `opened`: a track_fs handle has the
 * file open (an extension then covers its holes). */
static int do_truncate(tf_node *n, int fd, off_t size)
{
    pthread_mutex_lock(&n->lock);
    struct stat st0;
    if (fstat(fd, &st0) != 0) {
        int e = errno;
        pthread_mutex_unlock(&n->lock);
        return -e;
    }
    uint64_t need = 0;
    if (size > st0.st_size && n->opens > 0 && (uint64_t)size > n->cover) {
        /* Cover the new holes now: pages a shared mapping dirties later are paid for. */
        uint64_t target = holes(fd, 0, (uint64_t)size);
        need = target > n->reserved ? target - n->reserved : 0;
        if (tf_quota_charge(need) != 0) {
            pthread_mutex_unlock(&n->lock);
            return -ENOSPC;
        }
        n->cover = (uint64_t)size;
        n->reserved += need;
        need = 0; /* now part of the reservation, which settle_full recomputes */
    }
    int rc = ftruncate(fd, size) == 0 ? 0 : -errno;
    settle_full(n, fd, &st0, need);
    pthread_mutex_unlock(&n->lock);
    tf_quota_maybe_return();
    return rc;
}

/* ---- open files ---- */

static void node_release(tf_node *n, int fd);

/* The node of the file open on `fd` (and its stat in *st); on failure
 * `fd` is closed and a negative errno returned. */
static int node_of(int fd, tf_node **out, struct stat *st)
{
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *out = tf_node_get(st->st_ino);
    if (!*out) {
        close(fd);
        return -ENOMEM;
    }
    return 0;
}

/* Opens `path` (O_TRUNC handled with accounting) and registers the handle on
 * its node. A file unlinked between openat and the node lock is retried, so
 * that its blocks are credited exactly once (by that unlink). */
static int open_file(const char *path, int flags, mode_t mode, struct fuse_file_info *fi)
{
    int oflags = (flags & ~(O_TRUNC | O_APPEND)) | O_CLOEXEC; /* the kernel gives append offsets */
    for (int tries = 0; tries < 100; tries++) {
        int fd = openat(tf_srcfd, rel(path), oflags, mode);
        if (fd < 0) return -errno;
        tf_node *n;
        struct stat st;
        int rc = node_of(fd, &n, &st);
        if (rc < 0) return rc;
        pthread_mutex_lock(&n->lock);
        if (fstat(fd, &st) == 0 && st.st_nlink == 0 && S_ISREG(st.st_mode)) {
            pthread_mutex_unlock(&n->lock);
            close(fd);
            tf_node_put(n);
            continue; /* unlinked meanwhile */
        }
        n->opens++;
        pthread_mutex_unlock(&n->lock);
        tf_file *f = malloc(sizeof *f);
        if (!f) {
            node_release(n, fd);
            return -ENOMEM;
        }
        f->fd = fd;
        f->node = n;
        if ((flags & O_TRUNC) && S_ISREG(st.st_mode) && (flags & O_ACCMODE) != O_RDONLY) {
            rc = do_truncate(n, fd, 0);
            if (rc != 0) {
                node_release(n, fd);
                free(f);
                return rc;
            }
        }
        fi->fh = (uint64_t)(uintptr_t)f;
        return 0;
    }
    return -EAGAIN;
}

/* Last handle gone: the reservation goes; an unlinked file's blocks go. */
static void node_release(tf_node *n, int fd)
{
    pthread_mutex_lock(&n->lock);
    if (--n->opens == 0) {
        struct stat st;
        int64_t credit = (int64_t)n->reserved;
        n->reserved = 0;
        n->cover = 0;
        if (fstat(fd, &st) == 0 && st.st_nlink == 0) credit += (int64_t)blocks_of(&st);
        tf_quota_adjust(-credit);
    }
    pthread_mutex_unlock(&n->lock);
    close(fd);
    tf_node_put(n);
    tf_quota_maybe_return();
}

static tf_file *file_of(struct fuse_file_info *fi)
{
    return (tf_file *)(uintptr_t)fi->fh;
}

static int tf_open(const char *path, struct fuse_file_info *fi)
{
    return open_file(path, fi->flags, 0, fi);
}

static int tf_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int rc = open_file(path, fi->flags | O_CREAT, mode, fi);
    if (rc == 0 && geteuid() == 0) {
        struct fuse_context *c = fuse_get_context();
        if (c->uid != 0 || c->gid != 0) (void)!fchown(file_of(fi)->fd, c->uid, c->gid);
    }
    return rc;
}

static int tf_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    tf_file *f = file_of(fi);
    node_release(f->node, f->fd);
    free(f);
    return 0;
}

static int tf_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)path;
    ssize_t r = pread(file_of(fi)->fd, buf, size, off);
    return r < 0 ? -errno : (int)r;
}

static int tf_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)path;
    tf_file *f = file_of(fi);
    tf_node *n = f->node;
    pthread_mutex_lock(&n->lock);
    struct stat st0;
    if (fstat(f->fd, &st0) != 0) {
        int e = errno;
        pthread_mutex_unlock(&n->lock);
        return -e;
    }
    uint64_t est = holes(f->fd, (uint64_t)off, size), take = 0;
    if (n->reserved && (uint64_t)off < n->cover) {
        /* The part below the cover size is paid for by the reservation. */
        uint64_t in = holes(f->fd, (uint64_t)off,
                            (uint64_t)off + size <= n->cover ? size : n->cover - (uint64_t)off);
        take = in < n->reserved ? in : n->reserved;
    }
    if (tf_quota_charge(est - take) != 0) {
        pthread_mutex_unlock(&n->lock);
        return -ENOSPC; /* nothing written */
    }
    n->reserved -= take;
    size_t done = 0;
    int err = 0;
    while (done < size) {
        ssize_t w = pwrite(f->fd, buf + done, size - done, off + (off_t)done);
        if (w < 0) {
            if (errno == EINTR) continue;
            err = errno;
            break;
        }
        done += (size_t)w;
    }
    struct stat st1;
    if (fstat(f->fd, &st1) != 0) st1 = st0;
    /* charged est (take of it from the reservation): settle with what the file grew */
    tf_quota_adjust((int64_t)(blocks_of(&st1) - blocks_of(&st0)) - (int64_t)est);
    pthread_mutex_unlock(&n->lock);
    if (done == 0 && err) return -err;
    return (int)done;
}

static int tf_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    if (fi) return do_truncate(file_of(fi)->node, file_of(fi)->fd, size);
    int fd = openat(tf_srcfd, rel(path), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -errno;
    tf_node *n;
    struct stat st;
    int rc = node_of(fd, &n, &st);
    if (rc < 0) return rc;
    rc = do_truncate(n, fd, size);
    close(fd);
    tf_node_put(n);
    return rc;
}

static int tf_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
    (void)path;
    tf_file *f = file_of(fi);
    tf_node *n = f->node;
    pthread_mutex_lock(&n->lock);
    struct stat st0;
    if (fstat(f->fd, &st0) != 0) {
        int e = errno;
        pthread_mutex_unlock(&n->lock);
        return -e;
    }
    uint64_t est = (mode & FALLOC_FL_PUNCH_HOLE) ? 0 : holes(f->fd, (uint64_t)off, (uint64_t)len);
    if (tf_quota_charge(est) != 0) {
        pthread_mutex_unlock(&n->lock);
        return -ENOSPC;
    }
    int rc = fallocate(f->fd, mode, off, len) == 0 ? 0 : -errno;
    settle_full(n, f->fd, &st0, est);
    pthread_mutex_unlock(&n->lock);
    tf_quota_maybe_return();
    return rc;
}

static int tf_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    /* Called on each close of a descriptor: releases POSIX locks on the source. */
    int fd = dup(file_of(fi)->fd);
    if (fd < 0) return -errno;
    return close(fd) == 0 ? 0 : -errno;
}

static int tf_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    int fd = file_of(fi)->fd;
    return (datasync ? fdatasync(fd) : fsync(fd)) == 0 ? 0 : -errno;
}

static off_t tf_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
    (void)path;
    off_t r = lseek(file_of(fi)->fd, off, whence);
    return r < 0 ? -errno : r;
}

static int tf_flock(const char *path, struct fuse_file_info *fi, int op)
{
    (void)path;
    return flock(file_of(fi)->fd, op) == 0 ? 0 : -errno;
}

/* ---- names: unlink, rename, link, symlink ---- */

/* Removes the name `r` with the file's lock held; credits the blocks when
 * the last link goes and no handle has it open. `nowait`: skip a file whose
 * lock is taken (-EBUSY). Returns bytes credited or -errno. */
static int64_t unlink_name(const char *r, bool nowait)
{
    for (int tries = 0; tries < 100; tries++) {
        struct stat st;
        if (fstatat(tf_srcfd, r, &st, AT_SYMLINK_NOFOLLOW) != 0) return -errno;
        if (S_ISDIR(st.st_mode)) return -EISDIR;
        tf_node *n = tf_node_get(st.st_ino);
        if (!n) return -ENOMEM;
        if (nowait) {
            if (pthread_mutex_trylock(&n->lock) != 0) {
                tf_node_put(n);
                return -EBUSY;
            }
        } else {
            pthread_mutex_lock(&n->lock);
        }
        struct stat st2;
        if (fstatat(tf_srcfd, r, &st2, AT_SYMLINK_NOFOLLOW) != 0 || st2.st_ino != st.st_ino) {
            pthread_mutex_unlock(&n->lock);
            tf_node_put(n);
            continue; /* replaced meanwhile */
        }
        int64_t credit = 0;
        if (unlinkat(tf_srcfd, r, 0) != 0) {
            credit = -errno;
        } else if (st2.st_nlink == 1 && n->opens == 0) {
            credit = (int64_t)blocks_of(&st2);
            tf_quota_adjust(-credit);
        }
        pthread_mutex_unlock(&n->lock);
        tf_node_put(n);
        return credit;
    }
    return -EAGAIN;
}

int64_t tf_unlink_nowait(const char *r)
{
    return unlink_name(r, true);
}

static int tf_unlink(const char *path)
{
    int64_t rc = unlink_name(rel(path), false);
    tf_quota_maybe_return();
    return rc < 0 ? (int)rc : 0;
}

static int tf_rename(const char *from, const char *to, unsigned int flags)
{
    struct stat sf, st;
    if (flags & RENAME_EXCHANGE || fstatat(tf_srcfd, rel(to), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        S_ISDIR(st.st_mode) ||
        (fstatat(tf_srcfd, rel(from), &sf, AT_SYMLINK_NOFOLLOW) == 0 && sf.st_ino == st.st_ino))
        return renameat2(tf_srcfd, rel(from), tf_srcfd, rel(to), flags) == 0 ? 0 : -errno;
    /* The target's name goes: account like an unlink of it. */
    tf_node *n = tf_node_get(st.st_ino);
    if (!n) return -ENOMEM;
    pthread_mutex_lock(&n->lock);
    struct stat st2;
    bool same =
        fstatat(tf_srcfd, rel(to), &st2, AT_SYMLINK_NOFOLLOW) == 0 && st2.st_ino == st.st_ino;
    int rc = renameat2(tf_srcfd, rel(from), tf_srcfd, rel(to), flags) == 0 ? 0 : -errno;
    if (rc == 0 && same && st2.st_nlink == 1 && n->opens == 0)
        tf_quota_adjust(-(int64_t)blocks_of(&st2));
    pthread_mutex_unlock(&n->lock);
    tf_node_put(n);
    tf_quota_maybe_return();
    return rc;
}

static int tf_link(const char *from, const char *to)
{
    struct stat st;
    if (fstatat(tf_srcfd, rel(from), &st, AT_SYMLINK_NOFOLLOW) != 0) return -errno;
    tf_node *n = tf_node_get(st.st_ino);
    if (!n) return -ENOMEM;
    pthread_mutex_lock(&n->lock); /* link counts change under the file's lock */
    int rc = linkat(tf_srcfd, rel(from), tf_srcfd, rel(to), 0) == 0 ? 0 : -errno;
    pthread_mutex_unlock(&n->lock);
    tf_node_put(n);
    return rc;
}

static void chown_to_caller(const char *r)
{
    if (geteuid() != 0) return;
    struct fuse_context *c = fuse_get_context();
    if (c->uid != 0 || c->gid != 0)
        (void)!fchownat(tf_srcfd, r, c->uid, c->gid, AT_SYMLINK_NOFOLLOW);
}

static int tf_symlink(const char *target, const char *path)
{
    /* A long target takes a page on tmpfs: charge one, settle with st_blocks. */
    if (tf_quota_charge(sys_page) != 0) return -ENOSPC;
    int rc = symlinkat(target, tf_srcfd, rel(path)) == 0 ? 0 : -errno;
    struct stat st;
    uint64_t used = 0;
    if (rc == 0 && fstatat(tf_srcfd, rel(path), &st, AT_SYMLINK_NOFOLLOW) == 0)
        used = blocks_of(&st);
    tf_quota_adjust((int64_t)used - (int64_t)sys_page);
    if (rc == 0) chown_to_caller(rel(path));
    return rc;
}

/* ---- the rest: plain passthrough ---- */

static int tf_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    int rc =
        fi ? fstat(file_of(fi)->fd, st) : fstatat(tf_srcfd, rel(path), st, AT_SYMLINK_NOFOLLOW);
    return rc == 0 ? 0 : -errno;
}

static int tf_readlink(const char *path, char *buf, size_t size)
{
    ssize_t r = readlinkat(tf_srcfd, rel(path), buf, size - 1);
    if (r < 0) return -errno;
    buf[r] = 0;
    return 0;
}

static int tf_mknod(const char *path, mode_t mode, dev_t rdev)
{
    int rc = mknodat(tf_srcfd, rel(path), mode, rdev) == 0 ? 0 : -errno;
    if (rc == 0) chown_to_caller(rel(path));
    return rc;
}

static int tf_mkdir(const char *path, mode_t mode)
{
    int rc = mkdirat(tf_srcfd, rel(path), mode) == 0 ? 0 : -errno;
    if (rc == 0) chown_to_caller(rel(path));
    return rc;
}

static int tf_rmdir(const char *path)
{
    return unlinkat(tf_srcfd, rel(path), AT_REMOVEDIR) == 0 ? 0 : -errno;
}

static int tf_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int rc = fi ? fchmod(file_of(fi)->fd, mode) : fchmodat(tf_srcfd, rel(path), mode, 0);
    return rc == 0 ? 0 : -errno;
}

static int tf_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    int rc = fi ? fchown(file_of(fi)->fd, uid, gid)
                : fchownat(tf_srcfd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW);
    return rc == 0 ? 0 : -errno;
}

static int tf_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    int rc = fi ? futimens(file_of(fi)->fd, tv)
                : utimensat(tf_srcfd, rel(path), tv, AT_SYMLINK_NOFOLLOW);
    return rc == 0 ? 0 : -errno;
}

static int tf_access(const char *path, int mask)
{
    return faccessat(tf_srcfd, rel(path), mask, 0) == 0 ? 0 : -errno;
}

/* statfs: the source's, with the space what membroker could still grant. */
static int tf_statfs(const char *path, struct statvfs *sv)
{
    if (fstatvfs(tf_srcfd, sv) != 0) return -errno;
    (void)path;
    uint64_t charged, avail;
    tf_quota_space(&charged, &avail);
    uint64_t src_avail = (uint64_t)sv->f_bavail * sv->f_frsize;
    if (sv->f_blocks && avail > src_avail) /* tmpfs with size=0 reports no blocks */
        avail = src_avail;
    sv->f_bsize = sv->f_frsize = sys_page;
    sv->f_bfree = sv->f_bavail = avail / sys_page;
    sv->f_blocks = (charged + avail) / sys_page;
    return 0;
}

/* xattrs need a path: SOURCE_DIR + path. */
static int full(char *buf, const char *path)
{
    int n = snprintf(buf, PATH_MAX, "%s/%s", tf_opt.source, rel(path));
    return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

static int tf_setxattr(const char *path, const char *name, const char *value, size_t size,
                       int flags)
{
    char p[PATH_MAX];
    int rc = full(p, path);
    return rc ? rc : lsetxattr(p, name, value, size, flags) == 0 ? 0 : -errno;
}

static int tf_getxattr(const char *path, const char *name, char *value, size_t size)
{
    char p[PATH_MAX];
    int rc = full(p, path);
    if (rc) return rc;
    ssize_t r = lgetxattr(p, name, value, size);
    return r < 0 ? -errno : (int)r;
}

static int tf_listxattr(const char *path, char *list, size_t size)
{
    char p[PATH_MAX];
    int rc = full(p, path);
    if (rc) return rc;
    ssize_t r = llistxattr(p, list, size);
    return r < 0 ? -errno : (int)r;
}

static int tf_removexattr(const char *path, const char *name)
{
    char p[PATH_MAX];
    int rc = full(p, path);
    return rc ? rc : lremovexattr(p, name) == 0 ? 0 : -errno;
}

/* ---- directories ---- */

typedef struct tf_dir {
    DIR *dp;
    pthread_mutex_t lock;
} tf_dir;

static int tf_opendir(const char *path, struct fuse_file_info *fi)
{
    int fd = openat(tf_srcfd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    tf_dir *d = malloc(sizeof *d);
    if (!d) {
        close(fd);
        return -ENOMEM;
    }
    d->dp = fdopendir(fd);
    if (!d->dp) {
        int e = errno;
        close(fd);
        free(d);
        return -e;
    }
    pthread_mutex_init(&d->lock, NULL);
    fi->fh = (uint64_t)(uintptr_t)d;
    return 0;
}

static int tf_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)path, (void)flags;
    tf_dir *d = (tf_dir *)(uintptr_t)fi->fh;
    pthread_mutex_lock(&d->lock);
    if (off == 0)
        rewinddir(d->dp);
    else
        seekdir(d->dp, off);
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d->dp);
        if (!e) {
            rc = errno ? -errno : 0;
            break;
        }
        struct stat st = {.st_ino = e->d_ino, .st_mode = (mode_t)DTTOIF(e->d_type)};
        if (filler(buf, e->d_name, &st, telldir(d->dp), 0)) break;
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int tf_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    tf_dir *d = (tf_dir *)(uintptr_t)fi->fh;
    closedir(d->dp);
    pthread_mutex_destroy(&d->lock);
    free(d);
    return 0;
}

static int tf_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    int fd = dirfd(((tf_dir *)(uintptr_t)fi->fh)->dp);
    return (datasync ? fdatasync(fd) : fsync(fd)) == 0 ? 0 : -errno;
}

static void *tf_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    cfg->use_ino = 1;
    cfg->nullpath_ok = 1; /* operations on open files use the handle */
    /* hard_remove stays off: an unlinked open file becomes .fuse_hiddenXXX
     * until its last close (then libfuse unlinks it and its blocks are
     * credited); with it on, fstat() on such a file fails with ESTALE. */
    cfg->direct_io = 0; /* the page cache stays: shared mmap works */
    /* Errors must reach the writer: no write-back caching in the kernel. */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    return NULL;
}

const struct fuse_operations tf_ops = {
    .init = tf_init,
    .getattr = tf_getattr,
    .readlink = tf_readlink,
    .mknod = tf_mknod,
    .mkdir = tf_mkdir,
    .unlink = tf_unlink,
    .rmdir = tf_rmdir,
    .symlink = tf_symlink,
    .rename = tf_rename,
    .link = tf_link,
    .chmod = tf_chmod,
    .chown = tf_chown,
    .truncate = tf_truncate,
    .open = tf_open,
    .read = tf_read,
    .write = tf_write,
    .statfs = tf_statfs,
    .flush = tf_flush,
    .release = tf_release,
    .fsync = tf_fsync,
    .setxattr = tf_setxattr,
    .getxattr = tf_getxattr,
    .listxattr = tf_listxattr,
    .removexattr = tf_removexattr,
    .opendir = tf_opendir,
    .readdir = tf_readdir,
    .releasedir = tf_releasedir,
    .fsyncdir = tf_fsyncdir,
    .access = tf_access,
    .create = tf_create,
    .utimens = tf_utimens,
    .fallocate = tf_fallocate,
    .flock = tf_flock,
    .lseek = tf_lseek,
};

/* ---- what SOURCE_DIR holds at mount ---- */

static uint64_t scan_total;
static void *scan_seen; /* tsearch tree of inodes with several links */

static int ino_cmp(const void *a, const void *b)
{
    ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;
    return x < y ? -1 : x > y;
}

static int scan_one(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
    (void)p, (void)ftw;
    if (type == FTW_D || type == FTW_DP || type == FTW_DNR) return 0;
    if (st->st_nlink > 1) {
        ino_t *k = malloc(sizeof *k);
        if (!k) return -1;
        *k = st->st_ino;
        ino_t **found = tsearch(k, &scan_seen, ino_cmp);
        if (!found) return -1;
        if (*found != k) { /* counted already */
            free(k);
            return 0;
        }
    }
    scan_total += blocks_of(st);
    return 0;
}

int tf_scan_source(uint64_t *bytes)
{
    sys_page = (uint64_t)sysconf(_SC_PAGESIZE);
    scan_total = 0;
    int rc = nftw(tf_opt.source, scan_one, 64, FTW_PHYS | FTW_MOUNT);
    tdestroy(scan_seen, free);
    scan_seen = NULL;
    *bytes = scan_total;
    return rc == 0 ? 0 : -1;
}

#!/usr/bin/env python3
"""Every ordinary operation passes through to SOURCE_DIR (issue 8): create,
open, read, write, truncate, fallocate (and punching a hole), rename (over
a file, exchange, noreplace), unlink (also of an open file), mkdir, rmdir,
symlink (short and long), link, readdir, stat, chmod, chown, utimens,
fsync, statfs, xattrs, lseek SEEK_DATA/SEEK_HOLE, and the quota each one
charges or credits (charged = st_blocks under SOURCE_DIR after each)."""
import ctypes
import errno
import os
from tfenv import Env, MiB, check, finish, write_file, tree_blocks, wait_for

env = Env(pool_mib=16)
env.mount("chunk=256K", "slack=256K", "return_above=1M")
libc = ctypes.CDLL(None, use_errno=True)


def balanced(what):
    charged = env.df()[0]
    real = tree_blocks(env.src)
    check(charged == real, "%s: charged %d = st_blocks %d" % (what, charged, real))


# create / write / read / stat
with open(env.m("f"), "wb") as f:
    f.write(b"x" * 10000)
check(open(env.s("f"), "rb").read() == b"x" * 10000, "create + write reach SOURCE_DIR")
check(open(env.m("f"), "rb").read() == b"x" * 10000, "read")
check(os.stat(env.m("f")).st_size == 10000 and os.stat(env.m("f")).st_ino == os.stat(env.s("f")).st_ino,
      "stat: size and inode number of the source")
balanced("after create/write")
fd = os.open(env.m("f"), os.O_WRONLY | os.O_APPEND)
os.write(fd, b"y" * 100)
os.fsync(fd)
os.fdatasync(fd)
os.close(fd)
check(open(env.s("f"), "rb").read()[-101:] == b"x" + b"y" * 100, "O_APPEND writes at the end; fsync, fdatasync")
# O_TRUNC credits
fd = os.open(env.m("f"), os.O_WRONLY | os.O_TRUNC)
os.close(fd)
check(os.path.getsize(env.s("f")) == 0, "open with O_TRUNC")
balanced("after O_TRUNC")

# truncate / fallocate / punch hole / lseek
os.truncate(env.m("f"), 3 * MiB)
check(os.path.getsize(env.s("f")) == 3 * MiB and os.stat(env.s("f")).st_blocks == 0, "truncate by path: sparse")
balanced("after truncate by path")
fd = os.open(env.m("f"), os.O_RDWR)
os.posix_fallocate(fd, MiB, MiB)
check(os.stat(env.s("f")).st_blocks * 512 == MiB, "fallocate 1 MiB in the middle")
balanced("after fallocate")
os.pwrite(fd, b"d" * 8192, 5 * MiB // 2)  # (tmpfs: fallocated pages read as holes for SEEK_DATA)
balanced("after a write past the fallocated range")
check(os.lseek(fd, 2 * MiB, os.SEEK_DATA) == 5 * MiB // 2 and
      os.lseek(fd, 5 * MiB // 2, os.SEEK_HOLE) == 5 * MiB // 2 + 8192, "lseek SEEK_DATA / SEEK_HOLE")
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
rc = libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, ctypes.c_long(MiB), ctypes.c_long(MiB // 2))
check(rc == 0 and os.stat(env.s("f")).st_blocks * 512 == MiB // 2 + 8192, "punching a hole frees half")
balanced("after punching a hole")
os.close(fd)

# chmod / chown / utimens
os.chmod(env.m("f"), 0o600)
check(os.stat(env.s("f")).st_mode & 0o777 == 0o600, "chmod")
os.chown(env.m("f"), 1234, 5678)
st = os.stat(env.s("f"))
check((st.st_uid, st.st_gid) == (1234, 5678), "chown")
os.utime(env.m("f"), ns=(1_000_000_000, 2_000_000_000))
st = os.stat(env.s("f"))
check((st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 2_000_000_000), "utimens")

# mkdir / readdir / rmdir
os.mkdir(env.m("d"), 0o750)
check(os.path.isdir(env.s("d")) and os.stat(env.s("d")).st_mode & 0o777 == 0o750, "mkdir")
for i in range(300):
    open(env.m("d", "n%03d" % i), "w").close()
names = os.listdir(env.m("d"))
check(sorted(names) == ["n%03d" % i for i in range(300)], "readdir of 300 entries")
for n in names:
    os.unlink(env.m("d", n))
os.rmdir(env.m("d"))
check(not os.path.exists(env.s("d")), "unlink, rmdir")

# symlink / readlink / link
os.symlink("f", env.m("short"))
long_target = "t" * 3000
os.symlink(long_target, env.m("long"))
check(os.readlink(env.m("short")) == "f" and os.readlink(env.m("long")) == long_target, "symlink, readlink")
balanced("after symlinks (a long one takes a page)")
os.link(env.m("f"), env.m("hard"))
check(os.stat(env.s("f")).st_nlink == 2, "link")
os.unlink(env.m("f"))
balanced("after unlinking one of two links (nothing freed)")
os.unlink(env.m("long"))
balanced("after unlinking the long symlink")

# rename: plain, over an existing file (its blocks are freed), exchange, noreplace
write_file(env.m("a"), MiB, byte=0x61)
write_file(env.m("b"), 2 * MiB, byte=0x62)
os.rename(env.m("a"), env.m("a2"))
check(os.path.exists(env.s("a2")) and not os.path.exists(env.s("a")), "rename")
os.rename(env.m("a2"), env.m("b"))
check(os.path.getsize(env.s("b")) == MiB, "rename over a file")
balanced("after rename over a 2 MiB file")
write_file(env.m("c"), 4096, byte=0x63)
AT_FDCWD, RENAME_NOREPLACE, RENAME_EXCHANGE = -100, 1, 2
rc = libc.renameat2(AT_FDCWD, env.m("b").encode(), AT_FDCWD, env.m("c").encode(), RENAME_EXCHANGE)
check(rc == 0 and os.path.getsize(env.s("c")) == MiB and os.path.getsize(env.s("b")) == 4096, "rename exchange")
rc = libc.renameat2(AT_FDCWD, env.m("b").encode(), AT_FDCWD, env.m("c").encode(), RENAME_NOREPLACE)
check(rc == -1 and ctypes.get_errno() == errno.EEXIST, "rename noreplace refuses an existing target")
balanced("after exchange")

# unlink of an open file: its blocks go when it is closed
fd = os.open(env.m("c"), os.O_RDWR)
os.unlink(env.m("c"))
check(not os.path.exists(env.m("c")) and not os.path.exists(env.s("c")), "an open file's name goes")
check(any(n.startswith(".fuse_hidden") for n in os.listdir(env.src)), "libfuse keeps it as .fuse_hidden* while open")
os.write(fd, b"z" * 8192)
balanced("while the unlinked file is open (its blocks stay charged)")
check(os.fstat(fd).st_nlink == 0 and os.pread(fd, 2, 0) == b"zz", "it is still usable")
os.close(fd)
wait_for(lambda: not any(n.startswith(".fuse_hidden") for n in os.listdir(env.src)), "the hidden file to go")
# The release reaches the daemon after close() returns, and its unlink of
# the hidden name credits the blocks just after the name goes: wait for the
# credit too (it must come), then check.
wait_for(lambda: env.df()[0] == tree_blocks(env.src), "the unlinked file's blocks to be credited")
balanced("after closing the unlinked file")

# xattrs (tmpfs supports user.* since Linux 6.6, trusted.* always for root)
try:
    os.setxattr(env.m("b"), "trusted.tf", b"v1")
    check(os.getxattr(env.s("b"), "trusted.tf") == b"v1" and "trusted.tf" in os.listxattr(env.m("b")),
          "setxattr, getxattr, listxattr")
    os.removexattr(env.m("b"), "trusted.tf")
    check("trusted.tf" not in os.listxattr(env.s("b")), "removexattr")
except OSError as e:
    check(False, "xattrs: %s" % e)

# statfs: the pool's view
sv = os.statvfs(env.mnt)
charged = (sv.f_blocks - sv.f_bfree) * sv.f_frsize
check(charged == tree_blocks(env.src) and sv.f_blocks * sv.f_frsize == 16 * MiB, "statfs: charged and the pool")
# mknod (a fifo) and access
os.mkfifo(env.m("fifo"))
check(os.path.exists(env.s("fifo")) and os.access(env.m("b"), os.R_OK | os.W_OK), "mknod (fifo), access")
check(env.unmount() == 0, "clean unmount")
finish()

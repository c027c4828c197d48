#!/usr/bin/env python3
"""mmap of files through track_fs (issue 8):
  - a file's size set with ftruncate on an open file covers its holes at
    once (statfs shows them charged), so the pages a shared writable mapping
    dirties are paid for before they are written back;
  - writes through the mapping round-trip: read back through the mount, in
    SOURCE_DIR, and through a second mapping in another process;
  - after close the reservation becomes the file's real blocks;
  - an ftruncate whose holes the pool cannot cover gets ENOSPC and leaves
    the size alone; a mapping of a file written with write() reads right.
"""
import errno
import mmap
import os
import subprocess
import sys
from tfenv import Env, MiB, check, finish, pattern

N = 8
env = Env(pool_mib=N)
env.mount("chunk=256K", "slack=256K", "return_above=1M")
path = env.m("mapped")
SIZE = 4 * MiB
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, SIZE)
charged, _ = env.df()
check(charged == SIZE, "ftruncate to 4 MiB on an open file covers its holes at once (charged %d)" % charged)
check(os.fstat(fd).st_blocks == 0, "the file itself is still sparse")
mm = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
want = pattern(path, 0, SIZE)
for off in range(0, SIZE, 65536):
    mm[off:off + 65536] = want[off:off + 65536]
mm.flush()
# Another process maps the file and reads it.
code = ("import mmap,os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); "
        "m=mmap.mmap(fd,%d,mmap.MAP_SHARED,mmap.PROT_READ); sys.stdout.buffer.write(m[:])" % SIZE)
other = subprocess.run([sys.executable, "-c", code, path], capture_output=True).stdout
check(other == want, "a second process's mapping sees the writes")
mm.close()
os.close(fd)
with open(path, "rb") as f:
    check(f.read() == want, "mmap writes round-trip: read() through the mount")
with open(env.s("mapped"), "rb") as f:
    check(f.read() == want, "mmap writes round-trip: the bytes are in SOURCE_DIR")
charged, _ = env.df()
blocks = os.stat(env.s("mapped")).st_blocks * 512
check(blocks == SIZE and charged == SIZE, "after close: the file has 4 MiB of blocks, 4 MiB charged (%d, %d)" % (blocks, charged))

# A partial mapping write: only the dirtied pages become blocks; the rest of the cover goes back at close.
path2 = env.m("partial")
fd = os.open(path2, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, 2 * MiB)
check(env.df()[0] == SIZE + 2 * MiB, "second file: 2 MiB of holes covered")
mm = mmap.mmap(fd, 2 * MiB, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
mm[0:4096] = b"p" * 4096
mm[MiB:MiB + 4096] = b"q" * 4096
mm.flush()
mm.close()
os.close(fd)
check(env.df()[0] == SIZE + 2 * 4096, "after close only the 2 dirtied pages stay charged (%d)" % env.df()[0])
with open(env.s("partial"), "rb") as f:
    d = f.read()
check(d[:4096] == b"p" * 4096 and d[MiB:MiB + 4096] == b"q" * 4096 and d[4096:MiB] == bytes(MiB - 4096),
      "the partial mapping's pages round-trip, the rest reads as zeros")

# The pool cannot cover a 16 MiB size: ENOSPC, size unchanged.
fd = os.open(env.m("big"), os.O_RDWR | os.O_CREAT, 0o644)
try:
    os.ftruncate(fd, 16 * MiB)
    check(False, "ftruncate beyond the pool fails")
except OSError as e:
    check(e.errno == errno.ENOSPC, "ftruncate whose holes the pool cannot cover: ENOSPC (%s)" % e)
check(os.fstat(fd).st_size == 0, "the size stayed 0")
os.close(fd)

# A file written with write() maps and reads right.
with open(env.m("w"), "wb") as f:
    f.write(pattern(env.m("w"), 0, MiB))
with open(env.m("w"), "r+b") as f:
    mm = mmap.mmap(f.fileno(), MiB)
    check(mm[:] == pattern(env.m("w"), 0, MiB), "mapping a written file reads its bytes")
    mm[0:5] = b"hello"
    mm.flush()
    mm.close()
with open(env.s("w"), "rb") as f:
    check(f.read(5) == b"hello", "an overwrite through the mapping reaches SOURCE_DIR")
check(env.unmount() == 0, "clean unmount")
finish()

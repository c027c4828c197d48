#!/usr/bin/env python3
"""track_fs with a pool of N MiB (issue 8, "What must show"):
  - what SOURCE_DIR holds at mount is counted;
  - writing files up to N MiB succeeds; the next write gets ENOSPC and
    writes nothing; the file system and the daemon keep working
    (reads, overwrites of written pages, metadata, mbctl);
  - statfs shows what is charged and what could still be had;
  - a sparse file counts only its written pages;
  - deleting and truncating return quota (seen with mbctl status), with
    hysteresis; afterwards writes succeed again;
  - fusermount3 -u unmounts cleanly and the quota goes back.
"""
import errno
import os
from tfenv import Env, MiB, check, finish, write_file, pattern, tree_blocks

N = 16
env = Env(pool_mib=N)

# 2 MiB already in SOURCE_DIR before the mount.
with open(env.s("old"), "wb") as f:
    f.write(b"o" * (2 * MiB))
fs = env.mount("chunk=256K", "slack=256K", "return_above=1M")
check("membroker: pool 16.00 MiB" in env.log(), "track_fs says what pool it found: " + env.log().strip())
check(env.held() >= 2 * MiB, "the 2 MiB already in SOURCE_DIR are covered at mount (held %d)" % env.held())
charged, avail = env.df()
check(charged == 2 * MiB, "statfs: 2 MiB charged at mount (%d)" % charged)
check(charged + avail == N * MiB, "statfs: charged + available = the pool (%d + %d)" % (charged, avail))

# Fill the pool: 2 (old) + 8 + 6 = 16 MiB.
done, err = write_file(env.m("a"), 8 * MiB)
check(done == 8 * MiB and err == 0, "8 MiB written to a (%d, errno %d)" % (done, err))
done, err = write_file(env.m("b"), 6 * MiB)
check(done == 6 * MiB and err == 0, "6 MiB written to b: the pool is full (%d, errno %d)" % (done, err))
check(env.held() == N * MiB, "track_fs holds the whole pool (%d)" % env.held())
check(env.free() == 0, "the pool has nothing free")
charged, avail = env.df()
check(charged == N * MiB and avail == 0, "statfs: all charged, nothing available (%d, %d)" % (charged, avail))

# The next write: ENOSPC, nothing written.
done, err = write_file(env.m("c"), MiB)
check(done == 0 and err == errno.ENOSPC, "the next write gets ENOSPC (%d, errno %d)" % (done, err))
check(os.path.getsize(env.s("c")) == 0 and os.lstat(env.s("c")).st_blocks == 0,
      "the failed write left nothing in SOURCE_DIR")
done, err = write_file(env.m("b"), 4096, flags=os.O_WRONLY | os.O_APPEND)
check(done == 0 and err == errno.ENOSPC, "appending to a full b gets ENOSPC (%d, errno %d)" % (done, err))
try:
    fd = os.open(env.m("c"), os.O_WRONLY)
    os.posix_fallocate(fd, 0, MiB)
    check(False, "fallocate past the pool fails")
except OSError as e:
    check(e.errno == errno.ENOSPC, "fallocate past the pool gets ENOSPC (%s)" % e)
finally:
    os.close(fd)
check(os.lstat(env.s("c")).st_blocks == 0, "the failed fallocate allocated nothing")

# Still working: reads, overwrite of written pages, metadata, the daemon.
with open(env.m("a"), "rb") as f:
    data = f.read()
check(data == pattern(env.m("a"), 0, 8 * MiB), "a reads back intact")
done, err = write_file(env.m("a"), 4 * MiB, flags=os.O_WRONLY)
check(done == 4 * MiB and err == 0, "overwriting written pages needs no quota: succeeds on a full pool")
os.mkdir(env.m("d"))
os.rename(env.m("c"), env.m("d", "c"))
check(sorted(os.listdir(env.m())) == ["a", "b", "d", "old"], "mkdir, rename, readdir work on a full pool")
check(env.free() == 0 and env.daemon.poll() is None, "the daemon keeps serving (mbctl status)")

# A sparse file: 4 KiB written at 64 MiB counts one page, not 64 MiB.
os.remove(env.m("b"))  # 6 MiB back
fd = os.open(env.m("sparse"), os.O_WRONLY | os.O_CREAT, 0o644)
check(os.pwrite(fd, b"s" * 4096, 64 * MiB) == 4096, "a page written at 64 MiB into a sparse file")
os.close(fd)
st = os.stat(env.m("sparse"))
check(st.st_size == 64 * MiB + 4096 and st.st_blocks * 512 == 4096,
      "the sparse file: size %d, %d bytes of blocks" % (st.st_size, st.st_blocks * 512))
charged, avail = env.df()
check(charged == 10 * MiB + 4096, "statfs: 2 + 8 MiB + one page charged (%d)" % charged)
check(charged == tree_blocks(env.src), "charged = st_blocks of SOURCE_DIR (%d)" % tree_blocks(env.src))

# Deleting returns quota, with hysteresis: held falls to charged + a small surplus.
os.remove(env.m("a"))
os.remove(env.m("old"))
os.remove(env.m("sparse"))
charged, avail = env.df()
check(charged == 0, "statfs: nothing charged after deleting everything (%d)" % charged)
held = env.held()
check(held <= 1 * MiB, "deleting returned quota: track_fs holds %d (<= return_above 1M)" % held)
check(env.free() >= (N - 1) * MiB, "the pool has the quota back (free %d)" % env.free())

# Truncate returns quota too, and writes succeed again.
done, err = write_file(env.m("e"), 12 * MiB)
check(done == 12 * MiB and err == 0, "12 MiB written after the deletes")
os.truncate(env.m("e"), 1 * MiB)
charged, _ = env.df()
check(charged == 1 * MiB, "truncate to 1 MiB: 1 MiB charged (%d)" % charged)
check(env.held() <= 2 * MiB, "truncate returned quota (held %d)" % env.held())

# Clean unmount: exit 0, quota back, no client left.
rc = env.unmount()
check(rc == 0, "fusermount3 -u: track_fs exits 0 (%r)" % rc)
check(env.status()["clients"] == [] and env.free() == N * MiB, "after unmount: no client, the pool is free")
finish()

#!/usr/bin/env python3
"""A gmalloc process and track_fs share one membroker pool (issue 8):
  - while a process under libgmalloc.so (GMALLOC_MEMBROKER=1) holds the
    memory, a file write gets ENOSPC;
  - when it frees, the write succeeds;
  - while track_fs holds the memory in files, the process's malloc fails
    (returns NULL); deleting the files lets it allocate again.
"""
import errno
import os
import subprocess
from tfenv import Env, MiB, LIBGMALLOC, TF_HOG, check, finish, write_file, wait_for

N = 32
for name, val in (("TF_HOG", TF_HOG), ("LIBGMALLOC", LIBGMALLOC)):
    if not val or not os.path.exists(val):
        check(False, "%s is set and exists (%r)" % (name, val))
        finish()
env = Env(pool_mib=N)
fs = env.mount("chunk=256K", "slack=256K", "return_above=1M", "reserve_timeout=50")


def hog(max_mib):
    e = dict(os.environ, LD_PRELOAD=LIBGMALLOC, GMALLOC_MEMBROKER="1", MEMBROKER_SOCKET=env.sock)
    p = subprocess.Popen([TF_HOG, str(max_mib)], env=e, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    env.procs.append(p)
    return p


def got(p):
    line = p.stdout.readline().split()
    return int(line[1]) if len(line) == 2 and line[0] == "got" else -1


def cmd(p, c):
    p.stdin.write(c + "\n")
    p.stdin.flush()


# 1. The process takes (nearly) the whole pool.
h = hog(4096)
n = got(h)
check(n >= N - 4, "the gmalloc process got %d MiB of the %d MiB pool, then NULL" % (n, N))
check(env.held(h.pid) >= (N - 2) * MiB, "it holds the quota in membroker (%d)" % env.held(h.pid))
done, err = write_file(env.m("f1"), 4 * MiB)
check(err == errno.ENOSPC and done < 4 * MiB,
      "a 4 MiB file write fails with ENOSPC while the process holds the pool (%d written)" % done)

# 2. It frees: the write succeeds.
cmd(h, "free")
check(h.stdout.readline().strip() == "freed", "the process freed its blocks")
wait_for(lambda: env.free() >= 8 * MiB, "the process's quota back in the pool")
done, err = write_file(env.m("f1"), 4 * MiB)
check(done == 4 * MiB and err == 0, "after it frees, the 4 MiB write succeeds (%d, errno %d)" % (done, err))

# 3. track_fs takes the rest of the pool in files: the process's malloc fails.
done, err = write_file(env.m("f2"), N * MiB)
check(err == errno.ENOSPC, "a file fills the rest of the pool, then ENOSPC (%d written)" % done)
tracked = env.held()
check(tracked >= (N - 3) * MiB, "track_fs holds %d of the pool" % tracked)
cmd(h, "grab")
n = got(h)
check(n <= 3, "the process's malloc returns NULL after %d MiB: track_fs holds the memory" % n)

# 4. Deleting the files lets the process allocate again.
os.remove(env.m("f2"))
cmd(h, "free")
h.stdout.readline()
cmd(h, "grab")
n = got(h)
check(n >= 16, "after the files are deleted the process gets %d MiB" % n)
cmd(h, "quit")
h.wait(20)
check(env.unmount() == 0, "clean unmount")
finish()

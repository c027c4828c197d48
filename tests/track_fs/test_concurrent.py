#!/usr/bin/env python3
"""Concurrent writers from several processes (issue 8), with -o nonurgent:
  - 6 processes write files of their own (1 MiB and 4 KiB..64 KiB writes)
    and 2 processes write disjoint interleaved blocks of one shared file,
    together asking for more than the pool;
  - every byte a write reported as written is there (content verified),
    nothing more; the file sizes are what the writers were told;
  - the blocks under SOURCE_DIR, sampled all along, never exceed the pool,
    and at the end equal what track_fs charged;
  - the writers that hit the limit got ENOSPC, nothing else.
"""
import errno
import os
import random
import threading
from tfenv import Env, MiB, check, finish, pattern, tree_blocks

N = 24
env = Env(pool_mib=N)
env.mount("chunk=512K", "slack=512K", "return_above=2M", "nonurgent")

OWN = 6          # processes with a file each
OWN_MIB = 6      # each wants 6 MiB: 36 MiB > 24 MiB pool
SHARED_BLOCKS = 512  # 64 KiB blocks of the shared file, half for each of 2 writers
BLK = 64 * 1024


def own_writer(i, wfd):
    random.seed(i)
    path = env.m("own%d" % i)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    done, err = 0, 0
    while done < OWN_MIB * MiB:
        n = MiB if i % 2 == 0 else random.choice([4096, 16384, 65536])
        n = min(n, OWN_MIB * MiB - done)
        try:
            w = os.write(fd, pattern(path, done, n))
        except OSError as e:
            err = e.errno
            break
        done += w
    os.close(fd)
    os.write(wfd, ("%d %d\n" % (done, err)).encode())


def shared_writer(k, wfd):
    path = env.m("shared")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    ok, err = [], 0
    for b in range(k, SHARED_BLOCKS, 2):
        try:
            w = os.pwrite(fd, pattern(path, b * BLK, BLK), b * BLK)
            ok.append("%d:%d" % (b, w))
        except OSError as e:
            err = e.errno
            ok.append("%d:E%d" % (b, e.errno))
            if len([x for x in ok if ":E" in x]) >= 4:
                break
    os.close(fd)
    os.write(wfd, (" ".join(ok) + "\n").encode())


# Sample the blocks under SOURCE_DIR while the writers run.
peak = [0]
stop = threading.Event()


def sampler():
    while not stop.is_set():
        peak[0] = max(peak[0], tree_blocks(env.src))


t = threading.Thread(target=sampler)
t.start()
kids = []
order = [OWN, OWN + 1] + list(range(OWN))  # the shared file's writers first
pipes = {}
for i in order:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            if i < OWN:
                own_writer(i, w)
            else:
                shared_writer(i - OWN, w)
        finally:
            os._exit(0)
    os.close(w)
    kids.append((pid, r))
    pipes[i] = len(kids) - 1
results = []
for pid, r in kids:
    data = b""
    while True:
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    results.append(data.decode().strip())
stop.set()
t.join()
results = [results[pipes[i]] for i in range(OWN + 2)]

total = 0
errs = set()
for i in range(OWN):
    done, err = map(int, results[i].split())
    path = env.m("own%d" % i)
    with open(path, "rb") as f:
        data = f.read()
    check(len(data) == done and data == pattern(path, 0, done),
          "own%d: the %d bytes reported written are all there, nothing more (size %d)" % (i, done, len(data)))
    if err:
        errs.add(err)
    total += done
shared_ok = 0
path = env.m("shared")
with open(path, "rb") as f:
    shared = f.read()
lost = 0
for k in range(2):
    for item in results[OWN + k].split():
        b, w = item.split(":")
        b = int(b)
        if w.startswith("E"):
            errs.add(int(w[1:]))
            continue
        w = int(w)
        if shared[b * BLK:b * BLK + w] != pattern(path, b * BLK, w):
            lost += 1
        shared_ok += w
check(lost == 0, "shared file: every block a writer was told was written is there (%d bytes)" % shared_ok)
total += shared_ok
check(errs <= {errno.ENOSPC}, "the only error writers saw is ENOSPC (%s)" % sorted(errs))
check(errno.ENOSPC in errs, "the pool ran out: some writers got ENOSPC")
check(total <= N * MiB, "written %d <= the pool %d" % (total, N * MiB))
check(total >= (N - 3) * MiB, "the pool was used: %d written" % total)
check(peak[0] <= N * MiB, "blocks under SOURCE_DIR never exceeded the pool (peak %d)" % peak[0])
charged, _ = env.df()
check(charged == tree_blocks(env.src), "charged %d = st_blocks of SOURCE_DIR %d" % (charged, tree_blocks(env.src)))
check(env.held() <= N * MiB and env.daemon.poll() is None, "the daemon serves; track_fs holds at most the pool")
for i in range(OWN):
    os.remove(env.m("own%d" % i))
os.remove(env.m("shared"))
check(env.df()[0] == 0, "all deleted: nothing charged")
check(env.unmount() == 0, "clean unmount")
finish()

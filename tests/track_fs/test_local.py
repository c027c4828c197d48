#!/usr/bin/env python3
"""track_fs without a reachable membroker (issue 8): it says so and runs
with the local limit (-o limit=SIZE); writes up to the limit succeed, the
next gets ENOSPC, deletes make room again. -o no_membroker does the same on
purpose. Also: --help prints the manual, bad options are refused."""
import errno
import os
import subprocess
from tfenv import Env, MiB, TRACK_FS, check, finish, write_file

env = Env(pool_mib=8, daemon=False)
fs = env.mount("membroker=" + env.sock, "limit=3M", use_socket=False)
log = env.log()
check("cannot be reached" in log and "local limit 3.00 MiB" in log, "it says so: " + log.strip())
done, err = write_file(env.m("a"), 2 * MiB)
check(done == 2 * MiB and err == 0, "2 MiB written under a 3 MiB local limit")
done, err = write_file(env.m("b"), 2 * MiB)
check(done == MiB and err == errno.ENOSPC, "the next 2 MiB: 1 MiB fits, then ENOSPC (%d, errno %d)" % (done, err))
sv = os.statvfs(env.mnt)
check(sv.f_blocks * sv.f_frsize == 3 * MiB and sv.f_bavail == 0, "statfs: 3 MiB, none available")
os.remove(env.m("a"))
done, err = write_file(env.m("c"), 2 * MiB)
check(done == 2 * MiB and err == 0, "after a delete 2 MiB fit again")
check(env.unmount() == 0, "clean unmount")

fs = env.mount("no_membroker", "limit=1M", use_socket=False)
check("-o no_membroker" in env.log(), "no_membroker says so: " + env.log().strip())
done, err = write_file(env.m("d"), 2 * MiB)
check(err == errno.ENOSPC, "no_membroker: nothing fits while 3 MiB exceed the 1 MiB limit (%d)" % done)
os.remove(env.m("b"))
os.remove(env.m("c"))
done, err = write_file(env.m("d"), 2 * MiB)
check(done == MiB and err == errno.ENOSPC, "after deleting, 1 MiB fits, then ENOSPC (%d)" % done)
check(env.unmount() == 0, "clean unmount")

r = subprocess.run([TRACK_FS, "--help"], capture_output=True, text=True)
check(r.returncode == 0 and all(s in r.stdout for s in ("SYNOPSIS", "OPTIONS", "limit=SIZE", "cache_dir=DIR",
                                                         "nonurgent", "fusermount3 -u")),
      "--help prints the manual")
r = subprocess.run([TRACK_FS, env.src, env.mnt, "-o", "limit=lots"], capture_output=True, text=True)
check(r.returncode == 1 and "limit=lots" in r.stderr, "a bad size is refused: " + r.stderr.strip())
r = subprocess.run([TRACK_FS, "/nonexistent/dir", env.mnt], capture_output=True, text=True)
check(r.returncode == 1 and "/nonexistent/dir" in r.stderr, "a missing SOURCE_DIR is refused: " + r.stderr.strip())
finish()

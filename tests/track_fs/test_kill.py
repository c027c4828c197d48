#!/usr/bin/env python3
"""A killed track_fs gives its quota back (issue 8): the daemon reclaims it
when the connection drops. Also: SIGTERM and fusermount3 -u end it cleanly,
with the quota back, and a new mount over the same SOURCE_DIR counts the
files the dead one left."""
import errno
import os
import signal
from tfenv import Env, MiB, check, finish, write_file, wait_for, is_fuse_mount

N = 16
env = Env(pool_mib=N)
fs = env.mount("chunk=256K")
done, err = write_file(env.m("f"), 6 * MiB)
check(done == 6 * MiB and err == 0, "6 MiB written")
check(env.held() >= 6 * MiB, "track_fs holds >= 6 MiB (%d)" % env.held())
check(env.free() <= (N - 6) * MiB, "the pool is short by as much")
fs.send_signal(signal.SIGKILL)
fs.wait(20)
wait_for(lambda: env.status()["clients"] == [], "the killed track_fs to leave the client table")
check(env.free() == N * MiB, "after SIGKILL the whole pool is free again (%d)" % env.free())
check(env.daemon.poll() is None, "the daemon is still running")
# The dead mount is cleaned up the documented way.
import subprocess
r = subprocess.run(["fusermount3", "-u", "-z", env.mnt], capture_output=True, text=True)
check(r.returncode == 0 and not is_fuse_mount(env.mnt), "fusermount3 -u -z removes the dead mount")

# A new mount counts the 6 MiB file the killed one left.
fs = env.mount("chunk=256K")
check(env.held() >= 6 * MiB and env.df()[0] == 6 * MiB, "a new mount covers the 6 MiB left in SOURCE_DIR")
with open(env.m("f"), "rb") as f:
    check(len(f.read()) == 6 * MiB, "the file is readable through the new mount")
# SIGTERM: clean exit, unmounted, quota back.
fs.send_signal(signal.SIGTERM)
rc = fs.wait(20)
check(rc == 0, "SIGTERM: track_fs exits 0 (%r)" % rc)
wait_for(lambda: not is_fuse_mount(env.mnt), "the unmount after SIGTERM")
check(env.status()["clients"] == [] and env.free() == N * MiB, "after SIGTERM the pool is free")

# The daemon dies under a mounted track_fs: it says so, keeps what it held as
# a local limit, and keeps serving.
fs = env.mount("chunk=256K", "slack=256K", "return_above=1M")
held = env.held()
env.daemon.kill()
env.daemon.wait(20)
done, err = write_file(env.m("g"), 4 * MiB)
check(err == errno.ENOSPC and done <= held - 6 * MiB,
      "without the daemon, a write past the quota held gets ENOSPC (%d written, %d held)" % (done, held))
check("lost the membroker connection" in env.log(), "track_fs says it lost membroker: " + env.log().strip().splitlines()[-1])
with open(env.m("f"), "rb") as f:
    check(len(f.read()) == 6 * MiB, "and keeps serving reads")
os.remove(env.m("g"))
done, err = write_file(env.m("h"), 64 * 1024)
check(done == 64 * 1024 and err == 0, "after a delete, writes within the old quota succeed")
check(env.unmount() == 0, "clean unmount without the daemon")
finish()

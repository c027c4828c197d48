#!/usr/bin/env python3
"""Bidirectional mode (-o cache_dir=DIR, issue 8): track_fs registers as a
bidirectional client; when membroker asks it to give back (another client's
RESERVE), it answers from its surplus and then by deleting files from the
cache directory, oldest first. Files outside the cache directory stay."""
import os
import subprocess
import time
from tfenv import Env, MiB, MBCTL, check, finish, write_file, wait_for

N = 10
env = Env(pool_mib=N)
fs = env.mount("cache_dir=cache", "chunk=256K", "slack=256K", "return_above=1M")
check("bidirectional client" in env.log(), "track_fs registers as a bidirectional client")
kind = [c["kind"] for c in env.status()["clients"] if c["pid"] == fs.pid]
check(kind == ["bidirectional"], "mbctl status shows it bidirectional (%s)" % kind)
os.mkdir(env.m("cache"))
os.mkdir(env.m("cache", "sub"))
now = time.time()
for i, name in enumerate(["cache/c0", "cache/sub/c1", "cache/c2", "cache/c3"]):
    done, err = write_file(env.m(name), 2 * MiB)
    os.utime(env.m(name), (now - 1000 + i * 100, now - 1000 + i * 100))  # c0 oldest
done, err = write_file(env.m("keep"), MiB)
check(done == MiB, "8 MiB of cache files and 1 MiB of other files written")
held = env.held()
check(held >= 9 * MiB, "track_fs holds %d" % held)

# Another client needs 4 MiB, all or nothing: track_fs has to give back.
hold = subprocess.Popen([MBCTL, "--socket", env.sock, "hold", "--reserve", "--timeout", "10000", "4M"],
                        stdout=subprocess.PIPE, text=True)
env.procs.append(hold)
line = hold.stdout.readline()
check(line.startswith("held 1024 pages"), "the RESERVE of 4 MiB is granted: " + line.strip())
left = sorted(os.listdir(env.s("cache"))) + sorted("sub/" + n for n in os.listdir(env.s("cache", "sub")))
check("c0" not in left and "sub/c1" not in left, "the two oldest cache files were deleted (left: %s)" % left)
check("c3" in left, "the newest cache file stays")
check(os.path.exists(env.s("keep")), "files outside the cache directory stay")
check("give-back" in env.log(), "track_fs logs the give-back: " + env.log().strip().splitlines()[-1])
charged, _ = env.df()
check(env.held() >= charged, "what track_fs holds still covers its files (%d >= %d)" % (env.held(), charged))
hold.terminate()
hold.wait(20)
check(env.unmount() == 0, "clean unmount")
finish()

#!/usr/bin/env python3
"""gmalloc with MEMBROKER on, against the real membrokerd on a socket in a
temporary directory (issue: membroker, quota-driven allocation).

  1. a greedy process gets quota until the pool is empty, then NULL + ENOMEM;
  2. a second process gets (almost) nothing while the first holds the pool;
  3. the first frees and trims: surplus quota goes back (seen in mbctl status);
  4. the second now gets most of the pool;
  5. the second is killed (SIGKILL): its quota returns to the pool;
  6. with no daemon, the process says so once and runs with its local limit.

Usage: test_quota.py BUILD_DIR GREEDY_BINARY
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

BUILD, GREEDY = sys.argv[1], sys.argv[2]
DAEMON = os.path.join(BUILD, "membroker", "membrokerd")
MBCTL = os.path.join(BUILD, "membroker", "mbctl")
POOL_MIB = 64
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def wait_for(pred, what, limit=20.0):
    """Waits for a condition; the limit only catches a hang."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    check(False, "timed out waiting for " + what)
    return False


def status(sock):
    out = subprocess.run([MBCTL, "--socket", sock, "status", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def held(sock, pid):
    for c in status(sock)["clients"]:
        if c["pid"] == pid:
            return c["held_pages"]
    return 0


class Greedy:
    def __init__(self, sock, max_mib=None):
        env = dict(os.environ, GMALLOC_MEMBROKER="1", MEMBROKER_SOCKET=sock)
        args = [GREEDY] + ([str(max_mib)] if max_mib else [])
        self.p = subprocess.Popen(args, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def line(self):
        return self.p.stdout.readline().split()

    def got(self):
        w = self.line()  # got N MiB errno E quota Q
        return int(w[1]), int(w[4]), int(w[6])

    def say(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()


def main():
    tmp = tempfile.mkdtemp(prefix="anr-quota-")
    sock = os.path.join(tmp, "mb.sock")
    d = subprocess.Popen([DAEMON, "--socket", sock, "--pool", "%dM" % POOL_MIB],
                         stderr=open(os.path.join(tmp, "daemon.log"), "w"))
    try:
        wait_for(lambda: os.path.exists(sock), "the daemon's socket")
        pool = status(sock)["pool_pages"]
        page = status(sock)["page_size"]

        a = Greedy(sock)
        n_a, err_a, q_a = a.got()
        check(err_a == 12, "greedy A ends with ENOMEM (errno %d)" % err_a)
        check(POOL_MIB - 2 <= n_a <= POOL_MIB, "greedy A got %d MiB of a %d MiB pool" % (n_a, POOL_MIB))
        check(q_a <= pool and held(sock, a.p.pid) == q_a,
              "A's quota %d pages is what the daemon shows for it" % q_a)

        b = Greedy(sock)
        n_b, err_b, _ = b.got()
        check(err_b == 12 and n_b <= 1, "B gets %d MiB while A holds the pool (ENOMEM)" % n_b)

        a.say("free")
        w = a.line()
        q_free = int(w[2])
        check(q_free * page <= 4 << 20, "A keeps %d pages of quota after freeing all" % q_free)
        check(held(sock, a.p.pid) == q_free, "the daemon agrees with A's quota after the return")

        b.say("grab")
        n_b2, err_b2, q_b = b.got()
        check(n_b2 >= POOL_MIB - 6 and err_b2 == 12,
              "B now gets %d MiB, then ENOMEM" % n_b2)

        free_before = status(sock)["free_pages"]
        b.p.send_signal(signal.SIGKILL)
        b.p.wait()
        wait_for(lambda: status(sock)["free_pages"] >= free_before + q_b,
                 "B's quota to return after SIGKILL")
        check(status(sock)["free_pages"] >= free_before + q_b,
              "a killed client's %d pages came back" % q_b)

        a.say("quit")
        a.p.wait()
        wait_for(lambda: status(sock)["free_pages"] == pool, "A's quota to return at exit")
        check(status(sock)["free_pages"] == pool, "the whole pool is free again")
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait()

    env = dict(os.environ, GMALLOC_MEMBROKER="1", MEMBROKER_SOCKET=os.path.join(tmp, "none.sock"))
    r = subprocess.run([GREEDY, "8"], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    check(r.returncode == 0 and r.stdout.startswith("got 8 MiB errno 0"),
          "without a daemon the process runs on its local limit: %r" % r.stdout.strip())
    check(r.stderr.count("membroker cannot be reached") == 1,
          "and says so once: %r" % r.stderr.strip())

    if failures:
        print("%d check(s) failed" % len(failures))
        sys.exit(1)
    print("PASS")


main()

"""Shared harness of the track_fs tests: a temporary directory with a tmpfs
(SOURCE_DIR), a membrokerd on a socket there, and track_fs mounted for real
(needs root and /dev/fuse). Everything is torn down at exit, even on a
failure or SIGTERM: `fusermount3 -u -z` on the mount point, the processes
killed, the tmpfs lazily unmounted.

Waits are for events (a mount appearing, a socket answering, a line of
output), bounded at 20 s as "something is wrong", never a speed threshold.

Binaries come from the environment (set by tests/track_fs/meson.build):
TRACK_FS, MEMBROKERD, MBCTL, TF_HOG, LIBGMALLOC.
"""
import atexit
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zlib

MiB = 1 << 20
TRACK_FS = os.environ.get("TRACK_FS", "")
MEMBROKERD = os.environ.get("MEMBROKERD", "")
MBCTL = os.environ.get("MBCTL", "")
TF_HOG = os.environ.get("TF_HOG", "")
LIBGMALLOC = os.environ.get("LIBGMALLOC", "")

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def finish():
    if failures:
        print("%d check(s) failed:" % len(failures))
        for f in failures:
            print("  " + f)
        sys.exit(1)
    print("all checks passed")
    sys.exit(0)


def wait_for(pred, what, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    check(False, "timed out waiting for " + what)
    return False


def is_fuse_mount(path):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == path:
                sep = parts.index("-")
                return parts[sep + 1].startswith("fuse")
    return False


def write_file(path, nbytes, chunk=MiB, byte=None, flags=os.O_WRONLY | os.O_CREAT):
    """Writes nbytes in `chunk` writes. Returns (bytes written, errno or 0)."""
    fd = os.open(path, flags, 0o644)
    done = 0
    err = 0
    try:
        while done < nbytes:
            n = min(chunk, nbytes - done)
            data = pattern(path, done, n) if byte is None else bytes([byte]) * n
            try:
                w = os.write(fd, data)
            except OSError as e:
                err = e.errno
                break
            done += w
            if w < n:  # a short write: the next one says why
                continue
    finally:
        os.close(fd)
    return done, err


def pattern(name, off, n):
    """Content that depends on the file and the offset: a lost or misplaced
    block shows."""
    seed = zlib.crc32(os.path.basename(name).encode()) or 1
    out = bytearray(n)
    for i in range(0, n, 4096):
        blk = ((off + i) // 4096 * 2654435761 + seed) & 0xFFFFFFFF
        piece = blk.to_bytes(4, "little") * 1024
        out[i:i + min(4096, n - i)] = piece[: min(4096, n - i)]
    return bytes(out)


def tree_blocks(path):
    """st_blocks * 512 of everything under path (hard links once)."""
    total = 0
    seen = set()
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            if st.st_nlink > 1:
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


class Env:
    def __init__(self, pool_mib, tmpfs_mib=256, daemon=True):
        for name, val in (("TRACK_FS", TRACK_FS), ("MEMBROKERD", MEMBROKERD), ("MBCTL", MBCTL)):
            if not val or not os.path.exists(val):
                print("%s not set or missing: %r" % (name, val))
                sys.exit(1)
        self.dir = tempfile.mkdtemp(prefix="track_fs-test.")
        self.src = os.path.join(self.dir, "src")
        self.mnt = os.path.join(self.dir, "mnt")
        self.sock = os.path.join(self.dir, "mb.sock")
        os.mkdir(self.src)
        os.mkdir(self.mnt)
        self.procs = []
        self.fs = None
        self.daemon = None
        self.pool = pool_mib * MiB
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(2))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dM" % tmpfs_mib, "tmpfs", self.src],
                       check=True)
        if daemon:
            self.start_daemon()

    def start_daemon(self):
        self.dlog = open(os.path.join(self.dir, "daemon.log"), "w")
        self.daemon = subprocess.Popen([MEMBROKERD, "--socket", self.sock, "--pool",
                                        "%d" % self.pool, "--giveback-timeout", "5000"],
                                       stderr=self.dlog)
        self.procs.append(self.daemon)
        wait_for(lambda: subprocess.run([MBCTL, "--socket", self.sock, "query"],
                                        capture_output=True).returncode == 0, "membrokerd")

    def mount(self, *opts, use_socket=True, env=None):
        """Mounts track_fs in the foreground (-f), its stderr in a log file."""
        args = [TRACK_FS, self.src, self.mnt, "-f"]
        o = list(opts)
        if use_socket:
            o.insert(0, "membroker=" + self.sock)
        if o:
            args += ["-o", ",".join(o)]
        self.fslog_path = os.path.join(self.dir, "track_fs.%d.log" % len(self.procs))
        self.fslog = open(self.fslog_path, "w")
        self.fs = subprocess.Popen(args, stderr=self.fslog, env=env)
        self.procs.append(self.fs)
        wait_for(lambda: is_fuse_mount(self.mnt) or self.fs.poll() is not None, "the mount")
        if not is_fuse_mount(self.mnt):
            print(self.log())
            check(False, "track_fs mounted")
            finish()
        return self.fs

    def log(self):
        with open(self.fslog_path) as f:
            return f.read()

    def unmount(self):
        """fusermount3 -u; returns track_fs's exit status."""
        r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr)
        try:
            return self.fs.wait(20)
        except subprocess.TimeoutExpired:
            return None

    def status(self):
        out = subprocess.run([MBCTL, "--socket", self.sock, "status", "--json"], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)

    def held(self, pid=None):
        pid = pid or self.fs.pid
        d = self.status()
        for c in d["clients"]:
            if c["pid"] == pid:
                return c["held_pages"] * d["page_size"]
        return 0

    def free(self):
        d = self.status()
        return d["free_pages"] * d["page_size"]

    def df(self):
        """(charged, available) as track_fs's statfs reports them, in bytes."""
        sv = os.statvfs(self.mnt)
        return ((sv.f_blocks - sv.f_bfree) * sv.f_frsize, sv.f_bavail * sv.f_frsize)

    def m(self, *names):
        return os.path.join(self.mnt, *names)

    def s(self, *names):
        return os.path.join(self.src, *names)

    def cleanup(self):
        if is_fuse_mount(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        if is_fuse_mount(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        subprocess.run(["umount", "-l", self.src], capture_output=True)
        subprocess.run(["rm", "-rf", self.dir], capture_output=True)


def enospc(err):
    return err == errno.ENOSPC

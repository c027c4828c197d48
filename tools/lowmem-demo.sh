#!/bin/sh
# Low-memory demo: two memory hogs (python3 under libgmalloc.so, with
# membroker quota) run into the device's pool. They get MemoryError (malloc
# returns NULL) instead of an OOM kill; the pool stays past the allocation
# threshold, so membrokerd terminates the red-listed hog, and the
# white-listed one survives. Builds what it needs first.
set -eu
cd "$(dirname "$0")/.."
if [ ! -x build/membroker/membrokerd ] || [ ! -f build/gmalloc/libgmalloc.so ]; then
    tools/install-deps.sh
    [ -f build/build.ninja ] || meson setup build >/dev/null
    ninja -C build >/dev/null
fi
dir=$(mktemp -d /tmp/anr-lowmem.XXXXXX)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

# The kernel names a process after the file it executed: symlinks give the
# two hogs names the policy can tell apart.
ln -s /usr/bin/python3 "$dir/red_hog"
ln -s /usr/bin/python3 "$dir/white_hog"
cat >"$dir/hog.py" <<'EOF'
import sys, time
held, most = [], int(sys.argv[2])
try:
    while len(held) < most:
        held.append(bytearray(1 << 20))   # 1 MiB, written (zeroed)
    print("%s: holds %d MiB" % (sys.argv[1], len(held)), flush=True)
except MemoryError:
    print("%s: MemoryError after %d MiB (malloc returned NULL; no OOM kill)"
          % (sys.argv[1], len(held)), flush=True)
time.sleep(30)
print("%s: still alive" % sys.argv[1], flush=True)
EOF
cat >"$dir/membroker.conf" <<EOF
POOL 128M
SOCKET $dir/mb.sock
SIGNAL_THRESHOLD 80%
ALLOC_THRESHOLD 95%
NEVER_KILL white_hog
KILLABLE red_hog
KILL_GRACE 2000
KILL_TIMEOUT 2000
OOM_SCORE_ADJ no
EOF
echo "\$ cat membroker.conf"; grep -v '^SOCKET' "$dir/membroker.conf"
build/membroker/membrokerd --config "$dir/membroker.conf" 2>"$dir/daemon.log" &
pids="$!"
i=0
while [ ! -S "$dir/mb.sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
export MEMBROKER_SOCKET="$dir/mb.sock"

hog() {
    GMALLOC_MEMBROKER=1 PYTHONMALLOC=malloc LD_PRELOAD="$PWD/build/gmalloc/libgmalloc.so" \
        "$dir/$1" "$dir/hog.py" "$1" "$2" &
    pids="$pids $!"
    eval "${1}_pid=$!"
}
echo "\$ red_hog 70 & white_hog 200 &   # python3 under libgmalloc.so, GMALLOC_MEMBROKER=1"
hog red_hog 70
sleep 2
hog white_hog 200
sleep 2
echo "\$ mbctl status"
build/membroker/mbctl status | sed 's/^/  /'
echo "(waiting for the kill grace period)"
sleep 4
echo "\$ grep -i 'kill\|level' daemon.log"
grep -i 'kill\|level\|terminat' "$dir/daemon.log" | sed 's/^/  /' | head -8
for h in red_hog white_hog; do
    eval "p=\$${h}_pid"
    if kill -0 "$p" 2>/dev/null; then echo "$h (pid $p): running"; else echo "$h (pid $p): terminated"; fi
done
echo "\$ mbctl status"
build/membroker/mbctl status | sed 's/^/  /'

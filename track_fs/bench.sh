#!/bin/sh
# Write throughput through track_fs vs plain tmpfs (README.md, "Benchmark").
#   track_fs/bench.sh BUILD_DIR [ROUNDS]
# Mounts a tmpfs and track_fs in a temporary directory (root, /dev/fuse),
# starts its own membrokerd (pool 1 GiB), runs tf_bench on: the tmpfs
# itself, track_fs with membroker, track_fs with a local limit only.
set -eu
build=${1:?usage: bench.sh BUILD_DIR [ROUNDS]}
rounds=${2:-5}
dir=$(mktemp -d "${TMPDIR:-/tmp}/tf-bench.XXXXXX")
dpid=""
cleanup() {
    fusermount3 -u -z "$dir/mnt" 2>/dev/null || true
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null || true
    umount -l "$dir/src" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
mkdir "$dir/src" "$dir/mnt"
mount -t tmpfs -o size=2G tmpfs "$dir/src"
"$build/membroker/membrokerd" --socket "$dir/mb.sock" --pool 1G 2>"$dir/d.log" &
dpid=$!
i=0
until "$build/membroker/mbctl" --socket "$dir/mb.sock" query >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 500 ] || { echo "membrokerd did not start" >&2; exit 1; }; sleep 0.02
done
bench=$build/track_fs/tf_bench
run_mounted() { # label, options
    "$build/track_fs/track_fs" "$dir/src" "$dir/mnt" -o "$2" 2>"$dir/tf.log"
    printf '%-26s' "$1"; "$bench" "$dir/mnt" "$rounds"
    fusermount3 -u "$dir/mnt"
    sleep 0.2
}
printf '%-26s' "tmpfs"; "$bench" "$dir/src" "$rounds"
run_mounted "track_fs + membroker" "membroker=$dir/mb.sock"
run_mounted "track_fs, local limit" "no_membroker,limit=1G"

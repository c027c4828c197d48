#!/bin/bash
# gmalloc in one command, on a fresh Debian machine:
#   tools/demo.sh
# installs what is missing (tools/install-deps.sh), builds the project
# (meson setup build; ninja -C build), then runs an unmodified sqlite3 on a
# generated workload twice, on glibc's malloc and under
#   LD_PRELOAD=build/gmalloc/libgmalloc.so GMALLOC_STATS=1
# and reports wall time, peak RSS, the allocator's statistics and the
# memory-map system calls of both runs. Takes well under a minute.
# Exits non-zero if the build or a run fails, or if the two runs' outputs differ.
#
# Options: --no-deps      skip tools/install-deps.sh
#          --scale N      size of the workload (default 2: ~250k SQL statements)
# Environment: BUILDDIR   build directory (default: build)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BUILDDIR=${BUILDDIR:-build}
deps=1
scale=2
while [ $# -gt 0 ]; do
    case $1 in
        --no-deps) deps=0 ;;
        --scale) scale=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
[ -t 1 ] || say() { printf '\n== %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

# ------------------------------------------------------------------ set up
if [ "$deps" = 1 ]; then
    say "installing missing Debian packages (tools/install-deps.sh)"
    tools/install-deps.sh
fi
for p in meson ninja sqlite3 strace awk; do
    command -v "$p" >/dev/null || die "$p is missing (run tools/install-deps.sh)"
done

say "building ($BUILDDIR)"
[ -f "$BUILDDIR/build.ninja" ] || meson setup "$BUILDDIR" >/dev/null
ninja -C "$BUILDDIR" >/dev/null || { ninja -C "$BUILDDIR" | tail -30; die "the build failed"; }
LIB=$root/$BUILDDIR/gmalloc/libgmalloc.so
[ -f "$LIB" ] || die "$LIB was not built"
echo "built $LIB"

# ------------------------------------------------------------------ the runs
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gmalloc-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
unset LD_PRELOAD GMALLOC_STATS GMALLOC_CONF
export LC_ALL=C

awk -v scale="$scale" -f tests/programs/gen_sql.awk >"$tmp/work.sql"
nstmt=$(grep -c ';$' "$tmp/work.sql")
say "workload: sqlite3 (Debian's, unmodified) on $nstmt generated SQL statements"
echo "inserts in transactions, indexes, joins, GROUP BY, window functions, deletes, VACUUM;"
echo "sqlite3 is told to keep a 64 MB page cache, so its memory all comes from malloc."

# measure NAME ENV... : one timed run of sqlite3 in $tmp/NAME, with ENV added.
measure() {
    local name=$1 d=$tmp/$1
    shift
    mkdir -p "$d"
    local rc=0
    if [ -x /usr/bin/time ]; then
        (cd "$d" && timeout 120 /usr/bin/time -o "$d/time" -f '%e %M' \
            env "$@" sqlite3 -batch test.db <"$tmp/work.sql" >"$d/out" 2>"$d/err") || rc=$?
    else
        # No GNU time (Debian package "time"): measure with getrusage instead.
        (cd "$d" && timeout 120 python3 -c '
import resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.call(sys.argv[2:], stdin=sys.stdin, stdout=open("out", "w"), stderr=open("err", "w"))
open(sys.argv[1], "w").write("%.2f %d\n" % (time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)' "$d/time" env "$@" sqlite3 -batch test.db <"$tmp/work.sql") || rc=$?
    fi
    if [ "$rc" -ne 0 ]; then
        echo "sqlite3 failed on $name (status $rc):" >&2
        tail -5 "$d/err" >&2
        exit 1
    fi
}

# syscalls NAME ENV... : the same run under strace -f -c, memory-map calls only.
# The environment is set by strace -E, so that only sqlite3 is traced.
syscalls() {
    local name=$1 d=$tmp/$1-strace e envs=()
    shift
    for e in "$@"; do envs+=(-E "$e"); done
    mkdir -p "$d"
    (cd "$d" && timeout 120 strace -f -c -o "$d/counts" -e trace=brk,mmap,munmap,mremap,mprotect,madvise \
        "${envs[@]}" sqlite3 -batch test.db <"$tmp/work.sql" >"$d/out" 2>"$d/err") ||
        die "sqlite3 under strace failed on $name: $(tail -3 "$d/err")"
}
calls() {  # calls FILE SYSCALL: the "calls" column of strace -c
    awk -v s="$2" '$NF == s { c = $4 } END { print c + 0 }' "$1"
}

echo "running it on glibc, then under gmalloc ..."
measure glibc LC_ALL=C
measure gmalloc LD_PRELOAD="$LIB" GMALLOC_STATS=1
echo "... and both again under strace -f -c"
syscalls glibc LC_ALL=C
syscalls gmalloc LD_PRELOAD="$LIB"

read -r t_g m_g <"$tmp/glibc/time"
read -r t_m m_m <"$tmp/gmalloc/time"
same=no
cmp -s "$tmp/glibc/out" "$tmp/gmalloc/out" && same=yes
cmp -s "$tmp/glibc/out" "$tmp/glibc-strace/out" && cmp -s "$tmp/glibc/out" "$tmp/gmalloc-strace/out" || same=no

say "results"
printf '  %-28s %14s %14s\n' "" "glibc malloc" "gmalloc"
printf '  %-28s %12s s %12s s\n' "wall time" "$t_g" "$t_m"
printf '  %-28s %11s MB %11s MB\n' "peak RSS" "$(awk -v k="$m_g" 'BEGIN { printf "%.1f", k / 1024 }')" \
    "$(awk -v k="$m_m" 'BEGIN { printf "%.1f", k / 1024 }')"
printf '  %-28s %14s %14s\n' "query output (lines)" "$(wc -l <"$tmp/glibc/out")" "$(wc -l <"$tmp/gmalloc/out")"
if [ "$same" = yes ]; then
    echo "  outputs: identical ($(sha256sum <"$tmp/glibc/out" | cut -c1-16)...)"
else
    echo "  outputs: DIFFERENT"
    diff "$tmp/glibc/out" "$tmp/gmalloc/out" | head -10 | sed 's/^/    /'
fi

say "gmalloc's own statistics at exit (GMALLOC_STATS=1, written to stderr)"
if grep -q 'gmalloc statistics' "$tmp/gmalloc/err"; then
    sed -n '/gmalloc statistics/,$p' "$tmp/gmalloc/err" | sed 's/^/  /'
    loaded=yes
else
    echo "  (none: the library did not print its report, so it was not loaded?)"
    tail -5 "$tmp/gmalloc/err" | sed 's/^/  | /'
    loaded=no
fi

say "memory-map system calls over the whole run (strace -f -c)"
printf '  %-10s %14s %14s\n' "" "glibc malloc" "gmalloc"
for s in brk mmap munmap mremap mprotect madvise; do
    printf '  %-10s %14s %14s\n' "$s" "$(calls "$tmp/glibc-strace/counts" $s)" "$(calls "$tmp/gmalloc-strace/counts" $s)"
done

say "what to look at"
fmt -w 78 <<EOF
The same unmodified sqlite3 binary ran the same SQL twice and printed the same
results; the only difference is the allocator underneath. In the system-call
table, glibc moves the program break (brk) and maps and unmaps memory as the
heap grows and shrinks; under gmalloc the memory map is fixed after start-up:
the one remaining brk is the dynamic loader asking where the break is
(brk(NULL)), the mmap/mprotect/munmap calls are the loader mapping shared
libraries plus gmalloc's single reservation at init ("mapping reserved at init"
above: address space with MAP_NORESERVE, not memory), and what is left is
madvise, with which gmalloc hands free pages back to the kernel ("handed back"
in its statistics), so RSS follows live data instead of the peak. A real-time
thread in such a process never waits on the kernel's mmap lock because of
malloc. Compare peak RSS and wall time as ratios between the two columns only:
this is one run on a possibly busy machine, not a benchmark (bench/run and
bench/README.md are). The same check on python3, gcc, git and redis-server is
"meson test -C $BUILDDIR --suite programs".
EOF

status=0
[ "$same" = yes ] || { echo "demo: FAILED: the outputs differ between glibc and gmalloc" >&2; status=1; }
[ "$loaded" = yes ] || { echo "demo: FAILED: gmalloc was not loaded (no statistics report)" >&2; status=1; }
exit $status

#!/bin/bash
# The fixed memory map, seen from outside: real programs run a malloc churn
# under strace, on glibc and under LD_PRELOAD=LIB, and the memory-map system
# calls are counted.
#
# Usage: fixed_map.sh [--keep] LIB [WORKLOAD...]
#        fixed_map.sh --glibc-only [--keep] [WORKLOAD...]   (tables only)
#   WORKLOAD  python3 (tests/programs/churn.py with PYTHONMALLOC=malloc) and/or
#             sqlite3 (the generated SQL workload); default: both.
#
# The program and the dynamic loader map memory for their own reasons (shared
# objects, their .bss, thread stacks, RELRO mprotect, locale files), so the
# calls are sorted by what they touch: strace's results give every mapping's
# range and kind (file, anonymous, anonymous MAP_FIXED = a loader's .bss,
# MAP_STACK = a thread stack), and munmap/mprotect/madvise are charged to the
# mapping that contains their address. What a malloc does shows up as: brk
# moving the break, anonymous mmaps that are neither fixed nor stacks, and
# munmap/mremap/mprotect on such anonymous memory. madvise is allowed.
#
# Checks, for each workload under the preload:
#   1. it exits 0 with the same stdout as on glibc, and the library was loaded
#      (its GMALLOC_STATS=1 report, "gmalloc statistics", is on stderr);
#   2. no brk call moves the break (glibc's malloc does; ld.so's brk(NULL)
#      query at start-up is not a change and is shown apart);
#   3. the churn adds no allocator-like map call: their count is at most the
#      count for a baseline run of the same program under the preload that
#      does everything but the churn (python3: the same imports and threads;
#      sqlite3: 'SELECT 1') plus a slack of $SLACK;
#   4. their count falls sharply against glibc: at most a quarter of
#      glibc's (checked when glibc makes at least 40 of them).
# Prints one table per workload, "PASS name"/"FAIL name: why", and
# "N passed, N failed"; exits non-zero if any failed, or if strace is
# missing or cannot trace here (a test that cannot run is a failure). (A stricter seccomp-based test lives in
# tests/drop_in/.)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

SLACK=4
glibc_only=0
keep=0
LIB=""
workloads=()
while [ $# -gt 0 ]; do
    case $1 in
        --glibc-only) glibc_only=1 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fixed_map.sh: unknown option $1" >&2; exit 2 ;;
        *) if [ "$glibc_only" = 0 ] && [ -z "$LIB" ]; then LIB=$1; else workloads+=("$1"); fi ;;
    esac
    shift
done
if [ "$glibc_only" = 0 ]; then
    [ -n "$LIB" ] || { echo "usage: fixed_map.sh LIB [WORKLOAD...]" >&2; exit 2; }
    [ -f "$LIB" ] || { echo "fixed_map.sh: $LIB: no such file" >&2; exit 2; }
    LIB=$(readlink -f "$LIB")
fi
[ ${#workloads[@]} -gt 0 ] || workloads=(python3 sqlite3)

unset LD_PRELOAD GMALLOC_STATS GMALLOC_CONF
export LC_ALL=C TZ=UTC

if ! command -v strace >/dev/null 2>&1; then
    echo "FAIL: strace is not installed (tools/install-deps.sh installs it)"
    exit 1
fi
if ! timeout 20 strace -f -o /dev/null true 2>/dev/null; then
    echo "FAIL: strace cannot trace here (ptrace not permitted?)"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gm-fixedmap.XXXXXX")
cleanup() { if [ "$keep" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

TRACE=mmap,munmap,mremap,mprotect,brk,madvise

# traced DIR SIDE CMD... : runs CMD under strace -f (one file per thread,
# so no call is split in two), stdin from DIR/in if it exists; leaves
# DIR/out, DIR/err, DIR/trace.* and returns CMD's status.
traced() {
    local dir=$1 side=$2 env=()
    shift 2
    mkdir -p "$dir"
    if [ "$side" = gm ] && [ "$glibc_only" = 0 ]; then
        env=(-E "LD_PRELOAD=$LIB" -E GMALLOC_STATS=1)
    fi
    local in=/dev/null
    [ -f "$dir/in" ] && in=$dir/in
    (cd "$dir" && timeout -k 10 300 strace -f -ff -qq -o "$dir/trace" -e trace=$TRACE \
        "${env[@]}" "$@" <"$in" >"$dir/out" 2>"$dir/err")
}

# classify DIR: prints "key value" lines for the traced run in DIR.
classify() {
    cat "$1"/trace.* 2>/dev/null | awk '
    function hex(s,    i, c, v) {
        v = 0; s = tolower(s); sub(/^0x/, "", s)
        for (i = 1; i <= length(s); i++) { c = index("0123456789abcdef", substr(s, i, 1)); v = v * 16 + c - 1 }
        return v
    }
    function kind_of(a,    i) {   # newest mapping that contains a
        for (i = nmap; i >= 1; i--) if (a >= mstart[i] && a < mend[i]) return mkind[i]
        return "other"
    }
    function args(line,    s) { s = line; sub(/^[a-z_0-9]*\(/, "", s); sub(/\)[ \t]*=.*$/, "", s); return s }
    function result(line,    s) { s = line; sub(/^.*\)[ \t]*=[ \t]*/, "", s); sub(/ .*/, "", s); return s }
    /^(mmap|munmap|mremap|mprotect|brk|madvise)\(/ {
        call = $0; sub(/\(.*/, "", call)
        split(args($0), a, /, */)
        if (call == "brk") { if (a[1] == "NULL") n["brk_query"]++; else n["brk_move"]++; next }
        if (call == "mmap") {
            r = result($0)
            if (a[4] ~ /MAP_ANONYMOUS/) {
                if (a[4] ~ /MAP_STACK/) k = "stack"; else if (a[4] ~ /MAP_FIXED/) k = "fixed"; else k = "anon"
            } else k = "file"
            if (r ~ /^0x/) { nmap++; mstart[nmap] = hex(r); mend[nmap] = hex(r) + a[2] + 0; mkind[nmap] = k }
            n["mmap_" (k == "anon" ? "anon" : "other")]++
            if (k == "anon") { sz = a[2] + 0; if (sz > maxanon) maxanon = sz }
            next
        }
        k = kind_of(hex(a[1]))
        if (call == "mremap") { n["mremap"]++; next }
        n[call "_" (k == "anon" ? "anon" : "other")]++
    }
    END {
        split("brk_move brk_query mmap_anon mmap_other munmap_anon munmap_other mremap mprotect_anon mprotect_other madvise_anon madvise_other", keys, " ")
        for (i = 1; i in keys; i++) print keys[i], n[keys[i]] + 0
        print "attributable", n["brk_move"] + n["mmap_anon"] + n["munmap_anon"] + n["mremap"] + n["mprotect_anon"]
        printf "max_anon_mmap %.0f\n", maxanon
    }'
}

get() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }

table() {  # table NAME G P S : prints the three classified runs side by side
    local name=$1 g=$2 p=$3 s=$4 k label
    local pl=preload
    [ "$glibc_only" = 1 ] && pl="(glibc)"
    printf '%s: memory-map system calls (strace -f, all threads)\n' "$name"
    printf '  %-44s %10s %10s %16s\n' "" "glibc" "$pl" "$pl baseline"
    for k in brk_move brk_query mmap_anon mmap_other munmap_anon munmap_other mremap mprotect_anon mprotect_other madvise_anon madvise_other attributable max_anon_mmap; do
        case $k in
            brk_move) label="brk moving the break" ;;
            brk_query) label="brk(NULL) (start-up query)" ;;
            mmap_anon) label="mmap anonymous (not fixed, not stack)" ;;
            mmap_other) label="mmap files, fixed .bss, thread stacks" ;;
            munmap_anon) label="munmap of anonymous memory" ;;
            munmap_other) label="munmap of other mappings" ;;
            mremap) label="mremap" ;;
            mprotect_anon) label="mprotect of anonymous memory" ;;
            mprotect_other) label="mprotect of other (RELRO, stacks)" ;;
            madvise_anon) label="madvise of anonymous memory" ;;
            madvise_other) label="madvise of other (thread stacks)" ;;
            attributable) label="= allocator-like calls" ;;
            max_anon_mmap) label="largest anonymous mmap (bytes)" ;;
        esac
        printf '  %-44s %10s %10s %16s\n' "$label" "$(get "$g" $k)" "$(get "$p" $k)" "$(get "$s" $k)"
    done
}

check() {  # check NAME
    local name=$1 d=$tmp/$1 rc_g rc_p rc_s g p s why=""
    case $name in
        python3)
            need python3 /usr/bin/python3 || return
            local run=(/usr/bin/python3 -s "$here/churn.py" 0.5)
            # The baseline imports the same modules and starts and joins as
            # many threads (Python maps 16 KiB per thread for itself).
            local start=(/usr/bin/python3 -s -c 'import hashlib, json, random, sys, threading, zlib
ts = [threading.Thread(target=len, args=("x",)) for _ in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]')
            local penv=(-E PYTHONMALLOC=malloc -E PYTHONHASHSEED=0)
            ;;
        sqlite3)
            need sqlite3 sqlite3 || return
            mkdir -p "$d/glibc" "$d/gm" "$d/start"
            awk -v scale=1 -f "$here/gen_sql.awk" >"$d/glibc/in"
            cp "$d/glibc/in" "$d/gm/in"
            echo "SELECT 1;" >"$d/start/in"
            local run=(sqlite3 -batch test.db) start=(sqlite3 -batch :memory:) penv=()
            ;;
    esac
    traced "$d/glibc" glibc "${penv[@]}" "${run[@]}"; rc_g=$?
    traced "$d/gm" gm "${penv[@]}" "${run[@]}"; rc_p=$?
    traced "$d/start" gm "${penv[@]}" "${start[@]}"; rc_s=$?
    g=$d/glibc/counts; p=$d/gm/counts; s=$d/start/counts
    classify "$d/glibc" >"$g"; classify "$d/gm" >"$p"; classify "$d/start" >"$s"
    table "$name" "$g" "$p" "$s"

    if [ "$rc_g" -ne 0 ]; then
        fail "$name" "the glibc run failed ($(describe_rc $rc_g)): $(tail -2 "$d/glibc/err" | tr '\n' ' ')"
        return
    fi
    if [ "$rc_p" -ne 0 ] || [ "$rc_s" -ne 0 ]; then
        fail "$name" "under the preload: $(describe_rc $rc_p) (baseline run: $(describe_rc $rc_s))"
        { crash_lines "$d/gm/err"; tail -3 "$d/gm/err"; } | sed 's/^/  | /'
        return
    fi
    cmp -s "$d/glibc/out" "$d/gm/out" || why="output differs from glibc's"
    [ "$glibc_only" = 1 ] && { pass "$name" "tables only (--glibc-only)"; return; }
    local nstats att_p att_s att_g
    nstats=$(count_stats "$d/gm/err")
    att_p=$(get "$p" attributable); att_s=$(get "$s" attributable); att_g=$(get "$g" attributable)
    [ "$nstats" -gt 0 ] || why="${why:+$why; }library not loaded (no '$STATS_MARKER' on stderr)"
    [ "$(get "$p" brk_move)" -eq 0 ] || why="${why:+$why; }$(get "$p" brk_move) brk call(s) moved the break under the preload"
    [ "$att_p" -le $((att_s + SLACK)) ] ||
        why="${why:+$why; }the churn made $att_p allocator-like map calls, the baseline run $att_s (slack $SLACK)"
    if [ "$att_g" -ge 40 ] && [ $((att_p * 4)) -gt "$att_g" ]; then
        why="${why:+$why; }allocator-like map calls did not fall sharply: $att_p vs glibc $att_g"
    fi
    if [ -n "$why" ]; then
        fail "$name" "$why"
        crash_lines "$d/gm/err" | sed 's/^/  | /'
    else
        pass "$name" "allocator-like map calls: glibc $att_g, preload $att_p, preload baseline $att_s; brk moves 0"
    fi
}

echo "# fixed map: $([ "$glibc_only" = 1 ] && echo "glibc only (--glibc-only)" || echo "glibc vs LD_PRELOAD=$LIB")"
for w in "${workloads[@]}"; do
    case $w in
        python3|sqlite3) check "$w" ;;
        *) fail "$w" "unknown workload (python3, sqlite3)" ;;
    esac
done
summary

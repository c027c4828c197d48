#!/bin/bash
# Real, unmodified Debian programs under LD_PRELOAD=LIB, compared with the same
# run on glibc's malloc (no preload).
#
# Usage: run.sh [--keep] LIB [CASE...]
#        run.sh --glibc-only [--keep] [CASE...]
#   LIB           path to libgmalloc.so
#   CASE          any of: python3 sqlite3 gcc git redis (default: all)
#   --glibc-only  run both sides on glibc (to develop the workloads without the
#                 library; the "library was loaded" checks are skipped)
#   --keep        keep the temporary directory (its path is printed)
#
# For each case: prints "PASS name" or "FAIL name: why" (details follow on
# lines starting with "  | "), and at the end "N passed, N failed". Exits
# non-zero if any case failed.
#
# A case passes when, under the preload: the program exits as it does on
# glibc (status 0, no signal), its output is identical, nothing on stderr
# looks like a crash or an allocator complaint, and the library was really
# in the process (GMALLOC_STATS=1 makes every process that exits with it print
# a block that starts with a line containing "gmalloc statistics"; for redis
# also: the library shows in /proc/PID/maps). Every command is bounded by
# timeout(1). Nothing is installed: a missing program is a FAIL naming it
# (tools/install-deps.sh installs them all).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

glibc_only=0
keep=0
LIB=""
cases=()
while [ $# -gt 0 ]; do
    case $1 in
        --glibc-only) glibc_only=1 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *)
            if [ "$glibc_only" = 0 ] && [ -z "$LIB" ]; then LIB=$1; else cases+=("$1"); fi ;;
    esac
    shift
done
if [ "$glibc_only" = 0 ]; then
    if [ -z "$LIB" ]; then
        echo "usage: run.sh LIB [CASE...]   or   run.sh --glibc-only [CASE...]" >&2
        exit 2
    fi
    if [ ! -f "$LIB" ]; then
        echo "run.sh: $LIB: no such file (build it first: ninja -C <builddir> gmalloc/libgmalloc.so)" >&2
        exit 2
    fi
    LIB=$(readlink -f "$LIB")
fi
[ ${#cases[@]} -gt 0 ] || cases=(python3 sqlite3 gcc git redis)

# The reference side must be plain glibc whatever the caller's environment.
unset LD_PRELOAD GMALLOC_STATS GMALLOC_CONF
export LC_ALL=C TZ=UTC

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gm-programs.XXXXXX")
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null
        sleep 0.5
        kill -9 "$server_pid" 2>/dev/null
    fi
    if [ "$keep" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PRE: the command prefix for a side. "glibc": plain env; "gm": env with the
# preload and the statistics report switched on. env(1) itself runs without
# the preload: it only sets it for the program it executes.
set_pre() {
    if [ "$1" = gm ] && [ "$glibc_only" = 0 ]; then
        PRE=(env LD_PRELOAD="$LIB" GMALLOC_STATS=1)
    else
        PRE=(env)
    fi
}

# step DIR SECONDS CMD... : runs CMD bounded by timeout, stdout appended to
# DIR/out, stderr to DIR/err; returns its status.
step() {
    local dir=$1 secs=$2
    shift 2
    timeout -k 10 "$secs" "$@" >>"$dir/out" 2>>"$dir/err"
}

# ---------------------------------------------------------------- the cases
# Each case_X SIDE DIR runs the workload once, leaving DIR/out (compared
# between the sides), DIR/err, and optionally DIR/why (a failure found by a
# case-specific check). Returns the workload's status.

case_python3() {
    local dir=$2
    need python3 /usr/bin/python3 || return 200
    set_pre "$1"
    step "$dir" 180 "${PRE[@]}" PYTHONMALLOC=malloc PYTHONHASHSEED=0 \
        /usr/bin/python3 -s "$here/churn.py" 1
}

case_sqlite3() {
    local dir=$2
    need sqlite3 sqlite3 || return 200
    [ -f "$tmp/work.sql" ] || awk -v scale=2 -f "$here/gen_sql.awk" >"$tmp/work.sql"
    set_pre "$1"
    (cd "$dir" && step "$dir" 180 "${PRE[@]}" sqlite3 -batch "$dir/test.db" <"$tmp/work.sql")
}

case_gcc() {
    local dir=$2 rc
    need gcc gcc objdump || return 200
    [ -f "$tmp/prog.c" ] || awk -v nfunc=300 -f "$here/gen_c.awk" >"$tmp/prog.c"
    cp "$tmp/prog.c" "$dir/prog.c"
    set_pre "$1"
    (
        cd "$dir" || exit 1
        step "$dir" 300 "${PRE[@]}" gcc -O2 -Wall -Wextra -c prog.c -o prog.o || exit
        step "$dir" 120 "${PRE[@]}" gcc -O2 prog.o -o prog || exit
        step "$dir" 60 "${PRE[@]}" ./prog || exit
        # The measuring tools run without the preload.
        echo "object $(sha256sum <prog.o)" >>out
        step "$dir" 60 objdump -d prog.o
    )
    rc=$?
    [ -s "$dir/err" ] && [ "$1" = glibc ] && echo "gcc printed diagnostics on glibc" >"$dir/why"
    return $rc
}

case_git() {
    local dir=$2
    need git git || return 200
    if [ "$1" = gm ] && [ "$glibc_only" = 0 ]; then
        GM_PRELOAD=$LIB GM_STATS=1 step "$dir" 300 "$here/git_workload.sh" "$dir/repo"
    else
        step "$dir" 300 "$here/git_workload.sh" "$dir/repo"
    fi
}

# A port on 127.0.0.1 in 16379..16399 that nobody listens on.
free_port() {
    local p
    for p in $(seq 16379 16399); do
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}

case_redis() {
    local side=$1 dir=$2 port="" rpid="" rc cli_ok
    need redis redis-server redis-cli redis-benchmark || return 200
    set_pre "$side"
    why() { echo "$*" >>"$dir/why"; }
    cli() { timeout -k 5 60 redis-cli -h 127.0.0.1 -p "$port" "$@"; }

    for _ in 1 2 3; do
        port=$(free_port) || { why "no free port on 127.0.0.1 in 16379..16399"; return 1; }
        : >"$dir/server.out"; : >"$dir/server.err"
        timeout -k 10 600 "${PRE[@]}" redis-server --bind 127.0.0.1 --port "$port" \
            --protected-mode yes --save '' --appendonly no --daemonize no \
            --dir "$dir" --logfile '' --lazyfree-lazy-user-del yes \
            >"$dir/server.out" 2>"$dir/server.err" &
        server_pid=$!
        # Ours answers: another run's server that took the port between
        # free_port and this start also answers PING (ours then dies with
        # "Address already in use"), so the answer must come from our --dir.
        for _ in $(seq 100); do
            [ "$(cli ping 2>/dev/null)" = PONG ] && break
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        if [ "$(cli ping 2>/dev/null)" = PONG ]; then
            [ "$(cli config get dir 2>/dev/null | sed -n 2p)" = "$(cd "$dir" && pwd -P)" ] && break
            # Another server: ours exits when it finds the port taken.
            for _ in $(seq 50); do
                kill -0 "$server_pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$server_pid" 2>/dev/null; then
                kill "$server_pid"; wait "$server_pid"
            else
                wait "$server_pid"
            fi
            server_pid=""
            continue
        fi
        if kill -0 "$server_pid" 2>/dev/null; then
            kill "$server_pid"; wait "$server_pid"; server_pid=""
            why "redis-server did not answer PING within 10 s"
            return 1
        fi
        wait "$server_pid"; rc=$?; server_pid=""
        grep -q "Address already in use" "$dir/server.out" "$dir/server.err" && continue
        why "redis-server died at start-up: $(describe_rc $rc): $(tail -2 "$dir/server.out" "$dir/server.err" | tr '\n' ' ')"
        return $rc
    done
    [ -n "$server_pid" ] || { why "could not start redis-server (ports busy)"; return 1; }

    rpid=$(cli info server | tr -d '\r' | sed -n 's/^process_id://p')
    echo "$rpid" >"$dir/pid"
    if [ "$side" = gm ] && [ "$glibc_only" = 0 ]; then
        grep -qF "$LIB" "/proc/$rpid/maps" 2>/dev/null ||
            why "$LIB is not mapped in redis-server (pid $rpid): /proc/$rpid/maps"
    fi

    # Load: bounded in requests and in time.
    timeout -k 5 120 redis-benchmark -h 127.0.0.1 -p "$port" -n 20000 -q \
        -t set,get,lpush,lpop,incr >"$dir/bench.raw" 2>&1
    rc=$?
    tr '\r' '\n' <"$dir/bench.raw" | grep 'requests per second' >"$dir/bench.txt"
    [ "$rc" -eq 0 ] || why "redis-benchmark: $(describe_rc $rc)"
    [ "$(wc -l <"$dir/bench.txt")" -ge 5 ] ||
        why "redis-benchmark did not finish its 5 tests: $(tail -c 300 "$dir/bench.raw" | tr '\r\n' '  ')"

    # Checked commands (the output is compared with the glibc side).
    {
        echo "counter $(cli GET counter:__rand_int__)"
        echo "key $(cli STRLEN key:__rand_int__)"
        echo "mylist $(cli EXISTS mylist)"
        cli -x SET big <"$tmp/big.txt"
        # In raw mode redis-cli prints the value and a newline.
        cli_ok=$(cli GET big | head -c -1 | cmp -s - "$tmp/big.txt" && echo same || echo DIFFERENT)
        echo "big value round trip: $cli_ok"
        cli STRLEN big
        cli APPEND big "-tail-"
        cli SETRANGE big 3000000 "XYZ"
        cli GETRANGE big 2999990 3000010
        cli GET big | sha256sum
        cli <"$tmp/redis.cmds"
        cli DBSIZE
        cli UNLINK biglist
        cli FLUSHALL ASYNC
        cli DBSIZE
        cli SET after-flush ok
        cli GET after-flush
    } >>"$dir/out" 2>>"$dir/err"
    cli INFO memory | tr -d '\r' | grep -E '^(used_memory|used_memory_rss|mem_allocator):' >"$dir/info.txt"

    cli SHUTDOWN NOSAVE >/dev/null 2>&1
    for _ in $(seq 300); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
        why "redis-server still running 30 s after SHUTDOWN"
        kill -9 "$server_pid"
    fi
    wait "$server_pid"
    rc=$?
    server_pid=""
    # The server's stderr is where the library's report goes.
    cat "$dir/server.err" >>"$dir/err"
    return $rc
}

redis_inputs() {
    [ -f "$tmp/big.txt" ] && return
    # ~8 MB of text for one value, and a batch of commands of many sizes.
    awk 'BEGIN { srand(5); for (i = 0; i < 120000; i++) printf "%06d %s %08x\n", i, substr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 1 + int(rand() * 40)), int(rand() * 2^31) }' >"$tmp/big.txt"
    awk 'BEGIN { srand(6); s = "0123456789abcdefghijklmnopqrstuvwxyz"; while (length(s) < 9000) s = s s
        for (i = 1; i <= 2000; i++) {
            printf "SET k:%d %s\n", i, substr(s, 1 + i % 30, 1 + int(rand() * (rand() < 0.1 ? 8000 : 300)))
            printf "RPUSH biglist v%d\n", i
            printf "HSET h:%d f%d %s\n", i % 40, i, substr(s, 1, 1 + i % 200)
            printf "SADD s:%d m%d\n", i % 25, i * 7
            printf "ZADD z %d m%d\n", (i * 7919) % 10007, i
            if (i % 3 == 0) printf "DEL k:%d\n", i - 1
            if (i % 5 == 0) printf "APPEND k:%d %s\n", i, substr(s, 1, 500)
        }
        print "STRLEN k:1999"; print "GET k:10"; print "LLEN biglist"; print "LRANGE biglist 100 110"
        print "HLEN h:7"; print "HGET h:7 f287"; print "SCARD s:3"; print "SISMEMBER s:3 m21"
        print "ZRANGE z 0 9 WITHSCORES"; print "ZCARD z"; print "SORT s:4 LIMIT 0 5 ALPHA"
        print "SINTERCARD 2 s:1 s:2"; print "SUNIONSTORE u s:1 s:2 s:3"; print "SCARD u"
        print "OBJECT ENCODING biglist"; print "OBJECT ENCODING h:1"; print "OBJECT ENCODING z"
    }' >"$tmp/redis.cmds"
}

# ---------------------------------------------------------------- the driver
run_case() {
    local name=$1 d g m rc_g rc_m t0 t1 t2 crash nstats extra notes
    d=$tmp/$name
    g=$d/glibc
    m=$d/gm
    mkdir -p "$g" "$m"
    : >"$g/out"; : >"$g/err"; : >"$m/out"; : >"$m/err"
    [ "$name" = redis ] && redis_inputs

    t0=$(now_ms)
    "case_$name" glibc "$g"
    rc_g=$?
    [ "$rc_g" -eq 200 ] && return  # a program is missing: reported by need
    t1=$(now_ms)
    "case_$name" gm "$m"
    rc_m=$?
    t2=$(now_ms)

    if [ "$rc_g" -ne 0 ] || [ -s "$g/why" ]; then
        fail "$name" "the reference run on glibc failed ($(describe_rc $rc_g)); the test itself is broken here"
        { cat "$g/why" 2>/dev/null; tail -5 "$g/err"; } | sed 's/^/  | /'
        return
    fi
    crash=$(crash_lines "$m/err")
    if [ "$rc_m" -ne 0 ]; then
        fail "$name" "under the preload: $(describe_rc $rc_m) (glibc: 0)"
        { cat "$m/why" 2>/dev/null; [ -n "$crash" ] && echo "$crash"; tail -5 "$m/err"; } | sed 's/^/  | /'
        return
    fi
    if [ -s "$m/why" ]; then
        fail "$name" "$(head -1 "$m/why")"
        tail -n +2 "$m/why" | sed 's/^/  | /'
        return
    fi
    if ! cmp -s "$g/out" "$m/out"; then
        fail "$name" "output differs from glibc's ($(wc -l <"$g/out") vs $(wc -l <"$m/out") lines)"
        diff "$g/out" "$m/out" | head -12 | cut -c1-200 | sed 's/^/  | /'
        return
    fi
    if [ -n "$crash" ]; then
        fail "$name" "stderr under the preload reports a crash or allocator error"
        echo "$crash" | sed 's/^/  | /'
        return
    fi
    nstats=$(count_stats "$m/err")
    if [ "$glibc_only" = 0 ] && [ "$nstats" -eq 0 ]; then
        fail "$name" "library not loaded: no '$STATS_MARKER' report on stderr (GMALLOC_STATS=1)"
        tail -5 "$m/err" | sed 's/^/  | /'
        return
    fi
    extra=$(awk -v a=$((t1 - t0)) -v b=$((t2 - t1)) 'BEGIN { printf "glibc %.1f s, preload %.1f s", a / 1000, b / 1000 }')
    if [ "$glibc_only" = 0 ]; then
        extra="$extra, $nstats process(es) reported statistics"
        notes=$(stats_notes "$m/err")
        [ -n "$notes" ] && extra="$extra; note: $notes"
    fi
    pass "$name" "$extra"
}

echo "# real programs: $([ "$glibc_only" = 1 ] && echo "glibc vs glibc (--glibc-only)" || echo "glibc vs LD_PRELOAD=$LIB")"
for c in "${cases[@]}"; do
    case $c in
        python3|sqlite3|gcc|git|redis) run_case "$c" ;;
        *) fail "$c" "unknown case (cases: python3 sqlite3 gcc git redis)" ;;
    esac
done
summary

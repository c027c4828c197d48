#!/bin/sh
# mbctl against a real membrokerd: `hold`, `hold --reserve`, `hold --give-back`,
# `query` and `status --json` (checked with python3's json module).
#   test_mbctl.sh MEMBROKERD MBCTL
# Waits are for events (a line in a file, a socket answering), bounded at
# 20 s as "something is wrong", never a performance threshold.
set -eu
# A cross build runs its binaries through MESON_EXE_WRAPPER (qemu-i386).
wrap=${MESON_EXE_WRAPPER:-}
daemon_bin=$1
mbctl_bin=$2
# (unquoted $wrap below: the wrapper may be several words; background
# processes are started directly so that $! is their pid)
# shellcheck disable=SC2086
mbctl() { $wrap "$mbctl_bin" "$@"; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/mbctl-test.XXXXXX")
sock=$dir/mb.sock
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; [ -f "$dir/d.log" ] && cat "$dir/d.log" >&2; exit 1; }

# wait_for CMD...: retries CMD every 20 ms, up to 20 s
wait_for() {
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 1000 ] || fail "timed out waiting for: $*"
        sleep 0.02
    done
}

json() { # json FILE EXPR: prints a python expression over the document `d`
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

$wrap "$daemon_bin" --socket "$sock" --pool 1M --giveback-timeout 5000 2>"$dir/d.log" &
dpid=$!
pids="$dpid"
wait_for mbctl --socket "$sock" query

MEMBROKER_SOCKET=$sock mbctl query --json >"$dir/q.json"
page=$(json "$dir/q.json" 'd["page_size"]')
pool=$(json "$dir/q.json" 'd["pool_pages"]')
[ "$pool" -eq $((1048576 / page)) ] || fail "pool $pool pages"
[ "$(json "$dir/q.json" 'd["free_pages"]')" -eq "$pool" ] || fail "free != pool"

# hold a quarter of the pool
quarter=$((pool / 4))
$wrap "$mbctl_bin" --socket "$sock" hold "${quarter}p" >"$dir/h1.out" &
h1=$!
pids="$pids $h1"
wait_for grep -q "^held $quarter pages" "$dir/h1.out"

mbctl --socket "$sock" status --json >"$dir/s.json"
python3 - "$dir/s.json" "$pool" "$quarter" "$h1" "$wrap" <<'PY' || fail "status --json: $(cat "$dir/s.json")"
import json, sys
d = json.load(open(sys.argv[1]))
pool, quarter, pid = map(int, sys.argv[2:5])
assert d["pool_pages"] == pool and d["free_pages"] == pool - quarter, d
assert d["page_size"] > 0 and d["capacity"] == 256, d
assert len(d["clients"]) == 1, d
c = d["clients"][0]
assert c["pid"] == pid and c["kind"] == "simple", c
# through an emulator (cross build) the command is the emulator's
assert c["command"] == "mbctl" or sys.argv[5] != "", c
assert c["held_pages"] == quarter and c["outstanding_requests"] == 0, c
assert c["waiting_pages"] == 0 and c["giveback_pending"] is False, c
PY
mbctl --socket "$sock" status | grep -q " simple .* $quarter " || fail "status text"

# a bidirectional holder takes the rest (AMOUNT in bytes, rounded up to pages)
rest=$((pool - quarter))
$wrap "$mbctl_bin" --socket "$sock" hold --give-back $((rest * page - 1)) >"$dir/h2.out" &
h2=$!
pids="$pids $h2"
wait_for grep -q "^held $rest pages" "$dir/h2.out"

# nothing free: a RESERVE that does not wait fails
if mbctl --socket "$sock" hold --reserve 1p >"$dir/h3.out" 2>&1; then
    fail "reserve succeeded with an empty pool"
fi
grep -q "Resource temporarily unavailable" "$dir/h3.out" || fail "reserve error: $(cat "$dir/h3.out")"

# a waiting RESERVE succeeds through the bidirectional holder's give-back
$wrap "$mbctl_bin" --socket "$sock" hold --reserve --timeout 10000 2p >"$dir/h4.out" &
h4=$!
pids="$pids $h4"
wait_for grep -q "^held 2 pages" "$dir/h4.out"
wait_for grep -q "^gave back 2 pages (urgent)" "$dir/h2.out"
mbctl --socket "$sock" status --json >"$dir/s2.json"
python3 - "$dir/s2.json" "$pool" <<'PY' || fail "status --json: $(cat "$dir/s2.json")"
import json, sys
d = json.load(open(sys.argv[1]))
pool = int(sys.argv[2])
assert d["free_pages"] == 0, d
assert sorted(c["kind"] for c in d["clients"]) == ["bidirectional", "simple", "simple"], d
assert sum(c["held_pages"] for c in d["clients"]) == pool, d
PY

# stopping the holders returns everything
kill -TERM "$h1" "$h2" "$h4"
wait "$h1" "$h2" "$h4" || fail "mbctl hold did not exit 0 on SIGTERM"
grep -q "^released $quarter pages" "$dir/h1.out" || fail "h1 release"
free_is_pool() {
    mbctl --socket "$sock" query --json >"$dir/q2.json" &&
        [ "$(json "$dir/q2.json" 'd["free_pages"]')" -eq "$pool" ]
}
wait_for free_is_pool

# bad usage
if mbctl --socket "$sock" hold 12X >/dev/null 2>&1; then fail "bad AMOUNT accepted"; fi
if mbctl --socket "$dir/none.sock" status >/dev/null 2>&1; then fail "status without a daemon"; fi

kill -TERM "$dpid"
wait "$dpid" || fail "membrokerd did not exit 0 on SIGTERM"
[ ! -e "$sock" ] || fail "socket left behind"
echo "ok"

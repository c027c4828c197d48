# Helpers shared by run.sh and fixed_map.sh (sourced, not run).
# shellcheck shell=bash

# The line the library prints first in its GMALLOC_STATS=1 report at exit.
STATS_MARKER='gmalloc statistics'
# stderr lines that mean a process crashed or the allocator complained,
# whatever the exit code says.
CRASH_RE='Segmentation fault|Aborted|Bus error|Illegal instruction|core dumped|internal compiler error|died of signal|killed by signal|terminated by signal|double free|free\(\): invalid|corrupted (size|double|top)|malloc\(\): |realloc\(\): invalid|munmap_chunk|^gmalloc: |gmalloc: .*(corrupt|invalid|bad pointer|double|not allocated by)'

npass=0
nfail=0
pass() { echo "PASS $1${2:+ ($2)}"; npass=$((npass + 1)); }
fail() { echo "FAIL $1: $2"; nfail=$((nfail + 1)); }
summary() {
    echo "$npass passed, $nfail failed"
    [ "$nfail" -eq 0 ]
}

# need NAME PROG... : fails case NAME (and returns 1) if a program is missing.
need() {
    local name=$1 p missing=""
    shift
    for p in "$@"; do
        command -v "$p" >/dev/null 2>&1 || [ -x "$p" ] || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        fail "$name" "missing program(s):$missing (install them with tools/install-deps.sh)"
        return 1
    fi
}

# describe_rc RC: human text for an exit status as returned through timeout(1).
describe_rc() {
    local rc=$1
    if [ "$rc" -eq 124 ]; then
        echo "timed out"
    elif [ "$rc" -gt 128 ]; then
        echo "killed by signal $((rc - 128)) (SIG$(kill -l $((rc - 128)) 2>/dev/null || echo '?'))"
    else
        echo "exit status $rc"
    fi
}

# count_stats FILE: number of statistics blocks (one per process that exited
# with the library loaded and GMALLOC_STATS=1).
count_stats() { grep -c -- "$STATS_MARKER" "$1" 2>/dev/null || true; }

# crash_lines FILE: the lines of FILE that look like a crash report.
crash_lines() { grep -E -- "$CRASH_RE" "$1" 2>/dev/null | head -5 || true; }

# stats_notes FILE: the counters of the statistics blocks in FILE that should
# stay at zero, summed over all processes, as "name N, ..." (empty if all 0).
stats_notes() {
    awk -F: '/failed allocations/ { f += $NF } /bad pointers seen/ { b += $NF }
             /map calls after init/ { m += $NF }
             END { s = ""; if (f) s = s ", failed allocations " f; if (b) s = s ", bad pointers seen " b
                   if (m) s = s ", map calls after init " m; print substr(s, 3) }' "$1" 2>/dev/null
}

# now_ms: wall clock in milliseconds.
now_ms() { date +%s%3N; }

#!/bin/bash
# CPython's own regression tests with every Python object allocated by
# libgmalloc.so: LD_PRELOAD=LIB PYTHONMALLOC=malloc python3 -m test. The
# modules chosen work the allocator hard and do not depend on the network
# or on timing: containers and strings (millions of small objects, resized
# in place), pickling, the cycle collector and weak references, mmap,
# tracemalloc, and threads, fork and subprocess (the caches across fork,
# exit and exec).
#
# Usage: python_regrtest.sh LIB
# Needs Debian's libpython3.X-testsuite for /usr/bin/python3's version
# (tools/install-deps.sh installs it); missing, the test fails naming it.
# Passes when every module passes under the preload. When one fails, the
# failing modules run again on glibc, so that the report tells a failure of
# ours from one of the machine.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

if [ $# -ne 1 ] || [ ! -f "$1" ]; then
    echo "usage: python_regrtest.sh LIB   (LIB: a built libgmalloc.so)" >&2
    exit 2
fi
LIB=$(readlink -f "$1")
unset LD_PRELOAD GMALLOC_STATS GMALLOC_CONF
export LC_ALL=C.UTF-8 TZ=UTC

modules=(test_dict test_list test_set test_bytes test_unicode test_json test_re
    test_pickle test_array test_collections test_heapq test_deque test_sort
    test_struct test_decimal test_itertools test_functools test_weakref test_gc
    test_memoryview test_mmap test_zlib test_tracemalloc test_thread test_fork1
    test_threading test_queue test_subprocess)

py=/usr/bin/python3
need python-regrtest "$py" || { summary; exit; }
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if ! "$py" -c 'import test.test_dict' 2>/dev/null; then
    fail python-regrtest "CPython's tests are not installed (libpython$ver-testsuite; tools/install-deps.sh installs it)"
    summary
    exit
fi

# The preload must really be in the interpreter (and so in every worker,
# which inherits the environment).
if ! LD_PRELOAD=$LIB PYTHONMALLOC=malloc "$py" -c \
    'import sys; sys.exit("libgmalloc" not in open("/proc/self/maps").read())'; then
    fail python-regrtest "libgmalloc.so is not in the interpreter's memory map under LD_PRELOAD"
    summary
    exit
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gm-regrtest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# run SIDE MODULE...: the modules on 2 workers; SIDE gm adds the preload.
run() {
    local side=$1
    shift
    local pre=(env)
    [ "$side" = gm ] && pre=(env LD_PRELOAD="$LIB")
    (cd "$tmp" && timeout -k 10 900 "${pre[@]}" PYTHONMALLOC=malloc "$py" -m test -j2 \
        --timeout 300 "$@" >"$tmp/$side.log" 2>&1)
}

# failed LOG: the modules the run in LOG did not pass.
failed() {
    sed -n 's/.*\] \(test_[a-z0-9_]*\) \(failed\|crashed\|timed out\).*/\1/p' "$1" | sort -u
}

start=$(now_ms)
run gm "${modules[@]}"
rc=$?
secs=$((($(now_ms) - start) / 1000))
if [ $rc -eq 0 ] && grep -q 'Tests result: SUCCESS' "$tmp/gm.log"; then
    pass python-regrtest "${#modules[@]} modules of Python $ver, ${secs}s"
else
    mapfile -t bad < <(failed "$tmp/gm.log")
    why="$(describe_rc $rc); failed: ${bad[*]:-none named}"
    if [ ${#bad[@]} -gt 0 ]; then
        if run glibc "${bad[@]}"; then
            why="$why (they pass on glibc)"
        else
            why="$why (on glibc too: $(failed "$tmp/glibc.log" | tr '\n' ' '))"
        fi
    fi
    fail python-regrtest "$why"
    grep -E -- "$CRASH_RE|^(FAIL|ERROR):" "$tmp/gm.log" | head -20 | sed 's/^/  | /'
    tail -15 "$tmp/gm.log" | sed 's/^/  | /'
fi
summary

#!/bin/sh
# Installs the Debian packages the project needs to build and test, when missing.
#   tools/install-deps.sh          build, unit tests, real-program tests, 32-bit build
#   tools/install-deps.sh --bench  also the benchmark peers and tools
set -eu

pkgs="build-essential meson ninja-build pkg-config libcmocka-dev gcc-multilib
libcmocka-dev:i386 qemu-user valgrind strace time procps
python3 sqlite3 git redis-server redis-tools binutils libunwind-dev
libfuse3-dev fuse3"
if [ "${1:-}" = "--bench" ]; then
    pkgs="$pkgs libbenchmark-dev g++ gnuplot-nox libjemalloc2 libmimalloc2.0
libtcmalloc-minimal4"
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
updated=0

# apt_install PKG...: those of the packages that are not installed yet.
apt_install() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "install-deps: installing:$missing" >&2
    # The 32-bit build links the i386 cmocka.
    dpkg --print-foreign-architectures | grep -qx i386 || $SUDO dpkg --add-architecture i386
    if [ "$updated" = 0 ]; then
        # A mirror caught mid-sync fails one index; the others are still usable.
        $SUDO apt-get update -qq || echo "install-deps: apt-get update reported errors; going on" >&2
        updated=1
    fi
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# shellcheck disable=SC2086
apt_install $pkgs
# CPython's own tests (tests/programs/python_regrtest.sh), packaged per
# version: named after the python3 just installed.
apt_install "libpython$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')-testsuite"

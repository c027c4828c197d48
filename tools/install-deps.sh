#!/bin/sh
# Installs the Debian packages the project needs to build and test, if missing.
# Usage: tools/install-deps.sh [--bench]
set -eu

pkgs="build-essential meson ninja-build pkg-config libcmocka-dev gcc-multilib
valgrind strace python3 sqlite3 git redis-server redis-tools procps"

missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null

#!/bin/sh
# libmbclient runs inside allocators: it must not call anything that may
# allocate or start a thread. This checks the symbols it imports (shared
# library) and that its objects reference (static archive) against a list
# of such functions. test_mb_noalloc checks the same at run time.
#   test_mbclient_symbols.sh libmbclient.so libmbclient.a
set -eu
forbidden='^(malloc|calloc|realloc|reallocarray|free|memalign|posix_memalign|aligned_alloc|valloc|pvalloc|strdup|strndup|asprintf|vasprintf|printf|fprintf|vfprintf|sprintf|snprintf|vsnprintf|puts|fputs|fopen|fdopen|fclose|perror|strerror|setenv|putenv|pthread_create|pthread_atfork|pthread_key_create|getpwnam|getgrnam|syslog|openlog|dlopen|dlsym|qsort|atexit|abort|exit)(@.*)?$'
status=0
for lib in "$@"; do
    syms=$(nm -u "$lib" 2>/dev/null | awk '{print $NF}' | sort -u)
    [ -n "$syms" ] || { echo "FAIL: no undefined symbols read from $lib" >&2; exit 1; }
    bad=$(printf '%s\n' "$syms" | grep -E "$forbidden" || true)
    if [ -n "$bad" ]; then
        echo "FAIL: $lib uses:" $bad >&2
        status=1
    fi
done
[ $status -eq 0 ] && echo "ok: no allocating or thread-starting calls"
exit $status

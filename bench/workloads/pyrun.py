"""Runs a Python script as __main__ (argv: SCRIPT ARGS...), then drops
everything it made and reports RSS on stderr, for bench/run:

    BENCH VmRSS_after_drop_kB <n>
    BENCH VmHWM_kB <n>

The script's stdout is untouched (bench/run compares it between allocators).
"""
import gc
import runpy
import sys

path = sys.argv[1]
sys.argv = sys.argv[1:]
g = runpy.run_path(path, run_name="__main__")
g.clear()
del g
gc.collect()
sys.stdout.flush()
with open("/proc/self/status") as f:
    for line in f:
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            name = "VmRSS_after_drop_kB" if k == "VmRSS" else "VmHWM_kB"
            print("BENCH", name, v.split()[0], file=sys.stderr)

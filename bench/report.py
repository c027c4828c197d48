#!/usr/bin/env python3
"""Turns bench/run's raw records into tables, plots and target verdicts.

    report.py micro FILE.json
        Google Benchmark JSON -> RESULT lines (Mops/s per case).
    report.py summarize --dir DIR --mode full|quick [--readme README.md]
        Reads DIR/meta.tsv and DIR/raw.tsv; writes DIR/results.md (machine,
        commit, targets, tables, notes), the PNG plots in DIR (with gnuplot,
        when installed), and, with --readme, replaces the part of README.md
        between the "results:begin" and "results:end" markers.

Statistics: for each benchmark, metric and allocator, the median over the
rounds and the min-max spread; the ratio is this allocator's median divided
by glibc's median from the same run. Standard library only.
"""
import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import OrderedDict, defaultdict

ALLOC_ORDER = ["glibc", "jemalloc", "mimalloc", "tcmalloc", "gmalloc", "gmalloc-bg", "gmalloc-rt"]
PEERS = ["jemalloc", "mimalloc", "tcmalloc"]
OURS = "gmalloc"
OURS_RT = "gmalloc-rt"
OURS_BG = "gmalloc-bg"
HIGHER_IS_BETTER = {"Mops/s", "ops/s"}
# Figures that describe the workload rather than the allocator: no ratio.
INFO_METRICS = {"allocated", "objects", "live after freeing 90%", "churn ops", "churn time (under strace)",
                "small objects (16-256 B): count"}
PURGE_CEILING_MIB = 4.0  # gmalloc's default PAGE_CEILING: 1024 pages of 4 KiB

BENCH_TITLES = OrderedDict([
    ("micro", "Micro benchmarks (Google Benchmark), million malloc+free pairs per second (realloc: reallocs)"),
    ("memory", "Memory: mixed sizes allocated and written, 90% freed in random order (RSS growth = RSS minus the RSS before)"),
    ("latency", "Latency of a SCHED_FIFO thread waking every 1 ms (quiet and churn windows alternating in one run: 2 churn threads)"),
    ("mapcalls", "Memory-map system calls during churn after init (strace -f)"),
    ("python3", "python3 (PYTHONMALLOC=malloc) on tests/programs/churn.py"),
    ("sqlite3", "sqlite3 on tests/programs/gen_sql.awk's workload"),
    ("gcc", "gcc -O2 on tests/programs/gen_c.awk's program"),
    ("redis", "redis-server under redis-benchmark (7 tests, 20 clients, 128-byte values)"),
])


# ------------------------------------------------------------------ micro
def micro(path):
    with open(path) as f:
        data = json.load(f)
    for b in data.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
            continue
        ips = b.get("items_per_second")
        if ips is None:
            continue
        print("RESULT\t%s\t%.6g\tMops/s" % (b["name"], ips / 1e6))
    return 0


# ------------------------------------------------------------------ reading
def read_meta(d):
    meta = []
    with open(os.path.join(d, "meta.tsv")) as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" in line:
                k, v = line.split("\t", 1)
                meta.append((k, v))
    return meta


def read_raw(d):
    """{(bench, metric): {alloc: [values]}}, units, ordered keys, allocators."""
    vals = OrderedDict()
    units = {}
    allocs = []
    with open(os.path.join(d, "raw.tsv")) as f:
        next(f, None)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 6:
                continue
            _rnd, alloc, bench, metric, value, unit = parts
            try:
                v = float(value)
            except ValueError:
                continue
            key = (bench, metric)
            vals.setdefault(key, defaultdict(list))[alloc].append(v)
            units[key] = unit
            if alloc not in allocs:
                allocs.append(alloc)
    allocs.sort(key=lambda a: ALLOC_ORDER.index(a) if a in ALLOC_ORDER else 99)
    return vals, units, allocs


def med(vals, key, alloc):
    v = vals.get(key, {}).get(alloc)
    return statistics.median(v) if v else None


# ------------------------------------------------------------------ formatting
def num(x):
    if x is None:
        return "–"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return "%.0f" % x
    if a >= 100:
        return "%.0f" % x
    if a >= 10:
        return "%.1f" % x
    if a >= 1:
        return "%.2f" % x
    return "%.3g" % x


def cell(vals, key, alloc, show_spread, ratio=True):
    v = vals.get(key, {}).get(alloc)
    if not v:
        return "–"
    m = statistics.median(v)
    s = num(m)
    if show_spread and len(v) > 1:
        s += " [%s–%s]" % (num(min(v)), num(max(v)))
    g = med(vals, key, "glibc")
    if ratio and alloc != "glibc" and g not in (None, 0) and m is not None:
        r = m / g
        s += " **%s×**" % ("%.2f" % r if r < 100 else "%.0f" % r)
    return s


def table(vals, units, allocs, keys, show_spread, label):
    out = ["| %s | unit | %s |" % (label, " | ".join(allocs)),
           "|---|---|" + "---|" * len(allocs)]
    for key in keys:
        unit = units[key]
        info = key[1] in INFO_METRICS
        better = "workload" if info else ("higher" if unit in HIGHER_IS_BETTER else "lower") + " better"
        out.append("| %s | %s (%s) | %s |" % (
            key[1], unit, better, " | ".join(cell(vals, key, a, show_spread, ratio=not info) for a in allocs)))
    return out


def flat_table(vals, allocs, what, show_spread):
    sizes = []
    for (bench, metric) in vals:
        m = re.match(r"%s @ (\d+) MiB$" % re.escape(what), metric)
        if bench == "flat" and m and int(m.group(1)) not in sizes:
            sizes.append(int(m.group(1)))
    out = ["| live heap | %s |" % " | ".join(allocs), "|---|" + "---|" * len(allocs)]
    for s in sizes:
        key = ("flat", "%s @ %d MiB" % (what, s))
        out.append("| %s | %s |" % (
            "%d MiB" % s if s < 1024 else "%d GiB" % (s // 1024),
            " | ".join(cell(vals, key, a, show_spread, ratio=False) for a in allocs)))
    return out, sizes


# ------------------------------------------------------------------ targets
def targets(vals, allocs):
    """[(number, text, verdict)] for the issue's targets 1-6."""
    res = []

    def m(bench, metric, alloc):
        return med(vals, (bench, metric), alloc)

    def verdict(ok):
        return "unknown (not measured)" if ok is None else ("**met**" if ok else "**not met**")

    def best_peer(bench, metric):
        best = None
        for p in PEERS:
            v = m(bench, metric, p)
            if v is not None and (best is None or v > best[1]):
                best = (p, v)
        return best

    # 1. Throughput.
    parts, oks = [], []
    for name, metric in [("random 16 B–1 KiB", "BM_Random_16_1K"), ("random 1–64 KiB", "BM_Random_1K_64K"),
                         ("producer/consumer", "BM_ProducerConsumer/real_time")]:
        ours, bp, g = m("micro", metric, OURS), best_peer("micro", metric), m("micro", metric, "glibc")
        if ours is None or bp is None:
            oks.append(None)
            continue
        oks.append(ours >= bp[1])
        parts.append("%s: gmalloc %s Mops/s%s vs best peer %s %s" % (
            name, num(ours), " (%.2f× glibc)" % (ours / g) if g else "", bp[0], num(bp[1])))
    ok = None if None in oks or not oks else all(oks)
    res.append((1, "Throughput ≥ best peer (single-thread random sizes, producer/consumer): " + "; ".join(parts), verdict(ok)))

    # 2. Scaling.
    one = m("micro", "BM_ThreadLocal/real_time/threads:1", OURS)
    two = m("micro", "BM_ThreadLocal/real_time/threads:2", OURS)
    if one and two is not None:
        # The others' scaling in the same run: on a shared machine a busy
        # neighbour caps every allocator's, which this tells apart.
        others = []
        for a in ["glibc"] + PEERS:
            o1 = m("micro", "BM_ThreadLocal/real_time/threads:1", a)
            o2 = m("micro", "BM_ThreadLocal/real_time/threads:2", a)
            if o1 and o2 is not None:
                others.append("%s %.2f×" % (a, o2 / o1))
        res.append((2, "2 threads ≥ 1.8× one thread (thread-local churn): gmalloc %.2f× (%s vs %s Mops/s)%s" % (
            two / one, num(two), num(one), "; in the same run " + ", ".join(others) if others else ""),
            verdict(two / one >= 1.8)))
    else:
        res.append((2, "2 threads ≥ 1.8× one thread", verdict(None)))

    # 3. Real programs.
    parts, oks = [], []
    for prog, tmetric, rmetric, limit in [("python3", "wall time", "peak RSS", 0.65),
                                          ("sqlite3", "wall time", "peak RSS", 1.0),
                                          ("gcc", "compile wall time", "compile peak RSS", 1.0)]:
        t, tg = m(prog, tmetric, OURS), m(prog, tmetric, "glibc")
        p, pg = m(prog, rmetric, OURS), m(prog, rmetric, "glibc")
        if None in (t, tg, p, pg) or not tg or not pg:
            oks.append(None)
            continue
        oks += [t / tg <= limit, p / pg <= 1.0]
        parts.append("%s time %.2f× (≤ %.2f), peak RSS %.2f× (≤ 1)" % (prog, t / tg, limit, p / pg))
    ok = None if None in oks or not oks else all(oks)
    res.append((3, "Real programs vs glibc: " + "; ".join(parts), verdict(ok)))

    # 4. Memory. "After freeing everything, within 2 MB of the starting RSS"
    # has no time attached: the lowest of the free-all rows (at once, after
    # the idle time, after one more call, 100 ms after it) is judged, for the
    # default configuration; the opt-in background purger (gmalloc-bg) is
    # reported beside it and does not count.
    live = m("memory", "live after freeing 90%", OURS)
    now = m("memory", "RSS growth / live, at once", OURS)
    idle = m("memory", "RSS growth / live, after idle", OURS)
    end_rows = ["RSS above start, all freed, at once", "RSS above start, all freed, after idle",
                "RSS above start, all freed, after idle + 1 call",
                "RSS above start, all freed, 100 ms after that call"]
    ends = [m("memory", r, OURS) for r in end_rows]
    ends_bg = [m("memory", r, OURS_BG) for r in end_rows]
    if None not in (live, now, idle, ends[0]) and live:
        bound = 2.0 + PURGE_CEILING_MIB / live
        peers = ", ".join("%s %s×" % (p, num(m("memory", "RSS growth / live, after idle", p)))
                          for p in ["glibc"] + PEERS if m("memory", "RSS growth / live, after idle", p) is not None)
        ok_live = now <= bound and idle <= bound
        best = min(e for e in ends if e is not None)
        ok_end = best <= 2.0
        def row(vals):
            return " / ".join("–" if v is None else "%+.1f" % v for v in vals)
        bg = "" if ends_bg[0] is None else "; gmalloc-bg (opt-in background purger) %s MiB" % row(ends_bg)
        text = ("RSS growth / live ≤ 2 + ceiling/live (= %.2f): gmalloc %.2f× at once, %.2f× after 1 s idle "
                "(%s); all freed, at once / after idle / after idle + 1 call / 100 ms later: %s MiB "
                "(lowest ≤ 2 MiB)%s" % (bound, now, idle, peers, row(ends), bg))
        part = ok_live and not ok_end
        res.append((4, text, "**part** (RSS/live met; free-all not by default)" if part
                    else verdict(ok_live and ok_end)))
    else:
        res.append((4, "Memory follows live data", verdict(None)))

    # 5. Map calls.
    names = ["mmap", "munmap", "mremap", "mprotect", "brk"]
    ours = [m("mapcalls", n + " calls", OURS) for n in names]
    mad, mad_je = m("mapcalls", "madvise calls", OURS), m("mapcalls", "madvise calls", "jemalloc")
    if None not in ours and mad is not None:
        ok = sum(ours) == 0 and (mad_je is None or mad < mad_je)
        res.append((5, "Zero mmap/munmap/mremap/mprotect/brk during churn: gmalloc %d; madvise %d vs jemalloc's %s" % (
            sum(ours), mad, num(mad_je)), verdict(ok if mad_je is not None else None)))
    else:
        res.append((5, "Map calls", verdict(None)))

    # 6. Real-time mode.
    sizes = sorted({int(re.match(r"worst malloc @ (\d+) MiB", k[1]).group(1)) for k in vals
                    if k[0] == "flat" and re.match(r"worst malloc @ (\d+) MiB", k[1])})
    who = OURS_RT if OURS_RT in allocs else OURS
    parts, oks = [], []
    if sizes:
        for op in ["malloc", "free"]:
            w = [m("flat", "worst %s @ %d MiB" % (op, s), who) for s in sizes]
            if None in w:
                oks.append(None)
                continue
            small = max(w[: max(1, len(w) // 3)])
            big = max(w[len(w) // 3:])
            oks.append(big <= 2.0 * small + 10.0)
            parts.append("worst %s %s µs at %d MiB → %s µs at %d MiB (max %s µs over the larger third)" % (
                op, num(w[0]), sizes[0], num(w[-1]), sizes[-1], num(big)))
    q = m("latency", "quiet: lateness p99.9", who)
    c = m("latency", "churn: lateness p99.9", who)
    if q is not None and c is not None and q > 0:
        oks.append(c <= 1.10 * q)
        parts.append("SCHED_FIFO p99.9 lateness %s µs under churn vs %s µs quiet (%.2f×, met if ≤ 1.10×)" % (
            num(c), num(q), c / q))
    ok = None if None in oks or not oks else all(oks)
    res.append((6, "Real-time mode (%s): flat worst case as the heap grows (met if the worst over the larger "
                   "heaps ≤ 2× the worst over the smaller + 10 µs): " % who + "; ".join(parts), verdict(ok)))
    return res


# ------------------------------------------------------------------ plots
def ccdf_points(path):
    with open(path) as f:
        xs = sorted(float(x) for x in f if x.strip())
    n = len(xs)
    pts = []
    if not n:
        return pts
    # Fraction of wake-ups later than x, at ~300 points spread over the ranks
    # and every one of the last 50 (the tail).
    idx = sorted(set([int(i * (n - 1) / 300) for i in range(301)] + list(range(max(0, n - 50), n))))
    for i in idx:
        pts.append((max(xs[i], 0.1), (n - i) / n))
    return pts


def plots(d, vals, allocs):
    made = []
    gp = shutil.which("gnuplot")
    # Latency samples -> CCDF files (the raw samples are not kept).
    for mode in ["quiet", "churn"]:
        for a in allocs:
            src = os.path.join(d, "lat-%s-%s.txt" % (mode, a))
            if os.path.exists(src):
                with open(os.path.join(d, "lat-%s-%s.dat" % (mode, a)), "w") as f:
                    f.write("# lateness_us fraction_of_wakeups_at_least_this_late\n")
                    for x, y in ccdf_points(src):
                        f.write("%.3f %.6g\n" % (x, y))
                os.remove(src)
    # Flat: medians per heap size.
    sizes = sorted({int(re.match(r"worst malloc @ (\d+) MiB", k[1]).group(1)) for k in vals
                    if k[0] == "flat" and re.match(r"worst malloc @ (\d+) MiB", k[1])})
    if sizes:
        for a in allocs:
            with open(os.path.join(d, "flat-%s.dat" % a), "w") as f:
                f.write("# heap_mib worst_malloc_us worst_free_us p999_malloc_us p999_free_us (medians)\n")
                for s in sizes:
                    row = [med(vals, ("flat", "%s @ %d MiB" % (w, s)), a)
                           for w in ["worst malloc", "worst free", "p99.9 malloc", "p99.9 free"]]
                    if None not in row:
                        f.write("%d %s\n" % (s, " ".join("%.3f" % v for v in row)))
    if not gp:
        print("report: gnuplot not installed; no plots", file=sys.stderr)
        return made

    def run(script, png):
        with tempfile.NamedTemporaryFile("w", suffix=".gp", delete=False) as f:
            f.write(script)
            name = f.name
        try:
            r = subprocess.run([gp, name], cwd=d, capture_output=True, text=True, timeout=120)
            if r.returncode != 0 or not os.path.exists(os.path.join(d, png)):
                print("report: gnuplot failed for %s: %s" % (png, r.stderr.strip()[-300:]), file=sys.stderr)
            else:
                made.append(png)
        finally:
            os.unlink(name)

    def series(fmt, using, only=None):
        parts = []
        for a in allocs:
            if only and a not in only:
                continue
            f = fmt % a
            if os.path.exists(os.path.join(d, f)) and os.path.getsize(os.path.join(d, f)) > 0:
                parts.append("'%s' using %s with lines lw 2 title '%s'" % (f, using, a))
        return ", ".join(parts)

    head = "set terminal pngcairo size 1100,%d font ',10'\nset output '%s'\nset grid\nset key outside right\n"
    s = series("rss-%s.dat", "($1/1000):2")
    if s:
        run(head % (550, "rss.png") +
            "set title 'RSS over time: allocate 200 MiB mixed, free 90%, idle 1 s, 1 call, free all, idle 1 s, 1 call'\n"
            "set xlabel 'seconds'\nset ylabel 'RSS (MiB)'\nplot " + s + "\n", "rss.png")
    q, c = series("lat-quiet-%s.dat", "1:2"), series("lat-churn-%s.dat", "1:2")
    if q and c:
        run(head % (950, "latency.png") +
            "set multiplot layout 2,1\nset logscale xy\nset format y '10^{%L}'\n"
            "set xlabel 'lateness of the 1 ms wake-up (µs)'\nset ylabel 'fraction of wake-ups at least this late'\n"
            "set title 'SCHED\\_FIFO thread, quiet windows (the churn threads wait)'\nplot " + q + "\n"
            "set title 'SCHED\\_FIFO thread, churn windows (2 threads churning 64 KiB-4 MiB blocks)'\nplot " + c + "\n"
            "unset multiplot\n", "latency.png")
    w1, w2 = series("flat-%s.dat", "1:2"), series("flat-%s.dat", "1:3")
    if w1 and w2:
        run(head % (950, "flat.png") +
            "set multiplot layout 2,1\nset logscale xy 2\nset logscale y 10\nset xlabel 'live heap (MiB)'\n"
            "set ylabel 'µs (median of the rounds)'\n"
            "set title 'worst single malloc at each heap size'\nplot " + w1 + "\n"
            "set title 'worst single free at each heap size'\nplot " + w2 + "\nunset multiplot\n", "flat.png")
    return made


# ------------------------------------------------------------------ summarize
def summarize(args):
    d = args.dir
    meta = read_meta(d)
    vals, units, allocs = read_raw(d)
    rounds = max((len(v) for per in vals.values() for v in per.values()), default=0)
    spread = rounds > 1
    made = plots(d, vals, allocs)
    mget = lambda k: [v for kk, v in meta if kk == k]

    def render(base):
        lines = []
        lines.append("Machine: **%s**, %s CPUs (nproc), %s, %s RAM, THP `%s`; load average %s at the start, %s at the end." % (
            (mget("cpu") or ["?"])[0], (mget("nproc") or ["?"])[0], (mget("kernel") or ["?"])[0],
            (mget("memory") or ["?"])[0], (mget("thp") or ["?"])[0], (mget("load_at_start") or ["?"])[0],
            (mget("load_at_end") or ["?"])[0]))
        lines.append("")
        lines.append("Commit `%s`; %s." % ((mget("commit") or ["?"])[0], (mget("uncommitted") or ["?"])[0]))
        lines.append("")
        rel = os.path.relpath(d, base)
        lines.append("Run: %s UTC, %s, command `%s`, took %s; every raw number in `%s`." % (
            (mget("date_utc") or ["?"])[0], (mget("mode") or ["?"])[0],
            " ".join((mget("command") or ["bench/run"])[0].split()), (mget("duration") or ["?"])[0],
            "raw.tsv" if rel == "." else os.path.join(rel, "raw.tsv")))
        lines.append("")
        for k in ["libgmalloc", "glibc", "jemalloc", "mimalloc", "tcmalloc", "gmalloc-bg", "gmalloc-rt"]:
            for v in mget(k):
                lines.append("- %s: %s" % (k, v))
        lines.append("- settings: %s" % (mget("settings") or ["?"])[0])
        for v in mget("note"):
            lines.append("- note: %s" % v)
        for v in mget("failure"):
            lines.append("- **FAILURE**: %s" % v)
        lines.append("")
        lines.append("Cells: median over the rounds [min–max] **ratio to glibc's median in this run**. "
                     "Absolute times on this shared machine are noisy; the ratios within one run are what to compare.")
        lines.append("")

        lines.append("### Targets of issue 4")
        lines.append("")
        lines.append("| # | target and measured figures | verdict |")
        lines.append("|---|---|---|")
        for n, text, v in targets(vals, allocs):
            lines.append("| %d | %s | %s |" % (n, text.replace("|", "/"), v))
        lines.append("")

        for png, what in [("rss.png", "RSS over time"), ("latency.png", "latency distribution"),
                          ("flat.png", "worst malloc/free by heap size")]:
            if png in made:
                rel = os.path.relpath(os.path.join(d, png), base)
                lines.append("![%s](%s)" % (what, rel))
                lines.append("")

        benches = []
        for (b, _m) in vals:
            if b not in benches:
                benches.append(b)
        for b in benches:
            keys = [k for k in vals if k[0] == b and units[k] != "bool"]
            if b == "flat":
                for what, title in [("worst malloc", "worst single malloc"), ("worst free", "worst single free"),
                                    ("p99.9 malloc", "99.9th percentile malloc"), ("p99.9 free", "99.9th percentile free")]:
                    t, _ = flat_table(vals, allocs, what, spread)
                    lines.append("### Real-time flatness: %s (µs) while the live heap grows (mixed sizes, %s steps of free+malloc per size)" % (
                        title, "20000" if spread else "a few"))
                    lines.append("")
                    lines += t
                    lines.append("")
                fifo = [k for k in vals if k[0] == "flat" and k[1] == "sched_fifo"]
                continue
            lines.append("### " + BENCH_TITLES.get(b, b))
            lines.append("")
            lines += table(vals, units, allocs, keys, spread, "case" if b == "micro" else "metric")
            lines.append("")
        fifo_vals = [v for k, per in vals.items() if k[1].endswith("sched_fifo") for vs in per.values() for v in vs]
        if fifo_vals:
            lines.append("SCHED_FIFO was %s for the latency and flatness threads." % (
                "granted in every run" if min(fifo_vals) == 1 else "NOT granted in some runs (they ran as SCHED_OTHER)"))
            lines.append("")
        return "\n".join(lines)

    body = render(d)

    with open(os.path.join(d, "results.md"), "w") as f:
        f.write("# Benchmark results %s\n\n" % (mget("date_utc") or [""])[0])
        f.write(body)
        f.write("\nEvery raw number (one line per round, allocator, benchmark and metric): `raw.tsv` in this directory.\n")
    print("report: wrote %s" % os.path.join(d, "results.md"), file=sys.stderr)

    if args.mode == "quick":
        # A short summary on stdout for the test log.
        for n, text, v in targets(vals, allocs):
            print("target %d at quick-run sizes (not judged, not a failure): %s" % (n, v.replace("*", "")))
    if args.readme:
        with open(args.readme) as f:
            readme = f.read()
        begin, end = "<!-- results:begin -->", "<!-- results:end -->"
        block = begin + "\n" + render(os.path.dirname(os.path.abspath(args.readme))) + "\n" + end
        if begin in readme and end in readme:
            readme = readme[: readme.index(begin)] + block + readme[readme.index(end) + len(end):]
        else:
            readme = readme.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
        with open(args.readme, "w") as f:
            f.write(readme)
        print("report: updated %s" % args.readme, file=sys.stderr)
    return 0


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "micro":
        return micro(sys.argv[2])
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["summarize"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--readme")
    args = ap.parse_args()
    return summarize(args)


if __name__ == "__main__":
    sys.exit(main())

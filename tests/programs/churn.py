# Allocation-heavy, deterministic workload for the real-program tests.
# Run with PYTHONMALLOC=malloc (so that every object goes through malloc) and
# PYTHONHASHSEED=0 (so that set/dict iteration order is fixed). Prints one
# line per phase ("phase <name> <sha256>") and a final "total" line; the
# output must be byte-identical under any correct malloc.
#
# Usage: python3 churn.py [scale]   (scale 1 churns about 1 GB in total, ~5 s)
import hashlib
import json
import random
import sys
import threading
import zlib

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
churned = 0  # bytes of payload allocated, roughly


def n(x):
    return max(1, int(x * SCALE))


def digest(h, obj):
    h.update(repr(obj).encode())


def phase_dicts(rng):
    """Many small dicts and strings, built up and torn down in random order."""
    global churned
    h = hashlib.sha256()
    for rnd in range(n(6)):
        table = {}
        for i in range(60000):
            k = "k%d-%d" % (i, rng.randrange(1 << 30))
            table[k] = {"i": i, "s": "v" * rng.randrange(1, 64), "t": (i, rnd)}
            churned += 120
        keys = list(table)
        rng.shuffle(keys)
        for k in keys[: len(keys) * 9 // 10]:  # free 90% in random order
            del table[k]
        for k in sorted(table):
            digest(h, (k, table[k]["i"], len(table[k]["s"])))
    return h.hexdigest()


def phase_lists(rng):
    """Growing and shrinking lists (realloc), sorting, slicing, comprehensions."""
    global churned
    h = hashlib.sha256()
    for rnd in range(n(8)):
        xs = []
        for i in range(200000):
            xs.append(rng.randrange(1 << 40))
        churned += 200000 * 40
        xs.sort()
        ys = [x * 3 + 1 for x in xs if x & 1]
        zs = xs[::3] + ys[::5]
        while len(zs) > 1000:
            del zs[len(zs) // 2 :]
            zs.extend(range(len(zs) // 4))
        digest(h, (len(xs), len(ys), sum(zs) & 0xFFFFFFFF, xs[:3], ys[-3:]))
        del xs, ys, zs
    return h.hexdigest()


def phase_strings(rng):
    """String building, joins, splits, replaces, encodes: many sizes of buffers."""
    global churned
    h = hashlib.sha256()
    words = ["".join(chr(97 + rng.randrange(26)) for _ in range(rng.randrange(1, 12)))
             for _ in range(5000)]
    for rnd in range(n(10)):
        parts = [words[rng.randrange(len(words))] for _ in range(150000)]
        text = " ".join(parts)
        churned += len(text) * 6
        up = text.upper().replace("A", "<a>")
        pieces = up.split("E")
        enc = up.encode("utf-8")
        digest(h, (len(text), len(up), len(pieces), hashlib.md5(enc).hexdigest()))
        s = ""
        for w in parts[:20000]:  # quadratic-ish growth in CPython: realloc in place
            s += w
        digest(h, len(s))
        del parts, text, up, pieces, enc, s
    return h.hexdigest()


def phase_bytes(rng):
    """Large buffers from 1 KB to 8 MB (the allocator's large and huge paths),
    bytearray growth, compression, and a pool with random frees."""
    global churned
    h = hashlib.sha256()
    pool = []
    for rnd in range(n(200)):
        size = 1 << rng.randrange(10, 24)
        size += rng.randrange(size)
        b = bytearray(size)
        b[::4096] = b"\x5a" * len(range(0, size, 4096))  # touch every page
        churned += size
        pool.append(bytes(b))
        churned += size
        if len(pool) > 24:
            victim = pool.pop(rng.randrange(len(pool)))
            digest(h, (len(victim), victim[:8].hex(), victim.count(0x5A)))
        del b
        if rnd % 20 == 0:
            ba = bytearray()
            for i in range(5000):
                ba += bytes([i & 255]) * (i % 97)
            churned += len(ba) * 2
            digest(h, zlib.crc32(zlib.compress(bytes(ba), 1)))
    digest(h, sorted(len(p) for p in pool))
    return h.hexdigest()


def phase_json(rng):
    """Nested structures through json (many small, short-lived objects)."""
    global churned
    h = hashlib.sha256()
    for rnd in range(n(3)):
        doc = [{"id": i, "name": "item%d" % i, "tags": ["t%d" % (i % 7)] * (i % 5),
                "vals": [rng.random() for _ in range(i % 11)]} for i in range(20000)]
        s = json.dumps(doc, sort_keys=True)
        churned += len(s) * 4
        back = json.loads(s)
        assert back == doc
        digest(h, hashlib.sha1(s.encode()).hexdigest())
        del doc, s, back
    return h.hexdigest()


def phase_threads(rng):
    """Objects allocated in one thread and freed in another (the GIL serialises
    Python code but malloc/free still run on several OS threads)."""
    global churned
    seeds = [rng.randrange(1 << 30) for _ in range(4)]
    results = [None] * 4
    handoff = []
    lock = threading.Lock()

    def work(idx):
        r = random.Random(seeds[idx])
        h = hashlib.sha256()
        for i in range(n(15000)):
            obj = ("w%d" % r.randrange(1 << 20)) * r.randrange(1, 40)
            with lock:
                handoff.append(obj)
                if len(handoff) > 500:
                    other = handoff.pop(0)  # made by any thread, freed here
                    del other
            h.update(obj[:4].encode())
        results[idx] = h.hexdigest()

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    churned += n(15000) * 4 * 100
    return hashlib.sha256("".join(results).encode()).hexdigest()


def main():
    rng = random.Random(20240521)
    total = hashlib.sha256()
    for name, fn in [("dicts", phase_dicts), ("lists", phase_lists),
                     ("strings", phase_strings), ("bytes", phase_bytes),
                     ("json", phase_json), ("threads", phase_threads)]:
        d = fn(rng)
        total.update(d.encode())
        print("phase", name, d, flush=True)
    print("total", total.hexdigest())
    # Goes to stderr: approximate, for humans only (not compared).
    print("churned about %d MB" % (churned >> 20), file=sys.stderr)


if __name__ == "__main__":
    main()

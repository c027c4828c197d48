// Micro benchmarks (Google Benchmark). One binary, loaded under each
// allocator with LD_PRELOAD by bench/run; it links no allocator itself.
//
// Sizes and orders come from fixed-seed arrays computed before the timed
// loop, so that the allocator dominates the time. Every case writes the
// first and last byte of each block and checks them before freeing it: a
// block handed out twice or overwritten aborts the run (a wrong result).
//
// items_per_second counts malloc+free pairs (realloc growth: reallocs).
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

struct Rng {
    uint64_t s;
    uint64_t next()
    {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    size_t range(size_t lo, size_t hi) { return lo + (size_t)(next() % (hi - lo + 1)); }
};

[[noreturn]] void wrong(const char *what, const void *p, size_t n)
{
    std::fprintf(stderr, "bench_micro: WRONG RESULT: %s (%p, %zu bytes)\n", what, p, n);
    std::abort();
}

inline void *checked_malloc(size_t n)
{
    void *p = std::malloc(n);
    if (!p)
        wrong("malloc returned NULL", p, n);
    return p;
}

inline void mark(void *p, size_t n, unsigned char tag)
{
    unsigned char *c = static_cast<unsigned char *>(p);
    c[0] = tag;
    c[n - 1] = tag;
}

inline void check(void *p, size_t n, unsigned char tag)
{
    unsigned char *c = static_cast<unsigned char *>(p);
    if (c[0] != tag || c[n - 1] != tag)
        wrong("block changed while live", p, n);
}

// malloc+free of one size class: 64 blocks allocated, then freed in order.
void BM_SizeClass(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    constexpr int kBatch = 64;
    void *p[kBatch];
    for (auto _ : state) {
        for (int i = 0; i < kBatch; i++) {
            p[i] = checked_malloc(n);
            mark(p[i], n, static_cast<unsigned char>(i));
        }
        for (int i = 0; i < kBatch; i++) {
            check(p[i], n, static_cast<unsigned char>(i));
            std::free(p[i]);
        }
    }
    state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_SizeClass)->RangeMultiplier(4)->Range(16, 256 << 10);

// A working set of `slots` live blocks; each step frees a random one and
// allocates a block of the next precomputed size in its place.
struct RandomChurn {
    std::vector<size_t> size, slot;
    std::vector<void *> live;
    std::vector<size_t> live_n;
    size_t pos = 0;

    RandomChurn(size_t lo, size_t hi, size_t slots, uint64_t seed)
        : size(1 << 16), slot(1 << 16), live(slots, nullptr), live_n(slots, 0)
    {
        Rng r{seed};
        for (size_t i = 0; i < size.size(); i++) {
            size[i] = r.range(lo, hi);
            slot[i] = (size_t)(r.next() % slots);
        }
        for (size_t i = 0; i < slots; i++) {
            live_n[i] = r.range(lo, hi);
            live[i] = checked_malloc(live_n[i]);
            mark(live[i], live_n[i], static_cast<unsigned char>(i));
        }
    }
    ~RandomChurn()
    {
        for (void *p : live)
            std::free(p);
    }
    inline void step()
    {
        size_t k = pos++ & (size.size() - 1);
        size_t s = slot[k];
        check(live[s], live_n[s], static_cast<unsigned char>(s));
        std::free(live[s]);
        live_n[s] = size[k];
        live[s] = checked_malloc(size[k]);
        mark(live[s], size[k], static_cast<unsigned char>(s));
    }
};

void BM_Random_16_1K(benchmark::State &state)
{
    RandomChurn c(16, 1024, 1000, 1);
    for (auto _ : state)
        for (int i = 0; i < 256; i++)
            c.step();
    state.SetItemsProcessed(state.iterations() * 256);
}
BENCHMARK(BM_Random_16_1K);

void BM_Random_1K_64K(benchmark::State &state)
{
    RandomChurn c(1024, 64 << 10, 250, 2);
    for (auto _ : state)
        for (int i = 0; i < 256; i++)
            c.step();
    state.SetItemsProcessed(state.iterations() * 256);
}
BENCHMARK(BM_Random_1K_64K);

// A buffer grown by appending: realloc in steps of range(0) bytes up to
// range(1) bytes, writing the new tail each time, then freed. Another block
// is allocated between the steps now and then, so growing in place is not
// always free.
void BM_ReallocGrowth(benchmark::State &state)
{
    const size_t step = static_cast<size_t>(state.range(0));
    const size_t max = static_cast<size_t>(state.range(1));
    int64_t reallocs = 0;
    for (auto _ : state) {
        unsigned char *p = nullptr;
        void *other[8] = {};
        int o = 0;
        for (size_t n = step; n <= max; n += step) {
            unsigned char *q = static_cast<unsigned char *>(std::realloc(p, n));
            if (!q)
                wrong("realloc returned NULL", p, n);
            if (n > step && (q[0] != 0x5a || q[n - step - 1] != 0x5a))
                wrong("realloc lost the contents", q, n);
            std::memset(q + n - step, 0x5a, step);
            p = q;
            reallocs++;
            if ((reallocs & 15) == 0) {
                std::free(other[o & 7]);
                other[o++ & 7] = checked_malloc(step);
            }
        }
        std::free(p);
        for (void *x : other)
            std::free(x);
    }
    state.SetItemsProcessed(reallocs);
}
BENCHMARK(BM_ReallocGrowth)->Args({64, 64 << 10})->Args({4096, 4 << 20});

// calloc of one size, checked to be zero at both ends and in the middle.
void BM_Calloc(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    constexpr int kBatch = 16;
    void *p[kBatch];
    for (auto _ : state) {
        for (int i = 0; i < kBatch; i++) {
            unsigned char *c = static_cast<unsigned char *>(std::calloc(1, n));
            if (!c)
                wrong("calloc returned NULL", c, n);
            if (c[0] || c[n / 2] || c[n - 1])
                wrong("calloc memory not zero", c, n);
            c[0] = c[n / 2] = c[n - 1] = 1; // dirty it for the next round
            p[i] = c;
        }
        for (int i = 0; i < kBatch; i++)
            std::free(p[i]);
    }
    state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_Calloc)->Arg(64)->Arg(4096)->Arg(64 << 10)->Arg(1 << 20);

// aligned_alloc(align, size): 64 blocks, then freed.
void BM_Aligned(benchmark::State &state)
{
    const size_t align = static_cast<size_t>(state.range(0));
    const size_t n = static_cast<size_t>(state.range(1));
    constexpr int kBatch = 64;
    void *p[kBatch];
    for (auto _ : state) {
        for (int i = 0; i < kBatch; i++) {
            p[i] = std::aligned_alloc(align, n);
            if (!p[i] || (reinterpret_cast<uintptr_t>(p[i]) & (align - 1)))
                wrong("aligned_alloc: NULL or misaligned", p[i], n);
            mark(p[i], n, static_cast<unsigned char>(i));
        }
        for (int i = 0; i < kBatch; i++) {
            check(p[i], n, static_cast<unsigned char>(i));
            std::free(p[i]);
        }
    }
    state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_Aligned)->Args({64, 256})->Args({4096, 4096})->Args({65536, 65536});

// Thread-local churn, random 16 B - 1 KiB, each thread its own working set.
// Real time: items_per_second is the total over all threads.
void BM_ThreadLocal(benchmark::State &state)
{
    RandomChurn c(16, 1024, 1000, 10 + static_cast<uint64_t>(state.thread_index()));
    for (auto _ : state)
        for (int i = 0; i < 256; i++)
            c.step();
    state.SetItemsProcessed(state.iterations() * 256);
}
BENCHMARK(BM_ThreadLocal)->ThreadRange(1, 4)->UseRealTime();

// Producer/consumer: this thread allocates (random 16 B - 1 KiB) and passes
// the blocks through a single-producer single-consumer ring to a second
// thread, which checks and frees them.
void BM_ProducerConsumer(benchmark::State &state)
{
    constexpr size_t kRing = 4096;
    struct Ring {
        std::atomic<size_t> head{0}, tail{0};
        void *slot[kRing];
        size_t len[kRing];
    };
    Ring *ring = new Ring;
    std::atomic<bool> stop{false};
    std::thread consumer([&] {
        size_t t = 0;
        for (;;) {
            size_t h = ring->head.load(std::memory_order_acquire);
            if (t == h) {
                if (stop.load(std::memory_order_acquire) && t == ring->head.load(std::memory_order_acquire))
                    break;
                std::this_thread::yield();
                continue;
            }
            for (; t != h; t++) {
                void *p = ring->slot[t % kRing];
                check(p, ring->len[t % kRing], static_cast<unsigned char>(t));
                std::free(p);
            }
            ring->tail.store(t, std::memory_order_release);
        }
    });
    std::vector<size_t> size(1 << 16);
    Rng r{3};
    for (auto &s : size)
        s = r.range(16, 1024);
    size_t h = 0;
    for (auto _ : state) {
        for (int i = 0; i < 256; i++) {
            while (h - ring->tail.load(std::memory_order_acquire) >= kRing)
                std::this_thread::yield();
            size_t n = size[h & (size.size() - 1)];
            void *p = checked_malloc(n);
            mark(p, n, static_cast<unsigned char>(h));
            ring->slot[h % kRing] = p;
            ring->len[h % kRing] = n;
            h++;
            ring->head.store(h, std::memory_order_release);
        }
    }
    stop.store(true, std::memory_order_release);
    consumer.join();
    delete ring;
    state.SetItemsProcessed(state.iterations() * 256);
}
BENCHMARK(BM_ProducerConsumer)->UseRealTime();

} // namespace

BENCHMARK_MAIN();

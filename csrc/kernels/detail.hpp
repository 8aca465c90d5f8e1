// Internal helpers shared by the kernels: a worker pool and bit scans.
// Not part of the public API (that is csrc/include/fastclipseg) and not installed.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

namespace fastclipseg::detail {

// ---------------------------------------------------------------------------
// Bit scans of a NONZERO 64-bit word (C++17 has no std::countr_zero).
// ---------------------------------------------------------------------------

// Index of the lowest set bit.
inline unsigned ctz64(std::uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return static_cast<unsigned>(__builtin_ctzll(x));
#else
    unsigned n = 0;
    for (unsigned s = 32; s > 0; s >>= 1) {  // binary search: 6 steps
        if ((x & ((std::uint64_t{1} << s) - 1)) == 0) x >>= s, n += s;
    }
    return n;
#endif
}

// Number of zero bits above the highest set bit.
inline unsigned clz64(std::uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return static_cast<unsigned>(__builtin_clzll(x));
#else
    unsigned n = 0;
    for (unsigned s = 32; s > 0; s >>= 1) {
        if ((x >> (64 - s)) == 0) x <<= s, n += s;
    }
    return n;
#endif
}

// Index (0..7) of the lowest / highest nonzero byte, byte i being bits 8i..8i+7.
inline unsigned lowest_byte(std::uint64_t x) { return ctz64(x) >> 3; }
inline unsigned highest_byte(std::uint64_t x) { return (63 - clz64(x)) >> 3; }

// ---------------------------------------------------------------------------
// Worker pool
// ---------------------------------------------------------------------------

// The most workers parallel_for(n, threads, ...) uses; worker indices are
// below it, so callers size per-worker scratch with it.
inline std::size_t parallel_workers(std::size_t n, std::size_t threads) {
    return std::min(n, threads);
}

// Runs f(item, worker) for every item in [0, n) on up to
// parallel_workers(n, threads) threads; the calling thread is worker 0, and
// a worker runs one item at a time, so per-worker scratch needs no locking.
// Items are handed out dynamically (they can differ a lot in cost). After an
// exception no new items start; the first one is rethrown once every worker
// has stopped. A thread that cannot be started (std::system_error,
// std::bad_alloc) is not an error: the workers already running drain the
// remaining items.
template <class F>
void parallel_for(std::size_t n, std::size_t threads, F&& f) {
    const std::size_t workers = parallel_workers(n, threads);
    if (workers <= 1) {
        // No atomics and no threads: single-threaded calls pay nothing extra.
        for (std::size_t i = 0; i < n; ++i) f(i, std::size_t{0});
        return;
    }
    std::atomic<std::size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&](std::size_t worker) {
        try {
            for (std::size_t i; (i = next.fetch_add(1)) < n;) f(i, worker);
        } catch (...) {
            const std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next.store(n);  // stop handing out items
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (std::size_t t = 1; t < workers; ++t) {
        try {
            pool.emplace_back(work, t);
        } catch (...) {
            break;  // out of threads: the ones running (and this one) do the work
        }
    }
    work(0);
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
}

// ---------------------------------------------------------------------------
// Thresholds
// ---------------------------------------------------------------------------

// The largest float <= x (finite x): a float v is > x exactly when v > the
// result. Beyond the float range that is FLT_MAX (only +inf exceeds x) or
// -inf (every float but -inf and NaN does).
inline float round_down(double x) {
    constexpr float kMax = std::numeric_limits<float>::max();
    if (x >= static_cast<double>(kMax)) return kMax;
    if (x < -static_cast<double>(kMax)) return -std::numeric_limits<float>::infinity();
    float f = static_cast<float>(x);
    if (static_cast<double>(f) > x) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
    return f;
}

}  // namespace fastclipseg::detail

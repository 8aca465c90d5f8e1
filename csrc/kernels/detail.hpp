// Internal helpers shared by the kernels: a worker pool and bit scans.
// Not part of the public API (that is csrc/include/fastclipseg) and not installed.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__GNUC__) || defined(__clang__)
#define FCS_INLINE inline __attribute__((always_inline))
#else
#define FCS_INLINE inline
#endif

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
// Object pool
// ---------------------------------------------------------------------------

// Objects (workspaces of big buffers) handed out and taken back, so that
// calls in a row reuse memory instead of faulting in fresh pages each time.
// Thread-safe; keeps at most kKeep idle objects.
template <class T>
class Pool {
   public:
    static constexpr std::size_t kKeep = 4;

    class Lease {
       public:
        Lease(Pool& pool, std::unique_ptr<T> item) : pool_(pool), item_(std::move(item)) {}
        Lease(Lease&& other) noexcept : pool_(other.pool_), item_(std::move(other.item_)) {}
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        Lease& operator=(Lease&&) = delete;
        ~Lease() {
            if (item_) pool_.give(std::move(item_));
        }
        T& operator*() const { return *item_; }
        T* operator->() const { return item_.get(); }

       private:
        Pool& pool_;
        std::unique_ptr<T> item_;
    };

    Lease take() {
        {
            const std::lock_guard<std::mutex> lock(mutex_);
            if (!idle_.empty()) {
                std::unique_ptr<T> item = std::move(idle_.back());
                idle_.pop_back();
                return Lease(*this, std::move(item));
            }
        }
        return Lease(*this, std::make_unique<T>());
    }

   private:
    void give(std::unique_ptr<T> item) {
        const std::lock_guard<std::mutex> lock(mutex_);
        if (idle_.size() < kKeep) idle_.push_back(std::move(item));
    }

    std::mutex mutex_;
    std::vector<std::unique_ptr<T>> idle_;
};

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

// ---------------------------------------------------------------------------
// Vectorisable sigmoid
// ---------------------------------------------------------------------------

// The loops below select with integer bit masks rather than ?: on floats:
// with trapping math GCC will not if-convert a float select whose operand is
// computed in only one branch, and the loop would stay scalar.
FCS_INLINE float from_bits(std::uint32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
}
FCS_INLINE std::uint32_t to_bits(float f) {
    std::uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return b;
}

// sigmoid(v) from e = exp(-|v|) in (0, 1]: 1 / (1 + e) for v >= 0, e / (1 + e)
// otherwise (accurate in both tails). exp is Cephes' expf polynomial (about
// 1 ulp) with branch-free range reduction, so the loop vectorises. NaN stays
// NaN; |v| >= 87 gives exactly 0 or 1.
FCS_INLINE float sigmoid1(float v) {
    // x = max(-|v|, -87) on the bit pattern: for negative floats a larger
    // magnitude is a larger unsigned pattern, and NaN (sign bit set) is
    // larger still, so it is clamped too (restored at the end).
    constexpr std::uint32_t kMinus87 = 0xC2AE0000u;  // -87.0f
    std::uint32_t xb = to_bits(v) | 0x80000000u;
    xb = xb < kMinus87 ? xb : kMinus87;
    const float x = from_bits(xb);
    // n = round(x / ln 2) by the 1.5 * 2^23 trick; n in [-126, 0], so 2^n is normal.
    constexpr float kRound = 12582912.0f;
    const float n = (x * 1.44269504088896341f + kRound) - kRound;
    float r = x - n * 0.693359375f;  // ln 2 split in two for an exact reduction
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const std::uint32_t two_n = static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23;
    // Below -87, exp is (almost) denormal: flush it, so sigmoid(v) is exactly
    // 0 for v <= -87 (and -inf) and 1 for v >= 87.
    const std::uint32_t tiny = 0u - static_cast<std::uint32_t>(xb >= kMinus87);
    const float e = from_bits(to_bits(p * from_bits(two_n)) & ~tiny);
    const float d = 1.0f / (1.0f + e);
    const std::uint32_t pos = 0u - static_cast<std::uint32_t>(v >= 0.0f);
    const std::uint32_t nan = 0u - static_cast<std::uint32_t>(v != v);
    const std::uint32_t s = (to_bits(d) & pos) | (to_bits(e * d) & ~pos);
    return from_bits((s & ~nan) | (to_bits(v) & nan));
}

}  // namespace fastclipseg::detail

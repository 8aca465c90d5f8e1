// Post-processing kernels; see fastclipseg/postprocess.hpp for the contract.
//
// Layout of the work. Output rows are produced one at a time: each needed
// logit row is interpolated horizontally once into a W-float buffer (two such
// rows are live, as PyTorch's arithmetic order is "horizontal first"), then
// two of them are blended vertically into the output row. Everything the
// user asked for is derived from that row while it sits in L1: the 0/1 mask
// row, probabilities, area, bbox, the score's per-row sum, the stability
// score's per-row counts of logits above L - d and L + d, and the row's
// column-major RLE boundaries (pixels that differ from the pixel above; row 0
// is settled at the end against the previous column's bottom pixel, as in
// rle.cpp's encode_rows). Boundaries are bucketed by column afterwards to
// emit COCO runs, so no full-size array is needed unless masks or
// probabilities are returned.
//
// The hot row loops are written to auto-vectorise and are compiled twice on
// x86: for the baseline ISA and for AVX2+FMA, picked at run time. Hardware
// FMA is also what makes the interpolation bit-identical to PyTorch's AVX2
// kernel; the baseline build emulates each FMA through double.
#include "fastclipseg/postprocess.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <thread>

#include "detail.hpp"
#include "fastclipseg/rle.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// Run-time dispatch between a baseline and an AVX2+FMA build of the row loops.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__FMA__)
#define FCS_X86_DISPATCH 1
#endif

// Whether the baseline build may use hardware FMA (std::fma would otherwise be
// a slow library call).
#if defined(__FMA__) || defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
#define FCS_BASELINE_FMA true
#else
#define FCS_BASELINE_FMA false
#endif

namespace fastclipseg::postprocess {
namespace {

[[noreturn]] void fail(const std::string& msg) {
    throw std::invalid_argument("postprocess: " + msg);
}

// ---------------------------------------------------------------------------
// Interpolation weights (PyTorch's compute_source_index_and_lambda).
// ---------------------------------------------------------------------------
struct Axis {
    std::vector<std::int32_t> i0, i1;  // source indices (sizes are <= kMaxSide)
    std::vector<float> l0, l1;         // their weights
    // For the AVX2 horizontal pass, per block of 8 outputs: the first of 8
    // consecutive source pixels that hold all 16 taps (-1 if they do not fit),
    // then the taps' offsets from it (8 for i0, 8 for i1).
    std::vector<std::int32_t> block_base;
    std::vector<std::int32_t> block_taps;
};

// Fills the permute plan of `a` (only useful with >= 8 source pixels).
void plan_blocks(Axis& a, std::size_t in) {
    const std::size_t out = a.i0.size();
    if (in < 8) return;
    const std::size_t blocks = out / 8;
    a.block_base.resize(blocks);
    a.block_taps.resize(blocks * 16);
    for (std::size_t b = 0; b < blocks; ++b) {
        // Keep the 8-float load inside the row: start at most 8 before its end.
        const std::int32_t base =
            std::min(a.i0[8 * b], static_cast<std::int32_t>(in) - 8);
        bool fits = true;
        for (std::size_t j = 0; j < 8; ++j) {
            const std::int32_t o0 = a.i0[8 * b + j] - base, o1 = a.i1[8 * b + j] - base;
            fits = fits && o0 >= 0 && o0 < 8 && o1 >= 0 && o1 < 8;
            a.block_taps[16 * b + j] = o0;
            a.block_taps[16 * b + 8 + j] = o1;
        }
        a.block_base[b] = fits ? base : -1;
    }
}

Axis make_axis(std::size_t in, std::size_t out) {
    Axis a;
    a.i0.resize(out);
    a.i1.resize(out);
    a.l0.resize(out);
    a.l1.resize(out);
    if (in == out) {  // PyTorch copies: both taps on the same pixel
        for (std::size_t d = 0; d < out; ++d) {
            a.i0[d] = a.i1[d] = static_cast<std::int32_t>(d);
            a.l0[d] = 1.0f;
            a.l1[d] = 0.0f;
        }
        plan_blocks(a, in);
        return a;
    }
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    const std::int64_t last = static_cast<std::int64_t>(in) - 1;
    for (std::size_t d = 0; d < out; ++d) {
        const float dst = static_cast<float>(d) + 0.5f;
        // PyTorch's build contracts scale * dst - 0.5 into one FMA. The
        // product of two floats is exact in double and so is the difference
        // whenever it is >= 0, so this rounds once, like the FMA; negative
        // results are clamped to 0 either way.
        float src = static_cast<float>(static_cast<double>(scale) * static_cast<double>(dst) - 0.5);
        if (src < 0.0f) src = 0.0f;
        const std::int64_t i0 = std::min(static_cast<std::int64_t>(std::floor(src)), last);
        const float l1 = std::min(std::max(src - static_cast<float>(i0), 0.0f), 1.0f);
        a.i0[d] = static_cast<std::int32_t>(i0);
        a.i1[d] = static_cast<std::int32_t>(i0 + (i0 < last ? 1 : 0));
        a.l1[d] = l1;
        a.l0[d] = 1.0f - l1;
    }
    plan_blocks(a, in);
    return a;
}

// ---------------------------------------------------------------------------
// Row loops, templated on hardware FMA; all auto-vectorise except hinterp
// (a gather).
// ---------------------------------------------------------------------------

// a * b + c rounded once.
template <bool kFma>
FCS_INLINE float fused(float a, float b, float c) {
    if constexpr (kFma) {
        return std::fma(a, b, c);
    } else {
        // a * b is exact in double; the sum rounds to double and then to
        // float, which equals the single rounding except in vanishingly rare
        // double-rounding ties.
        return static_cast<float>(static_cast<double>(a) * static_cast<double>(b) +
                                  static_cast<double>(c));
    }
}

// Horizontal pass over outputs [from, to) of one logit row:
// out[c] = x[i0] * l0 + x[i1] * l1.
template <bool kFma>
FCS_INLINE void hinterp_impl(const float* x, const Axis& ax, std::size_t from, std::size_t to,
                             float* out) {
    const std::int32_t* i0 = ax.i0.data();
    const std::int32_t* i1 = ax.i1.data();
    const float* l0 = ax.l0.data();
    const float* l1 = ax.l1.data();
    for (std::size_t c = from; c < to; ++c) out[c] = fused<kFma>(x[i0[c]], l0[c], x[i1[c]] * l1[c]);
}

// Vertical pass: out = t0 * l0 + t1 * l1.
template <bool kFma>
FCS_INLINE void vinterp_impl(const float* t0, const float* t1, float l0, float l1, std::size_t n,
                             float* out) {
    for (std::size_t c = 0; c < n; ++c) out[c] = fused<kFma>(t0[c], l0, t1[c] * l1);
}

// Vertical pass and threshold in one sweep: out = t0 * l0 + t1 * l1, and
// mask = out > thr.
template <bool kFma>
FCS_INLINE void vinterp_threshold_impl(const float* t0, const float* t1, float l0, float l1,
                                       std::size_t n, float thr, float* out, std::uint8_t* mask) {
    for (std::size_t c = 0; c < n; ++c) {
        const float v = fused<kFma>(t0[c], l0, t1[c] * l1);
        out[c] = v;
        mask[c] = v > thr ? 1 : 0;
    }
}

using detail::from_bits;
using detail::to_bits;

// min(max(q, 0), 1) on the bit pattern (integer selects vectorise where float
// ones do not, see from_bits): negative floats (sign bit set) become +0, and
// non-negative floats order like their patterns.
FCS_INLINE float clamp01(float q) {
    constexpr std::uint32_t kOne = 0x3f800000u;  // 1.0f
    std::uint32_t b = to_bits(q);
    b &= ~static_cast<std::uint32_t>(static_cast<std::int32_t>(b) >> 31);
    return from_bits(b < kOne ? b : kOne);
}

// mask = v > cut (a loop of its own: mixed with the uint8 guide loads, GCC
// does not vectorise it).
FCS_INLINE void threshold_row(const float* __restrict v, std::size_t n, float cut, std::uint8_t* __restrict mask) {
    for (std::size_t c = 0; c < n; ++c) mask[c] = v[c] > cut ? 1 : 0;
}

// Guided rows (fastclipseg/edges.hpp), from the horizontally interpolated
// rows of each coefficient plane (t0 above, t1 below, vertical weights l0
// and l1, as vinterp: the coefficients are exactly the bilinear upsampling)
// and the raw uint8 guide rows (A is pre-scaled by 1/255):
// q = clamp(B + A . guide, 0, 1), in one sweep without writing the
// upsampled coefficients; then mask = q > cut. Restrict: without it the
// compiler will not vectorise past the many pointers' overlap checks.
template <bool kFma>
FCS_INLINE void edge_grey_impl(const float* const* t0, const float* const* t1, float l0, float l1,
                               const std::uint8_t* const* guide, std::size_t n, float cut, float* out,
                               std::uint8_t* mask) {
    const float *__restrict a0 = t0[0], *__restrict a1 = t1[0], *__restrict b0 = t0[1], *__restrict b1 = t1[1];
    const std::uint8_t* __restrict g = guide[0];
    float* __restrict q_out = out;
    for (std::size_t c = 0; c < n; ++c) {
        const float a = fused<kFma>(a0[c], l0, a1[c] * l1);
        const float b = fused<kFma>(b0[c], l0, b1[c] * l1);
        q_out[c] = clamp01(fused<kFma>(a, static_cast<float>(g[c]), b));
    }
    threshold_row(q_out, n, cut, mask);
}

// One colour channel's term per loop: GCC vectorises a loop with one uint8
// stream among the floats, not with three.
template <bool kFma>
FCS_INLINE void add_channel(const float* __restrict t0, const float* __restrict t1, float l0, float l1,
                            const std::uint8_t* __restrict g, std::size_t n, float* __restrict q) {
    for (std::size_t c = 0; c < n; ++c) q[c] = fused<kFma>(fused<kFma>(t0[c], l0, t1[c] * l1), static_cast<float>(g[c]), q[c]);
}

template <bool kFma>
FCS_INLINE void edge_colour_impl(const float* const* t0, const float* const* t1, float l0, float l1,
                                 const std::uint8_t* const* guide, std::size_t n, float cut, float* out,
                                 std::uint8_t* mask) {
    const float *__restrict b0 = t0[3], *__restrict b1 = t1[3];
    float* __restrict q = out;
    for (std::size_t c = 0; c < n; ++c) q[c] = fused<kFma>(b0[c], l0, b1[c] * l1);
    add_channel<kFma>(t0[2], t1[2], l0, l1, guide[2], n, q);
    add_channel<kFma>(t0[1], t1[1], l0, l1, guide[1], n, q);
    add_channel<kFma>(t0[0], t1[0], l0, l1, guide[0], n, q);
    for (std::size_t c = 0; c < n; ++c) q[c] = clamp01(q[c]);
    threshold_row(q, n, cut, mask);
}

// Number of set bytes in a row of 0/1 bytes (n < 2^32).
FCS_INLINE std::uint32_t count_impl(const std::uint8_t* m, std::size_t n) {
    std::uint32_t total = 0;
    for (std::size_t c = 0; c < n; ++c) total += m[c];
    return total;
}

using detail::sigmoid1;

FCS_INLINE void sigmoid_impl(const float* v, std::size_t n, float* out) {
    for (std::size_t c = 0; c < n; ++c) out[c] = sigmoid1(v[c]);
}

// round(255 p) for p in [0, 1]; NaN -> 0.
FCS_INLINE void to_u8_impl(const float* p, std::size_t n, std::uint8_t* out) {
    for (std::size_t c = 0; c < n; ++c) {
        float q = p[c] * 255.0f + 0.5f;
        q = q >= 0.0f ? q : 0.0f;  // NaN fails the test
        out[c] = static_cast<std::uint8_t>(static_cast<std::int32_t>(q));
    }
}

// Numbers of values above lo and above hi in a row of floats (n < 2^32), in
// one sweep; NaN is above neither. The 0/1 compare results are added as
// integers, so the loop vectorises to compares + subtracts of the all-ones
// lane masks (two independent accumulator chains).
FCS_INLINE void count_above_impl(const float* v, std::size_t n, float lo, float hi,
                                 std::uint32_t* out) {
    std::uint32_t above_lo = 0, above_hi = 0;
    for (std::size_t c = 0; c < n; ++c) {
        above_lo += v[c] > lo ? 1u : 0u;
        above_hi += v[c] > hi ? 1u : 0u;
    }
    out[0] = above_lo;
    out[1] = above_hi;
}

// Sum of p over pixels whose mask byte is set, in double; `tmp` holds n
// floats. Masked-out values become +0 by bit masking (a NaN probability
// outside the mask must not leak in), then 16 fixed double lanes (element
// c + l of each 16-element chunk goes to lane l; enough independent chains to
// hide the add latency), combined in a fixed order, keep the sum vectorised
// and deterministic. The AVX2 build below computes exactly the same sums.
constexpr int kSumLanes = 16;

FCS_INLINE double combine_lanes(const double* acc, const float* p, const std::uint8_t* m,
                                std::size_t c, std::size_t n) {
    double tail = 0.0;
    for (; c < n; ++c) tail += m[c] ? static_cast<double>(p[c]) : 0.0;
    double quads[4];
    for (int q = 0; q < 4; ++q) quads[q] = (acc[4 * q] + acc[4 * q + 1]) + (acc[4 * q + 2] + acc[4 * q + 3]);
    return ((quads[0] + quads[1]) + (quads[2] + quads[3])) + tail;
}

FCS_INLINE double masked_sum_impl(const float* p, const std::uint8_t* m, std::size_t n,
                                  float* tmp) {
    const std::size_t body = n - n % kSumLanes;
    for (std::size_t c = 0; c < body; ++c) {
        tmp[c] = from_bits(to_bits(p[c]) & (0u - static_cast<std::uint32_t>(m[c])));
    }
    double acc[kSumLanes] = {};
    for (std::size_t c = 0; c < body; c += kSumLanes) {
        for (int l = 0; l < kSumLanes; ++l) acc[l] += static_cast<double>(tmp[c + l]);
    }
    return combine_lanes(acc, p, m, body, n);
}

struct RowOps {
    void (*hinterp)(const float*, const Axis&, std::size_t, float*);
    void (*vinterp)(const float*, const float*, float, float, std::size_t, float*);
    void (*vinterp_threshold)(const float*, const float*, float, float, std::size_t, float, float*,
                              std::uint8_t*);
    std::uint32_t (*count)(const std::uint8_t*, std::size_t);
    void (*count_above)(const float*, std::size_t, float, float, std::uint32_t*);
    void (*sigmoid)(const float*, std::size_t, float*);
    void (*to_u8)(const float*, std::size_t, std::uint8_t*);
    double (*masked_sum)(const float*, const std::uint8_t*, std::size_t, float*);
    using EdgeRow = void (*)(const float* const*, const float* const*, float, float, const std::uint8_t* const*,
                             std::size_t, float, float*, std::uint8_t*);
    EdgeRow edge_grey;
    EdgeRow edge_colour;
};

// NAME##_hinterp and NAME##_masked_sum are defined separately (the AVX2 ones
// use intrinsics).
#define FCS_DEFINE_ROW_OPS(NAME, ATTR, FMA)                                                         \
    ATTR void NAME##_vinterp(const float* a, const float* b, float l0, float l1, std::size_t n,     \
                             float* out) {                                                          \
        vinterp_impl<FMA>(a, b, l0, l1, n, out);                                                    \
    }                                                                                               \
    ATTR void NAME##_vinterp_threshold(const float* a, const float* b, float l0, float l1,          \
                                       std::size_t n, float t, float* out, std::uint8_t* mask) {    \
        vinterp_threshold_impl<FMA>(a, b, l0, l1, n, t, out, mask);                                 \
    }                                                                                               \
    ATTR std::uint32_t NAME##_count(const std::uint8_t* m, std::size_t n) {                        \
        return count_impl(m, n);                                                                    \
    }                                                                                               \
    ATTR void NAME##_count_above(const float* v, std::size_t n, float lo, float hi,                 \
                                 std::uint32_t* out) {                                              \
        count_above_impl(v, n, lo, hi, out);                                                        \
    }                                                                                               \
    ATTR void NAME##_sigmoid(const float* v, std::size_t n, float* out) { sigmoid_impl(v, n, out); } \
    ATTR void NAME##_to_u8(const float* p, std::size_t n, std::uint8_t* out) {                      \
        to_u8_impl(p, n, out);                                                                      \
    }                                                                                               \
    ATTR void NAME##_edge_grey(const float* const* t0, const float* const* t1, float l0, float l1,    \
                               const std::uint8_t* const* g, std::size_t n, float cut, float* out,  \
                               std::uint8_t* mask) {                                                \
        edge_grey_impl<FMA>(t0, t1, l0, l1, g, n, cut, out, mask);                                  \
    }                                                                                               \
    ATTR void NAME##_edge_colour(const float* const* t0, const float* const* t1, float l0, float l1,  \
                                 const std::uint8_t* const* g, std::size_t n, float cut, float* out, \
                                 std::uint8_t* mask) {                                              \
        edge_colour_impl<FMA>(t0, t1, l0, l1, g, n, cut, out, mask);                                \
    }                                                                                               \
    constexpr RowOps NAME##_ops = {NAME##_hinterp, NAME##_vinterp,      NAME##_vinterp_threshold,   \
                                   NAME##_count,   NAME##_count_above,  NAME##_sigmoid,             \
                                   NAME##_to_u8,   NAME##_masked_sum,   NAME##_edge_grey,           \
                                   NAME##_edge_colour};

void baseline_hinterp(const float* x, const Axis& ax, std::size_t n, float* out) {
    hinterp_impl<FCS_BASELINE_FMA>(x, ax, 0, n, out);
}
double baseline_masked_sum(const float* p, const std::uint8_t* m, std::size_t n, float* tmp) {
    return masked_sum_impl(p, m, n, tmp);
}
FCS_DEFINE_ROW_OPS(baseline, , FCS_BASELINE_FMA)

#ifdef FCS_X86_DISPATCH
// The horizontal pass is a gather, which does not auto-vectorise; when
// upsampling, though, 8 neighbouring outputs read at most 8 neighbouring
// source pixels, so one load and two in-register permutes replace 16 loads.
__attribute__((target("avx2,fma"))) void avx2_hinterp(const float* x, const Axis& ax,
                                                      std::size_t n, float* out) {
    const std::size_t blocks = ax.block_base.size();
    for (std::size_t b = 0; b < blocks; ++b) {
        const std::size_t c = 8 * b;
        const std::int32_t base = ax.block_base[b];
        if (base < 0) {
            hinterp_impl<true>(x, ax, c, c + 8, out);
            continue;
        }
        const __m256 src = _mm256_loadu_ps(x + base);
        const auto* taps = reinterpret_cast<const __m256i*>(ax.block_taps.data() + 16 * b);
        const __m256 x0 = _mm256_permutevar8x32_ps(src, _mm256_loadu_si256(taps));
        const __m256 x1 = _mm256_permutevar8x32_ps(src, _mm256_loadu_si256(taps + 1));
        const __m256 t1 = _mm256_mul_ps(x1, _mm256_loadu_ps(ax.l1.data() + c));
        _mm256_storeu_ps(out + c, _mm256_fmadd_ps(x0, _mm256_loadu_ps(ax.l0.data() + c), t1));
    }
    hinterp_impl<true>(x, ax, 8 * blocks, n, out);
}

// masked_sum_impl in one pass: mask, widen to double and add, 16 lanes in
// four registers.
__attribute__((target("avx2,fma"))) double avx2_masked_sum(const float* p, const std::uint8_t* m,
                                                          std::size_t n, float*) {
    const std::size_t body = n - n % kSumLanes;
    __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                      _mm256_setzero_pd()};
    const __m256i zero = _mm256_setzero_si256();
    for (std::size_t c = 0; c < body; c += kSumLanes) {
        for (int half = 0; half < 2; ++half) {
            std::int64_t bytes;
            std::memcpy(&bytes, m + c + 8 * half, 8);
            // 0/1 bytes -> 0 / all-ones 32-bit lanes.
            const __m256i keep =
                _mm256_sub_epi32(zero, _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes)));
            const __m256 v =
                _mm256_and_ps(_mm256_loadu_ps(p + c + 8 * half), _mm256_castsi256_ps(keep));
            acc[2 * half] = _mm256_add_pd(acc[2 * half], _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            acc[2 * half + 1] =
                _mm256_add_pd(acc[2 * half + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
        }
    }
    alignas(32) double lanes[kSumLanes];
    for (int q = 0; q < 4; ++q) _mm256_store_pd(lanes + 4 * q, acc[q]);
    return combine_lanes(lanes, p, m, body, n);
}
FCS_DEFINE_ROW_OPS(avx2, __attribute__((target("avx2,fma"))), true)
#endif

std::atomic<bool> g_force_baseline{false};

const RowOps& row_ops() {
    if (g_force_baseline.load(std::memory_order_relaxed)) return baseline_ops;
#ifdef FCS_X86_DISPATCH
    static const bool has_avx2_fma = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    if (has_avx2_fma) return avx2_ops;
#endif
    return baseline_ops;
}

// ---------------------------------------------------------------------------
// Byte-row helpers (rows of 0/1 bytes), 8 bytes at a time.
// ---------------------------------------------------------------------------

// 8 bytes as a little-endian word (byte i in bits 8i..8i+7) on any host.
inline std::uint64_t load8(const std::uint8_t* p) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

using detail::highest_byte;
using detail::lowest_byte;

// First set byte of a row of 0/1 bytes, or n if none.
std::size_t first_set(const std::uint8_t* m, std::size_t n) {
    std::size_t c = 0;
    // Background rows are the common case: skip 32 bytes at a time.
    while (c + 32 <= n &&
           (load8(m + c) | load8(m + c + 8) | load8(m + c + 16) | load8(m + c + 24)) == 0) {
        c += 32;
    }
    for (; c + 8 <= n; c += 8) {
        const std::uint64_t x = load8(m + c);
        if (x != 0) return c + lowest_byte(x);
    }
    while (c < n && m[c] == 0) ++c;
    return c;
}

// Last set byte of a row known to have one.
std::size_t last_set(const std::uint8_t* m, std::size_t n) {
    std::size_t c = n;
    for (; c >= 8; c -= 8) {
        const std::uint64_t x = load8(m + c - 8);
        if (x != 0) return c - 8 + highest_byte(x);
    }
    while (c > 0 && m[c - 1] == 0) --c;
    return c - 1;
}

// Appends the columns where `cur` differs from `prev` (the row above).
void row_transitions(const std::uint8_t* cur, const std::uint8_t* prev, std::size_t n,
                     std::vector<std::uint32_t>& out) {
    std::size_t c = 0;
    while (c + 8 <= n) {
        // Rows of a real mask mostly repeat the row above: skip 32 at a time.
        while (c + 32 <= n && ((load8(cur + c) ^ load8(prev + c)) |
                               (load8(cur + c + 8) ^ load8(prev + c + 8)) |
                               (load8(cur + c + 16) ^ load8(prev + c + 16)) |
                               (load8(cur + c + 24) ^ load8(prev + c + 24))) == 0) {
            c += 32;
        }
        if (c + 8 > n) break;
        std::uint64_t diff = load8(cur + c) ^ load8(prev + c);
        while (diff != 0) {
            out.push_back(static_cast<std::uint32_t>(c + lowest_byte(diff)));
            diff &= diff - 1;
        }
        c += 8;
    }
    for (; c < n; ++c) {
        if (cur[c] != prev[c]) out.push_back(static_cast<std::uint32_t>(c));
    }
}

// ---------------------------------------------------------------------------
// Validation and work split
// ---------------------------------------------------------------------------
struct Plan {
    std::size_t k, h, w, height, width;
    std::uint64_t plane;  // H * W
    std::uint64_t total;  // K * H * W
};

void check_side(std::size_t v, const char* name) {
    if (v == 0) fail(std::string(name) + " must be >= 1, got 0");
    if (v > kMaxSide) {
        fail(std::string(name) + " = " + std::to_string(v) + " exceeds the maximum " +
             std::to_string(kMaxSide));
    }
}

std::string dims(std::uint64_t a, std::uint64_t b, std::uint64_t c) {
    return std::to_string(a) + " x " + std::to_string(b) + " x " + std::to_string(c);
}

Plan validate(const float* logits, std::size_t logits_size, const Shape& s) {
    check_side(s.h, "logit height h");
    check_side(s.w, "logit width w");
    check_side(s.height, "output height H");
    check_side(s.width, "output width W");
    const std::uint64_t in_plane = static_cast<std::uint64_t>(s.h) * s.w;  // < 2^62
    if (s.k > std::numeric_limits<std::size_t>::max() / in_plane) {
        fail("logits size " + dims(s.k, s.h, s.w) + " overflows");
    }
    const std::uint64_t in_total = s.k * in_plane;
    if (logits_size < in_total) {
        fail("logits buffer holds " + std::to_string(logits_size) + " floats but " +
             dims(s.k, s.h, s.w) + " needs " + std::to_string(in_total));
    }
    if (in_total > 0 && logits == nullptr) fail("logits pointer is null");
    const std::uint64_t plane = static_cast<std::uint64_t>(s.height) * s.width;  // < 2^62
    if (plane > rle::kMaxCount) {
        fail("output size " + std::to_string(s.height) + " x " + std::to_string(s.width) +
             " is too large (more than " + std::to_string(rle::kMaxCount) + " pixels)");
    }
    // Full-size outputs are indexed in bytes of up to 4-byte elements.
    const std::uint64_t max_total = std::numeric_limits<std::size_t>::max() / sizeof(float);
    if (s.k > max_total / plane) {
        fail("output size K x H x W = " + dims(s.k, s.height, s.width) + " overflows");
    }
    return {s.k, s.h, s.w, s.height, s.width, plane, s.k * plane};
}

void check_buffer(const void* p, std::size_t size, std::uint64_t need, const char* name) {
    if (p != nullptr && size < need) {
        fail(std::string(name) + " buffer holds " + std::to_string(size) + " elements but K x H x W = " +
             std::to_string(need));
    }
}

unsigned resolve_threads(unsigned threads) {
    return std::min(threads == 0 ? default_threads() : threads, kMaxThreads);
}

// Row blocks per mask: one per mask single-threaded; otherwise enough items
// to balance the threads, each still worth a thread hand-off. Results do not
// depend on the split.
std::size_t blocks_per_mask(const Plan& p, unsigned threads) {
    if (threads <= 1 || p.k == 0) return 1;
    std::size_t blocks = (4 * static_cast<std::size_t>(threads) + p.k - 1) / p.k;
    blocks = std::min<std::size_t>(blocks, std::max<std::size_t>(1, p.height / 8));
    blocks = std::min<std::uint64_t>(blocks, std::max<std::uint64_t>(1, p.plane / 32768));
    return std::max<std::size_t>(blocks, 1);
}

using detail::parallel_for;

// Pooled (reused memory); wrapped in a type of this file so the pool's
// template code stays internal (edges::Coefficients is a public type).
struct PooledCoefficients {
    edges::Coefficients value;
};
detail::Pool<PooledCoefficients> g_coefficients;
using detail::parallel_workers;

// ---------------------------------------------------------------------------
// Per-thread row machinery
// ---------------------------------------------------------------------------
struct RowSource {
    const RowOps& ops;
    const float* logits;  // first logit of this mask (or coefficient of a plane)
    std::size_t w;
    const Axis& cols;  // horizontal weights (W entries)
    const Axis& rows;  // vertical weights (H entries)
};

// Two horizontally interpolated rows of one source plane, recomputed as the
// output row advances (the source rows only move forward within a block).
struct RowCache {
    std::vector<float> hrow[2];
    std::size_t hidx[2] = {SIZE_MAX, SIZE_MAX};

    void reset(std::size_t width) {
        for (auto& r : hrow) r.resize(width);
        hidx[0] = hidx[1] = SIZE_MAX;
    }

    // Horizontally interpolated row r, never evicting row `keep`.
    const float* hrow_for(const RowSource& src, std::size_t r, std::size_t keep) {
        if (hidx[0] == r) return hrow[0].data();
        if (hidx[1] == r) return hrow[1].data();
        // Evict the slot not holding `keep`; between two candidates, the older row.
        int slot;
        if (hidx[0] == keep) slot = 1;
        else if (hidx[1] == keep) slot = 0;
        else slot = (hidx[0] == SIZE_MAX || (hidx[1] != SIZE_MAX && hidx[0] < hidx[1])) ? 0 : 1;
        src.ops.hinterp(src.logits + r * src.w, src.cols, src.cols.i0.size(), hrow[slot].data());
        hidx[slot] = r;
        return hrow[slot].data();
    }

    // Upsampled row R into `out`; with `mask`, also its 0/1 bytes out > thr.
    void upsample_row(const RowSource& src, std::size_t R, float* out, std::uint8_t* mask = nullptr,
                      float thr = 0.0f) {
        const std::size_t r0 = static_cast<std::size_t>(src.rows.i0[R]);
        const std::size_t r1 = static_cast<std::size_t>(src.rows.i1[R]);
        const float* t0 = hrow_for(src, r0, SIZE_MAX);
        const float* t1 = hrow_for(src, r1, r0);
        const std::size_t n = src.cols.i0.size();
        if (mask != nullptr) {
            src.ops.vinterp_threshold(t0, t1, src.rows.l0[R], src.rows.l1[R], n, thr, out, mask);
        } else {
            src.ops.vinterp(t0, t1, src.rows.l0[R], src.rows.l1[R], n, out);
        }
    }
};

// One mask's guided-filter coefficients and the guide (fastclipseg/edges.hpp).
struct EdgeSource {
    const float* coef = nullptr;              // planes x fh x fw (the filter's grid)
    std::size_t planes = 0;                   // 2 (grey) or 4 (colour)
    std::size_t fh = 0, fw = 0;
    const Axis* cols = nullptr;               // weights from fw columns to W
    const Axis* rows = nullptr;               // and from fh rows to H
    const std::uint8_t* guide[3] = {};        // the guide's planes, H x W uint8 each
};

struct Scratch {
    RowCache logit;                       // the logit rows
    std::vector<RowCache> coef;           // the coefficient planes' rows (edges)
    std::vector<float> vrow;              // one upsampled output row
    std::vector<float> prob;              // sigmoid of it
    std::vector<float> tmp;               // masked probabilities for the score
    std::vector<std::uint8_t> mrow[2];    // mask rows when not written to the output
    std::vector<std::size_t> col_start;   // RLE bucketing
    std::vector<std::uint32_t> rows_by_col;
    std::vector<std::uint64_t> counts;

    void reset(std::size_t width, std::size_t planes = 0) {
        logit.reset(width);
        vrow.resize(width);
        coef.resize(planes);
        for (std::size_t j = 0; j < planes; ++j) coef[j].reset(width);
    }

    // Upsampled logits of output row R, in vrow (or `out` when given); with
    // `mask`, also its 0/1 bytes logit > thr.
    float* upsample_row(const RowSource& src, std::size_t R, float* out = nullptr,
                        std::uint8_t* mask = nullptr, float thr = 0.0f) {
        float* dst = out != nullptr ? out : vrow.data();
        logit.upsample_row(src, R, dst, mask, thr);
        return dst;
    }

    // The filtered probabilities of output row R in vrow, and its mask bytes q > cut.
    float* edge_row(const RowSource& src, const EdgeSource& e, std::size_t R, std::uint8_t* mask,
                    float cut) {
        const std::size_t W = src.cols.i0.size();
        const std::size_t r0 = static_cast<std::size_t>(e.rows->i0[R]), r1 = static_cast<std::size_t>(e.rows->i1[R]);
        const float* above[4];
        const float* below[4];
        for (std::size_t j = 0; j < e.planes; ++j) {
            const RowSource plane_src{src.ops, e.coef + j * e.fh * e.fw, e.fw, *e.cols, *e.rows};
            above[j] = coef[j].hrow_for(plane_src, r0, SIZE_MAX);
            below[j] = coef[j].hrow_for(plane_src, r1, r0);
        }
        const std::uint8_t* g[3] = {e.guide[0] + R * W, nullptr, nullptr};
        if (e.planes == 4) g[1] = e.guide[1] + R * W, g[2] = e.guide[2] + R * W;
        const auto kernel = e.planes == 2 ? src.ops.edge_grey : src.ops.edge_colour;
        kernel(above, below, e.rows->l0[R], e.rows->l1[R], g, W, cut, vrow.data(), mask);
        return vrow.data();
    }
};

// What one (mask, row block) item found.
struct Block {
    std::vector<std::uint32_t> trans;       // RLE boundary columns, rows in order (not row 0)
    std::vector<std::uint32_t> row_trans;   // boundaries per row of the block
    std::uint64_t area = 0;
    std::uint64_t above_hi = 0, above_lo = 0;  // stability: logits above L + d and L - d
    bool any = false;
    std::size_t min_r = 0, max_r = 0, min_c = 0, max_c = 0;
};

using detail::round_down;

void check_stability_offset(double offset) {
    if (std::isnan(offset)) fail("stability offset is NaN; expected a finite value >= 0");
    if (std::isinf(offset)) fail("stability offset is infinite; expected a finite value >= 0");
    if (offset < 0.0) fail("stability offset " + std::to_string(offset) + " is negative; expected >= 0");
}

}  // namespace

unsigned default_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
}

void select_kernels(Kernels k) { g_force_baseline.store(k == Kernels::baseline); }

float threshold_logit(double t) {
    if (std::isnan(t)) fail("threshold is NaN; expected a probability in [0, 1]");
    if (t < 0.0 || t > 1.0) {
        fail("threshold " + std::to_string(t) + " is outside [0, 1]");
    }
    if (t == 0.0) return -std::numeric_limits<float>::infinity();
    if (t == 1.0) return std::numeric_limits<float>::infinity();
    return round_down(std::log(t / (1.0 - t)));
}

std::array<float, 2> stability_thresholds(double t, double offset) {
    const float thr = threshold_logit(t);
    check_stability_offset(offset);
    if (t == 0.0 || t == 1.0) return {thr, thr};  // +-inf shifted by a finite d
    const double logit = std::log(t / (1.0 - t));
    return {round_down(logit - offset), round_down(logit + offset)};
}

std::uint64_t output_elements(const Shape& shape) {
    // A non-null dummy pointer: only the shape is being checked.
    static const float dummy = 0.0f;
    return validate(&dummy, std::numeric_limits<std::size_t>::max(), shape).total;
}

Result run(const float* logits, std::size_t logits_size, const Shape& shape,
           const Request& req) {
    const Plan p = validate(logits, logits_size, shape);
    const bool guided = req.guide != nullptr;
    if (guided) edges::check(*req.guide, req.edges, p.height, p.width);
    // Validated whether or not the score is wanted. With a guide every test is
    // on the filtered probability instead of the logit.
    std::array<float, 2> stab = stability_thresholds(req.threshold, req.stability_offset);
    float thr = threshold_logit(req.threshold);
    if (guided) {
        const std::array<float, 3> cuts = edges::probability_cuts(req.threshold, req.stability_offset);
        thr = cuts[0];
        stab = {cuts[1], cuts[2]};
    }
    check_buffer(req.masks, req.masks_size, p.total, "masks");
    check_buffer(req.probs_f32, req.probs_f32_size, p.total, "float32 probabilities");
    check_buffer(req.probs_u8, req.probs_u8_size, p.total, "uint8 probabilities");

    Result result;
    const bool wanted = req.masks != nullptr || req.probs_f32 != nullptr ||
                        req.probs_u8 != nullptr || req.rle || req.area || req.bbox || req.score ||
                        req.stability;
    if (p.k == 0 || !wanted) return result;
    const std::size_t K = p.k, H = p.height, W = p.width;
    const Axis cols = make_axis(p.w, W);
    const Axis rows = make_axis(p.h, H);
    const RowOps& ops = row_ops();
    const unsigned threads = resolve_threads(req.threads);
    const std::size_t nb = blocks_per_mask(p, threads);
    const std::size_t rows_per_block = (H + nb - 1) / nb;
    const std::size_t blocks = (H + rows_per_block - 1) / rows_per_block;
    const bool need_stats = req.area || req.bbox || req.score;
    // Edge-aware: the filter's coefficients, in pooled memory taken only then (see detail::Pool).
    static const edges::Coefficients kNoCoefficients;
    std::optional<detail::Pool<PooledCoefficients>::Lease> coef_lease;
    edges::Coefficients* guided_coef = nullptr;
    if (guided) {
        coef_lease.emplace(g_coefficients.take());
        guided_coef = &(*coef_lease)->value;
        edges::coefficients_into(logits, logits_size, K, p.h, p.w, *req.guide, req.edges, threads, *guided_coef);
    }
    const edges::Coefficients& coef = guided ? *guided_coef : kNoCoefficients;
    Axis coef_cols, coef_rows;  // from the filter's grid
    if (guided) coef_cols = make_axis(coef.width, W), coef_rows = make_axis(coef.height, H);
    // The guide's planes: converted by the coefficients' pass, or the caller's grey image itself.
    const std::uint8_t* guide_planes[3] = {};
    for (std::size_t c = 0; guided && c + 1 < coef.planes; ++c) {
        guide_planes[c] = coef.planes_u8.empty() ? req.guide->pixels : coef.planes_u8.data() + c * p.plane;
    }

    std::vector<Block> out_blocks(K * blocks);
    std::vector<double> row_score(req.score ? K * H : 0);
    // Rows 0 and H-1 of each mask: the RLE boundary at the top of column c
    // depends on the bottom of column c - 1.
    std::vector<std::uint8_t> edge_rows(req.rle ? K * 2 * W : 0);
    std::vector<Scratch> scratch(parallel_workers(K * blocks, threads));

    parallel_for(K * blocks, threads, [&](std::size_t item, std::size_t worker) {
        const std::size_t i = item / blocks;
        const std::size_t R0 = (item % blocks) * rows_per_block;
        const std::size_t R1 = std::min(H, R0 + rows_per_block);
        Scratch& s = scratch[worker];
        s.reset(W, coef.planes);
        s.mrow[0].resize(W);
        s.mrow[1].resize(W);
        if (req.score || req.probs_u8 != nullptr) s.prob.resize(W);
        if (req.score) s.tmp.resize(W);
        Block& b = out_blocks[item];
        const RowSource src{ops, logits + i * p.h * p.w, p.w, cols, rows};
        const EdgeSource edge{coef.data.data() + i * coef.planes * coef.height * coef.width, coef.planes,
                              coef.height, coef.width, &coef_cols, &coef_rows,
                              {guide_planes[0], guide_planes[1], guide_planes[2]}};
        // Output row R (the upsampled logits, or with a guide the filtered
        // probabilities) and its mask bytes.
        const auto output_row = [&](std::size_t R, std::uint8_t* mask) -> const float* {
            return guided ? s.edge_row(src, edge, R, mask, thr) : s.upsample_row(src, R, nullptr, mask, thr);
        };
        const std::size_t plane_off = i * H;  // row index of this mask's row 0
        int spare = 0;                        // which scratch mask row is free
        const std::uint8_t* prev = nullptr;
        if (req.rle && R0 > 0) {
            // The row above the block, for its first row's boundaries.
            output_row(R0 - 1, s.mrow[spare].data());
            prev = s.mrow[spare].data();
            spare ^= 1;
        }
        if (req.rle) b.row_trans.reserve(R1 - R0);
        for (std::size_t R = R0; R < R1; ++R) {
            const std::size_t off = (plane_off + R) * W;
            float* probs_row = req.probs_f32 != nullptr ? req.probs_f32 + off : nullptr;
            std::uint8_t* m;
            if (req.masks != nullptr) {
                m = req.masks + off;
            } else {
                m = s.mrow[spare].data();
                spare ^= 1;
            }
            const float* v = output_row(R, m);
            // Probabilities over the whole row when returned; the score needs
            // them over the foreground only. A guided row is probabilities already.
            const float* prob = guided ? v : nullptr;
            if (probs_row != nullptr) {
                if (guided) std::memcpy(probs_row, v, W * sizeof(float));
                else ops.sigmoid(v, W, probs_row);
                prob = probs_row;
            }
            if (req.probs_u8 != nullptr) {
                if (prob == nullptr) {
                    ops.sigmoid(v, W, s.prob.data());
                    prob = s.prob.data();
                }
                ops.to_u8(prob, W, req.probs_u8 + off);
            }
            if (req.rle) {
                const std::size_t before = b.trans.size();
                if (R > 0) row_transitions(m, prev, W, b.trans);
                b.row_trans.push_back(static_cast<std::uint32_t>(b.trans.size() - before));
                if (R == 0) std::memcpy(&edge_rows[i * 2 * W], m, W);
                if (R == H - 1) std::memcpy(&edge_rows[i * 2 * W + W], m, W);
            }
            prev = m;
            if (req.stability) {
                // Over the whole row: L - d can select pixels of a row whose mask is empty.
                std::uint32_t above[2];
                ops.count_above(v, W, stab[0], stab[1], above);
                b.above_lo += above[0];
                b.above_hi += above[1];
            }
            if (!need_stats) continue;
            const std::size_t c0 = first_set(m, W);
            if (c0 == W) continue;  // empty row
            const std::size_t c1 = last_set(m, W);
            b.area += ops.count(m + c0, c1 - c0 + 1);
            if (!b.any) {
                b.any = true;
                b.min_r = R, b.min_c = c0, b.max_c = c1;
            } else {
                b.min_c = std::min(b.min_c, c0), b.max_c = std::max(b.max_c, c1);
            }
            b.max_r = R;
            if (req.score) {
                const std::size_t len = c1 - c0 + 1;
                if (prob == nullptr) {
                    ops.sigmoid(v + c0, len, s.prob.data() + c0);
                    prob = s.prob.data();
                }
                row_score[plane_off + R] = ops.masked_sum(prob + c0, m + c0, len, s.tmp.data());
            }
        }
    });

    // A pooled copy of a huge image's guide planes is not worth keeping for the next call.
    constexpr std::size_t kKeepGuideBytes = std::size_t{64} << 20;
    if (guided && guided_coef->planes_u8.capacity() > kKeepGuideBytes) {
        std::vector<std::uint8_t>().swap(guided_coef->planes_u8);
    }

    if (req.area) result.area.assign(K, 0);
    if (req.bbox) result.bbox.assign(K, {0.0, 0.0, 0.0, 0.0});
    if (req.score) result.score.assign(K, 0.0);
    if (req.stability) result.stability.assign(K, 1.0);
    if (req.rle) result.rle.resize(K);

    // Per mask: combine the blocks in row order (deterministic), then the RLE.
    parallel_for(K, threads, [&](std::size_t i, std::size_t worker) {
        const Block* bl = &out_blocks[i * blocks];
        std::uint64_t area = 0, above_hi = 0, above_lo = 0;
        bool any = false;
        std::size_t min_r = 0, max_r = 0, min_c = 0, max_c = 0;
        for (std::size_t j = 0; j < blocks; ++j) {
            const Block& b = bl[j];
            area += b.area;
            above_hi += b.above_hi, above_lo += b.above_lo;
            if (!b.any) continue;
            if (!any) {
                any = true;
                min_r = b.min_r, min_c = b.min_c, max_c = b.max_c;
            } else {
                min_c = std::min(min_c, b.min_c), max_c = std::max(max_c, b.max_c);
            }
            max_r = b.max_r;
        }
        if (req.area) result.area[i] = area;
        if (req.bbox && any) {
            result.bbox[i] = {static_cast<double>(min_c), static_cast<double>(min_r),
                              static_cast<double>(max_c - min_c + 1),
                              static_cast<double>(max_r - min_r + 1)};
        }
        if (req.score && area > 0) {
            double sum = 0.0;
            for (std::size_t R = 0; R < H; ++R) sum += row_score[i * H + R];
            result.score[i] = sum / static_cast<double>(area);
        }
        // Both counts 0: the two masks are identical (empty), stability 1.
        if (req.stability && above_lo > 0) {
            result.stability[i] = static_cast<double>(above_hi) / static_cast<double>(above_lo);
        }
        if (!req.rle) return;

        // Bucket the boundaries by column (counting sort; rows stay ascending
        // within a column because blocks and rows are visited in order).
        Scratch& s = scratch[worker];
        const std::uint8_t* top = &edge_rows[i * 2 * W];
        const std::uint8_t* bottom = top + W;
        auto& start = s.col_start;
        start.assign(W + 1, 0);
        std::size_t* count = start.data() + 1;
        std::size_t total = 0;
        for (std::size_t c = 0; c < W; ++c) {
            // COCO starts with background, then continues from the previous column's bottom.
            const std::uint8_t above = c > 0 ? bottom[c - 1] : 0;
            if (top[c] != above) ++count[c], ++total;
        }
        for (std::size_t j = 0; j < blocks; ++j) {
            for (const std::uint32_t c : bl[j].trans) ++count[c];
            total += bl[j].trans.size();
        }
        for (std::size_t c = 0; c < W; ++c) start[c + 1] += start[c];
        auto& by_col = s.rows_by_col;
        by_col.resize(total);
        for (std::size_t c = 0; c < W; ++c) {
            const std::uint8_t above = c > 0 ? bottom[c - 1] : 0;
            if (top[c] != above) by_col[start[c]++] = 0;
        }
        for (std::size_t j = 0; j < blocks; ++j) {
            const Block& b = bl[j];
            std::size_t k = 0;
            std::uint32_t R = static_cast<std::uint32_t>(j * rows_per_block);
            for (const std::uint32_t n : b.row_trans) {
                for (const std::size_t end = k + n; k < end; ++k) by_col[start[b.trans[k]]++] = R;
                ++R;
            }
        }
        // Each start[c] now marks the end of column c's bucket.
        auto& counts = s.counts;
        counts.clear();
        counts.reserve(total + 1);
        std::uint64_t last = 0;
        std::size_t k = 0;
        for (std::size_t c = 0; c < W; ++c) {
            const std::uint64_t base = static_cast<std::uint64_t>(c) * H;
            for (const std::size_t end = start[c]; k < end; ++k) {
                const std::uint64_t pos = base + by_col[k];
                counts.push_back(pos - last);
                last = pos;
            }
        }
        counts.push_back(p.plane - last);
        result.rle[i] = rle::counts_to_string(counts);
    });
    return result;
}

void upsample(const float* logits, std::size_t logits_size, const Shape& shape, float* out,
              std::size_t out_size, unsigned threads_in) {
    const Plan p = validate(logits, logits_size, shape);
    if (out == nullptr && p.total > 0) fail("output pointer is null");
    if (out_size < p.total) {
        fail("output buffer holds " + std::to_string(out_size) + " floats but K x H x W = " +
             std::to_string(p.total));
    }
    if (p.k == 0) return;
    const std::size_t H = p.height, W = p.width;
    const Axis cols = make_axis(p.w, W);
    const Axis rows = make_axis(p.h, H);
    const RowOps& ops = row_ops();
    const unsigned threads = resolve_threads(threads_in);
    const std::size_t nb = blocks_per_mask(p, threads);
    const std::size_t rows_per_block = (H + nb - 1) / nb;
    const std::size_t blocks = (H + rows_per_block - 1) / rows_per_block;
    std::vector<Scratch> scratch(parallel_workers(p.k * blocks, threads));
    parallel_for(p.k * blocks, threads, [&](std::size_t item, std::size_t worker) {
        const std::size_t i = item / blocks;
        const std::size_t R0 = (item % blocks) * rows_per_block;
        const std::size_t R1 = std::min(H, R0 + rows_per_block);
        Scratch& s = scratch[worker];
        s.reset(W);
        const RowSource src{ops, logits + i * p.h * p.w, p.w, cols, rows};
        for (std::size_t R = R0; R < R1; ++R) s.upsample_row(src, R, out + (i * H + R) * W);
    });
}

}  // namespace fastclipseg::postprocess

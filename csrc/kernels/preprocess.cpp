// Preprocessing kernels; see fastclipseg/preprocess.hpp for what is computed.
//
// Pipeline per image, per band of output rows (one work item), exactly
// Pillow's two-pass ImagingResample with an 8-bit intermediate:
//   horizontal first (usual case): source rows --horizontal--> rows of S
//     pixels (4 bytes: c0 c1 c2 0) --vertical--> output row --lookup--> out.
//     Only the source rows the vertical pass needs are resampled, a few at a
//     time just ahead of the output rows that need them, so the
//     intermediate stays in cache.
//   vertical first (when the installed Pillow's rule says so, see PassOrder:
//     Pillow >= 13 when the height shrinks more than twice as much as the
//     width, Pillow 12 when h > 100 w): source rows --vertical--> one row of W pixels
//     --horizontal--> output row --lookup--> out.
//
// The horizontal pass dominates (it touches every source pixel). Its AVX2
// kernel keeps Pillow's 22-bit coefficients exact: each coefficient is split
// as k = hi * 2^15 + lo with both halves in int16, and pmaddwd accumulates
// pixel*hi and pixel*lo separately; (sum_hi << 15) + sum_lo is the exact
// int32 sum Pillow computes, so the rounding and clipping that follow are
// Pillow's bit for bit. The portable scalar kernel is Pillow's loop itself.
#include "fastclipseg/preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "detail.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FASTCLIPSEG_X86_SIMD 1
#include <immintrin.h>
#define FASTCLIPSEG_AVX2 __attribute__((target("avx2")))
#else
#define FASTCLIPSEG_X86_SIMD 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FASTCLIPSEG_INLINE inline __attribute__((always_inline))
#else
#define FASTCLIPSEG_INLINE inline
#endif

namespace fastclipseg::preprocess {
namespace {

// Pillow's fixed point: 8 bits of result, 2 spare bits for sums outside
// [0, 1) (libImaging/Resample.c).
constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr std::int32_t kHalf = std::int32_t{1} << (kPrecisionBits - 1);
// Split of a coefficient into int16 halves for pmaddwd: lo < 2^15 fits int16
// and hi = k >> 15 <= 2^7.
constexpr int kSplitBits = 15;
// Output rows resampled per step of a work item (the horizontal rows they
// need are produced just before).
constexpr int kChunkRows = 8;
// Source rows the SIMD horizontal kernel handles per call (they share the
// coefficient loads).
constexpr int kRowBlock = 4;

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("preprocess: " + msg); }

std::string image_name(std::size_t index) { return "image #" + std::to_string(index); }

// Pillow computes the weights in double with separate multiplies and adds
// (its generic x86-64 build has no FMA). Routing the products through a
// volatile stops a compiler given -mfma/-march=native from contracting
// a * b + c into one FMA, which would change the last bit of a weight and,
// rarely, a resampled pixel.
double opaque(double v) {
    volatile double t = v;
    return t;
}

double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

// Pillow's clip8 for the range a bilinear sum can reach.
FASTCLIPSEG_INLINE std::uint8_t clip8(std::int32_t ss) {
    const std::int32_t v = ss >> kPrecisionBits;
    return static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// ---------------------------------------------------------------------------
// Coefficients for one axis (in -> out), Pillow's precompute_coeffs +
// normalize_coeffs_8bpc.
// ---------------------------------------------------------------------------
struct Axis {
    int in = 0;
    int out = 0;
    int ksize = 0;     // coefficient stride per output (Pillow's ksize)
    int max_taps = 0;  // longest window actually used
    std::vector<int> start;       // first source index of each window (xmin)
    std::vector<int> taps;        // window length (Pillow's xmax after "-= xmin")
    std::vector<std::int32_t> k;  // out * ksize fixed-point coefficients
    // SIMD layout (horizontal axis only): per output, `groups` blocks of
    // 4 taps, each 16 int16 of hi halves then 16 of lo halves, arranged for
    // the shuffle in hrows_avx2: lane L (of 2) holds the pair of taps
    // (4g + 2L, 4g + 2L + 1) repeated for 4 channel slots.
    int groups = 0;
    std::vector<std::int16_t> packed;
};

Axis build_axis(int in, int out, bool pack) {
    Axis ax;
    ax.in = in;
    ax.out = out;
    // Pillow takes the box as floats: in1 - in0 is a float subtraction.
    const float in0 = 0.0f;
    const float in1 = static_cast<float>(in);
    const double scale = static_cast<double>(in1 - in0) / out;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 1.0 * filterscale;  // bilinear support is 1
    ax.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    ax.start.resize(out);
    ax.taps.resize(out);
    ax.k.assign(static_cast<std::size_t>(out) * ax.ksize, 0);
    std::vector<double> w(ax.ksize);
    for (int xx = 0; xx < out; ++xx) {
        const double center = in0 + opaque((xx + 0.5) * scale);
        double ww = 0.0;
        const double ss = 1.0 / filterscale;
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in) xmax = in;
        xmax -= xmin;
        for (int x = 0; x < xmax; ++x) {
            const double v = bilinear_filter(opaque((x + xmin - center + 0.5) * ss));
            w[x] = v;
            ww += v;
        }
        for (int x = 0; x < xmax; ++x) {
            if (ww != 0.0) w[x] /= ww;
        }
        std::int32_t* k = &ax.k[static_cast<std::size_t>(xx) * ax.ksize];
        for (int x = 0; x < xmax; ++x) {
            // Round half away from zero, as normalize_coeffs_8bpc.
            k[x] = w[x] < 0 ? static_cast<std::int32_t>(-0.5 + w[x] * (1 << kPrecisionBits))
                            : static_cast<std::int32_t>(0.5 + w[x] * (1 << kPrecisionBits));
        }
        ax.start[xx] = xmin;
        ax.taps[xx] = xmax;
        ax.max_taps = std::max(ax.max_taps, xmax);
    }
    if (pack) {
        ax.groups = std::max(1, (ax.max_taps + 3) / 4);
        ax.packed.assign(static_cast<std::size_t>(out) * ax.groups * 32, 0);
        for (int xx = 0; xx < out; ++xx) {
            const std::int32_t* k = &ax.k[static_cast<std::size_t>(xx) * ax.ksize];
            for (int g = 0; g < ax.groups; ++g) {
                std::int16_t* dst = &ax.packed[(static_cast<std::size_t>(xx) * ax.groups + g) * 32];
                for (int e = 0; e < 16; ++e) {
                    const int tap = 4 * g + 2 * (e / 8) + (e & 1);
                    const std::int32_t kk = tap < ax.taps[xx] ? k[tap] : 0;
                    // kk >= 0 for bilinear; the split is exact for either sign.
                    dst[e] = static_cast<std::int16_t>(kk >> kSplitBits);
                    dst[16 + e] = static_cast<std::int16_t>(kk & ((1 << kSplitBits) - 1));
                }
            }
        }
    }
    return ax;
}

// Coefficients are computed once per (in, out) size and kept in a small
// process-wide cache: a video feeds the same frame size over and over.
std::shared_ptr<const Axis> get_axis(int in, int out, bool pack) {
    constexpr std::size_t kCacheEntries = 16;
    constexpr std::size_t kCacheMaxCoeffs = std::size_t{1} << 20;  // skip huge tables
    static std::mutex mutex;
    static std::vector<std::pair<std::tuple<int, int, bool>, std::shared_ptr<const Axis>>> cache;
    const auto key = std::make_tuple(in, out, pack);
    {
        std::lock_guard<std::mutex> lock(mutex);
        for (std::size_t i = 0; i < cache.size(); ++i) {
            if (cache[i].first == key) {
                auto hit = cache[i].second;
                // Move to the back: the front is evicted first.
                std::rotate(cache.begin() + static_cast<std::ptrdiff_t>(i),
                            cache.begin() + static_cast<std::ptrdiff_t>(i) + 1, cache.end());
                return hit;
            }
        }
    }
    auto axis = std::make_shared<const Axis>(build_axis(in, out, pack));
    if (axis->k.size() <= kCacheMaxCoeffs) {
        std::lock_guard<std::mutex> lock(mutex);
        if (cache.size() >= kCacheEntries) cache.erase(cache.begin());
        cache.emplace_back(key, axis);
    }
    return axis;
}

// ---------------------------------------------------------------------------
// Per-image plan: how the source is read.
// ---------------------------------------------------------------------------
struct Plan {
    const Image* image = nullptr;
    std::size_t slot = 0;      // output image index
    int width = 0;
    bool vertical_first = false;
    std::ptrdiff_t off[3]{};   // byte offset of output channel c within a pixel
    std::shared_ptr<const Axis> hx, vy;
    // SIMD reading. In place when each pixel's three used bytes lie in a
    // positive column stride P <= 4 (packed RGB, RGBA, grey, BGR views...):
    // 16-byte loads then cover 4 taps. Windows whose loads would run past the
    // row (the last few outputs), and whole rows of other layouts, are read
    // from a zero-padded packed copy ("staged") instead.
    bool inplace = false;
    int pixel = 3;                  // P
    std::ptrdiff_t base_off = 0;    // lowest used byte of pixel 0
    alignas(32) std::uint8_t mask_inplace[32]{};
    int n_safe = 0;                 // outputs [0, n_safe) read in place
    int tail_start = 0;             // first source pixel staged
    std::size_t stage_len = 0;      // bytes of one staged row
    int row_bytes = 0;              // in place: readable bytes of a row from base_off
};

// Whether the installed Pillow's rule (see PassOrder) runs the vertical pass
// first. The order changes the 8-bit rounding of the intermediate, hence
// (rarely, by 1) the result.
bool vertical_first(int h, int w, int size, PassOrder order) {
    switch (order) {
        case PassOrder::kPillow13: {
            // "If height is being scaled down more than twice the amount the
            // width is, run the vertical pass first".
            const long long dy = static_cast<long long>(h) - size;
            const long long dx = static_cast<long long>(w) - size;
            return dy > 0 && dy > dx * 2;
        }
        case PassOrder::kPillow12:
            // A height-only resize, then a width-only one: the same arithmetic
            // as the vertical pass followed by the horizontal pass.
            return static_cast<long long>(h) > static_cast<long long>(w) * 100 && size < h;
        case PassOrder::kHorizontalFirst:
            return false;
    }
    return false;
}

// pshufb mask for P-byte pixels whose used channels sit at byte offsets o[c]:
// in 128-bit lane L, int16 element 2c + j is channel c of tap 2L + j
// (zero-extended), elements 6 and 7 are zero.
void make_mask(int pixel, const int o[3], std::uint8_t mask[32]) {
    for (int lane = 0; lane < 2; ++lane) {
        for (int b = 0; b < 16; ++b) mask[16 * lane + b] = 0x80;
        for (int c = 0; c < 3; ++c) {
            for (int j = 0; j < 2; ++j) {
                mask[16 * lane + 4 * c + 2 * j] = static_cast<std::uint8_t>((2 * lane + j) * pixel + o[c]);
            }
        }
    }
}

Plan make_plan(const Image& im, std::size_t slot, std::size_t size, bool bgr, bool simd,
               PassOrder pass_order) {
    Plan p;
    p.image = &im;
    p.slot = slot;
    p.width = static_cast<int>(im.width);
    p.vertical_first = vertical_first(static_cast<int>(im.height), p.width, static_cast<int>(size), pass_order);
    for (int c = 0; c < 3; ++c) {
        const int used = im.channels == 1 ? 0 : (bgr ? 2 - c : c);
        p.off[c] = used * im.channel_stride;
    }
    const int s = static_cast<int>(size);
    p.hx = get_axis(p.width, s, simd);
    p.vy = get_axis(static_cast<int>(im.height), s, false);
    if (!simd) return p;
    const Axis& hx = *p.hx;
    const std::ptrdiff_t lo = std::min({p.off[0], p.off[1], p.off[2]});
    const std::ptrdiff_t hi = std::max({p.off[0], p.off[1], p.off[2]});
    const std::ptrdiff_t span = hi - lo;
    const std::ptrdiff_t cs = im.col_stride;
    p.inplace = cs >= 1 && cs <= 4 && 3 * cs + span <= 15;
    if (p.inplace) {
        p.pixel = static_cast<int>(cs);
        p.base_off = lo;
        const int o[3] = {static_cast<int>(p.off[0] - lo), static_cast<int>(p.off[1] - lo),
                          static_cast<int>(p.off[2] - lo)};
        make_mask(p.pixel, o, p.mask_inplace);
        // Bytes of a row readable from its lowest used byte of pixel 0.
        const std::ptrdiff_t readable = static_cast<std::ptrdiff_t>(p.width - 1) * cs + span + 1;
        p.row_bytes = static_cast<int>(readable);
        while (p.n_safe < s &&
               cs * (hx.start[p.n_safe] + 4 * (hx.groups - 1)) + 16 <= readable) {
            ++p.n_safe;
        }
    }
    p.tail_start = p.n_safe < s ? hx.start[p.n_safe] : p.width;
    p.stage_len = static_cast<std::size_t>(p.width - p.tail_start) * 3 +
                  static_cast<std::size_t>(hx.groups) * 12 + 16;
    return p;
}

inline const std::uint8_t* row_ptr(const Image& im, int y) {
    return im.data + static_cast<std::ptrdiff_t>(y) * im.row_stride;
}

// Packed 3-byte copy of source pixels [t0, width) of row y (channels already
// mapped for grey/BGR), zero-padded to stage_len.
void stage_row(const Plan& p, int y, int t0, std::uint8_t* dst) {
    const Image& im = *p.image;
    const std::uint8_t* row = row_ptr(im, y);
    const std::ptrdiff_t cs = im.col_stride;
    std::uint8_t* d = dst;
    for (int x = t0; x < p.width; ++x, d += 3) {
        const std::uint8_t* px = row + static_cast<std::ptrdiff_t>(x) * cs;
        d[0] = px[p.off[0]];
        d[1] = px[p.off[1]];
        d[2] = px[p.off[2]];
    }
    std::memset(d, 0, p.stage_len - static_cast<std::size_t>(d - dst));
}

// ---------------------------------------------------------------------------
// Horizontal pass
// ---------------------------------------------------------------------------

// Pillow's ImagingResampleHorizontal_8bpc loop for one row whose pixel x,
// channel c is at row[x * cs + off[c]]. Output: 4 bytes per pixel (c0 c1 c2 0).
void hrow_scalar(const std::uint8_t* row, std::ptrdiff_t cs, const std::ptrdiff_t* off,
                 const Axis& ax, std::uint8_t* out) {
    for (int xx = 0; xx < ax.out; ++xx) {
        const std::int32_t* k = &ax.k[static_cast<std::size_t>(xx) * ax.ksize];
        const std::uint8_t* px = row + static_cast<std::ptrdiff_t>(ax.start[xx]) * cs;
        const int n = ax.taps[xx];
        std::int32_t s0 = kHalf, s1 = kHalf, s2 = kHalf;
        for (int t = 0; t < n; ++t) {
            const std::uint8_t* q = px + static_cast<std::ptrdiff_t>(t) * cs;
            s0 += q[off[0]] * k[t];
            s1 += q[off[1]] * k[t];
            s2 += q[off[2]] * k[t];
        }
        out[4 * xx] = clip8(s0);
        out[4 * xx + 1] = clip8(s1);
        out[4 * xx + 2] = clip8(s2);
        out[4 * xx + 3] = 0;
    }
}

#if FASTCLIPSEG_X86_SIMD
// Exact int32 channel sums of one output pixel whose window starts at `src`:
// lane L of the result holds [c0 c1 c2 0] over taps 4g + 2L, 4g + 2L + 1.
template <int kGroups>
FASTCLIPSEG_AVX2 FASTCLIPSEG_INLINE __m256i window_sums(const std::uint8_t* src, const __m256i* kc,
                                                         int groups, std::ptrdiff_t step, __m256i mask) {
    __m256i hi = _mm256_setzero_si256();
    __m256i lo = _mm256_setzero_si256();
    const int n = kGroups > 0 ? kGroups : groups;
    for (int g = 0; g < n; ++g) {
        __m256i v = _mm256_broadcastsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + g * step)));
        v = _mm256_shuffle_epi8(v, mask);
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(v, _mm256_loadu_si256(kc + 2 * g)));
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(v, _mm256_loadu_si256(kc + 2 * g + 1)));
    }
    // (sum hi) * 2^15 + sum lo: the exact sum Pillow accumulates.
    return _mm256_add_epi32(_mm256_slli_epi32(hi, kSplitBits), lo);
}

// Outputs [x0, x1) of up to kRowBlock rows. Row r's source pixel s starts at
// bases[r] + (s - origin) * pixel; `mask` picks the channels (make_mask).
// Every 16-byte load is within the caller's readable bytes (Plan::n_safe and
// stage_len guarantee it); taps past a window have coefficient 0.
template <int kGroups>
FASTCLIPSEG_AVX2 void hrows_avx2(const std::uint8_t* const* bases, int nrows, int pixel,
                                 int origin, const std::uint8_t* mask_bytes, const Axis& ax,
                                 int x0, int x1, std::uint8_t* const* outs) {
    const int groups = kGroups > 0 ? kGroups : ax.groups;
    const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mask_bytes));
    const __m256i half = _mm256_set1_epi32(kHalf);
    const std::ptrdiff_t step = 4 * static_cast<std::ptrdiff_t>(pixel);
    const std::size_t kstride = static_cast<std::size_t>(groups) * 32;
    const auto coeffs = [&](int xx) {
        return reinterpret_cast<const __m256i*>(ax.packed.data() + static_cast<std::size_t>(xx) * kstride);
    };
    const auto offset = [&](int xx) { return static_cast<std::ptrdiff_t>(ax.start[xx] - origin) * pixel; };
    int xx = x0;
    // Four outputs at a time share the lane folding, rounding and packing
    // (the horizontal pass is bound by vector-ALU uops, not loads).
    for (; xx + 4 <= x1; xx += 4) {
        const __m256i* k0 = coeffs(xx);
        const __m256i* k1 = coeffs(xx + 1);
        const __m256i* k2 = coeffs(xx + 2);
        const __m256i* k3 = coeffs(xx + 3);
        const std::ptrdiff_t o0 = offset(xx), o1 = offset(xx + 1), o2 = offset(xx + 2), o3 = offset(xx + 3);
        for (int r = 0; r < nrows; ++r) {
            const std::uint8_t* b = bases[r];
            const __m256i a = window_sums<kGroups>(b + o0, k0, groups, step, mask);
            const __m256i bb = window_sums<kGroups>(b + o1, k1, groups, step, mask);
            const __m256i c = window_sums<kGroups>(b + o2, k2, groups, step, mask);
            const __m256i d = window_sums<kGroups>(b + o3, k3, groups, step, mask);
            // Fold the two lanes: [a | c] and [b | d] per-channel sums.
            __m256i ac = _mm256_add_epi32(_mm256_permute2x128_si256(a, c, 0x20),
                                          _mm256_permute2x128_si256(a, c, 0x31));
            __m256i bd = _mm256_add_epi32(_mm256_permute2x128_si256(bb, d, 0x20),
                                          _mm256_permute2x128_si256(bb, d, 0x31));
            ac = _mm256_srai_epi32(_mm256_add_epi32(ac, half), kPrecisionBits);
            bd = _mm256_srai_epi32(_mm256_add_epi32(bd, half), kPrecisionBits);
            // Saturating packs clamp to [0, 255], as clip8; bytes a b | c d.
            __m256i v = _mm256_packs_epi32(ac, bd);
            v = _mm256_packus_epi16(v, v);
            v = _mm256_permute4x64_epi64(v, 0x08);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(outs[r] + 4 * static_cast<std::ptrdiff_t>(xx)),
                             _mm256_castsi256_si128(v));
        }
    }
    for (; xx < x1; ++xx) {
        const __m256i* kc = coeffs(xx);
        const std::ptrdiff_t off = offset(xx);
        for (int r = 0; r < nrows; ++r) {
            const __m256i acc = window_sums<kGroups>(bases[r] + off, kc, groups, step, mask);
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
            s = _mm_srai_epi32(_mm_add_epi32(s, _mm256_castsi256_si128(half)), kPrecisionBits);
            s = _mm_packus_epi16(_mm_packs_epi32(s, s), s);
            const std::int32_t px = _mm_cvtsi128_si32(s);
            std::memcpy(outs[r] + 4 * static_cast<std::ptrdiff_t>(xx), &px, 4);
        }
    }
}

void hrows_simd(const std::uint8_t* const* bases, int nrows, int pixel, int origin,
                const std::uint8_t* mask, const Axis& ax, int x0, int x1,
                std::uint8_t* const* outs) {
    if (x0 >= x1) return;
    switch (ax.groups) {
        case 1: return hrows_avx2<1>(bases, nrows, pixel, origin, mask, ax, x0, x1, outs);
        case 2: return hrows_avx2<2>(bases, nrows, pixel, origin, mask, ax, x0, x1, outs);
        case 3: return hrows_avx2<3>(bases, nrows, pixel, origin, mask, ax, x0, x1, outs);
        case 4: return hrows_avx2<4>(bases, nrows, pixel, origin, mask, ax, x0, x1, outs);
        case 5: return hrows_avx2<5>(bases, nrows, pixel, origin, mask, ax, x0, x1, outs);
        case 6: return hrows_avx2<6>(bases, nrows, pixel, origin, mask, ax, x0, x1, outs);
        default: return hrows_avx2<0>(bases, nrows, pixel, origin, mask, ax, x0, x1, outs);
    }
}
#endif

// alignas: the workers' scratch objects are allocated one after another;
// keep each on its own cache lines.
struct alignas(64) Scratch {
    std::vector<std::uint8_t> rows;   // horizontally resampled rows, 4 * S bytes each
    std::vector<std::uint8_t> stage;  // kRowBlock staged source rows
    std::vector<std::int32_t> acc;    // vertical accumulators
    std::vector<std::uint8_t> line;   // one output row, 4 * S bytes
};

// Source rows [a, b) into dst (row pitch 4 * S).
void horizontal(const Plan& p, int a, int b, std::uint8_t* dst, Scratch& sc, bool simd) {
    const std::size_t pitch = 4 * static_cast<std::size_t>(p.hx->out);
#if FASTCLIPSEG_X86_SIMD
    if (simd) {
        static const std::uint8_t* const kStdMask = [] {
            static std::uint8_t m[32];
            const int o[3] = {0, 1, 2};
            make_mask(3, o, m);
            return m;
        }();
        const Axis& ax = *p.hx;
        if (sc.stage.size() < kRowBlock * p.stage_len) sc.stage.resize(kRowBlock * p.stage_len);
        for (int y = a; y < b; y += kRowBlock) {
            const int n = std::min(kRowBlock, b - y);
            const std::uint8_t* bases[kRowBlock];
            std::uint8_t* outs[kRowBlock];
            for (int r = 0; r < n; ++r) outs[r] = dst + static_cast<std::size_t>(y - a + r) * pitch;
            if (p.inplace && p.n_safe > 0) {
                for (int r = 0; r < n; ++r) bases[r] = row_ptr(*p.image, y + r) + p.base_off;
                hrows_simd(bases, n, p.pixel, 0, p.mask_inplace, ax, 0, p.n_safe, outs);
            }
            if (p.n_safe < ax.out) {
                for (int r = 0; r < n; ++r) {
                    std::uint8_t* st = sc.stage.data() + static_cast<std::size_t>(r) * p.stage_len;
                    stage_row(p, y + r, p.tail_start, st);
                    bases[r] = st;
                }
                hrows_simd(bases, n, 3, p.tail_start, kStdMask, ax, p.n_safe, ax.out, outs);
            }
        }
        return;
    }
#else
    (void)sc;
    (void)simd;
#endif
    for (int y = a; y < b; ++y) {
        hrow_scalar(row_ptr(*p.image, y), p.image->col_stride, p.off, *p.hx,
                    dst + static_cast<std::size_t>(y - a) * pitch);
    }
}

// ---------------------------------------------------------------------------
// Vertical pass (ImagingResampleVertical_8bpc) over 4 * S bytes per row.
// Plain loops the compiler vectorises; built twice, generic and AVX2.
// ---------------------------------------------------------------------------
FASTCLIPSEG_INLINE void vertical_impl(const std::uint8_t* first, std::ptrdiff_t pitch,
                                      const std::int32_t* k, int taps, int n,
                                      std::int32_t* __restrict acc, std::uint8_t* __restrict out) {
    for (int i = 0; i < n; ++i) acc[i] = kHalf;
    int t = 0;
    for (; t + 1 < taps; t += 2) {
        const std::uint8_t* __restrict r0 = first + static_cast<std::ptrdiff_t>(t) * pitch;
        const std::uint8_t* __restrict r1 = r0 + pitch;
        const std::int32_t k0 = k[t], k1 = k[t + 1];
        for (int i = 0; i < n; ++i) acc[i] += r0[i] * k0 + r1[i] * k1;
    }
    if (t < taps) {
        const std::uint8_t* __restrict r0 = first + static_cast<std::ptrdiff_t>(t) * pitch;
        const std::int32_t k0 = k[t];
        for (int i = 0; i < n; ++i) acc[i] += r0[i] * k0;
    }
    for (int i = 0; i < n; ++i) {
        const std::int32_t v = acc[i] >> kPrecisionBits;
        out[i] = static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
    }
}

void vertical_generic(const std::uint8_t* first, std::ptrdiff_t pitch, const std::int32_t* k, int taps,
                      int n, std::int32_t* acc, std::uint8_t* out) {
    vertical_impl(first, pitch, k, taps, n, acc, out);
}

#if FASTCLIPSEG_X86_SIMD
// Accumulators of the AVX2 vertical pass: 32 output bytes, hi and lo halves.
struct VAcc {
    __m256i h[4];
    __m256i l[4];
};

// Adds rows x0 (coefficient part 0 of each pair) and x1 (part 1) to `a`.
FASTCLIPSEG_AVX2 FASTCLIPSEG_INLINE void vertical_pair(VAcc& a, __m256i x0, __m256i x1, std::int32_t hi,
                                                       std::int32_t lo) {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i kh = _mm256_set1_epi32(hi);
    const __m256i kl = _mm256_set1_epi32(lo);
    const __m256i bl = _mm256_unpacklo_epi8(x0, x1);  // per lane: a0 b0 .. a7 b7
    const __m256i bh = _mm256_unpackhi_epi8(x0, x1);  // per lane: a8 b8 .. a15 b15
    const __m256i p[4] = {_mm256_unpacklo_epi8(bl, zero), _mm256_unpackhi_epi8(bl, zero),
                          _mm256_unpacklo_epi8(bh, zero), _mm256_unpackhi_epi8(bh, zero)};
    for (int q = 0; q < 4; ++q) {
        a.h[q] = _mm256_add_epi32(a.h[q], _mm256_madd_epi16(p[q], kh));
        a.l[q] = _mm256_add_epi32(a.l[q], _mm256_madd_epi16(p[q], kl));
    }
}

FASTCLIPSEG_AVX2 FASTCLIPSEG_INLINE __m256i vertical_finish(__m256i h, __m256i l) {
    const __m256i sum = _mm256_add_epi32(_mm256_slli_epi32(h, kSplitBits), l);
    return _mm256_srai_epi32(_mm256_add_epi32(sum, _mm256_set1_epi32(kHalf)), kPrecisionBits);
}

// AVX2 vertical pass: 32 bytes of the row at a time, accumulated over all
// taps in registers. Rows are taken in pairs so that pmaddwd multiplies the
// pixels of rows t and t + 1 by their coefficients in one go, with the same
// exact hi/lo split as the horizontal pass; unpacking the two rows' bytes and
// the final packs are mirror images, so the bytes come out in order.
FASTCLIPSEG_AVX2 void vertical_avx2(const std::uint8_t* first, std::ptrdiff_t pitch,
                                    const std::int32_t* k, int taps, int n, std::int32_t* acc,
                                    std::uint8_t* out) {
    constexpr int kMaxPairs = 64;
    if (taps > 2 * kMaxPairs) {  // windows this long only come from extreme downscales
        vertical_impl(first, pitch, k, taps, n, acc, out);
        return;
    }
    // (k[2j] part, k[2j + 1] part) as int16 pairs, broadcast per pair of rows.
    std::int32_t pair_hi[kMaxPairs], pair_lo[kMaxPairs];
    const int pairs = (taps + 1) / 2;
    const auto pack16 = [](std::int32_t a, std::int32_t b) {
        return static_cast<std::int32_t>((static_cast<std::uint32_t>(b) << 16) |
                                         (static_cast<std::uint32_t>(a) & 0xffffu));
    };
    for (int j = 0; j < pairs; ++j) {
        const std::int32_t k0 = k[2 * j];
        const std::int32_t k1 = 2 * j + 1 < taps ? k[2 * j + 1] : 0;
        pair_hi[j] = pack16(k0 >> kSplitBits, k1 >> kSplitBits);
        pair_lo[j] = pack16(k0 & ((1 << kSplitBits) - 1), k1 & ((1 << kSplitBits) - 1));
    }
    const int full_pairs = taps / 2;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        VAcc a;
        for (int q = 0; q < 4; ++q) a.h[q] = a.l[q] = _mm256_setzero_si256();
        for (int j = 0; j < full_pairs; ++j) {
            const std::uint8_t* row = first + static_cast<std::ptrdiff_t>(2 * j) * pitch + i;
            vertical_pair(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row)),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + pitch)), pair_hi[j],
                          pair_lo[j]);
        }
        if (taps & 1) {
            const std::uint8_t* row = first + static_cast<std::ptrdiff_t>(taps - 1) * pitch + i;
            vertical_pair(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row)), _mm256_setzero_si256(),
                          pair_hi[full_pairs], pair_lo[full_pairs]);
        }
        const __m256i w0 = _mm256_packs_epi32(vertical_finish(a.h[0], a.l[0]), vertical_finish(a.h[1], a.l[1]));
        const __m256i w1 = _mm256_packs_epi32(vertical_finish(a.h[2], a.l[2]), vertical_finish(a.h[3], a.l[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_packus_epi16(w0, w1));
    }
    for (; i < n; ++i) {
        std::int32_t ss = kHalf;
        for (int t = 0; t < taps; ++t) ss += first[static_cast<std::ptrdiff_t>(t) * pitch + i] * k[t];
        out[i] = clip8(ss);
    }
}
#endif

// ---------------------------------------------------------------------------
// Output rows
// ---------------------------------------------------------------------------
struct Writer {
    enum Kind { kF32, kU16, kHwc } kind = kF32;
    void* out = nullptr;
    std::size_t size = 0;
    const float* f32 = nullptr;           // value table (kF32)
    const std::uint16_t* u16 = nullptr;   // value table (kU16)

    template <class T>
    static void planes(const std::uint8_t* line, std::size_t s, const T* table, T* o0, T* o1, T* o2) {
        const T* t0 = table;
        const T* t1 = table + 256;
        const T* t2 = table + 512;
        for (std::size_t x = 0; x < s; ++x) {
            o0[x] = t0[line[4 * x]];
            o1[x] = t1[line[4 * x + 1]];
            o2[x] = t2[line[4 * x + 2]];
        }
    }

    void row(std::size_t slot, int yy, const std::uint8_t* line) const {
        const std::size_t s = size;
        const std::size_t plane = s * s;
        const std::size_t at = slot * 3 * plane + static_cast<std::size_t>(yy) * s;
        switch (kind) {
            case kF32: {
                float* o = static_cast<float*>(out) + at;
                planes(line, s, f32, o, o + plane, o + 2 * plane);
                break;
            }
            case kU16: {
                std::uint16_t* o = static_cast<std::uint16_t*>(out) + at;
                planes(line, s, u16, o, o + plane, o + 2 * plane);
                break;
            }
            case kHwc: {
                std::uint8_t* o = static_cast<std::uint8_t*>(out) + static_cast<std::size_t>(yy) * s * 3;
                for (std::size_t x = 0; x < s; ++x) {
                    o[3 * x] = line[4 * x];
                    o[3 * x + 1] = line[4 * x + 1];
                    o[3 * x + 2] = line[4 * x + 2];
                }
                break;
            }
        }
    }
};

// Output rows [y0, y1) of one image.
void run_band(const Plan& p, int y0, int y1, const Writer& writer, Scratch& sc, bool simd) {
    const Axis& vy = *p.vy;
    const int s = p.hx->out;
    const std::size_t pitch = 4 * static_cast<std::size_t>(s);
    if (sc.acc.size() < pitch) sc.acc.resize(pitch);
    if (sc.line.size() < pitch) sc.line.resize(pitch);
    auto vertical = vertical_generic;
#if FASTCLIPSEG_X86_SIMD
    if (simd) vertical = vertical_avx2;
#endif
    int lo = 0, hi = 0;  // source rows [lo, hi) are resampled in sc.rows
    for (int ya = y0; ya < y1; ya += kChunkRows) {
        const int yb = std::min(ya + kChunkRows, y1);
        const int need_lo = vy.start[ya];
        int need_hi = need_lo;
        for (int yy = ya; yy < yb; ++yy) need_hi = std::max(need_hi, vy.start[yy] + vy.taps[yy]);
        // Windows only move down: keep the rows this chunk shares with the last.
        if (need_lo >= lo && need_lo < hi) {
            std::memmove(sc.rows.data(), sc.rows.data() + static_cast<std::size_t>(need_lo - lo) * pitch,
                         static_cast<std::size_t>(hi - need_lo) * pitch);
        } else {
            hi = need_lo;
        }
        lo = need_lo;
        const std::size_t bytes = static_cast<std::size_t>(need_hi - lo) * pitch;
        if (sc.rows.size() < bytes) sc.rows.resize(bytes);
        if (need_hi > hi) {
            horizontal(p, hi, need_hi, sc.rows.data() + static_cast<std::size_t>(hi - lo) * pitch, sc, simd);
            hi = need_hi;
        }
        for (int yy = ya; yy < yb; ++yy) {
            const std::uint8_t* first = sc.rows.data() + static_cast<std::size_t>(vy.start[yy] - lo) * pitch;
            vertical(first, static_cast<std::ptrdiff_t>(pitch), &vy.k[static_cast<std::size_t>(yy) * vy.ksize], vy.taps[yy],
                     static_cast<int>(pitch), sc.acc.data(), sc.line.data());
            writer.row(p.slot, yy, sc.line.data());
        }
    }
}

// Vertical pass straight from the source strides for output row yy, into a
// 4-byte-per-pixel row of W pixels (c0 c1 c2 0).
void vrow_strided(const Plan& p, int yy, std::uint8_t* out) {
    const Image& im = *p.image;
    const Axis& vy = *p.vy;
    const std::int32_t* k = &vy.k[static_cast<std::size_t>(yy) * vy.ksize];
    const std::uint8_t* first = row_ptr(im, vy.start[yy]);
    const int n = vy.taps[yy];
    for (int x = 0; x < p.width; ++x) {
        const std::uint8_t* px = first + static_cast<std::ptrdiff_t>(x) * im.col_stride;
        std::int32_t s0 = kHalf, s1 = kHalf, s2 = kHalf;
        for (int t = 0; t < n; ++t) {
            const std::uint8_t* q = px + static_cast<std::ptrdiff_t>(t) * im.row_stride;
            s0 += q[p.off[0]] * k[t];
            s1 += q[p.off[1]] * k[t];
            s2 += q[p.off[2]] * k[t];
        }
        out[4 * x] = clip8(s0);
        out[4 * x + 1] = clip8(s1);
        out[4 * x + 2] = clip8(s2);
        out[4 * x + 3] = 0;
    }
}

// Output rows [y0, y1) of one image, vertical pass first.
void run_band_vertical_first(const Plan& p, int y0, int y1, const Writer& writer, Scratch& sc, bool simd) {
    const Axis& vy = *p.vy;
    const Axis& hx = *p.hx;
    const std::size_t line = 4 * static_cast<std::size_t>(hx.out);
    const bool raw = simd && p.inplace;  // vertical over the raw row bytes, layout kept
    const std::size_t n = raw ? static_cast<std::size_t>(p.row_bytes) : 4 * static_cast<std::size_t>(p.width);
    // Zero padding after the row covers the SIMD horizontal loads past its end.
    const std::size_t padded = n + 16 * static_cast<std::size_t>(std::max(hx.groups, 1)) + 16;
    if (sc.stage.size() < padded) sc.stage.resize(padded);
    std::fill(sc.stage.begin() + static_cast<std::ptrdiff_t>(n), sc.stage.begin() + static_cast<std::ptrdiff_t>(padded), 0);
    if (sc.acc.size() < n) sc.acc.resize(n);
    if (sc.line.size() < line) sc.line.resize(line);
    std::uint8_t* mid = sc.stage.data();
    std::uint8_t* out = sc.line.data();
    static const std::ptrdiff_t kPackedOff[3] = {0, 1, 2};
    for (int yy = y0; yy < y1; ++yy) {
        if (raw) {
            const std::uint8_t* first = row_ptr(*p.image, vy.start[yy]) + p.base_off;
            const std::int32_t* k = &vy.k[static_cast<std::size_t>(yy) * vy.ksize];
#if FASTCLIPSEG_X86_SIMD
            vertical_avx2(first, p.image->row_stride, k, vy.taps[yy], static_cast<int>(n), sc.acc.data(), mid);
            hrows_simd(&mid, 1, p.pixel, 0, p.mask_inplace, hx, 0, hx.out, &out);
#else
            (void)first;
            (void)k;
#endif
        } else {
            vrow_strided(p, yy, mid);
#if FASTCLIPSEG_X86_SIMD
            if (simd) {
                static const std::uint8_t* const kMask4 = [] {
                    static std::uint8_t m[32];
                    const int o[3] = {0, 1, 2};
                    make_mask(4, o, m);
                    return m;
                }();
                hrows_simd(&mid, 1, 4, 0, kMask4, hx, 0, hx.out, &out);
            } else
#endif
            {
                hrow_scalar(mid, 4, kPackedOff, hx, out);
            }
        }
        writer.row(p.slot, yy, out);
    }
}

// Scratch buffers outlive a call: per video frame, fresh buffers would be
// page-faulted (and zeroed by the kernel) again every time, which costs more
// than a fifth of the work. A worker borrows one and gives it back.
class ScratchPool {
public:
    std::unique_ptr<Scratch> take() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (free_.empty()) return std::make_unique<Scratch>();
        auto sc = std::move(free_.back());
        free_.pop_back();
        return sc;
    }
    void give(std::unique_ptr<Scratch> sc) {
        constexpr std::size_t kMaxPooledBytes = std::size_t{64} << 20;
        const std::size_t bytes = sc->rows.capacity() + sc->stage.capacity() +
                                  4 * sc->acc.capacity() + sc->line.capacity();
        if (bytes > kMaxPooledBytes) return;  // a huge one-off: free it
        std::lock_guard<std::mutex> lock(mutex_);
        if (free_.size() < 64) free_.push_back(std::move(sc));
    }

private:
    std::mutex mutex_;
    std::vector<std::unique_ptr<Scratch>> free_;
};

ScratchPool& scratch_pool() {
    static ScratchPool* pool = new ScratchPool;  // never destroyed: usable during exit
    return *pool;
}

struct BorrowedScratch {
    std::unique_ptr<Scratch> sc = scratch_pool().take();
    ~BorrowedScratch() { scratch_pool().give(std::move(sc)); }
};

bool checked_mul(std::size_t a, std::size_t b, std::size_t& out) {
    if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return false;
    out = a * b;
    return true;
}

void check_size(std::size_t size) {
    if (size < 1 || size > kMaxSize) {
        fail("output size must be in [1, " + std::to_string(kMaxSize) + "], got " + std::to_string(size));
    }
}

// Byte range [lo, hi] an image's elements occupy.
void image_extent(const Image& im, std::uintptr_t& lo, std::uintptr_t& hi) {
    std::ptrdiff_t a = 0, b = 0;
    const std::size_t dims[3] = {im.height, im.width, im.channels};
    const std::ptrdiff_t strides[3] = {im.row_stride, im.col_stride, im.channel_stride};
    for (int d = 0; d < 3; ++d) {
        const std::ptrdiff_t span = static_cast<std::ptrdiff_t>(dims[d] - 1) * strides[d];
        (span < 0 ? a : b) += span;
    }
    const auto base = reinterpret_cast<std::uintptr_t>(im.data);
    lo = base + static_cast<std::uintptr_t>(a);  // wraps back below base for a < 0
    hi = base + static_cast<std::uintptr_t>(b);
}

void check_no_overlap(const Image* images, std::size_t n, const void* out, std::size_t out_bytes) {
    if (out_bytes == 0) return;
    const auto o_lo = reinterpret_cast<std::uintptr_t>(out);
    const std::uintptr_t o_hi = o_lo + out_bytes - 1;
    for (std::size_t i = 0; i < n; ++i) {
        std::uintptr_t lo = 0, hi = 0;
        image_extent(images[i], lo, hi);
        if (lo <= o_hi && o_lo <= hi) fail(image_name(i) + " overlaps the output buffer");
    }
}

// Work items: (image, band of output rows). Enough bands that `threads`
// threads all have work even for one image.
struct Item {
    std::size_t plan;
    int y0, y1;
};

std::vector<Item> make_items(std::size_t n, std::size_t size, std::size_t threads) {
    const std::size_t bands = std::min(size, std::max<std::size_t>(1, (threads + n - 1) / n));
    std::vector<Item> items;
    items.reserve(n * bands);
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t b = 0; b < bands; ++b) {
            items.push_back({i, static_cast<int>(size * b / bands), static_cast<int>(size * (b + 1) / bands)});
        }
    }
    return items;
}

bool use_simd(bool requested) { return requested && simd_available(); }

std::size_t resolve_threads(std::size_t threads) { return threads == 0 ? hardware_threads() : threads; }

void run(const Image* images, std::size_t n, std::size_t size, bool bgr, std::size_t threads,
         bool simd, PassOrder pass_order, const Writer& writer) {
    std::vector<Plan> plans;
    plans.reserve(n);
    for (std::size_t i = 0; i < n; ++i) plans.push_back(make_plan(images[i], i, size, bgr, simd, pass_order));
    const std::vector<Item> items = make_items(n, size, threads);
    // One pooled scratch per worker, given back when the call ends.
    std::vector<BorrowedScratch> scratch(detail::parallel_workers(items.size(), threads));
    detail::parallel_for(items.size(), threads, [&](std::size_t i, std::size_t worker) {
        Scratch& sc = *scratch[worker].sc;
        const Item& it = items[i];
        const Plan& p = plans[it.plan];
        if (p.vertical_first) {
            run_band_vertical_first(p, it.y0, it.y1, writer, sc, simd);
        } else {
            run_band(p, it.y0, it.y1, writer, sc, simd);
        }
    });
}

}  // namespace

std::size_t element_size(OutputType dtype) { return dtype == OutputType::kFloat32 ? 4 : 2; }

const char* dtype_name(OutputType dtype) {
    switch (dtype) {
        case OutputType::kFloat32: return "float32";
        case OutputType::kFloat16: return "float16";
        case OutputType::kBFloat16: return "bfloat16";
    }
    return "?";
}

std::size_t output_elements(std::size_t n, std::size_t size) {
    check_size(size);
    std::size_t plane = 0, total = 0;
    if (!checked_mul(size, size, plane) || !checked_mul(plane, 3, plane) || !checked_mul(plane, n, total)) {
        fail("the output of " + std::to_string(n) + " images of 3 x " + std::to_string(size) + " x " +
             std::to_string(size) + " elements is too large");
    }
    return total;
}

PassOrder pass_order_from_int(long long code) {
    if (code < 0 || code > 2) {
        throw std::invalid_argument("pass_order must be 0 (Pillow >= 13), 1 (Pillow 12) or 2 (horizontal first), got " +
                                    std::to_string(code));
    }
    return static_cast<PassOrder>(code);
}

std::size_t hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
}

bool simd_available() {
#if FASTCLIPSEG_X86_SIMD
    static const bool available = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return available;
#else
    return false;
#endif
}

std::array<float, 768> value_table(const Options& options) {
    if (!std::isfinite(options.rescale_factor)) {
        fail("rescale_factor must be finite, got " + std::to_string(options.rescale_factor));
    }
    std::array<float, 768> table{};
    for (int c = 0; c < 3; ++c) {
        const double m = options.mean[c], s = options.std[c];
        if (!std::isfinite(m)) fail("mean[" + std::to_string(c) + "] must be finite, got " + std::to_string(m));
        if (!std::isfinite(s)) fail("std[" + std::to_string(c) + "] must be finite, got " + std::to_string(s));
        // The processor casts mean and std to float32 before normalising.
        const float mf = static_cast<float>(m), sf = static_cast<float>(s);
        if (sf == 0.0f || !std::isfinite(sf)) {
            fail("std[" + std::to_string(c) + "] = " + std::to_string(s) + " is " +
                 (sf == 0.0f ? "zero" : "infinite") + " in float32");
        }
        if (!std::isfinite(mf)) fail("mean[" + std::to_string(c) + "] overflows float32");
        for (int v = 0; v < 256; ++v) {
            const float level = static_cast<float>(static_cast<double>(v) * options.rescale_factor);
            const float x = (level - mf) / sf;
            if (!std::isfinite(x)) {
                fail("rescale_factor, mean and std give a non-finite value for level " + std::to_string(v) +
                     " of channel " + std::to_string(c));
            }
            table[static_cast<std::size_t>(c) * 256 + v] = x;
        }
    }
    return table;
}

std::uint16_t float_to_half(float f) {
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    std::uint32_t h;
    if (x >= 0x7f800000u) {
        h = x > 0x7f800000u ? 0x7e00u : 0x7c00u;  // NaN (quiet) or infinity
    } else if (x >= 0x477ff000u) {
        h = 0x7c00u;  // >= 65520 rounds to infinity
    } else if (x < 0x38800000u) {
        // Below the smallest normal half (2^-14): adding 0.5 aligns the
        // value's bits to the half subnormal grid (2^-24) and the FPU rounds
        // to nearest-even; the low mantissa bits are the result.
        float a;
        std::memcpy(&a, &x, 4);
        a += 0.5f;
        std::uint32_t bits;
        std::memcpy(&bits, &a, 4);
        h = bits - 0x3f000000u;
    } else {
        // Normal: rebias the exponent and round the 13 dropped bits to even.
        const std::uint32_t odd = (x >> 13) & 1u;
        h = (x + 0xc8000fffu + odd) >> 13;  // 0xc8000000 = (15 - 127) << 23, mod 2^32
    }
    return static_cast<std::uint16_t>(h | sign);
}

std::uint16_t float_to_bfloat16(float f) {
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return static_cast<std::uint16_t>(x >> 16);
}

void validate_image(const Image& im, std::size_t index) {
    const std::string name = image_name(index);
    if (im.channels != 1 && im.channels != 3 && im.channels != 4) {
        fail(name + " has " + std::to_string(im.channels) +
             " channels; expected 1 (grey), 3 (RGB) or 4 (RGBA)");
    }
    if (im.height == 0 || im.width == 0) {
        fail(name + " is empty (height " + std::to_string(im.height) + ", width " +
             std::to_string(im.width) + ")");
    }
    if (im.height > kMaxSide || im.width > kMaxSide) {
        fail(name + " is " + std::to_string(im.height) + " x " + std::to_string(im.width) +
             "; height and width must be at most " + std::to_string(kMaxSide));
    }
    if (im.data == nullptr) fail(name + " has null data");
    // Every address the strides can reach must be representable.
    const std::size_t dims[3] = {im.height, im.width, im.channels};
    const std::ptrdiff_t strides[3] = {im.row_stride, im.col_stride, im.channel_stride};
    std::ptrdiff_t reach = 0;
    for (int d = 0; d < 3; ++d) {
        const std::ptrdiff_t limit = std::numeric_limits<std::ptrdiff_t>::max() / 4;
        if (strides[d] < -limit || strides[d] > limit) fail(name + " has strides too large to address");
        const std::ptrdiff_t s = strides[d] < 0 ? -strides[d] : strides[d];
        if (s != 0 && static_cast<std::ptrdiff_t>(dims[d] - 1) > (limit - reach) / s) {
            fail(name + " has strides too large to address");
        }
        reach += static_cast<std::ptrdiff_t>(dims[d] - 1) * s;
    }
}

void preprocess(const Image* images, std::size_t n, const Options& options, void* out,
                std::size_t out_bytes) {
    const std::size_t size = options.size;
    const std::size_t elements = output_elements(n, size);
    if (n > 0 && images == nullptr) fail("images is null");
    for (std::size_t i = 0; i < n; ++i) validate_image(images[i], i);
    const std::size_t esize = element_size(options.dtype);
    std::size_t need = 0;
    if (!checked_mul(elements, esize, need)) fail("the output is too large");
    if (out_bytes < need) {
        fail("the output buffer holds " + std::to_string(out_bytes) + " bytes; " + std::to_string(n) +
             " x 3 x " + std::to_string(size) + " x " + std::to_string(size) + " " +
             dtype_name(options.dtype) + " needs " + std::to_string(need));
    }
    if (need > 0 && out == nullptr) fail("the output buffer is null");
    if (need > 0 && reinterpret_cast<std::uintptr_t>(out) % esize != 0) {
        fail("the output buffer is not aligned to its " + std::to_string(esize) + "-byte elements");
    }
    const std::array<float, 768> table = value_table(options);
    check_no_overlap(images, n, out, need);
    if (n == 0) return;

    Writer writer;
    writer.out = out;
    writer.size = size;
    std::array<std::uint16_t, 768> table16{};
    if (options.dtype == OutputType::kFloat32) {
        writer.kind = Writer::kF32;
        writer.f32 = table.data();
    } else {
        for (std::size_t i = 0; i < 768; ++i) {
            table16[i] = options.dtype == OutputType::kFloat16 ? float_to_half(table[i])
                                                               : float_to_bfloat16(table[i]);
        }
        writer.kind = Writer::kU16;
        writer.u16 = table16.data();
    }
    run(images, n, size, options.bgr, resolve_threads(options.threads), use_simd(options.simd),
        options.pass_order, writer);
}

void resize(const Image& image, std::size_t size, bool bgr, std::uint8_t* out, std::size_t out_bytes,
            std::size_t threads, bool simd, PassOrder pass_order) {
    check_size(size);
    validate_image(image, 0);
    const std::size_t need = size * size * 3;  // size <= kMaxSize: cannot overflow
    if (out_bytes < need) {
        fail("the output buffer holds " + std::to_string(out_bytes) + " bytes; " + std::to_string(size) +
             " x " + std::to_string(size) + " x 3 needs " + std::to_string(need));
    }
    if (out == nullptr) fail("the output buffer is null");
    check_no_overlap(&image, 1, out, need);
    Writer writer;
    writer.kind = Writer::kHwc;
    writer.out = out;
    writer.size = size;
    run(&image, 1, size, bgr, resolve_threads(threads), use_simd(simd), pass_order, writer);
}

}  // namespace fastclipseg::preprocess

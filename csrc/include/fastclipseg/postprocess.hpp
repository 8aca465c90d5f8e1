// Post-processing of CLIPSeg logits: one call from K low-resolution logit
// maps to everything a user wants at the image's own resolution.
//
// Plain C++17: no Python, no pybind11, so C++ applications and the native
// tests can link these directly.
//
// Conventions:
//  * Logits are K x h x w float32 in C order; outputs are K x H x W in C
//    order. Every size must be >= 1 except K, which may be 0.
//  * Upsampling is bilinear with align_corners=False and follows PyTorch's
//    CPU kernel (torch.nn.functional.interpolate(x[None], size=(H, W),
//    mode="bilinear", align_corners=False)) operation by operation:
//      scale = float(in) / float(out)
//      src   = max(0, fma(scale, dst + 0.5f, -0.5f)),  i0 = min(floor(src), in - 1)
//      l1    = clamp(src - i0, 0, 1),  l0 = 1 - l1,  i1 = i0 + (i0 < in - 1)
//      row   = fma(x[i0], l0_w, x[i1] * l1_w)             (horizontal, per input row)
//      out   = fma(row[i0_h], l0_h, row[i1_h] * l1_h)     (vertical)
//    with in == out copying (i1 = i0, l0 = 1, l1 = 0). PyTorch's AVX2/AVX-512
//    builds contract these to FMAs; we do the same with hardware FMA where the
//    CPU has it (emulated exactly through double otherwise), so results are
//    bit-identical to PyTorch's whenever it takes that kernel (H + W > 128).
//    For tiny outputs (H + W <= 128) PyTorch switches to a separable kernel
//    with differently rounded weights; there the two differ by a few ulp.
//  * The foreground is logit > threshold_logit(t), equivalent to
//    sigmoid(logit) > t without computing a sigmoid. t = 0 keeps every
//    logit above -inf, t = 1 keeps nothing. NaN logits are background; their
//    float32 probability is NaN and their uint8 probability 0.
//  * Probabilities are sigmoid(upsampled logit) (vectorised exp, within a few
//    ulp of std::exp); uint8 probabilities are round(255 p).
//  * RLE strings are COCO compressed counts (column-major runs), identical to
//    pycocotools.mask.encode of the mask, built from per-row transitions
//    without a full-size mask; area and bbox are those of
//    pycocotools.mask.area / toBbox; score is the mean probability over the
//    mask's pixels accumulated in double (0 for an empty mask).
//  * Stability is segment-anything's calculate_stability_score on the
//    upsampled logits: with L = log(t / (1 - t)) and the offset d (logit
//    units, finite and >= 0; SAM's default stability_score_offset is 1),
//    stability = count(logit > L + d) / count(logit > L - d), the IoU of the
//    masks thresholded d above and d below the threshold. Both shifted
//    thresholds are rounded as threshold_logit rounds L (x > f exactly when
//    x > L +- d computed in double); for t = 0 or 1 they stay -inf or +inf.
//    It is 1 when both counts are 0 (the two masks are identical, both
//    empty), so 1 for t = 1; d = 0 gives 1 for every mask. NaN logits count
//    in neither. Counts are exact integers, so the ratio is the same for any
//    thread count.
//  * Work is split over masks and row blocks on `threads` std::threads; every
//    result is bit-identical for any thread count (per-row partial sums are
//    combined in row order).
//
// Every size is validated, and std::invalid_argument thrown with a message
// naming what was wrong, before anything is written to a caller buffer.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fastclipseg/edges.hpp"

// Everything declared here is the library's API: visible outside it, while the library itself
// is built with hidden visibility (CMakeLists.txt).
#pragma GCC visibility push(default)

namespace fastclipseg::postprocess {

// Largest h, w, H or W accepted (H * W is further bounded by rle::kMaxCount).
inline constexpr std::size_t kMaxSide = 0x7fffffff;

// Thread counts above this are treated as this.
inline constexpr unsigned kMaxThreads = 1024;

// Logits geometry and the output size.
struct Shape {
    std::size_t k = 0;       // number of masks (may be 0)
    std::size_t h = 0;       // logit rows    (>= 1)
    std::size_t w = 0;       // logit columns (>= 1)
    std::size_t height = 0;  // output rows H    (>= 1)
    std::size_t width = 0;   // output columns W (>= 1)
};

// What to compute. Buffers are caller-owned, C order K x H x W; null means
// "not wanted", and each *_size is the number of elements available there
// (checked to be >= K*H*W before anything is written).
struct Request {
    double threshold = 0.5;  // probability threshold t in [0, 1]

    std::uint8_t* masks = nullptr;  // 0/1 bytes (a numpy bool array works)
    std::size_t masks_size = 0;
    float* probs_f32 = nullptr;  // sigmoid of the upsampled logit
    std::size_t probs_f32_size = 0;
    std::uint8_t* probs_u8 = nullptr;  // round(255 * sigmoid)
    std::size_t probs_u8_size = 0;

    bool rle = false;    // COCO compressed counts per mask
    bool area = false;   // foreground pixel count per mask
    bool bbox = false;   // [x, y, width, height] per mask
    bool score = false;  // mean probability over the mask per mask
    bool stability = false;         // SAM stability score per mask
    double stability_offset = 1.0;  // its offset d in logit units: finite, >= 0
                                    // (validated even when stability is false)

    // Edge-aware upsampling (fastclipseg/edges.hpp) when set: the guide is the
    // image, H x W. Every output then derives from the filtered probability q
    // instead of the upsampled logit: masks q > t, probabilities q, score the
    // mean q over the mask, stability from the cuts sigmoid(L -/+ d).
    const edges::Guide* guide = nullptr;
    edges::Params edges;

    unsigned threads = 0;  // 0: default_threads(); at most kMaxThreads are used
};

// Per-mask results; each vector has K entries when requested, else is empty.
struct Result {
    std::vector<std::string> rle;
    std::vector<std::uint64_t> area;
    std::vector<std::array<double, 4>> bbox;
    std::vector<double> score;
    std::vector<double> stability;
};

// std::thread::hardware_concurrency(), at least 1.
unsigned default_threads();

// The float f such that, for every float logit x, x > f exactly when the
// logit is above log(t / (1 - t)) (computed in double): -inf for t = 0,
// +inf for t = 1. Throws for NaN or t outside [0, 1].
float threshold_logit(double t);

// The float thresholds {low, high} of the stability score for probability
// threshold t and offset d: x > low exactly when x > log(t / (1 - t)) - d and
// x > high exactly when x > log(t / (1 - t)) + d (both computed in double),
// rounded as threshold_logit; both -inf for t = 0 and +inf for t = 1. Throws
// for a bad t (as threshold_logit) or an offset that is NaN, infinite or < 0.
std::array<float, 2> stability_thresholds(double t, double offset);

// Validates the sizes of `shape` (the logits buffer aside) and returns
// K * H * W, the element count of each full-size output. Throws
// std::invalid_argument on a zero or too-large side or an overflow.
std::uint64_t output_elements(const Shape& shape);

// Runs the request on `logits` (logits_size floats available, at least
// K*h*w). Throws std::invalid_argument on bad sizes, threshold or stability
// offset, before writing anything.
Result run(const float* logits, std::size_t logits_size, const Shape& shape,
           const Request& request);

// Which build of the row loops runs. `automatic` picks AVX2+FMA on x86 CPUs
// that have it; `baseline` forces the portable build (for tests and
// benchmarks; the two agree bit for bit on masks and upsampled logits and
// within an ulp or two on probabilities). Process-wide; not meant to be
// flipped while a call is running.
enum class Kernels { automatic, baseline };
void select_kernels(Kernels k);

// Upsampled logits alone: writes K*H*W floats (C order) to `out`, which
// holds out_size floats. threads = 0: default_threads().
void upsample(const float* logits, std::size_t logits_size, const Shape& shape, float* out,
              std::size_t out_size, unsigned threads = 0);

}  // namespace fastclipseg::postprocess

#pragma GCC visibility pop

// Edge-aware upsampling of CLIPSeg masks: the fast guided filter (He & Sun,
// "Fast Guided Filter", 2015) of the probabilities, guided by the image.
//
// Plain C++17, like postprocess.hpp, whose `Request::guide` runs it: the
// low-resolution half lives here, the full-resolution half (one
// multiply-add per pixel and guide channel) in the post-processing row loop.
//
// What is computed, for each mask with logits x (h x w, the model's grid) and
// the guide image G (H x W, the output size; uint8 grey or RGB), on the
// filter's grid of fh x fw = max(1, h / s) x max(1, w / s) cells (s the
// subsampling; cells are binned as torch.nn.functional.adaptive_avg_pool2d
// bins: rows floor(y N / n) to ceil((y + 1) N / n) of N, columns alike):
//  * I: the guide in [0, 1]; for the grey guide of an RGB image, the grey
//    value of Pillow's convert("L"): (19595 R + 38470 G + 7471 B + 32768) >> 16.
//  * I_low: I averaged over each cell's pixels (exact integer sums).
//  * p: sigmoid(x) (NaN logits count as 0) averaged over each cell's logits.
//  * With box(.) the mean over the (2r + 1)^2 window of cells clipped at the
//    borders (avg_pool2d with count_include_pad=False):
//      grey:   a = (box(I p) - box(I) box(p)) / (box(I I) - box(I)^2 + eps)
//      colour: a = (Sigma + eps 1)^-1 (box(I p) - box(I) box(p)), Sigma the
//              3 x 3 covariance of the channels in the window
//      b = box(p) - a . box(I)
//  * The coefficients box(a) and box(b) are upsampled bilinearly from the
//    filter's grid to H x W, as the logits are (postprocess.hpp), and
//    q = clamp(A . I + B, 0, 1) is the filtered probability of every output
//    pixel: the mask is q > t.
// Low-resolution arithmetic is in double; the coefficients are stored as
// float32, A already divided by 255 so it multiplies the raw uint8 guide.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#pragma GCC visibility push(default)

namespace fastclipseg::edges {

// Largest box radius accepted (windows are clipped to the grid anyway).
inline constexpr std::size_t kMaxRadius = 4096;
// Largest subsampling of the model's grid accepted.
inline constexpr std::size_t kMaxSubsample = 64;

enum class GuideMode {
    grey,    // one guide channel: the image's grey value (or its only channel)
    colour,  // three guide channels (an RGB guide is required)
};

// The guide image, caller-owned: height x width x channels uint8 in C order
// (channels 1 or 3), `size` bytes available.
struct Guide {
    const std::uint8_t* pixels = nullptr;
    std::size_t size = 0;
    std::size_t height = 0, width = 0, channels = 0;
};

// The defaults are Python's (fastclipseg.ops.edges.Edges), chosen on held-out shapes scenes by
// benchmarks/bench_edges.py.
struct Params {
    std::size_t radius = 4;      // box radius r in cells of the filter's grid, >= 1
    std::size_t subsample = 4;   // the filter's grid: the model's h x w divided by this (>= 1)
    double eps = 1e-3;           // regularisation, in (guide in [0, 1]) variance units; finite, > 0
    GuideMode mode = GuideMode::colour;
};

// Throws std::invalid_argument, naming what was wrong, unless the guide is a
// non-null height x width image of 1 or 3 channels (3 for the colour mode)
// with enough bytes, and the radius and eps are in range.
void check(const Guide& guide, const Params& params, std::size_t height, std::size_t width);

// The low-resolution half for K masks of h x w logits.
struct Coefficients {
    std::size_t planes = 0;    // guide channels + 1: A per channel, then B
    std::size_t height = 0, width = 0;  // the filter's grid: max(1, h / subsample) x max(1, w / subsample)
    std::vector<float> data;   // K x planes x height x width
    // The guide as planes of H x W bytes when it was converted (the grey value
    // of an RGB image; the colour guide's R, G and B planes), else empty: a
    // grey image is its own plane.
    std::vector<std::uint8_t> planes_u8;
};

// Validates (as `check`) and computes the coefficients; threads = 0: the
// hardware concurrency. Results are the same for any thread count.
Coefficients coefficients(const float* logits, std::size_t logits_size, std::size_t k,
                          std::size_t h, std::size_t w, const Guide& guide, const Params& params,
                          unsigned threads = 0);

// As `coefficients`, into `out`, reusing its memory (a video's frames).
void coefficients_into(const float* logits, std::size_t logits_size, std::size_t k, std::size_t h,
                       std::size_t w, const Guide& guide, const Params& params, unsigned threads,
                       Coefficients& out);

// The float32 cuts of the filtered probability q for threshold t and the
// stability offset d (logit units): {mask, low, high}: q > mask exactly when
// q > t, q > low / high exactly when q > sigmoid(log(t / (1 - t)) -/+ d)
// (computed in double). Throws for a bad t or d, as postprocess.
std::array<float, 3> probability_cuts(double t, double offset);

}  // namespace fastclipseg::edges

#pragma GCC visibility pop

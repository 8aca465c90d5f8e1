// The low-resolution half of the fast guided filter; see fastclipseg/edges.hpp
// for the contract. Everything here works on the model's grid (h x w, 352^2
// for CLIPSeg), so it costs the same whatever the image size, except the one
// pass that averages the guide into that grid (and converts RGB to grey).
#include "fastclipseg/edges.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "detail.hpp"
#include "fastclipseg/postprocess.hpp"

namespace fastclipseg::edges {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument("edges: " + msg); }

std::string size_text(std::size_t a, std::size_t b) {
    return std::to_string(a) + " x " + std::to_string(b);
}

std::size_t guide_channels(const Params& params) { return params.mode == GuideMode::colour ? 3 : 1; }

// Pillow's convert("L") of one RGB pixel.
inline std::uint8_t grey_of(const std::uint8_t* rgb) {
    return static_cast<std::uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

// The bins of adaptive_avg_pool2d from `in` pixels to `out` cells.
struct Bins {
    std::vector<std::size_t> start, end;
};

Bins make_bins(std::size_t in, std::size_t out) {
    Bins b;
    b.start.resize(out);
    b.end.resize(out);
    for (std::size_t i = 0; i < out; ++i) {
        // Sides are < 2^31, so the products fit.
        b.start[i] = static_cast<std::size_t>((static_cast<std::uint64_t>(i) * in) / out);
        b.end[i] = static_cast<std::size_t>(((static_cast<std::uint64_t>(i) + 1) * in + out - 1) / out);
    }
    return b;
}

// Mean over the (2r + 1)^2 window clipped to the h x w grid, in double:
// prefix sums along rows, then a running sum down the columns.
struct BoxFilter {
    std::size_t h, w, r;
    std::vector<double> rows;  // the horizontal pass (h x w)
    std::vector<double> line;  // prefix sums of one row (w + 1)
    std::vector<double> acc;   // running column sums (w)

    BoxFilter(std::size_t h_, std::size_t w_, std::size_t r_) : h(h_), w(w_), r(r_), rows(h_ * w_), line(w_ + 1), acc(w_) {}

    void operator()(const double* in, double* out) {
        for (std::size_t y = 0; y < h; ++y) {
            const double* src = in + y * w;
            double* dst = rows.data() + y * w;
            line[0] = 0.0;
            for (std::size_t x = 0; x < w; ++x) line[x + 1] = line[x] + src[x];
            for (std::size_t x = 0; x < w; ++x) {
                const std::size_t lo = x >= r ? x - r : 0, hi = std::min(x + r + 1, w);
                dst[x] = (line[hi] - line[lo]) / static_cast<double>(hi - lo);
            }
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        const std::size_t first = std::min(r + 1, h);
        for (std::size_t y = 0; y < first; ++y) add_row(y, 1.0);
        for (std::size_t y = 0; y < h; ++y) {
            const std::size_t lo = y >= r ? y - r : 0, hi = std::min(y + r + 1, h);
            const double inv = 1.0 / static_cast<double>(hi - lo);
            double* dst = out + y * w;
            for (std::size_t x = 0; x < w; ++x) dst[x] = acc[x] * inv;
            if (y + r + 1 < h) add_row(y + r + 1, 1.0);
            if (y >= r) add_row(y - r, -1.0);
        }
    }

    void add_row(std::size_t y, double sign) {
        const double* src = rows.data() + y * w;
        for (std::size_t x = 0; x < w; ++x) acc[x] += sign * src[x];
    }
};

// What the guide contributes, shared by every mask: its channels averaged
// into the grid, their window means, and their window (co)variances.
struct GuideStats {
    std::size_t channels = 0;
    std::vector<std::vector<double>> low;    // I_low per channel
    std::vector<std::vector<double>> mean;   // box(I_low) per channel
    std::vector<std::vector<double>> cov;    // grey: var; colour: rr, rg, rb, gg, gb, bb
};

// Averages the guide (`channels` interleaved uint8 channels of which the
// first `used` are kept) into the h x w grid with adaptive_avg_pool2d's bins.
std::vector<std::vector<double>> average_into_grid(const std::uint8_t* pixels, std::size_t H,
                                                   std::size_t W, std::size_t channels,
                                                   std::size_t used, std::size_t h, std::size_t w,
                                                   unsigned threads) {
    const Bins rows = make_bins(H, h), cols = make_bins(W, w);
    std::vector<std::vector<double>> low(used, std::vector<double>(h * w));
    struct Work {
        std::vector<std::uint64_t> prefix;  // per channel, W + 1
        std::vector<std::uint64_t> sums;    // per channel, w
    };
    std::vector<Work> work(detail::parallel_workers(h, threads));
    detail::parallel_for(h, threads, [&](std::size_t y, std::size_t worker) {
        Work& s = work[worker];
        s.prefix.assign(used * (W + 1), 0);
        s.sums.assign(used * w, 0);
        for (std::size_t Y = rows.start[y]; Y < rows.end[y]; ++Y) {
            const std::uint8_t* row = pixels + Y * W * channels;
            for (std::size_t c = 0; c < used; ++c) {
                std::uint64_t* pre = s.prefix.data() + c * (W + 1);
                for (std::size_t X = 0; X < W; ++X) pre[X + 1] = pre[X] + row[X * channels + c];
                std::uint64_t* sum = s.sums.data() + c * w;
                for (std::size_t x = 0; x < w; ++x) sum[x] += pre[cols.end[x]] - pre[cols.start[x]];
            }
        }
        const double rows_in = static_cast<double>(rows.end[y] - rows.start[y]);
        for (std::size_t c = 0; c < used; ++c) {
            for (std::size_t x = 0; x < w; ++x) {
                const double n = rows_in * static_cast<double>(cols.end[x] - cols.start[x]);
                low[c][y * w + x] = static_cast<double>(s.sums[c * w + x]) / (255.0 * n);
            }
        }
    });
    return low;
}

GuideStats guide_stats(std::vector<std::vector<double>> low, std::size_t h, std::size_t w,
                       std::size_t r, unsigned threads) {
    GuideStats g;
    g.channels = low.size();
    g.low = std::move(low);
    const std::size_t n = h * w;
    // Products of channel pairs (i <= j), then every plane's box mean, one plane per item.
    std::vector<std::pair<std::size_t, std::size_t>> pairs;
    for (std::size_t i = 0; i < g.channels; ++i)
        for (std::size_t j = i; j < g.channels; ++j) pairs.emplace_back(i, j);
    g.mean.assign(g.channels, std::vector<double>(n));
    std::vector<std::vector<double>> second(pairs.size(), std::vector<double>(n));
    const std::size_t items = g.channels + pairs.size();
    std::vector<BoxFilter> boxes(detail::parallel_workers(items, threads), BoxFilter(h, w, r));
    std::vector<std::vector<double>> product(boxes.size(), std::vector<double>(n));
    detail::parallel_for(items, threads, [&](std::size_t item, std::size_t worker) {
        if (item < g.channels) {
            boxes[worker](g.low[item].data(), g.mean[item].data());
            return;
        }
        const auto [i, j] = pairs[item - g.channels];
        double* prod = product[worker].data();
        for (std::size_t k = 0; k < n; ++k) prod[k] = g.low[i][k] * g.low[j][k];
        boxes[worker](prod, second[item - g.channels].data());
    });
    g.cov = std::move(second);
    for (std::size_t p = 0; p < pairs.size(); ++p) {
        const auto [i, j] = pairs[p];
        for (std::size_t k = 0; k < n; ++k) g.cov[p][k] -= g.mean[i][k] * g.mean[j][k];
    }
    return g;
}

// Per-worker planes for one mask's coefficients.
struct MaskWork {
    BoxFilter box;
    std::vector<double> p, mean_p, tmp, filtered;
    std::vector<std::vector<double>> a;  // per channel, then b
    MaskWork(std::size_t h, std::size_t w, std::size_t r, std::size_t channels)
        : box(h, w, r), p(h * w), mean_p(h * w), tmp(h * w), filtered(h * w),
          a(channels + 1, std::vector<double>(h * w)) {}
};

// a (per channel) and b of one mask, then their window means into `out`
// (planes x h x w floats, A scaled by 1/255).
void mask_coefficients(const float* logits, const GuideStats& g, double eps, MaskWork& s,
                       float* out) {
    const std::size_t n = s.p.size(), C = g.channels;
    for (std::size_t k = 0; k < n; ++k) {
        const double x = logits[k];
        s.p[k] = std::isnan(x) ? 0.0 : 1.0 / (1.0 + std::exp(-x));
    }
    s.box(s.p.data(), s.mean_p.data());
    // a[c] first holds cov(I_c, p) in the window.
    for (std::size_t c = 0; c < C; ++c) {
        for (std::size_t k = 0; k < n; ++k) s.tmp[k] = g.low[c][k] * s.p[k];
        s.box(s.tmp.data(), s.a[c].data());
        for (std::size_t k = 0; k < n; ++k) s.a[c][k] -= g.mean[c][k] * s.mean_p[k];
    }
    double* b = s.a[C].data();
    if (C == 1) {
        for (std::size_t k = 0; k < n; ++k) {
            const double a = s.a[0][k] / (g.cov[0][k] + eps);
            s.a[0][k] = a;
            b[k] = s.mean_p[k] - a * g.mean[0][k];
        }
    } else {
        // (Sigma + eps 1) a = cov, Sigma symmetric: solved by its adjugate.
        for (std::size_t k = 0; k < n; ++k) {
            const double rr = g.cov[0][k] + eps, rg = g.cov[1][k], rb = g.cov[2][k];
            const double gg = g.cov[3][k] + eps, gb = g.cov[4][k], bb = g.cov[5][k] + eps;
            const double i00 = gg * bb - gb * gb, i01 = rb * gb - rg * bb, i02 = rg * gb - rb * gg;
            const double i11 = rr * bb - rb * rb, i12 = rb * rg - rr * gb, i22 = rr * gg - rg * rg;
            const double det = rr * i00 + rg * i01 + rb * i02;
            const double c0 = s.a[0][k], c1 = s.a[1][k], c2 = s.a[2][k];
            const double a0 = (i00 * c0 + i01 * c1 + i02 * c2) / det;
            const double a1 = (i01 * c0 + i11 * c1 + i12 * c2) / det;
            const double a2 = (i02 * c0 + i12 * c1 + i22 * c2) / det;
            s.a[0][k] = a0, s.a[1][k] = a1, s.a[2][k] = a2;
            b[k] = s.mean_p[k] - (a0 * g.mean[0][k] + a1 * g.mean[1][k] + a2 * g.mean[2][k]);
        }
    }
    for (std::size_t c = 0; c <= C; ++c) {
        s.box(s.a[c].data(), s.filtered.data());
        const double scale = c < C ? 1.0 / 255.0 : 1.0;
        float* dst = out + c * n;
        for (std::size_t k = 0; k < n; ++k) dst[k] = static_cast<float>(s.filtered[k] * scale);
    }
}

}  // namespace

void check(const Guide& guide, const Params& params, std::size_t height, std::size_t width) {
    if (params.radius < 1 || params.radius > kMaxRadius) {
        fail("radius " + std::to_string(params.radius) + " is outside [1, " + std::to_string(kMaxRadius) + "]");
    }
    if (!std::isfinite(params.eps) || params.eps <= 0.0) {
        fail("eps " + std::to_string(params.eps) + " must be finite and > 0");
    }
    if (guide.channels != 1 && guide.channels != 3) {
        fail("the guide image has " + std::to_string(guide.channels) + " channels; expected 1 (grey) or 3 (RGB)");
    }
    if (params.mode == GuideMode::colour && guide.channels != 3) {
        fail("the colour guide needs an RGB image (3 channels), got 1 channel");
    }
    if (guide.height != height || guide.width != width) {
        fail("the guide image is " + size_text(guide.height, guide.width) + " but the output is " +
             size_text(height, width) + ": guide with the image itself, at its own size");
    }
    if (guide.pixels == nullptr) fail("the guide image pointer is null");
    const std::uint64_t need = static_cast<std::uint64_t>(height) * width * guide.channels;
    if (guide.size < need) {
        fail("the guide buffer holds " + std::to_string(guide.size) + " bytes but " +
             size_text(height, width) + " x " + std::to_string(guide.channels) + " needs " +
             std::to_string(need));
    }
}

Coefficients coefficients(const float* logits, std::size_t logits_size, std::size_t k,
                          std::size_t h, std::size_t w, const Guide& guide, const Params& params,
                          unsigned threads_in) {
    check(guide, params, guide.height, guide.width);
    if (h == 0 || w == 0) fail("the logit grid " + size_text(h, w) + " is empty");
    const std::uint64_t plane = static_cast<std::uint64_t>(h) * w;
    if (k > std::numeric_limits<std::size_t>::max() / (4 * plane)) fail("K x h x w overflows");
    if (logits_size < k * plane) {
        fail("logits buffer holds " + std::to_string(logits_size) + " floats but K x h x w needs " +
             std::to_string(k * plane));
    }
    if (k > 0 && logits == nullptr) fail("logits pointer is null");
    const unsigned threads = std::min(threads_in == 0 ? postprocess::default_threads() : threads_in,
                                      postprocess::kMaxThreads);
    const std::size_t H = guide.height, W = guide.width, C = guide_channels(params);

    Coefficients out;
    out.planes = C + 1;
    const std::uint8_t* source = guide.pixels;
    std::size_t source_channels = guide.channels;
    if (params.mode == GuideMode::grey && guide.channels == 3) {
        out.grey.resize(H * W);
        detail::parallel_for(H, threads, [&](std::size_t Y, std::size_t) {
            const std::uint8_t* rgb = guide.pixels + Y * W * 3;
            std::uint8_t* dst = out.grey.data() + Y * W;
            for (std::size_t X = 0; X < W; ++X) dst[X] = grey_of(rgb + 3 * X);
        });
        source = out.grey.data();
        source_channels = 1;
    }
    const GuideStats g = guide_stats(average_into_grid(source, H, W, source_channels, C, h, w, threads),
                                     h, w, params.radius, threads);
    out.data.resize(k * out.planes * plane);
    std::vector<MaskWork> work;
    work.reserve(detail::parallel_workers(k, threads));
    for (std::size_t i = 0; i < detail::parallel_workers(k, threads); ++i) work.emplace_back(h, w, params.radius, C);
    detail::parallel_for(k, threads, [&](std::size_t i, std::size_t worker) {
        mask_coefficients(logits + i * plane, g, params.eps, work[worker], out.data.data() + i * out.planes * plane);
    });
    return out;
}

std::array<float, 3> probability_cuts(double t, double offset) {
    postprocess::stability_thresholds(t, offset);  // validates both
    const float cut = detail::round_down(t);
    if (t == 0.0 || t == 1.0) return {cut, cut, cut};
    const double logit = std::log(t / (1.0 - t));
    const auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
    return {cut, detail::round_down(sigmoid(logit - offset)), detail::round_down(sigmoid(logit + offset))};
}

}  // namespace fastclipseg::edges

// Native tests of the post-processing kernels (fastclipseg/postprocess.hpp).
// No framework: each check prints on failure, the summary line is
// "N passed, N failed", exit status is nonzero on any failure. Built with
// -DFASTCLIPSEG_BUILD_TESTS=ON and run under ASan/UBSan by
// scripts/native_sanitized_tests.sh.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastclipseg/postprocess.hpp"
#include "fastclipseg/rle.hpp"

#include "check.hpp"

namespace pp = fastclipseg::postprocess;
namespace rle = fastclipseg::rle;

namespace {

using namespace fastclipseg::testing;

std::string shape_str(const pp::Shape& s) {
    return std::to_string(s.k) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w) + "->" +
           std::to_string(s.height) + "x" + std::to_string(s.width);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Everything run() can produce, in caller-owned buffers.
struct Full {
    std::vector<std::uint8_t> masks;
    std::vector<float> probs;
    std::vector<std::uint8_t> probs_u8;
    pp::Result result;
};

Full run_all(const std::vector<float>& logits, const pp::Shape& s, double t, unsigned threads) {
    const std::size_t total = s.k * s.height * s.width;
    Full f;
    f.masks.assign(total, 0xAB);
    f.probs.assign(total, -1.0f);
    f.probs_u8.assign(total, 0xAB);
    pp::Request req;
    req.threshold = t;
    req.masks = f.masks.data(), req.masks_size = total;
    req.probs_f32 = f.probs.data(), req.probs_f32_size = total;
    req.probs_u8 = f.probs_u8.data(), req.probs_u8_size = total;
    req.rle = req.area = req.bbox = req.score = req.stability = true;
    req.threads = threads;
    f.result = pp::run(logits.data(), logits.size(), s, req);
    return f;
}

// Stability scores alone at threshold t and offset d.
std::vector<double> stability_of(const std::vector<float>& logits, const pp::Shape& s, double t,
                                 double d, unsigned threads = 1) {
    pp::Request req;
    req.threshold = t;
    req.stability = true;
    req.stability_offset = d;
    req.threads = threads;
    return pp::run(logits.data(), logits.size(), s, req).stability;
}

// Reference stability from upsampled logits, compared in double.
std::vector<double> reference_stability(const std::vector<float>& up, const pp::Shape& s, double t,
                                        double d) {
    const double inf = std::numeric_limits<double>::infinity();
    const double l = t == 0.0 ? -inf : t == 1.0 ? inf : std::log(t / (1.0 - t));
    const std::size_t plane = s.height * s.width;
    std::vector<double> out(s.k);
    for (std::size_t i = 0; i < s.k; ++i) {
        std::uint64_t hi = 0, lo = 0;
        for (std::size_t j = 0; j < plane; ++j) {
            const double v = up[i * plane + j];
            hi += v > l + d;
            lo += v > l - d;
        }
        out[i] = lo == 0 ? 1.0 : static_cast<double>(hi) / static_cast<double>(lo);
    }
    return out;
}

// Independent reference for a mask: RLE, area and bbox through the rle kernels.
void check_mask_outputs(const Full& f, const pp::Shape& s, const std::string& what) {
    const std::size_t plane = s.height * s.width;
    for (std::size_t i = 0; i < s.k; ++i) {
        const std::uint8_t* m = f.masks.data() + i * plane;
        const std::string want = rle::encode(m, s.height, s.width,
                                             static_cast<std::ptrdiff_t>(s.width), 1);
        check(f.result.rle[i] == want, what + ": RLE of mask " + std::to_string(i));
        check(f.result.area[i] == rle::area(want, s.height, s.width),
              what + ": area of mask " + std::to_string(i));
        check(f.result.bbox[i] == rle::bbox(want, s.height, s.width),
              what + ": bbox of mask " + std::to_string(i));
        double sum = 0.0;
        std::uint64_t n = 0;
        for (std::size_t j = 0; j < plane; ++j) {
            if (m[j]) sum += f.probs[i * plane + j], ++n;
        }
        const double score = n ? sum / static_cast<double>(n) : 0.0;
        check(std::fabs(f.result.score[i] - score) <= 1e-9,
              what + ": score of mask " + std::to_string(i));
    }
}

// ---------------------------------------------------------------------------

void test_upsample_2x2_to_4x4() {
    // Source pixel centres land on 0.25-steps: every weight and value is exact.
    const std::vector<float> x = {0, 1, 2, 3};
    const pp::Shape s{1, 2, 2, 4, 4};
    std::vector<float> out(16, -1.0f);
    pp::upsample(x.data(), x.size(), s, out.data(), out.size(), 1);
    const std::vector<float> want = {0.0f, 0.25f, 0.75f, 1.0f,  0.5f, 0.75f, 1.25f, 1.5f,
                                     1.5f, 1.75f, 2.25f, 2.5f,  2.0f, 2.25f, 2.75f, 3.0f};
    check(out == want, "2x2 -> 4x4 bilinear values");

    // Same size: a copy. Down to 1x1: the centre of a 2x2 block, the mean.
    std::vector<float> same(4);
    pp::upsample(x.data(), x.size(), {1, 2, 2, 2, 2}, same.data(), same.size(), 1);
    check(same == x, "2x2 -> 2x2 is a copy");
    float one = -1.0f;
    pp::upsample(x.data(), x.size(), {1, 2, 2, 1, 1}, &one, 1, 1);
    check(one == 1.5f, "2x2 -> 1x1 is the mean of the four");

    // Masks and probabilities of that 4x4 at t = 0.5 (logit > 0) and t = sigmoid(1.6).
    Full f = run_all(x, s, 0.5, 1);
    std::vector<std::uint8_t> m(16);
    for (int i = 0; i < 16; ++i) m[i] = want[i] > 0.0f;
    check(f.masks == m, "2x2 -> 4x4 mask at t = 0.5");
    check(f.result.area[0] == 15, "2x2 -> 4x4 area");
    check(f.result.bbox[0] == std::array<double, 4>{0, 0, 4, 4}, "2x2 -> 4x4 bbox");
    bool probs_ok = true;
    for (int i = 0; i < 16; ++i) {
        const double p = 1.0 / (1.0 + std::exp(-static_cast<double>(want[i])));
        probs_ok = probs_ok && std::fabs(f.probs[i] - p) <= 1e-6 &&
                   std::abs(f.probs_u8[i] - std::lround(255.0 * p)) <= 1;
    }
    check(probs_ok, "2x2 -> 4x4 probabilities (float32 and uint8)");
    check_mask_outputs(f, s, "2x2 -> 4x4");
    const double t = 1.0 / (1.0 + std::exp(-1.6));
    Full g = run_all(x, s, t, 1);
    for (int i = 0; i < 16; ++i) m[i] = want[i] > 1.6f;
    check(g.masks == m, "2x2 -> 4x4 mask at t = sigmoid(1.6)");
}

void test_constant_logits() {
    for (const float c : {-2.5f, 0.75f}) {
        const pp::Shape s{2, 3, 5, 17, 9};
        const std::vector<float> x(s.k * s.h * s.w, c);
        Full f = run_all(x, s, 0.5, 2);
        const bool fg = c > 0;
        const std::size_t plane = s.height * s.width;
        check(std::all_of(f.masks.begin(), f.masks.end(), [&](std::uint8_t v) { return v == fg; }),
              "constant " + std::to_string(c) + ": uniform mask");
        const double p = 1.0 / (1.0 + std::exp(-static_cast<double>(c)));
        check(std::all_of(f.probs.begin(), f.probs.end(),
                          [&](float v) { return std::fabs(v - p) <= 1e-6; }),
              "constant " + std::to_string(c) + ": probabilities");
        for (std::size_t i = 0; i < s.k; ++i) {
            const std::uint64_t runs[2] = {0, plane};
            const std::string want = fg ? rle::counts_to_string(runs, 2)
                                        : rle::counts_to_string(&runs[1], 1);
            check(f.result.rle[i] == want, "constant " + std::to_string(c) + ": RLE");
            check(f.result.area[i] == (fg ? plane : 0), "constant: area");
            const std::array<double, 4> box =
                fg ? std::array<double, 4>{0, 0, double(s.width), double(s.height)}
                   : std::array<double, 4>{0, 0, 0, 0};
            check(f.result.bbox[i] == box, "constant: bbox");
            check(std::fabs(f.result.score[i] - (fg ? p : 0.0)) <= 1e-6, "constant: score");
        }
    }
}

void test_known_rle() {
    // Same-size "upsampling" copies, so the mask is exactly the logits' sign:
    // the 7x5 mask of test_kernels.cpp, whose pycocotools string is known.
    const pp::Shape s{1, 7, 5, 7, 5};
    std::vector<float> x(35, -1.0f);
    for (int r = 2; r < 5; ++r)
        for (int c = 1; c < 3; ++c) x[r * 5 + c] = 1.0f;
    x[6 * 5 + 4] = x[0] = 1.0f;
    for (unsigned threads : {1u, 3u}) {
        Full f = run_all(x, s, 0.5, threads);
        check(f.result.rle[0] == "0182L0;N", "known 7x5 mask RLE, threads " + std::to_string(threads));
        check(f.result.area[0] == 8, "known 7x5 mask area");
        check(f.result.bbox[0] == std::array<double, 4>{0, 0, 5, 7}, "known 7x5 mask bbox");
    }
}

void test_thresholds() {
    check(pp::threshold_logit(0.5) == 0.0f, "t = 0.5 -> logit 0");
    check(pp::threshold_logit(0.0) == -std::numeric_limits<float>::infinity(), "t = 0 -> -inf");
    check(pp::threshold_logit(1.0) == std::numeric_limits<float>::infinity(), "t = 1 -> +inf");
    bool exact = true;
    for (const double t : {1e-30, 1e-7, 0.1, 0.3, 0.7, 0.9, 0.999999, 1.0 - 1e-12}) {
        const double l = std::log(t / (1.0 - t));
        const float f = pp::threshold_logit(t);
        // f is the largest float <= l: x > f exactly when x > l.
        exact = exact && static_cast<double>(f) <= l &&
                static_cast<double>(std::nextafter(f, std::numeric_limits<float>::infinity())) > l;
    }
    check(exact, "threshold logit is the largest float <= log(t / (1 - t))");

    // t = 0 keeps every finite logit, t = 1 none; NaN is always background.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> x = {-1e30f, -3.0f, 0.0f, nan, 7.0f, 1e30f};
    const pp::Shape s{1, 1, 6, 1, 6};
    Full lo = run_all(x, s, 0.0, 1);
    check(lo.masks == std::vector<std::uint8_t>{1, 1, 1, 0, 1, 1}, "t = 0: all but NaN");
    Full hi = run_all(x, s, 1.0, 1);
    check(hi.masks == std::vector<std::uint8_t>(6, 0), "t = 1: nothing");
    check(hi.result.rle[0] == "6" && hi.result.area[0] == 0 && hi.result.score[0] == 0.0,
          "t = 1: empty RLE, area 0, score 0");
    check(std::isnan(lo.probs[3]) && lo.probs_u8[3] == 0, "NaN logit: probability NaN, uint8 0");
    check(lo.probs[5] == 1.0f && lo.probs_u8[5] == 255 && lo.probs[0] == 0.0f &&
              lo.probs_u8[0] == 0,
          "huge logits: probabilities 0 and 1");
    check(std::isfinite(lo.result.score[0]), "NaN logit does not reach the score");
}

void test_stability() {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    // Same size: the upsampled logits are the logits. At t = 0.5 (L = 0), d = 1:
    //  mask 0: above 1: {2}; above -1: {-0.5, 0.5, 2}            -> 1/3
    //  mask 1: empty mask, but above -1: {-0.9, -0.2}; NaN counts nowhere -> 0/2
    //  mask 2: nothing above -1                                   -> 1 (both empty)
    const std::vector<float> x = {-1.5f, -0.5f, 0.5f, 2.0f,  nan, -0.9f, -0.2f, -3.0f,
                                  -5.0f, -5.0f, -5.0f, -5.0f};
    const pp::Shape s{3, 2, 2, 2, 2};
    for (const unsigned threads : {1u, 2u}) {
        const std::vector<double> st = stability_of(x, s, 0.5, 1.0, threads);
        check(st == std::vector<double>{1.0 / 3.0, 0.0, 1.0},
              "hand-made stability at t = 0.5, d = 1, threads " + std::to_string(threads));
    }
    check(stability_of(x, s, 0.5, 0.0) == std::vector<double>{1.0, 1.0, 1.0}, "d = 0: stability 1");
    // d = 2: above 2: {}; above -2: {-1.5, -0.5, 0.5, 2}, {-0.9, -0.2}, {}.
    check(stability_of(x, s, 0.5, 2.0) == std::vector<double>{0.0, 0.0, 1.0}, "d = 2");
    // t = 0: both thresholds -inf: every non-NaN logit counts in both.
    check(stability_of(x, s, 0.0, 1.0) == std::vector<double>{1.0, 1.0, 1.0}, "t = 0");
    // t = 1: both +inf: nothing counts, so 1.
    check(stability_of(x, s, 1.0, 1.0) == std::vector<double>{1.0, 1.0, 1.0}, "t = 1");

    // The shifted thresholds: rounded down like threshold_logit, +-inf at t = 0 and 1.
    check(pp::stability_thresholds(0.5, 1.0) == std::array<float, 2>{-1.0f, 1.0f}, "t = 0.5, d = 1");
    check(pp::stability_thresholds(0.0, 3.0) == std::array<float, 2>{-inf, -inf}, "t = 0: -inf");
    check(pp::stability_thresholds(1.0, 3.0) == std::array<float, 2>{inf, inf}, "t = 1: +inf");
    check(pp::stability_thresholds(0.5, 1e300) ==
              std::array<float, 2>{-inf, std::numeric_limits<float>::max()},
          "offsets beyond the float range");
    bool exact = true;
    for (const double t : {1e-7, 0.1, 0.3, 0.7, 0.999999})
        for (const double d : {0.0, 0.1, 0.5, 1.0, 2.0, 1e-9}) {
            const double l = std::log(t / (1.0 - t));
            const std::array<float, 2> f = pp::stability_thresholds(t, d);
            const double want[2] = {l - d, l + d};
            for (int j = 0; j < 2; ++j)
                exact = exact && static_cast<double>(f[j]) <= want[j] &&
                        static_cast<double>(std::nextafter(f[j], inf)) > want[j];
        }
    check(exact, "stability thresholds are the largest floats <= L -+ d");

    for (const double d : {-0.5, -1e-300, static_cast<double>(nan), static_cast<double>(inf),
                           -static_cast<double>(inf)}) {
        check_throws([&] { stability_of(x, s, 0.5, d); }, "stability offset",
                     "bad stability offset " + std::to_string(d));
        check_throws([&] { pp::stability_thresholds(0.5, d); }, "stability offset",
                     "stability_thresholds rejects offset " + std::to_string(d));
    }
}

void test_random_against_rle_and_threads() {
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    const pp::Shape shapes[] = {{3, 11, 13, 40, 29},  {2, 13, 11, 7, 5},   {1, 1, 1, 9, 4},
                                {2, 5, 1, 1, 12},     {1, 20, 30, 20, 30}, {4, 9, 9, 130, 3},
                                {1, 24, 40, 100, 77}, {2, 8, 8, 1, 1}};
    for (const pp::Shape& s : shapes) {
        std::vector<float> x(s.k * s.h * s.w);
        for (float& v : x) v = normal(rng);
        const std::string name = shape_str(s);
        Full one = run_all(x, s, 0.4, 1);
        check_mask_outputs(one, s, name);
        std::vector<float> up(s.k * s.height * s.width);
        pp::upsample(x.data(), x.size(), s, up.data(), up.size(), 1);
        const float thr = pp::threshold_logit(0.4);
        bool masks_match = true;
        for (std::size_t j = 0; j < up.size(); ++j) masks_match &= one.masks[j] == (up[j] > thr);
        check(masks_match, name + ": masks are upsample() > threshold_logit");
        check(one.result.stability == reference_stability(up, s, 0.4, 1.0),
              name + ": stability from upsample()");
        for (const double t : {0.0, 0.3, 0.5, 1.0})
            for (const double d : {0.0, 0.5, 2.0})
                check(stability_of(x, s, t, d) == reference_stability(up, s, t, d),
                      name + ": stability at t = " + std::to_string(t) + ", d = " + std::to_string(d));
        for (const unsigned threads : {2u, 3u, 8u}) {
            Full many = run_all(x, s, 0.4, threads);
            const std::string t = name + " threads " + std::to_string(threads);
            check(many.masks == one.masks && same_bits(many.probs, one.probs) &&
                      many.probs_u8 == one.probs_u8,
                  t + ": identical full-size outputs");
            check(many.result.rle == one.result.rle && many.result.area == one.result.area &&
                      many.result.bbox == one.result.bbox && many.result.score == one.result.score &&
                      many.result.stability == one.result.stability,
                  t + ": identical per-mask outputs");
            std::vector<float> up_many(up.size());
            pp::upsample(x.data(), x.size(), s, up_many.data(), up_many.size(), threads);
            check(same_bits(up_many, up), t + ": identical upsample()");
        }
        // The portable build agrees with the dispatched one.
        pp::select_kernels(pp::Kernels::baseline);
        Full base = run_all(x, s, 0.4, 2);
        std::vector<float> up_base(up.size());
        pp::upsample(x.data(), x.size(), s, up_base.data(), up_base.size(), 1);
        pp::select_kernels(pp::Kernels::automatic);
        check(same_bits(up_base, up) && base.masks == one.masks && base.result.rle == one.result.rle &&
                  base.result.stability == one.result.stability,
              name + ": baseline kernels give the same logits, masks, RLE and stability");
        bool close = true;
        for (std::size_t j = 0; j < up.size(); ++j) close &= std::fabs(base.probs[j] - one.probs[j]) <= 1e-6f;
        for (std::size_t i = 0; i < s.k; ++i)
            close &= std::fabs(base.result.score[i] - one.result.score[i]) <= 1e-6;
        check(close, name + ": baseline kernels' probabilities and scores within 1e-6");
    }
}

void test_empty_batch() {
    const pp::Shape s{0, 352, 352, 1080, 1920};
    pp::Request req;
    req.rle = req.area = req.bbox = req.score = req.stability = true;
    const pp::Result r = pp::run(nullptr, 0, s, req);
    check(r.rle.empty() && r.area.empty() && r.bbox.empty() && r.score.empty() && r.stability.empty(),
          "K = 0: empty results");
    pp::upsample(nullptr, 0, s, nullptr, 0, 2);
    check(true, "K = 0: upsample writes nothing");
}

void test_bad_input_rejected_before_writing() {
    const std::vector<float> x(2 * 4 * 4, 1.0f);
    std::vector<std::uint8_t> masks(2 * 8 * 8, 0xAB);
    std::vector<float> out(2 * 8 * 8, -7.0f);
    auto untouched = [&] {
        return std::all_of(masks.begin(), masks.end(), [](std::uint8_t v) { return v == 0xAB; }) &&
               std::all_of(out.begin(), out.end(), [](float v) { return v == -7.0f; });
    };
    auto run_with = [&](pp::Shape s, double t, std::size_t masks_size, std::size_t logits_size,
                        double offset = 1.0) {
        pp::Request req;
        req.threshold = t;
        req.stability = true;
        req.stability_offset = offset;
        req.masks = masks.data(), req.masks_size = masks_size;
        req.probs_f32 = out.data(), req.probs_f32_size = out.size();
        req.rle = true;
        pp::run(x.data(), logits_size, s, req);
    };
    const pp::Shape ok{2, 4, 4, 8, 8};
    check_throws([&] { run_with({2, 4, 4, 0, 8}, 0.5, masks.size(), x.size()); }, "output height H", "H = 0");
    check_throws([&] { run_with({2, 4, 4, 8, 0}, 0.5, masks.size(), x.size()); }, "output width W", "W = 0");
    check_throws([&] { run_with({2, 0, 4, 8, 8}, 0.5, masks.size(), x.size()); }, "logit height h", "h = 0");
    check_throws([&] { run_with({2, 4, 0, 8, 8}, 0.5, masks.size(), x.size()); }, "logit width w", "w = 0");
    check_throws([&] { run_with({2, 4, 4, pp::kMaxSide + 1, 8}, 0.5, masks.size(), x.size()); },
                 "exceeds the maximum", "H too large");
    check_throws([&] { run_with(ok, std::nan(""), masks.size(), x.size()); }, "NaN", "threshold NaN");
    check_throws([&] { run_with(ok, 1.5, masks.size(), x.size()); }, "outside [0, 1]", "threshold 1.5");
    check_throws([&] { run_with(ok, -0.1, masks.size(), x.size()); }, "outside [0, 1]", "threshold -0.1");
    check_throws([&] { run_with(ok, 0.5, masks.size(), x.size(), -1.0); }, "stability offset",
                 "negative stability offset");
    check_throws([&] { run_with(ok, 0.5, masks.size(), x.size(), std::nan("")); }, "stability offset",
                 "NaN stability offset");
    check_throws([&] { run_with(ok, 0.5, masks.size() - 1, x.size()); }, "masks buffer", "masks buffer too small");
    check_throws([&] { run_with(ok, 0.5, masks.size(), x.size() - 1); }, "logits buffer", "logits buffer too small");
    // K*H*W overflows 64 bits (and K*h*w does not).
    const std::size_t big_k = (std::size_t{1} << 40);
    check_throws([&] { run_with({big_k, 1, 1, 1u << 20, 1u << 20}, 0.5, masks.size(), SIZE_MAX); },
                 "overflows", "K*H*W overflow");
    check_throws([&] { run_with({SIZE_MAX / 2, 4, 4, 8, 8}, 0.5, masks.size(), SIZE_MAX); },
                 "overflows", "K*h*w overflow");
    check_throws([&] { pp::upsample(x.data(), x.size(), ok, out.data(), out.size() - 1, 1); },
                 "output buffer", "upsample output too small");
    check_throws([&] { pp::upsample(x.data(), x.size(), {2, 4, 4, 8, 0}, out.data(), out.size(), 1); },
                 "output width W", "upsample W = 0");
    check(untouched(), "nothing was written by any rejected call");
    check_throws([&] { pp::output_elements({1, 1, 1, 1u << 31, 1u << 31}); }, "exceeds the maximum",
                 "output_elements rejects a side > kMaxSide");
    check(pp::output_elements({3, 352, 352, 1080, 1920}) == 3ull * 1080 * 1920, "output_elements = K*H*W");
}

}  // namespace

int main() {
    test_upsample_2x2_to_4x4();
    test_constant_logits();
    test_known_rle();
    test_thresholds();
    test_stability();
    test_random_against_rle_and_threads();
    test_empty_batch();
    test_bad_input_rejected_before_writing();
    return summary();
}

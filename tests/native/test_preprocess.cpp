// Native tests for the preprocessing kernels. No framework: each check prints
// on failure, the summary line is "N passed, N failed", exit status is
// nonzero on any failure. Built with -DFASTCLIPSEG_BUILD_TESTS=ON and run
// under ASan/UBSan by scripts/native_sanitized_tests.sh (which makes every
// 16-byte load of the vectorised kernels bounds-checked).
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

#include "fastclipseg/preprocess.hpp"

#include "check.hpp"

namespace pre = fastclipseg::preprocess;

namespace {

using namespace fastclipseg::testing;

std::vector<std::uint8_t> random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<std::uint8_t> v(n);
    for (auto& b : v) b = static_cast<std::uint8_t>(rng() & 0xff);
    return v;
}

std::vector<std::uint8_t> resized(const pre::Image& im, std::size_t size, bool bgr = false,
                                  std::size_t threads = 1, bool simd = true, bool legacy = false) {
    std::vector<std::uint8_t> out(size * size * 3);
    pre::resize(im, size, bgr, out.data(), out.size(), threads, simd,
                legacy ? pre::PassOrder::kHorizontalFirst : pre::PassOrder::kPillow13);
    return out;
}

void test_identity_of_constant_image() {
    const std::size_t h = 37, w = 41;
    std::vector<std::uint8_t> img(h * w * 3);
    for (std::size_t i = 0; i < img.size(); i += 3) img[i] = 200, img[i + 1] = 7, img[i + 2] = 99;
    const auto im = pre::packed_image(img.data(), h, w, 3);
    for (const bool simd : {true, false}) {
        // Same size: Pillow copies; the kernels' identity windows reproduce it.
        const auto same = resized(pre::packed_image(img.data(), h, w, 3), 37, false, 1, simd);
        bool ok = true;
        for (std::size_t i = 0; i < same.size(); ++i) ok &= same[i] == img[i % (h * w * 3)];
        check(ok, std::string("identity resize copies the image, simd=") + (simd ? "1" : "0"));
        // Any size: bilinear weights sum to one, so a constant stays constant.
        for (const std::size_t size : {1, 5, 37, 64, 352}) {
            const auto out = resized(im, size, false, 1, simd);
            bool constant = true;
            for (std::size_t i = 0; i < out.size(); i += 3) {
                constant &= out[i] == 200 && out[i + 1] == 7 && out[i + 2] == 99;
            }
            check(constant, "constant image stays constant at size " + std::to_string(size));
        }
    }
    // Full output: every value is the table entry of its level.
    pre::Options opt;
    opt.size = 16;
    std::vector<float> out(3 * 16 * 16, -1.0f);
    pre::preprocess(&im, 1, opt, out.data(), out.size() * sizeof(float));
    const auto table = pre::value_table(opt);
    const int levels[3] = {200, 7, 99};
    bool ok = true;
    for (int c = 0; c < 3; ++c) {
        for (int i = 0; i < 256; ++i) ok &= out[c * 256 + i] == table[c * 256 + levels[c]];
    }
    check(ok, "constant image normalises to its table values");
    // The table itself: float32(v * (1/255) in float64), then (x - mean) / std in float32.
    const float expect = (static_cast<float>(200.0 * (1.0 / 255.0)) - 0.485f) / 0.229f;
    check(table[200] == expect, "value_table arithmetic");
}

void test_hand_computed_downscale() {
    // 2x2 -> 1x1: scale 2, support 2, center 1.0: window [0, 2) with weights
    // 0.75, 0.75 normalised to 0.5 = 2^21 each. Per pass: (a + b + 1) >> 1.
    // Horizontal first: rows (10, 21) -> 16 and (40, 51) -> 46, then (16, 46) -> 31.
    const std::uint8_t img[2 * 2 * 3] = {10, 100, 255, 21, 101, 255, 40, 0, 254, 51, 3, 255};
    const auto im = pre::packed_image(img, 2, 2, 3);
    const auto h = [](int a, int b) { return (a + b + 1) >> 1; };
    const int want[3] = {h(h(10, 21), h(40, 51)), h(h(100, 101), h(0, 3)), h(h(255, 255), h(254, 255))};
    for (const bool simd : {true, false}) {
        const auto out = resized(im, 1, false, 1, simd);
        check(out[0] == want[0] && out[1] == want[1] && out[2] == want[2] && want[0] == 31 && want[1] == 52 &&
                  want[2] == 255,
              std::string("hand-computed 2x2 -> 1x1, simd=") + (simd ? "1" : "0"));
        const auto bgr = resized(im, 1, true, 1, simd);
        check(bgr[0] == want[2] && bgr[1] == want[1] && bgr[2] == want[0], "bgr swaps channels 0 and 2");
    }
    // 1x1 -> 3x3 upscale: a single source pixel everywhere.
    const std::uint8_t px[3] = {1, 2, 3};
    const auto up = resized(pre::packed_image(px, 1, 1, 3), 3);
    bool ok = true;
    for (std::size_t i = 0; i < up.size(); ++i) ok &= up[i] == px[i % 3];
    check(ok, "1x1 -> 3x3 upscale");
}

// Copies an h x w x 3 packed image into a layout given by strides inside a
// larger buffer (with an offset so negative strides stay in bounds).
struct Strided {
    std::vector<std::uint8_t> buffer;
    pre::Image image;
};

Strided make_strided(const std::vector<std::uint8_t>& packed, std::size_t h, std::size_t w, std::ptrdiff_t rs,
                     std::ptrdiff_t cs, std::ptrdiff_t chs, bool bgr_order) {
    std::ptrdiff_t lo = 0, hi = 0;
    for (const auto& [n, s] : {std::pair<std::size_t, std::ptrdiff_t>{h, rs}, {w, cs}, {3, chs}}) {
        const std::ptrdiff_t span = static_cast<std::ptrdiff_t>(n - 1) * s;
        (span < 0 ? lo : hi) += span;
    }
    Strided st;
    st.buffer.assign(static_cast<std::size_t>(hi - lo + 1), 0xEE);  // exactly the reachable bytes
    std::uint8_t* origin = st.buffer.data() - lo;
    for (std::size_t r = 0; r < h; ++r)
        for (std::size_t c = 0; c < w; ++c)
            for (std::size_t ch = 0; ch < 3; ++ch) {
                const std::size_t src_ch = bgr_order ? 2 - ch : ch;
                origin[static_cast<std::ptrdiff_t>(r) * rs + static_cast<std::ptrdiff_t>(c) * cs +
                       static_cast<std::ptrdiff_t>(ch) * chs] = packed[(r * w + c) * 3 + src_ch];
            }
    st.image.data = origin;
    st.image.height = h;
    st.image.width = w;
    st.image.channels = 3;
    st.image.row_stride = rs;
    st.image.col_stride = cs;
    st.image.channel_stride = chs;
    return st;
}

void test_strided_and_bgr_input() {
    const std::size_t h = 45, w = 67;
    const auto img = random_bytes(h * w * 3, 3);
    const auto ref = resized(pre::packed_image(img.data(), h, w, 3), 29);
    const std::ptrdiff_t W = static_cast<std::ptrdiff_t>(w);
    struct Layout {
        const char* name;
        std::ptrdiff_t rs, cs, chs;
    };
    const Layout layouts[] = {
        {"padded rows", 3 * W + 13, 3, 1},
        {"4-byte pixels", 4 * W, 4, 1},
        {"channel-reversed", 3 * W, 3, -1},
        {"column-major", 3, 3 * static_cast<std::ptrdiff_t>(h), 1},
        {"negative rows", -3 * W, 3, 1},
        {"negative columns", 3 * W, -3, 1},
        {"planar", W, 1, W * static_cast<std::ptrdiff_t>(h)},
        {"wide pixels", 7 * W, 7, 2},
    };
    for (const auto& l : layouts) {
        for (const bool bgr : {false, true}) {
            const auto st = make_strided(img, h, w, l.rs, l.cs, l.chs, bgr);
            for (const bool simd : {true, false}) {
                const auto out = resized(st.image, 29, bgr, 1, simd);
                check(out == ref, std::string("strided layout '") + l.name + "'" + (bgr ? " bgr" : "") +
                                      (simd ? " simd" : " scalar"));
            }
        }
    }
    // Grey (one channel, any channel stride) is replicated to three channels.
    std::vector<std::uint8_t> grey(h * w), grey3(h * w * 3);
    for (std::size_t i = 0; i < grey.size(); ++i) grey[i] = img[3 * i], grey3[3 * i] = grey3[3 * i + 1] = grey3[3 * i + 2] = img[3 * i];
    const auto gref = resized(pre::packed_image(grey3.data(), h, w, 3), 29);
    check(resized(pre::packed_image(grey.data(), h, w, 1), 29) == gref, "grey replicated");
    check(resized(pre::packed_image(grey.data(), h, w, 1), 29, true, 1, false) == gref, "grey, scalar, bgr ignored");
}

void test_paths_and_threads_agree() {
    // SIMD vs scalar, both pass orders, several thread counts, odd sizes:
    // under ASan this also proves every vector load stays inside the image.
    std::mt19937 rng(11);
    int mismatches = 0;
    for (int trial = 0; trial < 60; ++trial) {
        const std::size_t h = 1 + rng() % 90, w = 1 + rng() % 90, size = 1 + rng() % 70;
        const std::size_t channels = (trial % 3 == 0) ? 4 : (trial % 3 == 1 ? 3 : 1);
        const auto img = random_bytes(h * w * channels, static_cast<unsigned>(trial));
        const auto im = pre::packed_image(img.data(), h, w, channels);
        const bool legacy = trial % 2 == 0;
        const auto a = resized(im, size, false, 1, true, legacy);
        const auto b = resized(im, size, false, 1, false, legacy);
        const auto c = resized(im, size, false, 3, true, legacy);
        if (a != b || a != c) {
            ++mismatches;
            std::printf("  mismatch: %zux%zux%zu -> %zu legacy=%d\n", h, w, channels, size, int(legacy));
        }
    }
    check(mismatches == 0, "simd, scalar and threaded resizes agree on random sizes");

    // Extreme downscales: windows of hundreds of taps (the vertical kernel's
    // long-window fallback) in both pass orders.
    const std::size_t extreme[][3] = {{2000, 3, 1}, {3, 2000, 1}, {700, 700, 2}, {1500, 40, 5}, {40, 1500, 5}};
    for (const auto& e : extreme) {
        const auto img = random_bytes(e[0] * e[1] * 3, static_cast<unsigned>(e[0] + e[1]));
        const auto im = pre::packed_image(img.data(), e[0], e[1], 3);
        for (const bool legacy : {false, true}) {
            check(resized(im, e[2], false, 1, true, legacy) == resized(im, e[2], false, 1, false, legacy),
                  "extreme downscale " + std::to_string(e[0]) + "x" + std::to_string(e[1]) + " -> " +
                      std::to_string(e[2]) + (legacy ? " (legacy order)" : ""));
        }
    }

    // Full output over a batch of mixed sizes (tall ones take the vertical-first order).
    std::vector<std::vector<std::uint8_t>> store;
    std::vector<pre::Image> images;
    const std::size_t dims[][2] = {{120, 80}, {300, 20}, {17, 230}, {1, 1}, {64, 64}};
    for (const auto& d : dims) {
        store.push_back(random_bytes(d[0] * d[1] * 3, static_cast<unsigned>(d[0] * 7 + d[1])));
        images.push_back(pre::packed_image(store.back().data(), d[0], d[1], 3));
    }
    pre::Options opt;
    opt.size = 48;
    const std::size_t n = pre::output_elements(images.size(), opt.size);
    std::vector<float> one(n), many(n), scalar(n);
    opt.threads = 1;
    pre::preprocess(images.data(), images.size(), opt, one.data(), n * 4);
    opt.threads = 4;
    pre::preprocess(images.data(), images.size(), opt, many.data(), n * 4);
    opt.simd = false;
    pre::preprocess(images.data(), images.size(), opt, scalar.data(), n * 4);
    check(one == many && one == scalar, "batch output independent of threads and kernel path");

    opt.simd = true;
    opt.dtype = pre::OutputType::kFloat16;
    std::vector<std::uint16_t> half(n);
    pre::preprocess(images.data(), images.size(), opt, half.data(), n * 2);
    bool ok = true;
    for (std::size_t i = 0; i < n; ++i) ok &= half[i] == pre::float_to_half(one[i]);
    check(ok, "float16 output is the rounded float32 output");
    opt.dtype = pre::OutputType::kBFloat16;
    pre::preprocess(images.data(), images.size(), opt, half.data(), n * 2);
    ok = true;
    for (std::size_t i = 0; i < n; ++i) ok &= half[i] == pre::float_to_bfloat16(one[i]);
    check(ok, "bfloat16 output is the rounded float32 output");
}

float bits_to_float(std::uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

void test_half_conversions() {
    struct Case {
        float in;
        std::uint16_t half;
    };
    const Case halves[] = {
        {0.0f, 0x0000},       {-0.0f, 0x8000},       {1.0f, 0x3c00},           {-2.0f, 0xc000},
        {0.1f, 0x2e66},       {65504.0f, 0x7bff},    {65519.99f, 0x7bff},      {65520.0f, 0x7c00},
        {1e10f, 0x7c00},      {std::ldexp(1.0f, -24), 0x0001},                 {std::ldexp(1.0f, -25), 0x0000},
        {std::ldexp(3.0f, -26), 0x0001},               {std::ldexp(1.0f, -14), 0x0400},
        {1.0f + std::ldexp(1.0f, -11), 0x3c00},        // tie -> even
        {1.0f + std::ldexp(3.0f, -11), 0x3c02},        // tie -> even (up)
        {std::numeric_limits<float>::infinity(), 0x7c00},
    };
    for (const auto& c : halves) {
        check(pre::float_to_half(c.in) == c.half, "float_to_half(" + std::to_string(c.in) + ")");
    }
    check((pre::float_to_half(std::nanf("")) & 0x7fff) > 0x7c00, "float_to_half(NaN) is NaN");
    check(pre::float_to_bfloat16(1.0f) == 0x3f80, "bf16(1)");
    check(pre::float_to_bfloat16(bits_to_float(0x3f808000u)) == 0x3f80, "bf16 tie to even (down)");
    check(pre::float_to_bfloat16(bits_to_float(0x3f818000u)) == 0x3f82, "bf16 tie to even (up)");
    check(pre::float_to_bfloat16(bits_to_float(0x3f808001u)) == 0x3f81, "bf16 above the tie");
    check(pre::float_to_bfloat16(-std::numeric_limits<float>::infinity()) == 0xff80, "bf16(-inf)");
    check((pre::float_to_bfloat16(std::nanf("")) & 0x7fff) > 0x7f80, "bf16(NaN) is NaN");
}

void test_bad_input() {
    const auto img = random_bytes(10 * 10 * 3, 5);
    const auto good = pre::packed_image(img.data(), 10, 10, 3);
    std::vector<float> out(3 * 8 * 8, 42.0f);
    const std::size_t bytes = out.size() * sizeof(float);
    pre::Options opt;
    opt.size = 8;
    auto run = [&](pre::Image im, pre::Options o, std::size_t b) {
        return [&out, im, o, b] { pre::preprocess(&im, 1, o, out.data(), b); };
    };

    pre::Options zero = opt;
    zero.size = 0;
    check_throws(run(good, zero, bytes), "output size", "size 0");
    pre::Options huge = opt;
    huge.size = pre::kMaxSize + 1;
    check_throws(run(good, huge, bytes), "output size", "size too large");
    pre::Image empty = good;
    empty.width = 0;
    check_throws(run(empty, opt, bytes), "empty", "zero width");
    pre::Image flat = good;
    flat.height = 0;
    check_throws(run(flat, opt, bytes), "empty", "zero height");
    pre::Image two = good;
    two.channels = 2;
    check_throws(run(two, opt, bytes), "2 channels", "two channels");
    pre::Image null = good;
    null.data = nullptr;
    check_throws(run(null, opt, bytes), "null", "null image data");
    pre::Image wide = good;
    wide.width = pre::kMaxSide + 1;
    check_throws(run(wide, opt, bytes), "at most", "image too wide");
    pre::Image far = good;
    far.row_stride = std::numeric_limits<std::ptrdiff_t>::max() / 2;
    check_throws(run(far, opt, bytes), "strides", "unaddressable strides");
    check_throws(run(good, opt, bytes - 1), "holds", "output buffer too small");
    check_throws([&] { pre::preprocess(&good, 1, opt, nullptr, bytes); }, "null", "null output");
    pre::Options bad_std = opt;
    bad_std.std[2] = 0.0;
    check_throws(run(good, bad_std, bytes), "std[2]", "zero std");
    pre::Options tiny_std = opt;
    tiny_std.std[0] = 1e-60;  // zero once cast to float32
    check_throws(run(good, tiny_std, bytes), "zero in float32", "std underflowing float32");
    pre::Options nan_mean = opt;
    nan_mean.mean[1] = std::nan("");
    check_throws(run(good, nan_mean, bytes), "mean[1]", "NaN mean");
    pre::Options inf_scale = opt;
    inf_scale.rescale_factor = std::numeric_limits<double>::infinity();
    check_throws(run(good, inf_scale, bytes), "rescale_factor", "infinite rescale factor");
    check_throws([] { pre::output_elements(std::size_t{1} << 62, 1024); }, "too large", "N*3*S*S overflow");
    // An image inside the output buffer would be overwritten while it is read.
    const pre::Image inside = pre::packed_image(reinterpret_cast<const std::uint8_t*>(out.data()) + 8, 4, 4, 3);
    check_throws(run(inside, opt, bytes), "overlaps", "image overlapping the output");
    // Second image of a batch bad: nothing written for the first either.
    pre::Image batch[2] = {good, empty};
    check_throws([&] { pre::preprocess(batch, 2, opt, out.data(), 2 * bytes); }, "image #1", "batch names the bad image");
    check(std::all_of(out.begin(), out.end(), [](float v) { return v == 42.0f; }), "failed calls write nothing");

    std::vector<std::uint8_t> small(8 * 8 * 3 - 1, 9);
    check_throws([&] { pre::resize(good, 8, false, small.data(), small.size()); }, "holds", "resize buffer too small");
    check_throws([&] { pre::resize(good, 0, false, small.data(), small.size()); }, "output size", "resize size 0");
    check(std::all_of(small.begin(), small.end(), [](std::uint8_t v) { return v == 9; }), "failed resizes write nothing");
}

}  // namespace

int main() {
    const std::pair<const char*, void (*)()> suites[] = {
        {"identity", test_identity_of_constant_image},
        {"hand_computed", test_hand_computed_downscale},
        {"strided", test_strided_and_bgr_input},
        {"paths_threads", test_paths_and_threads_agree},
        {"half", test_half_conversions},
        {"bad_input", test_bad_input},
    };
    for (const auto& [name, fn] : suites) {
        try {
            fn();
        } catch (const std::exception& e) {
            check(false, std::string(name) + ": unexpected exception: " + e.what());
        }
    }
    std::printf("simd kernels %s\n", pre::simd_available() ? "available (tested alongside scalar)" : "unavailable (scalar only)");
    return summary();
}

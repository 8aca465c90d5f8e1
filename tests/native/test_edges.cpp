// Native checks of the edge-aware upsampling (fastclipseg/edges.hpp through postprocess::run):
// parameter and size errors, odd sizes (1 x N, N x 1, grids larger than the image), results
// independent of the thread count, probabilities in [0, 1] with masks above the threshold, and a
// constant guide. Run under AddressSanitizer + UBSan by scripts/native_sanitized_tests.sh.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.hpp"
#include "fastclipseg/edges.hpp"
#include "fastclipseg/postprocess.hpp"

namespace pp = fastclipseg::postprocess;
namespace edges = fastclipseg::edges;
using fastclipseg::testing::check;
using fastclipseg::testing::check_throws;

namespace {

struct Case {
    std::size_t k, h, w, height, width, channels;
};

std::vector<float> make_logits(const Case& c) {
    std::vector<float> logits(c.k * c.h * c.w);
    for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(0.37f * static_cast<float>(i)) * 4.0f;
    return logits;
}

std::vector<std::uint8_t> make_image(const Case& c) {
    std::vector<std::uint8_t> image(c.height * c.width * c.channels);
    for (std::size_t i = 0; i < image.size(); ++i) image[i] = static_cast<std::uint8_t>((i * 53 + i / 11) % 256);
    return image;
}

pp::Result run(const Case& c, const std::vector<float>& logits, const std::vector<std::uint8_t>& image,
               const edges::Params& params, unsigned threads, std::vector<std::uint8_t>* masks = nullptr,
               std::vector<float>* probs = nullptr) {
    edges::Guide guide{image.data(), image.size(), c.height, c.width, c.channels};
    pp::Request request;
    request.rle = request.area = request.bbox = request.score = request.stability = true;
    request.guide = &guide;
    request.edges = params;
    request.threads = threads;
    if (masks != nullptr) request.masks = masks->data(), request.masks_size = masks->size();
    if (probs != nullptr) request.probs_f32 = probs->data(), request.probs_f32_size = probs->size();
    return pp::run(logits.data(), logits.size(), {c.k, c.h, c.w, c.height, c.width}, request);
}

void odd_sizes_and_threads() {
    const Case cases[] = {{2, 22, 17, 7, 300, 3}, {1, 5, 5, 1, 9, 3}, {2, 8, 8, 40, 1, 1},
                          {3, 13, 11, 97, 61, 3}, {1, 3, 1, 1, 1, 1}, {2, 31, 29, 64, 64, 3},
                          {2, 24, 24, 120, 90, 3}, {3, 44, 44, 131, 170, 1}, {1, 3, 1, 1, 1, 3}};
    for (const Case& c : cases) {
        const auto logits = make_logits(c);
        const auto image = make_image(c);
        for (const bool colour : {false, true}) {
            if (colour && c.channels != 3) continue;
            for (const std::size_t subsample : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{5},
                                                std::size_t{50}})
            for (const std::size_t radius : {std::size_t{1}, std::size_t{2}, std::size_t{40}}) {
                edges::Params params;
                params.radius = radius;
                params.mode = colour ? edges::GuideMode::colour : edges::GuideMode::grey;
                params.subsample = subsample;
                std::vector<std::uint8_t> masks(c.k * c.height * c.width);
                std::vector<float> probs(masks.size());
                const pp::Result one = run(c, logits, image, params, 1, &masks, &probs);
                const pp::Result many = run(c, logits, image, params, 3);
                check(one.rle == many.rle, "one.rle == many.rle");
                check(one.score == many.score, "one.score == many.score");
                check(one.stability == many.stability, "one.stability == many.stability");
                bool consistent = true;
                for (std::size_t p = 0; p < masks.size(); ++p) {
                    consistent = consistent && probs[p] >= 0.0f && probs[p] <= 1.0f &&
                                 (masks[p] != 0) == (probs[p] > 0.5f);
                }
                check(consistent, "consistent");
            }
        }
    }
}

void a_constant_guide_gives_the_window_mean() {
    // With a flat guide, a = 0 and q is box(box(p)) upsampled: a constant p stays that constant.
    const Case c{1, 6, 6, 20, 30, 3};
    const std::vector<float> logits(36, 0.0f);  // p = 0.5 everywhere
    const std::vector<std::uint8_t> image(c.height * c.width * 3, 90);
    std::vector<float> probs(c.height * c.width);
    run(c, logits, image, edges::Params{}, 2, nullptr, &probs);
    bool flat = true;
    for (const float q : probs) flat = flat && std::fabs(q - 0.5f) < 1e-6f;
    check(flat, "flat");
}

void bad_parameters_throw_before_writing() {
    const Case c{1, 4, 4, 8, 8, 3};
    const auto logits = make_logits(c);
    const auto image = make_image(c);
    std::vector<std::uint8_t> masks(64, 7);
    const auto throws = [&](const edges::Guide& guide, const edges::Params& params, const std::string& needle) {
        pp::Request request;
        request.masks = masks.data(), request.masks_size = masks.size();
        request.guide = &guide;
        request.edges = params;
        check_throws([&] { pp::run(logits.data(), logits.size(), {1, 4, 4, 8, 8}, request); }, needle, "bad edges input: " + needle);
        bool untouched = true;
        for (const auto m : masks) untouched = untouched && m == 7;
        check(untouched, "untouched");
    };
    const edges::Guide good{image.data(), image.size(), 8, 8, 3};
    edges::Params params;
    params.radius = 0;
    throws(good, params, "radius 0 is outside");
    params = {};
    params.eps = 0.0;
    throws(good, params, "eps");
    params.eps = std::nan("");
    throws(good, params, "eps");
    params = {};
    params.subsample = 0;
    throws(good, params, "subsample 0 is outside");
    params = {};
    throws({image.data(), image.size(), 8, 7, 3}, params, "the guide image is 8 x 7 but the output is 8 x 8");
    throws({image.data(), image.size(), 8, 8, 2}, params, "2 channels");
    throws({nullptr, image.size(), 8, 8, 3}, params, "null");
    throws({image.data(), 100, 8, 8, 3}, params, "holds 100 bytes");
    params.mode = edges::GuideMode::colour;
    std::vector<std::uint8_t> grey(64);
    throws({grey.data(), grey.size(), 8, 8, 1}, params, "colour guide needs an RGB image");
}

}  // namespace

int main() {
    odd_sizes_and_threads();
    a_constant_guide_gives_the_window_mean();
    bad_parameters_throw_before_writing();
    return fastclipseg::testing::summary();
}

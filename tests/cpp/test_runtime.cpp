// test_runtime EXPORT_DIR: checks of fastclipseg::Segmenter that the examples do not make:
// concurrent calls agree with a sequential one, bad input throws fastclipseg::Error with a
// message naming the problem, prompts are cached by their normalised text. Prints one line per
// failed check and exits 1 if any failed.
#include <cmath>
#include <fastclipseg/runtime.hpp>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
    if (!ok) {
        ++failures;
        std::cout << "FAIL: " << what << "\n";
    }
}

// The call throws fastclipseg::Error whose message contains `needle`.
void check_error(const std::function<void()>& call, const std::string& needle, const std::string& what) {
    try {
        call();
        check(false, what + ": no exception");
    } catch (const fastclipseg::Error& error) {
        check(std::string(error.what()).find(needle) != std::string::npos,
              what + ": message '" + error.what() + "' lacks '" + needle + "'");
    } catch (const std::exception& error) {
        check(false, what + ": threw a non-fastclipseg exception: " + error.what());
    }
}

bool same(const fastclipseg::Segmentation& a, const fastclipseg::Segmentation& b) {
    if (a.masks.size() != b.masks.size()) return false;
    for (std::size_t i = 0; i < a.masks.size(); ++i) {
        const auto &x = a.masks[i], &y = b.masks[i];
        if (x.rle_counts != y.rle_counts || x.score != y.score || x.stability != y.stability || x.area != y.area ||
            x.bbox != y.bbox) {
            return false;
        }
    }
    return true;
}

// A deterministic 97 x 61 RGB test image (odd sizes: rows are not a multiple of anything).
std::vector<std::uint8_t> test_image(std::size_t width, std::size_t height) {
    std::vector<std::uint8_t> rgb(width * height * 3);
    for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<std::uint8_t>((i * 37 + i / 7) % 251);
    return rgb;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: test_runtime EXPORT_DIR\n";
        return 2;
    }
    const std::string folder = argv[1];
    const auto segmenter = fastclipseg::Segmenter::load(folder);
    const std::size_t width = 97, height = 61;
    const auto rgb = test_image(width, height);
    const std::vector<std::string> prompts{"a cat", "a dog", "red"};

    // Masks and probabilities when asked for, consistent with the summary.
    fastclipseg::SegmentOptions full;
    full.masks = full.probabilities = true;
    const auto reference = segmenter.segment(rgb.data(), width, height, prompts, 0.5, full);
    check(reference.masks.size() == prompts.size(), "one mask per prompt");
    for (const auto& mask : reference.masks) {
        check(mask.mask.size() == width * height && mask.probabilities.size() == width * height, "full-size outputs");
        std::uint64_t area = 0;
        for (auto v : mask.mask) area += v;
        check(area == mask.area, "area equals the mask's pixel count");
    }

    // Concurrent calls on one Segmenter (and its copies) give the sequential result.
    std::vector<std::thread> threads;
    std::vector<int> agreed(4, 0);
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            const fastclipseg::Segmenter copy = segmenter;
            for (int round = 0; round < 3; ++round) {
                agreed[t] += same(copy.segment(rgb.data(), width, height, prompts), reference) ? 1 : 0;
            }
        });
    }
    for (auto& thread : threads) thread.join();
    for (int t = 0; t < 4; ++t) check(agreed[t] == 3, "thread " + std::to_string(t) + " agrees with the sequential run");

    // A row stride with padding reads the same pixels.
    const std::size_t stride = width * 3 + 5;
    std::vector<std::uint8_t> padded(stride * height, 255);
    for (std::size_t r = 0; r < height; ++r) std::copy_n(&rgb[r * width * 3], width * 3, &padded[r * stride]);
    check(same(segmenter.segment(padded.data(), width, height, prompts, 0.5, {}, stride), reference),
          "row_stride with padding");

    // Edge-aware masks: consistent with their own probabilities, the same through a padded
    // row stride, and bad parameters are errors before the network runs.
    fastclipseg::SegmentOptions guided = full;
    guided.edges = true;
    guided.edge_params.mode = fastclipseg::edges::GuideMode::colour;
    guided.edge_params.subsample = 3;
    const auto edged = segmenter.segment(rgb.data(), width, height, prompts, 0.5, guided);
    for (const auto& mask : edged.masks) {
        std::uint64_t area = 0;
        bool consistent = true;
        for (std::size_t p = 0; p < width * height; ++p) {
            area += mask.mask[p];
            consistent = consistent && (mask.mask[p] != 0) == (mask.probabilities[p] > 0.5f) &&
                         mask.probabilities[p] >= 0.0f && mask.probabilities[p] <= 1.0f;
        }
        check(consistent && area == mask.area, "edge-aware masks are their probabilities above the threshold");
    }
    check(same(segmenter.segment(padded.data(), width, height, prompts, 0.5, guided, stride), edged),
          "edges with a padded row stride");
    fastclipseg::SegmentOptions bad_radius;
    bad_radius.edges = true;
    bad_radius.edge_params.radius = 0;
    check_error([&] { segmenter.segment(rgb.data(), width, height, prompts, 0.5, bad_radius); }, "radius",
                "edge radius 0");
    fastclipseg::SegmentOptions bad_eps;
    bad_eps.edges = true;
    bad_eps.edge_params.eps = -1.0;
    check_error([&] { segmenter.segment(rgb.data(), width, height, prompts, 0.5, bad_eps); }, "eps", "edge eps < 0");

    // The cache holds prompts by their normalised text.
    const std::size_t cached = segmenter.cached_prompts();
    check(segmenter.embed("  A   CAT ") == segmenter.embed("a cat"), "normalised prompts share an embedding");
    check(segmenter.cached_prompts() == cached, "a normalised repeat adds no cache entry");
    check(segmenter.embed("a cat").size() == segmenter.embedding_dim(), "embedding size");

    // Bad input: fastclipseg::Error naming what was wrong.
    check_error([&] { fastclipseg::Segmenter::load(folder + "/missing"); }, "missing", "missing folder");
    check_error([&] { segmenter.segment(nullptr, width, height, prompts); }, "null", "null image");
    check_error([&] { segmenter.segment(rgb.data(), 0, height, prompts); }, "empty", "zero width");
    check_error([&] { segmenter.segment(rgb.data(), width, height, {}); }, "prompts is empty", "no prompts");
    check_error([&] { segmenter.segment(rgb.data(), width, height, {"a cat", " \t "}); }, "prompts[1]", "blank prompt");
    check_error([&] { segmenter.segment(rgb.data(), width, height, {"bad \xff byte"}); }, "UTF-8", "invalid UTF-8");
    check_error([&] { segmenter.segment(rgb.data(), width, height, prompts, 1.5); }, "threshold", "threshold 1.5");
    check_error([&] { segmenter.segment(rgb.data(), width, height, prompts, std::nan("")); }, "threshold", "NaN");
    check_error([&] { segmenter.segment(rgb.data(), width, height, prompts, 0.5, {}, width); }, "row_stride",
                "short row stride");
    check_error([&] { segmenter.segment(rgb.data(), 1u << 20, 1u << 20, prompts); }, "limit", "too many pixels");
    fastclipseg::LoadOptions no_pixels;
    no_pixels.max_pixels = 0;
    check_error([&] { fastclipseg::Segmenter::load(folder, no_pixels); }, "max_pixels", "max_pixels 0");

    std::cout << (failures == 0 ? "all checks passed" : std::to_string(failures) + " checks failed") << "\n";
    return failures == 0 ? 0 : 1;
}

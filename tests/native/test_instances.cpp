// Native tests of the instance kernels (fastclipseg/instances.hpp): labelling against a plain
// flood fill on random masks of odd sizes (1 x N, N x 1, empty, primes), both connectivities,
// measures against a direct count, and every size or argument error. Run under ASan/UBSan by
// scripts/native_sanitized_tests.sh.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "fastclipseg/instances.hpp"
#include "fastclipseg/rle.hpp"

#include "check.hpp"

namespace in = fastclipseg::instances;
using namespace fastclipseg::testing;

namespace {

// The reference: a breadth-first flood fill from each unlabelled foreground pixel, in raster order.
std::pair<std::vector<std::int32_t>, std::int32_t> flood_fill(const std::vector<std::uint8_t>& mask, std::size_t h,
                                                              std::size_t w, int connectivity) {
    std::vector<std::int32_t> labels(h * w, 0);
    std::int32_t count = 0;
    std::vector<std::size_t> queue;
    for (std::size_t start = 0; start < h * w; ++start) {
        if (mask[start] == 0 || labels[start] != 0) continue;
        labels[start] = ++count;
        queue.assign(1, start);
        while (!queue.empty()) {
            const std::size_t at = queue.back();
            queue.pop_back();
            const auto r = static_cast<long>(at / w), c = static_cast<long>(at % w);
            for (long dr = -1; dr <= 1; ++dr) {
                for (long dc = -1; dc <= 1; ++dc) {
                    if ((dr == 0 && dc == 0) || (connectivity == 4 && dr != 0 && dc != 0)) continue;
                    const long nr = r + dr, nc = c + dc;
                    if (nr < 0 || nc < 0 || nr >= static_cast<long>(h) || nc >= static_cast<long>(w)) continue;
                    const std::size_t next = static_cast<std::size_t>(nr) * w + static_cast<std::size_t>(nc);
                    if (mask[next] != 0 && labels[next] == 0) {
                        labels[next] = count;
                        queue.push_back(next);
                    }
                }
            }
        }
    }
    return {labels, count};
}

void test_labels_equal_flood_fill() {
    std::mt19937 rng(17);
    const std::vector<std::pair<std::size_t, std::size_t>> sizes = {
        {1, 1}, {1, 37}, {41, 1}, {2, 2}, {7, 13}, {13, 7}, {31, 29}, {64, 64}, {97, 61}, {3, 200}};
    for (const auto& [h, w] : sizes) {
        for (const double density : {0.1, 0.45, 0.6, 0.9}) {
            std::bernoulli_distribution on(density);
            std::vector<std::uint8_t> mask(h * w);
            for (auto& v : mask) v = on(rng) ? static_cast<std::uint8_t>(1 + rng() % 255) : 0;
            for (const int connectivity : {4, 8}) {
                std::vector<std::int32_t> labels(h * w, -7);
                const auto count = in::label(mask.data(), h, w, connectivity, labels.data(), labels.size());
                const auto [want, want_count] = flood_fill(mask, h, w, connectivity);
                const std::string what = std::to_string(h) + "x" + std::to_string(w) + " density " +
                                         std::to_string(density) + " connectivity " + std::to_string(connectivity);
                check_eq(count, want_count, "count, " + what);
                check(labels == want, "labels, " + what);

                const auto components = in::measure(labels.data(), h, w, count);
                bool measures_ok = components.size() == static_cast<std::size_t>(count);
                for (std::int32_t k = 1; measures_ok && k <= count; ++k) {
                    std::uint64_t area = 0;
                    std::size_t x0 = w, y0 = h, x1 = 0, y1 = 0;
                    for (std::size_t i = 0; i < h * w; ++i) {
                        if (want[i] != k) continue;
                        ++area;
                        x0 = std::min(x0, i % w), x1 = std::max(x1, i % w);
                        y0 = std::min(y0, i / w), y1 = std::max(y1, i / w);
                    }
                    const auto& got = components[static_cast<std::size_t>(k - 1)];
                    measures_ok = got.area == area && got.x == x0 && got.y == y0 && got.width == x1 - x0 + 1 &&
                                  got.height == y1 - y0 + 1;
                }
                check(measures_ok, "measures, " + what);
            }
        }
    }
}

void test_shapes_that_tell_the_connectivities_apart() {
    // A diagonal: one component with corners, three without.
    const std::vector<std::uint8_t> diagonal = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    std::vector<std::int32_t> labels(9);
    check_eq(in::label(diagonal.data(), 3, 3, 8, labels.data(), 9), 1, "diagonal, 8-connected");
    check_eq(in::label(diagonal.data(), 3, 3, 4, labels.data(), 9), 3, "diagonal, 4-connected");
    check(labels == std::vector<std::int32_t>{1, 0, 0, 0, 2, 0, 0, 0, 3}, "diagonal numbered in raster order");
    // A U shape whose arms meet only at the bottom: provisional labels merge late.
    const std::vector<std::uint8_t> u = {1, 0, 1, 1, 0, 1, 1, 1, 1};
    check_eq(in::label(u.data(), 3, 3, 4, labels.data(), 9), 1, "U shape is one component");
    check(std::all_of(labels.begin(), labels.end(), [](std::int32_t v) { return v == 0 || v == 1; }), "U shape labels");
    // A checkerboard: every pixel its own component with 4-connectivity, one with 8.
    std::vector<std::uint8_t> board(15 * 16);
    for (std::size_t i = 0; i < board.size(); ++i) board[i] = ((i / 16) + (i % 16)) % 2 == 0;
    std::vector<std::int32_t> board_labels(board.size());
    check_eq(in::label(board.data(), 15, 16, 4, board_labels.data(), board.size()), 120, "checkerboard, 4-connected");
    check_eq(in::label(board.data(), 15, 16, 8, board_labels.data(), board.size()), 1, "checkerboard, 8-connected");
}

void test_empty_and_full() {
    std::vector<std::int32_t> labels(12, 5);
    const std::vector<std::uint8_t> zeros(12, 0), ones(12, 1);
    check_eq(in::label(zeros.data(), 3, 4, 8, labels.data(), 12), 0, "empty mask has no component");
    check(std::all_of(labels.begin(), labels.end(), [](std::int32_t v) { return v == 0; }), "empty mask labels 0");
    check_eq(in::label(ones.data(), 3, 4, 4, labels.data(), 12), 1, "full mask is one component");
    check_eq(in::label(nullptr, 0, 5, 4, nullptr, 0), 0, "0 x 5 mask");
    check_eq(in::label(nullptr, 5, 0, 8, nullptr, 0), 0, "5 x 0 mask");
    check(in::measure(nullptr, 0, 0, 0).empty(), "no component to measure");
}

void test_errors() {
    const std::vector<std::uint8_t> mask(6, 1);
    std::vector<std::int32_t> labels(6);
    check_throws([&] { in::label(mask.data(), 2, 3, 6, labels.data(), 6); }, "connectivity must be 4 or 8",
                 "connectivity 6");
    check_throws([&] { in::label(mask.data(), 2, 3, 4, labels.data(), 5); }, "labels holds 5 elements",
                 "labels too small");
    check_throws([&] { in::label(mask.data(), 2, 3, 4, labels.data(), 7); }, "the mask has 6 pixels",
                 "labels of the wrong size");
    const auto huge = std::size_t{1} << 20;
    check_throws([&] { in::label(mask.data(), huge, huge, 4, labels.data(), 6); }, "more pixels than int32",
                 "a mask too large for int32 labels");
    check_throws([&] { in::label(nullptr, 2, 3, 4, labels.data(), 6); }, "null mask", "null mask");
    const std::vector<std::int32_t> bad = {0, 1, 3, 0, 0, 0};
    check_throws([&] { in::measure(bad.data(), 2, 3, 2); }, "label 3 at row 0, column 2 is outside 0..2",
                 "a label above the count");
    const std::vector<std::int32_t> negative = {0, -1, 0, 0, 0, 0};
    check_throws([&] { in::measure(negative.data(), 2, 3, 2); }, "label -1", "a negative label");
    check_throws([&] { in::measure(bad.data(), 2, 3, -1); }, "count must be >= 0", "a negative count");
}

}  // namespace

// encode() against rle::encode of each component's own mask, on odd sizes.
void test_encode_equals_each_components_mask() {
    std::mt19937 rng(7);
    for (const auto& [h, w] : std::vector<std::pair<std::size_t, std::size_t>>{{1, 1}, {1, 37}, {41, 1}, {13, 17}, {64, 31}}) {
        std::vector<std::uint8_t> mask(h * w);
        for (auto& m : mask) m = (rng() % 100) < 45 ? 1 : 0;
        std::vector<std::int32_t> labels(h * w);
        const std::int32_t count = in::label(mask.data(), h, w, 4, labels.data(), labels.size());
        const std::vector<std::string> encoded = in::encode(labels.data(), h, w, count);
        check(encoded.size() == static_cast<std::size_t>(count), "one RLE per component");
        bool same = true;
        for (std::int32_t k = 1; k <= count; ++k) {
            std::vector<std::uint8_t> own(h * w);
            for (std::size_t i = 0; i < h * w; ++i) own[i] = labels[i] == k ? 1 : 0;
            same = same && encoded[k - 1] == fastclipseg::rle::encode(own.data(), h, w, w, 1);
        }
        check(same, "encode equals rle::encode of each component's mask (" + std::to_string(h) + " x " +
                    std::to_string(w) + ")");
    }
    std::vector<std::int32_t> bad{0, 3, 1, 0};
    check_throws([&] { in::encode(bad.data(), 2, 2, 2); }, "outside 0..2", "encode refuses a label above count");
    check_throws([&] { in::encode(bad.data(), 2, 2, -1); }, "count must be >= 0", "encode refuses a negative count");
}

int main() {
    test_labels_equal_flood_fill();
    test_encode_equals_each_components_mask();
    test_shapes_that_tell_the_connectivities_apart();
    test_empty_and_full();
    test_errors();
    return summary();
}

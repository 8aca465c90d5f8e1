// Native tests for the C++ kernels. No framework: each check prints on
// failure, the summary line is "N passed, N failed", exit status is nonzero on
// any failure. Built with -DFASTCLIPSEG_BUILD_TESTS=ON and run under
// ASan/UBSan by scripts/native_sanitized_tests.sh.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastclipseg/rle.hpp"

#include "../../csrc/kernels/detail.hpp"  // internal helpers, tested directly
#include "check.hpp"

namespace rle = fastclipseg::rle;

namespace {

using namespace fastclipseg::testing;

// Reference: naive per-pixel column-major run lengths, like pycocotools rleEncode.
std::vector<std::uint64_t> naive_counts(const std::vector<std::uint8_t>& c_order, std::size_t h,
                                        std::size_t w) {
    std::vector<std::uint64_t> counts;
    std::uint8_t prev = 0;
    std::uint64_t run = 0;
    for (std::size_t c = 0; c < w; ++c) {
        for (std::size_t r = 0; r < h; ++r) {
            const std::uint8_t v = c_order[r * w + c] != 0;
            if (v != prev) {
                counts.push_back(run);
                run = 0;
                prev = v;
            }
            ++run;
        }
    }
    counts.push_back(run);
    return counts;
}

// Reference bounding box [x, y, w, h] straight from the pixels.
std::array<double, 4> naive_bbox(const std::vector<std::uint8_t>& c_order, std::size_t h,
                                 std::size_t w) {
    std::size_t x0 = w, y0 = h, x1 = 0, y1 = 0;
    bool any = false;
    for (std::size_t r = 0; r < h; ++r) {
        for (std::size_t c = 0; c < w; ++c) {
            if (!c_order[r * w + c]) continue;
            any = true;
            x0 = std::min(x0, c), x1 = std::max(x1, c);
            y0 = std::min(y0, r), y1 = std::max(y1, r);
        }
    }
    if (!any) return {0, 0, 0, 0};
    return {double(x0), double(y0), double(x1 - x0 + 1), double(y1 - y0 + 1)};
}

std::string encode_c(const std::vector<std::uint8_t>& m, std::size_t h, std::size_t w) {
    return rle::encode(m.data(), h, w, static_cast<std::ptrdiff_t>(w), 1);
}

std::vector<std::uint8_t> to_fortran(const std::vector<std::uint8_t>& m, std::size_t h,
                                     std::size_t w) {
    std::vector<std::uint8_t> f(h * w);
    for (std::size_t r = 0; r < h; ++r)
        for (std::size_t c = 0; c < w; ++c) f[c * h + r] = m[r * w + c];
    return f;
}

// Mask from a hex string of MSB-first packed bits in C order (np.packbits).
std::vector<std::uint8_t> unpack_hex(const std::string& hex, std::size_t h, std::size_t w) {
    std::vector<std::uint8_t> m(h * w);
    for (std::size_t i = 0; i < h * w; ++i) {
        const std::string byte = hex.substr((i / 8) * 2, 2);
        const unsigned v = static_cast<unsigned>(std::stoul(byte, nullptr, 16));
        m[i] = (v >> (7 - i % 8)) & 1;
    }
    return m;
}

// Strings produced by pycocotools.mask.encode (2.0.x) for fixed masks.
void test_known_vectors() {
    {
        std::vector<std::uint8_t> m(7 * 5, 0);
        for (int r = 2; r < 5; ++r)
            for (int c = 1; c < 3; ++c) m[r * 5 + c] = 1;
        m[6 * 5 + 4] = 1;
        m[0] = 1;
        const std::string s = encode_c(m, 7, 5);
        check_eq(s, std::string("0182L0;N"), "known 7x5 string");
        check_eq(rle::area(s, 7, 5), std::uint64_t{8}, "known 7x5 area");
        check(rle::bbox(s, 7, 5) == std::array<double, 4>{0, 0, 5, 7}, "known 7x5 bbox");
    }
    {
        const auto m = unpack_hex("70153c41995a97beacb148888ca945cdc310", 13, 11);
        check_eq(encode_c(m, 13, 11),
                 std::string("1122ON10O030O1O0O0000O11O00021NN11O01O40M030K13ON001OO030M0010O01"
                             "001O11O122MM"),
                 "known random 13x11 string");
    }
    {
        std::vector<std::uint8_t> m(2000 * 3000, 0);
        m[1999 * 3000 + 2999] = 1;
        check_eq(encode_c(m, 2000, 3000), std::string("o[Sg51"), "known large count string");
        m[1999 * 3000 + 2999] = 0;
        m[1000 * 3000 + 1] = 1;
        m[5 * 3000 + 2000] = 1;
        m[3 * 3000 + 2500] = 1;
        check_eq(encode_c(m, 2000, 3000), std::string("hm21\\Zoi30aWaTM0O"),
                 "known negative-delta string");
    }
    {
        std::vector<std::uint8_t> m(300 * 200, 0);
        for (int r = 50; r < 250; ++r)
            for (int c = 20; c < 180; ++c) m[r * 200 + c] = 1;
        for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 2; ++c) m[r * 200 + c] = 1;
        const std::string s = encode_c(m, 300, 200);
        check(s.rfind("03Y90ZZ5U6a_J", 0) == 0 && s.size() >= 3 &&
                  s.compare(s.size() - 3, 3, "ni5") == 0,
              "known 300x200 string");
        check(rle::bbox(s, 300, 200) == std::array<double, 4>{0, 0, 180, 250},
              "known 300x200 bbox");
    }
}

void test_edge_cases() {
    // Empty (0-pixel) masks encode as "0", like pycocotools.
    check_eq(rle::encode(nullptr, 0, 5, 5, 1), std::string("0"), "0x5 encodes to '0'");
    check_eq(rle::encode(nullptr, 5, 0, 0, 1), std::string("0"), "5x0 encodes to '0'");
    check_eq(rle::encode(nullptr, 0, 0, 0, 1), std::string("0"), "0x0 encodes to '0'");
    rle::decode("0", 0, 5, nullptr, 0);
    rle::decode("", 0, 5, nullptr, 0);
    check(true, "0-pixel decode of '0' and '' is accepted");
    check_eq(rle::area("0", 0, 3), std::uint64_t{0}, "0-pixel area");
    check(rle::bbox("0", 3, 0) == std::array<double, 4>{0, 0, 0, 0}, "0-pixel bbox");

    // All-background and all-foreground.
    std::vector<std::uint8_t> zeros(4 * 5, 0), ones(4 * 5, 1);
    check_eq(encode_c(zeros, 4, 5), std::string("d0"), "all-zero 4x5");
    check_eq(encode_c(ones, 4, 5), std::string("0d0"), "all-one 4x5");
    check(rle::bbox("d0", 4, 5) == std::array<double, 4>{0, 0, 0, 0}, "empty mask bbox");
    check(rle::bbox("0d0", 4, 5) == std::array<double, 4>{0, 0, 5, 4}, "full mask bbox");
    check_eq(rle::area("0d0", 4, 5), std::uint64_t{20}, "full mask area");

    // One run from the bottom of column 1 into the top of column 2: full height.
    {
        std::vector<std::uint8_t> m(5 * 4, 0);
        m[3 * 4 + 1] = m[4 * 4 + 1] = m[0 * 4 + 2] = m[1 * 4 + 2] = 1;
        check(rle::bbox(encode_c(m, 5, 4), 5, 4) == std::array<double, 4>{1, 0, 2, 5},
              "bbox of a run wrapping columns");
    }

    // Values > 1 are foreground.
    std::vector<std::uint8_t> big(4 * 5, 0);
    big[0] = 7;
    big[1] = 255;
    std::vector<std::uint8_t> one = big;
    one[0] = one[1] = 1;
    check_eq(encode_c(big, 4, 5), encode_c(one, 4, 5), "nonzero values count as 1");

    // Single pixel at each corner; 1xN and Nx1.
    const std::size_t h = 6, w = 9;
    const std::size_t corners[4][2] = {{0, 0}, {0, w - 1}, {h - 1, 0}, {h - 1, w - 1}};
    for (const auto& rc : corners) {
        std::vector<std::uint8_t> m(h * w, 0);
        m[rc[0] * w + rc[1]] = 1;
        const std::string s = encode_c(m, h, w);
        check_eq(rle::string_to_counts(s), naive_counts(m, h, w), "corner pixel counts");
        const std::array<double, 4> want{double(rc[1]), double(rc[0]), 1, 1};
        check(rle::bbox(s, h, w) == want, "corner pixel bbox");
        check_eq(rle::area(s, h, w), std::uint64_t{1}, "corner pixel area");
    }
    for (std::size_t n : {1, 2, 7, 8, 9, 15, 16, 17, 33, 100}) {
        std::vector<std::uint8_t> row(n);
        for (std::size_t i = 0; i < n; ++i) row[i] = (i * 7 + n) % 3 == 0;
        const auto want = rle::counts_to_string(naive_counts(row, 1, n));
        check_eq(encode_c(row, 1, n), want, "1xN row, n=" + std::to_string(n));
        check_eq(encode_c(row, n, 1), rle::counts_to_string(naive_counts(row, n, 1)),
                 "Nx1 column, n=" + std::to_string(n));
        // 1xN with a non-unit column stride (every other byte).
        std::vector<std::uint8_t> spread(2 * n, 9);
        for (std::size_t i = 0; i < n; ++i) spread[2 * i] = row[i];
        check_eq(rle::encode(spread.data(), 1, n, 0, 2), want,
                 "1xN strided row, n=" + std::to_string(n));
    }
}

// Random masks of many shapes and densities through every memory layout.
void test_random_layouts() {
    std::mt19937_64 rng(12345);
    const std::size_t shapes[][2] = {{1, 1},  {1, 40}, {40, 1}, {3, 3},   {7, 13},
                                     {16, 16}, {17, 9}, {64, 65}, {100, 3}, {31, 130}};
    for (const auto& shape : shapes) {
        const std::size_t h = shape[0], w = shape[1];
        for (double density : {0.0, 0.02, 0.5, 0.98, 1.0}) {
            std::bernoulli_distribution bit(density);
            std::vector<std::uint8_t> m(h * w);
            // Blobby masks (long runs) half the time: the word-at-a-time paths.
            const bool blobby = (rng() & 1) != 0;
            for (std::size_t i = 0; i < h * w; ++i) {
                m[i] = blobby && i > 0 && (rng() % 8 != 0) ? m[i - 1] : bit(rng);
            }
            const auto want_counts = naive_counts(m, h, w);
            const std::string want = rle::counts_to_string(want_counts);
            const std::string tag = std::to_string(h) + "x" + std::to_string(w);

            bool ok = encode_c(m, h, w) == want;
            const auto f = to_fortran(m, h, w);
            ok &= rle::encode(f.data(), h, w, 1, static_cast<std::ptrdiff_t>(h)) == want;
            // Strided view: every other row and column of a 2h x 2w buffer.
            std::vector<std::uint8_t> big(4 * h * w, 3);
            for (std::size_t r = 0; r < h; ++r)
                for (std::size_t c = 0; c < w; ++c) big[(2 * r) * (2 * w) + 2 * c] = m[r * w + c];
            ok &= rle::encode(big.data(), h, w, static_cast<std::ptrdiff_t>(4 * w), 2) == want;
            // Reversed view (negative strides) of the mask flipped both ways.
            std::vector<std::uint8_t> flipped(h * w);
            for (std::size_t i = 0; i < h * w; ++i) flipped[h * w - 1 - i] = m[i];
            ok &= rle::encode(flipped.data() + h * w - 1, h, w, -static_cast<std::ptrdiff_t>(w),
                              -1) == want;
            // Rows flipped upside down, read through a negative row stride
            // (contiguous rows, reversed order).
            std::vector<std::uint8_t> updown(h * w);
            for (std::size_t r = 0; r < h; ++r)
                for (std::size_t c = 0; c < w; ++c) updown[(h - 1 - r) * w + c] = m[r * w + c];
            ok &= rle::encode(updown.data() + (h - 1) * w, h, w, -static_cast<std::ptrdiff_t>(w),
                              1) == want;
            // Padded rows (row stride > w, unit column stride).
            std::vector<std::uint8_t> padded(h * (w + 5), 1);
            for (std::size_t r = 0; r < h; ++r)
                for (std::size_t c = 0; c < w; ++c) padded[r * (w + 5) + c] = m[r * w + c];
            ok &= rle::encode(padded.data(), h, w, static_cast<std::ptrdiff_t>(w + 5), 1) == want;
            check(ok, "encode layouts agree with naive reference " + tag);

            check_eq(rle::string_to_counts(want), want_counts, "string_to_counts " + tag);
            std::vector<std::uint8_t> out(h * w, 77);
            rle::decode(want, h, w, out.data(), out.size());
            std::vector<std::uint8_t> norm(h * w);
            for (std::size_t i = 0; i < h * w; ++i) norm[i] = f[i] != 0;
            check(out == norm, "decode round trip (column-major) " + tag);

            std::uint64_t a = 0;
            for (auto v : m) a += v != 0;
            check_eq(rle::area(want, h, w), a, "area " + tag);
            check_eq(rle::area_counts(want_counts, h, w), a, "area_counts " + tag);
            check(rle::bbox(want, h, w) == naive_bbox(m, h, w), "bbox " + tag);
            check(rle::bbox(want, h, w) == rle::bbox_counts(want_counts, h, w),
                  "bbox string/counts agree " + tag);
        }
    }
    // Batch: K masks laid out contiguously, and as a strided slice.
    const std::size_t k = 5, h = 9, w = 11;
    std::vector<std::uint8_t> batch(k * h * w);
    for (auto& v : batch) v = (rng() % 3) == 0;
    const auto got = rle::encode_batch(batch.data(), k, h, w, static_cast<std::ptrdiff_t>(h * w),
                                       static_cast<std::ptrdiff_t>(w), 1);
    bool ok = got.size() == k;
    for (std::size_t i = 0; ok && i < k; ++i) {
        std::vector<std::uint8_t> one(batch.begin() + i * h * w, batch.begin() + (i + 1) * h * w);
        ok &= got[i] == encode_c(one, h, w);
    }
    check(ok, "encode_batch matches per-mask encode");
    check(rle::encode_batch(nullptr, 0, h, w, 0, 0, 0).empty(), "encode_batch k=0");
    check_eq(rle::encode_batch(nullptr, 3, 0, w, 0, 0, 0), std::vector<std::string>(3, "0"),
             "encode_batch of 0-pixel masks");
}

void test_counts_string() {
    const std::vector<std::uint64_t> counts{0, 5, 3, 0, 1000000, 2, 1, 31, 32, 16, 15};
    check_eq(rle::string_to_counts(rle::counts_to_string(counts)), counts,
             "counts -> string -> counts");
    check(rle::string_to_counts("").empty(), "empty string has no counts");
    const std::vector<std::uint64_t> maxc{rle::kMaxCount, 0, rle::kMaxCount, rle::kMaxCount, 0};
    check_eq(rle::string_to_counts(rle::counts_to_string(maxc)), maxc, "kMaxCount round trip");
    check_throws([] { rle::counts_to_string(std::vector<std::uint64_t>{1, rle::kMaxCount + 1}); },
                 "exceeds", "count above kMaxCount rejected by counts_to_string");
}

void test_malformed() {
    std::vector<std::uint8_t> out(64, 0xAB);
    auto dec = [&](const std::string& s, std::size_t h, std::size_t w) {
        return [&out, s, h, w] { rle::decode(s, h, w, out.data(), out.size()); };
    };
    check_throws(dec("d0", 4, 6), "sum to 20", "sum too small");
    check_throws(dec("e0", 4, 5), "overrun", "sum too large");
    check_throws(dec("", 4, 5), "sum to 0", "empty string for nonempty mask");
    check_throws(dec("d0 ", 4, 5), "invalid character ' '", "space rejected");
    check_throws(dec("d0p", 4, 5), "invalid character 'p'", "char 112 rejected");
    check_throws(dec("/d0", 4, 5), "position 0", "char 47 rejected");
    check_throws(dec(std::string("d\x80", 2), 4, 5), "byte 128", "non-ASCII rejected");
    check_throws(dec(std::string("d\0", 2), 4, 5), "byte 0", "NUL rejected");
    check_throws(dec("d0P", 4, 5), "truncated", "trailing continuation char");
    check_throws(dec("P", 4, 5), "truncated", "lone continuation char");
    check_throws(dec("PPPPPPPPPPPPP0", 4, 5), "longer than 12", "over-long varint");
    check_throws(dec("PPPPPPPPPPPP0", 4, 5), "longer than 12", "13-char varint");
    check_eq(rle::counts_to_string(std::vector<std::uint64_t>{rle::kMaxCount}).size(),
             rle::kMaxVarintChars, "kMaxCount takes exactly kMaxVarintChars chars");
    // "O" is -1 as the first count: negative without any delta.
    check_throws(dec("O", 4, 5), "negative", "negative first count");
    // counts 1, 1, 1, then delta -5 from counts[1]=1 -> -4.
    check_throws(dec("111K", 4, 5), "negative", "negative count after delta");
    check(out == std::vector<std::uint8_t>(64, 0xAB), "failed decodes never write output");

    check_throws([&] { rle::decode("d0", 4, 5, out.data(), 19); }, "holds 19 bytes",
                 "output buffer too small");
    check_throws([&] { rle::decode("d0", 4, 5, nullptr, 20); }, "null", "null output");
    check_throws([] { rle::decode("0", std::size_t{1} << 40, std::size_t{1} << 40, nullptr, 0); },
                 "too large", "overflowing size");
    check_throws([] { rle::area("0P", 4, 5); }, "truncated", "area validates the string");
    check_throws([] { rle::bbox("d0", 5, 5); }, "sum to 20", "bbox validates the sum");
    check_throws([] { rle::area_counts({3, 4}, 2, 2); }, "overrun", "area_counts validates");
    check_throws([] { rle::string_to_counts("0oo"); }, "truncated", "string_to_counts truncated");
    check_throws([] { rle::encode(nullptr, 2, 2, 2, 1); }, "null", "encode null data");
}


// Sizes from untrusted input: the cap and the counts are checked before any
// allocation. Under ASan a request of 2^41 bytes (above its 1 TiB allocation
// limit) aborts the run, so these tests also prove nothing was allocated.
void test_untrusted_sizes() {
    const std::size_t big_h = std::size_t{1} << 20, big_w = std::size_t{1} << 21;  // 2^41 pixels
    const std::uint64_t u64_max = ~std::uint64_t{0};

    check_eq(rle::checked_pixels(1, 4, 5, 20), std::uint64_t{20}, "checked_pixels at the cap");
    check_eq(rle::checked_pixels(3, 4, 5, 60), std::uint64_t{60}, "checked_pixels batch at the cap");
    check_eq(rle::checked_pixels(0, big_h, big_w, 0), std::uint64_t{0}, "no masks, no pixels");
    check_eq(rle::checked_pixels(~std::size_t{0}, 0, 7, 0), std::uint64_t{0},
             "any number of 0-pixel masks");
    check_throws([] { rle::checked_pixels(1, 4, 5, 19); }, "mask size 4x5 = 20 pixels is above max_pixels = 19",
                 "checked_pixels one past the cap");
    check_throws([] { rle::checked_pixels(3, 100, 100, 20000); },
                 "3 RLEs of size 100x100 = 30000 pixels in all, above max_pixels = 20000",
                 "checked_pixels batch past the cap");
    check_throws([&] { rle::checked_pixels(~std::size_t{0}, big_h, big_w, u64_max); },
                 "more than 18446744073709551615 pixels", "checked_pixels k*h*w overflow");
    check_throws([] { rle::checked_pixels(1, std::size_t{1} << 40, std::size_t{1} << 40, ~std::uint64_t{0}); },
                 "too large", "checked_pixels h*w past kMaxCount");

    // validate: the size before the counts, then the counts.
    check_eq(rle::validate("d0", 4, 5, 20), std::uint64_t{20}, "validate returns h*w");
    check_eq(rle::validate("0", 0, 9, 0), std::uint64_t{0}, "validate a 0-pixel mask under cap 0");
    check_throws([&] { rle::validate("0", big_h, big_w, 1'000'000); }, "above max_pixels = 1000000",
                 "validate: huge size refused by the cap");
    check_throws([&] { rle::validate("p", big_h, big_w, 10); }, "above max_pixels",
                 "validate: the cap is checked before a char is parsed");
    check_throws([&] { rle::validate("0", big_h, big_w, u64_max); }, "sum to 0",
                 "validate: counts '0' for a 2^41-pixel size");
    check_throws([] { rle::validate("d0", 4, 6); }, "sum to 20", "validate: default cap, bad sum");

    // decode_to_vector allocates only after validating.
    check_throws([&] { rle::decode_to_vector("0", big_h, big_w, u64_max); }, "sum to 0",
                 "decode_to_vector: 2^41 pixels with counts '0', nothing allocated");
    const std::string big_full = rle::counts_to_string(std::vector<std::uint64_t>{0, std::uint64_t{big_h} * big_w});
    check_throws([&] { rle::decode_to_vector(big_full, big_h, big_w, std::uint64_t{1} << 30); },
                 "above max_pixels", "decode_to_vector: valid counts above the cap");
    check_throws([] { rle::decode_to_vector("d0p", 4, 5, 100); }, "invalid character 'p'",
                 "decode_to_vector: malformed counts");
    check(rle::decode_to_vector("0", 0, 5, 0).empty(), "decode_to_vector: 0-pixel mask");
    {
        std::mt19937 rng(77);
        const std::size_t h = 13, w = 9;
        std::vector<std::uint8_t> m(h * w);
        for (auto& v : m) v = static_cast<std::uint8_t>(rng() % 2);
        const std::string s = encode_c(m, h, w);
        std::vector<std::uint8_t> want(h * w);
        rle::decode(s, h, w, want.data(), want.size());
        check(rle::decode_to_vector(s, h, w, h * w) == want, "decode_to_vector matches decode");
        check_throws([&] { rle::decode_to_vector(s, h, w, h * w - 1); }, "above max_pixels = 116",
                     "decode_to_vector: cap one below h*w");
        // decode_validated on its own: same output; an exact-size buffer.
        std::vector<std::uint8_t> got(h * w, 0xAB);
        rle::decode_validated(s, h, w, got.data(), got.size());
        check(got == want, "decode_validated matches decode");
    }
    // decode_validated given strings that were NOT validated: it throws and
    // never writes outside the buffer (ASan checks the exact-size heap buffers).
    for (const char* bad : {"e0", "d1", "0e", "11111111111111111111111111", "d0p", "1P", "O"}) {
        std::vector<std::uint8_t> out(20);
        check_throws([&] { rle::decode_validated(bad, 4, 5, out.data(), out.size()); }, "",
                     std::string("decode_validated rejects unvalidated '") + bad + "'");
    }
    {
        std::vector<std::uint8_t> out(19);
        check_throws([&] { rle::decode_validated("d0", 4, 5, out.data(), out.size()); },
                     "holds 19 bytes", "decode_validated checks out_size");
        check_throws([] { rle::decode_validated("d0", 4, 5, nullptr, 20); }, "null",
                     "decode_validated null output");
    }
}

// ---------------------------------------------------------------------------
// Bit-packed masks (rle::encode_packed*)
// ---------------------------------------------------------------------------

// Packs C-order masks like np.packbits(mask, axis=-1, bitorder="little"),
// rows `row_bytes` apart; the padding bits (and spare bytes) are filled with
// `pad` so tests can check they are ignored.
std::vector<std::uint8_t> pack_little(const std::vector<std::uint8_t>& m, std::size_t k,
                                      std::size_t h, std::size_t w, std::size_t row_bytes,
                                      std::uint8_t pad) {
    std::vector<std::uint8_t> bits(k * h * row_bytes, pad);
    for (std::size_t i = 0; i < k * h; ++i) {
        std::uint8_t* row = bits.data() + i * row_bytes;
        for (std::size_t c = 0; c < (w + 7) / 8 * 8; ++c) {
            const std::uint8_t bit = 1u << (c % 8);
            if (c >= w) continue;  // padding keeps `pad`'s bit
            if (m[i * w + c]) row[c / 8] |= bit;
            else row[c / 8] &= static_cast<std::uint8_t>(~bit);
        }
    }
    return bits;
}

void test_packed_known() {
    // The 7x5 pycocotools vector of test_known_vectors, packed by hand: each
    // row of 5 columns is one byte, bit j = column j, padding bits 5..7.
    std::vector<std::uint8_t> m(7 * 5, 0);
    for (std::size_t r = 2; r < 5; ++r) m[r * 5 + 1] = m[r * 5 + 2] = 1;
    m[6 * 5 + 4] = m[0] = 1;
    const std::uint8_t rows[7] = {0x01, 0x00, 0x06, 0x06, 0x06, 0x00, 0x10};
    for (const std::uint8_t pad : {std::uint8_t{0x00}, std::uint8_t{0xe0}}) {
        std::uint8_t bits[7];
        for (int r = 0; r < 7; ++r) bits[r] = rows[r] | pad;
        const auto got = rle::encode_packed(bits, sizeof bits, 7, 5, 1);
        check_eq(got.counts, std::string("0182L0;N"), "packed known 7x5 counts");
        check_eq(got.area, std::uint64_t{8}, "packed known 7x5 area");
        check(got.bbox == std::array<double, 4>{0, 0, 5, 7}, "packed known 7x5 bbox");
    }
    check(pack_little(m, 1, 7, 5, 1, 0) == std::vector<std::uint8_t>(rows, rows + 7),
          "pack_little matches the hand packing");
    {
        // 1x10 row, columns 3..9 set: one byte plus 2 bits; 1-row masks take
        // the already-sorted path.
        const std::uint8_t bits[2] = {0xf8, 0x03 | 0xfc};
        const auto got = rle::encode_packed(bits, 2, 1, 10, 2);
        check_eq(rle::string_to_counts(got.counts), std::vector<std::uint64_t>{3, 7},
                 "packed 1x10 counts");
        check(got.bbox == std::array<double, 4>{3, 0, 7, 1}, "packed 1x10 bbox");
    }
    {
        // 3x2, only (2, 0) and (0, 1) set: a run wrapping from the bottom of
        // column 0 into the top of column 1 (row 0 vs the shifted bottom row).
        const std::uint8_t bits[3] = {0x02, 0x00, 0x01};
        const auto got = rle::encode_packed(bits, 3, 3, 2, 1);
        check_eq(rle::string_to_counts(got.counts), std::vector<std::uint64_t>{2, 2, 2},
                 "packed wrapping run counts");
        check(got.bbox == std::array<double, 4>{0, 0, 2, 3}, "packed wrapping run bbox");
    }
    // Zero-pixel masks encode as "0" and read nothing (null is fine).
    for (const auto& hw : {std::array<std::size_t, 2>{0, 5}, {5, 0}, {0, 0}}) {
        const auto got = rle::encode_packed(nullptr, 0, hw[0], hw[1], (hw[1] + 7) / 8);
        check(got.counts == "0" && got.area == 0 && got.bbox == std::array<double, 4>{},
              "packed 0-pixel mask");
    }
    check(rle::encode_packed_batch(nullptr, 0, 0, 4, 9, 2, 4).empty(), "packed batch k=0");
}

void test_packed_random() {
    std::mt19937_64 rng(777);
    const std::size_t shapes[][2] = {{1, 1},  {1, 7},   {1, 8},   {1, 9},  {1, 200}, {9, 1},
                                     {2, 3},  {7, 13},  {16, 16}, {17, 9}, {5, 63},  {5, 64},
                                     {5, 65}, {64, 65}, {31, 130}, {40, 257}};
    for (const auto& shape : shapes) {
        const std::size_t h = shape[0], w = shape[1], k = 3;
        for (double density : {0.0, 0.02, 0.5, 0.98, 1.0}) {
            std::bernoulli_distribution bit(density);
            std::vector<std::uint8_t> m(k * h * w);
            const bool blobby = (rng() & 1) != 0;
            for (std::size_t i = 0; i < m.size(); ++i) {
                m[i] = blobby && i > 0 && (rng() % 8 != 0) ? m[i - 1] : bit(rng);
            }
            const std::string tag = std::to_string(h) + "x" + std::to_string(w) + " d=" +
                                    std::to_string(density);
            const std::size_t rb = (w + 7) / 8;
            // Tight rows with clean and dirty padding, and wider rows.
            for (const std::size_t row_bytes : {rb, rb + 3}) {
                for (const std::uint8_t pad : {std::uint8_t{0}, std::uint8_t{0xff}, std::uint8_t{0xa5}}) {
                    const auto bits = pack_little(m, k, h, w, row_bytes, pad);
                    for (const unsigned threads : {1u, 2u, 0u}) {
                        const auto got = rle::encode_packed_batch(bits.data(), bits.size(), k, h, w,
                                                                  row_bytes, threads);
                        bool ok = got.size() == k;
                        for (std::size_t i = 0; ok && i < k; ++i) {
                            const std::vector<std::uint8_t> one(m.begin() + i * h * w,
                                                                m.begin() + (i + 1) * h * w);
                            const std::string want = encode_c(one, h, w);
                            ok &= got[i].counts == want;
                            ok &= got[i].area == rle::area(want, h, w);
                            ok &= got[i].bbox == naive_bbox(one, h, w);
                        }
                        check(ok, "packed vs byte encoder " + tag + " row_bytes=" +
                                      std::to_string(row_bytes) + " pad=" + std::to_string(pad) +
                                      " threads=" + std::to_string(threads));
                    }
                }
            }
            // Single-mask entry point, reading exactly h * row_bytes bytes.
            const auto bits = pack_little(m, 1, h, w, rb, 0x5a);
            const std::vector<std::uint8_t> first(m.begin(), m.begin() + h * w);
            check_eq(rle::encode_packed(bits.data(), h * rb, h, w, rb).counts,
                     encode_c(first, h, w), "encode_packed single " + tag);
        }
    }
    // A batch big enough to really run several threads.
    const std::size_t k = 6, h = 700, w = 500, rb = (w + 7) / 8;
    std::vector<std::uint8_t> m(k * h * w);
    for (std::size_t i = 0; i < m.size(); ++i) m[i] = i > 0 && rng() % 16 ? m[i - 1] : rng() & 1;
    const auto bits = pack_little(m, k, h, w, rb, 0xff);
    const auto got = rle::encode_packed_batch(bits.data(), bits.size(), k, h, w, rb, 4);
    const auto want = rle::encode_batch(m.data(), k, h, w, static_cast<std::ptrdiff_t>(h * w),
                                        static_cast<std::ptrdiff_t>(w), 1);
    bool ok = got.size() == k;
    for (std::size_t i = 0; ok && i < k; ++i) ok &= got[i].counts == want[i];
    check(ok, "packed batch with 4 threads");
}

void test_packed_bad_sizes() {
    std::vector<std::uint8_t> bits(64, 0);
    check_throws([&] { rle::encode_packed(bits.data(), 7, 4, 13, 2); }, "holds 7 bytes",
                 "packed buffer too small");
    check_throws([&] { rle::encode_packed_batch(bits.data(), 64, 5, 4, 13, 4); }, "need 80",
                 "packed batch buffer too small");
    check_throws([&] { rle::encode_packed(bits.data(), 64, 4, 13, 1); }, "row_bytes = 1",
                 "packed row_bytes too small");
    check_throws([&] { rle::encode_packed(bits.data(), 64, 2, 65, 8); }, "ceil(w/8) = 9",
                 "packed row_bytes too small for 65");
    check_throws([&] { rle::encode_packed(nullptr, 8, 4, 13, 2); }, "null", "packed null pointer");
    check_throws([] { rle::encode_packed(nullptr, 0, std::size_t{1} << 40, std::size_t{1} << 40, 1); },
                 "too large", "packed h*w over kMaxCount");
    check_throws([] { rle::encode_packed_batch(nullptr, 0, std::size_t{1} << 40, 1 << 20, 8, 1 << 20, 1); },
                 "overflows", "packed k*h*row_bytes overflow");
    check_throws([] { rle::encode_packed(nullptr, 0, 0, 16, 1); }, "ceil(w/8) = 2",
                 "packed row_bytes checked even for h = 0");
}

// The kernels' shared bit scans and worker pool (csrc/kernels/detail.hpp).
void test_detail() {
    namespace detail = fastclipseg::detail;
    std::mt19937_64 rng(7);
    bool ok = true;
    for (int t = 0; t < 2000; ++t) {
        // Sparse words too, so every bit and byte position comes up.
        std::uint64_t x = rng() & rng() & rng();
        if (t < 64) x = std::uint64_t{1} << t;
        if (x == 0) continue;
        unsigned lo = 0, hi = 63;
        while (!((x >> lo) & 1)) ++lo;
        while (!((x >> hi) & 1)) --hi;
        ok &= detail::ctz64(x) == lo && detail::clz64(x) == 63 - hi;
        ok &= detail::lowest_byte(x) == lo / 8 && detail::highest_byte(x) == hi / 8;
    }
    check(ok, "ctz64 / clz64 / lowest_byte / highest_byte");

    for (const std::size_t threads : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{64}}) {
        for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{100}}) {
            const std::size_t workers = detail::parallel_workers(n, threads);
            std::vector<int> seen(n, 0);  // items are distinct: no data race
            std::vector<std::atomic<int>> used(std::max<std::size_t>(workers, 1));
            std::atomic<bool> in_range{true};
            detail::parallel_for(n, threads, [&](std::size_t i, std::size_t worker) {
                if (worker >= std::max<std::size_t>(workers, 1) || i >= n) {
                    in_range = false;  // reported below; cannot index safely
                    return;
                }
                // Two workers sharing an index would break per-worker scratch.
                if (used[worker].fetch_add(1) != 0) in_range = false;
                ++seen[i];
                used[worker].fetch_sub(1);
            });
            const std::string tag = "n=" + std::to_string(n) + " threads=" + std::to_string(threads);
            check(in_range.load(), "parallel_for worker/item indices in range, " + tag);
            check(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }),
                  "parallel_for runs each item once, " + tag);
        }
    }

    // The first exception comes back to the caller once all workers stopped;
    // items after it are not started.
    for (const std::size_t threads : {std::size_t{1}, std::size_t{4}}) {
        std::atomic<std::size_t> ran{0};
        std::string msg;
        try {
            detail::parallel_for(1000, threads, [&](std::size_t i, std::size_t) {
                ++ran;
                if (i == 3) throw std::runtime_error("item 3");
                // Slow items, so that the other workers cannot finish all 1000 before the
                // throwing one stops them (on a loaded machine they could, and the check flaked).
                std::this_thread::sleep_for(std::chrono::microseconds(50));
            });
        } catch (const std::runtime_error& e) {
            msg = e.what();
        }
        const std::string tag = " threads=" + std::to_string(threads);
        check_eq(msg, std::string("item 3"), "parallel_for rethrows the item's exception" + tag);
        check(ran.load() < 1000, "parallel_for stops handing out items after an exception" + tag);
    }
}

}  // namespace

int main() {
    const std::pair<const char*, void (*)()> suites[] = {
        {"known_vectors", test_known_vectors}, {"edge_cases", test_edge_cases},
        {"random_layouts", test_random_layouts}, {"counts_string", test_counts_string},
        {"malformed", test_malformed}, {"untrusted_sizes", test_untrusted_sizes},
        {"packed_known", test_packed_known},
        {"packed_random", test_packed_random}, {"packed_bad_sizes", test_packed_bad_sizes},
        {"detail", test_detail},
    };
    for (const auto& [name, fn] : suites) {
        try {
            fn();
        } catch (const std::exception& e) {
            check(false, std::string(name) + ": unexpected exception: " + e.what());
        }
    }
    return summary();
}

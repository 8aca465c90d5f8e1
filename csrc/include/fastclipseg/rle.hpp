// COCO run-length encoding (RLE) kernels.
//
// Plain C++17: no Python, no pybind11, so C++ applications and the native
// tests can link these directly.
//
// Conventions (identical to pycocotools maskApi.c):
//  * A mask of height h and width w is read in column-major order: runs go
//    down each column, then continue at the top of the next column.
//  * counts alternate background/foreground run lengths and always start with
//    a background run (which is 0 when the first pixel is foreground).
//  * The compressed string is LEB128-like with 6-bit chars in '0'..'o'
//    (ASCII 48..111): 5 payload bits + 1 continuation bit per char, signed,
//    and counts[i] is stored as counts[i] - counts[i-2] for i > 2.
//  * An empty mask (h*w == 0) encodes as counts {0}, string "0".
//
// Every function that parses input validates it fully and throws
// std::invalid_argument with a message naming what was wrong; nothing is
// written to a caller buffer before its size has been checked.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

// Everything declared here is the library's API: visible outside it, while the library itself
// is built with hidden visibility (CMakeLists.txt).
#pragma GCC visibility push(default)

namespace fastclipseg::rle {

// Largest run length (and mask area h*w) accepted anywhere. Chosen so that
// every delta counts[i] - counts[i-2] fits a 12-char varint (60 signed bits)
// and no intermediate arithmetic can overflow int64. Far beyond any mask
// that fits in memory.
inline constexpr std::uint64_t kMaxCount = (std::uint64_t{1} << 59) - 1;

// Longest varint accepted when parsing (12 chars * 5 bits = 60 signed bits).
inline constexpr std::size_t kMaxVarintChars = 12;

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

// Encodes one h x w mask into the COCO compressed counts string.
//
// `data` points at element (row 0, col 0). Element (r, c) is read at
// data + r * row_stride + c * col_stride, strides in BYTES and possibly
// negative, so C-order, Fortran-order and strided/reversed views all work
// without a copy. Any nonzero byte is foreground. `data` may be null only
// when h * w == 0.
std::string encode(const std::uint8_t* data, std::size_t h, std::size_t w,
                   std::ptrdiff_t row_stride, std::ptrdiff_t col_stride);

// Encodes k masks of h x w; mask i starts at data + i * mask_stride.
std::vector<std::string> encode_batch(const std::uint8_t* data, std::size_t k,
                                      std::size_t h, std::size_t w,
                                      std::ptrdiff_t mask_stride,
                                      std::ptrdiff_t row_stride,
                                      std::ptrdiff_t col_stride);

// ---------------------------------------------------------------------------
// Encoding from bit-packed masks
// ---------------------------------------------------------------------------
//
// Packed layout: k masks of h x w in C order (mask, row, column). Each row is
// packed along the width into ceil(w/8) bytes, bit order LITTLE: bit j
// (value 1 << j) of byte b of a row is column 8*b + j. Rows are `row_bytes`
// apart (row_bytes >= ceil(w/8); extra bytes are ignored) and masks are
// h * row_bytes apart. With row_bytes = ceil(w/8) this is exactly
//     np.packbits(mask, axis=-1, bitorder="little")
// of a (k, h, w) bool array. Padding bits (columns >= w in the last byte of a
// row, and any bytes past ceil(w/8)) are IGNORED, never trusted to be 0.
//
// The result is identical to encode() of the unpacked mask (and so to
// pycocotools), with area and bbox (as area() / bbox()) from the same pass;
// no full-size byte mask is ever materialised.

struct PackedRle {
    std::string counts;                  // COCO compressed counts string
    std::uint64_t area = 0;              // foreground pixel count
    std::array<double, 4> bbox{};        // [x, y, width, height]; zeros if empty
};

// Encodes one packed h x w mask. `bits` holds `bits_size` readable bytes; it
// must hold h * row_bytes (only h == 0 or w == 0 allows fewer and a null
// pointer). Throws std::invalid_argument on a size mismatch, row_bytes <
// ceil(w/8), or h*w > kMaxCount -- all checked before any byte is read.
PackedRle encode_packed(const std::uint8_t* bits, std::size_t bits_size, std::size_t h,
                        std::size_t w, std::size_t row_bytes);

// Encodes k packed masks (mask i at bits + i * h * row_bytes; bits_size must
// be >= k * h * row_bytes). threads = 0: std::thread::hardware_concurrency();
// at most min(k, kMaxPackedThreads) threads are used. Every size is checked
// before any worker starts.
inline constexpr unsigned kMaxPackedThreads = 1024;
std::vector<PackedRle> encode_packed_batch(const std::uint8_t* bits, std::size_t bits_size,
                                           std::size_t k, std::size_t h, std::size_t w,
                                           std::size_t row_bytes, unsigned threads = 1);

// ---------------------------------------------------------------------------
// Uncompressed counts <-> compressed string
// ---------------------------------------------------------------------------

// Parses a compressed string into its run lengths. Rejects chars outside
// 48..111, truncated or over-long varints, and counts that are negative or
// exceed kMaxCount. Does not check the sum (no size is given).
std::vector<std::uint64_t> string_to_counts(std::string_view s);

// Compresses run lengths into the COCO string. Throws if a count exceeds
// kMaxCount.
std::string counts_to_string(const std::uint64_t* counts, std::size_t n);
inline std::string counts_to_string(const std::vector<std::uint64_t>& counts) {
    return counts_to_string(counts.data(), counts.size());
}

// ---------------------------------------------------------------------------
// Decoding and measurements (all validate that counts sum to exactly h*w)
// ---------------------------------------------------------------------------

// Sizes come from untrusted input (a JSON file, a request), so a caller that
// allocates the output itself must validate BEFORE allocating: first
// checked_pixels() (the size alone, against the caller's cap), then
// validate() (the counts), then allocate and decode_validated(). A size of
// 10^6 x 10^6 with counts "0" is then rejected without ever asking for the
// 931 GiB it names. decode_to_vector() does exactly this.

// Decodes `s` into `out` as h*w bytes of 0/1 in COLUMN-MAJOR order
// (out[c * h + r] is pixel (r, c)), i.e. a Fortran-ordered h x w array.
// Throws if out_size < h*w or the string is malformed; the whole string is
// validated before the first byte of `out` is written.
void decode(std::string_view s, std::size_t h, std::size_t w, std::uint8_t* out,
            std::size_t out_size);

// Validates `s` for an h x w mask without writing anything: h*w <=
// max_pixels (checked first, before a single char is parsed), every char and
// varint well-formed, no negative run, runs summing to exactly h*w. Returns
// h*w, the bytes a decode of `s` needs.
std::uint64_t validate(std::string_view s, std::size_t h, std::size_t w,
                       std::uint64_t max_pixels = kMaxCount);

// decode() without its separate validation pass, for a string validate()
// has accepted (the binding validates, allocates, then writes: two passes,
// as decode()). Still memory-safe on any input: every run is checked against
// h*w and out_size before it is written, so an unvalidated string cannot
// write out of bounds -- it only throws with `out` partly written.
void decode_validated(std::string_view s, std::size_t h, std::size_t w, std::uint8_t* out,
                      std::size_t out_size);

// Validates (size cap, then counts), THEN allocates: the h*w column-major
// bytes of decode(). Throws std::invalid_argument before any allocation on
// bad input or when h*w > max_pixels.
std::vector<std::uint8_t> decode_to_vector(std::string_view s, std::size_t h, std::size_t w,
                                           std::uint64_t max_pixels);

// Foreground pixel count.
std::uint64_t area(std::string_view s, std::size_t h, std::size_t w);
std::uint64_t area_counts(const std::vector<std::uint64_t>& counts, std::size_t h,
                          std::size_t w);

// Tight bounding box [x, y, width, height] of the foreground, as
// pycocotools.mask.toBbox; all zeros for an empty mask.
std::array<double, 4> bbox(std::string_view s, std::size_t h, std::size_t w);
std::array<double, 4> bbox_counts(const std::vector<std::uint64_t>& counts,
                                  std::size_t h, std::size_t w);

// h * w, throwing if it overflows or exceeds kMaxCount.
std::uint64_t checked_area(std::size_t h, std::size_t w);

// k * h * w, the pixels (bytes) a decode of k masks of h x w allocates;
// throws, naming the sizes, if h*w exceeds kMaxCount or k*h*w exceeds
// max_pixels (overflow included). Call it before allocating from a size.
std::uint64_t checked_pixels(std::size_t k, std::size_t h, std::size_t w,
                             std::uint64_t max_pixels);

}  // namespace fastclipseg::rle

#pragma GCC visibility pop

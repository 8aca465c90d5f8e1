// Image preprocessing kernels: uint8 images -> CLIPSeg network input.
//
// Plain C++17: no Python, no pybind11, so C++ applications and the native
// tests can link these directly.
//
// What `preprocess` computes, per image, is what the transformers CLIPSeg
// image processor (ViTImageProcessor, PIL backend) computes:
//  1. PIL.Image.resize((S, S), BILINEAR) of the RGB uint8 image. The resize
//     replicates Pillow's ImagingResample for 8-bit images
//     (libImaging/Resample.c) step by step: the same per-output-pixel windows
//     and double-precision weights, the same 22-bit fixed-point coefficients,
//     the same rounding and clipping, the same order of the two passes with
//     an 8-bit intermediate (see PassOrder). The resized
//     uint8 pixels are therefore equal to Pillow's, not merely close.
//  2. x * rescale_factor in float64, cast to float32, then (x - mean) / std in
//     float32. As the resized pixels are uint8, this is a (3, 256) lookup
//     table computed once with exactly that arithmetic (see value_table), so
//     the float32 output is bit-identical to the processor's.
//  3. Optionally float16 or bfloat16 output: the float32 value rounded to
//     nearest-even (as torch's .to(torch.float16 / torch.bfloat16)); bfloat16
//     is written as its uint16 bit pattern.
//
// Images are read in place through byte strides (row, column, channel; any
// sign), so crops, strided and reversed views need no copy. Grey images are
// replicated to three channels, a fourth (alpha) channel is ignored, and
// `bgr` swaps channels 0 and 2 on read.
//
// Every function validates its input fully and throws std::invalid_argument
// with a message naming what was wrong; nothing is written to a caller buffer
// before every size has been checked.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

// Everything declared here is the library's API: visible outside it, while the library itself
// is built with hidden visibility (CMakeLists.txt).
#pragma GCC visibility push(default)

namespace fastclipseg::preprocess {

// Largest input height/width accepted. Keeps every window, coefficient sum
// and intermediate of the fixed-point arithmetic far inside int32 (as it is
// in Pillow, whose sums are plain ints).
inline constexpr std::size_t kMaxSide = std::size_t{1} << 20;

// Largest output side S accepted.
inline constexpr std::size_t kMaxSize = std::size_t{1} << 15;

// One uint8 image. Element (row r, column c, channel ch) is read at
// data + r * row_stride + c * col_stride + ch * channel_stride (strides in
// BYTES, possibly negative or zero).
struct Image {
    const std::uint8_t* data = nullptr;
    std::size_t height = 0;
    std::size_t width = 0;
    std::size_t channels = 3;  // 1 (grey), 3 (RGB) or 4 (RGBA; alpha ignored)
    std::ptrdiff_t row_stride = 0;
    std::ptrdiff_t col_stride = 0;
    std::ptrdiff_t channel_stride = 1;
};

// Builds an Image for a C-contiguous h x w x channels array (h x w for grey).
inline Image packed_image(const std::uint8_t* data, std::size_t h, std::size_t w,
                          std::size_t channels) {
    Image im;
    im.data = data;
    im.height = h;
    im.width = w;
    im.channels = channels;
    im.col_stride = static_cast<std::ptrdiff_t>(channels);
    im.row_stride = static_cast<std::ptrdiff_t>(w * channels);
    im.channel_stride = 1;
    return im;
}

enum class OutputType {
    kFloat32,   // float
    kFloat16,   // IEEE binary16 bit patterns (uint16)
    kBFloat16,  // bfloat16 bit patterns (uint16)
};

// Which pass Pillow runs first. The order changes the rounding of the 8-bit
// intermediate, so a few pixels of some images differ by 1 between Pillow
// versions; the kernel follows the installed one to stay exact.
//  - kPillow13: Pillow >= 13 (ImagingResampleInner) runs the vertical pass
//    first when the height shrinks more than twice as much as the width.
//  - kPillow12: Pillow 12 (Image.resize, in Python) resizes the height first,
//    as a separate resize, when h > 100 * w and the height shrinks; otherwise
//    horizontal first.
//  - kHorizontalFirst: Pillow <= 11 always runs the horizontal pass first.
enum class PassOrder : int { kPillow13 = 0, kPillow12 = 1, kHorizontalFirst = 2 };

struct Options {
    std::size_t size = 352;  // output side S
    std::array<double, 3> mean{0.485, 0.456, 0.406};
    std::array<double, 3> std{0.229, 0.224, 0.225};
    double rescale_factor = 1.0 / 255.0;
    bool bgr = false;  // input channels are B, G, R: swap channels 0 and 2 on read
    OutputType dtype = OutputType::kFloat32;
    std::size_t threads = 0;  // 0: hardware_threads()
    // false forces the portable scalar kernels (the tests compare both paths;
    // the results are identical).
    bool simd = true;
    // Which Pillow's choice of pass order to follow (see PassOrder).
    PassOrder pass_order = PassOrder::kPillow13;
};

// Bytes per output element (4 or 2).
std::size_t element_size(OutputType dtype);

// "float32", "float16" or "bfloat16".
const char* dtype_name(OutputType dtype);

// n * 3 * size * size, throwing if it overflows or size is out of range.
std::size_t output_elements(std::size_t n, std::size_t size);

// std::thread::hardware_concurrency(), at least 1.
std::size_t hardware_threads();

// True when the running CPU has the instructions of the vectorised kernels
// (AVX2 on x86-64); Options::simd is ignored otherwise.
bool simd_available();

// table[c * 256 + v]: the normalised float32 value of uint8 level v in channel
// c: float32(v * rescale_factor computed in float64), then (x - mean) / std in
// float32 with mean and std cast to float32, as the transformers processor.
// Throws if a value is not finite or a std is 0.
std::array<float, 768> value_table(const Options& options);

// Round-to-nearest-even conversions of one float32 (NaN stays NaN, overflow
// becomes infinity), matching torch's .to(torch.float16 / torch.bfloat16).
std::uint16_t float_to_half(float f);
std::uint16_t float_to_bfloat16(float f);

// Checks one image (sizes, channels, null data); throws naming `index`.
void validate_image(const Image& image, std::size_t index);

// Preprocesses n images into `out`: n x 3 x S x S elements of options.dtype,
// C-contiguous (float for kFloat32, uint16 bit patterns otherwise), suitably
// aligned. `out_bytes` is the buffer's size and must be at least
// output_elements(n, S) * element_size(dtype). Work is split across images
// and output rows on options.threads std::threads; the result is identical
// for any thread count.
void preprocess(const Image* images, std::size_t n, const Options& options, void* out,
                std::size_t out_bytes);

// Resamples one image to size x size x 3 uint8 RGB (C-contiguous, row-major)
// exactly as PIL.Image.resize((size, size), BILINEAR) of its RGB version.
// `out_bytes` must be at least size * size * 3.
void resize(const Image& image, std::size_t size, bool bgr, std::uint8_t* out,
            std::size_t out_bytes, std::size_t threads = 1, bool simd = true,
            PassOrder pass_order = PassOrder::kPillow13);

// The PassOrder for an integer code (0, 1, 2 as declared); throws otherwise.
PassOrder pass_order_from_int(long long code);

}  // namespace fastclipseg::preprocess

#pragma GCC visibility pop

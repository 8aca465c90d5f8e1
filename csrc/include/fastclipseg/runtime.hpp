// fastclipseg::Segmenter: the whole pipeline, from an RGB image and text prompts to masks, in C++.
//
// It runs a folder written by `fastclipseg export MODEL --backend torchscript --out FOLDER`
// (or `--backend aoti`, or FastSegmenter.export): the manifest and every file in it are checked
// against their sha256 first, as the Python loader does; then the three stages (TorchScript
// modules, or AOTInductor packages built for this kind of CPU) run in libtorch, prompts are
// tokenised by fastclipseg::ClipTokenizer, and pre- and post-processing are the same native
// kernels the Python package runs. The results (RLE, scores) equal the Python API's on the same
// pixels and prompts for the same export.
//
// Errors: every function throws fastclipseg::Error (error.hpp) with a message naming what was
// wrong: a missing or tampered export, an export of another backend, a bad image or prompt.
// Nothing here aborts the host process.
//
// Thread safety: a Segmenter is immutable once loaded, except its prompt-embedding cache,
// which is guarded; any number of threads may call segment() on one Segmenter at once.
// Copies share the loaded model.
//
// libtorch stays out of this header, so an application that includes it compiles fast and
// needs no torch include paths of its own.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fastclipseg/api.hpp"
#include "fastclipseg/edges.hpp"
#include "fastclipseg/error.hpp"

namespace fastclipseg {

// One prompt's mask on one image, at the image's own resolution.
struct FASTCLIPSEG_API PromptMask {
    std::string prompt;
    // COCO compressed RLE counts of the mask (column-major, as pycocotools); its size is
    // [height, width] of the image.
    std::string rle_counts;
    double score = 0.0;      // mean probability inside the mask, 0 for an empty mask
    double stability = 0.0;  // segment-anything's stability score (logit offset 1.0)
    std::uint64_t area = 0;  // pixels in the mask
    std::array<double, 4> bbox{};  // [x, y, width, height] (COCO), zeros for an empty mask
    // Row-major height x width, filled only when asked for (SegmentOptions):
    std::vector<std::uint8_t> mask;     // 1 inside, 0 outside
    std::vector<float> probabilities;   // sigmoid of the upsampled logit
};

// What segment() returns for one image.
struct FASTCLIPSEG_API Segmentation {
    std::size_t height = 0;
    std::size_t width = 0;
    double threshold = 0.5;
    std::vector<PromptMask> masks;  // one per prompt, in the prompts' order

    // The JSON of `fastclipseg segment`'s <stem>.json: {"image", "height", "width",
    // "threshold", "masks": [{"prompt", "score", "stability", "area", "bbox", "rle":
    // {"size": [h, w], "counts"}}]}; `image` is written as null when empty. With frame >= 0,
    // "frame" and "timestamp" (null) come first, as in `fastclipseg video`'s JSONL.
    std::string to_json(const std::string& image = "", long long frame = -1) const;
};

struct FASTCLIPSEG_API LoadOptions {
    // Threads for libtorch's intra-op pool and the native kernels; 0 keeps libtorch's default
    // (all cores). libtorch's pool is process-wide, so this sets it for the whole process.
    unsigned threads = 0;
    // Largest image accepted, in pixels (the Python API's default cap).
    std::uint64_t max_pixels = 50'000'000;
};

struct FASTCLIPSEG_API SegmentOptions {
    bool masks = false;          // fill PromptMask::mask
    bool probabilities = false;  // fill PromptMask::probabilities
    // Masks that follow the image's edges: the fast guided filter of the probabilities, guided
    // by the image (fastclipseg/edges.hpp; Python's edges=). Off by default; then every output
    // derives from the filtered probability.
    bool edges = false;
    edges::Params edge_params;   // radius, eps, grey or colour guide, subsample
};

class FASTCLIPSEG_API Segmenter {
public:
    // Loads an export folder; throws fastclipseg::Error if it is missing, tampered with, or
    // not a CPU TorchScript or AOTInductor export (or an AOTInductor export built for a CPU
    // with other vector instructions).
    static Segmenter load(const std::string& export_dir, const LoadOptions& options = {});

    // Segments one image with each prompt. `rgb`: height x width x 3 uint8, row-major,
    // `row_stride` bytes between rows (0: width * 3). `threshold`: probability in [0, 1] above
    // which a pixel is in a mask. Prompts must be non-blank UTF-8 text.
    Segmentation segment(const std::uint8_t* rgb, std::size_t width, std::size_t height,
                         const std::vector<std::string>& prompts, double threshold = 0.5,
                         const SegmentOptions& options = {}, std::size_t row_stride = 0) const;

    // The conditional embedding (P floats) of one prompt, from the cache when it was seen.
    std::vector<float> embed(const std::string& prompt) const;

    std::size_t image_size() const;       // the network's input side (352 for CLIPSeg)
    std::size_t embedding_dim() const;    // P
    std::string precision() const;        // the export's: fp32, bf16 or int8
    std::size_t cached_prompts() const;   // prompt embeddings held in the cache

private:
    struct Impl;
    explicit Segmenter(std::shared_ptr<Impl> impl);
    std::shared_ptr<Impl> impl_;
};

}  // namespace fastclipseg

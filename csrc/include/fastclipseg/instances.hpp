// Instances: the connected components of a mask, numbered and measured.
//
// Plain C++17: no Python, no pybind11, so C++ applications and the native
// tests can link these directly. Every function checks its sizes before it
// writes and throws std::invalid_argument with a message naming what was wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#pragma GCC visibility push(default)

namespace fastclipseg::instances {

// One component's measures, in the mask's own pixels.
struct Component {
    std::uint64_t area = 0;            // pixels
    std::uint32_t x = 0, y = 0;        // COCO bbox: left, top, width, height
    std::uint32_t width = 0, height = 0;
};

// Labels the connected components of the h x w mask `mask` (C order, any
// nonzero byte is foreground) into `labels` (h * w int32, C order): 0 for
// background, 1..N for the components, numbered in raster order of their first
// pixel (as scipy.ndimage.label numbers them). `connectivity` is 4 (edges) or 8
// (edges and corners). `labels_size` is the number of int32 elements `labels`
// holds; it must be h * w. Returns N. Two passes over the mask with a
// union-find of provisional labels (path halving), then one relabelling pass.
std::int32_t label(const std::uint8_t* mask, std::size_t h, std::size_t w, int connectivity,
                   std::int32_t* labels, std::size_t labels_size);

// The area and COCO bbox of each of the `count` components of a labelling
// (as `label` writes it); entry i is component i + 1. Throws if a label is
// outside 0..count.
std::vector<Component> measure(const std::int32_t* labels, std::size_t h, std::size_t w, std::int32_t count);

// The COCO compressed RLE (as rle::encode writes it, pycocotools' counts) of
// each of the `count` components of a labelling, entry i for component i + 1,
// in one column-major pass over the labels: O(h w + runs), where encoding
// each component's mask apart would be O(count h w). Throws as `measure`.
std::vector<std::string> encode(const std::int32_t* labels, std::size_t h, std::size_t w, std::int32_t count);

}  // namespace fastclipseg::instances

#pragma GCC visibility pop

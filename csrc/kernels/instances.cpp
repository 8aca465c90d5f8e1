// Connected components of a mask (fastclipseg::instances).
//
// Classic two-pass labelling: the first pass gives each foreground pixel the
// smallest provisional label among its already-visited neighbours (left and up;
// with 8-connectivity also up-left and up-right) and merges the others into it
// in a union-find whose root is always the smallest label of its set. A
// component's smallest provisional label is that of its first pixel in raster
// order (that pixel has no visited neighbour in the component), so numbering the
// roots in increasing order numbers the components as scipy.ndimage.label does.
#include "fastclipseg/instances.hpp"

#include "fastclipseg/rle.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastclipseg::instances {
namespace {

std::int32_t find_root(std::vector<std::int32_t>& parent, std::int32_t x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];  // path halving
        x = parent[x];
    }
    return x;
}

// Joins the sets of a and b; returns the root (the smaller of the two roots).
std::int32_t join(std::vector<std::int32_t>& parent, std::int32_t a, std::int32_t b) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) return a;
    if (a > b) std::swap(a, b);
    parent[b] = a;
    return a;
}

void check_sizes(std::size_t h, std::size_t w, std::size_t labels_size) {
    const auto limit = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
    if (h != 0 && w > limit / h) {
        throw std::invalid_argument("instances: a " + std::to_string(h) + " x " + std::to_string(w) +
                                    " mask has more pixels than int32 labels can number (2^31 - 1)");
    }
    if (labels_size != h * w) {
        throw std::invalid_argument("instances: labels holds " + std::to_string(labels_size) +
                                    " elements, the mask has " + std::to_string(h * w) + " pixels");
    }
}

}  // namespace

std::int32_t label(const std::uint8_t* mask, std::size_t h, std::size_t w, int connectivity,
                   std::int32_t* labels, std::size_t labels_size) {
    if (connectivity != 4 && connectivity != 8) {
        throw std::invalid_argument("instances: connectivity must be 4 or 8, got " + std::to_string(connectivity));
    }
    check_sizes(h, w, labels_size);
    if (h * w == 0) return 0;
    if (mask == nullptr || labels == nullptr) throw std::invalid_argument("instances: null mask or labels");

    // parent[0] is unused (label 0 is the background).
    std::vector<std::int32_t> parent{0};
    const bool corners = connectivity == 8;
    for (std::size_t r = 0; r < h; ++r) {
        const std::uint8_t* row = mask + r * w;
        std::int32_t* out = labels + r * w;
        const std::int32_t* above = r > 0 ? out - w : nullptr;
        for (std::size_t c = 0; c < w; ++c) {
            if (row[c] == 0) {
                out[c] = 0;
                continue;
            }
            std::int32_t current = 0;
            const auto take = [&](std::int32_t neighbour) {
                if (neighbour == 0) return;
                current = current == 0 ? find_root(parent, neighbour) : join(parent, current, neighbour);
            };
            if (c > 0) take(out[c - 1]);
            if (above != nullptr) {
                take(above[c]);
                if (corners && c > 0) take(above[c - 1]);
                if (corners && c + 1 < w) take(above[c + 1]);
            }
            if (current == 0) {
                current = static_cast<std::int32_t>(parent.size());
                parent.push_back(current);
            }
            out[c] = current;
        }
    }

    // Roots in increasing order are the components in raster order of their first pixel.
    std::vector<std::int32_t> final_label(parent.size(), 0);
    std::int32_t count = 0;
    for (std::size_t i = 1; i < parent.size(); ++i) {
        const auto root = find_root(parent, static_cast<std::int32_t>(i));
        final_label[i] = root == static_cast<std::int32_t>(i) ? ++count : final_label[root];
    }
    for (std::size_t i = 0; i < h * w; ++i) labels[i] = final_label[labels[i]];
    return count;
}

std::vector<Component> measure(const std::int32_t* labels, std::size_t h, std::size_t w, std::int32_t count) {
    if (count < 0) throw std::invalid_argument("instances: count must be >= 0, got " + std::to_string(count));
    check_sizes(h, w, h * w);
    std::vector<Component> components(static_cast<std::size_t>(count));
    if (count == 0 || h * w == 0) return components;
    if (labels == nullptr) throw std::invalid_argument("instances: null labels");
    // Extents first (inclusive max), then turned into COCO width and height.
    std::vector<std::uint32_t> right(components.size(), 0), bottom(components.size(), 0);
    for (auto& component : components) {
        component.x = std::numeric_limits<std::uint32_t>::max();
        component.y = std::numeric_limits<std::uint32_t>::max();
    }
    for (std::size_t r = 0; r < h; ++r) {
        const std::int32_t* row = labels + r * w;
        for (std::size_t c = 0; c < w; ++c) {
            const std::int32_t value = row[c];
            if (value == 0) continue;
            if (value < 0 || value > count) {
                throw std::invalid_argument("instances: label " + std::to_string(value) + " at row " +
                                            std::to_string(r) + ", column " + std::to_string(c) +
                                            " is outside 0.." + std::to_string(count));
            }
            auto& component = components[static_cast<std::size_t>(value - 1)];
            const auto x = static_cast<std::uint32_t>(c), y = static_cast<std::uint32_t>(r);
            ++component.area;
            component.x = std::min(component.x, x);
            component.y = std::min(component.y, y);
            right[value - 1] = std::max(right[value - 1], x);
            bottom[value - 1] = std::max(bottom[value - 1], y);
        }
    }
    for (std::size_t i = 0; i < components.size(); ++i) {
        auto& component = components[i];
        if (component.area == 0) {  // a label number no pixel carries
            component.x = component.y = 0;
            continue;
        }
        component.width = right[i] - component.x + 1;
        component.height = bottom[i] - component.y + 1;
    }
    return components;
}

std::vector<std::string> encode(const std::int32_t* labels, std::size_t h, std::size_t w, std::int32_t count) {
    if (count < 0) throw std::invalid_argument("instances: count must be >= 0, got " + std::to_string(count));
    check_sizes(h, w, h * w);
    const std::size_t n = static_cast<std::size_t>(count);
    // Per component, its runs in column-major order: the counts of pycocotools'
    // RLE alternate background and foreground lengths from position 0.
    std::vector<std::vector<std::uint64_t>> counts(n);
    std::vector<std::uint64_t> last_end(n, 0);  // where the component's previous run ended
    if (n > 0 && h * w > 0) {
        if (labels == nullptr) throw std::invalid_argument("instances: null labels");
        std::int32_t current = 0;     // the label of the run being read
        std::uint64_t run_start = 0;
        const std::uint64_t total = static_cast<std::uint64_t>(h) * w;
        const auto close = [&](std::uint64_t end) {
            if (current == 0) return;
            const std::size_t i = static_cast<std::size_t>(current - 1);
            counts[i].push_back(run_start - last_end[i]);
            counts[i].push_back(end - run_start);
            last_end[i] = end;
        };
        for (std::size_t c = 0; c < w; ++c) {
            for (std::size_t r = 0; r < h; ++r) {
                const std::int32_t value = labels[r * w + c];
                if (value == current) continue;
                if (value < 0 || value > count) {
                    throw std::invalid_argument("instances: label " + std::to_string(value) + " at row " +
                                                std::to_string(r) + ", column " + std::to_string(c) +
                                                " is outside 0.." + std::to_string(count));
                }
                const std::uint64_t position = static_cast<std::uint64_t>(c) * h + r;
                close(position);
                current = value;
                run_start = position;
            }
        }
        close(total);
        // The last background run, unless the component reaches the end (COCO leaves out a final empty run).
        for (std::size_t i = 0; i < n; ++i) {
            if (last_end[i] < total || counts[i].empty()) counts[i].push_back(total - last_end[i]);
        }
    }
    std::vector<std::string> encoded(n);
    const std::uint64_t total = static_cast<std::uint64_t>(h) * w;
    for (std::size_t i = 0; i < n; ++i) {
        if (counts[i].empty()) counts[i].push_back(total);  // a label number no pixel carries
        encoded[i] = rle::counts_to_string(counts[i]);
    }
    return encoded;
}

}  // namespace fastclipseg::instances

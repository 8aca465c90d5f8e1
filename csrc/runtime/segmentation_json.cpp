// Segmentation::to_json: the structure of the Python SegmentationResult.to_dict().
#include <nlohmann/json.hpp>

#include "fastclipseg/runtime.hpp"

namespace fastclipseg {

std::string Segmentation::to_json(const std::string& image, long long frame) const {
    nlohmann::ordered_json masks_json = nlohmann::ordered_json::array();
    for (const PromptMask& mask : masks) {
        masks_json.push_back({
            {"prompt", mask.prompt},
            {"score", mask.score},
            {"stability", mask.stability},
            {"area", mask.area},
            {"bbox", mask.bbox},
            {"rle", {{"size", {height, width}}, {"counts", mask.rle_counts}}},
        });
    }
    nlohmann::ordered_json out;
    if (frame >= 0) {
        out["frame"] = frame;
        out["timestamp"] = nullptr;
    }
    out["image"] = image.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(image);
    out["height"] = height;
    out["width"] = width;
    out["threshold"] = threshold;
    out["masks"] = std::move(masks_json);
    // Invalid UTF-8 in a prompt is replaced rather than thrown on: prompts were checked already.
    return out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace fastclipseg

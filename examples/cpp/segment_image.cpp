// segment_image EXPORT_DIR IMAGE PROMPT... [--threshold T]
// Prints the JSON of `fastclipseg segment` (image size; per prompt: score, stability, area,
// bbox, COCO RLE). PNG and JPEG (and the other formats of stb_image) are decoded by stb_image;
// unlike the Python loader it does not apply an EXIF orientation.
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

#include <fastclipseg/runtime.hpp>

#include "arguments.hpp"
#include <iostream>
#include <memory>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    const auto parsed = parse_arguments(argc, argv);
    if (!parsed) return 2;
    const std::vector<std::string>& args = parsed->positional;
    const double threshold = parsed->threshold;
    if (args.size() < 3) {
        std::cerr << "usage: segment_image EXPORT_DIR IMAGE PROMPT... [--threshold T]\n";
        return 2;
    }
    int width = 0, height = 0, channels = 0;
    std::unique_ptr<stbi_uc, decltype(&stbi_image_free)> pixels(
        stbi_load(args[1].c_str(), &width, &height, &channels, 3), stbi_image_free);
    if (!pixels) {
        std::cerr << "error: cannot read " << args[1] << ": " << stbi_failure_reason() << "\n";
        return 1;
    }
    try {
        const auto segmenter = fastclipseg::Segmenter::load(args[0]);
        const std::vector<std::string> prompts(args.begin() + 2, args.end());
        const auto result = segmenter.segment(pixels.get(), width, height, prompts, threshold);
        std::cout << result.to_json(args[1]) << "\n";
    } catch (const fastclipseg::Error& error) {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
    return 0;
}

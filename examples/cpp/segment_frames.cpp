// segment_frames EXPORT_DIR WIDTH HEIGHT PROMPT... [--threshold T]
// Reads raw RGB24 frames of WIDTH x HEIGHT from stdin and prints one JSON line per frame
// ({"frame": i, ...} as in `fastclipseg video`'s JSONL), e.g.
//   ffmpeg -i in.mp4 -f rawvideo -pix_fmt rgb24 - | segment_frames export 1280 720 "a car"
#include <fastclipseg/runtime.hpp>

#include "arguments.hpp"
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    const auto parsed = parse_arguments(argc, argv);
    if (!parsed) return 2;
    const std::vector<std::string>& args = parsed->positional;
    const double threshold = parsed->threshold;
    if (args.size() < 4) {
        std::cerr << "usage: segment_frames EXPORT_DIR WIDTH HEIGHT PROMPT... [--threshold T] < frames.rgb\n";
        return 2;
    }
    std::size_t width = 0, height = 0;
    try {
        width = std::stoul(args[1]);
        height = std::stoul(args[2]);
    } catch (const std::logic_error&) {
        std::cerr << "error: WIDTH and HEIGHT must be whole numbers, got " << args[1] << " and " << args[2] << "\n";
        return 2;
    }
    // The runtime's own limit, checked before a frame buffer is allocated.
    const std::uint64_t max_pixels = fastclipseg::LoadOptions{}.max_pixels;
    if (width == 0 || height == 0 || width > max_pixels / height) {
        std::cerr << "error: WIDTH x HEIGHT must be between 1 and " << max_pixels << " pixels\n";
        return 2;
    }
    try {
        const auto segmenter = fastclipseg::Segmenter::load(args[0]);
        const std::vector<std::string> prompts(args.begin() + 3, args.end());
        std::vector<std::uint8_t> frame(width * height * 3);
        std::ios::sync_with_stdio(false);
        for (long long index = 0; std::cin.read(reinterpret_cast<char*>(frame.data()), frame.size()); ++index) {
            const auto result = segmenter.segment(frame.data(), width, height, prompts, threshold);
            std::cout << result.to_json("", index) << "\n" << std::flush;
        }
        if (std::cin.gcount() != 0) {
            std::cerr << "error: the input ended inside a frame (" << std::cin.gcount() << " of " << frame.size()
                      << " bytes): is the size " << width << "x" << height << " right?\n";
            return 1;
        }
    } catch (const fastclipseg::Error& error) {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
    return 0;
}

// bench_segment EXPORT_DIR FRAME.rgb WIDTH HEIGHT PROMPTS REPEATS
// Loads the export, then segments one raw RGB24 image with the first PROMPTS of a fixed list:
// once (first_s), twice more to warm up (libtorch's graph executor optimises a TorchScript
// graph after profiling its first runs), then REPEATS timed times; prints {"load_s", "first_s",
// "median_s"} as JSON.
#include <algorithm>
#include <chrono>
#include <fastclipseg/runtime.hpp>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {
double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 7) {
        std::cerr << "usage: bench_segment EXPORT_DIR FRAME.rgb WIDTH HEIGHT PROMPTS REPEATS\n";
        return 2;
    }
    const std::size_t width = std::stoul(argv[3]), height = std::stoul(argv[4]);
    const std::size_t count = std::stoul(argv[5]), repeats = std::stoul(argv[6]);
    const std::vector<std::string> all{"a person", "a dog", "a car", "a tree", "the sky", "a road", "a building",
                                       "grass"};
    if (count == 0 || count > all.size() || repeats == 0) {
        std::cerr << "PROMPTS must be 1.." << all.size() << " and REPEATS positive\n";
        return 2;
    }
    const std::vector<std::string> prompts(all.begin(), all.begin() + static_cast<long>(count));
    std::vector<std::uint8_t> rgb(width * height * 3);
    std::ifstream file(argv[2], std::ios::binary);
    if (!file.read(reinterpret_cast<char*>(rgb.data()), static_cast<std::streamsize>(rgb.size()))) {
        std::cerr << "cannot read " << rgb.size() << " bytes from " << argv[2] << "\n";
        return 1;
    }
    try {
        auto start = std::chrono::steady_clock::now();
        const auto segmenter = fastclipseg::Segmenter::load(argv[1]);
        const double load = seconds_since(start);
        start = std::chrono::steady_clock::now();
        segmenter.segment(rgb.data(), width, height, prompts);
        const double first = seconds_since(start);
        for (int warm_up = 0; warm_up < 2; ++warm_up) segmenter.segment(rgb.data(), width, height, prompts);
        std::vector<double> times;
        for (std::size_t i = 0; i < repeats; ++i) {
            start = std::chrono::steady_clock::now();
            segmenter.segment(rgb.data(), width, height, prompts);
            times.push_back(seconds_since(start));
        }
        std::sort(times.begin(), times.end());
        std::cout << "{\"load_s\": " << load << ", \"first_s\": " << first << ", \"median_s\": "
                  << times[times.size() / 2] << "}\n";
    } catch (const fastclipseg::Error& error) {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
    return 0;
}

// Reading a `fastclipseg export` folder: the manifest, its digest and every file's sha256
// checked exactly as the Python loader does (python/fastclipseg/engines/artifacts.py), so a
// tampered or half-copied export is refused before any of its bytes is used.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>

namespace fastclipseg::detail {

// What the image processor of the export does (see fastclipseg.ops.image_processor).
struct PreprocessSettings {
    std::size_t size = 352;
    std::array<double, 3> mean{0.485, 0.456, 0.406};
    std::array<double, 3> std{0.229, 0.224, 0.225};
    double rescale_factor = 1.0 / 255.0;
};

struct ExportFolder {
    std::filesystem::path dir;
    std::string backend;
    std::string precision;
    std::string device;
    int max_prompt_tokens = 77;
    std::filesystem::path vision;
    std::filesystem::path prompt;
    std::filesystem::path decoder;
    std::filesystem::path tokenizer_json;
    PreprocessSettings preprocess;
};

// The checked export in `dir`; throws fastclipseg::Error naming the file and what to do.
ExportFolder read_export_folder(const std::filesystem::path& dir);

// What an aoti export's kernels may assume of the CPU, spelled as the manifest records it.
std::string cpu_features();

// Lower-case hex sha256 of a file's contents (OpenSSL).
std::string file_sha256(const std::filesystem::path& path);

}  // namespace fastclipseg::detail

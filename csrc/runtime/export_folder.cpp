#include "export_folder.hpp"

#include <ATen/Version.h>
#include <ATen/cpu/Utils.h>
#include <openssl/evp.h>
#include <torch/version.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "fastclipseg/error.hpp"

namespace fastclipseg::detail {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The names and rules of python/fastclipseg/engines/artifacts.py.
constexpr const char* kManifestName = "fastclipseg-export.json";
constexpr const char* kFormat = "fastclipseg-export";
constexpr int kFormatVersion = 2;
constexpr const char* kDigestKey = "manifest_sha256";
constexpr const char* kReexport =
    "export the model again (fastclipseg export MODEL --out FOLDER, or FastSegmenter.export)";
constexpr std::array<const char*, 3> kStages{"vision", "prompt", "decoder"};

std::string hex(const unsigned char* bytes, unsigned size) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * size);
    for (unsigned i = 0; i < size; ++i) {
        out.push_back(digits[bytes[i] >> 4]);
        out.push_back(digits[bytes[i] & 15]);
    }
    return out;
}

class Sha256 {
public:
    Sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
        if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1) {
            throw Error("OpenSSL could not start a sha256 digest");
        }
    }
    void update(const void* data, std::size_t size) {
        if (EVP_DigestUpdate(context_.get(), data, size) != 1) throw Error("OpenSSL's sha256 update failed");
    }
    std::string hex_digest() {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned size = 0;
        if (EVP_DigestFinal_ex(context_.get(), digest, &size) != 1) throw Error("OpenSSL's sha256 failed");
        return hex(digest, size);
    }

private:
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_;
};

json read_json(const fs::path& path, const std::string& what_to_do) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error(path.string() + " cannot be read: " + what_to_do);
    json parsed = json::parse(file, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) throw Error(path.string() + " is not valid JSON: " + what_to_do);
    return parsed;
}

// Python's json.dumps(body, sort_keys=True, separators=(",", ":")) with ensure_ascii: nlohmann's
// objects keep their keys sorted by bytes, which for UTF-8 is Python's code-point order.
std::string manifest_digest(const json& manifest) {
    json body = manifest;
    body.erase(kDigestKey);
    const std::string text = body.dump(-1, ' ', /*ensure_ascii=*/true);
    Sha256 digest;
    digest.update(text.data(), text.size());
    return digest.hex_digest();
}

bool plain_name(const json& name) {
    if (!name.is_string()) return false;
    const std::string text = name.get<std::string>();
    return !text.empty() && text != "." && text != ".." && fs::path(text).filename().string() == text;
}

void check_structure(const json& manifest, const fs::path& path) {
    const std::string where = path.string();
    if (!manifest.is_object() || manifest.value("format", json()) != kFormat) {
        throw Error(where + " is not a fastclipseg export manifest");
    }
    const json version = manifest.value("format_version", json());
    if (version != kFormatVersion) {
        throw Error(where + " has format version " + version.dump() + "; this fastclipseg reads version " +
                    std::to_string(kFormatVersion) + ": " + kReexport + " with this version");
    }
    const json files = manifest.value("files", json());
    if (!files.is_object() || files.size() != kStages.size()) {
        throw Error(where + " must list one file for each of the stages vision, prompt, decoder");
    }
    for (const char* stage : kStages) {
        if (!files.contains(stage) || !files[stage].is_object() || !plain_name(files[stage].value("path", json()))) {
            throw Error(where + ": invalid or missing file name for stage '" + stage + "'");
        }
    }
    const json others = manifest.value("other_files", json());
    if (!others.is_object()) {
        throw Error(where + " must list the folder's other files (other_files, plain names): " + kReexport);
    }
    for (const auto& [name, entry] : others.items()) {
        if (!plain_name(json(name)) || !entry.is_object()) {
            throw Error(where + " lists an invalid other file '" + name + "': " + kReexport);
        }
    }
    if (!manifest.value(kDigestKey, json()).is_string()) {
        throw Error(where + " has no " + kDigestKey + ": " + kReexport);
    }
    for (const char* key : {"backend", "precision", "device"}) {
        if (!manifest.value(key, json()).is_string()) {
            throw Error(where + ": " + key + " must be a string: " + kReexport);
        }
    }
    if (!manifest.value("max_prompt_tokens", json()).is_number_integer()) {
        throw Error(where + ": max_prompt_tokens must be an integer: " + kReexport);
    }
}

void check_file(const fs::path& path, const json& entry, const std::string& what) {
    std::error_code error;
    if (!fs::is_regular_file(path, error)) {
        throw Error(path.string() + " (" + what + ") is missing: " + kReexport);
    }
    const json bytes = entry.value("bytes", json());
    const bool same_size = bytes.is_number_unsigned() && fs::file_size(path, error) == bytes.get<std::uint64_t>();
    if (!same_size || file_sha256(path) != entry.value("sha256", std::string())) {
        throw Error(path.string() + " (" + what + ") is corrupt: its contents do not match the manifest's sha256; " +
                    kReexport);
    }
}

// The file among `names` that the export holds; it must be one the manifest lists.
fs::path listed_file(const fs::path& dir, const json& others, std::initializer_list<const char*> names,
                     const std::string& what) {
    for (const char* name : names) {
        if (others.contains(name)) return dir / name;
        if (fs::exists(dir / name)) {
            throw Error((dir / name).string() + " is not in the manifest (added after the export was written?), "
                        "so it cannot be checked: remove it, or " + kReexport);
        }
    }
    throw Error(dir.string() + " has no " + what + " (" + *names.begin() + "): export with the processor, " +
                kReexport);
}

std::array<double, 3> three_numbers(const json& value, const fs::path& path, const char* key) {
    if (!value.is_array() || value.size() != 3 || !value[0].is_number() || !value[1].is_number() ||
        !value[2].is_number()) {
        throw Error(path.string() + ": " + key + " must be three numbers, got " + value.dump());
    }
    return {value[0].get<double>(), value[1].get<double>(), value[2].get<double>()};
}

// The settings of the transformers image processor (as PreprocessConfig.from_image_processor).
PreprocessSettings read_preprocess(const fs::path& path) {
    json config = read_json(path, kReexport);
    if (config.contains("image_processor")) config = config["image_processor"];  // processor_config.json
    if (!config.is_object()) throw Error(path.string() + " holds no image processor settings");
    if (!config.value("do_resize", true)) {
        throw Error(path.string() + ": do_resize is false; CLIPSeg needs a fixed square input size");
    }
    if (config.value("resample", 2) != 2) {
        throw Error(path.string() + ": the C++ runtime resizes with Pillow's bilinear filter (resample 2) only, "
                    "the processor asks for resample " + config["resample"].dump());
    }
    const json size = config.value("size", json());
    std::size_t side = 0;
    if (size.is_number_unsigned()) {
        side = size.get<std::size_t>();
    } else if (size.is_object() && size.value("height", json()).is_number_unsigned() &&
               size.value("height", json()) == size.value("width", json())) {
        side = size["height"].get<std::size_t>();
    }
    if (side == 0) throw Error(path.string() + ": size must be one positive square side, got " + size.dump());
    PreprocessSettings settings;
    settings.size = side;
    if (config.value("do_normalize", true)) {
        settings.mean = three_numbers(config.value("image_mean", json()), path, "image_mean");
        settings.std = three_numbers(config.value("image_std", json()), path, "image_std");
    } else {
        settings.mean = {0.0, 0.0, 0.0};
        settings.std = {1.0, 1.0, 1.0};
    }
    settings.rescale_factor = config.value("do_rescale", true) ? config.value("rescale_factor", 1.0 / 255.0) : 1.0;
    return settings;
}

}  // namespace

std::string file_sha256(const fs::path& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error(path.string() + " cannot be read");
    Sha256 digest;
    std::vector<char> block(1 << 20);
    while (file) {
        file.read(block.data(), static_cast<std::streamsize>(block.size()));
        digest.update(block.data(), static_cast<std::size_t>(file.gcount()));
    }
    if (file.bad()) throw Error("reading " + path.string() + " failed");
    return digest.hex_digest();
}

namespace {

ExportFolder read_checked_folder(const fs::path& dir) {
    std::error_code error;
    if (!fs::is_directory(dir, error)) {
        throw Error(dir.string() + " is not a folder: give the folder that `fastclipseg export` wrote");
    }
    const fs::path manifest_path = dir / kManifestName;
    if (!fs::is_regular_file(manifest_path, error)) {
        throw Error(dir.string() + " is not a fastclipseg export: " + kManifestName + " is missing");
    }
    const json manifest = read_json(manifest_path, kReexport);
    check_structure(manifest, manifest_path);
    if (manifest_digest(manifest) != manifest[kDigestKey].get<std::string>()) {
        throw Error(manifest_path.string() + " is corrupt or was edited: its contents do not match its " +
                    kDigestKey + "; " + kReexport);
    }
    ExportFolder folder;
    folder.dir = dir;
    folder.backend = manifest["backend"].get<std::string>();
    folder.precision = manifest["precision"].get<std::string>();
    folder.device = manifest["device"].get<std::string>();
    folder.max_prompt_tokens = manifest["max_prompt_tokens"].get<int>();
    if ((folder.backend != "torchscript" && folder.backend != "aoti") || folder.device != "cpu") {
        throw Error(dir.string() + " is a " + folder.backend + " export for " + folder.device +
                    "; the C++ runtime runs CPU TorchScript and AOTInductor exports: fastclipseg export MODEL "
                    "--backend torchscript (or aoti) --out FOLDER");
    }
    if (folder.backend == "aoti") {
        // Compiled kernels may use vector instructions this CPU lacks (as engines/compiled.py checks).
        const std::string built_for = manifest.value("cpu_features", std::string("(not recorded)"));
        if (built_for != cpu_features()) {
            throw Error(dir.string() + " was compiled for a CPU with " + built_for + "; this one has " +
                        cpu_features() + ", and the compiled kernels may use instructions it lacks: export the "
                        "model again on this kind of CPU");
        }
        // Compiled against one torch's ABI: loading it into another libtorch may crash, not just
        // misbehave (the Python loader refuses it too). The manifest spells it as Python's torch
        // does ("2.13.0+cpu"); TORCH_VERSION has no local part.
        const json versions = manifest.value("versions", json::object());
        const std::string built_with = versions.is_object() && versions.value("torch", json()).is_string()
                                           ? versions["torch"].get<std::string>()
                                           : std::string("(not recorded)");
        if (built_with.substr(0, built_with.find('+')) != TORCH_VERSION) {
            throw Error(dir.string() + " was compiled with torch " + built_with + "; this runtime uses libtorch " +
                        TORCH_VERSION + ", and aoti packages load only into the torch they were compiled against: " +
                        "export the model again with torch " + TORCH_VERSION);
        }
    }
    const json& files = manifest["files"];
    for (const char* stage : kStages) {
        check_file(dir / files[stage]["path"].get<std::string>(), files[stage], std::string("the ") + stage + " stage");
    }
    const json& others = manifest["other_files"];
    for (const auto& [name, entry] : others.items()) check_file(dir / name, entry, "listed in the manifest");
    folder.vision = dir / files["vision"]["path"].get<std::string>();
    folder.prompt = dir / files["prompt"]["path"].get<std::string>();
    folder.decoder = dir / files["decoder"]["path"].get<std::string>();
    folder.tokenizer_json = listed_file(dir, others, {"tokenizer.json"}, "tokenizer");
    folder.preprocess = read_preprocess(
        listed_file(dir, others, {"processor_config.json", "preprocessor_config.json"}, "image processor settings"));
    return folder;
}

}  // namespace

std::string cpu_features() {
    // As python/fastclipseg/engines/aoti_engine.py's cpu_features(): ATen's vector level, then the
    // extensions Inductor compiles for.
    std::string features = at::get_cpu_capability();
    const auto capabilities = at::cpu::get_cpu_capabilities();
    const auto has = [&](const char* name) {
        const auto found = capabilities.find(name);
        return found != capabilities.end() && found->second.isBool() && found->second.toBool();
    };
    const bool amx = has("amx_tile");
    if (amx) features += "+amx";
    if (has("avx512_bf16") || amx) features += "+bf16";
    if (has("avx512_vnni")) features += "+vnni";
    return features;
}

ExportFolder read_export_folder(const fs::path& dir) {
    try {
        return read_checked_folder(dir);
    } catch (const nlohmann::json::exception& error) {
        // A value of the wrong type in the manifest or the processor settings.
        throw Error(dir.string() + " holds a malformed export file (" + error.what() + "): " + kReexport);
    } catch (const fs::filesystem_error& error) {
        throw Error(std::string("reading the export failed: ") + error.what());
    }
}

}  // namespace fastclipseg::detail

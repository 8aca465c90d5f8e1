#include <ATen/Parallel.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <cmath>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "export_folder.hpp"
#include "fastclipseg/postprocess.hpp"
#include "fastclipseg/preprocess.hpp"
#include "fastclipseg/runtime.hpp"
#include "fastclipseg/tokenizer.hpp"

namespace fastclipseg {
namespace {

// One stage of the export: a TorchScript module or an AOTInductor package, as its backend says.
class Stage {
public:
    Stage(const std::filesystem::path& path, const std::string& backend) {
        try {
            if (backend == "aoti") {
                package_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path.string());
            } else {
                module_ = torch::jit::load(path.string(), torch::kCPU);
                module_.eval();
            }
        } catch (const c10::Error& error) {
            throw Error("libtorch could not load " + path.string() + " (" + error.what_without_backtrace() +
                        "); was it exported by another torch? export the model again with this one");
        }
    }

    // forward() is not const in libtorch's API, but running a loaded module or package from several
    // threads at once is supported (a package's calls take turns on its one runner).
    torch::Tensor operator()(const std::vector<torch::Tensor>& inputs) const {
        if (package_) return package_->run(inputs).at(0);
        return module_.forward(std::vector<torch::jit::IValue>(inputs.begin(), inputs.end())).toTensor();
    }

private:
    mutable torch::jit::Module module_;
    std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package_;
};

// The stages run without the JIT graph executor's optimisations, as the Python engine does on the
// CPU: on these frozen graphs they gained no speed but kept specialised copies of each graph (about
// 0.1 GB for a full-size int8 vision stage). The setting is per thread, so each call sets its own.
struct NoGraphOptimizer {
    torch::jit::GraphOptimizerEnabledGuard guard{false};
};

// The prompt as the CLIP tokenizer sees it, without its edge spaces: the cache key, as in Python.
std::string prompt_key(const ClipTokenizer& tokenizer, const std::string& prompt) {
    std::string key = tokenizer.normalize(prompt);
    const auto first = key.find_first_not_of(' ');
    if (first == std::string::npos) return {};
    return key.substr(first, key.find_last_not_of(' ') - first + 1);
}

void check_image(const std::uint8_t* rgb, std::size_t width, std::size_t height, std::size_t row_stride,
                 std::uint64_t max_pixels) {
    if (rgb == nullptr) throw Error("the image is a null pointer");
    if (width == 0 || height == 0) {
        throw Error("the image is empty (" + std::to_string(width) + "x" + std::to_string(height) + " pixels)");
    }
    if (width > max_pixels / height) {
        throw Error("the image has " + std::to_string(width) + "x" + std::to_string(height) +
                    " pixels, more than the limit of " + std::to_string(max_pixels) +
                    " (LoadOptions::max_pixels); downscale it first");
    }
    if (row_stride < width * 3) {
        throw Error("row_stride " + std::to_string(row_stride) + " is smaller than a row of " +
                    std::to_string(width) + " RGB pixels (" + std::to_string(width * 3) + " bytes)");
    }
}

// The post-processing kernel's own check, run before the network rather than after it.
void check_threshold(double threshold) {
    try {
        postprocess::threshold_logit(threshold);
    } catch (const std::invalid_argument& error) {
        throw Error(error.what());
    }
}

}  // namespace

struct Segmenter::Impl {
    detail::ExportFolder folder;
    ClipTokenizer tokenizer;
    Stage vision;
    Stage prompt;
    Stage decoder;
    unsigned kernel_threads = 0;
    std::uint64_t max_pixels = 0;
    std::size_t embedding_dim = 0;

    mutable std::mutex cache_mutex;
    mutable std::unordered_map<std::string, torch::Tensor> prompt_cache;

    Impl(detail::ExportFolder checked, const LoadOptions& options)
        : folder(std::move(checked)),
          tokenizer(ClipTokenizer::from_file(folder.tokenizer_json.string(), folder.max_prompt_tokens)),
          vision(folder.vision, folder.backend),
          prompt(folder.prompt, folder.backend),
          decoder(folder.decoder, folder.backend),
          kernel_threads(options.threads),
          max_pixels(options.max_pixels) {}

    // (1, P) float32: one prompt per call and unpadded, as the Python core runs it, so the
    // embedding does not depend on which prompts shared the call.
    torch::Tensor encode(const std::string& text) const {
        const std::vector<int64_t> ids = tokenizer.encode(text);
        torch::Tensor input_ids = torch::tensor(ids, torch::kLong).unsqueeze(0);
        c10::InferenceMode guard;
        const NoGraphOptimizer plain;
        try {
            return prompt({input_ids}).to(torch::kFloat).contiguous();
        } catch (const c10::Error& error) {
            throw Error(std::string("the prompt stage failed: ") + error.what_without_backtrace());
        }
    }

    torch::Tensor embedding(const std::string& text) const {
        const std::string key = prompt_key(tokenizer, text);
        {
            std::lock_guard<std::mutex> lock(cache_mutex);
            const auto found = prompt_cache.find(key);
            if (found != prompt_cache.end()) return found->second;
        }
        // Encoded outside the lock: two threads may both encode a new prompt; both get equal rows.
        torch::Tensor row = encode(text);
        std::lock_guard<std::mutex> lock(cache_mutex);
        return prompt_cache.emplace(key, row).first->second;
    }

    torch::Tensor pixel_values(const std::uint8_t* rgb, std::size_t width, std::size_t height,
                               std::size_t row_stride) const {
        preprocess::Image image;
        image.data = rgb;
        image.height = height;
        image.width = width;
        image.channels = 3;
        image.row_stride = static_cast<std::ptrdiff_t>(row_stride);
        image.col_stride = 3;
        image.channel_stride = 1;
        preprocess::Options options;
        options.size = folder.preprocess.size;
        options.mean = folder.preprocess.mean;
        options.std = folder.preprocess.std;
        options.rescale_factor = folder.preprocess.rescale_factor;
        options.threads = kernel_threads;
        const auto side = static_cast<int64_t>(options.size);
        torch::Tensor pixels = torch::empty({1, 3, side, side}, torch::kFloat);
        preprocess::preprocess(&image, 1, options, pixels.data_ptr<float>(),
                               static_cast<std::size_t>(pixels.numel()) * sizeof(float));
        return pixels;
    }
};

Segmenter::Segmenter(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Segmenter Segmenter::load(const std::string& export_dir, const LoadOptions& options) {
    if (options.max_pixels == 0) throw Error("LoadOptions::max_pixels must be positive");
    if (options.threads > 0) at::set_num_threads(static_cast<int>(options.threads));
    auto impl = std::make_shared<Impl>(detail::read_export_folder(export_dir), options);
    impl->embedding_dim = static_cast<std::size_t>(impl->encode("a").size(1));
    return Segmenter(std::move(impl));
}

std::vector<float> Segmenter::embed(const std::string& prompt) const {
    if (prompt_key(impl_->tokenizer, prompt).empty()) throw Error("the prompt is empty or whitespace only");
    const torch::Tensor row = impl_->embedding(prompt);
    return std::vector<float>(row.data_ptr<float>(), row.data_ptr<float>() + row.numel());
}

Segmentation Segmenter::segment(const std::uint8_t* rgb, std::size_t width, std::size_t height,
                                const std::vector<std::string>& prompts, double threshold,
                                const SegmentOptions& options, std::size_t row_stride) const {
    if (row_stride == 0) row_stride = width * 3;
    check_image(rgb, width, height, row_stride, impl_->max_pixels);
    check_threshold(threshold);
    if (prompts.empty()) throw Error("prompts is empty: give at least one prompt");
    // The edge-aware upsampling's guide is the image, without row padding; checked before the network.
    std::vector<std::uint8_t> unpadded;
    edges::Guide guide{rgb, width * height * 3, height, width, 3};
    if (options.edges) {
        if (row_stride != width * 3) {
            unpadded.resize(width * height * 3);
            for (std::size_t r = 0; r < height; ++r) std::copy_n(rgb + r * row_stride, width * 3, &unpadded[r * width * 3]);
            guide.pixels = unpadded.data();
        }
        try {
            edges::check(guide, options.edge_params, height, width);
        } catch (const std::invalid_argument& error) {
            throw Error(error.what());
        }
    }
    std::vector<torch::Tensor> rows;
    rows.reserve(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        if (prompt_key(impl_->tokenizer, prompts[i]).empty()) {
            throw Error("prompts[" + std::to_string(i) + "] is empty or whitespace only");
        }
        rows.push_back(impl_->embedding(prompts[i]));
    }
    const auto k = static_cast<int64_t>(prompts.size());
    torch::Tensor logits;
    try {
        const torch::Tensor pixels = impl_->pixel_values(rgb, width, height, row_stride);
        c10::InferenceMode guard;
        const NoGraphOptimizer plain;
        const torch::Tensor activations = impl_->vision({pixels});
        const torch::Tensor image_index = torch::zeros({k}, torch::kLong);
        logits = impl_->decoder({activations, torch::cat(rows), image_index}).to(torch::kFloat).contiguous();
    } catch (const c10::Error& error) {
        throw Error(std::string("the network failed: ") + error.what_without_backtrace());
    } catch (const std::invalid_argument& error) {
        throw Error(std::string("preprocessing failed: ") + error.what());
    }

    const std::size_t pixels_per_mask = width * height;
    Segmentation result;
    result.height = height;
    result.width = width;
    result.threshold = threshold;
    std::vector<std::uint8_t> masks(options.masks ? pixels_per_mask * prompts.size() : 0);
    std::vector<float> probabilities(options.probabilities ? pixels_per_mask * prompts.size() : 0);
    postprocess::Shape shape{prompts.size(), static_cast<std::size_t>(logits.size(1)),
                             static_cast<std::size_t>(logits.size(2)), height, width};
    postprocess::Request request;
    request.threshold = threshold;
    request.rle = request.area = request.bbox = request.score = request.stability = true;
    request.masks = options.masks ? masks.data() : nullptr;
    request.masks_size = masks.size();
    request.probs_f32 = options.probabilities ? probabilities.data() : nullptr;
    request.probs_f32_size = probabilities.size();
    request.threads = impl_->kernel_threads;
    if (options.edges) {
        request.guide = &guide;
        request.edges = options.edge_params;
    }
    postprocess::Result summary;
    try {
        summary = postprocess::run(logits.data_ptr<float>(), static_cast<std::size_t>(logits.numel()), shape, request);
    } catch (const std::invalid_argument& error) {
        throw Error(std::string("post-processing failed: ") + error.what());
    }
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        PromptMask mask;
        mask.prompt = prompts[i];
        mask.rle_counts = std::move(summary.rle[i]);
        mask.score = summary.score[i];
        mask.stability = summary.stability[i];
        mask.area = summary.area[i];
        mask.bbox = summary.bbox[i];
        if (options.masks) {
            mask.mask.assign(masks.begin() + i * pixels_per_mask, masks.begin() + (i + 1) * pixels_per_mask);
        }
        if (options.probabilities) {
            mask.probabilities.assign(probabilities.begin() + i * pixels_per_mask,
                                      probabilities.begin() + (i + 1) * pixels_per_mask);
        }
        result.masks.push_back(std::move(mask));
    }
    return result;
}

std::size_t Segmenter::image_size() const { return impl_->folder.preprocess.size; }
std::size_t Segmenter::embedding_dim() const { return impl_->embedding_dim; }
std::string Segmenter::precision() const { return impl_->folder.precision; }
std::size_t Segmenter::cached_prompts() const {
    std::lock_guard<std::mutex> lock(impl_->cache_mutex);
    return impl_->prompt_cache.size();
}

}  // namespace fastclipseg

// pybind11 bindings for the post-processing kernels (fastclipseg::postprocess).
//
// Logits must be a float32 ndarray (native byte order) of exactly 3 dims: any
// other dtype is a TypeError, never a silent cast; a non-contiguous array is
// copied to C order here, so the kernels only see one layout. Every size is
// validated before an output is allocated, and the GIL is released around the
// kernel. std::invalid_argument from the kernels becomes ValueError
// (pybind11's built-in translation).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "fastclipseg/postprocess.hpp"

namespace py = pybind11;

namespace fastclipseg::bindings {
namespace {

namespace pp = fastclipseg::postprocess;

std::string type_name(py::handle obj) {
    return py::str(py::type::handle_of(obj).attr("__name__"));
}

// The logits as a C-contiguous float32 (K, h, w) array.
py::array_t<float, py::array::c_style> as_logits(const py::object& obj) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error("logits must be a numpy.ndarray of float32, got " + type_name(obj));
    }
    const auto arr = py::reinterpret_borrow<py::array>(obj);
    const py::dtype dt = arr.dtype();
    if (!dt.attr("__eq__")(py::dtype::of<float>()).cast<bool>()) {
        throw py::type_error("logits dtype must be float32, got " + std::string(py::str(dt)) +
                             " (convert explicitly, e.g. logits.astype(np.float32))");
    }
    if (arr.ndim() != 3) {
        throw py::value_error("logits must be 3-D (K, h, w), got a " + std::to_string(arr.ndim()) +
                              "-D array of shape " + std::string(py::str(obj.attr("shape"))));
    }
    // Copies only when the layout is not C order or the data is not
    // float-aligned (numpy allows both; the kernels read plain float*).
    const bool aligned = reinterpret_cast<std::uintptr_t>(arr.data()) % alignof(float) == 0;
    if ((arr.flags() & py::array::c_style) && aligned) {
        return py::reinterpret_borrow<py::array_t<float, py::array::c_style>>(arr);
    }
    const py::object copy = py::module_::import("numpy").attr("require")(
        arr, py::dtype::of<float>(), py::make_tuple("C", "A"));
    return py::array_t<float, py::array::c_style>::ensure(copy);
}

std::size_t checked_side(long long v, const char* name) {
    if (v < 1) throw py::value_error(std::string(name) + " must be >= 1, got " + std::to_string(v));
    return static_cast<std::size_t>(v);
}

unsigned checked_threads(long long v) {
    // 0 means "default" here; the Python wrapper maps None to it.
    if (v < 0) throw py::value_error("threads must be >= 1, got " + std::to_string(v));
    return static_cast<unsigned>(std::min<long long>(v, pp::kMaxThreads));
}

pp::Shape shape_of(const py::array_t<float, py::array::c_style>& logits, long long height,
                   long long width) {
    pp::Shape s;
    s.k = static_cast<std::size_t>(logits.shape(0));
    s.h = static_cast<std::size_t>(logits.shape(1));
    s.w = static_cast<std::size_t>(logits.shape(2));
    s.height = checked_side(height, "output height");
    s.width = checked_side(width, "output width");
    return s;
}

std::vector<py::ssize_t> dims3(const pp::Shape& s) {
    return {static_cast<py::ssize_t>(s.k), static_cast<py::ssize_t>(s.height),
            static_cast<py::ssize_t>(s.width)};
}

// The guide image as a C-contiguous uint8 (H, W) or (H, W, C) array.
py::array_t<std::uint8_t, py::array::c_style> as_guide(const py::object& obj) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error("the guide image must be a numpy.ndarray of uint8, got " + type_name(obj));
    }
    const auto arr = py::reinterpret_borrow<py::array>(obj);
    if (!arr.dtype().attr("__eq__")(py::dtype::of<std::uint8_t>()).cast<bool>()) {
        throw py::type_error("the guide image dtype must be uint8, got " + std::string(py::str(arr.dtype())));
    }
    if (arr.ndim() != 2 && arr.ndim() != 3) {
        throw py::value_error("the guide image must be H x W or H x W x C, got shape " +
                              std::string(py::str(obj.attr("shape"))));
    }
    return py::array_t<std::uint8_t, py::array::c_style>::ensure(
        py::module_::import("numpy").attr("ascontiguousarray")(arr));
}

py::dict postprocess(const py::object& logits_obj, long long height, long long width,
                     double threshold, bool masks, const py::object& probs, bool rle, bool area,
                     bool bbox, bool score, long long threads, bool stability,
                     double stability_offset, const py::object& guide_obj, long long radius,
                     double eps, bool colour, long long subsample) {
    const auto logits = as_logits(logits_obj);
    const pp::Shape shape = shape_of(logits, height, width);
    std::string probs_kind;
    if (!probs.is_none()) {
        if (py::isinstance<py::str>(probs)) probs_kind = probs.cast<std::string>();
        if (probs_kind != "float32" && probs_kind != "uint8") {
            throw py::value_error("probs must be None, 'float32' or 'uint8', got " +
                                  std::string(py::repr(probs)));
        }
    }
    pp::Request req;
    req.threshold = threshold;
    req.rle = rle, req.area = area, req.bbox = bbox, req.score = score;
    req.stability = stability, req.stability_offset = stability_offset;
    req.threads = checked_threads(threads);
    // Validate everything before allocating a (possibly huge) output.
    pp::stability_thresholds(threshold, stability_offset);  // the threshold and the offset
    const std::uint64_t total = pp::output_elements(shape);
    py::array_t<std::uint8_t, py::array::c_style> guide_arr;
    fastclipseg::edges::Guide guide;
    if (!guide_obj.is_none()) {
        if (radius < 1) throw py::value_error("edge radius must be >= 1, got " + std::to_string(radius));
        if (subsample < 1) throw py::value_error("edge subsample must be >= 1, got " + std::to_string(subsample));
        guide_arr = as_guide(guide_obj);
        guide.pixels = guide_arr.data();
        guide.size = static_cast<std::size_t>(guide_arr.size());
        guide.height = static_cast<std::size_t>(guide_arr.shape(0));
        guide.width = static_cast<std::size_t>(guide_arr.shape(1));
        guide.channels = guide_arr.ndim() == 3 ? static_cast<std::size_t>(guide_arr.shape(2)) : 1;
        req.guide = &guide;
        req.edges.radius = static_cast<std::size_t>(radius);
        req.edges.eps = eps;
        req.edges.subsample = static_cast<std::size_t>(subsample);
        req.edges.mode = colour ? fastclipseg::edges::GuideMode::colour : fastclipseg::edges::GuideMode::grey;
        fastclipseg::edges::check(guide, req.edges, shape.height, shape.width);
    }

    py::object masks_out = py::none(), probs_out = py::none();
    if (masks) {
        py::array_t<bool> a(dims3(shape));
        req.masks = reinterpret_cast<std::uint8_t*>(a.mutable_data());
        req.masks_size = static_cast<std::size_t>(total);
        masks_out = a;
    }
    if (probs_kind == "float32") {
        py::array_t<float> a(dims3(shape));
        req.probs_f32 = a.mutable_data();
        req.probs_f32_size = static_cast<std::size_t>(total);
        probs_out = a;
    } else if (probs_kind == "uint8") {
        py::array_t<std::uint8_t> a(dims3(shape));
        req.probs_u8 = a.mutable_data();
        req.probs_u8_size = static_cast<std::size_t>(total);
        probs_out = a;
    }

    const float* data = logits.data();
    const std::size_t size = static_cast<std::size_t>(logits.size());
    pp::Result res;
    {
        py::gil_scoped_release release;
        res = pp::run(data, size, shape, req);
    }

    py::dict out;
    out["masks"] = masks_out;
    out["probs"] = probs_out;
    out["rle"] = py::none();
    out["area"] = py::none();
    out["bbox"] = py::none();
    out["score"] = py::none();
    out["stability"] = py::none();
    const auto k = static_cast<py::ssize_t>(shape.k);
    if (rle) {
        py::list strings(res.rle.size());
        for (std::size_t i = 0; i < res.rle.size(); ++i) strings[i] = py::str(res.rle[i]);
        out["rle"] = strings;
    }
    if (area) {
        py::array_t<std::int64_t> a(k);
        auto* p = a.mutable_data();
        for (py::ssize_t i = 0; i < k; ++i) p[i] = static_cast<std::int64_t>(res.area[i]);
        out["area"] = a;
    }
    if (bbox) {
        py::array_t<double> a(std::vector<py::ssize_t>{k, 4});
        auto* p = a.mutable_data();
        for (py::ssize_t i = 0; i < k; ++i)
            for (int j = 0; j < 4; ++j) p[i * 4 + j] = res.bbox[i][j];
        out["bbox"] = a;
    }
    if (score) {
        py::array_t<double> a(k);
        auto* p = a.mutable_data();
        for (py::ssize_t i = 0; i < k; ++i) p[i] = res.score[i];
        out["score"] = a;
    }
    if (stability) {
        py::array_t<double> a(k);
        auto* p = a.mutable_data();
        for (py::ssize_t i = 0; i < k; ++i) p[i] = res.stability[i];
        out["stability"] = a;
    }
    return out;
}

py::array upsample(const py::object& logits_obj, long long height, long long width,
                   long long threads) {
    const auto logits = as_logits(logits_obj);
    const pp::Shape shape = shape_of(logits, height, width);
    const unsigned n_threads = checked_threads(threads);
    const std::uint64_t total = pp::output_elements(shape);
    py::array_t<float> out(dims3(shape));
    float* dst = out.mutable_data();
    const float* data = logits.data();
    const std::size_t size = static_cast<std::size_t>(logits.size());
    {
        py::gil_scoped_release release;
        pp::upsample(data, size, shape, dst, static_cast<std::size_t>(total), n_threads);
    }
    return std::move(out);
}

}  // namespace

void register_postprocess(py::module_& m) {
    m.attr("POSTPROCESS_MAX_SIDE") = py::int_(pp::kMaxSide);
    m.attr("POSTPROCESS_MAX_THREADS") = py::int_(pp::kMaxThreads);
    m.def("postprocess", &postprocess, py::arg("logits"), py::arg("height"), py::arg("width"),
          py::arg("threshold"), py::arg("masks"), py::arg("probs"), py::arg("rle"),
          py::arg("area"), py::arg("bbox"), py::arg("score"), py::arg("threads"),
          py::arg("stability") = false, py::arg("stability_offset") = 1.0,
          py::arg("guide") = py::none(), py::arg("radius") = 4, py::arg("eps") = 1e-3,
          py::arg("colour") = false, py::arg("subsample") = 1,
          "Upsample float32 (K, h, w) logits to (height, width) and derive masks, probabilities "
          "(None, 'float32' or 'uint8'), COCO RLE strings, area, bbox, score and SAM stability "
          "score (offset stability_offset in logit units, finite and >= 0) in one pass. "
          "threads=0: hardware concurrency. With a guide image (uint8 (height, width) or "
          "(height, width, 1|3)), the fast guided filter of the probabilities (box radius, eps, "
          "grey or colour guide, on the model's grid divided by subsample) replaces the bilinear "
          "upsampling. Returns a dict with keys masks, "
          "probs, rle, area, bbox, score, stability (None where not requested). See "
          "fastclipseg.ops.postprocess.");
    m.attr("EDGES_MAX_RADIUS") = py::int_(fastclipseg::edges::kMaxRadius);
    m.attr("EDGES_MAX_SUBSAMPLE") = py::int_(fastclipseg::edges::kMaxSubsample);
    m.def("edges_probability_cuts",
          [](double threshold, double offset) {
              const std::array<float, 3> c = fastclipseg::edges::probability_cuts(threshold, offset);
              return py::make_tuple(c[0], c[1], c[2]);
          },
          py::arg("threshold"), py::arg("offset"),
          "The float32 cuts (mask, low, high) of the filtered probability: q > mask exactly when "
          "q > t; low/high: sigmoid(log(t / (1 - t)) -/+ offset).");
    m.def("postprocess_upsample", &upsample, py::arg("logits"), py::arg("height"),
          py::arg("width"), py::arg("threads"),
          "Bilinear (align_corners=False) upsampling of float32 (K, h, w) logits to "
          "(K, height, width) float32, as torch.nn.functional.interpolate.");
    m.def("postprocess_threshold_logit", &pp::threshold_logit, py::arg("threshold"),
          "The float32 logit f such that logit > f exactly when logit > log(t / (1 - t)).");
    m.def("postprocess_stability_thresholds",
          [](double threshold, double offset) {
              const std::array<float, 2> t = pp::stability_thresholds(threshold, offset);
              return py::make_tuple(t[0], t[1]);
          },
          py::arg("threshold"), py::arg("offset"),
          "The float32 logit thresholds (L - d, L + d) of the stability score, L = log(t / (1 - t)).");
    m.def("postprocess_default_threads", &pp::default_threads,
          "Threads used when threads=0: the hardware concurrency, at least 1.");
}

}  // namespace fastclipseg::bindings

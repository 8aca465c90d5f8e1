// pybind11 bindings for the preprocessing kernels (fastclipseg::preprocess).
//
// Images are read in place through their numpy strides (crops, strided and
// reversed views): no copies. The output is allocated here or is a
// caller-given numpy array, validated strictly. The GIL is released around
// the kernels. std::invalid_argument from the kernels becomes ValueError
// (pybind11's built-in translation); wrong types raise TypeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "fastclipseg/preprocess.hpp"

namespace py = pybind11;

namespace fastclipseg::bindings {
namespace {

namespace pre = fastclipseg::preprocess;

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        if (d) s += ", ";
        s += std::to_string(a.shape(d));
    }
    return s + (a.ndim() == 1 ? ",)" : ")");
}

pre::OutputType parse_dtype(const std::string& name) {
    if (name == "float32") return pre::OutputType::kFloat32;
    if (name == "float16") return pre::OutputType::kFloat16;
    if (name == "bfloat16") return pre::OutputType::kBFloat16;
    throw py::value_error("dtype must be 'float32', 'float16' or 'bfloat16', got '" + name + "'");
}

// A uint8 array viewed as a kernel Image (no copy). `what` names it in errors.
pre::Image as_image(const py::handle& obj, const std::string& what) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(what + " must be a numpy.ndarray, got " + type_name(obj));
    }
    const auto a = py::reinterpret_borrow<py::array>(obj);
    const py::dtype dt = a.dtype();
    if (dt.kind() != 'u' || dt.itemsize() != 1) {
        throw py::type_error(what + " has dtype " + std::string(py::str(dt)) +
                             "; expected uint8 (convert with np.clip(x, 0, 255).astype(np.uint8))");
    }
    pre::Image im;
    if (a.ndim() == 2) {
        im.channels = 1;
        im.channel_stride = 0;
    } else if (a.ndim() == 3 && (a.shape(2) == 1 || a.shape(2) == 3 || a.shape(2) == 4)) {
        im.channels = static_cast<std::size_t>(a.shape(2));
        im.channel_stride = a.strides(2);
    } else {
        throw py::value_error(what + " has shape " + shape_str(a) +
                              "; expected (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA");
    }
    im.data = static_cast<const std::uint8_t*>(a.data());
    im.height = static_cast<std::size_t>(a.shape(0));
    im.width = static_cast<std::size_t>(a.shape(1));
    im.row_stride = a.strides(0);
    im.col_stride = a.strides(1);
    return im;
}

std::size_t checked_size(long long size) {
    if (size < 1 || static_cast<unsigned long long>(size) > pre::kMaxSize) {
        throw py::value_error("size must be in [1, " + std::to_string(pre::kMaxSize) + "], got " +
                              std::to_string(size));
    }
    return static_cast<std::size_t>(size);
}

std::size_t checked_threads(const py::object& threads) {
    if (threads.is_none()) return pre::hardware_threads();
    if (!py::isinstance<py::int_>(threads)) {
        throw py::type_error("threads must be an int or None, got " + type_name(threads));
    }
    const long long t = threads.cast<long long>();
    if (t < 1) throw py::value_error("threads must be >= 1 (or None for all cores), got " + std::to_string(t));
    return static_cast<std::size_t>(t);
}

std::array<double, 3> three_floats(const py::handle& obj, const char* name) {
    if (py::isinstance<py::str>(obj) || !py::isinstance<py::sequence>(obj)) {
        throw py::type_error(std::string(name) + " must be a sequence of 3 floats, got " + type_name(obj));
    }
    const auto seq = py::reinterpret_borrow<py::sequence>(obj);
    if (seq.size() != 3) {
        throw py::value_error(std::string(name) + " must have 3 values (one per RGB channel), got " +
                              std::to_string(seq.size()));
    }
    std::array<double, 3> v{};
    for (std::size_t i = 0; i < 3; ++i) v[i] = seq[i].cast<double>();
    return v;
}

// numpy dtype that carries `dtype` (bfloat16 travels as uint16 bit patterns).
py::dtype numpy_dtype(pre::OutputType dtype) {
    switch (dtype) {
        case pre::OutputType::kFloat32: return py::dtype::of<float>();
        case pre::OutputType::kFloat16: return py::dtype("float16");
        case pre::OutputType::kBFloat16: return py::dtype::of<std::uint16_t>();
    }
    return py::dtype::of<float>();
}

void check_out(const py::array& out, pre::OutputType dtype, const std::vector<py::ssize_t>& shape) {
    const py::dtype want = numpy_dtype(dtype);
    const py::dtype dt = out.dtype();
    if (!dt.attr("__eq__")(want).cast<bool>()) {
        throw py::value_error("out has dtype " + std::string(py::str(dt)) + "; dtype='" +
                              pre::dtype_name(dtype) + "' needs " + std::string(py::str(want)) +
                              (dtype == pre::OutputType::kBFloat16 ? " (bfloat16 bit patterns)" : ""));
    }
    bool same = out.ndim() == static_cast<py::ssize_t>(shape.size());
    for (std::size_t d = 0; same && d < shape.size(); ++d) same = out.shape(static_cast<py::ssize_t>(d)) == shape[d];
    if (!same) {
        std::string want_shape = "(";
        for (std::size_t d = 0; d < shape.size(); ++d) want_shape += (d ? ", " : "") + std::to_string(shape[d]);
        throw py::value_error("out has shape " + shape_str(out) + "; expected " + want_shape + ")");
    }
    if (!(out.flags() & py::array::c_style)) throw py::value_error("out must be C-contiguous");
    if (!(out.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) throw py::value_error("out is not aligned");
    if (!out.writeable()) throw py::value_error("out is read-only");
}

py::object preprocess(const py::object& images, long long size_in, const py::object& mean,
                      const py::object& std_, double rescale_factor, const py::object& out_obj,
                      const std::string& dtype_name, bool bgr, const py::object& threads, bool simd,
                      long long pass_order) {
    if (py::isinstance<py::array>(images) || !(py::isinstance<py::list>(images) || py::isinstance<py::tuple>(images))) {
        throw py::type_error("images must be a list or tuple of arrays, got " + type_name(images));
    }
    pre::Options opt;
    opt.size = checked_size(size_in);
    opt.dtype = parse_dtype(dtype_name);
    opt.mean = three_floats(mean, "mean");
    opt.std = three_floats(std_, "std");
    opt.rescale_factor = rescale_factor;
    opt.bgr = bgr;
    opt.threads = checked_threads(threads);
    opt.simd = simd;
    opt.pass_order = pre::pass_order_from_int(pass_order);

    const auto seq = py::reinterpret_borrow<py::sequence>(images);
    const std::size_t n = seq.size();
    std::vector<py::object> keep;  // keeps every image alive while the GIL is released
    std::vector<pre::Image> views;
    keep.reserve(n);
    views.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        keep.push_back(seq[i]);
        views.push_back(as_image(keep.back(), "image #" + std::to_string(i)));
        pre::validate_image(views.back(), i);
    }
    pre::value_table(opt);  // bad mean/std raise before anything is allocated
    const std::size_t elements = pre::output_elements(n, opt.size);
    (void)elements;
    const auto s = static_cast<py::ssize_t>(opt.size);
    const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(n), 3, s, s};

    py::array out;
    if (out_obj.is_none()) {
        out = py::array(numpy_dtype(opt.dtype), shape);
    } else {
        if (!py::isinstance<py::array>(out_obj)) {
            throw py::type_error("out must be a numpy.ndarray, got " + type_name(out_obj));
        }
        out = py::reinterpret_borrow<py::array>(out_obj);
        check_out(out, opt.dtype, shape);
    }
    void* dst = out.mutable_data();
    const std::size_t bytes = static_cast<std::size_t>(out.nbytes());
    {
        py::gil_scoped_release release;
        pre::preprocess(views.data(), n, opt, dst, bytes);
    }
    return std::move(out);
}

py::array resize(const py::object& image, long long size_in, bool bgr, const py::object& threads, bool simd,
                 long long pass_order_code) {
    const std::size_t size = checked_size(size_in);
    const pre::PassOrder pass_order = pre::pass_order_from_int(pass_order_code);
    const std::size_t nthreads = checked_threads(threads);
    const pre::Image view = as_image(image, "image");
    pre::validate_image(view, 0);
    const auto s = static_cast<py::ssize_t>(size);
    py::array_t<std::uint8_t> out({s, s, py::ssize_t{3}});
    std::uint8_t* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        pre::resize(view, size, bgr, dst, static_cast<std::size_t>(out.nbytes()), nthreads, simd, pass_order);
    }
    return std::move(out);
}

}  // namespace

void register_preprocess(py::module_& m) {
    m.attr("PREPROCESS_MAX_SIDE") = py::int_(pre::kMaxSide);
    m.attr("PREPROCESS_MAX_SIZE") = py::int_(pre::kMaxSize);
    m.def("preprocess", &preprocess, py::arg("images"), py::arg("size"), py::arg("mean"), py::arg("std"),
          py::arg("rescale_factor"), py::arg("out") = py::none(), py::arg("dtype") = "float32",
          py::arg("bgr") = false, py::arg("threads") = py::none(), py::arg("simd") = true,
          py::arg("pass_order") = 0,
          "uint8 images (list of (H, W), (H, W, 1|3|4) arrays, any strides) -> (N, 3, S, S) network input: "
          "Pillow-exact bilinear resize, then (x * rescale_factor - mean) / std as the transformers "
          "processor. dtype 'float32', 'float16' or 'bfloat16' (uint16 bit patterns). Writes into `out` "
          "(validated strictly) when given and returns it. simd=False forces the scalar kernels; "
          "pass_order picks whose order of the two passes to follow: 0 Pillow >= 13, 1 Pillow 12, 2 Pillow <= 11 "
          "(always horizontal first).");
    m.def("preprocess_resize", &resize, py::arg("image"), py::arg("size"), py::arg("bgr") = false,
          py::arg("threads") = py::none(), py::arg("simd") = true, py::arg("pass_order") = 0,
          "One uint8 image -> (size, size, 3) uint8 RGB, equal to PIL.Image.resize((size, size), BILINEAR).");
    m.def("preprocess_simd_available", &pre::simd_available,
          "Whether this CPU runs the vectorised (AVX2) preprocessing kernels.");
    m.def("preprocess_hardware_threads", &pre::hardware_threads,
          "The default thread count: std::thread::hardware_concurrency(), at least 1.");
}

}  // namespace fastclipseg::bindings

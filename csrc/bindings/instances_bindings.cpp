// pybind11 bindings for the instance kernels (fastclipseg::instances).
//
// A mask must be a 2-D bool or uint8 ndarray (any other dtype is a TypeError,
// never a silent cast); labels a 2-D int32 ndarray. Non-contiguous arrays are
// copied to C order here, so the kernels see one layout; the GIL is released
// around the kernels. std::invalid_argument becomes ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fastclipseg/instances.hpp"

namespace py = pybind11;

namespace fastclipseg::bindings {
namespace {

namespace in = fastclipseg::instances;

py::array c_order(const py::array& arr, const py::dtype& dtype) {
    return py::module_::import("numpy").attr("require")(arr, dtype, py::make_tuple("C", "A"));
}

py::array as_2d(const py::object& obj, const char* name, const char* expected) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(name) + " must be a 2-D numpy.ndarray of " + expected + ", got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    }
    const auto arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.ndim() != 2) {
        throw py::value_error(std::string(name) + " must be 2-D (height, width), got shape " +
                              std::string(py::str(obj.attr("shape"))));
    }
    return arr;
}

py::tuple label(const py::object& mask_obj, int connectivity) {
    auto arr = as_2d(mask_obj, "mask", "bool or uint8");
    const char kind = arr.dtype().kind();
    if (!((kind == 'b' || kind == 'u') && arr.dtype().itemsize() == 1)) {
        throw py::type_error("mask dtype must be bool or uint8, got " + std::string(py::str(arr.dtype())));
    }
    const auto mask = py::array_t<std::uint8_t, py::array::c_style>::ensure(
        c_order(arr, py::dtype::of<std::uint8_t>()).attr("view")(py::dtype::of<std::uint8_t>()));
    const auto h = static_cast<std::size_t>(mask.shape(0)), w = static_cast<std::size_t>(mask.shape(1));
    py::array_t<std::int32_t> labels({mask.shape(0), mask.shape(1)});
    std::int32_t count = 0;
    {
        py::gil_scoped_release release;
        count = in::label(mask.data(), h, w, connectivity, labels.mutable_data(), h * w);
    }
    return py::make_tuple(labels, count);
}

// A labelling as a C-order int32 (h, w) array; other dtypes are refused, not cast.
py::array_t<std::int32_t, py::array::c_style> as_labels(const py::object& labels_obj) {
    auto arr = as_2d(labels_obj, "labels", "int32");
    if (!arr.dtype().attr("__eq__")(py::dtype::of<std::int32_t>()).cast<bool>()) {
        throw py::type_error("labels dtype must be int32, got " + std::string(py::str(arr.dtype())));
    }
    return py::array_t<std::int32_t, py::array::c_style>::ensure(c_order(arr, py::dtype::of<std::int32_t>()));
}

// kernel(labels, h, w) on a labelling, with the GIL released.
template <class Kernel>
auto on_labels(const py::object& labels_obj, Kernel&& kernel) {
    const auto labels = as_labels(labels_obj);
    const auto h = static_cast<std::size_t>(labels.shape(0)), w = static_cast<std::size_t>(labels.shape(1));
    py::gil_scoped_release release;
    return kernel(labels.data(), h, w);
}

py::tuple measure(const py::object& labels_obj, std::int32_t count) {
    const std::vector<in::Component> components = on_labels(labels_obj, [count](const std::int32_t* labels,
                                                                                 std::size_t h, std::size_t w) {
        return in::measure(labels, h, w, count);
    });
    const auto n = static_cast<py::ssize_t>(components.size());
    py::array_t<std::uint64_t> area(n);
    py::array_t<std::uint32_t> bbox({n, py::ssize_t{4}});
    auto a = area.mutable_unchecked<1>();
    auto b = bbox.mutable_unchecked<2>();
    for (py::ssize_t i = 0; i < n; ++i) {
        const auto& c = components[static_cast<std::size_t>(i)];
        a(i) = c.area;
        b(i, 0) = c.x;
        b(i, 1) = c.y;
        b(i, 2) = c.width;
        b(i, 3) = c.height;
    }
    return py::make_tuple(area, bbox);
}

py::list encode(const py::object& labels_obj, std::int32_t count) {
    const std::vector<std::string> encoded = on_labels(labels_obj, [count](const std::int32_t* labels,
                                                                           std::size_t h, std::size_t w) {
        return in::encode(labels, h, w, count);
    });
    py::list out(encoded.size());
    for (std::size_t i = 0; i < encoded.size(); ++i) out[i] = py::str(encoded[i]);
    return out;
}

}  // namespace

void register_instances(py::module_& m) {
    m.def("instances_label", &label, py::arg("mask"), py::arg("connectivity"),
          "(labels int32 (h, w), count): connected components, numbered in raster order of their first pixel.");
    m.def("instances_measure", &measure, py::arg("labels"), py::arg("count"),
          "(area uint64 (N,), bbox uint32 (N, 4) COCO [x, y, w, h]) of components 1..count.");
    m.def("instances_encode", &encode, py::arg("labels"), py::arg("count"),
          "COCO compressed RLE counts (str) of components 1..count, in one column-major pass.");
}

}  // namespace fastclipseg::bindings

// pybind11 bindings for the COCO RLE kernels (fastclipseg::rle).
//
// Masks are read in place through their numpy strides (C order, Fortran
// order, slices, negative strides): no copies. The GIL is released around
// every kernel call. std::invalid_argument from the kernels becomes
// ValueError (pybind11's built-in translation).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <array>
#include <new>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fastclipseg/rle.hpp"

namespace py = pybind11;

namespace fastclipseg::bindings {
namespace {

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

// Accepts exactly bool and uint8 arrays: anything wider would need a
// converting copy, and silently casting floats/ints to masks hides bugs.
void check_mask_dtype(const py::array& mask) {
    const py::dtype dt = mask.dtype();
    const char kind = dt.kind();
    if (dt.itemsize() != 1 || (kind != 'b' && kind != 'u')) {
        throw py::type_error("mask dtype must be bool or uint8, got " +
                             std::string(py::str(dt)));
    }
}

// View of a Python str (ASCII expected) or bytes object. The view borrows the
// object's buffer, which stays valid while the caller holds a reference, so it
// may be used with the GIL released.
std::string_view counts_view(const py::handle& counts) {
    if (PyBytes_Check(counts.ptr())) {
        char* buf = nullptr;
        Py_ssize_t n = 0;
        if (PyBytes_AsStringAndSize(counts.ptr(), &buf, &n) != 0) throw py::error_already_set();
        return {buf, static_cast<std::size_t>(n)};
    }
    if (PyUnicode_Check(counts.ptr())) {
        Py_ssize_t n = 0;
        // Non-ASCII characters become bytes >= 128, which the parser rejects.
        const char* buf = PyUnicode_AsUTF8AndSize(counts.ptr(), &n);
        if (buf == nullptr) throw py::error_already_set();
        return {buf, static_cast<std::size_t>(n)};
    }
    throw py::type_error("RLE counts must be str or bytes, got " + type_name(counts));
}

std::size_t checked_dim(long long v, const char* name) {
    if (v < 0) throw py::value_error(std::string("RLE ") + name + " must be >= 0, got " + std::to_string(v));
    return static_cast<std::size_t>(v);
}

py::object encode(const py::array& mask) {
    check_mask_dtype(mask);
    const auto* data = static_cast<const std::uint8_t*>(mask.data());
    const py::ssize_t* shape = mask.shape();
    const py::ssize_t* strides = mask.strides();
    if (mask.ndim() == 2) {
        std::string s;
        {
            py::gil_scoped_release release;
            s = rle::encode(data, static_cast<std::size_t>(shape[0]),
                            static_cast<std::size_t>(shape[1]), strides[0], strides[1]);
        }
        return py::str(s);
    }
    if (mask.ndim() == 3) {
        std::vector<std::string> out;
        {
            py::gil_scoped_release release;
            out = rle::encode_batch(data, static_cast<std::size_t>(shape[0]),
                                    static_cast<std::size_t>(shape[1]),
                                    static_cast<std::size_t>(shape[2]), strides[0], strides[1],
                                    strides[2]);
        }
        py::list result(out.size());
        for (std::size_t i = 0; i < out.size(); ++i) result[i] = py::str(out[i]);
        return std::move(result);
    }
    throw py::value_error("mask must be 2-D (H, W) or 3-D (K, H, W), got " +
                          std::to_string(mask.ndim()) + "-D array");
}

py::array decode(const py::object& counts, long long h_in, long long w_in) {
    const std::size_t h = checked_dim(h_in, "height"), w = checked_dim(w_in, "width");
    const std::string_view s = counts_view(counts);
    const std::uint64_t total = rle::checked_area(h, w);
    // Fortran order: COCO runs go down columns, so each run is one memset.
    py::array_t<std::uint8_t, py::array::f_style> out(
        {static_cast<py::ssize_t>(h), static_cast<py::ssize_t>(w)});
    std::uint8_t* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        rle::decode(s, h, w, dst, static_cast<std::size_t>(total));
    }
    return std::move(out);
}

py::array decode_batch(const py::sequence& counts_list, long long h_in, long long w_in) {
    const std::size_t h = checked_dim(h_in, "height"), w = checked_dim(w_in, "width");
    const std::uint64_t total = rle::checked_area(h, w);
    const std::size_t k = counts_list.size();
    std::vector<py::object> keep;  // keeps every counts object alive while the GIL is released
    std::vector<std::string_view> views;
    keep.reserve(k);
    views.reserve(k);
    for (std::size_t i = 0; i < k; ++i) {
        keep.push_back(counts_list[i]);
        views.push_back(counts_view(keep.back()));
    }
    // Allocated as C-order (K, W, H) and returned transposed to (K, H, W), so
    // every out[i] is a Fortran-ordered H x W mask and runs stay contiguous.
    py::array_t<std::uint8_t> out(
        {static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(w), static_cast<py::ssize_t>(h)});
    std::uint8_t* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        for (std::size_t i = 0; i < k; ++i) {
            try {
                rle::decode(views[i], h, w, dst + i * total, static_cast<std::size_t>(total));
            } catch (const std::invalid_argument& e) {
                // Say which mask of the batch was bad.
                throw std::invalid_argument("RLE #" + std::to_string(i) + ": " + e.what());
            }
        }
    }
    return out.attr("transpose")(0, 2, 1);
}

std::uint64_t area(const py::object& counts, long long h_in, long long w_in) {
    const std::size_t h = checked_dim(h_in, "height"), w = checked_dim(w_in, "width");
    const std::string_view s = counts_view(counts);
    py::gil_scoped_release release;
    return rle::area(s, h, w);
}

py::tuple bbox(const py::object& counts, long long h_in, long long w_in) {
    const std::size_t h = checked_dim(h_in, "height"), w = checked_dim(w_in, "width");
    const std::string_view s = counts_view(counts);
    std::array<double, 4> b{};
    {
        py::gil_scoped_release release;
        b = rle::bbox(s, h, w);
    }
    return py::make_tuple(b[0], b[1], b[2], b[3]);
}

py::list string_to_counts(const py::object& counts) {
    const std::string_view s = counts_view(counts);
    std::vector<std::uint64_t> v;
    {
        py::gil_scoped_release release;
        v = rle::string_to_counts(s);
    }
    py::list out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = py::int_(v[i]);
    return out;
}

py::str counts_to_string(const py::iterable& counts) {
    std::vector<std::uint64_t> v;
    for (const py::handle item : counts) {
        // operator.index semantics: ints and numpy integers, not floats.
        PyObject* idx = PyNumber_Index(item.ptr());
        if (idx == nullptr) {
            PyErr_Clear();
            throw py::type_error("RLE count #" + std::to_string(v.size()) +
                                 " must be an integer, got " + type_name(item));
        }
        const py::object num = py::reinterpret_steal<py::object>(idx);
        if (PyObject_RichCompareBool(num.ptr(), py::int_(0).ptr(), Py_LT) == 1) {
            throw py::value_error("RLE count #" + std::to_string(v.size()) +
                                  " is negative (" + std::string(py::str(num)) + ")");
        }
        const unsigned long long c = PyLong_AsUnsignedLongLong(num.ptr());
        if (PyErr_Occurred()) {
            PyErr_Clear();
            throw py::value_error("RLE count #" + std::to_string(v.size()) + " is too large");
        }
        v.push_back(c);
    }
    std::string s;
    {
        py::gil_scoped_release release;
        s = rle::counts_to_string(v);
    }
    return py::str(s);
}

// Packed masks (layout in fastclipseg/rle.hpp): uint8 (K, H, ceil(W/8)) or
// (H, ceil(W/8)), made C-contiguous here (a copy only if it is not already).
// Returns (counts: list[str], area: int64 (K,), bbox: float64 (K, 4)); a 2-D
// input is one mask (K = 1).
py::tuple encode_packed(const py::array& bits_in, long long width, long long threads) {
    const py::dtype dt = bits_in.dtype();
    if (dt.kind() != 'u' || dt.itemsize() != 1) {
        throw py::type_error("packed bits dtype must be uint8 (np.packbits output), got " +
                             std::string(py::str(dt)));
    }
    if (bits_in.ndim() != 2 && bits_in.ndim() != 3) {
        throw py::value_error("packed bits must be 2-D (H, ceil(W/8)) or 3-D (K, H, ceil(W/8)), got " +
                              std::to_string(bits_in.ndim()) + "-D array");
    }
    if (width < 0) throw py::value_error("width must be >= 0, got " + std::to_string(width));
    if (threads < 0) throw py::value_error("threads must be >= 0, got " + std::to_string(threads));
    const bool batch = bits_in.ndim() == 3;
    const std::size_t k = batch ? static_cast<std::size_t>(bits_in.shape(0)) : 1;
    const std::size_t h = static_cast<std::size_t>(bits_in.shape(batch ? 1 : 0));
    const std::size_t row_bytes = static_cast<std::size_t>(bits_in.shape(batch ? 2 : 1));
    const std::size_t w = static_cast<std::size_t>(width);
    const std::size_t want = w / 8 + (w % 8 != 0);
    if (row_bytes != want) {
        throw py::value_error("packed bits last dimension is " + std::to_string(row_bytes) +
                              " but width " + std::to_string(w) + " needs ceil(width/8) = " +
                              std::to_string(want));
    }
    rle::checked_area(h, w);  // before any copy below
    // A copy only when the input is not C-contiguous already.
    const auto bits = py::array_t<std::uint8_t, py::array::c_style>::ensure(bits_in);
    if (!bits) {
        if (PyErr_Occurred()) throw py::error_already_set();
        throw std::bad_alloc();  // ensure() clears the error it hit (a failed copy)
    }
    const auto* data = bits.data();
    const std::size_t size = static_cast<std::size_t>(bits.size());
    const unsigned n_threads =
        static_cast<unsigned>(std::min<long long>(threads, rle::kMaxPackedThreads));
    std::vector<rle::PackedRle> out;
    {
        py::gil_scoped_release release;
        out = rle::encode_packed_batch(data, size, k, h, w, row_bytes, n_threads);
    }
    py::list counts(k);
    py::array_t<std::int64_t> area(static_cast<py::ssize_t>(k));
    py::array_t<double> bbox({static_cast<py::ssize_t>(k), py::ssize_t{4}});
    auto a = area.mutable_unchecked<1>();
    auto b = bbox.mutable_unchecked<2>();
    for (std::size_t i = 0; i < k; ++i) {
        counts[i] = py::str(out[i].counts);
        a(static_cast<py::ssize_t>(i)) = static_cast<std::int64_t>(out[i].area);
        for (py::ssize_t j = 0; j < 4; ++j) b(static_cast<py::ssize_t>(i), j) = out[i].bbox[j];
    }
    return py::make_tuple(counts, area, bbox);
}

}  // namespace

void register_rle(py::module_& m) {
    m.attr("RLE_MAX_COUNT") = py::int_(rle::kMaxCount);
    m.def("rle_encode", &encode, py::arg("mask"),
          "Encode a bool/uint8 mask, (H, W) -> str or (K, H, W) -> list[str], into COCO "
          "compressed RLE counts. Any strides; nonzero is foreground.");
    m.def("rle_decode", &decode, py::arg("counts"), py::arg("h"), py::arg("w"),
          "Decode compressed counts (str or bytes) into a Fortran-ordered (h, w) uint8 array "
          "of 0/1. Raises ValueError on malformed input.");
    m.def("rle_decode_batch", &decode_batch, py::arg("counts_list"), py::arg("h"), py::arg("w"),
          "Decode K compressed counts of one size into a (K, h, w) uint8 array whose slices "
          "are Fortran-ordered.");
    m.def("rle_area", &area, py::arg("counts"), py::arg("h"), py::arg("w"),
          "Foreground pixel count of compressed counts, without decoding.");
    m.def("rle_bbox", &bbox, py::arg("counts"), py::arg("h"), py::arg("w"),
          "Bounding box (x, y, width, height) as floats, like pycocotools.mask.toBbox; "
          "(0, 0, 0, 0) for an empty mask.");
    m.def("rle_string_to_counts", &string_to_counts, py::arg("counts"),
          "Compressed counts string -> list of run lengths (uncompressed RLE).");
    m.def("rle_counts_to_string", &counts_to_string, py::arg("counts"),
          "Run lengths (iterable of non-negative ints) -> compressed counts string.");
    m.attr("RLE_PACKED_MAX_THREADS") = py::int_(rle::kMaxPackedThreads);
    m.def("rle_encode_packed", &encode_packed, py::arg("bits"), py::arg("width"),
          py::arg("threads") = 0,
          "Encode bit-packed masks, uint8 (K, H, ceil(W/8)) or (H, ceil(W/8)) as from "
          "np.packbits(mask, axis=-1, bitorder='little'), into COCO compressed RLE without "
          "unpacking. Padding bits are ignored. Returns (counts: list[str], area: int64 (K,), "
          "bbox: float64 (K, 4)). threads=0: hardware concurrency.");
}

}  // namespace fastclipseg::bindings

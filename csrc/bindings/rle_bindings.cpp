// pybind11 bindings for the COCO RLE kernels (fastclipseg::rle).
//
// Masks are read in place through their numpy strides (C order, Fortran
// order, slices, negative strides): no copies. The GIL is released around
// every kernel call. std::invalid_argument from the kernels becomes
// ValueError (pybind11's built-in translation), or, for errors in counts, a
// ValueError naming the counts and the size.
//
// Nothing here trusts a size: every integer argument is converted by hand
// (bool, float and str are TypeErrors; negative or huge values ValueErrors
// naming them, not pybind11's "incompatible function arguments"), and a
// decode checks h*w against max_pixels and validates every counts string
// BEFORE it allocates the output.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <new>
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

// repr() of a counts object for an error message, shortened past 40 items.
std::string short_repr(const py::handle& obj) {
    const Py_ssize_t n = PyObject_Length(obj.ptr());
    if (n < 0) PyErr_Clear();
    if ((PyUnicode_Check(obj.ptr()) || PyBytes_Check(obj.ptr())) && n > 40) {
        const std::string head = py::repr(obj[py::slice(0, 30, 1)]);
        return head.substr(0, head.size() - 1) + "..." + head.back() + " (" + std::to_string(n) +
               (PyUnicode_Check(obj.ptr()) ? " chars)" : " bytes)");
    }
    return py::repr(obj);
}

// View of a Python str (ASCII only) or bytes object. The view borrows the
// object's buffer, which stays valid while the caller holds a reference, so it
// may be used with the GIL released. Mutable buffers (bytearray, memoryview)
// are refused: another thread could resize them while the GIL is released.
std::string_view counts_view(const py::handle& counts, const std::string& where) {
    if (PyBytes_Check(counts.ptr())) {
        char* buf = nullptr;
        Py_ssize_t n = 0;
        if (PyBytes_AsStringAndSize(counts.ptr(), &buf, &n) != 0) throw py::error_already_set();
        return {buf, static_cast<std::size_t>(n)};
    }
    if (PyUnicode_Check(counts.ptr())) {
        if (!PyUnicode_IS_ASCII(counts.ptr())) {
            // Named here as a character: its UTF-8 bytes would give a byte
            // position, and a lone surrogate has no UTF-8 at all.
            const Py_ssize_t n = PyUnicode_GetLength(counts.ptr());
            for (Py_ssize_t i = 0; i < n; ++i) {
                const Py_UCS4 c = PyUnicode_ReadChar(counts.ptr(), i);
                if (c > 127) {
                    char code[16];
                    std::snprintf(code, sizeof code, "U+%04X", static_cast<unsigned>(c));
                    throw py::value_error(where + " " + short_repr(counts) +
                                          " has a non-ASCII character " + code + " at position " +
                                          std::to_string(i) +
                                          "; compressed counts use only ASCII 48..111 ('0'..'o')");
                }
            }
        }
        Py_ssize_t n = 0;
        const char* buf = PyUnicode_AsUTF8AndSize(counts.ptr(), &n);  // ASCII: no copy
        if (buf == nullptr) throw py::error_already_set();
        return {buf, static_cast<std::size_t>(n)};
    }
    throw py::type_error(where + " must be str or bytes, got " + type_name(counts));
}

// A non-negative integer argument (int or numpy integer, as operator.index;
// bool refused: True is not a size). Values above `limit` fail, or clamp to
// it when `clamp` (a cap of 10**30 just means "no cap").
std::uint64_t int_arg(const py::handle& v, const std::string& name, std::uint64_t limit,
                      bool clamp = false) {
    const bool is_bool = PyBool_Check(v.ptr()) || type_name(v) == "bool";  // numpy.bool too
    PyObject* idx = is_bool ? nullptr : PyNumber_Index(v.ptr());
    if (idx == nullptr) {
        PyErr_Clear();
        throw py::type_error(name + " must be an int, got " + type_name(v) + " (" +
                             std::string(py::repr(v)) + ")");
    }
    const py::object num = py::reinterpret_steal<py::object>(idx);
    if (PyObject_RichCompareBool(num.ptr(), py::int_(0).ptr(), Py_LT) == 1) {
        throw py::value_error(name + " must be >= 0, got " + std::string(py::str(num)));
    }
    if (PyObject_RichCompareBool(num.ptr(), py::int_(limit).ptr(), Py_GT) == 1) {
        if (clamp) return limit;
        throw py::value_error(name + " = " + std::string(py::str(num)) +
                              " is too large (the most is " + std::to_string(limit) + ")");
    }
    return PyLong_AsUnsignedLongLong(num.ptr());  // in [0, limit]: cannot fail
}

std::size_t dim_arg(const py::handle& v, const char* name) {
    return static_cast<std::size_t>(int_arg(v, std::string("RLE ") + name, rle::kMaxCount));
}

std::uint64_t max_pixels_arg(const py::handle& v) {
    return int_arg(v, "max_pixels", ~std::uint64_t{0}, /*clamp=*/true);
}

// A kernel's error about `counts`, as a ValueError naming the counts and the size.
py::value_error counts_error(const std::string& where, const py::handle& counts, std::size_t h,
                             std::size_t w, std::string error) {
    if (error.rfind("RLE: ", 0) == 0) error.erase(0, 5);
    return py::value_error(where + " " + short_repr(counts) + " for size " + std::to_string(h) +
                           "x" + std::to_string(w) + ": " + error);
}

// Runs a kernel on counts with the GIL released; an std::invalid_argument it
// throws is reported, with the GIL, by counts_error.
template <class F>
void on_counts(const std::string& where, const py::handle& counts, std::size_t h, std::size_t w,
               F&& f) {
    std::string error;
    {
        py::gil_scoped_release release;
        try {
            f();
        } catch (const std::invalid_argument& e) {
            error = e.what();
        }
    }
    if (!error.empty()) throw counts_error(where, counts, h, w, std::move(error));
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

py::array decode(const py::object& counts, const py::object& h_in, const py::object& w_in,
                 const py::object& max_in) {
    const std::size_t h = dim_arg(h_in, "height"), w = dim_arg(w_in, "width");
    // Everything is checked before the output exists: the size against the
    // cap, then the counts (one parse, GIL released).
    const std::uint64_t total = rle::checked_pixels(1, h, w, max_pixels_arg(max_in));
    const std::string_view s = counts_view(counts, "RLE counts");
    on_counts("RLE counts", counts, h, w, [&] { rle::validate(s, h, w); });
    // Fortran order: COCO runs go down columns, so each run is one memset.
    py::array_t<std::uint8_t, py::array::f_style> out(
        {static_cast<py::ssize_t>(h), static_cast<py::ssize_t>(w)});
    std::uint8_t* dst = out.mutable_data();
    on_counts("RLE counts", counts, h, w,
              [&] { rle::decode_validated(s, h, w, dst, static_cast<std::size_t>(total)); });
    return std::move(out);
}

py::array decode_batch(const py::sequence& counts_list, const py::object& h_in,
                       const py::object& w_in, const py::object& max_in) {
    const std::size_t h = dim_arg(h_in, "height"), w = dim_arg(w_in, "width");
    const std::size_t k = counts_list.size();
    // K * h * w against the cap: a short list of small strings can name terabytes.
    rle::checked_pixels(k, h, w, max_pixels_arg(max_in));
    const std::uint64_t total = rle::checked_area(h, w);
    std::vector<py::object> keep;  // keeps every counts object alive while the GIL is released
    std::vector<std::string_view> views;
    keep.reserve(k);
    views.reserve(k);
    for (std::size_t i = 0; i < k; ++i) {
        keep.push_back(counts_list[i]);
        views.push_back(counts_view(keep.back(), "RLE #" + std::to_string(i) + " counts"));
    }
    auto each = [&](auto&& kernel) {
        // Which mask of the batch was bad is found without the GIL, named with it.
        std::size_t bad = k;
        std::string error;
        {
            py::gil_scoped_release release;
            for (std::size_t i = 0; i < k && bad == k; ++i) {
                try {
                    kernel(i);
                } catch (const std::invalid_argument& e) {
                    bad = i;
                    error = e.what();
                }
            }
        }
        if (bad != k) {
            throw counts_error("RLE #" + std::to_string(bad) + " counts", keep[bad], h, w, error);
        }
    };
    each([&](std::size_t i) { rle::validate(views[i], h, w); });
    // Allocated as C-order (K, W, H) and returned transposed to (K, H, W), so
    // every out[i] is a Fortran-ordered H x W mask and runs stay contiguous.
    py::array_t<std::uint8_t> out(
        {static_cast<py::ssize_t>(k), static_cast<py::ssize_t>(w), static_cast<py::ssize_t>(h)});
    std::uint8_t* dst = out.mutable_data();
    each([&](std::size_t i) {
        rle::decode_validated(views[i], h, w, dst + i * total, static_cast<std::size_t>(total));
    });
    return out.attr("transpose")(0, 2, 1);
}

std::uint64_t area(const py::object& counts, const py::object& h_in, const py::object& w_in) {
    const std::size_t h = dim_arg(h_in, "height"), w = dim_arg(w_in, "width");
    const std::string_view s = counts_view(counts, "RLE counts");
    std::uint64_t a = 0;
    on_counts("RLE counts", counts, h, w, [&] { a = rle::area(s, h, w); });
    return a;
}

py::tuple bbox(const py::object& counts, const py::object& h_in, const py::object& w_in) {
    const std::size_t h = dim_arg(h_in, "height"), w = dim_arg(w_in, "width");
    const std::string_view s = counts_view(counts, "RLE counts");
    std::array<double, 4> b{};
    on_counts("RLE counts", counts, h, w, [&] { b = rle::bbox(s, h, w); });
    return py::make_tuple(b[0], b[1], b[2], b[3]);
}

py::list string_to_counts(const py::object& counts) {
    const std::string_view s = counts_view(counts, "RLE counts");
    std::vector<std::uint64_t> v;
    std::string error;
    {
        py::gil_scoped_release release;
        try {
            v = rle::string_to_counts(s);
        } catch (const std::invalid_argument& e) {
            error = e.what();
        }
    }
    if (!error.empty()) {
        if (error.rfind("RLE: ", 0) == 0) error.erase(0, 5);
        throw py::value_error("RLE counts " + short_repr(counts) + ": " + error);
    }
    py::list out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = py::int_(v[i]);
    return out;
}

py::str counts_to_string(const py::object& counts) {
    // By hand, not a py::iterable argument: a 0-d array or an int is a
    // TypeError naming it, not pybind11's "incompatible function arguments".
    PyObject* it = PyObject_GetIter(counts.ptr());
    if (it == nullptr) {
        PyErr_Clear();
        throw py::type_error("RLE counts must be a list of run lengths, got " + type_name(counts) +
                             " (" + short_repr(counts) + ")");
    }
    const py::iterator items = py::reinterpret_steal<py::iterator>(it);
    std::vector<std::uint64_t> v;
    for (const py::handle item : items) {
        // operator.index semantics: ints and numpy integers, not floats, and
        // not bool (True is not a run length).
        const std::string name = "RLE count #" + std::to_string(v.size());
        const bool is_bool = PyBool_Check(item.ptr()) || type_name(item) == "bool";
        PyObject* idx = is_bool ? nullptr : PyNumber_Index(item.ptr());
        if (idx == nullptr) {
            PyErr_Clear();
            const bool scalar = PyNumber_Check(item.ptr()) || PyUnicode_Check(item.ptr()) ||
                                PyBytes_Check(item.ptr()) || item.is_none();
            throw py::type_error(name + " must be an integer, got " + type_name(item) +
                                 (scalar ? " (" + short_repr(item) + ")" : std::string()));
        }
        const py::object num = py::reinterpret_steal<py::object>(idx);
        if (PyObject_RichCompareBool(num.ptr(), py::int_(0).ptr(), Py_LT) == 1) {
            throw py::value_error(name + " is negative (" + std::string(py::str(num)) + ")");
        }
        if (PyObject_RichCompareBool(num.ptr(), py::int_(rle::kMaxCount).ptr(), Py_GT) == 1) {
            throw py::value_error(name + " = " + std::string(py::str(num)) +
                                  " is too large: it exceeds the maximum run length " +
                                  std::to_string(rle::kMaxCount));
        }
        v.push_back(PyLong_AsUnsignedLongLong(num.ptr()));  // in [0, kMaxCount]: cannot fail
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
py::tuple encode_packed(const py::array& bits_in, const py::object& width_in,
                        const py::object& threads_in) {
    const py::dtype dt = bits_in.dtype();
    if (dt.kind() != 'u' || dt.itemsize() != 1) {
        throw py::type_error("packed bits dtype must be uint8 (np.packbits output), got " +
                             std::string(py::str(dt)));
    }
    if (bits_in.ndim() != 2 && bits_in.ndim() != 3) {
        throw py::value_error("packed bits must be 2-D (H, ceil(W/8)) or 3-D (K, H, ceil(W/8)), got " +
                              std::to_string(bits_in.ndim()) + "-D array");
    }
    const std::uint64_t width = int_arg(width_in, "width", rle::kMaxCount);
    const std::uint64_t threads = int_arg(threads_in, "threads", rle::kMaxPackedThreads, true);
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
    const unsigned n_threads = static_cast<unsigned>(threads);  // clamped to kMaxPackedThreads
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
          py::arg("max_pixels"),
          "Decode compressed counts (str or bytes) into a Fortran-ordered (h, w) uint8 array "
          "of 0/1. Raises ValueError on malformed input or h*w > max_pixels, checked before "
          "the output is allocated.");
    m.def("rle_decode_batch", &decode_batch, py::arg("counts_list"), py::arg("h"), py::arg("w"),
          py::arg("max_pixels"),
          "Decode K compressed counts of one size into a (K, h, w) uint8 array whose slices "
          "are Fortran-ordered. K*h*w must be <= max_pixels; every counts string is validated "
          "before the output is allocated.");
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

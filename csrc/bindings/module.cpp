// Entry point of the native extension fastclipseg._core.
//
// Each area of the project keeps its bindings in its own translation unit
// with a register_<area>(module) function; add new areas by declaring the
// function here, calling it below, and listing the file in CMakeLists.txt.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace fastclipseg::bindings {
void register_rle(py::module_& m);
void register_preprocess(py::module_& m);
void register_postprocess(py::module_& m);
void register_instances(py::module_& m);
}  // namespace fastclipseg::bindings

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastclipseg native kernels (documented APIs: fastclipseg.rle and fastclipseg.ops).";
    fastclipseg::bindings::register_rle(m);
    fastclipseg::bindings::register_preprocess(m);
    fastclipseg::bindings::register_postprocess(m);
    fastclipseg::bindings::register_instances(m);
}

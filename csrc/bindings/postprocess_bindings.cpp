// pybind11 bindings for the postprocess kernels (fastclipseg::postprocess).
#include <pybind11/pybind11.h>

#include "fastclipseg/postprocess.hpp"

namespace py = pybind11;

namespace fastclipseg::bindings {

void register_postprocess(py::module_& m) { (void)m; }

}  // namespace fastclipseg::bindings

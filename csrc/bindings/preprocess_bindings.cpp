// pybind11 bindings for the preprocess kernels (fastclipseg::preprocess).
#include <pybind11/pybind11.h>

#include "fastclipseg/preprocess.hpp"

namespace py = pybind11;

namespace fastclipseg::bindings {

void register_preprocess(py::module_& m) { (void)m; }

}  // namespace fastclipseg::bindings

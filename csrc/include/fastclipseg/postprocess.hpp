// postprocess kernels (plain C++17, no Python). See csrc/kernels/postprocess.cpp.
#pragma once

namespace fastclipseg::postprocess {}  // namespace fastclipseg::postprocess

// preprocess kernels (plain C++17, no Python). See csrc/kernels/preprocess.cpp.
#pragma once

namespace fastclipseg::preprocess {}  // namespace fastclipseg::preprocess

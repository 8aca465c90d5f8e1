// fastclipseg::Error: what the C++ interface throws, with a message naming what was wrong.
//
// It is exported (FASTCLIPSEG_API) so that its type_info is shared across library boundaries and
// `catch (const fastclipseg::Error&)` works in applications.
#pragma once

#include <stdexcept>

#include "fastclipseg/api.hpp"

namespace fastclipseg {

class FASTCLIPSEG_API Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace fastclipseg

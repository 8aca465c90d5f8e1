#include "fastclipseg/postprocess.hpp"

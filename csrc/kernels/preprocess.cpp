#include "fastclipseg/preprocess.hpp"

#!/usr/bin/env bash
# Builds the plain-C++ kernels and tests/native/test_kernels.cpp with
# AddressSanitizer + UndefinedBehaviorSanitizer (no Python, no pybind11) into
# build/asan, then runs the test executable. Any sanitizer report aborts the
# run (-fno-sanitize-recover=all), so a nonzero exit means a failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${root}/build/asan"
mkdir -p "${build}"
jobs="$(nproc 2>/dev/null || echo 2)"

san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

cmake -S "${root}" -B "${build}" \
    -DCMAKE_BUILD_TYPE=Debug \
    -DFASTCLIPSEG_BUILD_PYTHON=OFF \
    -DFASTCLIPSEG_BUILD_TESTS=ON \
    -DCMAKE_CXX_FLAGS="${san} -O1 -g -Wall -Wextra" \
    -DCMAKE_EXE_LINKER_FLAGS="${san}" \
    > "${build}/configure.log" 2>&1 || { cat "${build}/configure.log"; exit 1; }
cmake --build "${build}" --parallel "${jobs}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
for test in test_kernels test_preprocess test_postprocess; do
    "${build}/${test}"
done

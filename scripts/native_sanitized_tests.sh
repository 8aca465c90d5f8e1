#!/usr/bin/env bash
# Builds the plain-C++ kernels, their tests (tests/native) and the CLIP tokenizer
# with AddressSanitizer + UndefinedBehaviorSanitizer (no Python, no pybind11,
# no libtorch) into build/asan, runs the tests through CTest, then the
# tokenizer on hostile inputs (tests/native/tokenizer_inputs.jsonl) with the
# real CLIP vocabulary when ../shared/data is there. Any sanitizer report
# aborts the run (-fno-sanitize-recover=all), so a nonzero exit means a failure.
# The libtorch runtime is not built here: libtorch itself is not instrumented.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${root}/build/asan"
mkdir -p "${build}"
jobs="$(nproc 2>/dev/null || echo 2)"

san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

cmake -S "${root}" -B "${build}" \
    -DCMAKE_BUILD_TYPE=Debug \
    -DFASTCLIPSEG_PYTHON=OFF \
    -DFASTCLIPSEG_TESTS=ON \
    -DCMAKE_CXX_FLAGS="${san} -O1 -g -Wall -Wextra" \
    -DCMAKE_EXE_LINKER_FLAGS="${san}" \
    > "${build}/configure.log" 2>&1 || { cat "${build}/configure.log"; exit 1; }
cmake --build "${build}" --parallel "${jobs}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
ctest --test-dir "${build}" --output-on-failure

vocabulary="${root}/../shared/data/clipseg-shapes/tokenizer.json"
if [[ ! -x "${build}/fastclipseg_tokenize" ]]; then
    echo "the tokenizer was not built (ICU or nlohmann_json missing?): see ${build}/configure.log" >&2
    exit 1
fi
if [[ -f "${vocabulary}" ]]; then
    "${build}/fastclipseg_tokenize" "${vocabulary}" < "${root}/tests/native/tokenizer_inputs.jsonl" > "${build}/tokens.jsonl"
    echo "tokenizer: $(wc -l < "${build}/tokens.jsonl") lines tokenized under the sanitizers"
else
    echo "tokenizer: ${vocabulary} is absent; the tokenizer ran only on its missing-file test"
fi

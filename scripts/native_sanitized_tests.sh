#!/usr/bin/env bash
# Builds the plain-C++ kernels, their tests (tests/native) and the CLIP tokenizer
# with AddressSanitizer + UndefinedBehaviorSanitizer (no Python, no pybind11,
# no libtorch) into build/asan, runs the tests through CTest, then the
# tokenizer on hostile inputs (tests/native/tokenizer_inputs.jsonl) with the
# real CLIP vocabulary when ../shared/data is there. Any sanitizer report
# aborts the run (-fno-sanitize-recover=all), so a nonzero exit means a failure.
# Then, where torch and the installed package are present, the libtorch runtime (libtorch itself
# is not instrumented) with tests/cpp/test_runtime and segment_image on a tiny export.
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

# The libtorch runtime (csrc/runtime) under the same sanitizers, where torch and the installed
# package are there (CI installs them first): our code instrumented, libtorch as shipped.
# tests/cpp/test_runtime (threads, errors, the cache) and segment_image on a tiny random export.
python="${PYTHON:-python3}"
if "${python}" -c "import torch, fastclipseg; fastclipseg.cmake_dir()" > /dev/null 2>&1; then
    runtime_build="${root}/build/asan-runtime"
    mkdir -p "${runtime_build}"
    cmake -S "${root}/tests/cpp" -B "${runtime_build}" \
        -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_CXX_FLAGS="${san} -O1 -g" \
        -DCMAKE_EXE_LINKER_FLAGS="${san}" \
        -DFASTCLIPSEG_EXAMPLES="${root}/examples/cpp" \
        -DCMAKE_PREFIX_PATH="$("${python}" -m fastclipseg --cmake-dir);$("${python}" -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
        > "${runtime_build}/configure.log" 2>&1 || { cat "${runtime_build}/configure.log"; exit 1; }
    cmake --build "${runtime_build}" --parallel "${jobs}" --target test_runtime segment_image > "${runtime_build}/build.log" 2>&1 ||
        { tail -40 "${runtime_build}/build.log"; exit 1; }
    PYTHONPATH="${root}/tests" "${python}" - "${runtime_build}/data" <<'PYTHON'
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from helpers.tiny_models import save_tiny_model

from fastclipseg import FastSegmenter

data = Path(sys.argv[1])
model = save_tiny_model(data / "model")
FastSegmenter.from_pretrained(model, backend="torchscript").export(data / "export", backend="torchscript", overwrite=True)
Image.fromarray(np.random.default_rng(0).integers(0, 256, (61, 97, 3), dtype=np.uint8)).save(data / "image.png")
PYTHON
    "${runtime_build}/test_runtime" "${runtime_build}/data/export"
    "${runtime_build}/examples/segment_image" "${runtime_build}/data/export" "${runtime_build}/data/image.png" \
        "a cat" "a dog" > /dev/null
    echo "runtime: test_runtime and segment_image ran clean under the sanitizers"
else
    echo "runtime: not run (torch or an installed fastclipseg is missing: pip install . first)"
fi

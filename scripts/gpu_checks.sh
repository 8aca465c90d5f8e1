#!/usr/bin/env bash
# The checks to run on a machine with an NVIDIA GPU, in one go: build and install the package with
# the machine's own toolchain (no build isolation, so nothing is fetched), run the whole test suite
# (the CUDA tests run there instead of skipping: test_cuda.py, engines/test_cuda_graphs.py,
# ops/test_device_*.py, and engines/test_tensorrt.py where torch-tensorrt imports) and
# the GPU benchmarks (bench_segment.py --device cuda, and bench_gpu.py, issue 7's throughput table). Logs and the
# benchmark's JSON go to the folder given as $1 (default: gpu-checks/).
#
#     bash scripts/gpu_checks.sh [OUT_DIR]
#
# Needs: python3 with a CUDA build of PyTorch, transformers, scikit-build-core, pybind11, CMake,
# a C++17 compiler, and the test extra's packages (pytest, hypothesis, pycocotools).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${1:-gpu-checks}" && cd "${1:-gpu-checks}" && pwd)"
cd "${root}"
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "${out}/nvidia-smi.txt" || status=1
# Wheels carried to a machine without network (lark, av, ray, ...), when there are any.
if compgen -G "${root}/.whl/*.whl" > /dev/null; then
    python3 -m pip install --quiet --no-deps "${root}"/.whl/*.whl > "${out}/wheels.log" 2>&1 || status=1
fi
python3 -m pip install --quiet --no-build-isolation --no-deps . > "${out}/install.log" 2>&1 \
    || { tail -30 "${out}/install.log"; exit 1; }
python3 -c "import torch, transformers, PIL, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'pillow', PIL.__version__, 'numpy', numpy.__version__, \
'transformers', transformers.__version__, 'gpu', torch.cuda.get_device_name(0))" | tee "${out}/versions.txt" || status=1

# Cheapest and most telling first (a lent GPU's time is short): the CUDA tests, then issue 7's
# throughput benchmark, then the whole suite, then the per-case benchmark. The tests run against
# the installed package (the sources under python/ are not on sys.path).
cuda_tests=(test_cuda.py engines/test_cuda_graphs.py ops/test_device_processing.py ops/test_device_preprocess.py
            ops/test_device_postprocess.py engines/test_tensorrt.py)
python3 -m pytest "${cuda_tests[@]/#/${root}/tests/}" -q -rs -p no:cacheprovider 2>&1 | tee "${out}/pytest-cuda.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
(cd benchmarks && python3 bench_gpu.py --out "${out}") 2>&1 | tee "${out}/bench_gpu.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
python3 -m pytest "${root}/tests" -q -rs -p no:cacheprovider 2>&1 | tee "${out}/pytest.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
(cd benchmarks && python3 bench_segment.py --device cuda --threads "$(nproc)" --repeats 10 \
    --backends torch,cudagraphs --precisions fp32,fp16,bf16 --out "${out}") 2>&1 \
    | tee "${out}/bench_segment_cuda.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit "${status}"

"""Which backend x precision combinations this installation runs on the CPU, and how to skip the rest."""

from __future__ import annotations

import pytest
from fastclipseg.engines import (
    BACKENDS,
    available_precisions,
    cpu_has_native_bf16,
    onnxruntime_installed,
)

# Every (backend, precision) this installation can run on the CPU.
COMBINATIONS = [
    (backend, precision)
    for backend in BACKENDS
    for precision in available_precisions(backend, "cpu")
    if (backend != "onnxruntime" or onnxruntime_installed()) and (precision != "bf16" or cpu_has_native_bf16())
]
FAST_PATHS = [c for c in COMBINATIONS if c != ("torch", "fp32")]


def skip_unavailable(backend: str, precision: str) -> None:
    if backend == "onnxruntime" and not onnxruntime_installed():
        pytest.skip("onnxruntime, onnx or onnxscript is not installed (pip install 'fastclipseg[onnx]')")
    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")

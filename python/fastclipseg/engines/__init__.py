"""Backends behind one interface (`Engine`); `create_engine` picks one by name.

| backend | devices | precisions | what it is |
| --- | --- | --- | --- |
| `torch` | cpu, cuda | fp32, bf16, int8 (cpu); fp32, fp16, bf16 (cuda) | eager PyTorch; fp32 is the reference |
| `torchscript` | cpu | fp32, bf16, int8 | each stage traced, frozen and saved (`.pt`, loads in libtorch) |
| `onnxruntime` | cpu (other ONNX Runtime providers passed through) | fp32, int8 | each stage exported to ONNX |
| `aoti` | cpu | fp32, bf16 | each stage exported by torch.export and compiled by AOTInductor (`.pt2`, loads in libtorch) |
| `cudagraphs` | cuda | fp32, fp16, bf16 | the eager stages replayed as CUDA graphs per batch bucket (`cuda_graphs.py`) |
| `tensorrt` | cuda | fp32, fp16, int8 | vision and decoder compiled by torch-tensorrt (`tensorrt_engine.py`); int8 needs `calibration=` |
| `auto` | | | the fastest of these for the device and precision (see `resolve_backend`) |

The backends run the three stages of `fastclipseg.model.stages`. The other network maths of
`model/` (the image-prompt encoder, the dense-feature heads) is compiled by no backend: the
inference core runs it in eager torch with the transformers model's weights, whatever the
backend, and an export does not hold it (image prompts and dense features then raise a clear
error naming what to do).

The CUDA backends have never run on a GPU in this project's development so far (no GPU was lent
to a development session, and CI has none): their CPU-checkable logic is tested, their CUDA tests
skip. README's "GPU" section says exactly what was and was not run.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..model.stages import Stages
from .artifacts import MANIFEST_NAME, ArtifactError, read_manifest
from .base import Engine
from .compiled import (
    COMPILED_BACKENDS,
    cached_engine,
    clear_cache,
    default_cache_dir,
    load_export,
    write_export,
)
from .cuda_graphs import CudaGraphEngine
from .heap import release_freed_memory
from .per_image import PerImageEngine
from .precision import (
    PRECISION_CHOICES,
    PRECISIONS,
    PrecisionChoice,
    check_precision,
    choose_precision,
    cpu_has_amx,
    cpu_has_native_bf16,
    cpu_has_vnni,
)
from .tensorrt_engine import Calibration, cached_tensorrt_engine, require_tensorrt
from .torch_engine import TorchEngine

BACKENDS = ("torch", "torchscript", "onnxruntime", "aoti", "cudagraphs", "tensorrt")
BACKEND_CHOICES = ("auto", *BACKENDS)
_AVAILABLE = {
    ("torch", "cpu"): ("fp32", "bf16", "int8"),
    ("torch", "cuda"): ("fp32", "fp16", "bf16"),
    ("torchscript", "cpu"): ("fp32", "bf16", "int8"),
    ("onnxruntime", "cpu"): ("fp32", "int8"),
    ("aoti", "cpu"): ("fp32", "bf16"),
    ("cudagraphs", "cuda"): ("fp32", "fp16", "bf16"),
    ("tensorrt", "cuda"): ("fp32", "fp16", "int8"),
}


def available_precisions(backend: str, device: str | torch.device) -> tuple[str, ...]:
    """The precisions `backend` runs on `device` (empty when it does not run there at all)."""
    return _AVAILABLE.get((backend, torch.device(device).type), ())


def onnxruntime_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def resolve_backend(backend: str, device: torch.device, precision: str) -> str:
    """`auto` -> the fastest backend measured for `device` and `precision`; other names unchanged.

    On the CPU (benchmarks/bench_segment.py, full-size model, 2 threads): fp32 and bf16 ->
    torchscript (fp32: on par with onnxruntime, and compiles in seconds rather than half a
    minute); int8 -> torchscript where the CPU has native bf16 (its int8 runs the decoder in
    bf16, which ONNX Runtime cannot: faster with several prompts, and a 3 s first build against
    ONNX Runtime's 24 s), else onnxruntime when it is installed (its int8 vision stage is the
    fastest), else torchscript. Never aoti: its first start compiles C++ for about a minute (against
    TorchScript's 2-5 s), which every first run of a model would pay for a few per cent per call
    (README, Benchmarks). On CUDA: int8 -> tensorrt (the only CUDA int8 path); the rest -> cudagraphs
    (graph replay removes the per-kernel launch cost that dominates small batches). Elsewhere ->
    torch.
    """
    if backend != "auto":
        return backend
    if device.type == "cuda":
        return "tensorrt" if precision == "int8" else "cudagraphs"
    if device.type != "cpu":
        return "torch"
    if precision == "int8" and not cpu_has_native_bf16() and onnxruntime_installed():
        return "onnxruntime"
    return "torchscript"


def parse_device(device: str | torch.device) -> torch.device:
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}: {error}") from error
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(parsed)!r} was asked for, but this PyTorch build sees no CUDA device")
    return parsed


def create_engine(
    backend: str,
    stages: Stages,
    device: str | torch.device,
    precision: str,
    *,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    providers: list[str] | None = None,
    calibration: Callable[[], Calibration] | None = None,
) -> Engine:
    """The engine for `backend` on `device` in `precision`; a clear ValueError for what is not available.

    `precision="auto"` picks one for the device (`choose_precision`); the engine's `precision` says which.

    Compiled backends load from `cache_dir` when it holds a valid build (else they build and store
    one); `cache_dir=None` builds without caching. `threads` and `providers` configure ONNX Runtime.
    `calibration`: for a tensorrt int8 engine, called once to give the `Calibration` (a hash of the
    images and their preprocessed pixels, from the caller: engines read no image files).
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {backend!r}: available backends are {', '.join(BACKEND_CHOICES)}")
    device = parse_device(device)
    if backend == "tensorrt":
        require_tensorrt(device)  # names a non-CUDA device or the missing package before the precision checks
    named = available_precisions(backend, device) if backend != "auto" else None
    precision = choose_precision(precision, device, named).precision
    backend = resolve_backend(backend, device, precision)
    if not available_precisions(backend, device):
        raise ValueError(f"backend {backend!r} does not run on {device.type} in this version; use backend='torch' there")
    check_precision(precision, device, available_precisions(backend, device), backend)
    if calibration is not None and (backend, precision) != ("tensorrt", "int8"):
        raise ValueError(f"calibration images are for backend 'tensorrt' in precision 'int8', not {backend!r} {precision!r}")
    if backend == "torch":
        return TorchEngine(stages, device, precision)
    if backend == "cudagraphs":
        return CudaGraphEngine(stages, device, precision)
    if backend == "tensorrt":
        return _tensorrt_engine(stages, device, precision, cache_dir, calibration)
    return cached_engine(
        backend, stages, precision, device, Path(cache_dir) if cache_dir is not None else None, threads, providers
    )


def _tensorrt_engine(stages: Stages, device: torch.device, precision: str, cache_dir: str | Path | None,
                     calibration: Callable[[], Calibration] | None) -> Engine:
    if precision == "int8" and calibration is None:
        raise ValueError("precision 'int8' with backend 'tensorrt' needs calibration=<folder of images like yours>")
    images = calibration() if calibration is not None else None
    if cache_dir is not None:
        return cached_tensorrt_engine(stages, precision, device, Path(cache_dir), calibration=images)
    # No cache: build in a temporary folder; the loaded programs do not need their files afterwards.
    with tempfile.TemporaryDirectory(prefix="fastclipseg-tensorrt-") as folder:
        return cached_tensorrt_engine(stages, precision, device, Path(folder), calibration=images)


__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "COMPILED_BACKENDS",
    "MANIFEST_NAME",
    "PRECISIONS",
    "PRECISION_CHOICES",
    "PrecisionChoice",
    "ArtifactError",
    "Calibration",
    "CudaGraphEngine",
    "Engine",
    "PerImageEngine",
    "TorchEngine",
    "available_precisions",
    "check_precision",
    "choose_precision",
    "cpu_has_amx",
    "clear_cache",
    "cpu_has_native_bf16",
    "cpu_has_vnni",
    "create_engine",
    "default_cache_dir",
    "load_export",
    "onnxruntime_installed",
    "parse_device",
    "read_manifest",
    "release_freed_memory",
    "resolve_backend",
    "write_export",
]

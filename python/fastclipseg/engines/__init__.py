"""Backends behind one interface (`Engine`); `create_engine` picks one by name."""

from __future__ import annotations

import torch

from ..model.stages import Stages
from .base import Engine
from .torch_engine import TorchEngine

BACKENDS = ("torch",)
PRECISIONS = ("fp32",)


def create_engine(backend: str, stages: Stages, device: str | torch.device, precision: str) -> Engine:
    """The engine for `backend` on `device` in `precision`; a clear ValueError for what is not built."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: available backends are {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision {precision!r} is not available for backend {backend!r}: available precisions are "
            f"{', '.join(PRECISIONS)}"
        )
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"invalid device {device!r}: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but this PyTorch build sees no CUDA device")
    return TorchEngine(stages, device)


__all__ = ["BACKENDS", "PRECISIONS", "Engine", "TorchEngine", "create_engine"]

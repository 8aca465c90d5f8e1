"""Conditional embeddings computed elsewhere (any `(K, P)` float array), checked before the decoder
sees them. Kept apart from `fastclipseg.ops.validation` because it needs torch, which the command
line does not load to check its arguments."""

from __future__ import annotations

import numpy as np
import torch


def check_conditional_embeddings(
    embeddings: object, expected_dim: int | None, *, name: str = "conditional embeddings"
) -> torch.Tensor:
    """User-provided conditional embeddings -> a `(K, P)` float32 CPU tensor, or a clear error.

    `embeddings`: a numpy array or torch tensor of floats, 2-D (`K` prompts x `P` values), `K >= 1`,
    `P == expected_dim` (the model's `projection_dim`; None accepts any width), all finite. The result is a new tensor
    (never a view of the input) that is safe to keep. `name` starts the error messages.
    """
    if expected_dim is not None and (
        isinstance(expected_dim, bool) or not isinstance(expected_dim, (int, np.integer)) or expected_dim < 1
    ):
        raise ValueError(f"expected_dim must be a positive int (or None: any width), got {expected_dim!r}")
    if isinstance(embeddings, np.ndarray):
        if not (np.issubdtype(embeddings.dtype, np.floating)):
            raise TypeError(
                f"{name} must be floating point, got a numpy array of dtype {embeddings.dtype}"
            )
        tensor = torch.from_numpy(np.array(embeddings, dtype=np.float32, copy=True))
    elif isinstance(embeddings, torch.Tensor):
        if not embeddings.is_floating_point():
            raise TypeError(f"{name} must be floating point, got a tensor of dtype {embeddings.dtype}")
        tensor = embeddings.detach().to(device="cpu", dtype=torch.float32, copy=True)
    else:
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor, got {type(embeddings).__name__}"
        )
    width = "P" if expected_dim is None else str(expected_dim)
    if tensor.ndim != 2:
        hint = " (for one embedding use shape (1, P): e.g. embedding[None])" if tensor.ndim == 1 else ""
        raise ValueError(
            f"{name} must be 2-D (K prompts x {width}), got shape {tuple(tensor.shape)}{hint}"
        )
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty: give at least one (K >= 1)")
    if expected_dim is not None and tensor.shape[1] != expected_dim:
        raise ValueError(
            f"{name} has {tensor.shape[1]} values each, the model's projection_dim is {expected_dim}"
        )
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        rows = sorted({int(r) for r in (~finite).nonzero()[:, 0].tolist()})
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise ValueError(f"{name} holds NaN or infinite values (rows {shown})")
    return tensor.contiguous()


__all__ = ["check_conditional_embeddings"]

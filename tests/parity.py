"""The tolerance rule of the fp32 parity tests, shared by the test modules."""

from __future__ import annotations

import torch

# fp32 on the same weights: the stages compute the same operations as the reference, so the
# difference is float rounding only. "Relative" = max |difference| / max |reference|.
RELATIVE_TOLERANCE = 1e-5


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = RELATIVE_TOLERANCE) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0
    error = (actual - expected).abs().max().item()
    assert error <= tolerance * scale, f"max |difference| {error:.3g} > {tolerance} x max |reference| {scale:.3g}"

"""The tolerance rule of the fp32 parity tests, shared by the test modules."""

from __future__ import annotations

import numpy as np
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


# Masks thresholded from logits that differ by float rounding (another batch size, another CPU's
# matrix kernels) may disagree where the probability sits on the threshold, and only there.
THRESHOLD_BAND = 1e-4


def assert_masks_agree(got: np.ndarray, expected, index: int, band: float = THRESHOLD_BAND) -> None:
    """`got` equals mask `index` of the `SegmentationResult` `expected`, except at pixels whose
    probability is within `band` of the threshold."""
    want = expected.masks[index]
    assert got.shape == want.shape
    differ = got != want
    on_threshold = np.abs(expected.probs[index] - expected.threshold) <= band
    assert not (differ & ~on_threshold).any(), (
        f"{int((differ & ~on_threshold).sum())} pixels differ away from the threshold "
        f"({int(differ.sum())} in all)"
    )

"""Masks that follow the image's edges: the fast guided filter (He & Sun, 2015) of the probabilities.

CLIPSeg decides at 22 x 22 patches decoded to 352 x 352 logits; upsampled bilinearly to 1080p its
masks are blobs that cut across object edges. The guided filter fits, in every window of the
filter's coarse grid, the probability as a linear function of the image (``q = a . I + b``);
upsampling ``a`` and ``b`` instead of the probability and applying them to the full-resolution image
puts the mask's edge where the image's edge is. The low-resolution half (the box filters, all on the
filter's grid) and the full-resolution half (one multiply-add per pixel and guide channel, fused
into the post-processing row loop) are native (``csrc/kernels/edges.cpp``, ``postprocess.cpp``);
`fastclipseg.ops.device.edges.guided_probabilities` is its torch twin for the device path.

`Edges` holds the parameters:

- ``subsample``: the filter works on the model's grid divided by this (352 / s cells a side; the
  logits' probabilities and the image are averaged into its cells). The coefficients are smooth,
  so a coarser grid loses nothing measurable on the shapes scenes and costs s^2 times less.
- ``radius``: the box radius r on that grid (window ``2r + 1`` cells; one cell is
  ``s x image size / 352`` pixels). Larger windows pull the mask further towards the image's
  edges and smooth more.
- ``eps``: regularisation, in units of the guide's variance (guide in [0, 1]). Edges whose
  contrast variance is well above ``eps`` steer the mask; flatter regions keep the model's
  probabilities.
- ``guide``: ``"grey"`` (the image's grey value, as Pillow's ``convert("L")``) or ``"colour"``
  (the three RGB channels: also follows edges between colours of the same brightness, at about
  1.2-1.3 times the grey guide's cost per 1080p frame; README, "Masks that follow edges").

With edges on, every output derives from the filtered probability ``q`` in [0, 1] rather than
from the upsampled logit: masks are ``q > threshold``, probabilities are ``q``, the score is the
mean ``q`` over the mask, and the stability score counts ``q`` above ``sigmoid(logit(t) -/+ d)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core
from .validation import check_threshold

__all__ = ["DEFAULT_EDGES", "GUIDES", "Edges", "as_edges", "check_guide", "probability_cuts"]

GUIDES = ("grey", "colour")


@dataclass(frozen=True)
class Edges:
    """Parameters of edge-aware upsampling (see the module docstring). Defaults were chosen on
    held-out shapes scenes by ``benchmarks/bench_edges.py`` (README, "Masks that follow edges")."""

    radius: int = 4
    eps: float = 1e-3
    guide: str = "colour"
    subsample: int = 4

    def __post_init__(self) -> None:
        radius, eps, guide, subsample = self.radius, self.eps, self.guide, self.subsample
        if isinstance(subsample, (bool, np.bool_)) or not isinstance(subsample, numbers.Integral):
            raise TypeError(f"edges subsample must be an int, got {type(subsample).__name__}")
        if not 1 <= subsample <= _core.EDGES_MAX_SUBSAMPLE:
            raise ValueError(f"edges subsample must be in [1, {_core.EDGES_MAX_SUBSAMPLE}], got {subsample}")
        if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, numbers.Integral):
            raise TypeError(f"edges radius must be an int, got {type(radius).__name__}")
        if not 1 <= radius <= _core.EDGES_MAX_RADIUS:
            raise ValueError(f"edges radius must be in [1, {_core.EDGES_MAX_RADIUS}] (cells of the model's grid), "
                             f"got {radius}")
        if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
            raise TypeError(f"edges eps must be a real number > 0, got {type(eps).__name__}")
        if not math.isfinite(float(eps)) or float(eps) <= 0.0:
            raise ValueError(f"edges eps must be finite and > 0, got {float(eps)!r}")
        if guide not in GUIDES:
            raise ValueError(f"edges guide must be 'grey' or 'colour', got {guide!r}")
        object.__setattr__(self, "radius", int(radius))
        object.__setattr__(self, "eps", float(eps))
        object.__setattr__(self, "subsample", int(subsample))

    def to_dict(self) -> dict:
        return {"radius": self.radius, "eps": self.eps, "guide": self.guide, "subsample": self.subsample}


DEFAULT_EDGES = Edges()


def as_edges(value: Any) -> Edges | None:
    """The `Edges` of an ``edges=`` argument: None/False (off), True (the defaults), an `Edges`,
    or a dict of its fields."""
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_EDGES
    if isinstance(value, Edges):
        return value
    if isinstance(value, dict):
        unknown = set(value) - {"radius", "eps", "guide", "subsample"}
        if unknown:
            raise ValueError(f"edges: unknown parameter(s) {sorted(unknown)}; expected radius, eps, guide, subsample")
        return Edges(**value)
    raise TypeError(f"edges must be None, a bool, an Edges or a dict, got {type(value).__name__}")


def check_guide(image: Any, size: tuple[int, int]) -> np.ndarray:
    """The guide image as a C-contiguous uint8 ``(H, W)`` or ``(H, W, 3)`` array of the output size."""
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"the edges guide must be the image as a uint8 numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"the edges guide must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"the edges guide must be H x W (grey) or H x W x 3 (RGB), got shape {image.shape}")
    if tuple(image.shape[:2]) != tuple(size):
        raise ValueError(f"the edges guide is {image.shape[0]} x {image.shape[1]} but the output is "
                         f"{size[0]} x {size[1]}: guide with the image itself, at its own size")
    return np.ascontiguousarray(image)


def probability_cuts(threshold: float, offset: float = 1.0) -> tuple[float, float, float]:
    """The native kernel's float32 cuts ``(mask, low, high)`` of the filtered probability:
    ``q > mask`` exactly when ``q > threshold``; ``low`` / ``high`` are
    ``sigmoid(logit(t) -/+ offset)`` (the stability score's)."""
    cut, low, high = _core.edges_probability_cuts(check_threshold(threshold), float(offset))
    return float(cut), float(low), float(high)

"""From CLIPSeg logits to masks, probabilities, COCO RLE, areas, boxes and scores in one native call.

`postprocess` upsamples ``(K, h, w)`` float32 logits to the image's own size with
bilinear interpolation (``align_corners=False``, bit-identical to
``torch.nn.functional.interpolate`` whenever PyTorch takes its general CPU
kernel, i.e. ``H + W > 128``; within a few ulp below that) and derives every
requested output from each upsampled row while it is in cache:

- ``masks``: ``sigmoid(logit) > threshold``, evaluated as ``logit > log(t / (1 - t))``
  so no sigmoid is needed; ``threshold=0`` keeps every logit above ``-inf``,
  ``threshold=1`` keeps nothing.
- ``probs``: ``sigmoid`` of the upsampled logit as float32, or ``round(255 p)`` as uint8.
- ``rle``: COCO compressed RLE whose counts are byte-identical to
  ``pycocotools.mask.encode(np.asfortranarray(mask))`` (as ``str``), built from
  row transitions without materialising a full-size array.
- ``area`` / ``bbox``: as ``pycocotools.mask.area`` / ``toBbox`` (zeros for an empty mask).
- ``score``: the mean probability over the mask's pixels (accumulated in
  double), 0 for an empty mask.
- ``stability``: segment-anything's stability score (``calculate_stability_score``
  of its automatic mask generator) on the upsampled logits: with
  ``L = log(t / (1 - t))`` and ``d = stability_offset`` (logit units, SAM's
  default 1.0), ``count(logit > L + d) / count(logit > L - d)``, the IoU of the
  masks thresholded ``d`` above and below the threshold. Both comparisons are
  exact against ``L +- d`` computed in double (as the mask's against ``L``); for
  ``threshold`` 0 or 1 they stay at ``-inf`` / ``+inf``. It is 1.0 when both
  counts are 0 (the two masks are identical: both empty), so always 1.0 for
  ``threshold=1``, and 1.0 for every mask when ``d = 0``. NaN logits count in neither.

With ``edges`` (and the image as ``guide``), the fast guided filter of the probabilities replaces
the bilinear upsampling (`fastclipseg.ops.edges`): every output then derives from the filtered
probability ``q`` (masks ``q > threshold``, probabilities ``q``, score the mean ``q`` over the
mask, stability ``count(q > sigmoid(L + d)) / count(q > sigmoid(L - d))``).

When only ``rle``/``area``/``bbox``/``score``/``stability`` are requested no full-size array
of any kind is allocated. Results are bit-identical for every ``threads``
value. NaN logits are background, their float32 probability is NaN and their
uint8 probability 0; infinities propagate through the interpolation as in
PyTorch (``inf * 0`` weights give NaN).
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from .. import _core
from .edges import Edges, as_edges, check_guide
from .rle import RLE
from .threads import native_threads
from .validation import check_threshold

__all__ = ["PackedMasks", "Postprocessed", "postprocess", "stability_thresholds", "threshold_logit", "upsample"]

ProbsDtype = Literal["float32", "uint8"]


@dataclass(frozen=True)
class PackedMasks:
    """Masks computed on the network's device (`fastclipseg.ops.device.processing`): `bits` is
    `K x H x ceil(W / 8)` uint8, bit j of byte b = column 8 b + j ("little" bit order, as
    `np.packbits(..., bitorder="little")`); `score` and `stability` are K float64 each."""

    bits: np.ndarray
    score: np.ndarray
    stability: np.ndarray


@dataclass(frozen=True)
class Postprocessed:
    """What `postprocess` computed; a field is ``None`` when it was not requested.

    Attributes:
        masks: ``(K, H, W)`` bool, C order.
        probs: ``(K, H, W)`` float32 probabilities, or uint8 ``round(255 p)``.
        rle: K dicts ``{"size": [H, W], "counts": str}`` (pycocotools-style, JSON-ready).
        area: ``(K,)`` int64 foreground pixel counts.
        bbox: ``(K, 4)`` float64 ``[x, y, width, height]``; zeros for an empty mask.
        score: ``(K,)`` float64 mean probability inside each mask; 0 for an empty mask.
        stability: ``(K,)`` float64 SAM stability score in [0, 1]; 1.0 when neither shifted
            threshold selects a pixel.
    """

    masks: np.ndarray | None = None
    probs: np.ndarray | None = None
    rle: list[RLE] | None = None
    area: np.ndarray | None = None
    bbox: np.ndarray | None = None
    score: np.ndarray | None = None
    stability: np.ndarray | None = None


def postprocess(
    logits: Any,
    size: tuple[int, int],
    threshold: float = 0.5,
    *,
    masks: bool = True,
    probs: ProbsDtype | None = None,
    rle: bool = False,
    area: bool = False,
    bbox: bool = False,
    score: bool = False,
    threads: int | None = None,
    stability: bool = False,
    stability_offset: float = 1.0,
    edges: Edges | bool | dict | None = None,
    guide: Any = None,
) -> Postprocessed:
    """Upsample logits to ``size`` and compute the requested per-mask outputs in one pass.

    Args:
        logits: ``(K, h, w)`` float32 array (e.g. the network's 352x352 logits); K may be 0.
            Array-likes (CPU torch tensors) go through `np.asarray`; any other dtype is
            rejected rather than cast. Non-contiguous arrays are accepted (copied once).
        size: output ``(H, W)``, each >= 1.
        threshold: probability threshold t in [0, 1]; a pixel is foreground when
            ``sigmoid(logit) > t``.
        masks: return the ``(K, H, W)`` bool masks.
        probs: also return probabilities as ``"float32"`` or ``"uint8"`` (``round(255 p)``).
        rle: return COCO compressed RLE dicts.
        area: return foreground pixel counts.
        bbox: return ``[x, y, width, height]`` boxes.
        score: return mean probabilities inside the masks.
        threads: worker threads (>= 1); None uses the hardware concurrency.
        stability: return SAM stability scores,
            ``count(logit > L + d) / count(logit > L - d)`` with ``L = log(t / (1 - t))``
            (1.0 when both counts are 0).
        stability_offset: the offset ``d`` in logit units, finite and >= 0 (SAM's
            ``stability_score_offset``); checked even when ``stability`` is False.
        edges: edge-aware upsampling (`fastclipseg.ops.edges.Edges`, True for its defaults, a
            dict of its fields; None or False: bilinear).
        guide: with ``edges``, the image itself, ``(H, W, 3)`` or ``(H, W)`` uint8 of the output size.

    Returns:
        A `Postprocessed` with the requested fields set.

    Raises:
        TypeError: logits is not float32, or an argument has the wrong type.
        ValueError: logits is not 3-D, a size is < 1 or too large, the threshold is NaN or
            outside [0, 1], ``probs`` is not None/"float32"/"uint8", threads < 1, or
            ``stability_offset`` is NaN, infinite or negative, or ``edges`` has bad parameters or
            no guide of the output's size.
    """
    arr = _as_array(logits)
    height, width = _check_size(size)
    t = check_threshold(threshold)
    offset = _check_stability_offset(stability_offset)
    if probs is not None and (not isinstance(probs, str) or probs not in ("float32", "uint8")):
        raise ValueError(f"probs must be None, 'float32' or 'uint8', got {probs!r}")
    options = as_edges(edges)
    guide_image = None
    if options is not None:
        if guide is None:
            raise ValueError("edges needs the image as guide= (H x W x 3 uint8, the output's size)")
        guide_image = check_guide(guide, (height, width))
    out = _core.postprocess(arr, height, width, t, bool(masks), probs, bool(rle), bool(area),
                            bool(bbox), bool(score), _check_threads(threads), bool(stability), offset,
                            guide_image, options.radius if options else 4, options.eps if options else 1e-3,
                            options is not None and options.guide == "colour", options.subsample if options else 1)
    counts = cast("list[str] | None", out["rle"])
    rles: list[RLE] | None = None
    if counts is not None:
        rles = [{"size": [height, width], "counts": c} for c in counts]
    arrays = {k: cast("np.ndarray | None", out[k]) for k in ("masks", "probs", "area", "bbox", "score", "stability")}
    return Postprocessed(rle=rles, **arrays)


def upsample(logits: Any, size: tuple[int, int], *, threads: int | None = None) -> np.ndarray:
    """Bilinearly upsampled logits alone, ``(K, H, W)`` float32.

    Equals ``torch.nn.functional.interpolate(torch.from_numpy(logits)[None], size=size,
    mode="bilinear", align_corners=False)[0]`` (bit-identical when ``H + W > 128``).
    Arguments and errors as in `postprocess`.
    """
    arr = _as_array(logits)
    height, width = _check_size(size)
    return _core.postprocess_upsample(arr, height, width, _check_threads(threads))


def threshold_logit(threshold: float) -> float:
    """The float32 logit cut of probability `threshold`: `logit > threshold_logit(t)` is exactly
    the masks' test (`log(t / (1 - t))` in double; -inf for 0, +inf for 1)."""
    return float(_core.postprocess_threshold_logit(check_threshold(threshold)))


def stability_thresholds(threshold: float, offset: float) -> tuple[float, float]:
    """The float32 logit cuts `(low, high)` of the stability score: `threshold_logit` minus and
    plus `offset` (logit units), as the kernel compares them."""
    low, high = _core.postprocess_stability_thresholds(check_threshold(threshold), float(offset))
    return float(low), float(high)


def _as_array(logits: Any) -> np.ndarray:
    return logits if isinstance(logits, np.ndarray) else np.asarray(logits)


def _check_size(size: Any) -> tuple[int, int]:
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    dims = []
    for name, v in zip(("height", "width"), size):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"size {name} must be an int, got {type(v).__name__}")
        n = operator.index(v)
        if not 1 <= n <= _core.POSTPROCESS_MAX_SIDE:
            raise ValueError(f"size {name} must be in [1, {_core.POSTPROCESS_MAX_SIDE}], got {n}")
        dims.append(n)
    return dims[0], dims[1]


def _check_stability_offset(offset: Any) -> float:
    if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, numbers.Real):
        raise TypeError(f"stability_offset must be a real number >= 0, got {type(offset).__name__}")
    d = float(offset)
    if not math.isfinite(d) or d < 0.0:
        raise ValueError(f"stability_offset must be finite and >= 0, got {d!r}")
    return d


def _check_threads(threads: Any) -> int:
    return native_threads(threads, _core.POSTPROCESS_MAX_THREADS)

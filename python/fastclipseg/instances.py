"""Instances: the objects in one prompt's mask, each with its own RLE, box, area, score and stability.

A prompt's mask is one semantic region ("every red thing"); its connected components are the
objects in it. `find_instances` splits it with the native labelling kernel
(`fastclipseg.ops.instances`) and measures each component:

- `area`, `bbox` (COCO `[x, y, width, height]`) and `rle` (COCO RLE, as `pycocotools` encodes it);
- `score`: the mean probability over the component's pixels;
- `stability`: segment-anything's stability score for this object: the pixels of the component
  above the threshold raised by `d` (logit units), over the pixels of the component of the mask at
  the threshold lowered by `d` that contains it (the object cannot leave it). An object that
  shrinks or merges with its neighbours when the threshold moves scores low.

Components smaller than `min_area` pixels are dropped (specks at the mask's edge).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from .ops import rle as coco_rle
from .ops.edges import probability_cuts
from .ops.postprocess import stability_thresholds, threshold_logit
from .ops.validation import check_threshold

components = importlib.import_module("fastclipseg.ops.instances")  # the module, not a function of ops

STABILITY_OFFSET = 1.0  # segment-anything's default, as the per-prompt stability


@dataclass(frozen=True)
class Instance:
    """One connected component of prompt `prompt_index`'s mask."""

    prompt: str
    prompt_index: int
    area: int
    bbox: list[float]
    score: float
    stability: float
    rle: coco_rle.RLE

    def to_dict(self) -> dict:
        """JSON-ready: prompt, prompt index, score, stability, area, bbox and RLE."""
        return {"prompt": self.prompt, "prompt_index": self.prompt_index, "score": self.score,
                "stability": self.stability, "area": self.area, "bbox": self.bbox, "rle": self.rle}


def check_instance_options(min_area: int, connectivity: int) -> None:
    if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 0:
        raise ValueError(f"min_area must be an int >= 0 (pixels), got {min_area!r}")
    if isinstance(connectivity, bool) or connectivity not in components.CONNECTIVITIES:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")


def find_instances(values: np.ndarray, threshold: float, prompt: str, prompt_index: int, *,
                   min_area: int = 0, connectivity: int = 8, probabilities: bool = False) -> list[Instance]:
    """The instances of one prompt from its map at the image's resolution (`H x W` float32), in
    raster order of their first pixel: its upsampled logits, or with `probabilities` the
    edge-aware filtered probabilities (then the threshold and the stability cuts are compared with
    them directly, as the native kernel does: `fastclipseg.ops.edges.probability_cuts`)."""
    check_threshold(threshold)
    check_instance_options(min_area, connectivity)
    values = np.ascontiguousarray(values, dtype=np.float32)
    if probabilities:
        cut, low_threshold, high_threshold = probability_cuts(threshold, STABILITY_OFFSET)
        probability = values
    else:
        cut = threshold_logit(threshold)
        low_threshold, high_threshold = stability_thresholds(threshold, STABILITY_OFFSET)
        probability = _sigmoid(values)
    mask = values > cut
    labels, count = components.label(mask, connectivity)
    if count == 0:
        return []
    area, bbox = components.measure(labels, count)
    flat = labels.ravel()
    probability_sum = np.bincount(flat, weights=probability.ravel(), minlength=count + 1)[1:]
    high_area = np.bincount(flat, weights=(values > high_threshold).ravel(), minlength=count + 1)[1:]
    low_labels, low_count = components.label(values > low_threshold, connectivity)
    low_area, _ = components.measure(low_labels, low_count)
    # Every component lies inside one component of the lower threshold's mask: read it at any of
    # its pixels (whichever one the assignment keeps for a repeated label).
    some_pixel = np.zeros(count + 1, dtype=np.int64)
    some_pixel[flat] = np.arange(flat.size)
    enclosing = low_labels.ravel()[some_pixel[1:]]
    encoded = components.encode(labels, count)
    found = []
    for index in range(count):
        if area[index] < min_area:
            continue
        found.append(Instance(
            prompt=prompt, prompt_index=prompt_index, area=int(area[index]),
            bbox=[float(v) for v in bbox[index]], score=float(probability_sum[index] / area[index]),
            stability=float(high_area[index] / low_area[enclosing[index] - 1]),
            rle=encoded[index]))
    return found


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)

"""`SegmentationResult`: what `FastSegmenter.segment` returns for one image."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F

from . import rle as coco_rle


def check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, Real):
        raise TypeError(f"threshold must be a number in [0, 1], got {type(threshold).__name__}: {threshold!r}")
    value = float(threshold)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {value}")
    return value


@dataclass(eq=False)
class SegmentationResult:
    """Masks for K prompts on one image.

    The network's `logits` are kept at the model's resolution; everything at the image's own
    resolution (`probs`, `masks`, `scores`, `rle`, `areas`, `bboxes`) is computed on first use.

    - `probs`: `K x H x W` float32, the sigmoid of the logits after bilinear upsampling
      (`align_corners=False`) to the image size.
    - `masks`: `K x H x W` bool, `probs > threshold`.
    - `scores`: K floats in [0, 1], the mean probability inside each mask (0 for an empty mask):
      how sure the model is of the pixels it selected.
    - `rle`: K COCO run-length encodings (`{"size": [H, W], "counts": str}`) that
      `pycocotools.mask.decode` reads.
    - `areas` (pixels) and `bboxes` (`[x, y, width, height]`, COCO convention) of the masks.
    """

    prompts: list[str]
    logits: np.ndarray
    image_size: tuple[int, int]
    threshold: float = 0.5
    source: str | None = field(default=None)

    @cached_property
    def probs(self) -> np.ndarray:
        logits = torch.from_numpy(self.logits)[None]
        upsampled = F.interpolate(logits, size=self.image_size, mode="bilinear", align_corners=False)[0]
        return torch.sigmoid(upsampled).numpy()

    @cached_property
    def masks(self) -> np.ndarray:
        return self.probs > self.threshold

    @cached_property
    def scores(self) -> np.ndarray:
        selected = self.masks.reshape(len(self.prompts), -1)
        inside = np.where(selected, self.probs.reshape(len(self.prompts), -1), 0.0).sum(axis=1, dtype=np.float64)
        counts = selected.sum(axis=1)
        return np.divide(inside, counts, out=np.zeros(len(self.prompts)), where=counts > 0)

    @cached_property
    def rle(self) -> list[coco_rle.RLE]:
        encoded = coco_rle.encode(self.masks)  # a K x H x W batch gives a list
        return encoded if isinstance(encoded, list) else [encoded]

    @cached_property
    def areas(self) -> list[int]:
        return [int(a) for a in self.masks.reshape(len(self.prompts), -1).sum(axis=1)]

    @cached_property
    def bboxes(self) -> list[list[float]]:
        return [list(box) for box in coco_rle.bbox(self.rle)]

    def to_dict(self) -> dict:
        """JSON-ready summary: image size and, per prompt, score, area, bbox and RLE."""
        height, width = self.image_size
        return {
            "image": self.source,
            "height": height,
            "width": width,
            "threshold": self.threshold,
            "masks": [
                {
                    "prompt": prompt,
                    "score": float(score),
                    "area": area,
                    "bbox": [float(v) for v in box],
                    "rle": encoded,
                }
                for prompt, score, area, box, encoded in zip(self.prompts, self.scores, self.areas, self.bboxes, self.rle)
            ],
        }

    def to_json(self, **kwargs) -> str:
        """`to_dict()` as a JSON string; keyword arguments go to `json.dumps`."""
        return json.dumps(self.to_dict(), **kwargs)

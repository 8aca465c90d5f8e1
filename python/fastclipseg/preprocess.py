"""Reference preprocessing: what the transformers CLIPSeg image processor does, on RGB arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class PreprocessConfig:
    """Resize to `size x size` with PIL's `resample`, then `(x / 255 - mean) / std`."""

    size: int = 352
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resample: int = Image.Resampling.BILINEAR

    @classmethod
    def from_image_processor(cls, image_processor) -> "PreprocessConfig":
        size = image_processor.size
        if isinstance(size, int):
            height = width = size
        else:  # a dict in transformers 4, a SizeDict in transformers 5
            height, width = size["height"], size["width"]
        if height != width:
            raise ValueError(f"CLIPSeg needs a square input, the image processor resizes to {height}x{width}")
        return cls(
            size=int(height),
            mean=tuple(float(v) for v in image_processor.image_mean),
            std=tuple(float(v) for v in image_processor.image_std),
            resample=int(image_processor.resample),
        )


def preprocess(images: list[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """RGB uint8 arrays of any sizes -> `(N, 3, S, S)` float32 pixel values."""
    out = np.empty((len(images), 3, config.size, config.size), dtype=np.float32)
    scale = (1.0 / (255.0 * np.asarray(config.std, dtype=np.float32)))[:, None, None]
    shift = (np.asarray(config.mean, dtype=np.float32) / np.asarray(config.std, dtype=np.float32))[:, None, None]
    for index, image in enumerate(images):
        resized = Image.fromarray(np.ascontiguousarray(image)).resize((config.size, config.size), config.resample)
        chw = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)
        out[index] = chw * scale - shift
    return out

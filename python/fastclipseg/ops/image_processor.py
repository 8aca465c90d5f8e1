"""Preprocessing: what the transformers CLIPSeg image processor does, on RGB arrays.

`preprocess_images` is what `FastSegmenter` runs: the native kernel (`fastclipseg.ops.preprocess`)
for the processor's bilinear filter, the PIL reference `preprocess` for any other filter.
`preprocess` stays as the reference the kernel is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image

from .. import ops


@dataclass(frozen=True)
class PreprocessConfig:
    """Resize to `size x size` with PIL's `resample`, then `(x * rescale_factor - mean) / std`."""

    size: int = 352
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resample: int = Image.Resampling.BILINEAR
    rescale_factor: float = 1 / 255

    @classmethod
    def from_image_processor(cls, image_processor) -> "PreprocessConfig":
        """The settings of a transformers image processor (ViTImageProcessor for CLIPSeg)."""
        if not getattr(image_processor, "do_resize", True):
            raise ValueError("the image processor has do_resize=False; CLIPSeg needs a fixed square input size")
        size = image_processor.size
        if isinstance(size, int):
            height = width = size
        else:  # a dict in transformers 4, a SizeDict in transformers 5
            height, width = size["height"], size["width"]
        if height != width:
            raise ValueError(f"CLIPSeg needs a square input, the image processor resizes to {height}x{width}")
        normalize = getattr(image_processor, "do_normalize", True)
        rescale = getattr(image_processor, "do_rescale", True)
        return cls(
            size=int(height),
            mean=tuple(float(v) for v in image_processor.image_mean) if normalize else (0.0, 0.0, 0.0),
            std=tuple(float(v) for v in image_processor.image_std) if normalize else (1.0, 1.0, 1.0),
            resample=int(image_processor.resample),
            rescale_factor=float(image_processor.rescale_factor) if rescale else 1.0,
        )


def value_table(config: PreprocessConfig) -> np.ndarray:
    """`(3, 256)` float32: the normalised value of every uint8 level in every channel.

    Computed with the transformers processor's own arithmetic (rescale in float64, cast to
    float32, then `(x - mean) / std` in float32), so the pixel values are bit-identical to its.
    """
    levels = (np.arange(256, dtype=np.float64) * config.rescale_factor).astype(np.float32)
    mean = np.asarray(config.mean, dtype=np.float32)[:, None]
    std = np.asarray(config.std, dtype=np.float32)[:, None]
    return (levels[None, :] - mean) / std


def preprocess(images: list[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """RGB uint8 arrays of any sizes -> `(N, 3, S, S)` float32 pixel values."""
    out = np.empty((len(images), 3, config.size, config.size), dtype=np.float32)
    table = value_table(config)
    for index, image in enumerate(images):
        resized = Image.fromarray(np.ascontiguousarray(image)).resize((config.size, config.size), config.resample)
        hwc = np.asarray(resized)
        for channel in range(3):
            out[index, channel] = table[channel][hwc[:, :, channel]]
    return out


def preprocess_images(images: list[np.ndarray], config: PreprocessConfig, threads: int | None = None) -> np.ndarray:
    """RGB uint8 arrays of any sizes -> `(N, 3, S, S)` float32 pixel values, bit-identical to `preprocess`.

    The native kernel replicates Pillow's bilinear filter only (the one CLIPSeg's processor
    uses); a config with another filter takes the PIL path. `threads`: native threads (None:
    all cores).
    """
    if config.resample != Image.Resampling.BILINEAR:
        return preprocess(images, config)
    pixels = ops.preprocess(images, config.size, config.mean, config.std, config.rescale_factor, threads=threads)
    return cast(np.ndarray, pixels)  # a numpy array whenever no `out` is given

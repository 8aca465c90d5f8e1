"""The images a TensorRT int8 engine is calibrated on: a folder's image files, an even selection
of them, a hash of exactly what they are, and their preprocessed pixels.

The engines read no files: the segmenter turns a folder into a `Calibration` (hash + pixels on
demand) with `calibration_images(...).for_engine(preprocess)`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engines import Calibration
from ..ops.image_processor import PreprocessConfig, preprocess_images
from ..ops.validation import load_image
from .sources import collect_image_paths

DEFAULT_CALIBRATION_COUNT = 64


@dataclass(frozen=True)
class CalibrationImages:
    """The images an int8 engine is calibrated on, and a hash of exactly what they are."""

    folder: Path
    paths: tuple[Path, ...]
    size: int
    sha256: str

    def pixels(self, preprocess: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> torch.Tensor:
        """`(count, 3, size, size)` float32 pixel values, preprocessed as the segmenter does.

        `preprocess`: RGB arrays -> pixel values (the segmenter's own, with its mean and std);
        default: `preprocess_images` with CLIPSeg's processor settings at `size`.
        """
        if preprocess is None:
            config = PreprocessConfig(size=self.size)
            preprocess = functools.partial(preprocess_images, config=config)
        images = [load_image(path) for path in self.paths]
        return torch.from_numpy(np.ascontiguousarray(preprocess(images)))

    def for_engine(self, preprocess: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> Calibration:
        """What `create_engine` takes: this set's hash, and its pixels when a build needs them."""
        return Calibration(self.sha256, functools.partial(self.pixels, preprocess))


def calibration_images(folder: str | Path, count: int = DEFAULT_CALIBRATION_COUNT, size: int = 352) -> CalibrationImages:
    """Up to `count` image files of `folder` (recursively, sorted by path) and their sha256.

    When the folder holds more than `count`, an evenly spaced selection of the sorted list is
    taken (deterministic, and more varied than the first `count` of a folder of video frames).
    The sha256 covers the count, the size, and each chosen file's path relative to the folder
    and its bytes, so renaming, editing, adding or removing a chosen image changes the key.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"the calibration image count must be a positive int, got {count!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"the calibration image size must be a positive int, got {size!r}")
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"calibration folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"calibration images must be a folder of images, {root} is not a folder")
    found = [Path(path) for path in collect_image_paths([root]).images]
    if not found:
        raise ValueError(
            f"calibration folder {root} holds no image files (looked for extensions Pillow opens, recursively); "
            "int8 calibration needs a few dozen images like those you will segment"
        )
    if len(found) > count:
        step = len(found) / count
        found = [found[int(i * step)] for i in range(count)]
    digest = hashlib.sha256(f"fastclipseg-calibration:{count}:{size};".encode())
    for path in found:
        name = path.relative_to(root).as_posix().encode()
        digest.update(len(name).to_bytes(8, "little") + name)
        data = path.read_bytes()
        digest.update(len(data).to_bytes(8, "little") + data)
    return CalibrationImages(folder=root, paths=tuple(found), size=size, sha256=digest.hexdigest())


__all__ = ["DEFAULT_CALIBRATION_COUNT", "CalibrationImages", "calibration_images"]

"""Calibration sets for TensorRT int8 (`fastclipseg.streams.calibration`): which files, their hash,
their pixels; the engine gets only the hash and the pixels (engines read no image files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastclipseg.streams.calibration import calibration_images
from helpers.tiny_models import TINY_IMAGE_SIZE
from PIL import Image


def _write_images(folder: Path, names: list[str], size: int = 20) -> None:
    for index, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size + index, 3), 10 * index, dtype=np.uint8)).save(path)


def test_calibration_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        calibration_images(tmp_path / "absent")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        calibration_images(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no image files"):
        calibration_images(empty)
    with pytest.raises(ValueError, match="count"):
        calibration_images(tmp_path, count=0)


def test_calibration_listing_and_hash(tmp_path):
    _write_images(tmp_path, ["b.png", "a.jpg", "sub/c.png", "d.png"])
    (tmp_path / "readme.md").write_text("skipped")
    calib = calibration_images(tmp_path, count=10, size=64)
    assert [p.relative_to(tmp_path).as_posix() for p in calib.paths] == ["a.jpg", "b.png", "d.png", "sub/c.png"]
    assert len(calib.sha256) == 64
    assert calibration_images(tmp_path, count=10, size=64).sha256 == calib.sha256
    assert calibration_images(tmp_path, count=10, size=32).sha256 != calib.sha256
    few = calibration_images(tmp_path, count=2, size=64)
    assert [p.name for p in few.paths] == ["a.jpg", "d.png"]  # evenly spaced over the sorted list
    assert few.sha256 != calib.sha256

    _write_images(tmp_path, ["b.png"], size=21)  # edit one image's contents
    edited = calibration_images(tmp_path, count=10, size=64).sha256
    assert edited != calib.sha256
    (tmp_path / "b.png").rename(tmp_path / "e.png")  # same bytes, another name
    assert calibration_images(tmp_path, count=10, size=64).sha256 not in (edited, calib.sha256)


def test_calibration_pixels(tmp_path):
    _write_images(tmp_path, ["a.png", "b.png", "c.png"])
    pixels = calibration_images(tmp_path, count=2, size=TINY_IMAGE_SIZE).pixels()
    assert pixels.shape == (2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE) and pixels.dtype == torch.float32
    custom = calibration_images(tmp_path, count=1, size=8).pixels(lambda images: np.zeros((len(images), 3, 8, 8), np.float32))
    assert custom.shape == (1, 3, 8, 8)


def test_a_calibration_set_gives_the_engine_its_hash_and_pixels_on_demand(tmp_path):
    _write_images(tmp_path, ["a.png", "b.png"])
    images = calibration_images(tmp_path, count=2, size=8)
    calls = []

    def preprocess(arrays):
        calls.append(len(arrays))
        return np.ones((len(arrays), 3, 8, 8), np.float32)

    calibration = images.for_engine(preprocess)
    assert calibration.sha256 == images.sha256 and calls == []  # nothing read until a build asks
    assert calibration.pixels().shape == (2, 3, 8, 8) and calls == [2]

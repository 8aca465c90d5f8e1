"""The connected-components kernels (`fastclipseg.ops.instances`, issue 18): labels identical to
scipy.ndimage.label on random masks of odd sizes, measures equal to numpy's, and clear errors."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from scipy import ndimage

instances = importlib.import_module("fastclipseg.ops.instances")

STRUCTURES = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}
SIZES = [(1, 1), (1, 57), (63, 1), (2, 3), (17, 29), (101, 67), (256, 255)]


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("density", [0.2, 0.5, 0.8])
def test_labels_equal_scipy(connectivity, size, density):
    rng = np.random.default_rng(hash((connectivity, size, density)) % 2**32)
    mask = rng.random(size) < density
    labels, count = instances.label(mask, connectivity)
    want, want_count = ndimage.label(mask, structure=STRUCTURES[connectivity])
    assert labels.dtype == np.int32 and labels.shape == mask.shape
    assert count == want_count
    np.testing.assert_array_equal(labels, want)


def test_smooth_blobs_and_layouts():
    """Blobs like a model's masks, given as uint8, Fortran order and a strided view."""
    rng = np.random.default_rng(5)
    blobs = ndimage.gaussian_filter(rng.random((240, 320)), 6) > 0.5
    want, want_count = ndimage.label(blobs, structure=STRUCTURES[8])
    assert want_count > 3
    for mask in (blobs.astype(np.uint8) * 255, np.asfortranarray(blobs), np.pad(blobs, 1)[1:-1, 1:-1]):
        labels, count = instances.label(mask)
        assert count == want_count
        np.testing.assert_array_equal(labels, want)


def test_measures_equal_numpy():
    rng = np.random.default_rng(9)
    mask = ndimage.gaussian_filter(rng.random((123, 77)), 3) > 0.52
    labels, count = instances.label(mask, 4)
    area, bbox = instances.measure(labels, count)
    assert area.shape == (count,) and bbox.shape == (count, 4)
    for k in range(1, count + 1):
        ys, xs = np.nonzero(labels == k)
        assert area[k - 1] == len(ys)
        assert bbox[k - 1].tolist() == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_empty_masks():
    for shape in [(0, 5), (4, 0), (3, 3)]:
        labels, count = instances.label(np.zeros(shape, bool))
        assert count == 0 and labels.shape == shape and not labels.any()
        area, bbox = instances.measure(labels, count)
        assert area.shape == (0,) and bbox.shape == (0, 4)


@pytest.mark.parametrize(("mask", "connectivity", "error", "message"), [
    (np.ones((3, 3), bool), 6, ValueError, "connectivity must be 4 or 8, got 6"),
    (np.ones((3, 3), bool), True, ValueError, "connectivity must be 4 or 8"),
    (np.ones((3, 3), np.float32), 8, TypeError, "mask dtype must be bool or uint8, got float32"),
    (np.ones((2, 3, 3), bool), 8, ValueError, "mask must be 2-D (height, width), got shape (2, 3, 3)"),
    ([[1, 0], [0, 1]], 8, TypeError, "mask must be a 2-D numpy.ndarray of bool or uint8, got list"),
])
def test_bad_label_arguments(mask, connectivity, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        instances.label(mask, connectivity)


def test_bad_measure_arguments():
    labels = np.array([[0, 1], [3, 0]], np.int32)
    with pytest.raises(ValueError, match="label 3 at row 1, column 0 is outside 0..2"):
        instances.measure(labels, 2)
    with pytest.raises(TypeError, match="labels dtype must be int32, got int64"):
        instances.measure(labels.astype(np.int64), 3)
    with pytest.raises(ValueError, match="count must be >= 0"):
        instances.measure(labels, -1)


@pytest.mark.parametrize("size", SIZES)
def test_each_components_rle_equals_encoding_its_mask(size):
    """`encode` (one column-major pass) gives, per component, what encoding its own mask gives."""
    from fastclipseg.ops import rle as coco_rle

    rng = np.random.default_rng(sum(size))
    mask = rng.random(size) < 0.45
    labels, count = instances.label(mask, 4)
    encoded = instances.encode(labels, count)
    assert len(encoded) == count
    for k in range(1, count + 1):
        assert encoded[k - 1] == coco_rle.encode(labels == k)
    # A number no pixel carries encodes the empty mask; labels out of range are refused.
    assert instances.encode(labels, count + 1)[-1] == coco_rle.encode(np.zeros(size, bool))
    if count > 1:
        with pytest.raises(ValueError, match="outside 0.."):
            instances.encode(labels, count - 1)

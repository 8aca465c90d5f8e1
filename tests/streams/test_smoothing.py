"""Temporal smoothing: less flicker between consecutive masks, at most one frame of delay (smooth=0.5)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from fastclipseg.streams.smoothing import LogitSmoother, check_smoothing


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def flicker_and_lag(masks: list[np.ndarray], truth: list[np.ndarray], max_shift: int = 3) -> tuple[float, int, float]:
    """Mean IoU between consecutive masks; the delay (frames) at which masks best match the truth, and that IoU."""
    consecutive = float(np.mean([iou(a, b) for a, b in zip(masks, masks[1:])]))
    start = max_shift + 2
    by_shift = {s: float(np.mean([iou(masks[t], truth[t - s]) for t in range(start, len(masks))])) for s in range(max_shift + 1)}
    lag = max(by_shift, key=by_shift.__getitem__)
    return consecutive, lag, by_shift[lag]


def moving_disc_logits(frames: int, size: int = 64, noise: float = 3.0, seed: int = 0):
    """Logits +3 inside a disc crossing the frame, -3 outside, plus independent per-frame noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    radius = size / 6
    for index in range(frames):
        cx = radius + (size - 2 * radius) * index / (frames - 1)
        disc = (yy - size / 2) ** 2 + (xx - cx) ** 2 <= radius**2
        logits = np.where(disc, 3.0, -3.0) + rng.normal(0, noise, (size, size))
        yield logits[None].astype(np.float32), disc


def test_moving_average_formula_and_restore():
    smoother = LogitSmoother(0.25)
    a, b, c = (np.full((2, 3, 3), v, np.float32) for v in (4.0, 0.0, 8.0))
    np.testing.assert_array_equal(smoother(a), a)  # the first frame passes unchanged
    np.testing.assert_allclose(smoother(b), 3.0)  # 0.25 * 0 + 0.75 * 4
    state = smoother.state.copy()
    np.testing.assert_allclose(smoother(c), 0.25 * 8 + 0.75 * 3)
    resumed = LogitSmoother(0.25)
    resumed.restore(state)
    np.testing.assert_array_equal(resumed(c), smoother.state)  # bit for bit where the first one went on
    # Another prompt count restarts the average.
    np.testing.assert_array_equal(smoother(np.ones((1, 3, 3), np.float32)), 1.0)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan")])
def test_bad_smoothing_values(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_smoothing(bad)
    with pytest.raises(TypeError):
        check_smoothing("0.5")
    assert check_smoothing(None) is None and check_smoothing(1) is None and check_smoothing(0.5) == 0.5


def test_smoothing_cuts_flicker_with_one_frame_of_delay_on_logits():
    data = list(moving_disc_logits(40))
    truth = [disc for _, disc in data]
    raw = [logits[0] > 0 for logits, _ in data]
    smoother = LogitSmoother(0.5)
    smoothed = [smoother(logits)[0] > 0 for logits, _ in data]
    raw_flicker, raw_lag, raw_iou = flicker_and_lag(raw, truth)
    smooth_flicker, smooth_lag, smooth_iou = flicker_and_lag(smoothed, truth)
    truth_flicker = float(np.mean([iou(a, b) for a, b in zip(truth, truth[1:])]))
    assert raw_lag == 0
    # Consecutive masks agree far more (the object's own motion caps this at truth_flicker) ...
    assert smooth_flicker > raw_flicker + 0.1 and smooth_flicker <= truth_flicker + 0.02
    # ... the masks follow the object at most one frame late, and match it better there.
    assert smooth_lag <= 1 and smooth_iou > raw_iou


@pytest.fixture(scope="module")
def shapes_module(shared_data):
    spec = importlib.util.spec_from_file_location("shapes", shared_data / "shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoothing_on_a_real_model_video(shared_data, shapes_module):
    """clipseg-shapes on a red circle crossing a grey frame, with heavy per-frame sensor noise."""
    from fastclipseg import FastSegmenter

    segmenter = FastSegmenter.from_pretrained(shared_data / "clipseg-shapes")
    rng = np.random.default_rng(0)
    size, radius, count = 352, 50, 30
    yy, xx = np.mgrid[0:size, 0:size]
    frames, truth = [], []
    for index in range(count):
        cx = radius + (size - 2 * radius) * index / (count - 1)
        disc = (yy - size / 2) ** 2 + (xx - cx) ** 2 <= radius**2
        image = np.full((size, size, 3), (100, 110, 120), np.float32)
        image[disc] = shapes_module.COLORS["red"]
        frames.append(np.clip(image + rng.normal(0, 60, image.shape), 0, 255).astype(np.uint8))
        truth.append(disc)
    outcome = {}
    for smooth in (None, 0.5):
        masks = [r.masks[0] for r in segmenter.segment_video(frames, "a red circle", smooth=smooth)]
        outcome[smooth] = flicker_and_lag(masks, truth)
    (raw_flicker, raw_lag, raw_iou), (smooth_flicker, smooth_lag, smooth_iou) = outcome[None], outcome[0.5]
    assert raw_lag == 0 and raw_iou > 0.7  # the model finds the circle in every frame
    assert smooth_flicker > raw_flicker + 0.08, outcome
    assert smooth_lag <= 1 and smooth_iou >= raw_iou - 0.03, outcome

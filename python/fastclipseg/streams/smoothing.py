"""Temporal smoothing of video logits: an exponential moving average, off by default."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np


def check_smoothing(smooth: object) -> float | None:
    """None (off) or the weight of the newest frame, a number in (0, 1]; 1 is the same as off."""
    if smooth is None:
        return None
    if isinstance(smooth, bool) or not isinstance(smooth, Real):
        raise TypeError(f"smooth must be None or a number in (0, 1], got {type(smooth).__name__}: {smooth!r}")
    value = float(smooth)
    if math.isnan(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"smooth must be None or a number in (0, 1] (the newest frame's weight), got {smooth!r}")
    return None if value == 1.0 else value


class LogitSmoother:
    """`s_n = a * x_n + (1 - a) * s_(n-1)` over each frame's `(K, h, w)` logits, `s_0 = x_0`.

    `a` (`smooth`) is the newest frame's weight: lower is steadier. Noise that is independent
    from frame to frame shrinks in variance by `a / (2 - a)` (a = 0.5: to a third); an object
    moving at constant speed is followed with a delay of `(1 - a) / a` frames (a = 0.5: one
    frame). Logits are averaged at the model's resolution, before upsampling, so the cost is
    small. A change in logit shape (another prompt count) restarts the average; `state` and
    `restore` let a resumed run continue exactly where it stopped.
    """

    def __init__(self, smooth: float) -> None:
        checked = check_smoothing(smooth)
        self.weight = 1.0 if checked is None else checked
        self.state: np.ndarray | None = None

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        current = np.asarray(logits, dtype=np.float32)
        if self.state is None or self.state.shape != current.shape:
            self.state = current.copy()
        else:
            # Two float32 operations in a fixed order: the same frames give the same bits in
            # every run, which a resumed run relies on.
            self.state = np.float32(self.weight) * current + np.float32(1.0 - self.weight) * self.state
        return self.state

    def restore(self, state: np.ndarray) -> None:
        """Continue from a saved state (the smoothed logits of the last frame written)."""
        self.state = np.array(state, dtype=np.float32, copy=True)

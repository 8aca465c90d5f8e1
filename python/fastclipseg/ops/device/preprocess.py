"""Pre-processing as torch operations on the frames' device: uint8 frames -> CLIPSeg network input.

`TorchPreprocessor` computes what `fastclipseg.ops.preprocess` (the native CPU kernel) computes,
bit for bit, with plain torch operations, so a GPU pipeline can upload the uint8 frames and
preprocess them on the device:

1. Pillow's ``Image.resize((S, S), BILINEAR)`` (``libImaging/Resample.c``): per axis, the windows
   and double-precision weights of ``precompute_coeffs`` turned into 22-bit fixed-point
   coefficients (`resize_weights`); each of the two passes is a float64 matrix product of the
   integer levels with the integer coefficients (exact: every partial sum is an integer below
   255 * 2^22 * 2 << 2^53, so the summation order cannot matter), then Pillow's
   ``(sum + 2^21) >> 22`` and clip to 0..255, which gives the 8-bit intermediate image the
   second pass reads. The order of the passes follows the installed Pillow's rule, probed once
   by `fastclipseg.ops.preprocess` (see `vertical_first`).
2. ``(x * rescale_factor - mean) / std`` through the same ``(3, 256)`` float32 table of levels as
   the native kernel and the transformers processor (``fastclipseg.ops.image_processor.value_table``).

Frames of one size are resized together (batched matrix products); frames of different sizes are
grouped by size. The float64 products run on any device (CUDA has native float64 GEMMs; no
TF32 is involved in float64).
"""

from __future__ import annotations

import functools
import math
import operator
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from ... import _core
from ..image_processor import PreprocessConfig, value_table
from ..preprocess import (
    HORIZONTAL_FIRST,
    PILLOW_12,
    PILLOW_13,
    pass_order_of_installed_pillow,
)

__all__ = [
    "PRECISION_BITS",
    "ResizeWeights",
    "TorchPreprocessor",
    "resize_matrix",
    "resize_weights",
    "vertical_first",
]

#: Pillow's fixed point for 8-bit images: 8 bits of result, 2 spare bits (``32 - 8 - 2``).
PRECISION_BITS = 32 - 8 - 2
_HALF = float(1 << (PRECISION_BITS - 1))
_INV_ONE = 1.0 / float(1 << PRECISION_BITS)  # a power of two: multiplying by it is exact

#: Largest input side accepted (the native kernel's) and output side.
MAX_SIDE = _core.PREPROCESS_MAX_SIDE
MAX_SIZE = 1 << 15

# Frames of one size are resized in chunks whose float64 copy stays under this many bytes.
_CHUNK_BYTES = 256 << 20

_PASS_ORDERS = {
    PILLOW_13: "Pillow >= 13",
    PILLOW_12: "Pillow 12",
    HORIZONTAL_FIRST: "horizontal first",
}


class ResizeWeights(NamedTuple):
    """Pillow's bilinear coefficients for one axis (``in_size -> out_size``), CPU tensors.

    Output pixel ``i`` is ``sum_t source[start[i] + t] * coeffs[i, t]`` for ``t < taps[i]``,
    then ``(sum + 2^21) >> 22`` clipped to 0..255. ``coeffs`` is Pillow's ``kk`` array
    (``out_size x ksize``, zero past each window), int64. Shared by a cache: do not modify.
    """

    start: torch.Tensor  # (out,) int64: first source index of each window (Pillow's xmin)
    taps: torch.Tensor  # (out,) int64: window length (Pillow's xmax after "-= xmin")
    coeffs: torch.Tensor  # (out, ksize) int64 fixed-point coefficients

    def matrix(self, in_size: int) -> torch.Tensor:
        """The dense ``(out, in_size)`` int64 matrix M with ``resampled = M @ source`` (before rounding)."""
        out_size, ksize = self.coeffs.shape
        m = torch.zeros((out_size, in_size + ksize), dtype=torch.int64)
        cols = self.start[:, None] + torch.arange(ksize)[None, :]
        m.scatter_(1, cols, self.coeffs)  # zero coefficients past a window land on in-range or pad columns
        return m[:, :in_size].contiguous()


def _check_side(name: str, value: Any, limit: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not 1 <= value <= limit:
        raise ValueError(f"{name} must be in [1, {limit}], got {value}")
    return value


@functools.lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int) -> ResizeWeights:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the bilinear filter.

    Replicates ``libImaging/Resample.c`` operation by operation in float64 (numpy's elementwise
    float64 arithmetic is IEEE, one rounding per operation, no fused multiply-add, as Pillow's
    generic build): ``scale = float(in) / out``, ``filterscale = max(scale, 1)``,
    ``support = 1.0 * filterscale``, ``center = (i + 0.5) * scale``, windows
    ``[int(center - support + 0.5), int(center + support + 0.5))`` clipped to the input, weights
    ``bilinear((x + xmin - center + 0.5) * (1 / filterscale))`` summed left to right and divided
    by their sum, then ``int(w * 2^22 + 0.5)`` (``int(-0.5 + w * 2^22)`` for negative w: round
    half away from zero, truncation in C). Cached per ``(in_size, out_size)``.
    """
    in_size = _check_side("in_size", in_size, MAX_SIDE)
    out_size = _check_side("out_size", out_size, MAX_SIZE)
    # Pillow takes the box as floats: in1 - in0 = float32(in) - 0.0f, exact below 2^24.
    scale = float(np.float32(in_size)) / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = math.ceil(support) * 2 + 1
    ss = 1.0 / filterscale

    xx = np.arange(out_size, dtype=np.float64)
    center = 0.0 + (xx + 0.5) * scale
    xmin = np.trunc(center - support + 0.5).astype(np.int64)  # C's (int): toward zero
    xmin = np.maximum(xmin, 0)
    xmax = np.trunc(center + support + 0.5).astype(np.int64)
    xmax = np.minimum(xmax, in_size) - xmin

    taps = np.arange(ksize, dtype=np.int64)
    valid = taps[None, :] < xmax[:, None]
    # (x + xmin) is an int addition in C, converted to double before "- center".
    arg = (((taps[None, :] + xmin[:, None]).astype(np.float64) - center[:, None]) + 0.5) * ss
    arg = np.abs(arg)
    w = np.where(valid & (arg < 1.0), 1.0 - arg, 0.0)
    ww = np.zeros(out_size, dtype=np.float64)
    for t in range(ksize):  # left to right, as Pillow's loop (np.sum would sum pairwise)
        ww = ww + w[:, t]
    w = np.where(ww[:, None] != 0.0, w / np.where(ww == 0.0, 1.0, ww)[:, None], w)
    one = float(1 << PRECISION_BITS)
    k = np.where(w < 0, np.trunc(-0.5 + w * one), np.trunc(0.5 + w * one)).astype(np.int64)
    k[~valid] = 0
    return ResizeWeights(torch.from_numpy(xmin), torch.from_numpy(xmax), torch.from_numpy(k))


def resize_matrix(in_size: int, out_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`resize_weights` as a dense ``(out_size, in_size)`` float64 matrix on `device` (cached)."""
    return _matrix(int(in_size), int(out_size), torch.device(device))


_matrix_lock = threading.Lock()


@functools.lru_cache(maxsize=64)
def _matrix_cached(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    return resize_weights(in_size, out_size).matrix(in_size).to(device=device, dtype=torch.float64)


def _matrix(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    with _matrix_lock:
        return _matrix_cached(in_size, out_size, device)


def vertical_first(height: int, width: int, size: int, pass_order: int) -> bool:
    """Whether Pillow runs the vertical pass first for a ``height x width -> size x size`` resize.

    The rule of the native kernel (``csrc/kernels/preprocess.cpp``, ``PassOrder``):

    - ``0`` (Pillow >= 13): when the height shrinks more than twice as much as the width,
      ``h - size > 0 and h - size > 2 * (w - size)``;
    - ``1`` (Pillow 12): ``h > 100 * w and size < h`` (a height-only resize, then a width-only one);
    - ``2`` (Pillow <= 11): never.

    Which rule the installed Pillow follows is probed once by ``fastclipseg.ops.preprocess``
    (``pass_order_of_installed_pillow``); `TorchPreprocessor` uses that probe by default.
    """
    if pass_order == PILLOW_13:
        dy, dx = height - size, width - size
        return dy > 0 and dy > 2 * dx
    if pass_order == PILLOW_12:
        return height > 100 * width and size < height
    if pass_order == HORIZONTAL_FIRST:
        return False
    raise ValueError(f"pass_order must be 0 (Pillow >= 13), 1 (Pillow 12) or 2 (horizontal first), got {pass_order!r}")


def _round_clip(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8((sum + 2^21) >> 22)`` on exact integer sums held in float64 (result: levels, float64)."""
    return torch.floor((sums + _HALF) * _INV_ONE).clamp_(0.0, 255.0)


class TorchPreprocessor:
    """uint8 RGB frames -> ``(N, 3, size, size)`` float32 network input, on the frames' device.

    Bit-identical to ``fastclipseg.ops.preprocess(frames, size, mean, std, rescale_factor)``
    (float32 output) on any device.

    Args:
        size: output side S (CLIPSeg: 352).
        mean, std: per-channel normalisation (3 values each; cast to float32 as the processor does).
        rescale_factor: multiplies the uint8 levels (in float64) before normalising.
        pass_order: which Pillow's rule orders the two resampling passes: ``None`` (default)
            follows the installed Pillow, as the native kernel does (``ops.preprocess.pass_order_of_installed_pillow``);
            ``0`` Pillow >= 13, ``1`` Pillow 12, ``2`` horizontal first (Pillow <= 11).

    Raises:
        TypeError / ValueError: bad size, mean, std, rescale_factor or pass_order.
    """

    def __init__(
        self,
        size: int = 352,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        rescale_factor: float = 1 / 255,
        pass_order: int | None = None,
    ) -> None:
        self.size = _check_side("size", size, MAX_SIZE)
        mean_t, std_t = _three("mean", mean), _three("std", std)
        if isinstance(rescale_factor, bool) or not isinstance(rescale_factor, (int, float, np.floating, np.integer)):
            raise TypeError(f"rescale_factor must be a float, got {type(rescale_factor).__name__}")
        if not math.isfinite(float(rescale_factor)):
            raise ValueError(f"rescale_factor must be finite, got {rescale_factor}")
        for c, s in enumerate(std_t):
            if np.float32(s) == 0 or not np.isfinite(np.float32(s)):
                raise ValueError(f"std[{c}] = {s} is {'zero' if np.float32(s) == 0 else 'infinite'} in float32")
        for c, m in enumerate(mean_t):
            if not np.isfinite(np.float32(m)):
                raise ValueError(f"mean[{c}] = {m} is not finite in float32")
        self.mean, self.std, self.rescale_factor = mean_t, std_t, float(rescale_factor)
        config = PreprocessConfig(size=self.size, mean=mean_t, std=std_t, rescale_factor=self.rescale_factor)
        with np.errstate(all="ignore"):
            table = value_table(config)
        if not np.isfinite(table).all():
            raise ValueError("rescale_factor, mean and std give non-finite values for some levels")
        self._table_cpu = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32).reshape(-1))
        self._tables: dict[torch.device, torch.Tensor] = {}
        if pass_order is None:
            pass_order = pass_order_of_installed_pillow()
        if (
            isinstance(pass_order, bool)
            or not isinstance(pass_order, (int, np.integer))
            or int(pass_order) not in _PASS_ORDERS
        ):
            raise ValueError(
                f"pass_order must be None, 0 (Pillow >= 13), 1 (Pillow 12) or 2 (horizontal first), got {pass_order!r}"
            )
        self.pass_order = int(pass_order)

    def __repr__(self) -> str:
        return (
            f"TorchPreprocessor(size={self.size}, mean={self.mean}, std={self.std}, "
            f"rescale_factor={self.rescale_factor}, pass_order={self.pass_order} ({_PASS_ORDERS[self.pass_order]}))"
        )

    @property
    def table(self) -> torch.Tensor:
        """The ``(3, 256)`` float32 value table on the CPU (level -> normalised value per channel)."""
        return self._table_cpu.view(3, 256)

    def __call__(self, frames: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Preprocess `frames` into a new ``(N, 3, size, size)`` float32 tensor on their device.

        Args:
            frames: a ``(N, H, W, 3)`` uint8 tensor, one ``(H, W, 3)`` uint8 tensor (N = 1), or a
                list/tuple of ``(H, W, 3)`` uint8 tensors of any sizes, all on one device (numpy
                arrays are taken as CPU tensors). Any strides.

        Raises:
            TypeError: a frame is not a tensor or not uint8 (the message names its dtype).
            ValueError: a frame is not 3-D, has other than 3 channels, no pixels or a side over
                2^20; frames on different devices.
        """
        return self._run(_as_frames(frames), normalise=True)

    def resize(self, frames: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The ``(N, size, size, 3)`` uint8 resized frames (``ops.resize``'s pixels), on their device."""
        return self._run(_as_frames(frames), normalise=False)

    # ------------------------------------------------------------------ internals

    def _table(self, device: torch.device) -> torch.Tensor:
        table = self._tables.get(device)
        if table is None:
            table = self._table_cpu.to(device)
            self._tables[device] = table
        return table

    def _run(self, frames: _Frames, normalise: bool) -> torch.Tensor:
        s, device = self.size, frames.device
        if normalise:
            out = torch.empty((frames.count, 3, s, s), dtype=torch.float32, device=device)
        else:
            out = torch.empty((frames.count, s, s, 3), dtype=torch.uint8, device=device)
        for (h, w), indices, batch in frames.groups():
            chunk = max(1, _CHUNK_BYTES // (3 * h * w * 8))
            for lo in range(0, len(indices), chunk):
                part = indices[lo : lo + chunk]
                levels = self._resize_levels(batch(lo, lo + chunk), h, w, device)  # (n, 3, S, S) float64
                values = self._normalise(levels, device) if normalise else levels.to(torch.uint8).permute(0, 2, 3, 1)
                if isinstance(part, range):
                    out[part.start : part.stop] = values
                else:
                    # Scattered frames: a copy each; an index tensor would be a blocking upload.
                    for row, index in enumerate(part):
                        out[index] = values[row]
        return out

    def _resize_levels(self, batch: torch.Tensor, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``(n, H, W, 3)`` uint8 -> ``(n, 3, S, S)`` float64 holding the resized uint8 levels."""
        s = self.size
        x = batch.permute(0, 3, 1, 2).to(torch.float64, memory_format=torch.contiguous_format)  # (n, 3, H, W)
        mh = _matrix(w, s, device)  # (S, W)
        mv = _matrix(h, s, device)  # (S, H)
        if vertical_first(h, w, s, self.pass_order):
            mid = _round_clip(torch.matmul(mv, x))  # (n, 3, S, W): the 8-bit intermediate
            return _round_clip(torch.matmul(mid, mh.T))
        mid = _round_clip(torch.matmul(x, mh.T))  # (n, 3, H, S): the 8-bit intermediate
        return _round_clip(torch.matmul(mv, mid))

    def _normalise(self, levels: torch.Tensor, device: torch.device) -> torch.Tensor:
        offsets = torch.arange(0, 768, 256, device=device, dtype=torch.int64).view(1, 3, 1, 1)
        return self._table(device)[levels.to(torch.int64) + offsets]


def _three(name: str, values: Any) -> tuple[float, float, float]:
    try:
        items = [float(v) for v in values]
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 3 floats, got {type(values).__name__}") from None
    if len(items) != 3:
        raise ValueError(f"{name} must have 3 values (one per channel), got {len(items)}")
    for c, v in enumerate(items):
        if not math.isfinite(v):
            raise ValueError(f"{name}[{c}] must be finite, got {v}")
    return items[0], items[1], items[2]


class _Frames:
    """Validated frames: a (N, H, W, 3) batch tensor, or a list of (H, W, 3) tensors grouped by size."""

    def __init__(
        self, device: torch.device, batch: torch.Tensor | None = None, items: list[torch.Tensor] | None = None
    ):
        self.device, self.batch, self.items = device, batch, items
        self.count = batch.shape[0] if batch is not None else len(items or [])

    def groups(self) -> Iterator[tuple[tuple[int, int], Sequence[int], Callable[[int, int], torch.Tensor]]]:
        """Yields ``((H, W), output indices, batch(lo, hi) -> (n, H, W, 3) tensor of those indices[lo:hi])``."""
        if self.batch is not None:
            if self.count:
                b = self.batch
                yield (b.shape[1], b.shape[2]), range(self.count), lambda lo, hi: b[lo:hi]
            return
        items = self.items or []
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(items):
            by_size.setdefault((frame.shape[0], frame.shape[1]), []).append(i)
        for hw, indices in by_size.items():
            chosen = [items[i] for i in indices]
            # Ascending and unique: consecutive exactly when they span their count (written as slices).
            rows = range(indices[0], indices[-1] + 1) if indices[-1] - indices[0] == len(indices) - 1 else indices
            yield hw, rows, functools.partial(_stack, chosen)


def _stack(frames: list[torch.Tensor], lo: int, hi: int) -> torch.Tensor:
    part = frames[lo:hi]
    return part[0][None] if len(part) == 1 else torch.stack(part)


def _as_frames(frames: Any) -> _Frames:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if isinstance(frames, torch.Tensor):
        if frames.dim() == 4:
            _check_frame(frames, 0, batch=True)
            return _Frames(frames.device, batch=frames)
        if frames.dim() == 3:
            _check_frame(frames, 0)
            return _Frames(frames.device, items=[frames])
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames has dtype {frames.dtype}; expected torch.uint8")
        raise ValueError(
            f"frames must be a (N, H, W, 3) batch, one (H, W, 3) frame or a list of frames; "
            f"got a {frames.dim()}-D tensor of shape {tuple(frames.shape)}"
        )
    if not isinstance(frames, (list, tuple)):
        raise TypeError(f"frames must be a torch.Tensor or a list of tensors, got {type(frames).__name__}")
    items = [torch.from_numpy(f) if isinstance(f, np.ndarray) else f for f in frames]
    device = None
    for i, frame in enumerate(items):
        _check_frame(frame, i)
        if device is None:
            device = frame.device
        elif frame.device != device:
            raise ValueError(f"frame #{i} is on {frame.device}, frame #0 on {device}; put all frames on one device")
    return _Frames(device if device is not None else torch.device("cpu"), items=items)


def _check_frame(frame: Any, index: int, batch: bool = False) -> None:
    name = "frames" if batch else f"frame #{index}"
    if not isinstance(frame, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(frame).__name__}")
    if frame.dtype != torch.uint8:
        raise TypeError(f"{name} has dtype {frame.dtype}; expected torch.uint8")
    shape = tuple(frame.shape)
    dims = shape[1:] if batch else shape
    if len(dims) != 3:
        raise ValueError(f"{name} has shape {shape}; expected {'(N, H, W, 3)' if batch else '(H, W, 3)'}")
    h, w, c = dims
    if c != 3:
        raise ValueError(f"{name} has {c} channels (shape {shape}); expected 3 (RGB)")
    if h == 0 or w == 0:
        raise ValueError(f"{name} is empty (height {h}, width {w})")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(f"{name} is {h} x {w}; height and width must be at most {MAX_SIDE}")

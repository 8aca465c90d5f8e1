"""Native image preprocessing: uint8 frames -> CLIPSeg network input, as the transformers processor.

`preprocess` computes what the transformers CLIPSeg image processor (``ViTImageProcessor``, PIL
backend) computes, in one native pass per image:

1. ``PIL.Image.resize((size, size), Image.BILINEAR)``, replicated bit for bit (Pillow's
   ``ImagingResample`` windows, 22-bit fixed-point coefficients, rounding, clipping and order of
   the two passes), so the resized uint8 pixels EQUAL Pillow's;
2. ``x * rescale_factor`` in float64, cast to float32, then ``(x - mean) / std`` in float32,
   through a per-channel table of the 256 levels, so the float32 output is bit-identical to the
   processor's ``pixel_values``.

Images are read in place through their strides (crops, strided and reversed views: no copy);
grey images are replicated to three channels, alpha is ignored, ``bgr=True`` swaps channels 0 and
2 on read (OpenCV frames). Work is split across images and output rows on ``threads`` native
threads with the GIL released; the result does not depend on the thread count.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from .. import _core

if TYPE_CHECKING:
    import torch

__all__ = [
    "HORIZONTAL_FIRST", "PILLOW_12", "PILLOW_13", "OutputDType", "pass_order_of_installed_pillow", "preprocess", "resize",
]

OutputDType = Literal["float32", "float16", "bfloat16"]

#: One image: ``(H, W)`` grey, ``(H, W, 3)`` RGB (or BGR with ``bgr=True``) or ``(H, W, 4)`` RGBA,
#: ``uint8``, any strides. Other array-likes (CPU torch tensors, PIL images) go through `np.asarray`.
ImageLike = npt.ArrayLike

_DTYPES = ("float32", "float16", "bfloat16")


def preprocess(
    images: ImageLike | Sequence[ImageLike],
    size: int = 352,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    rescale_factor: float = 1 / 255,
    *,
    out: np.ndarray | torch.Tensor | None = None,
    dtype: OutputDType | str | Any = "float32",
    bgr: bool = False,
    threads: int | None = None,
) -> np.ndarray | torch.Tensor:
    """Resize and normalise uint8 images into an ``(N, 3, size, size)`` network input.

    Equivalent to ``ViTImageProcessorPil(size={"height": size, "width": size}, image_mean=mean,
    image_std=std, rescale_factor=rescale_factor)(images=..., return_tensors="np")["pixel_values"]``
    (bit-identical for float32), several times faster.

    Args:
        images: one image or a list/tuple of images of any sizes. Each is ``uint8``, shaped
            ``(H, W)`` (grey, replicated to 3 channels), ``(H, W, 1)``, ``(H, W, 3)`` or
            ``(H, W, 4)`` (alpha ignored), with any strides. Non-numpy array-likes go through
            `np.asarray`.
        size: output side S (CLIPSeg: 352).
        mean, std: per-channel normalisation, cast to float32 as the processor does.
        rescale_factor: multiplies the uint8 levels (in float64) before normalising.
        out: optional destination, filled in place and returned: a C-contiguous, writeable
            numpy array of shape ``(N, 3, S, S)`` and dtype float32 / float16 / uint16 (bfloat16
            bit patterns), or a CPU torch tensor of that shape and dtype float32 / float16 /
            bfloat16.
        dtype: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"`` (numpy/torch dtypes of
            those names also work). float16/bfloat16 are the float32 values rounded to nearest
            even, equal to torch's ``.to(torch.float16 / torch.bfloat16)``. numpy has no
            bfloat16, so a bfloat16 result allocated here is a ``uint16`` array of bit
            patterns: ``torch.from_numpy(a).view(torch.bfloat16)`` reinterprets it without a copy.
        bgr: the images' channels are B, G, R (e.g. OpenCV); swapped on read.
        threads: native threads (default: the machine's hardware concurrency).

    Returns:
        ``out`` itself when given (the numpy array or torch tensor), otherwise a new numpy
        array of shape ``(N, 3, S, S)``; N = 1 for a single image.

    Raises:
        TypeError: an image is not uint8 (the message names its dtype), or an argument has the
            wrong type.
        ValueError: an image with an unsupported shape or no pixels; size < 1; bad mean/std
            (not 3 values, non-finite, zero std); an ``out`` of the wrong shape or dtype, not
            C-contiguous, read-only, on another device, or overlapping an image.
    """
    items = _as_image_list(images)
    size = _as_size(size)
    name = _dtype_name(dtype)
    target = out
    if out is not None and not isinstance(out, np.ndarray):
        out = _torch_numpy_view(out, name)
    result = _core.preprocess(
        items,
        size,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        float(rescale_factor),
        out,
        name,
        bool(bgr),
        threads,
        True,
        pass_order_of_installed_pillow(),
    )
    return result if target is None else target


def resize(image: ImageLike, size: int, *, bgr: bool = False) -> np.ndarray:
    """The ``(size, size, 3)`` uint8 RGB image, equal to PIL's bilinear resize.

    Returns exactly ``np.asarray(PIL.Image.fromarray(rgb).resize((size, size), Image.BILINEAR))``
    where ``rgb`` is the image as RGB (grey replicated, alpha dropped, BGR swapped when
    ``bgr=True``): the first step of `preprocess`, for tests and for callers who want the pixels.
    Accepts the same images as `preprocess` and raises the same errors.
    """
    arr = image if isinstance(image, np.ndarray) else np.asarray(image)
    return _core.preprocess_resize(arr, _as_size(size), bool(bgr), None, True, pass_order_of_installed_pillow())


def _as_image_list(images: Any) -> list[np.ndarray]:
    if isinstance(images, (list, tuple)):
        return [x if isinstance(x, np.ndarray) else np.asarray(x) for x in images]
    arr = images if isinstance(images, np.ndarray) else np.asarray(images)
    if arr.ndim == 4:
        raise ValueError(
            f"images is a 4-D array of shape {arr.shape}; pass one (H, W[, C]) image or a list of them "
            "(list(batch) makes views, no copy)"
        )
    return [arr]


def _as_size(size: Any) -> int:
    if isinstance(size, bool):
        raise TypeError("size must be an int, got bool")
    try:
        return operator.index(size)
    except TypeError:
        raise TypeError(f"size must be an int, got {type(size).__name__}") from None


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str):
        name = dtype
    elif str(dtype).startswith("torch."):
        name = str(dtype)[len("torch.") :]
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            raise TypeError(f"dtype must be 'float32', 'float16' or 'bfloat16', got {dtype!r}") from None
    if name not in _DTYPES:
        hint = " (bfloat16 output is stored as uint16 bit patterns: ask for dtype='bfloat16')" if name == "uint16" else ""
        raise ValueError(f"dtype must be 'float32', 'float16' or 'bfloat16', got {name!r}{hint}")
    return name


def _torch_numpy_view(out: Any, name: str) -> np.ndarray:
    """A numpy view of a CPU torch tensor `out` (bfloat16 as uint16 bit patterns); no copy."""
    import torch  # only when a tensor is given: numpy users never import torch here

    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a numpy.ndarray or a torch.Tensor, got {type(out).__name__}")
    if out.device.type != "cpu":
        raise ValueError(f"out must be a CPU tensor, got one on {out.device}")
    if out.requires_grad:
        raise ValueError("out requires grad; pass a tensor that does not (e.g. created under torch.no_grad())")
    wanted = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    if out.dtype != wanted:
        raise ValueError(f"out has dtype {out.dtype}; dtype={name!r} needs {wanted}")
    if out.dtype == torch.bfloat16:
        return out.view(torch.int16).numpy().view(np.uint16)
    return out.numpy()


# Two probes whose bilinear resizes differ with the order of Pillow's two passes:
# 24 x 2 -> 3 x 3 (vertical first in Pillow >= 13 only) and 301 x 2 -> 3 x 3 (vertical first in
# Pillow >= 12: its height exceeds 100 x its width).
_PROBE_13 = (np.arange(24 * 2 * 3).reshape(24, 2, 3) * 37 % 256).astype(np.uint8)
_PROBE_12 = (np.arange(301 * 2 * 3).reshape(301, 2, 3) * 53 % 256).astype(np.uint8)
# The orders of Pillow's two resampling passes, as the native kernel numbers them (shared with
# the device twin, `ops.device.preprocess`).
PILLOW_13, PILLOW_12, HORIZONTAL_FIRST = 0, 1, 2


@functools.cache
def pass_order_of_installed_pillow() -> int:
    """Which Pillow's rule for the order of the two resampling passes the installed Pillow follows.

    Pillow >= 13 runs the vertical pass first when the height shrinks more than twice as much as
    the width; Pillow 12 resizes the height first when it is over 100 times the width; earlier
    Pillow always runs the horizontal pass first. The order changes the 8-bit intermediate (a few
    pixels by 1), and the processor uses the installed Pillow, so match it: resize two tiny
    probes and compare, once.
    """

    def pil(probe: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(probe).resize((3, 3), Image.Resampling.BILINEAR))

    def ours(probe: np.ndarray, order: int) -> np.ndarray:
        return _core.preprocess_resize(probe, 3, False, 1, True, order)

    if np.array_equal(pil(_PROBE_13), ours(_PROBE_13, PILLOW_13)):
        return PILLOW_13
    if np.array_equal(pil(_PROBE_12), ours(_PROBE_12, PILLOW_12)):
        return PILLOW_12
    return HORIZONTAL_FIRST

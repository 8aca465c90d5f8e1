"""COCO run-length encoding (RLE) of binary masks, backed by native kernels.

Drop-in compatible with `pycocotools.mask` for the compressed format:

- `encode(mask)` gives ``{"size": [h, w], "counts": str}`` whose counts are
  byte-identical to ``pycocotools.mask.encode(np.asfortranarray(mask))["counts"]``
  (pycocotools returns ``bytes``; this returns ``str`` so the dict is
  JSON-ready, and ``counts.encode()`` gives the pycocotools value).
- `decode(rle)` gives what ``pycocotools.mask.decode`` gives for one RLE: an
  ``(h, w)`` ``uint8`` array of 0/1 in Fortran (column-major) order.
- `area(rle)` and `bbox(rle)` equal ``pycocotools.mask.area`` / ``toBbox``,
  computed from the counts without decoding the mask.

Masks are read in place through their strides (C order, Fortran order or any
view), must be ``bool`` or ``uint8`` (nonzero is foreground), and a mask with
no pixels encodes as counts ``"0"``. Malformed RLE input raises `ValueError`
(or `TypeError` for a wrong type) naming what was wrong; the native layer
re-validates everything it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, overload

import numpy as np

from . import _core

__all__ = ["RLE", "area", "bbox", "decode", "encode"]


class RLE(TypedDict):
    """A COCO compressed RLE as produced by `encode`."""

    size: list[int]
    counts: str


def encode(mask: np.ndarray) -> RLE | list[RLE]:
    """Encode a mask, or a batch of masks, as COCO compressed RLE.

    Args:
        mask: ``bool`` or ``uint8`` array, ``(H, W)`` for one mask or
            ``(K, H, W)`` for K masks of the same size; any memory layout.
            Array-likes (e.g. CPU torch tensors) go through `np.asarray`.

    Returns:
        One ``{"size": [H, W], "counts": str}`` dict for a 2-D mask, a list of
        K such dicts for a 3-D batch.

    Raises:
        TypeError: the dtype is not bool or uint8.
        ValueError: the array is not 2-D or 3-D.
    """
    arr = mask if isinstance(mask, np.ndarray) else np.asarray(mask)
    counts = _core.rle_encode(arr)
    if isinstance(counts, str):
        return {"size": [int(arr.shape[0]), int(arr.shape[1])], "counts": counts}
    size = [int(arr.shape[1]), int(arr.shape[2])]
    return [{"size": list(size), "counts": c} for c in counts]


def decode(rle: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Decode COCO RLE into a mask.

    Args:
        rle: ``{"size": [h, w], "counts": ...}`` where counts is the compressed
            ``str`` or ``bytes`` (as written by `encode` or pycocotools) or an
            uncompressed list of run lengths (COCO ``iscrowd`` style). A list
            of such dicts, all of one size, decodes as a batch.

    Returns:
        For one dict, an ``(h, w)`` ``uint8`` array of 0/1 in Fortran order,
        like ``pycocotools.mask.decode``. For a list of K dicts, a
        ``(K, h, w)`` ``uint8`` array (the layout `encode` takes; note that
        pycocotools returns ``(h, w, K)`` instead), each ``[k]`` Fortran-ordered.

    Raises:
        TypeError: `rle` or one of its fields has the wrong type.
        ValueError: missing keys, a bad size, counts with invalid characters,
            truncated, negative, or not summing to exactly ``h * w``; or a
            batch mixing sizes.
    """
    if isinstance(rle, Mapping):
        (h, w), counts = _parse(rle)
        return _core.rle_decode(counts, h, w)
    items = _as_list(rle, "decode")
    if not items:
        raise ValueError("decode: cannot decode an empty list of RLEs (the mask size is unknown)")
    parsed = [_parse(r, i) for i, r in enumerate(items)]
    size = parsed[0][0]
    for i, (other, _) in enumerate(parsed):
        if other != size:
            raise ValueError(f"decode: RLE #{i} has size {list(other)} but RLE #0 has {list(size)}; a batch must share one size")
    return _core.rle_decode_batch([c for _, c in parsed], size[0], size[1])


@overload
def area(rle: Mapping[str, Any]) -> int: ...
@overload
def area(rle: Sequence[Mapping[str, Any]]) -> np.ndarray: ...
def area(rle: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> int | np.ndarray:
    """Foreground pixel count, computed from the counts without decoding.

    Returns an ``int`` for one dict, or an ``int64`` array of shape ``(K,)``
    for a list of K dicts. Raises like `decode`.
    """
    if isinstance(rle, Mapping):
        (h, w), counts = _parse(rle)
        return int(_core.rle_area(counts, h, w))
    return _per_item(rle, "area", _core.rle_area, (), np.int64)


def bbox(rle: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Bounding box ``[x, y, width, height]`` like ``pycocotools.mask.toBbox``.

    Returns a ``float64`` array of shape ``(4,)`` for one dict or ``(K, 4)``
    for a list of K dicts; an empty mask gives all zeros. Computed from the
    counts without decoding. Raises like `decode`.
    """
    if isinstance(rle, Mapping):
        (h, w), counts = _parse(rle)
        return np.array(_core.rle_bbox(counts, h, w), dtype=np.float64)
    return _per_item(rle, "bbox", _core.rle_bbox, (4,), np.float64)


def _per_item(rle: Any, fn: str, kernel: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Apply a counts kernel to each dict of a list; errors name the dict's position."""
    items = _as_list(rle, fn)
    out = np.zeros((len(items), *shape), dtype=dtype)
    for i, r in enumerate(items):
        (h, w), counts = _parse(r, i)
        try:
            out[i] = kernel(counts, h, w)
        except ValueError as e:
            raise ValueError(f"RLE #{i}: {e}") from e
    return out


def _as_list(rle: Any, fn: str) -> list[Any]:
    if isinstance(rle, (str, bytes)) or not isinstance(rle, Sequence):
        raise TypeError(f"{fn}: expected an RLE dict or a list of RLE dicts, got {type(rle).__name__}")
    return list(rle)


def _parse(rle: Any, index: int | None = None) -> tuple[tuple[int, int], str | bytes]:
    """Validate one RLE dict; return ((h, w), compressed counts)."""
    where = "RLE" if index is None else f"RLE #{index}"
    if not isinstance(rle, Mapping):
        raise TypeError(f"{where} must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    missing = [k for k in ("size", "counts") if k not in rle]
    if missing:
        raise ValueError(f"{where} is missing key(s) {missing}; expected {{'size': [h, w], 'counts': ...}}")
    size = rle["size"]
    if isinstance(size, (str, bytes)) or not isinstance(size, (Sequence, np.ndarray)) or len(size) != 2:
        raise ValueError(f"{where} 'size' must be [height, width], got {size!r}")
    dims = []
    for name, v in zip(("height", "width"), size):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{where} {name} must be an int, got {type(v).__name__}")
        if v < 0:
            raise ValueError(f"{where} {name} must be >= 0, got {int(v)}")
        dims.append(int(v))
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return (dims[0], dims[1]), counts
    if isinstance(counts, (Sequence, np.ndarray)):
        # Uncompressed RLE (a list of run lengths): compress, then the same path.
        return (dims[0], dims[1]), _core.rle_counts_to_string(counts)
    raise TypeError(f"{where} 'counts' must be str, bytes or a list of ints, got {type(counts).__name__}")

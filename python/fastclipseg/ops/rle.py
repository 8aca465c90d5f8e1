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
- `encode_packed(bits, width)` and `packed_area_bbox(bits, width)` give the
  same results from bit-packed masks (``np.packbits(mask, axis=-1,
  bitorder="little")``, e.g. thresholded on a GPU), without unpacking them.

Masks are read in place through their strides (C order, Fortran order or any
view), must be ``bool`` or ``uint8`` (nonzero is foreground), and a mask with
no pixels encodes as counts ``"0"``.

RLE input is untrusted (it comes from files and requests): malformed input
raises `ValueError` (or `TypeError` for a wrong type) naming the field or value
that was wrong, never another exception. Nothing is allocated from a size
before it is checked: `decode` refuses a mask above ``max_pixels`` (default
`fastclipseg.ops.validation.DEFAULT_MAX_PIXELS`, the largest image accepted) from the
size alone, then validates the counts (well-formed, summing to exactly
``h * w``), and only then allocates the mask. The native layer re-validates
everything it is given.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, overload

import numpy as np

from .. import _core
from .threads import native_threads
from .validation import DEFAULT_MAX_PIXELS

__all__ = ["RLE", "area", "bbox", "decode", "encode", "encode_packed", "packed_area_bbox", "packed_summary"]


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


def _packed(bits: Any, width: Any, threads: int | None, fn: str) -> tuple[bool, int, int, tuple[list[str], np.ndarray, np.ndarray]]:
    arr = bits if isinstance(bits, np.ndarray) else np.asarray(bits)
    if arr.dtype != np.uint8:
        raise TypeError(f"{fn}: bits dtype must be uint8 (np.packbits output), got {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{fn}: bits must be 2-D (H, ceil(W/8)) or 3-D (K, H, ceil(W/8)), got shape {arr.shape}")
    if isinstance(width, (bool, np.bool_)) or not isinstance(width, (int, np.integer)):
        raise TypeError(f"{fn}: width must be an int, got {type(width).__name__}")
    w = int(width)
    if w < 0:
        raise ValueError(f"{fn}: width must be >= 0, got {w}")
    if arr.shape[-1] != (w + 7) // 8:
        raise ValueError(
            f"{fn}: bits last dimension is {arr.shape[-1]} but width {w} needs ceil(width/8) = {(w + 7) // 8}"
        )
    h = int(arr.shape[-2])
    return arr.ndim == 3, h, w, _core.rle_encode_packed(arr, w, native_threads(threads, _core.RLE_PACKED_MAX_THREADS))


def encode_packed(bits: Any, width: int, *, threads: int | None = None) -> RLE | list[RLE]:
    """Encode bit-packed masks as COCO compressed RLE, without unpacking them.

    The result is identical to ``encode(np.unpackbits(bits, axis=-1,
    count=width, bitorder="little").astype(bool))`` (and so to pycocotools).

    Packed layout: ``bits`` is a ``uint8`` array of shape ``(K, H, ceil(W/8))``
    (K masks) or ``(H, ceil(W/8))`` (one mask), each row of each H x W mask
    packed along the width with bit order LITTLE: bit ``j`` (value ``1 << j``)
    of byte ``b`` of a row is column ``8*b + j``. This is exactly
    ``np.packbits(mask, axis=-1, bitorder="little")`` of a bool ``(K, H, W)``
    (or ``(H, W)``) mask. The padding bits (columns ``>= W`` in the last byte
    of each row) are ignored, whatever their value. Any memory layout is
    accepted (non-C-contiguous input is copied once).

    Args:
        bits: the packed masks, see the layout above.
        width: W, the mask width in pixels (the packed rows do not record it).
        threads: worker threads across the K masks; None uses the hardware
            concurrency (small batches stay single-threaded).

    Returns:
        Like `encode`: one ``{"size": [H, W], "counts": str}`` dict for 2-D
        ``bits``, a list of K such dicts for 3-D ``bits``.

    Raises:
        TypeError: the dtype is not uint8, or width is not an int.
        ValueError: ``bits`` is not 2-D or 3-D, width is negative or does not
            match the last dimension (which must be ``ceil(width/8)``), or
            H * W exceeds ``_core.RLE_MAX_COUNT``.
    """
    batch, h, w, (counts, _, _) = _packed(bits, width, threads, "encode_packed")
    if not batch:
        return {"size": [h, w], "counts": counts[0]}
    return [{"size": [h, w], "counts": c} for c in counts]


def packed_area_bbox(bits: Any, width: int, *, threads: int | None = None) -> tuple[int | np.ndarray, np.ndarray]:
    """Foreground area and bounding box of bit-packed masks, without unpacking.

    Same values as ``area(encode_packed(bits, width))`` and
    ``bbox(encode_packed(bits, width))`` (i.e. ``pycocotools.mask.area`` /
    ``toBbox``), computed in the same single pass as the RLE. ``bits`` and
    ``width`` are as for `encode_packed` (same layout, same checks).

    Returns:
        For 2-D ``bits``: ``(area: int, bbox: float64 (4,))``. For 3-D:
        ``(area: int64 (K,), bbox: float64 (K, 4))``. ``bbox`` is
        ``[x, y, width, height]``, all zeros for an empty mask.

    Raises:
        Like `encode_packed`.
    """
    batch, _, _, (_, areas, boxes) = _packed(bits, width, threads, "packed_area_bbox")
    if not batch:
        return int(areas[0]), boxes[0]
    return areas, boxes


def packed_summary(bits: Any, width: int, *, threads: int | None = None) -> tuple[list[RLE], np.ndarray, np.ndarray]:
    """RLEs, areas and boxes of K bit-packed masks ``(K, H, ceil(W/8))`` in one native pass:
    what `encode_packed` and `packed_area_bbox` return, without running the kernel twice."""
    if np.ndim(bits) != 3:
        raise ValueError(f"packed_summary: bits must be 3-D (K, H, ceil(W/8)), got shape {np.shape(bits)}")
    _, h, w, (counts, areas, boxes) = _packed(bits, width, threads, "packed_summary")
    return [{"size": [h, w], "counts": c} for c in counts], areas, boxes


def decode(rle: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode COCO RLE into a mask.

    Args:
        rle: ``{"size": [h, w], "counts": ...}`` where counts is the compressed
            ``str`` or ``bytes`` (as written by `encode` or pycocotools) or an
            uncompressed list of run lengths (COCO ``iscrowd`` style). A list
            of such dicts, all of one size, decodes as a batch.
        max_pixels: the most pixels (bytes) the decode may allocate: ``h * w``
            for one dict, ``K * h * w`` for a list of K. Checked from the sizes
            alone, before the counts are parsed or anything is allocated, so a
            small RLE naming a huge size (``[10**6, 10**6]``: 931 GiB) is a
            `ValueError`, not a `MemoryError`. The default,
            `fastclipseg.ops.validation.DEFAULT_MAX_PIXELS`, fits a mask of the
            largest image the package accepts; pass a larger int to decode
            larger masks or batches (or decode a long list in chunks).

    Returns:
        For one dict, an ``(h, w)`` ``uint8`` array of 0/1 in Fortran order,
        like ``pycocotools.mask.decode``. For a list of K dicts, a
        ``(K, h, w)`` ``uint8`` array (the layout `encode` takes; note that
        pycocotools returns ``(h, w, K)`` instead), each ``[k]`` Fortran-ordered.

    Raises:
        TypeError: `rle` or one of its fields has the wrong type (a size that
            is not an int, e.g. a float or bool; counts that are not str, bytes
            or a list of ints), or `max_pixels` is not an int.
        ValueError: missing keys; a size that is negative or not a pair; the
            mask (or batch) above `max_pixels`; counts with invalid or
            non-ASCII characters, truncated, negative, or not summing to
            exactly ``h * w``; a batch mixing sizes. The message names the
            field and value.
    """
    cap = _max_pixels(max_pixels)
    if isinstance(rle, Mapping):
        h, w = _size(rle)
        _check_cap(1, h, w, cap)
        return _core.rle_decode(_counts(rle), h, w, cap)
    items = _as_list(rle, "decode")
    if not items:
        raise ValueError("decode: cannot decode an empty list of RLEs (the mask size is unknown)")
    # Every size first, then the cap: nothing is parsed or allocated for an oversized batch.
    sizes = [_size(r, i) for i, r in enumerate(items)]
    h, w = sizes[0]
    for i, other in enumerate(sizes):
        if other != (h, w):
            raise ValueError(f"decode: RLE #{i} has size {list(other)} but RLE #0 has {[h, w]}; a batch must share one size")
    _check_cap(len(items), h, w, cap)
    return _core.rle_decode_batch([_counts(r, i) for i, r in enumerate(items)], h, w, cap)


@overload
def area(rle: Mapping[str, Any]) -> int: ...
@overload
def area(rle: Sequence[Mapping[str, Any]]) -> np.ndarray: ...
def area(rle: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> int | np.ndarray:
    """Foreground pixel count, computed from the counts without decoding.

    Returns an ``int`` for one dict, or an ``int64`` array of shape ``(K,)``
    for a list of K dicts. Raises like `decode`, except that there is no
    ``max_pixels``: nothing is allocated from the size, so any size up to
    ``_core.RLE_MAX_COUNT`` pixels is measured. Dicts of a list may differ in size.
    """
    if isinstance(rle, Mapping):
        (h, w), counts = _parse(rle)
        # No cap: area and bbox walk the counts and allocate nothing from the size.
        return int(_core.rle_area(counts, h, w))
    return _per_item(rle, "area", _core.rle_area, (), np.int64)


def bbox(rle: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Bounding box ``[x, y, width, height]`` like ``pycocotools.mask.toBbox``.

    Returns a ``float64`` array of shape ``(4,)`` for one dict or ``(K, 4)``
    for a list of K dicts; an empty mask gives all zeros. Computed from the
    counts without decoding. Raises like `area` (no ``max_pixels``: nothing is
    allocated from the size).
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
            # The kernel says "RLE counts ...": name the position in the list instead.
            raise ValueError(f"RLE #{i} {str(e).removeprefix('RLE ')}") from e
    return out


def _as_list(rle: Any, fn: str) -> list[Any]:
    if isinstance(rle, (str, bytes)) or not isinstance(rle, Sequence):
        raise TypeError(f"{fn}: expected an RLE dict or a list of RLE dicts, got {type(rle).__name__}")
    return list(rle)


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40


def _max_pixels(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"decode: max_pixels must be an int, got {type(value).__name__} ({_repr.repr(value)})")
    if value < 0:
        raise ValueError(f"decode: max_pixels must be >= 0, got {int(value)}")
    return int(value)


def _check_cap(k: int, h: int, w: int, cap: int) -> None:
    """Refuse a decode of k masks of h x w above `cap` pixels, from the sizes alone."""
    total = k * h * w
    if total <= cap:
        return
    what = f"RLE size {h}x{w} = {total} pixels is" if k == 1 else f"{k} RLEs of size {h}x{w} = {total} pixels in all,"
    raise ValueError(f"decode: {what} above max_pixels = {cap}; pass a larger max_pixels to decode it")


def _parse(rle: Any, index: int | None = None) -> tuple[tuple[int, int], str | bytes]:
    """Validate one RLE dict; return ((h, w), compressed counts)."""
    return _size(rle, index), _counts(rle, index)


def _where(index: int | None) -> str:
    return "RLE" if index is None else f"RLE #{index}"


def _size(rle: Any, index: int | None = None) -> tuple[int, int]:
    """Check one RLE dict's type, keys and size; return (h, w). The counts are not looked at."""
    where = _where(index)
    if not isinstance(rle, Mapping):
        raise TypeError(f"{where} must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    missing = [k for k in ("size", "counts") if k not in rle]
    if missing:
        raise ValueError(f"{where} is missing key(s) {missing}; expected {{'size': [h, w], 'counts': ...}}")
    size = rle["size"]
    if isinstance(size, (str, bytes)) or not isinstance(size, (Sequence, np.ndarray)) or len(size) != 2:
        shown = size.tolist() if isinstance(size, np.ndarray) else size
        raise ValueError(f"{where} 'size' must be [height, width], got {_repr.repr(shown)}")
    dims = []
    for name, v in zip(("height", "width"), size):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{where} {name} must be an int, got {type(v).__name__} ({_repr.repr(v)})")
        if v < 0:
            raise ValueError(f"{where} {name} must be >= 0, got {int(v)}")
        dims.append(int(v))
    return dims[0], dims[1]


def _counts(rle: Mapping[str, Any], index: int | None = None) -> str | bytes:
    """One RLE dict's counts as a compressed str or bytes (a run-length list is compressed)."""
    where = _where(index)
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return counts
    # bytearray and memoryview are sequences of ints, but never meant as run lengths.
    if isinstance(counts, np.ndarray) and counts.ndim != 1:
        raise TypeError(f"{where} 'counts' array must be 1-D (a list of run lengths), got shape {counts.shape}")
    if isinstance(counts, (Sequence, np.ndarray)) and not isinstance(counts, (bytearray, memoryview)):
        # Uncompressed RLE (a list of run lengths): compress, then the same path.
        try:
            return _core.rle_counts_to_string(counts)
        except (TypeError, ValueError) as e:
            if index is None:
                raise
            raise type(e)(f"{where}: {e}") from e
    raise TypeError(f"{where} 'counts' must be str, bytes or a list of ints, got {type(counts).__name__}")

"""Type stubs for the native extension fastclipseg._core (keep in step with csrc/bindings/)."""

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

# --- COCO RLE (csrc/bindings/rle_bindings.cpp); the documented API is fastclipseg.ops.rle ---

RLE_MAX_COUNT: int

def rle_encode(mask: npt.NDArray[np.bool_] | npt.NDArray[np.uint8]) -> str | list[str]: ...
def rle_decode(counts: str | bytes, h: int, w: int, max_pixels: int) -> npt.NDArray[np.uint8]: ...
def rle_decode_batch(counts_list: Sequence[str | bytes], h: int, w: int, max_pixels: int) -> npt.NDArray[np.uint8]: ...
def rle_area(counts: str | bytes, h: int, w: int) -> int: ...
def rle_bbox(counts: str | bytes, h: int, w: int) -> tuple[float, float, float, float]: ...
def rle_string_to_counts(counts: str | bytes) -> list[int]: ...
def rle_counts_to_string(counts: Iterable[int]) -> str: ...

RLE_PACKED_MAX_THREADS: int

def rle_encode_packed(
    bits: npt.NDArray[np.uint8], width: int, threads: int = 0
) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...

# --- Post-processing (csrc/bindings/postprocess_bindings.cpp); the documented API is fastclipseg.ops.postprocess ---

POSTPROCESS_MAX_SIDE: int
POSTPROCESS_MAX_THREADS: int

def postprocess(
    logits: npt.NDArray[np.float32],
    height: int,
    width: int,
    threshold: float,
    masks: bool,
    probs: str | None,
    rle: bool,
    area: bool,
    bbox: bool,
    score: bool,
    threads: int,
    stability: bool = False,
    stability_offset: float = 1.0,
    guide: npt.NDArray[np.uint8] | None = None,
    radius: int = 4,
    eps: float = 1e-3,
    colour: bool = False,
    subsample: int = 1,
) -> dict[str, object]: ...
EDGES_MAX_RADIUS: int
EDGES_MAX_SUBSAMPLE: int
def edges_probability_cuts(threshold: float, offset: float) -> tuple[float, float, float]: ...
def postprocess_upsample(logits: npt.NDArray[np.float32], height: int, width: int, threads: int) -> npt.NDArray[np.float32]: ...
def postprocess_threshold_logit(threshold: float) -> float: ...
def postprocess_stability_thresholds(threshold: float, offset: float) -> tuple[float, float]: ...
def postprocess_default_threads() -> int: ...

# --- Preprocessing (csrc/bindings/preprocess_bindings.cpp); the documented API is fastclipseg.ops.preprocess ---

PREPROCESS_MAX_SIDE: int
PREPROCESS_MAX_SIZE: int

def preprocess(
    images: list[npt.NDArray[np.uint8]] | tuple[npt.NDArray[np.uint8], ...],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    rescale_factor: float,
    out: npt.NDArray[np.float32] | npt.NDArray[np.float16] | npt.NDArray[np.uint16] | None = None,
    dtype: str = "float32",
    bgr: bool = False,
    threads: int | None = None,
    simd: bool = True,
    pass_order: int = 0,
) -> npt.NDArray[np.float32] | npt.NDArray[np.float16] | npt.NDArray[np.uint16]: ...
def preprocess_resize(
    image: npt.NDArray[np.uint8],
    size: int,
    bgr: bool = False,
    threads: int | None = None,
    simd: bool = True,
    pass_order: int = 0,
) -> npt.NDArray[np.uint8]: ...
def preprocess_simd_available() -> bool: ...
def preprocess_hardware_threads() -> int: ...

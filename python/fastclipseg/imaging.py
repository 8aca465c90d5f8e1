"""Reading user images (paths, PIL images, numpy arrays) into `H x W x 3 uint8` RGB arrays."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 50 megapixels: full-size float32 probabilities for 8 prompts stay under 2 GB.
DEFAULT_MAX_PIXELS = 50_000_000



def describe(source: object) -> str:
    """A short name of an image input for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array of shape {source.shape} and dtype {source.dtype}"
    if isinstance(source, Image.Image):
        return f"PIL image ({source.mode}, {source.size[0]}x{source.size[1]})"
    return type(source).__name__


def _check_size(height: int, width: int, max_pixels: int, name: str) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"{name}: image is empty ({height}x{width} pixels)")
    if height * width > max_pixels:
        raise ValueError(
            f"{name}: image has {height}x{width} = {height * width} pixels, above the limit of "
            f"{max_pixels} (raise max_image_pixels to allow it)"
        )


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: PIL's own conversion clips at 255, so scale the full range instead.
        grey = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        # Palette, greyscale, CMYK and alpha modes: RGB as PIL defines it (alpha is dropped).
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype != np.uint8:
        raise TypeError(f"{name}: image arrays must have dtype uint8, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3:
        raise ValueError(f"{name}: image arrays must be HxW or HxWxC, got {array.ndim} dimensions {array.shape}")
    channels = array.shape[2]
    if channels == 1:
        return np.repeat(array, 3, axis=2)
    if channels == 3:
        return array
    if channels == 4:
        return array[:, :, :3]
    raise ValueError(f"{name}: image arrays need 1, 3 or 4 channels (RGB order), got {channels}")


def _open_file(path: Path, max_pixels: int) -> np.ndarray:
    name = str(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {name}")
    if path.is_dir():
        raise ValueError(f"{name}: is a directory, not an image file")
    return _decode(path, name, max_pixels)


def decode_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image bytes") -> np.ndarray:
    """An encoded image (PNG, JPEG, ... bytes) -> `H x W x 3 uint8` RGB; errors as `load_image`."""
    if not data:
        raise ValueError(f"{name}: empty")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int) -> np.ndarray:
    try:
        with Image.open(source) as image:
            # The header gives the size: refuse huge images before decoding any pixel.
            _check_size(image.height, image.width, max_pixels, name)
            image = ImageOps.exif_transpose(image)
            return _pil_to_rgb(image)
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name}: not a readable image ({error})") from error
    except (OSError, SyntaxError) as error:  # truncated or corrupt data, or no permission
        raise ValueError(f"{name}: cannot read image ({error})") from error


def load_image(source: object, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any supported image input -> `H x W x 3 uint8` RGB array (possibly a view of the input).

    Raises `FileNotFoundError` for a missing file, `ValueError` for an unreadable, corrupt, empty
    or too large image or a wrong array shape, `TypeError` for a wrong input or array dtype.
    """
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        return _open_file(Path(source), max_pixels)
    if isinstance(source, Image.Image):
        _check_size(source.height, source.width, max_pixels, name)
        return _pil_to_rgb(source)
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source, name)
        _check_size(rgb.shape[0], rgb.shape[1], max_pixels, name)
        return rgb
    raise TypeError(f"an image must be a path, a PIL.Image or a numpy uint8 array, got {name}")

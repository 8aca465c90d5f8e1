"""Every check of what a user passes in, in one place: images, thresholds and text prompts.

- images: `load_image` reads a path, PIL image or numpy array into an `H x W x 3 uint8` RGB array
  (`decode_image_bytes` for encoded bytes), with `DEFAULT_MAX_PIXELS` as the size cap;
- thresholds: `check_threshold`;
- text prompts: `check_prompt` (one) and `normalize_prompts` (a string or a list);
- settings: `check_batch_size`, `check_max_pixels` (thread counts: `ops.threads.check_threads`).

Numpy and Pillow only (no torch), so the command line can check its arguments before it loads
the network. Embeddings computed elsewhere are checked by `fastclipseg.prompts.embeddings`.
"""

from __future__ import annotations

import io
import math
import os
import stat
from collections.abc import Sequence
from numbers import Real

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 50 megapixels: full-size float32 probabilities for 8 prompts stay under 2 GB.
DEFAULT_MAX_PIXELS = 50_000_000


def describe(source: object) -> str:
    """A short name of an image input for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source) if str(source) else "'' (an empty path)"
    if isinstance(source, np.ndarray):
        return f"array of shape {source.shape} and dtype {source.dtype}"
    if isinstance(source, Image.Image):
        # Image.open sets `filename` to the path it read (or "" for a file object).
        filename = getattr(source, "filename", None)
        if isinstance(filename, bytes):
            filename = os.fsdecode(filename)
        origin = f" from {filename}" if isinstance(filename, str) and filename else ""
        return f"PIL image{origin} ({source.mode}, {source.size[0]}x{source.size[1]})"
    return type(source).__name__


def _check_size(height: int, width: int, max_pixels: int, name: str) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"{name}: image is empty (width {width}, height {height})")
    if height * width > max_pixels:
        raise ValueError(
            f"{name}: image has {width}x{height} (width x height) = {height * width} pixels, above the limit of "
            f"{max_pixels} (raise max_image_pixels to allow it)"
        )


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: PIL's own conversion clips at 255, so scale the full range instead.
        grey = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "La":
        image = image.convert("LA")  # PIL has no La -> RGB conversion; the alpha is dropped anyway
    if image.mode != "RGB":
        # Palette, greyscale, CMYK and alpha modes: RGB as PIL defines it (alpha is dropped).
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _decoded(image: Image.Image, name: str, max_pixels: int) -> np.ndarray:
    """Decode an opened image's pixels (its size already checked) as RGB; any failure of the
    decoder is a ValueError naming the input.

    A file's data is foreign: Pillow's decoders raise OSError for truncated data but also
    SyntaxError, struct.error, IndexError, EOFError, ... for corrupt data, and a lazily opened
    PIL image fails only here. Every one of them means the same to the caller: not readable.
    """
    try:
        rgb = _pil_to_rgb(image)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - see above; the cause stays chained
        raise ValueError(f"{name}: cannot read image ({_reason(error)})") from error
    # Some formats (ICO, ICNS) decode to another size than their header said.
    _check_size(rgb.shape[0], rgb.shape[1], max_pixels, name)
    return rgb


def _reason(error: BaseException) -> str:
    text = str(error)
    return text if isinstance(error, (OSError, ValueError)) and text else f"{type(error).__name__}: {text}"


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


def _open_file(path: str | os.PathLike) -> str:
    """The name of an existing regular file at `path`, or the documented error."""
    name = str(path)
    if not name:
        raise ValueError("image path is empty: give a file name")
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError) as error:  # "a.png/b.png" does not exist either
        raise FileNotFoundError(f"image file not found: {name}") from error
    except (OSError, ValueError) as error:  # a NUL in the name, a name too long, a symlink loop, no permission
        reason = getattr(error, "strerror", None) or error
        raise ValueError(f"{name}: cannot access the image file ({reason})") from error
    if stat.S_ISDIR(mode):
        raise ValueError(f"{name}: is a directory, not an image file")
    if not stat.S_ISREG(mode):
        # Reading a FIFO would block until someone writes to it; a device would be read forever.
        raise ValueError(f"{name}: is not a regular file (a pipe, socket or device), not an image file")
    return name


def decode_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image bytes") -> np.ndarray:
    """An encoded image (PNG, JPEG, ... bytes) -> `H x W x 3 uint8` RGB; errors as `load_image`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name}: encoded image data must be bytes, got {type(data).__name__}")
    if not data:
        raise ValueError(f"{name}: empty")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: str | io.BytesIO, name: str, max_pixels: int) -> np.ndarray:
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as error:
        # Pillow refuses before we can (Image.MAX_IMAGE_PIXELS, about 179 MP, applies too).
        raise ValueError(f"{name}: image is above the limit of Pillow's decompression-bomb check ({error}); "
                         f"fastclipseg's limit is {max_pixels} pixels") from error
    except UnidentifiedImageError as error:
        # Pillow's message names a file object for bytes; name the input instead.
        raise ValueError(f"{name}: not a readable image (not a format Pillow recognises, or a corrupt "
                         "header)") from error
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - a corrupt header: see _decoded
        raise ValueError(f"{name}: cannot read image ({_reason(error)})") from error
    with image:
        # The header gives the size: refuse huge images before decoding any pixel.
        _check_size(image.height, image.width, max_pixels, name)
        try:
            image = ImageOps.exif_transpose(image)  # loads the pixels
        except MemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - see _decoded
            raise ValueError(f"{name}: cannot read image ({_reason(error)})") from error
        return _decoded(image, name, max_pixels)


def load_image(source: object, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any supported image input -> `H x W x 3 uint8` RGB array (possibly a view of the input).

    Raises `FileNotFoundError` for a missing file, `ValueError` for an unreadable, corrupt, empty
    or too large image (files, bytes and PIL images alike: a truncated file opened lazily with
    `Image.open` fails here too), a path that is not a regular file, or a wrong array shape, and
    `TypeError` for a wrong input or array dtype. Every message starts with the input's name
    (its path, or its PIL file name). The size is checked from the header, before decoding.
    """
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        return _decode(_open_file(source), name, max_pixels)
    if isinstance(source, Image.Image):
        # A lazily opened image (Image.open) decodes here: check its header size first, and a
        # failure is a ValueError naming it, as for a path.
        _check_size(source.height, source.width, max_pixels, name)
        return _decoded(source, name, max_pixels)
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source, name)
        _check_size(rgb.shape[0], rgb.shape[1], max_pixels, name)
        return rgb
    raise TypeError(f"an image must be a path, a PIL.Image or a numpy uint8 array, got {name}")


# -- thresholds and text prompts ------------------------------------------------------------


def check_threshold(threshold: object, name: str = "threshold") -> float:
    """A threshold in [0, 1] as a float, else a clear error naming `name` (bools and NaN are refused)."""
    if isinstance(threshold, bool) or not isinstance(threshold, Real):
        raise TypeError(f"{name} must be a number between 0 and 1, got {type(threshold).__name__}: {threshold!r}")
    value = float(threshold)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value}")
    return value


def normalize_prompts(prompts: object, name: str = "prompts") -> list[str]:
    """A string or a non-empty list of non-blank strings -> list of strings; else a clear error."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or isinstance(prompts, (bytes, bytearray)):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError(f"{name} is empty: give at least one prompt")
    for index, prompt in enumerate(prompts):
        check_prompt(prompt, f"{name}[{index}]")
    return list(prompts)


def check_prompt(prompt: object, name: str) -> str:
    """One text prompt: a non-blank string of valid Unicode, else an error naming `name`."""
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be a string, got {type(prompt).__name__}: {prompt!r}")
    if not prompt.strip():
        raise ValueError(f"{name} is empty or whitespace only: {prompt!r}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        # A lone surrogate (e.g. from a bad decode) cannot reach the tokenizer, which would fail obscurely.
        raise ValueError(f"{name} is not valid Unicode text: a lone surrogate "
                         f"{prompt[error.start]!r} at position {error.start} of {prompt!r}") from None
    return prompt


# -- settings ---------------------------------------------------------------------------------


def check_batch_size(batch_size: object, name: str = "batch_size", none_means: str | None = None) -> int:
    """Images per network call: an int >= 1, else a clear ValueError naming `name` (`none_means`:
    what None would have given, where the caller accepts None and handles it itself)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        alternative = f" (or None for {none_means})" if none_means else ""
        raise ValueError(f"{name} must be an int >= 1{alternative}, got {batch_size!r}")
    return int(batch_size)


def check_max_pixels(max_pixels: object, name: str = "max_image_pixels") -> int:
    """The largest image accepted, in pixels: an int >= 1, else a clear ValueError naming `name`."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ValueError(f"{name} must be an int >= 1, got {max_pixels!r}")
    return int(max_pixels)

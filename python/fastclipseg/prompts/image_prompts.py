"""Image prompts: "segment what looks like this example" instead of a text prompt.

CLIPSeg conditions its decoder on a `(P,)` embedding in CLIP's joint space, so an image can take
the place of a text prompt: its CLIP image embedding (vision tower on all layers, class token,
`post_layernorm`, `visual_projection`) is what transformers computes for
`CLIPSegForImageSegmentation(..., conditional_pixel_values=...)`. The encoder is network maths
(`fastclipseg.model.image_prompt_encoder`); `FastSegmenter.encode_image_prompts` (the inference
core's) turns images, optionally with a mask of the example object, into `(K, P)` embeddings that
the decoder takes like those of `encode_prompts`, cached by `ImagePrompt.key`.

With a mask, the example is first prepared as in the CLIPSeg paper's *visual prompt
engineering* (Lüddecke & Ecker, "Image Segmentation Using Text and Image Prompts", CVPR 2022,
section 3.2 and table 1): the background is darkened and blurred and the image is cropped to the
object. `visual_prompt` does it; its defaults are those the released rd64 weights were trained
with (`crop_blur_highlight352` in the authors' code). `ImagePrompt` bundles an example with its
settings and a stable cache key.

Embeddings computed elsewhere are checked by `fastclipseg.prompts.embeddings`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageFilter

from ..ops.validation import DEFAULT_MAX_PIXELS, describe, load_image

# CLIPSeg's processor normalises with the ImageNet mean (0.485, 0.456, 0.406): in 0-255 pixel
# units this is the colour whose normalised value is 0, which the reference darkens towards.
CLIPSEG_MEAN_PIXELS: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
# The input size of the released CLIPSeg weights; the reference blurs at this size.
CLIPSEG_INPUT_SIZE = 352

BACKGROUNDS = ("darken+blur", "darken", "blur", "keep")
DEFAULT_DARKEN = 0.1
DEFAULT_BLUR_RADIUS = 3.0
DEFAULT_CONTEXT = 0.1

_KEY_VERSION = "fastclipseg-image-prompt-v1"


# -- visual prompt engineering ----------------------------------------------------------------


def _check_fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


def _check_non_negative(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _check_settings(background: object, darken: object, blur_radius: object, crop: object, context: object
                    ) -> tuple[str, float, float, bool, float]:
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(repr(b) for b in BACKGROUNDS)}, got {background!r}")
    if not isinstance(crop, (bool, np.bool_)):
        raise TypeError(f"crop must be True or False, got {type(crop).__name__}")
    return (
        str(background),
        _check_fraction(darken, "darken"),
        _check_non_negative(blur_radius, "blur_radius"),
        bool(crop),
        _check_non_negative(context, "context"),
    )


def check_mask(mask: object, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A mask of the example object -> `H x W` bool array (a new array), or a clear error.

    Accepted: a bool array; an integer or float array of 0s and 1s; a uint8 array of 0s and 255s
    (as PNG masks are usually stored); a PIL image of mode "1" or "L" (0/255); an `H x W x 1`
    array. It must be the image's `H x W` (`shape`) and select at least one pixel.
    """
    if isinstance(mask, Image.Image):
        if mask.mode not in ("1", "L"):
            raise TypeError(f"{name}: a PIL mask must have mode '1' or 'L', got mode {mask.mode!r}")
        mask = np.asarray(mask)
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, a torch tensor or a PIL image, got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H x W), got shape {mask.shape}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {mask.shape[0]}x{mask.shape[1]}, the image is {shape[0]}x{shape[1]}")
    if mask.dtype == np.bool_:
        selected = mask.copy()
    elif np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating):
        values = np.unique(mask)
        if np.issubdtype(mask.dtype, np.floating) and not np.isfinite(values).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        levels = set(values.tolist())
        if levels <= {0, 1} or (mask.dtype == np.uint8 and levels <= {0, 255}):
            selected = mask != 0
        else:
            shown = ", ".join(str(v) for v in values[:6].tolist()) + (", ..." if len(values) > 6 else "")
            raise ValueError(
                f"{name} must hold only 0 and 1 (or be a bool array; uint8 0/255 is accepted too), "
                f"got values {shown}: threshold it first, e.g. mask > 0.5"
            )
    else:
        raise TypeError(f"{name} must be a bool, integer or float array, got dtype {mask.dtype}")
    if not selected.any():
        raise ValueError(f"{name} is empty: it selects no pixel of the image, so there is no example object")
    return selected


def mask_box(mask: np.ndarray, context: float = DEFAULT_CONTEXT) -> tuple[int, int, int, int]:
    """`(top, bottom, left, right)` (bottom/right exclusive) of the mask's bounding box, widened by
    `context` times its height (width) above and below (left and right), clipped to the image.

    Rounded as the reference's `crop_mask` does (truncation towards zero).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    height, width = bottom - top, right - left
    return (
        int(max(0.0, top - context * height)),
        int(min(float(mask.shape[0]), bottom + context * height)),
        int(max(0.0, left - context * width)),
        int(min(float(mask.shape[1]), right + context * width)),
    )


def _pad_to_aspect(crop: np.ndarray, aspect_height: int, aspect_width: int, fill: np.ndarray) -> np.ndarray:
    """Pad `crop` (centred) to the aspect ratio `aspect_height : aspect_width`."""
    height, width = crop.shape[:2]
    if width * aspect_height > height * aspect_width:  # too wide: pad rows
        padded_height, padded_width = max(height, round(width * aspect_height / aspect_width)), width
    else:
        padded_height, padded_width = height, max(width, round(height * aspect_width / aspect_height))
    if (padded_height, padded_width) == (height, width):
        return crop
    out = np.empty((padded_height, padded_width, 3), dtype=np.uint8)
    out[:] = fill
    top = (padded_height - height) // 2
    left = (padded_width - width) // 2
    out[top : top + height, left : left + width] = crop
    return out


def _mean_fill(mean: Sequence[float]) -> np.ndarray:
    values = np.asarray(mean, dtype=np.float64)
    if values.shape != (3,) or not np.isfinite(values).all():
        raise ValueError(f"mean must be three finite numbers (R, G, B in 0-255 units), got {mean!r}")
    return values


def visual_prompt(
    image: object,
    mask: object,
    *,
    background: str = "darken+blur",
    darken: float = DEFAULT_DARKEN,
    blur_radius: float = DEFAULT_BLUR_RADIUS,
    crop: bool = True,
    context: float = DEFAULT_CONTEXT,
    mean: Sequence[float] = CLIPSEG_MEAN_PIXELS,
    input_size: int = CLIPSEG_INPUT_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """An example image and the mask of its object -> the `H' x W' x 3` uint8 RGB image to encode.

    The CLIPSeg paper's visual prompt engineering (Lüddecke & Ecker 2022, section 3.2, table 1:
    background darkening, blurring and cropping together gave the largest gain), as the authors'
    code does it for the released weights (`crop_blur_highlight352`: blur sigma 3 at 352x352,
    background intensity 0.1, crop context 0.1):

    1. background (`background="darken+blur"`): pixels outside the mask become
       `mean + darken * (blurred - mean)`, where `blurred` is the whole image under Pillow's
       `GaussianBlur` and `mean` is the processor's normalisation mean in 0-255 units, so the
       background's normalised values are multiplied by `darken` (what the reference does to the
       normalised image; `darken=0` leaves a flat mean-coloured background). `blur_radius` is the
       Gaussian's standard deviation in pixels of the model's `input_size x input_size` input (the
       reference blurs after resizing to it): `blur_radius * W / input_size` across and
       `blur_radius * H / input_size` down on this image. "darken" skips the blur, "blur" the
       darkening (factor 1), "keep" both. Pixels inside the mask are never changed.
    2. crop (`crop=True`): to the mask's bounding box widened by `context` times its height above
       and below and its width left and right (clipped to the image), then padded, centred, with
       the mean colour to the aspect ratio of the whole image. After the processor's resize to
       `S x S` (which does not keep aspect ratios) this is the reference's crop padded to a square
       in the resized image, so the object has the same proportions as in query images.

    `image`: a path, PIL image or uint8 array (see `load_image`); `mask`: see `check_mask`.
    """
    background, darken, blur_radius, crop, context = _check_settings(background, darken, blur_radius, crop, context)
    fill = _mean_fill(mean)
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 1:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    rgb = load_image(image, max_pixels)
    selected = check_mask(mask, rgb.shape[:2])
    return _engineer(rgb, selected, background, darken, blur_radius, crop, context, fill, int(input_size))


def _engineer(rgb: np.ndarray, selected: np.ndarray, background: str, darken: float, blur_radius: float,
              crop: bool, context: float, fill: np.ndarray, input_size: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    out = np.array(rgb, dtype=np.uint8, copy=True)
    if background != "keep":
        source = rgb
        if background in ("darken+blur", "blur") and blur_radius > 0:
            radius = (blur_radius * width / input_size, blur_radius * height / input_size)
            source = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).filter(ImageFilter.GaussianBlur(radius)))
        factor = darken if background in ("darken+blur", "darken") else 1.0
        outside = ~selected
        values = source[outside].astype(np.float64)
        if factor != 1.0:
            values = fill + factor * (values - fill)
        out[outside] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if crop:
        top, bottom, left, right = mask_box(selected, context)
        rounded_fill = np.clip(np.rint(fill), 0, 255).astype(np.uint8)
        out = _pad_to_aspect(out[top:bottom, left:right], height, width, rounded_fill)
    return np.ascontiguousarray(out)


# -- prompts ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImagePrompt:
    """An example image (+ optional mask of the example object) used as a prompt.

    `image` is loaded on construction (any `load_image` input; kept as a read-only `H x W x 3`
    uint8 array) and `mask` validated (`check_mask`; kept as a read-only bool array). Without a
    mask the whole image is the prompt, as transformers' `conditional_pixel_values`; with one,
    `visual_prompt` prepares it with the settings below.

    `key` is a stable cache key: the SHA-256 of the pixels, their shape, the mask and (with a
    mask) the engineering settings, prefixed `"image:sha256:"` so that it cannot be mistaken for a
    text prompt. Equal inputs give equal keys in any process; prompts compare and hash by key.
    The key identifies the prompt, not the model: keep one cache per model.

    `name`: what results call the prompt (`label`); by default the file's path, or
    `"image <first 12 hex digits of the key>"`, with `" (masked)"` when there is a mask. It is not
    part of the key.
    """

    image: object = field(repr=False)
    mask: object = field(default=None, repr=False)
    background: str = "darken+blur"
    darken: float = DEFAULT_DARKEN
    blur_radius: float = DEFAULT_BLUR_RADIUS
    crop: bool = True
    context: float = DEFAULT_CONTEXT
    name: str | None = None
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, repr=False)
    key: str = field(init=False)
    _source: str | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        background, darken, blur_radius, crop, context = _check_settings(
            self.background, self.darken, self.blur_radius, self.crop, self.context
        )
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"name must be a string or None, got {type(self.name).__name__}")
        if isinstance(self.image, (str, os.PathLike)):
            object.__setattr__(self, "_source", os.fspath(self.image))
        rgb = np.array(load_image(self.image, self.max_pixels), dtype=np.uint8, copy=True)
        rgb.setflags(write=False)
        mask = None
        if self.mask is not None:
            mask = check_mask(self.mask, rgb.shape[:2])
            mask.setflags(write=False)
        for name, value in (("image", rgb), ("mask", mask), ("background", background), ("darken", darken),
                            ("blur_radius", blur_radius), ("crop", crop), ("context", context)):
            object.__setattr__(self, name, value)
        digest = hashlib.sha256()
        digest.update(_KEY_VERSION.encode())
        digest.update(json.dumps({"shape": list(rgb.shape)}).encode())
        digest.update(rgb.tobytes())
        if mask is not None:
            settings = {"background": background, "darken": darken, "blur_radius": blur_radius,
                        "crop": crop, "context": context}
            digest.update(json.dumps({"mask": list(mask.shape), **settings}, sort_keys=True).encode())
            digest.update(np.packbits(mask).tobytes())
        object.__setattr__(self, "key", "image:sha256:" + digest.hexdigest())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImagePrompt):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def label(self) -> str:
        """What results call this prompt: `name`, else the file's path or a short hash."""
        if self.name is not None:
            return self.name
        base = self._source if self._source is not None else f"image {self.key.rsplit(':', 1)[-1][:12]}"
        return base + (" (masked)" if self.mask is not None else "")

    def prompt_image(self, mean: Sequence[float] = CLIPSEG_MEAN_PIXELS, input_size: int = CLIPSEG_INPUT_SIZE
                     ) -> np.ndarray:
        """The image to encode: the example itself, or with a mask `visual_prompt`'s result."""
        if self.mask is None:
            return self.image
        return _engineer(self.image, self.mask, self.background, self.darken, self.blur_radius,
                         self.crop, self.context, _mean_fill(mean), int(input_size))


def _as_prompt(item: object, index: int, max_pixels: int) -> ImagePrompt:
    if isinstance(item, ImagePrompt):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        raise TypeError(f"prompts[{index}]: an (image, mask) pair must be given as ImagePrompt(image, mask=mask)")
    try:
        return ImagePrompt(item, max_pixels=max_pixels)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise type(error)(f"prompts[{index}]: {error}") from error


# -- lists of prompts --------------------------------------------------------------------------


def as_image_prompts(prompts: Sequence[object] | ImagePrompt, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[ImagePrompt]:
    """`ImagePrompt`s or plain images (path, PIL image, uint8 array: the whole image is the prompt)
    -> a list of `ImagePrompt`s, with errors naming `prompts[i]`."""
    if isinstance(prompts, ImagePrompt):
        prompts = [prompts]
    if isinstance(prompts, (str, os.PathLike, np.ndarray, Image.Image)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of images or ImagePrompts, got {describe(prompts)}")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one image prompt")
    return [_as_prompt(item, index, max_pixels) for index, item in enumerate(prompts)]


# -- names that lived here before issue 15 ------------------------------------------------------


def encode_image_prompts(segmenter, prompts: Sequence[object] | ImagePrompt):
    """Deprecated: `segmenter.encode_image_prompts(prompts)` (a `FastSegmenter` or its `InferenceCore`)."""
    warnings.warn("fastclipseg.prompts.image_prompts.encode_image_prompts(segmenter, prompts) is deprecated: "
                  "call segmenter.encode_image_prompts(prompts)", DeprecationWarning, stacklevel=2)
    return segmenter.encode_image_prompts(prompts)


def image_prompt_encoder(segmenter):
    """Deprecated: `segmenter.core.image_prompt_encoder`."""
    warnings.warn("fastclipseg.prompts.image_prompts.image_prompt_encoder(segmenter) is deprecated: "
                  "use segmenter.core.image_prompt_encoder", DeprecationWarning, stacklevel=2)
    return getattr(segmenter, "core", segmenter).image_prompt_encoder


_MOVED_NAMES = {
    "ImagePromptEncoder": "fastclipseg.model.image_prompt_encoder",
    "check_conditional_embeddings": "fastclipseg.prompts.embeddings",
}


def __getattr__(name: str):
    if name in _MOVED_NAMES:
        warnings.warn(f"{name} moved to {_MOVED_NAMES[name]}: import it from there", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKGROUNDS",
    "CLIPSEG_INPUT_SIZE",
    "CLIPSEG_MEAN_PIXELS",
    "ImagePrompt",
    "as_image_prompts",
    "check_mask",
    "encode_image_prompts",
    "image_prompt_encoder",
    "mask_box",
    "visual_prompt",
]

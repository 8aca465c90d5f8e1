"""Image prompts: "segment what looks like this example" instead of a text prompt.

CLIPSeg conditions its decoder on a `(P,)` embedding in CLIP's joint space, so an image can take
the place of a text prompt: its CLIP image embedding (vision tower on all layers, class token,
`post_layernorm`, `visual_projection`) is what transformers computes for
`CLIPSegForImageSegmentation(..., conditional_pixel_values=...)`. `ImagePromptEncoder` computes
it; `encode_image_prompts` turns images (optionally with a mask of the example object) into `(K, P)`
embeddings that `FastSegmenter.engine.decode` takes like those of `encode_prompts`.

With a mask, the example is first prepared as in the CLIPSeg paper's *visual prompt
engineering* (Lüddecke & Ecker, "Image Segmentation Using Text and Image Prompts", CVPR 2022,
section 3.2 and table 1): the background is darkened and blurred and the image is cropped to the
object. `visual_prompt` does it; its defaults are those the released rd64 weights were trained
with (`crop_blur_highlight352` in the authors' code). `ImagePrompt` bundles an example with its
settings and a stable cache key.

`check_conditional_embeddings` validates embeddings computed elsewhere (any `(K, P)` float array).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from .imaging import DEFAULT_MAX_PIXELS, describe, load_image

if TYPE_CHECKING:
    from transformers import CLIPSegForImageSegmentation

    from .preprocess import PreprocessConfig
    from .segmenter import FastSegmenter

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


# -- the encoder ------------------------------------------------------------------------------


class ImagePromptEncoder(nn.Module):
    """Pixels `(N, 3, S, S)` -> `(N, projection_dim)` conditional embeddings of image prompts.

    The CLIP vision tower of `model` on all its layers, the class token after `post_layernorm`,
    then `visual_projection`: `model.clip.get_image_features(pixel_values).pooler_output`, which
    is what `CLIPSegForImageSegmentation.get_conditional_embeddings` uses for
    `conditional_pixel_values`. The parameters are shared with `model` (no copy); the position
    embeddings for `S x S` inputs are interpolated once, as transformers does on every call.
    Runs in eval mode without gradients, in the weights' dtype, and returns float32.
    """

    def __init__(self, model: CLIPSegForImageSegmentation, preprocess_config: PreprocessConfig | int) -> None:
        super().__init__()
        from .model.stages import VisionStage

        size = preprocess_config if isinstance(preprocess_config, int) else preprocess_config.size
        size = int(size)
        vision = model.clip.vision_model
        patch = vision.embeddings.patch_size
        if size < patch or size % patch:
            raise ValueError(f"input size {size} is not a multiple of the patch size {patch}")
        self.image_size = size
        self.tower = VisionStage(model, size, depth=len(vision.encoder.layers))
        self.post_layernorm = vision.post_layernorm
        self.visual_projection = model.clip.visual_projection
        self.eval()

    @property
    def projection_dim(self) -> int:
        return int(self.visual_projection.out_features)

    @property
    def device(self) -> torch.device:
        return self.visual_projection.weight.device

    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"pixel_values must be (N, 3, {size}, {size}), got {tuple(pixel_values.shape)}")
        x = self.tower.embed(pixel_values.to(self.device))
        for layer in self.tower.layers:
            x = layer(x)
        pooled = self.post_layernorm(x[:, 0, :])
        return self.visual_projection(pooled).float()


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


# -- encoding with a segmenter ----------------------------------------------------------------


def _embedding_device(segmenter: FastSegmenter) -> torch.device:
    """Where `segmenter.encode_prompts` returns embeddings: the device of a torch-module engine,
    the CPU for ONNX Runtime (whose outputs are CPU tensors)."""
    engine = segmenter.engine
    if getattr(engine, "name", None) == "onnxruntime":
        return torch.device("cpu")
    return torch.device(getattr(engine, "device", "cpu"))


def image_prompt_encoder(segmenter: FastSegmenter) -> ImagePromptEncoder:
    """The segmenter's `ImagePromptEncoder`, built on first use from `segmenter.model` and kept."""
    segmenter._require_model(
        "image prompts", "load it from the transformers model (FastSegmenter.from_pretrained with a hub id or a "
        "model folder), or compute the embeddings elsewhere and pass them through check_conditional_embeddings"
    )
    with segmenter._image_prompt_encoder_lock:
        if segmenter._image_prompt_encoder is None:
            encoder = ImagePromptEncoder(segmenter.model, segmenter.preprocess_config)
            device = _embedding_device(segmenter)
            # The parameters are shared with the model: this moves its vision tower, whose other
            # layers the engine already moved when it was built on `device`.
            segmenter._image_prompt_encoder = encoder.to(device) if encoder.device != device else encoder
        return segmenter._image_prompt_encoder


def encode_image_prompts(segmenter: FastSegmenter, prompts: Sequence[object] | ImagePrompt) -> torch.Tensor:
    """`(K, P)` conditional embeddings of image prompts, for `segmenter.engine.decode`.

    `prompts`: `ImagePrompt`s or plain images (path, PIL image, uint8 array: the whole image is
    the prompt). Each is loaded, prepared with `visual_prompt` when it has a mask (with the
    segmenter's normalisation mean and input size), preprocessed with `segmenter.pixel_values`
    (bit-identical to the processor) and encoded by the model's CLIP vision tower. The result is
    float32 on the device `segmenter.encode_prompts` returns embeddings on. Prompts with equal
    keys are encoded once per call; `FastSegmenter` caches the results by `ImagePrompt.key`.

    Raises `ValueError` for a segmenter without a model (loaded from an export).
    """
    encoder = image_prompt_encoder(segmenter)
    if isinstance(prompts, ImagePrompt):
        prompts = [prompts]
    if isinstance(prompts, (str, os.PathLike, np.ndarray, Image.Image)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of images or ImagePrompts, got {describe(prompts)}")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one image prompt")
    items = [_as_prompt(item, index, segmenter.max_image_pixels) for index, item in enumerate(prompts)]
    unique = {item.key: item for item in items}
    config = segmenter.preprocess_config
    mean = [m / config.rescale_factor for m in config.mean]
    images = [item.prompt_image(mean, config.size) for item in unique.values()]
    step = segmenter.batch_size
    encoded = torch.cat([encoder(segmenter.pixel_values(images[start : start + step]))
                         for start in range(0, len(images), step)]).to(_embedding_device(segmenter))
    found = dict(zip(unique, encoded))
    return torch.stack([found[item.key] for item in items])


# -- embeddings from elsewhere ----------------------------------------------------------------


def check_conditional_embeddings(
    embeddings: object, expected_dim: int | None, *, name: str = "conditional embeddings"
) -> torch.Tensor:
    """User-provided conditional embeddings -> a `(K, P)` float32 CPU tensor, or a clear error.

    `embeddings`: a numpy array or torch tensor of floats, 2-D (`K` prompts x `P` values), `K >= 1`,
    `P == expected_dim` (the model's `projection_dim`; None accepts any width), all finite. The result is a new tensor
    (never a view of the input) that is safe to keep. `name` starts the error messages.
    """
    if expected_dim is not None and (
        isinstance(expected_dim, bool) or not isinstance(expected_dim, (int, np.integer)) or expected_dim < 1
    ):
        raise ValueError(f"expected_dim must be a positive int (or None: any width), got {expected_dim!r}")
    if isinstance(embeddings, np.ndarray):
        if not (np.issubdtype(embeddings.dtype, np.floating)):
            raise TypeError(
                f"{name} must be floating point, got a numpy array of dtype {embeddings.dtype}"
            )
        tensor = torch.from_numpy(np.array(embeddings, dtype=np.float32, copy=True))
    elif isinstance(embeddings, torch.Tensor):
        if not embeddings.is_floating_point():
            raise TypeError(f"{name} must be floating point, got a tensor of dtype {embeddings.dtype}")
        tensor = embeddings.detach().to(device="cpu", dtype=torch.float32, copy=True)
    else:
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor, got {type(embeddings).__name__}"
        )
    width = "P" if expected_dim is None else str(expected_dim)
    if tensor.ndim != 2:
        hint = " (for one embedding use shape (1, P): e.g. embedding[None])" if tensor.ndim == 1 else ""
        raise ValueError(
            f"{name} must be 2-D (K prompts x {width}), got shape {tuple(tensor.shape)}{hint}"
        )
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty: give at least one (K >= 1)")
    if expected_dim is not None and tensor.shape[1] != expected_dim:
        raise ValueError(
            f"{name} has {tensor.shape[1]} values each, the model's projection_dim is {expected_dim}"
        )
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        rows = sorted({int(r) for r in (~finite).nonzero()[:, 0].tolist()})
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise ValueError(f"{name} holds NaN or infinite values (rows {shown})")
    return tensor.contiguous()


__all__ = [
    "BACKGROUNDS",
    "CLIPSEG_INPUT_SIZE",
    "CLIPSEG_MEAN_PIXELS",
    "ImagePrompt",
    "ImagePromptEncoder",
    "check_conditional_embeddings",
    "check_mask",
    "encode_image_prompts",
    "image_prompt_encoder",
    "mask_box",
    "visual_prompt",
]

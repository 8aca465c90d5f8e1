"""Dense CLIP-aligned patch features, training-free, as MaskCLIP and ClearCLIP publish them.

CLIP's vision tower is trained to align only its pooled (CLS) output with text. MaskCLIP and
ClearCLIP get one embedding per patch in the same joint image-text space by changing only the LAST
transformer block, then applying the tower's final layer norm and visual projection to every patch
token. CLIPSeg's prompt embeddings (`FastSegmenter.encode_prompts`) are CLIP text embeddings
(text projection of the pooled text state) in that same space, so a patch embedding's cosine with
a prompt embedding is a zero-shot class score: one vision pass serves any number of classes,
with no decoder pass per class.

fastclipseg's vision stage already ran the tower up to hidden state `max(extract_layers) + 1`
(10 of 12 for the real model); `dense_features` continues from that activation through the
remaining layers (the real model: layer 10 unchanged, layer 11 modified) in eager fp32 torch with
the transformers model's own weights, on every backend (the compiled ones do not hold these
layers: a segmenter loaded from an export has no dense features).

The two heads ("maskclip", "clearclip") are network maths and live in
`fastclipseg.model.dense_heads`, which cites the papers and code they follow.

For a semantic map, ClearCLIP's `ClearCLIPSegmentation.forward_feature` / `postprocess_result`
(clearclip_segmentor.py) upsample the patch-grid cosine maps bilinearly to the image
(align_corners=False), multiply by `logit_scale` (50) and softmax over classes; MaskCLIP's head
uses `softmax(output * 100)`. `semantic_segment` does the same with temperature = 1 / logit_scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F

from .core import InferenceCore, core_of
from .model.dense_heads import METHODS, check_method, compute_dense_features
from .model.stages import VisionStage
from .ops.validation import describe, load_image, normalize_prompts

# The published methods' softmax sharpness over classes, as a temperature (1 / logit scale):
# ClearCLIP's `logit_scale=50` (clearclip_segmentor.py), MaskCLIP's `softmax(output * 100)`
# (maskclip_head.py `refine_output`).
DEFAULT_TEMPERATURE = {"clearclip": 1.0 / 50.0, "maskclip": 1.0 / 100.0}

# Upsampled similarity maps are processed this many float32 values at a time (classes x pixels),
# so many classes on a large image do not allocate K x H x W at once.
_CHUNK_VALUES = 1 << 24

Size = None | str | Sequence[int]




def _as_tensor(values: object, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values.detach().to("cpu", torch.float32)
    elif isinstance(values, np.ndarray):
        tensor = torch.from_numpy(np.asarray(values, dtype=np.float32))
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {describe(values)}")
    return tensor


def _bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(C, h, w)` -> `(C, H, W)`, bilinear, align_corners=False (as ClearCLIP's `F.interpolate`)."""
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


@dataclass(eq=False)
class DenseFeatures:
    """One CLIP-aligned embedding per location of one image.

    - `embeddings`: `h x w x D` float32, L2-normalised along D (D = the model's projection_dim,
      512 for CIDAS/clipseg-rd64-refined). At the default resolution, `h x w` is the patch grid
      (22 x 22 for 352-pixel input and 16-pixel patches).
    - `image_size`: `(H, W)` of the image the features describe (the grid covers all of it).
    - `method`: "maskclip" or "clearclip".

    The patch grid is the default resolution because it holds all the information: finer
    features are only interpolations of it, and they are big (`H x W x 512` float32 is 4.2 GB for
    a 1920x1080 image, against 1 MB for the grid). Compute similarities at the grid and upsample
    the K maps instead (what `semantic_segment` does); `upsample(size)` exists for callers that
    need per-pixel features all the same.
    """

    embeddings: np.ndarray
    image_size: tuple[int, int]
    method: str
    # Text -> (K, D) embeddings, for `similarity(texts)`: the segmenter's cached `encode_prompts`.
    encode_text: Callable[[list[str]], torch.Tensor] | None = field(default=None, repr=False)

    @property
    def grid(self) -> tuple[int, int]:
        """`(h, w)` of `embeddings`."""
        return int(self.embeddings.shape[0]), int(self.embeddings.shape[1])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[2])

    def similarity(self, texts: str | Sequence[str] | np.ndarray | torch.Tensor) -> np.ndarray:
        """`(K, h, w)` float32 cosine similarities with K texts, or with text embeddings (`(K, D)`
        or `(D,)`, e.g. `FastSegmenter.encode_prompts(...)`; normalised here). Texts are encoded
        with the segmenter that computed the features (cached)."""
        if isinstance(texts, str) or (isinstance(texts, Sequence) and texts and all(isinstance(t, str) for t in texts)):
            if self.encode_text is None:
                raise ValueError("these features were built without a segmenter: pass text embeddings "
                                 "(FastSegmenter.encode_prompts(texts)) instead of texts")
            texts = self.encode_text([texts] if isinstance(texts, str) else list(texts))
        text_embeddings = texts
        text = _as_tensor(text_embeddings, "text_embeddings")
        if text.ndim == 1:
            text = text[None]
        if text.ndim != 2 or text.shape[1] != self.dim:
            raise ValueError(
                f"text_embeddings must be (K, {self.dim}) (the features' dimension), got {tuple(text.shape)}"
            )
        text = F.normalize(text, dim=-1)
        features = torch.from_numpy(self.embeddings)
        h, w = self.grid
        return (text @ features.reshape(h * w, self.dim).T).reshape(-1, h, w).numpy()

    def upsample(self, size: Sequence[int] | str = "image") -> DenseFeatures:
        """The features at `size` (`(H, W)`, or "image" for `image_size`): bilinear on the grid
        (align_corners=False), then L2-normalised again. See the class docstring for the memory
        this takes."""
        target = _target_size(size, self.image_size)
        if target is None or target == self.grid:
            return DenseFeatures(self.embeddings, self.image_size, self.method, self.encode_text)
        grid = torch.from_numpy(self.embeddings).permute(2, 0, 1)
        upsampled = F.normalize(_bilinear(grid, target), dim=0).permute(1, 2, 0).contiguous()
        return DenseFeatures(upsampled.numpy(), self.image_size, self.method, self.encode_text)


def _target_size(size: Size, image_size: tuple[int, int], stride: int | None = None) -> tuple[int, int] | None:
    if stride is not None:
        if size is not None:
            raise ValueError("give size or stride, not both")
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"stride must be an int >= 1 (image pixels per feature), got {stride!r}")
        # One feature per `stride` image pixels, rounded up so the whole image is covered.
        return (-(-int(image_size[0]) // int(stride)), -(-int(image_size[1]) // int(stride)))
    if size is None:
        return None
    if isinstance(size, str):
        if size != "image":
            raise ValueError(f"size must be None (the patch grid), 'image' or (height, width), got {size!r}")
        return (int(image_size[0]), int(image_size[1]))
    if (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"size must be None (the patch grid), 'image' or (height, width) of positive ints, got {size!r}")


# -- the network -------------------------------------------------------------------------------






















def _features_input(core: InferenceCore, activations: torch.Tensor, array: np.ndarray) -> tuple[torch.Tensor, int]:
    """(the hidden state the dense-feature head starts from, the encoder layer it enters).

    The deepest extracted activation that has not passed the tower's last layer (the one the
    method changes); a model whose `extract_layers` all reach that layer gets the tower's input
    instead (the embedded pixels, one extra eager pass through the layers)."""
    extract_layers = [int(i) for i in core.model.config.extract_layers]
    if not isinstance(activations, torch.Tensor):
        raise TypeError(f"activations must be the tensor segmenter.engine.encode_images returned, got {describe(activations)}")
    if activations.ndim != 4 or activations.shape[0] != len(extract_layers) or activations.shape[1] != 1:
        raise ValueError(
            f"activations must be ({len(extract_layers)}, 1, tokens, width) (the vision stage's output for this one "
            f"image; for image i of a batch pass activations[:, i:i+1]), got {tuple(activations.shape)}"
        )
    last = len(core.model.clip.vision_model.encoder.layers) - 1
    before_last = [layer for layer in extract_layers if layer + 1 <= last]
    if before_last:
        deepest = max(before_last)
        return activations[extract_layers.index(deepest), :, :, :], deepest + 1
    pixel_values = core.pixel_values([array]).float()
    tower_input = VisionStage(core.model, int(pixel_values.shape[-1]), depth=0)
    with torch.inference_mode():
        return tower_input.embed(pixel_values.to(tower_input.patch_embedding.weight.device)), 0


def _check_model(core: InferenceCore) -> None:
    # The vision tower's last layers, its final layer norm and visual projection.
    core.require_model(
        "dense features", "build the segmenter from the model (FastSegmenter.from_pretrained with a hub id or a "
        "transformers folder)"
    )


def dense_features(
    segmenter: object,
    image: object,
    method: str = "clearclip",
    size: Size = None,
    activations: torch.Tensor | None = None,
    stride: int | None = None,
) -> DenseFeatures:
    """CLIP-aligned features of one image (path, PIL.Image or HxWx3 uint8 RGB array).

    `method`: "clearclip" (default) or "maskclip" (see the module docstring). `size`: None (the
    patch grid, the default: see `DenseFeatures`), `(H, W)`, or "image" (the image's own size);
    or `stride`: one feature per `stride` image pixels (`ceil(H / stride) x ceil(W / stride)`).
    `activations`: what `segmenter.engine.encode_images` already returned for this image (shape
    `(len(extract_layers), 1, tokens, width)`, any precision), so the vision stage is not run
    again; otherwise it runs here. Only the remaining encoder layers run on top, in fp32 eager
    torch with the model's weights (all of them, from the embedded pixels, for a model whose
    `extract_layers` reach the tower's last layer).
    """
    check_method(method)
    core = core_of(segmenter)
    _check_model(core)
    array = load_image(image, core.max_image_pixels)
    image_size = (int(array.shape[0]), int(array.shape[1]))
    target = _target_size(size, image_size, stride)  # validate before the network runs
    if activations is None:
        activations = core.encode_images(core.pixel_values([array]))
    hidden, layer = _features_input(core, activations, array)
    embeddings = compute_dense_features(core.model, hidden, method, layer=layer)[0].cpu().numpy()
    features = DenseFeatures(embeddings, image_size, method, encode_text=lambda texts: core.encode_prompts(texts).float().cpu())
    return features.upsample(target) if target is not None else features


# -- semantic segmentation ---------------------------------------------------------------------


@dataclass(eq=False)
class SemanticSegmentation:
    """One label per pixel among `class_names`, from the cosine of dense features with the classes' text.

    - `labels`: `H x W` int32 class indices at the image's own size: the argmax over classes of the
      patch-grid cosine maps upsampled bilinearly (align_corners=False) to the image.
    - `similarity`: `K x h x w` float32 cosine maps at the patch grid.
    - `scores`: K floats, the mean probability of class k over the pixels labelled k (0 for a
      class with no pixel), where the probabilities are softmax over classes of the upsampled
      cosines / `temperature`.
    - `areas`: K pixel counts.
    - `probabilities`: `K x H x W` float32 softmax, computed on first use (K x H x W x 4 bytes).
    """

    class_names: list[str]
    labels: np.ndarray
    scores: np.ndarray
    areas: np.ndarray
    similarity: np.ndarray
    image_size: tuple[int, int]
    method: str
    temperature: float
    features: DenseFeatures = field(repr=False)

    @cached_property
    def probabilities(self) -> np.ndarray:
        upsampled = _bilinear(torch.from_numpy(self.similarity), self.image_size)
        return torch.softmax(upsampled / self.temperature, dim=0).numpy()


def _labels_and_scores(similarity: np.ndarray, image_size: tuple[int, int], temperature: float):
    """Argmax and softmax statistics of the upsampled maps, a few classes at a time.

    F.interpolate treats channels independently, so each chunk's upsampled values are those of the
    whole stack; a running max (strict `>`: the first maximal class wins, as `torch.argmax`) and
    an online log-sum-exp give the labels and each pixel's winning probability without holding
    K x H x W.
    """
    maps = torch.from_numpy(similarity)
    classes = maps.shape[0]
    height, width = image_size
    chunk = max(1, _CHUNK_VALUES // (height * width))
    best = torch.full((height, width), -math.inf)
    labels = torch.zeros((height, width), dtype=torch.int64)
    total = torch.zeros((height, width))  # sum_k exp((s_k - best) / t)
    for start in range(0, classes, chunk):
        values = _bilinear(maps[start : start + chunk], image_size)
        chunk_best, chunk_index = values.max(dim=0)
        new_best = torch.maximum(best, chunk_best)
        take = chunk_best > best
        # `values` is this chunk's own buffer: exp((values - new_best) / t) in place.
        exponentials = values.sub_(new_best).div_(temperature).exp_().sum(dim=0)
        total = total * torch.exp((best - new_best) / temperature) + exponentials
        labels = torch.where(take, chunk_index + start, labels)
        best = new_best
    winning_probability = 1.0 / total  # exp((best - best) / t) / total
    areas = torch.bincount(labels.reshape(-1), minlength=classes)
    sums = torch.zeros(classes, dtype=torch.float64).index_add_(
        0, labels.reshape(-1), winning_probability.reshape(-1).double()
    )
    scores = torch.where(areas > 0, sums / areas.clamp(min=1), torch.zeros_like(sums))
    return labels.to(torch.int32).numpy(), scores.float().numpy(), areas.numpy()


def semantic_segment(
    segmenter: object,
    image: object,
    class_names: str | Sequence[str],
    method: str = "clearclip",
    temperature: float | None = None,
    activations: torch.Tensor | None = None,
) -> SemanticSegmentation:
    """Label every pixel of `image` with one of `class_names` (zero-shot, training-free).

    One vision pass (or none, given `activations` as in `dense_features`), the remaining encoder
    layers with the last one modified per `method`, and the classes' text embeddings from
    `segmenter.encode_prompts` (cached by text): no decoder pass per class. `temperature`: the
    softmax temperature over classes for `scores` and `probabilities` (None: the method's
    published value, 1/50 for ClearCLIP, 1/100 for MaskCLIP); labels do not depend on it.
    """
    check_method(method)
    names = normalize_prompts(class_names, "class_names")
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE[method]
    if isinstance(temperature, bool) or not isinstance(temperature, Real) or not math.isfinite(temperature) \
            or not temperature > 0:
        raise ValueError(f"temperature must be a positive number (or None for the method's), got {temperature!r}")
    core = core_of(segmenter)
    features = dense_features(core, image, method=method, activations=activations)
    similarity = features.similarity(core.encode_prompts(names))
    labels, scores, areas = _labels_and_scores(similarity, features.image_size, float(temperature))
    return SemanticSegmentation(
        class_names=names, labels=labels, scores=scores, areas=areas, similarity=similarity,
        image_size=features.image_size, method=method, temperature=float(temperature), features=features,
    )


__all__ = [
    "DEFAULT_TEMPERATURE", "METHODS", "DenseFeatures", "SemanticSegmentation", "compute_dense_features",
    "dense_features", "semantic_segment",
]

"""The inference core: what every feature needs, behind one public interface.

`InferenceCore` owns the engine (the network's stages on a backend), the prompt and image-prompt
caches, preprocessing (native kernels on the host, or the device twins on CUDA), the network calls
(`encode_images`, `decode`, `predict_logits*`) and the copy of the results to the host. Everything
built on top of it (`FastSegmenter`, sessions, streams, dense features, the Ray actors) uses only
the members documented here; the core knows nothing of them.

Data flows one way: image -> `pixel_values` -> `encode_images` (vision stage) -> `decode` (decoder,
with embeddings from `encode_prompts` / `encode_image_prompts` / `embed`) -> `host_outputs`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .engines import Engine, PerImageEngine
from .model.image_prompt_encoder import ImagePromptEncoder
from .ops.device.processing import DeviceProcessing
from .ops.edges import Edges
from .ops.image_processor import PreprocessConfig, preprocess_images
from .ops.postprocess import PackedMasks
from .ops.threads import check_threads
from .ops.validation import (
    DEFAULT_MAX_PIXELS,
    check_batch_size,
    check_max_pixels,
    describe,
    normalize_prompts,
)
from .prompts.embeddings import check_conditional_embeddings
from .prompts.image_prompts import ImagePrompt, as_image_prompts
from .prompts.resolve import PromptItem
from .prompts.texts import (
    EmbeddingCache,
    PromptTokenizer,
    clip_cache_key,
    whitespace_cache_key,
)

if TYPE_CHECKING:
    from transformers import CLIPSegForImageSegmentation

    from .model.stages import Stages
    from .model.standalone import StandaloneCLIPSeg


# What to do instead, when a core loaded from an export is asked for image prompts.
_IMAGE_PROMPTS_INSTEAD = ("load it from the transformers model (FastSegmenter.from_pretrained with a hub id or a model "
                          "folder), or compute the embeddings elsewhere and pass them through check_conditional_embeddings")


def default_batch_size(engine: Engine) -> int:
    """Images per vision-stage call when the caller does not say: 8, but 1 for int8 on the
    torch-based CPU engines, whose dynamically quantised layers ran as fast one image at a time
    (16 frames of 1280x720: 3.4 s in batches of 1, 4.1 s in batches of 8) and peaked 0.6 GB lower;
    32 on CUDA, where a GPU needs large batches to be busy (a guess: not yet measured, see README)."""
    if engine.precision == "int8" and engine.name in ("torch", "torchscript") and engine.device.type == "cpu":
        return 1
    if engine.device.type == "cuda":
        return 32
    return 8


def check_processor(processor: object) -> None:
    """The model's CLIPSegProcessor (a tokenizer and an image processor), else a clear TypeError."""
    if processor is None or not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise TypeError("processor must be the model's CLIPSegProcessor (with a tokenizer and an image_processor)")


class InferenceCore:
    """The engine, the caches, pre- and post-processing: one model loaded for inference.

    Built by `FastSegmenter` (whose constructor documents the settings) from an engine, the
    model's processor and the prompt stage's token limit; `model` and `stages` are None for a
    segmenter loaded from an export.

    Public members (what sessions, streams, features and integrations may use):
    `engine`, `model` (the CLIPSeg model's modules, None when loaded from an export), `stages`,
    `processor`, `preprocess_config`, `batch_size`, `max_image_pixels`, `kernel_threads`,
    `text_encoder`, `prompt_cache`, `image_prompt_cache`, `device_processing`, `device`,
    `embedding_device`, `embedding_dim`; `require_model`, `tokenize`, `encode_prompts`,
    `encode_image_prompts`, `image_prompt_encoder`, `embed`, `pixel_values`, `encode_images`,
    `decode`, `predict_logits`, `predict_prompt_lists`, `predict_logits_shared`, `host_outputs`.
    """

    def __init__(
        self, engine: Engine, processor, max_prompt_tokens: int, *,
        model: CLIPSegForImageSegmentation | StandaloneCLIPSeg | None = None,
        stages: Stages | None = None, prompt_cache_size: int = 1024, max_image_pixels: int = DEFAULT_MAX_PIXELS,
        batch_size: int | None = None, kernel_threads: int | None = None,
        text_encoder: Callable[[list[str]], object] | None = None, device_processing: bool | None = None,
    ) -> None:
        check_processor(processor)
        if batch_size is not None:
            batch_size = check_batch_size(batch_size, none_means="the engine's default")
        if text_encoder is not None and not callable(text_encoder):
            raise TypeError("text_encoder must be a callable (list of str -> K x P embeddings), "
                            f"got {type(text_encoder).__name__}")
        if device_processing is not None and not isinstance(device_processing, bool):
            raise TypeError(f"device_processing must be True, False or None (on for CUDA), got {device_processing!r}")
        self.model = model
        self.stages = stages
        self.processor = processor
        self.preprocess_config = PreprocessConfig.from_image_processor(processor.image_processor)
        # On the CPU each image gets network calls of its own: its results never depend on which
        # images share its batch (engines/per_image.py says why).
        self.engine: Engine = PerImageEngine(engine) if engine.device.type == "cpu" else engine
        self._batch_size = batch_size if batch_size is not None else default_batch_size(engine)
        self.max_image_pixels = check_max_pixels(max_image_pixels)
        self.kernel_threads = check_threads(kernel_threads, "kernel_threads")
        self.text_encoder = text_encoder
        self._tokenizer = PromptTokenizer(processor.tokenizer, max_prompt_tokens)
        self._embedding_dim: int | None = None
        # Cache keys: the text as the CLIP tokenizer normalises it; only whitespace for a custom
        # encoder, which may tell case apart.
        key = clip_cache_key if text_encoder is None else whitespace_cache_key
        self.prompt_cache = EmbeddingCache(self._encode_texts, max_size=prompt_cache_size, key=key)
        # Image prompts, keyed by a hash of their pixels, mask and settings.
        self.image_prompt_cache = EmbeddingCache(self._encode_image_prompts, max_size=prompt_cache_size,
                                                 key=lambda prompt: prompt.key)
        self._image_prompt_encoder: ImagePromptEncoder | None = None  # built on first use
        self._image_prompt_encoder_lock = threading.Lock()
        if device_processing is None:
            # The device resizes bilinearly only: a processor with another filter keeps the host path.
            device_processing = engine.device.type == "cuda" and DeviceProcessing.supports(self.preprocess_config)
        self.device_processing: DeviceProcessing | None = (
            DeviceProcessing(self.preprocess_config, engine.device) if device_processing else None
        )
        warm = getattr(engine, "warm", None)
        if warm is not None:
            warm(self.batch_size)  # CUDA graphs: capture now, not on the first frame

    # -- what the core holds ----------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        """Images per vision-stage call (settable; checked as the constructor checks it)."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = check_batch_size(value)

    @property
    def device(self) -> torch.device:
        """The device the network runs on."""
        return self.engine.device

    @property
    def embedding_device(self) -> torch.device:
        """Where `encode_prompts` returns embeddings: the engine's device, the CPU for ONNX Runtime
        (whose outputs are CPU tensors)."""
        if self.engine.name == "onnxruntime":
            return torch.device("cpu")
        return torch.device(self.engine.device)

    @property
    def embedding_dim(self) -> int:
        """The width P of the prompt embeddings the decoder takes (512 for CLIPSeg)."""
        if self._embedding_dim is None:
            self._embedding_dim = int(self.engine.encode_prompts(self.tokenize(["a"])).shape[1])
        return self._embedding_dim

    def require_model(self, what: str, instead: str) -> None:
        """A clear error for work that needs the transformers model on a core loaded from an export
        (which holds only the compiled stages). `what` needs the model; `instead` says what to do."""
        if self.model is None:
            raise ValueError(f"{what} needs the transformers model's weights, which a segmenter loaded from an "
                             f"export (or built with keep_model=False) does not hold: {instead}")

    # -- prompts ------------------------------------------------------------------------------

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids `(K, T)` of text prompts, as the prompt stage takes them."""
        return self._tokenizer(prompts)

    def encode_prompts(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """`(K, P)` conditional embeddings of text prompts (cached by text)."""
        return self.prompt_cache.get_many(normalize_prompts(prompts))

    def _encode_texts(self, prompts: list[str]) -> torch.Tensor:
        if self.text_encoder is None:
            # One prompt per call, unpadded: the padding after end-of-text cannot change an
            # embedding in exact arithmetic, but another batch shape rounds differently, and the
            # cache must hold the same embedding whichever prompts came first.
            return torch.cat([self.engine.encode_prompts(self.tokenize([prompt])) for prompt in prompts])
        embeddings = check_conditional_embeddings(self.text_encoder(list(prompts)), self.embedding_dim,
                                                  name="text_encoder's output")
        if embeddings.shape[0] != len(prompts):
            raise ValueError(f"text_encoder returned {embeddings.shape[0]} embeddings for {len(prompts)} prompts")
        return embeddings

    @property
    def image_prompt_encoder(self) -> ImagePromptEncoder:
        """The model's `ImagePromptEncoder`, built on first use and kept (needs the model)."""
        self.require_model("image prompts", _IMAGE_PROMPTS_INSTEAD)
        with self._image_prompt_encoder_lock:
            if self._image_prompt_encoder is None:
                encoder = ImagePromptEncoder(self.model, self.preprocess_config)
                device = self.embedding_device
                # The parameters are shared with the model: this moves its vision tower, whose other
                # layers the engine already moved when it was built on `device`.
                self._image_prompt_encoder = encoder.to(device) if encoder.device != device else encoder
            return self._image_prompt_encoder

    def encode_image_prompts(self, prompts: Sequence[object] | ImagePrompt) -> torch.Tensor:
        """`(K, P)` conditional embeddings of image prompts, for `decode`, cached by `ImagePrompt.key`.

        `prompts`: `ImagePrompt`s or plain images (path, PIL image, uint8 array: the whole image is
        the prompt). Each is prepared with `visual_prompt` when it has a mask (with the processor's
        normalisation mean and input size), preprocessed with `pixel_values` (bit-identical to the
        processor) and encoded by the model's CLIP vision tower, on `embedding_device` in float32.
        Raises `ValueError` for a core without a model (loaded from an export).
        """
        self.require_model("image prompts", _IMAGE_PROMPTS_INSTEAD)
        return self.image_prompt_cache.get_many(as_image_prompts(prompts, self.max_image_pixels))

    def _encode_image_prompts(self, prompts: list[ImagePrompt]) -> torch.Tensor:
        encoder = self.image_prompt_encoder
        unique = {prompt.key: prompt for prompt in prompts}
        config = self.preprocess_config
        mean = [m / config.rescale_factor for m in config.mean]
        images = [prompt.prompt_image(mean, config.size) for prompt in unique.values()]
        step = self.batch_size
        encoded = torch.cat([encoder(self.pixel_values(images[start : start + step]))
                             for start in range(0, len(images), step)]).to(self.embedding_device)
        found = dict(zip(unique, encoded))
        return torch.stack([found[prompt.key] for prompt in prompts])

    def embed(self, items: Sequence[PromptItem]) -> torch.Tensor:
        """`(K, P)` embeddings for resolved prompt leaves (`PromptItem`s of kind text, image or embedding)."""
        rows: list[torch.Tensor | None] = [None] * len(items)
        texts = [(i, item.value) for i, item in enumerate(items) if item.kind == "text"]
        if texts:
            for (i, _), row in zip(texts, self.prompt_cache.get_many([t for _, t in texts])):
                rows[i] = row
        images = [(i, item.value) for i, item in enumerate(items) if item.kind == "image"]
        if images:
            for (i, _), row in zip(images, self.encode_image_prompts([p for _, p in images])):
                rows[i] = row
        reference = next((r for r in rows if r is not None), None)
        for i, item in enumerate(items):
            if item.kind == "embedding":
                row = item.value
                # The encoders' rows are on the network's device; given embeddings come on the CPU.
                rows[i] = row.to(reference) if reference is not None else row
            elif item.kind not in ("text", "image"):
                raise ValueError(f"embed takes text, image and embedding items, got a {item.kind!r} item: "
                                 "evaluate expressions on their terms")
        return torch.stack(rows)  # type: ignore[arg-type]

    # -- images and the network -------------------------------------------------------------

    def pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 arrays -> `(N, 3, S, S)` model input, bit-identical to the processor's pixel
        values; on the network's device with `device_processing`, else on the CPU."""
        if self.device_processing is not None:
            return self.device_processing.pixel_values(images)
        return torch.from_numpy(preprocess_images(list(images), self.preprocess_config, self.kernel_threads))

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision stage: activations `(L, N, tokens, width)` of N images' pixel values."""
        return self.engine.encode_images(pixel_values)

    def decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        """The decoder: logits `(K, h, w)` on the engine's device for K (image, prompt) pairs, where
        pair k is image `image_index[k]` of `activations` with prompt embedding `embeddings[k]`."""
        return self.engine.decode(activations, embeddings, image_index)

    def predict_logits(self, pixel_values: torch.Tensor, prompts_per_image: Sequence[Sequence[str]]
                       ) -> list[torch.Tensor]:
        """Logits `(K_i, h, w)` for each image's prompts, on the CPU; pixel values as
        `pixel_values()` makes them.

        The vision stage runs once per image and the decoder once per (image, prompt) pair, in
        chunks of `batch_size` images.
        """
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch tensor (see pixel_values()), got {describe(pixel_values)}")
        if pixel_values.ndim != 4 or pixel_values.shape[0] != len(prompts_per_image):
            raise ValueError(
                f"pixel_values of shape {tuple(pixel_values.shape)} do not match {len(prompts_per_image)} prompt lists"
            )
        size = self.preprocess_config.size
        if tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"pixel_values must be (N, 3, {size}, {size}), got {tuple(pixel_values.shape)}")
        prompt_lists = [normalize_prompts(p, f"prompts for image {i}") for i, p in enumerate(prompts_per_image)]
        results: list[torch.Tensor] = []
        for start in range(0, len(prompt_lists), self.batch_size):
            chunk = prompt_lists[start : start + self.batch_size]
            logits = self.predict_prompt_lists(pixel_values[start : start + len(chunk)], chunk)
            results.extend(logits.cpu().split([len(p) for p in chunk]))  # one copy to the host per chunk
        return results

    def predict_prompt_lists(self, pixel_values: torch.Tensor, prompt_lists: list[list[str]]) -> torch.Tensor:
        """Stacked logits, on the engine's device, of one chunk of images (at most `batch_size`),
        each with its own checked text prompts: the rows of image i's prompts follow those of image i - 1."""
        activations = self.encode_images(pixel_values)
        image_index = torch.tensor([i for i, prompts in enumerate(prompt_lists) for _ in prompts], dtype=torch.long)
        embeddings = self.prompt_cache.get_many([p for prompts in prompt_lists for p in prompts])
        return self.decode(activations, embeddings, image_index)

    def predict_logits_shared(self, pixel_values: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Stacked logits `(N * K, h, w)` on the engine's device for N images with the same K prompts,
        given as embeddings (`encode_prompts`), K consecutive rows per image: what a stream runs
        for every batch of frames (in chunks of `batch_size` images)."""
        prompts = embeddings.shape[0]
        parts: list[torch.Tensor] = []
        for start in range(0, pixel_values.shape[0], self.batch_size):
            chunk = pixel_values[start : start + self.batch_size]
            activations = self.encode_images(chunk)
            # Made on the device: a host index would be a blocking copy between the two stages.
            image_index = torch.arange(chunk.shape[0], device=self.engine.device).repeat_interleave(prompts)
            parts.append(self.decode(activations, embeddings.repeat(chunk.shape[0], 1), image_index))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def host_outputs(self, logits: torch.Tensor, counts: Sequence[int], sizes: Sequence[tuple[int, int]],
                     threshold: float, on_device: bool = True, edges: Edges | None = None,
                     images: Sequence[np.ndarray] | None = None) -> tuple[list[np.ndarray], list[PackedMasks | None]]:
        """Per image: its logits as a float32 array, and (with `device_processing` and `on_device`)
        its masks, scores and stability computed on the device (edge-aware with `edges`, guided
        by `images`). `logits`: the stacked rows of all images, `counts[i]` consecutive rows for
        image i; one copy to the host for all."""
        if not counts:
            return [], []
        arrays = [part.numpy() for part in logits.float().cpu().split(list(counts))]
        if self.device_processing is None or not on_device:
            return arrays, [None] * len(arrays)
        return arrays, list(self.device_processing.summarize(logits, counts, sizes, threshold, edges=edges,
                                                             guides=images))


def core_of(source: object) -> InferenceCore:
    """The `InferenceCore` of a `FastSegmenter` (its `core`), or `source` itself when it is one."""
    core = getattr(source, "core", source)
    if not isinstance(core, InferenceCore):
        raise TypeError(f"expected a FastSegmenter or an InferenceCore, got {type(source).__name__}")
    return core


__all__ = ["InferenceCore", "check_processor", "core_of", "default_batch_size"]

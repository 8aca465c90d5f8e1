"""`FastSegmenter`: text-prompted segmentation with the staged CLIPSeg network.

transformers is imported only where a model is built or loaded: a segmenter loaded from an export
runs without it (see `export_processor`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .engines import (
    COMPILED_BACKENDS,
    Engine,
    available_precisions,
    create_engine,
    default_cache_dir,
    parse_device,
    resolve_backend,
)
from .engines.artifacts import MANIFEST_NAME, ArtifactError, read_manifest
from .engines.compiled import load_export, write_export
from .engines.per_image import PerImageEngine
from .engines.precision import check_precision
from .export_processor import PROCESSOR_FILES, ExportProcessor
from .imaging import DEFAULT_MAX_PIXELS, describe, load_image
from .model import DEFAULT_MODEL
from .model.files import ModelLoadError
from .preprocess import PreprocessConfig, preprocess_images
from .prompts import EmbeddingCache, PromptTokenizer, clip_cache_key, normalize_prompts, whitespace_cache_key
from .results import PackedMasks, SegmentationResult, check_threshold

if TYPE_CHECKING:
    from transformers import CLIPSegForImageSegmentation

    from .gpu.processing import DeviceProcessing
    from .image_prompts import ImagePromptEncoder
    from .pipeline import FrameStream
    from .refine import Session


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


def _check_processor(processor) -> None:
    if processor is None or not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise TypeError("processor must be the model's CLIPSegProcessor (with a tokenizer and an image_processor)")


class FastSegmenter:
    """CLIPSeg split into a vision, a prompt and a decoder stage, each run only as often as needed.

    One image with K prompts runs the vision tower once (the transformers reference runs it K
    times); prompt embeddings are cached by text (LRU, `prompt_cache_size` entries). The work
    around the network (resize + normalise, upsample + threshold + RLE) runs in the native
    kernels of `fastclipseg.ops` on `kernel_threads` threads (None: all cores), or, on CUDA, on
    the GPU (`fastclipseg.gpu.processing`). The network runs on one of the backends of
    `fastclipseg.engines` (eager torch, TorchScript, ONNX Runtime; CUDA graphs and TensorRT on
    CUDA) in fp32, bf16, fp16 or int8.

    Build one with `FastSegmenter.from_pretrained(...)`; `export()` writes a compiled copy that
    `from_pretrained` loads without the transformers model.
    """

    def __init__(
        self,
        model: CLIPSegForImageSegmentation,
        processor,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        backend: str = "torch",
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        prompt_cache_size: int = 1024,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        batch_size: int | None = None,
        kernel_threads: int | None = None,
        text_encoder: Callable[[list[str]], object] | None = None,
        device_processing: bool | None = None,
        calibration: str | os.PathLike | None = None,
    ) -> None:
        """Build the stages of `model` and the engine that runs them.

        `backend`: "torch" (eager; fp32 is the reference), "torchscript", "onnxruntime",
        "cudagraphs", "tensorrt" or "auto" (the fastest for the device and precision);
        `precision`: "fp32", "bf16", "fp16" (CUDA) or "int8" (see `fastclipseg.engines`).
        Compiled backends keep their build in `cache_dir` (default: `$FASTCLIPSEG_CACHE` or the
        user cache folder), so later starts skip compiling;
        `cache=False` compiles into a temporary folder instead. `threads` and `providers` set
        ONNX Runtime's intra-op threads (default: torch's thread count) and execution providers.
        `batch_size`: images per vision-stage call (None: `default_batch_size`).
        `text_encoder`: a callable mapping a list of prompts to `(K, P)` embeddings in CLIPSeg's
        conditional space (e.g. a multilingual model distilled to CLIP's text space) used instead
        of the CLIP text tower; its results are cached like the tower's.
        `device_processing`: resize + normalise and upsample + threshold on the network's device
        (`fastclipseg.gpu.processing`) instead of the native CPU kernels; None: on for CUDA when
        the processor resizes bilinearly (CLIPSeg's does; another filter keeps the host path).
        `calibration`: a folder of images like yours, for backend "tensorrt" in precision "int8".
        """
        from transformers import CLIPSegForImageSegmentation

        from .model.stages import Stages

        if not isinstance(model, CLIPSegForImageSegmentation):
            raise TypeError(f"model must be a transformers CLIPSegForImageSegmentation, got {type(model).__name__}")
        _check_processor(processor)
        self.model = model.eval()
        preprocess_config = PreprocessConfig.from_image_processor(processor.image_processor)
        self.stages = Stages(self.model, preprocess_config.size)
        self.cache_dir = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if cache else None
        engine = create_engine(
            backend, self.stages, device, precision, cache_dir=self.cache_dir,
            threads=threads, providers=list(providers) if providers else None,
            calibration=Path(calibration).expanduser() if calibration is not None else None,
        )
        self._setup(engine, processor, self.stages.prompt.max_tokens, prompt_cache_size=prompt_cache_size,
                    max_image_pixels=max_image_pixels, batch_size=batch_size, kernel_threads=kernel_threads,
                    text_encoder=text_encoder, device_processing=device_processing)

    def _setup(
        self, engine: Engine, processor, max_prompt_tokens: int, *, prompt_cache_size: int = 1024,
        max_image_pixels: int = DEFAULT_MAX_PIXELS, batch_size: int | None = None, kernel_threads: int | None = None,
        text_encoder: Callable[[list[str]], object] | None = None, device_processing: bool | None = None,
    ) -> None:
        """Everything but the model: shared by a model-backed segmenter and one loaded from an export."""
        if batch_size is None:
            batch_size = default_batch_size(engine)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (or None for the engine's default), got {batch_size}")
        if max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {max_image_pixels}")
        if kernel_threads is not None:
            if isinstance(kernel_threads, bool) or not isinstance(kernel_threads, int):
                raise TypeError(f"kernel_threads must be None (all cores) or an int, got {kernel_threads!r}")
            if kernel_threads < 1:
                raise ValueError(f"kernel_threads must be >= 1 (or None for all cores), got {kernel_threads}")
        self.processor = processor
        self.preprocess_config = PreprocessConfig.from_image_processor(processor.image_processor)
        # On the CPU each image gets network calls of its own: its results never depend on which
        # images share its batch (engines/per_image.py says why).
        self.engine: Engine = PerImageEngine(engine) if engine.device.type == "cpu" else engine
        self.max_image_pixels = int(max_image_pixels)
        self.batch_size = int(batch_size)
        self.kernel_threads = kernel_threads
        if text_encoder is not None and not callable(text_encoder):
            raise TypeError(f"text_encoder must be a callable (list of str -> K x P embeddings), got {type(text_encoder).__name__}")
        self._tokenize = PromptTokenizer(processor.tokenizer, max_prompt_tokens)
        self.text_encoder = text_encoder
        self._embedding_dim: int | None = None
        # Cache keys: the text as the CLIP tokenizer normalises it; only whitespace for a custom
        # encoder, which may tell case apart.
        key = clip_cache_key if text_encoder is None else whitespace_cache_key
        self.prompt_cache = EmbeddingCache(self._encode_uncached, max_size=prompt_cache_size, key=key)
        # Image prompts, keyed by a hash of their pixels, mask and settings.
        self.image_prompt_cache = EmbeddingCache(self._encode_image_prompts_uncached, max_size=prompt_cache_size,
                                                 key=lambda prompt: prompt.key)
        self._image_prompt_encoder: ImagePromptEncoder | None = None  # built on first use
        self._image_prompt_encoder_lock = threading.Lock()
        if device_processing is not None and not isinstance(device_processing, bool):
            raise TypeError(f"device_processing must be True, False or None (on for CUDA), got {device_processing!r}")
        from .gpu.processing import DeviceProcessing

        if device_processing is None:
            # The device resizes bilinearly only: a processor with another filter keeps the host path.
            device_processing = engine.device.type == "cuda" and DeviceProcessing.supports(self.preprocess_config)
        self.device_processing: DeviceProcessing | None = None
        if device_processing:
            self.device_processing = DeviceProcessing(self.preprocess_config, engine.device)
        warm = getattr(engine, "warm", None)
        if warm is not None:
            warm(self.batch_size)  # CUDA graphs: capture now, not on the first frame

    def _require_model(self, what: str, instead: str) -> None:
        """A clear error for work that needs the transformers model on a segmenter loaded from an
        export (which holds only the compiled stages). `what` needs the model; `instead` says what to do."""
        if self.model is None:
            raise ValueError(f"{what} needs the transformers model's weights, which a segmenter loaded from an "
                             f"export does not hold: {instead}")

    @property
    def backend(self) -> str:
        """The engine's backend: "torch", "torchscript", "onnxruntime", "cudagraphs" or "tensorrt"."""
        return self.engine.name

    @property
    def precision(self) -> str:
        """The engine's precision: "fp32", "bf16", "fp16" or "int8"."""
        return self.engine.precision

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | CLIPSegForImageSegmentation = DEFAULT_MODEL,
        *,
        processor=None,
        device: str | torch.device = "cpu",
        precision: str | None = None,
        backend: str | None = None,
        local_files_only: bool = False,
        **options,
    ) -> FastSegmenter:
        """Load from a hub id, a local folder in the transformers layout, an export, or a loaded model.

        `name_or_path`: a hub id such as "CIDAS/clipseg-rd64-refined" (downloaded and cached the
        usual transformers way), a folder with config.json, model.safetensors, tokenizer and
        preprocessor files, a folder written by `export()` (its backend and precision are used;
        the transformers model is not loaded), or a `CLIPSegForImageSegmentation` (then
        `processor` is required). `backend` and `precision` default to "torch" and "fp32".
        Other keyword arguments (`cache`, `cache_dir`, `threads`, `providers`,
        `prompt_cache_size`, `max_image_pixels`, `batch_size`, `kernel_threads`, `text_encoder`,
        `device_processing`, `calibration`) go to the constructor.
        """
        if isinstance(name_or_path, (str, os.PathLike)) and (Path(name_or_path).expanduser() / MANIFEST_NAME).is_file():
            return cls._from_export(Path(name_or_path).expanduser(), device=device, precision=precision,
                                    backend=backend, processor=processor, **options)
        from transformers import CLIPSegForImageSegmentation

        from .model.loading import load_model_and_processor

        backend = backend or "torch"
        precision = precision or "fp32"
        if isinstance(name_or_path, CLIPSegForImageSegmentation):
            if processor is None:
                raise ValueError("a loaded CLIPSegForImageSegmentation needs its processor: pass processor=")
            model = name_or_path
        elif isinstance(name_or_path, (str, os.PathLike)):
            model, loaded_processor = load_model_and_processor(name_or_path, local_files_only=local_files_only)
            processor = processor or loaded_processor
        else:
            raise TypeError(
                "name_or_path must be a hub id, a folder path or a CLIPSegForImageSegmentation, "
                f"got {type(name_or_path).__name__}"
            )
        return cls(model, processor, device=device, precision=precision, backend=backend, **options)

    @classmethod
    def _from_export(
        cls, directory: Path, *, device, precision: str | None, backend: str | None, processor=None,
        threads: int | None = None, providers: Sequence[str] | None = None, cache: bool = True, cache_dir=None,
        **options,
    ) -> FastSegmenter:
        manifest = read_manifest(directory)
        for name, asked in (("backend", backend), ("precision", precision)):
            if asked not in (None, "auto", manifest[name]):
                raise ValueError(
                    f"{directory} is a {manifest['backend']} {manifest['precision']} export; it cannot run as "
                    f"{name} {asked!r} (export the model again with {name}={asked!r})"
                )
        if options.get("calibration") is not None:
            raise ValueError(f"{directory} is an export: its stages are compiled already and take no calibration "
                             "images (calibrate when building a tensorrt int8 engine from the model)")
        options.pop("calibration", None)
        # The processor's files are read only after load_export has checked them against the manifest.
        engine, manifest = load_export(directory, parse_device(device), threads=threads,
                                       providers=list(providers) if providers else None,
                                       reads=PROCESSOR_FILES if processor is None else ())
        if processor is None:
            try:
                processor = ExportProcessor(directory)
            except (ModelLoadError, FileNotFoundError) as error:
                raise ArtifactError(str(error)) from error
        _check_processor(processor)
        segmenter = cls.__new__(cls)
        segmenter.model = None
        segmenter.stages = None
        segmenter.cache_dir = None
        segmenter._setup(engine, processor, int(manifest["max_prompt_tokens"]), **options)
        return segmenter

    def export(
        self, directory: str | os.PathLike, backend: str = "auto", precision: str | None = None, overwrite: bool = False
    ) -> Path:
        """Compile the stages for `backend` ("torchscript", "onnxruntime" or "auto") and `precision`
        (default: this segmenter's) and write them, the manifest and the processor files to `directory`.

        `FastSegmenter.from_pretrained(directory)` loads the result without the transformers model.
        An existing non-empty `directory` is replaced only with `overwrite=True`. A build of the
        same model already in the cache is copied rather than compiled again. Returns the folder.
        """
        self._require_model("exporting", "export from the model")
        precision = precision or self.precision
        device = torch.device("cpu")
        resolved = resolve_backend(backend, device, precision)
        if resolved not in COMPILED_BACKENDS:
            raise ValueError(f"backend {backend!r} has no compiled form to export: use one of {', '.join(COMPILED_BACKENDS)}")
        check_precision(precision, device, available_precisions(resolved, device), resolved)
        directory = Path(directory).expanduser()
        if directory.exists() and not directory.is_dir():  # never replaced, even with overwrite=True
            raise FileExistsError(f"{directory} is a file, not a folder: choose another folder for the export")
        if directory.exists() and any(directory.iterdir()) and not overwrite:
            raise FileExistsError(f"{directory} exists and is not empty: choose another folder or pass overwrite=True")
        write_export(resolved, self.stages, precision, device, directory, processor=self.processor, cache_dir=self.cache_dir)
        return directory

    # -- stages -----------------------------------------------------------------------------

    def _encode_uncached(self, prompts: list[str]) -> torch.Tensor:
        if self.text_encoder is None:
            # One prompt per call, unpadded: the padding after end-of-text cannot change an
            # embedding in exact arithmetic, but another batch shape rounds differently, and the
            # cache must hold the same embedding whichever prompts came first.
            return torch.cat([self.engine.encode_prompts(self._tokenize([prompt])) for prompt in prompts])
        from .image_prompts import check_conditional_embeddings

        embeddings = check_conditional_embeddings(self.text_encoder(list(prompts)), self.embedding_dim,
                                                  name="text_encoder's output")
        if embeddings.shape[0] != len(prompts):
            raise ValueError(f"text_encoder returned {embeddings.shape[0]} embeddings for {len(prompts)} prompts")
        return embeddings

    @property
    def embedding_dim(self) -> int:
        """The width P of the prompt embeddings the decoder takes (512 for CLIPSeg)."""
        if self._embedding_dim is None:
            self._embedding_dim = int(self.engine.encode_prompts(self._tokenize(["a"])).shape[1])
        return self._embedding_dim

    def _encode_image_prompts_uncached(self, prompts: list) -> torch.Tensor:
        from .image_prompts import encode_image_prompts

        return encode_image_prompts(self, prompts)

    def _embed(self, items: list) -> torch.Tensor:
        """`(K, P)` embeddings for resolved prompt leaves (text, image prompts, embedding rows)."""
        rows: list[torch.Tensor | None] = [None] * len(items)
        texts = [(i, item.value) for i, item in enumerate(items) if item.kind == "text"]
        if texts:
            for (i, _), row in zip(texts, self.prompt_cache.get_many([t for _, t in texts])):
                rows[i] = row
        images = [(i, item.value) for i, item in enumerate(items) if item.kind == "image"]
        if images:
            for (i, _), row in zip(images, self.image_prompt_cache.get_many([p for _, p in images])):
                rows[i] = row
        reference = next(r for r in rows if r is not None) if any(r is not None for r in rows) else None
        for i, item in enumerate(items):
            if item.kind == "embedding":
                row = item.value
                # The encoders' rows are on the network's device; given embeddings come on the CPU.
                rows[i] = row.to(reference) if reference is not None else row
        return torch.stack(rows)  # type: ignore[arg-type]

    def encode_prompts(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """`(K, P)` conditional embeddings of text prompts (cached by text)."""
        return self.prompt_cache.get_many(normalize_prompts(prompts))

    def pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 arrays -> `(N, 3, S, S)` model input, bit-identical to the processor's pixel
        values; on the network's device with `device_processing`, else on the CPU."""
        if self.device_processing is not None:
            return self.device_processing.pixel_values(images)
        return torch.from_numpy(preprocess_images(list(images), self.preprocess_config, self.kernel_threads))

    def host_outputs(self, logits: torch.Tensor, counts: Sequence[int], sizes: Sequence[tuple[int, int]],
                     threshold: float, on_device: bool = True) -> tuple[list[np.ndarray], list[PackedMasks | None]]:
        """Per image: its logits as a float32 array, and (with `device_processing` and `on_device`)
        its masks, scores and stability computed on the device. `logits`: the stacked rows of
        all images, `counts[i]` consecutive rows for image i; one copy to the host for all."""
        if not counts:
            return [], []
        arrays = [part.numpy() for part in logits.float().cpu().split(list(counts))]
        if self.device_processing is None or not on_device:
            return arrays, [None] * len(arrays)
        return arrays, list(self.device_processing.summarize(logits, counts, sizes, threshold))

    def predict_logits(self, pixel_values: torch.Tensor, prompts_per_image: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """Logits `(K_i, h, w)` for each image's prompts, on the CPU; pixel values as
        `pixel_values()` makes them.

        The vision stage runs once per image and the decoder once per (image, prompt) pair, in
        chunks of `batch_size` images.
        """
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
            logits = self._decode_prompt_lists(pixel_values[start : start + len(chunk)], chunk)
            results.extend(logits.cpu().split([len(p) for p in chunk]))  # one copy to the host per chunk
        return results

    def _decode_prompt_lists(self, pixel_values: torch.Tensor, prompt_lists: list[list[str]]) -> torch.Tensor:
        """Stacked logits, on the engine's device, of one chunk of images (at most `batch_size`):
        the rows of image i's prompts follow those of image i - 1."""
        activations = self.engine.encode_images(pixel_values)
        image_index = torch.tensor([i for i, prompts in enumerate(prompt_lists) for _ in prompts], dtype=torch.long)
        embeddings = self.prompt_cache.get_many([p for prompts in prompt_lists for p in prompts])
        return self.engine.decode(activations, embeddings, image_index)

    def predict_logits_shared(self, pixel_values: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Stacked logits `(N * K, h, w)` on the engine's device for N images with the same K prompts,
        given as embeddings (`encode_prompts`), K consecutive rows per image: what a stream runs
        for every batch of frames (in chunks of `batch_size` images)."""
        prompts = embeddings.shape[0]
        parts: list[torch.Tensor] = []
        for start in range(0, pixel_values.shape[0], self.batch_size):
            chunk = pixel_values[start : start + self.batch_size]
            activations = self.engine.encode_images(chunk)
            # Made on the device: a host index would be a blocking copy between the two stages.
            image_index = torch.arange(chunk.shape[0], device=self.engine.device).repeat_interleave(prompts)
            parts.append(self.engine.decode(activations, embeddings.repeat(chunk.shape[0], 1), image_index))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    # -- the API ----------------------------------------------------------------------------

    def segment(
        self, image: object, prompts: object = None, threshold: float = 0.5, *, conditional_embeddings: object = None,
    ) -> SegmentationResult:
        """Segment one image (path, PIL.Image or HxWx3 uint8 RGB array) with one or more prompts.

        A prompt is a text ("a cat"), a prompt expression ("(a dog OR a cat) AND NOT a collar
        {+5}", see `fastclipseg.expressions`), or an image prompt (`ImagePrompt`, `PIL.Image`,
        uint8 array, `pathlib.Path`: "things like this"); `conditional_embeddings` adds K x P
        embedding rows of your own. Each gives one mask of the result, in order.
        """
        if prompts is None and conditional_embeddings is None:
            raise TypeError("prompts must be a string, a list of strings or image prompts, got NoneType")
        if conditional_embeddings is None and self._plain_text_prompts(prompts):
            prompts = normalize_prompts(prompts)
        return self.segment_batch([image], [prompts] if prompts is not None else None, threshold=threshold,
                                  conditional_embeddings=conditional_embeddings)[0]

    def segment_batch(
        self,
        images: Sequence[object],
        prompts: object = None,
        threshold: float = 0.5,
        *,
        conditional_embeddings: object = None,
    ) -> list[SegmentationResult]:
        """Segment several images: `prompts` is shared by all images, or one list per image.

        Prompts are as in `segment`; `conditional_embeddings` (K x P) are added to every image's
        prompts. An invalid image raises with its index and what was wrong; see `load_image`.
        """
        threshold = check_threshold(threshold)
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, (Sequence, np.ndarray)):
            raise TypeError(f"images must be a list of images, got {describe(images)}")
        if isinstance(images, np.ndarray) and images.ndim != 4:
            # Iterating a single HxWx3 array would silently treat each row as an image.
            raise TypeError(f"images must be a list of images or an N x H x W x C array, got {describe(images)}; "
                            "for one image use segment()")
        if len(images) == 0:
            raise ValueError("images is empty: give at least one image")
        plain = conditional_embeddings is None and self._plain_text_prompts(prompts)
        prompt_lists = self._prompts_per_image(prompts, len(images)) if plain else None
        arrays = []
        for index, image in enumerate(images):
            try:
                arrays.append(load_image(image, self.max_image_pixels))
            except (ValueError, TypeError, FileNotFoundError) as error:
                raise type(error)(f"images[{index}]: {error}") from error
        sources = [str(image) if isinstance(image, (str, os.PathLike)) else None for image in images]
        if prompt_lists is None:
            # Expressions, image prompts or embeddings: one encoded image at a time.
            from .refine import predict_prompts, resolve_prompts

            per_image = self._prompt_objects_per_image(prompts, len(images))
            dim = self.embedding_dim if conditional_embeddings is not None else None
            # Resolved once per distinct list (images share one unless given a list each): image
            # prompts are loaded and hashed, expressions parsed, embeddings checked only once.
            resolved: dict[int, list] = {}
            one_list_each = len(per_image) > 1 and per_image[0] is not prompts  # segment() wraps its one list
            for index, image_prompts in enumerate(per_image):
                if id(image_prompts) not in resolved:
                    name = f"prompts[{index}]" if one_list_each else "prompts"
                    resolved[id(image_prompts)] = resolve_prompts(image_prompts, conditional_embeddings, dim, name)
            results = []
            for array, image_prompts, source in zip(arrays, per_image, sources):
                result = predict_prompts(self.session(array, threshold), resolved[id(image_prompts)])
                result.source = source
                results.append(result)
            return results
        sizes = [(a.shape[0], a.shape[1]) for a in arrays]
        logits: list[np.ndarray] = []
        packed: list[PackedMasks | None] = []
        # One batch at a time from pixels to host outputs: device and pinned memory stay bounded
        # by the batch size, however many images are given.
        for start in range(0, len(arrays), self.batch_size):
            end = start + self.batch_size
            pixels = self.pixel_values(arrays[start:end])
            counts = [len(p) for p in prompt_lists[start:end]]
            chunk = self.host_outputs(self._decode_prompt_lists(pixels, prompt_lists[start:end]), counts,
                                      sizes[start:end], threshold)
            logits.extend(chunk[0])
            packed.extend(chunk[1])
        return [
            SegmentationResult(
                prompts=list(p), logits=l, image_size=size, threshold=threshold,
                source=source, threads=self.kernel_threads, packed=masks,
            )
            for p, l, size, source, masks in zip(prompt_lists, logits, sizes, sources, packed)
        ]

    def session(self, image: object, threshold: float = 0.5) -> Session:
        """An interactive `Session` on `image`: the vision stage runs now, once; each prompt asked
        of the session then costs the (cached) prompt stage and the decoder only."""
        from .refine import Session

        return Session(self, image, threshold)

    # -- dense features -----------------------------------------------------------------------

    def dense_features(self, image: object, method: str = "clearclip", size=None, stride: int | None = None):
        """`h x w x D` L2-normalised per-patch embeddings in CLIP's joint image-text space (see
        `fastclipseg.features`): "clearclip" or "maskclip", at patch resolution by default;
        `size=(H, W)`, `size="image"` or `stride=N` (one feature per N pixels) upsample."""
        from .features import dense_features

        return dense_features(self, image, method=method, size=size, stride=stride)

    def semantic_segment(self, image: object, class_names: Sequence[str], method: str = "clearclip", **options):
        """A label map over `class_names` from dense features: one vision pass for all classes."""
        from .features import semantic_segment

        return semantic_segment(self, image, class_names, method=method, **options)

    def segment_stream(
        self,
        images: Iterable[object],
        prompts: str | Sequence[str],
        *,
        threshold: float = 0.5,
        batch_size: int | None = None,
        smooth: float | None = None,
        skip: Collection[str] = (),
    ) -> FrameStream:
        """Segment any iterable of images (paths, PIL images, arrays; sizes may vary) with the same
        prompts, as a stream: one `FrameResult` per image, in order, or a `FrameError` for an image
        that could not be read (the stream goes on).

        Images are read and preprocessed in background threads, batched (`batch_size` frames per
        network call; default: this segmenter's), and overlapped with the network and with
        whatever the caller does with each result; at most `FrameStream.max_in_flight` images are
        held at once, whatever the stream's length. The prompt embeddings are computed once.
        A path's `key` is the path and other images' `image:N`; keys in `skip` are left out (used
        to resume a run). `smooth` is as in `segment_video`.
        """
        from .sources import image_items

        items = image_items(images, skip=skip, max_pixels=self.max_image_pixels)
        return self._stream(items, prompts, threshold=threshold, batch_size=batch_size, smooth=smooth)

    def segment_video(
        self,
        source: str | os.PathLike | Iterable[object],
        prompts: str | Sequence[str],
        *,
        threshold: float = 0.5,
        batch_size: int | None = None,
        every_n: int = 1,
        start: float | None = None,
        end: float | None = None,
        smooth: float | None = None,
        skip: Collection[str] = (),
        smooth_state: np.ndarray | None = None,
    ) -> FrameStream:
        """Segment the frames of a video: one `FrameResult` per processed frame, in order, with its
        frame number (`index`, counted from the first frame) and `timestamp` (seconds).

        `source`: a video file or URL that PyAV opens (`pip install 'fastclipseg[video]'`), or any
        iterable of frames (arrays, PIL images; numbered from 0, no timestamps). `every_n`: keep
        every n-th frame; `start`/`end`: the time range in seconds (video files only). A frame that
        fails to decode is yielded as a `FrameError` and the video goes on; a video with no
        decodable frame raises `ValueError` when reached. `smooth`: None (off) or the newest
        frame's weight in (0, 1] of an exponential moving average of the logits (see
        `LogitSmoother`: 0.5 cuts independent noise to a third of its variance and delays a
        moving object by one frame). `skip` and `smooth_state` resume an interrupted run: keys
        (`frame:N`) already done, and the smoothed logits of the last frame done.
        Decoding, preprocessing and the network overlap in background threads, as in
        `segment_stream`. Raises at once for a missing or unreadable video file.
        """
        from .sources import check_every, check_time_range, frame_items, open_video, video_items

        check_every(every_n)
        check_time_range(start, end)
        if isinstance(source, (str, os.PathLike)):
            # Open the file now, so that a missing or unreadable video raises here, not in a thread.
            open_video(source).close()
            items = video_items(source, every_n=every_n, start=start, end=end, skip=skip,
                                max_pixels=self.max_image_pixels)
        else:
            if start is not None or end is not None:
                raise ValueError("start and end need a video file (frames from an iterable have no timestamps)")
            items = frame_items(source, every_n=every_n, skip=skip, max_pixels=self.max_image_pixels)
        return self._stream(items, prompts, threshold=threshold, batch_size=batch_size, smooth=smooth,
                            smooth_state=smooth_state)

    def _stream(self, items, prompts, *, threshold, batch_size, smooth, smooth_state=None) -> FrameStream:
        from .pipeline import FrameStream
        from .smoothing import LogitSmoother, check_smoothing

        from .refine import looks_like_expression

        threshold = check_threshold(threshold)
        prompt_list = normalize_prompts(prompts)
        expressions = [p for p in prompt_list if looks_like_expression(p)]
        if expressions:
            raise ValueError(f"streams take text prompts; {expressions[0]!r} is a prompt expression (AND, OR, NOT, "
                             "{...}): use segment() or a session for expressions")
        if batch_size is None:
            batch_size = self.batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1 (or None for the segmenter's), got {batch_size!r}")
        weight = check_smoothing(smooth)
        smoother = LogitSmoother(weight) if weight is not None else None
        if smooth_state is not None:
            if smoother is None:
                raise ValueError("smooth_state needs smooth= (it is the state of the moving average)")
            smoother.restore(smooth_state)
        return FrameStream(self, items, prompt_list, threshold=threshold, batch_size=batch_size, smoother=smoother)

    @staticmethod
    def _plain_text_prompts(prompts: object) -> bool:
        """Whether every prompt is an ordinary text (no expression syntax, no image): the batched path."""
        from .refine import looks_like_expression

        if prompts is None:
            return False
        if isinstance(prompts, str):
            return not looks_like_expression(prompts)
        if not isinstance(prompts, Sequence):
            return True  # let _prompts_per_image raise its error
        flat = [p for group in prompts for p in group] if prompts and all(isinstance(p, (list, tuple)) for p in prompts) else list(prompts)
        return all(isinstance(p, str) and not looks_like_expression(p) for p in flat)

    @staticmethod
    def _prompt_objects_per_image(prompts: object, count: int) -> list:
        """One prompt list per image, for the per-image path (lists of lists are per image)."""
        if prompts is None:
            return [None] * count
        if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, (list, tuple)) for p in prompts):
            if len(prompts) != count:
                raise ValueError(f"got {len(prompts)} prompt lists for {count} images: give one list per image")
            return list(prompts)
        return [prompts] * count

    @staticmethod
    def _prompts_per_image(prompts: object, count: int) -> list[list[str]]:
        if isinstance(prompts, str):
            return [normalize_prompts(prompts)] * count
        if not isinstance(prompts, Sequence):
            raise TypeError(f"prompts must be a string, a list of strings or one list per image, got {type(prompts).__name__}")
        if len(prompts) > 0 and all(isinstance(p, (list, tuple)) for p in prompts):
            if len(prompts) != count:
                raise ValueError(f"got {len(prompts)} prompt lists for {count} images: give one list per image")
            return [normalize_prompts(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        shared = normalize_prompts(prompts)
        return [shared] * count

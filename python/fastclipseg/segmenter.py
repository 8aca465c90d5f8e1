"""`FastSegmenter`: text-prompted segmentation with the staged CLIPSeg network.

A thin facade over `fastclipseg.core.InferenceCore`: it loads a model (hub id, local folder,
export or loaded model), checks the arguments of `segment` / `segment_batch`, and hands sessions,
streams and dense features the core. transformers is never imported unless the caller passes a
transformers model: a model folder or hub id loads into `StandaloneCLIPSeg` (see
`model/loading.py`), and an export needs no model at all (see `model/export_processor.py`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .core import InferenceCore, check_processor, default_batch_size
from .engines import (
    COMPILED_BACKENDS,
    MANIFEST_NAME,
    ArtifactError,
    Calibration,
    available_precisions,
    check_precision,
    choose_precision,
    create_engine,
    default_cache_dir,
    load_export,
    parse_device,
    read_manifest,
    release_freed_memory,
    resolve_backend,
    write_export,
)
from .features import (
    DenseFeatures,
    SemanticSegmentation,
    dense_features,
    semantic_segment,
)
from .model import DEFAULT_MODEL
from .model.export_processor import PROCESSOR_FILES, ExportProcessor
from .model.files import ModelLoadError
from .model.stages import Stages
from .model.standalone import StandaloneCLIPSeg, is_clipseg_model
from .ops.edges import Edges, as_edges
from .ops.image_processor import PreprocessConfig, preprocess_images
from .ops.postprocess import PackedMasks
from .ops.validation import (
    DEFAULT_MAX_PIXELS,
    check_threshold,
    describe,
    load_image,
    normalize_prompts,
)
from .prompts.resolve import looks_like_expression, resolve_prompts
from .results import SegmentationResult
from .session import Session, predict_prompts
from .streams import FrameStream, image_stream, video_stream
from .streams.calibration import calibration_images

if TYPE_CHECKING:
    from transformers import CLIPSegForImageSegmentation

__all__ = ["FastSegmenter", "default_batch_size"]


def _core_attribute(name: str, doc: str, settable: bool = False) -> property:
    """A property that reads (and, if `settable`, sets) the inference core's attribute `name`."""

    def get(self: FastSegmenter):
        return getattr(self.core, name)

    def set_(self: FastSegmenter, value) -> None:
        setattr(self.core, name, value)

    return property(get, set_ if settable else None, doc=doc)


class FastSegmenter:
    """CLIPSeg split into a vision, a prompt and a decoder stage, each run only as often as needed.

    One image with K prompts runs the vision tower once (the transformers reference runs it K
    times); prompt embeddings are cached by text (LRU, `prompt_cache_size` entries). The work
    around the network (resize + normalise, upsample + threshold + RLE) runs in the native
    kernels of `fastclipseg.ops` on `kernel_threads` threads (None: all cores), or, on CUDA, on
    the GPU (`fastclipseg.ops.device`). The network runs on one of the backends of
    `fastclipseg.engines` (eager torch, TorchScript, ONNX Runtime; CUDA graphs and TensorRT on
    CUDA) in fp32, bf16, fp16 or int8.

    Build one with `FastSegmenter.from_pretrained(...)`; `export()` writes a compiled copy that
    `from_pretrained` loads without the transformers model. `core` is the `InferenceCore` that
    does the work; the attributes below read it.
    """

    def __init__(
        self,
        model: CLIPSegForImageSegmentation | StandaloneCLIPSeg,
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
        keep_model: bool = True,
    ) -> None:
        """Build the stages of `model` and the engine that runs them.

        `backend`: "torch" (eager; fp32 is the reference), "torchscript", "onnxruntime",
        "cudagraphs", "tensorrt" or "auto" (the fastest for the device and precision);
        `precision`: "fp32", "bf16", "fp16" (CUDA), "int8" (see `fastclipseg.engines`) or "auto"
        (the fastest whose parity bar holds on this CPU: `engines.choose_precision`; `precision`
        then says which). The default, fp32 with backend "torch", is the exact reference.
        Compiled backends keep their build in `cache_dir` (default: `$FASTCLIPSEG_CACHE` or the
        user cache folder), so later starts skip compiling;
        `cache=False` compiles into a temporary folder instead. `threads` and `providers` set
        ONNX Runtime's intra-op threads (default: torch's thread count) and execution providers.
        `batch_size`: images per vision-stage call (None: `default_batch_size`).
        `text_encoder`: a callable mapping a list of prompts to `(K, P)` embeddings in CLIPSeg's
        conditional space (e.g. a multilingual model distilled to CLIP's text space) used instead
        of the CLIP text tower; its results are cached like the tower's.
        `device_processing`: resize + normalise and upsample + threshold on the network's device
        (`fastclipseg.ops.device.processing`) instead of the native CPU kernels; None: on for CUDA when
        the processor resizes bilinearly (CLIPSeg's does; another filter keeps the host path).
        `calibration`: a folder of images like yours, for backend "tensorrt" in precision "int8".
        `keep_model=False`: hold only the engine, not `model`, so that its fp32 weights can be freed
        where the engine runs copies of them (compiled backends, bf16, int8: 0.6 GB for the
        full-size model); image prompts, dense features and `export()` then raise, as on a
        segmenter loaded from an export.
        """
        if not is_clipseg_model(model):
            raise TypeError("model must be a CLIPSeg model (a transformers CLIPSegForImageSegmentation, or the "
                            f"StandaloneCLIPSeg fastclipseg loads from a folder), got {type(model).__name__}")
        check_processor(processor)
        model = model.eval()
        preprocess_config = PreprocessConfig.from_image_processor(processor.image_processor)
        stages = Stages(model, preprocess_config.size)
        cache_dir = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if cache else None
        engine = create_engine(
            backend, stages, device, precision, cache_dir=cache_dir,
            threads=threads, providers=list(providers) if providers else None,
            calibration=self._calibration(calibration, preprocess_config, kernel_threads),
        )
        self.core = InferenceCore(
            engine, processor, stages.prompt.max_tokens, model=model if keep_model else None,
            stages=stages if keep_model else None,
            prompt_cache_size=prompt_cache_size, max_image_pixels=max_image_pixels, batch_size=batch_size,
            kernel_threads=kernel_threads, text_encoder=text_encoder, device_processing=device_processing,
        )
        self.cache_dir = cache_dir

    @classmethod
    def _from_core(cls, core: InferenceCore, cache_dir: Path | None) -> FastSegmenter:
        segmenter = cls.__new__(cls)
        segmenter.core = core
        segmenter.cache_dir = cache_dir
        return segmenter

    @staticmethod
    def _calibration(calibration: str | os.PathLike | None, config: PreprocessConfig, kernel_threads: int | None
                     ) -> Callable[[], Calibration] | None:
        """What `create_engine` calls for a tensorrt int8 build: the calibration folder's images
        (hashed), preprocessed as this segmenter preprocesses its inputs (None without a folder)."""
        if calibration is None:
            return None
        folder = Path(calibration).expanduser()
        preprocess = functools.partial(preprocess_images, config=config, threads=kernel_threads)
        return lambda: calibration_images(folder, size=config.size).for_engine(preprocess)

    # -- what the core holds ----------------------------------------------------------------

    engine = _core_attribute("engine", "The `Engine` that runs the network's stages.", settable=True)
    model = _core_attribute("model", "The CLIPSeg model: a `StandaloneCLIPSeg` (loaded from a folder or hub id) or the "
                                     "transformers model passed in; None for a segmenter loaded from an export.")
    stages = _core_attribute("stages", "The network's stages (`fastclipseg.model.stages.Stages`; None for an export).")
    processor = _core_attribute("processor", "The model's processor (tokenizer and image processor).")
    preprocess_config = _core_attribute("preprocess_config", "Resize and normalisation settings (`PreprocessConfig`).")
    batch_size = _core_attribute("batch_size", "Images per vision-stage call.", settable=True)
    max_image_pixels = _core_attribute("max_image_pixels", "The largest image accepted, in pixels.")
    kernel_threads = _core_attribute("kernel_threads", "Threads of the native kernels (None: all cores).")
    text_encoder = _core_attribute("text_encoder", "The custom text encoder, or None for CLIP's text tower.")
    prompt_cache = _core_attribute("prompt_cache", "Text prompt embeddings, LRU-cached by text.")
    image_prompt_cache = _core_attribute("image_prompt_cache", "Image prompt embeddings, cached by `ImagePrompt.key`.")
    device_processing = _core_attribute("device_processing", "Pre/post-processing on the device, or None (host).")
    embedding_dim = _core_attribute("embedding_dim", "The width P of the prompt embeddings the decoder takes.")

    @property
    def backend(self) -> str:
        """The engine's backend: "torch", "torchscript", "onnxruntime", "cudagraphs" or "tensorrt"."""
        return self.core.engine.name

    @property
    def precision(self) -> str:
        """The engine's precision: "fp32", "bf16", "fp16" or "int8"."""
        return self.core.engine.precision

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | CLIPSegForImageSegmentation | StandaloneCLIPSeg = DEFAULT_MODEL,
        *,
        processor=None,
        device: str | torch.device = "cpu",
        precision: str | None = None,
        backend: str | None = None,
        local_files_only: bool = False,
        **options,
    ) -> FastSegmenter:
        """Load from a hub id, a local folder in the transformers layout, an export, or a loaded model.

        `name_or_path`: a hub id such as "CIDAS/clipseg-rd64-refined" (taken from the HuggingFace
        cache, or downloaded into it), a folder with config.json, model.safetensors, tokenizer and
        preprocessor files (both load without importing transformers: `model.loading`), a folder
        written by `export()` (its backend and precision are used; no model is loaded), or a
        `CLIPSegForImageSegmentation` or `StandaloneCLIPSeg` (then `processor` is required).
        `backend` and `precision` default to "torch" and "fp32".
        Other keyword arguments (`cache`, `cache_dir`, `threads`, `providers`,
        `prompt_cache_size`, `max_image_pixels`, `batch_size`, `kernel_threads`, `text_encoder`,
        `device_processing`, `calibration`, `keep_model`) go to the constructor (an export takes
        no `calibration`, and holds no model whatever `keep_model` says).
        """
        if isinstance(name_or_path, (str, os.PathLike)) and (Path(name_or_path).expanduser() / MANIFEST_NAME).is_file():
            return cls._from_export(Path(name_or_path).expanduser(), device=device, precision=precision,
                                    backend=backend, processor=processor, **options)
        from .model.loading import load_model_and_processor

        backend = backend or "torch"
        precision = precision or "fp32"
        if is_clipseg_model(name_or_path):
            if processor is None:
                raise ValueError(f"a loaded {type(name_or_path).__name__} needs its processor: pass processor=")
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
        options.pop("keep_model", None)  # an export holds no model either way
        # The processor's files are read only after load_export has checked them against the manifest.
        engine, manifest = load_export(directory, parse_device(device), threads=threads,
                                       providers=list(providers) if providers else None,
                                       reads=PROCESSOR_FILES if processor is None else ())
        if processor is None:
            try:
                processor = ExportProcessor(directory)
            except (ModelLoadError, FileNotFoundError) as error:
                raise ArtifactError(str(error)) from error
            release_freed_memory()  # what parsing the tokenizer left in the heap (about 15 MB)
        core = InferenceCore(engine, processor, int(manifest["max_prompt_tokens"]), **options)
        return cls._from_core(core, cache_dir=None)

    def export(
        self, directory: str | os.PathLike, backend: str = "auto", precision: str | None = None, overwrite: bool = False
    ) -> Path:
        """Compile the stages for `backend` ("torchscript", "onnxruntime", "aoti" or "auto") and `precision`
        (default: this segmenter's; "auto": `engines.choose_precision` for this CPU and backend) and
        write them, the manifest and the processor files to `directory`.

        `FastSegmenter.from_pretrained(directory)` loads the result without the transformers model.
        An existing non-empty `directory` is replaced only with `overwrite=True`. A build of the
        same model already in the cache is copied rather than compiled again, and a new build is
        stored in the cache as well (so a later start of the same model and backend loads it).
        Returns the folder.
        """
        self.core.require_model("exporting", "export from the model")
        device = torch.device("cpu")
        named = available_precisions(backend, device) if backend != "auto" else None
        precision = choose_precision(precision or self.precision, device, named).precision
        resolved = resolve_backend(backend, device, precision)
        if resolved not in COMPILED_BACKENDS:
            raise ValueError(f"backend {backend!r} has no compiled form to export: use one of {', '.join(COMPILED_BACKENDS)}")
        check_precision(precision, device, available_precisions(resolved, device), resolved)
        directory = Path(directory).expanduser()
        if directory.exists() and not directory.is_dir():  # never replaced, even with overwrite=True
            raise FileExistsError(f"{directory} is a file, not a folder: choose another folder for the export")
        if directory.exists() and any(directory.iterdir()) and not overwrite:
            raise FileExistsError(f"{directory} exists and is not empty: choose another folder or pass overwrite=True")
        write_export(resolved, self.core.stages, precision, device, directory, processor=self.core.processor, cache_dir=self.cache_dir)
        return directory

    # -- the core's work, for callers who drive the stages themselves --------------------------

    def encode_prompts(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """`(K, P)` conditional embeddings of text prompts (cached by text)."""
        return self.core.encode_prompts(prompts)

    def encode_image_prompts(self, prompts: Sequence[object]) -> torch.Tensor:
        """`(K, P)` conditional embeddings of image prompts (`ImagePrompt`s or images; cached by key)."""
        return self.core.encode_image_prompts(prompts)

    def pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 arrays -> `(N, 3, S, S)` model input (see `InferenceCore.pixel_values`)."""
        return self.core.pixel_values(images)

    def predict_logits(self, pixel_values: torch.Tensor, prompts_per_image: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """Logits `(K_i, h, w)` for each image's prompts, on the CPU (see `InferenceCore.predict_logits`)."""
        return self.core.predict_logits(pixel_values, prompts_per_image)

    def predict_logits_shared(self, pixel_values: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Stacked logits `(N * K, h, w)` for N images with the same K prompt embeddings, on the device."""
        return self.core.predict_logits_shared(pixel_values, embeddings)

    def host_outputs(self, logits: torch.Tensor, counts: Sequence[int], sizes: Sequence[tuple[int, int]],
                     threshold: float, on_device: bool = True):
        """Per image: float32 logits on the host, and device-computed masks (see `InferenceCore.host_outputs`)."""
        return self.core.host_outputs(logits, counts, sizes, threshold, on_device)

    # -- the API ----------------------------------------------------------------------------

    def segment(
        self, image: object, prompts: object = None, threshold: float = 0.5, *, conditional_embeddings: object = None,
        edges: Edges | bool | dict | None = None,
    ) -> SegmentationResult:
        """Segment one image (path, PIL.Image or HxWx3 uint8 RGB array) with one or more prompts.

        A prompt is a text ("a cat"), a prompt expression ("(a dog OR a cat) AND NOT a collar
        {+5}", see `fastclipseg.prompts.expressions`), or an image prompt (`ImagePrompt`, `PIL.Image`,
        uint8 array, `pathlib.Path`: "things like this"); `conditional_embeddings` adds K x P
        embedding rows of your own. Each gives one mask of the result, in order.

        `edges`: masks that follow the image's edges (`fastclipseg.ops.edges`): True for the
        measured defaults, an `Edges(radius, eps, guide, subsample)` or a dict of its fields; off by
        default.
        """
        if prompts is None and conditional_embeddings is None:
            raise TypeError("prompts must be a string, a list of strings or image prompts, got NoneType")
        if conditional_embeddings is None and self._plain_text_prompts(prompts):
            prompts = normalize_prompts(prompts)
        return self.segment_batch([image], [prompts] if prompts is not None else None, threshold=threshold,
                                  conditional_embeddings=conditional_embeddings, edges=edges)[0]

    def segment_batch(
        self,
        images: Sequence[object],
        prompts: object = None,
        threshold: float = 0.5,
        *,
        conditional_embeddings: object = None,
        edges: Edges | bool | dict | None = None,
    ) -> list[SegmentationResult]:
        """Segment several images: `prompts` is shared by all images, or one list per image.

        Prompts and `edges` are as in `segment`; `conditional_embeddings` (K x P) are added to
        every image's prompts. An invalid image raises with its index and what was wrong; see
        `load_image`.
        """
        threshold = check_threshold(threshold)
        edge_options = as_edges(edges)
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
                arrays.append(load_image(image, self.core.max_image_pixels))
            except (ValueError, TypeError, FileNotFoundError) as error:
                raise type(error)(f"images[{index}]: {error}") from error
        sources = [str(image) if isinstance(image, (str, os.PathLike)) else None for image in images]
        if prompt_lists is None:
            # Expressions, image prompts or embeddings: one encoded image at a time.
            per_image = self._prompt_objects_per_image(prompts, len(images))
            dim = self.core.embedding_dim if conditional_embeddings is not None else None
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
                result = predict_prompts(self.session(array, threshold, edges=edge_options), resolved[id(image_prompts)])
                result.source = source
                results.append(result)
            return results
        sizes = [(a.shape[0], a.shape[1]) for a in arrays]
        logits: list[np.ndarray] = []
        packed: list[PackedMasks | None] = []
        # One batch at a time from pixels to host outputs: device and pinned memory stay bounded
        # by the batch size, however many images are given.
        core = self.core
        for start in range(0, len(arrays), core.batch_size):
            end = start + core.batch_size
            pixels = core.pixel_values(arrays[start:end])
            counts = [len(p) for p in prompt_lists[start:end]]
            chunk = core.host_outputs(core.predict_prompt_lists(pixels, prompt_lists[start:end]), counts,
                                      sizes[start:end], threshold, edges=edge_options, images=arrays[start:end])
            logits.extend(chunk[0])
            packed.extend(chunk[1])
        return [
            SegmentationResult(
                prompts=list(p), logits=l, image_size=size, threshold=threshold,
                source=source, threads=core.kernel_threads, packed=masks, edges=edge_options,
                guide=array if edge_options is not None else None,
            )
            for p, l, size, source, masks, array in zip(prompt_lists, logits, sizes, sources, packed, arrays)
        ]

    def session(self, image: object, threshold: float = 0.5, *, edges: Edges | bool | dict | None = None) -> Session:
        """An interactive `Session` on `image`: the vision stage runs now, once; each prompt asked
        of the session then costs the (cached) prompt stage and the decoder only. `edges` as in
        `segment`, for every mask of the session."""
        return Session(self.core, image, threshold, edges=edges)

    # -- dense features -----------------------------------------------------------------------

    def dense_features(self, image: object, method: str = "clearclip", size=None, stride: int | None = None
                       ) -> DenseFeatures:
        """`h x w x D` L2-normalised per-patch embeddings in CLIP's joint image-text space (see
        `fastclipseg.features`): "clearclip" or "maskclip", at patch resolution by default;
        `size=(H, W)`, `size="image"` or `stride=N` (one feature per N pixels) upsample."""
        return dense_features(self.core, image, method=method, size=size, stride=stride)

    def semantic_segment(self, image: object, class_names: Sequence[str], method: str = "clearclip", **options
                         ) -> SemanticSegmentation:
        """A label map over `class_names` from dense features: one vision pass for all classes."""
        return semantic_segment(self.core, image, class_names, method=method, **options)

    # -- streams ------------------------------------------------------------------------------

    def segment_stream(
        self,
        images: Iterable[object],
        prompts: str | Sequence[str],
        *,
        threshold: float = 0.5,
        batch_size: int | None = None,
        smooth: float | None = None,
        skip: Collection[str] = (),
        edges: Edges | bool | dict | None = None,
    ) -> FrameStream:
        """Segment any iterable of images (paths, PIL images, arrays; sizes may vary) with the same
        prompts, as a stream: one `FrameResult` per image, in order, or a `FrameError` for an image
        that could not be read (the stream goes on).

        Images are read and preprocessed in background threads, batched (`batch_size` frames per
        network call; default: this segmenter's), and overlapped with the network and with
        whatever the caller does with each result; at most `FrameStream.max_in_flight` images are
        held at once, whatever the stream's length. The prompt embeddings are computed once.
        A path's `key` is the path and other images' `image:N`; keys in `skip` are left out (used
        to resume a run). `smooth` is as in `segment_video`, `edges` as in `segment`.
        """
        return image_stream(self.core, images, prompts, threshold=threshold, batch_size=batch_size, smooth=smooth,
                            skip=skip, edges=edges)

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
        edges: Edges | bool | dict | None = None,
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
        `segment_stream`. Raises at once for a missing or unreadable video file. `edges` as in
        `segment`.
        """
        return video_stream(self.core, source, prompts, threshold=threshold, batch_size=batch_size, every_n=every_n,
                            start=start, end=end, smooth=smooth, skip=skip, smooth_state=smooth_state, edges=edges)

    @staticmethod
    def _plain_text_prompts(prompts: object) -> bool:
        """Whether every prompt is an ordinary text (no expression syntax, no image): the batched path."""
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

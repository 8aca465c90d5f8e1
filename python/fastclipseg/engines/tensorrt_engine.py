"""`tensorrt`: the vision and decoder stages compiled by torch-tensorrt (issue 7; never run: no
development machine has had TensorRT, see README).

What runs where:

| precision | vision stage | prompt stage | decoder stage |
| --- | --- | --- | --- |
| fp32 | TensorRT fp32 | eager fp32 | TensorRT fp32 |
| fp16 | TensorRT fp16 (weights cast to fp16) | eager fp32 | TensorRT fp16, fp32 logits |
| int8 | TensorRT int8: ModelOpt PTQ (QDQ nodes), calibrated on a folder of images | eager fp32 | TensorRT fp32 |

The prompt stage runs once per distinct prompt (its embeddings are cached), so, as
`precision.py` does off the CPU, it stays fp32; it is saved as a plain `torch.export` program so that a cache
entry loads without transformers. The decoder stays fp32 in int8 for the reason `precision.py`
gives (its FiLM-conditioned layers decide the mask boundary).

Shapes: the vision stage is compiled with a dynamic batch dimension over `buckets` (see
`buckets.py`), the decoder with dynamic images and pairs; the engine pads every call up to a
bucket, so TensorRT only ever sees the few shapes its profile was tuned for.

torch-tensorrt documentation followed (docs.pytorch.org/TensorRT):
- "Compiling Exported Programs with Torch-TensorRT" (user_guide/compilation/dynamo_export):
  `torch.export.export` then `torch_tensorrt.dynamo.compile(exported_program, inputs=[...])`;
  `use_explicit_typing` (respect the model's dtypes) replaces the deprecated `enabled_precisions`
  in recent versions, older versions take `enabled_precisions={torch.float16}`.
- "Dynamic shapes with Torch-TensorRT" and "Example: Saving and Loading Models with Dynamic
  Shapes": `torch_tensorrt.Input(min_shape=, opt_shape=, max_shape=, dtype=)` and
  `torch.export.Dim`; the decoder's two inputs that share the pairs dimension need one shared
  `Dim`, which is why the stages are exported here rather than traced by `torch_tensorrt.compile`.
- "Quantization (INT8 / FP8 / FP4)" and "Deploy Quantized Models using Torch-TensorRT"
  (vgg16_ptq): `modelopt.torch.quantization.quantize(model, mtq.INT8_DEFAULT_CFG, forward_loop)`,
  then export inside `modelopt.torch.quantization.utils.export_torch_mode()` and compile.
- "Saving models compiled with Torch-TensorRT": `torch_tensorrt.save(module, path,
  output_format="exported_program", arg_inputs=...)`, loaded with `torch.export.load(path).module()`.

Everything that imports torch_tensorrt, tensorrt or modelopt sits behind `require_tensorrt()` /
`require_modelopt()`; the rest of this module (profiles, cache keys, the
stage export) runs on any machine.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..model.stages import PromptStage, Stages
from .artifacts import (
    ArtifactError,
    build_atomically,
    describe_build,
    mismatches,
    read_manifest,
    verified_files,
    weights_sha256,
    write_manifest,
)
from .base import ModuleEngine
from .buckets import (
    DEFAULT_BUCKETS,
    bucket_for,
    check_buckets,
    pad_batch,
    pair_buckets,
    split_into_buckets,
    unpad,
)
from .precision import prepare_stages

log = logging.getLogger("fastclipseg")

BACKEND = "tensorrt"
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = "pip install 'fastclipseg[tensorrt]'"
# The pip distribution that provides each import name (what the error message asks to install).
REQUIRED = {"torch_tensorrt": "torch-tensorrt", "tensorrt": "tensorrt"}
MODELOPT = ("modelopt", "nvidia-modelopt")
FILES = {"vision": "vision.ep", "prompt": "prompt.ep", "decoder": "decoder.ep"}

_find_spec = importlib.util.find_spec  # a module attribute, so tests can pretend a package is missing


def check_tensorrt_precision(precision: object) -> None:
    """A clear ValueError for a precision TensorRT does not build here (bf16 among them)."""
    if precision not in TENSORRT_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: backend 'tensorrt' runs {', '.join(TENSORRT_PRECISIONS)}")


# -- availability ----------------------------------------------------------------------------------


def missing_packages() -> list[str]:
    """The pip names of the packages torch-tensorrt needs that are not installed."""
    return [package for module, package in REQUIRED.items() if _find_spec(module) is None]


@functools.lru_cache(maxsize=1)
def _import_failure() -> str | None:
    """Why `import torch_tensorrt` fails on an installation that has the packages (None: it works)."""
    try:
        importlib.import_module("torch_tensorrt")
    except Exception as error:  # noqa: BLE001 - a broken install raises anything from OSError to RuntimeError
        return f"{type(error).__name__}: {error}"
    return None


def tensorrt_available() -> bool:
    """True where torch-tensorrt and tensorrt are installed and import (CUDA is checked separately)."""
    return not missing_packages() and _import_failure() is None


def require_tensorrt(device: str | torch.device | None = None):
    """The `torch_tensorrt` module; a clear ValueError for a non-CUDA device, ImportError for what is missing."""
    if device is not None:
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(
                f"backend 'tensorrt' runs on CUDA devices only, not {device.type!r}: use device='cuda' "
                "(or backend='torchscript' / 'onnxruntime' on the CPU)"
            )
        if not torch.cuda.is_available():
            raise ValueError(f"backend 'tensorrt' needs a CUDA device, but this PyTorch build sees none ({device})")
    missing = missing_packages()
    if missing:
        raise ImportError(
            f"backend 'tensorrt' needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed: {INSTALL_HINT} (torch-tensorrt must match this torch, {torch.__version__})"
        )
    failure = _import_failure()
    if failure is not None:
        raise ImportError(
            f"torch-tensorrt is installed but does not import ({failure}); it must be built for this torch "
            f"({torch.__version__}) and CUDA: reinstall with {INSTALL_HINT}"
        )
    return importlib.import_module("torch_tensorrt")


def require_modelopt():
    """`modelopt.torch.quantization`, which INT8 calibration needs; a clear ImportError without it."""
    module, package = MODELOPT
    if _find_spec(module) is None:
        raise ImportError(
            f"precision 'int8' with backend 'tensorrt' calibrates with NVIDIA ModelOpt ({package}), "
            f"which is not installed: pip install {package}"
        )
    return importlib.import_module("modelopt.torch.quantization")


def gpu_facts(device: torch.device) -> dict[str, str]:
    """The GPU's name and compute capability: a TensorRT engine runs only on the GPU it was built for."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu_name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


# -- shapes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageDims:
    """The sizes of one model that the profiles need (read from its stages by `stage_dims`)."""

    image_size: int
    patch_size: int
    layers: int  # extracted vision layers, L
    width: int  # vision hidden size, D
    projection_dim: int  # conditional embedding size, P
    max_tokens: int


def stage_dims(stages: Stages) -> StageDims:
    vision, prompt = stages.vision, stages.prompt
    return StageDims(
        image_size=int(vision.image_size),
        patch_size=int(vision.patch_embedding.kernel_size[0]),
        layers=len(vision.extract_layers),
        width=int(vision.pre_layernorm.normalized_shape[0]),
        projection_dim=int(prompt.text_projection.out_features),
        max_tokens=int(prompt.max_tokens),
    )


def _snap(value: int, buckets: tuple[int, ...]) -> int:
    return bucket_for(min(max(value, buckets[0]), buckets[-1]), buckets)


def profiles(
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    image_size: int = 352,
    max_prompts: int = 8,
    *,
    patch_size: int = 16,
    layers: int = 3,
    width: int = 768,
    projection_dim: int = 512,
    precision: str = "fp16",
    max_pairs: int | None = None,
    opt_batch: int = 8,
    opt_prompts: int = 2,
) -> dict:
    """min/opt/max input shapes of the vision stage and the decoder (a JSON-able dict).

    The defaults describe the released CLIPSeg (rd64-refined: 352 px, ViT-B/16, layers 3, 6, 9).
    Vision: `pixel_values (B, 3, S, S)`, B dynamic from the smallest to the largest bucket.
    Decoder: `activations (L, B, T, D)` with the same B, and `embeddings (K, P)` / `image_index (K,)`
    with K pairs dynamic from 1 to `max_pairs` (default: the largest bucket x `max_prompts`);
    larger calls are split by the engine. `opt` is the shape TensorRT tunes its kernels for.
    """
    buckets = check_buckets(buckets)
    check_tensorrt_precision(precision)
    for name, value in (("image_size", image_size), ("max_prompts", max_prompts), ("patch_size", patch_size),
                        ("layers", layers), ("width", width), ("projection_dim", projection_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch_size}")
    max_pairs = buckets[-1] * max_prompts if max_pairs is None else int(max_pairs)
    pairs = pair_buckets(max_pairs)
    tokens = (image_size // patch_size) ** 2 + 1
    images = {"min": buckets[0], "opt": _snap(opt_batch, buckets), "max": buckets[-1]}
    k = {"min": 1, "opt": _snap(images["opt"] * opt_prompts, pairs), "max": max_pairs}
    # fp16 vision emits fp16 activations, which the fp16 decoder takes as they are.
    activation_dtype = "float16" if precision == "fp16" else "float32"

    def spec(shape: Callable[[str], list[int]], dtype: str) -> dict:
        return {"min": shape("min"), "opt": shape("opt"), "max": shape("max"), "dtype": dtype}

    return {
        "precision": precision,
        "buckets": list(buckets),
        "pair_buckets": list(pairs),
        "image_size": image_size,
        "max_prompts": max_prompts,
        "vision": {"pixel_values": spec(lambda at: [images[at], 3, image_size, image_size], "float32")},
        "decoder": {
            "activations": spec(lambda at: [layers, images[at], tokens, width], activation_dtype),
            "embeddings": spec(lambda at: [k[at], projection_dim], "float32"),
            "image_index": spec(lambda at: [k[at]], "int64"),
        },
    }


def model_profiles(stages: Stages, buckets: Sequence[int] = DEFAULT_BUCKETS, max_prompts: int = 8, **options) -> dict:
    """`profiles` for the model of `stages`."""
    dims = stage_dims(stages)
    return profiles(buckets, dims.image_size, max_prompts, patch_size=dims.patch_size, layers=dims.layers,
                    width=dims.width, projection_dim=dims.projection_dim, **options)


# -- cache keys ------------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, tuples as lists: one text per value, whatever the dict order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def engine_cache_key(
    weights_sha256: str,
    gpu_name: str,
    compute_capability: str,
    tensorrt_version: str,
    torch_tensorrt_version: str,
    precision: str,
    profile: dict,
    calibration_sha256: str | None = None,
    extra: dict | None = None,
) -> str:
    """The sha256 of a canonical JSON of everything a TensorRT engine depends on.

    TensorRT engines are specific to the GPU model and compute capability and to the TensorRT
    version that built them, so all of these are in the key; `calibration_sha256` (int8) makes a
    different calibration set a different engine. `extra`: further fields (e.g. torch's version).
    """
    if precision == "int8" and calibration_sha256 is None:
        raise ValueError("an int8 engine's cache key needs the calibration_sha256 of its calibration images")
    fields = {
        "backend": BACKEND,
        "weights_sha256": weights_sha256,
        "gpu_name": gpu_name,
        "compute_capability": str(compute_capability),
        "tensorrt_version": tensorrt_version,
        "torch_tensorrt_version": torch_tensorrt_version,
        "precision": precision,
        "profile": profile,
        "calibration_sha256": calibration_sha256,
        "extra": extra or {},
    }
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()


def describe_tensorrt_build(
    weights: str, dims: StageDims, eos_token_id: int, precision: str, profile: dict, gpu: dict[str, str],
    calibration_sha256: str | None = None, versions: dict[str, str | None] | None = None,
) -> dict:
    """The manifest fields of a TensorRT build (artifacts.describe_build's, plus the GPU, profile and calibration).

    An entry is loaded only if every one of these matches (`artifacts.mismatches`). `versions`:
    the library versions to record (default: the installed ones, `artifacts.library_versions`).
    """
    build = describe_build(BACKEND, precision, torch.device("cuda"), weights, dims.image_size, dims.max_tokens,
                           eos_token_id)
    if versions is not None:
        build["versions"] = versions
    versions = build["versions"]
    build.update(
        gpu_name=gpu["gpu_name"],
        compute_capability=gpu["compute_capability"],
        profile=profile,
        calibration_sha256=calibration_sha256,
    )
    build["engine_key"] = engine_cache_key(
        weights, gpu["gpu_name"], gpu["compute_capability"], str(versions.get("tensorrt")),
        str(versions.get("torch-tensorrt")), precision, profile, calibration_sha256,
        extra={key: value for key, value in versions.items() if key not in ("tensorrt", "torch-tensorrt")},
    )
    return build


# -- calibration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """What an int8 engine is calibrated on, from the caller (engines read no image files):
    `sha256` names the calibration set in the cache key; `pixels()` gives its `(count, 3, S, S)`
    float32 pixel values, preprocessed as the segmenter preprocesses its inputs, and is called only
    when an engine is compiled (a cache hit needs no pixels)."""

    sha256: str
    pixels: Callable[[], torch.Tensor]


# -- preparing and exporting the stages (torch only: runs on the CPU too) --------------------------

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


def prepare_tensorrt_stages(stages: Stages, precision: str) -> dict[str, nn.Module]:
    """The modules each precision compiles (see the table at the top); copies, the model is untouched.

    fp32 and fp16 are `precision.prepare_stages`'s modules; int8 starts from the fp32 ones, which
    ModelOpt then quantises (not `prepare_stages`' dynamic int8, which TensorRT does not take).
    """
    check_tensorrt_precision(precision)
    # A copy first: compiling moves the modules to the GPU and ModelOpt quantises them in place.
    prepared = prepare_stages(copy.deepcopy(stages).eval(), "fp32" if precision == "int8" else precision)
    return {name: module.eval() for name, module in prepared._asdict().items()}


def _example_size(spec_min: int, spec_max: int) -> int:
    # torch.export specialises a dimension whose example size is 0 or 1, so trace with 2 when allowed.
    return min(max(2, spec_min), spec_max)


def _dim(name: str, low: int, high: int):
    return None if low == high else torch.export.Dim(name, min=low, max=high)


def export_inputs(profile: dict, stage: str, device: torch.device | str = "cpu") -> tuple[tuple, tuple]:
    """Example inputs and `dynamic_shapes` for `torch.export.export` of `stage` ("vision" or "decoder")."""
    if stage == "vision":
        spec = profile["vision"]["pixel_values"]
        b = _example_size(spec["min"][0], spec["max"][0])
        pixels = torch.randn(b, *spec["min"][1:], device=device)
        return (pixels,), ({0: _dim("images", spec["min"][0], spec["max"][0])},)
    if stage == "decoder":
        acts, embs = profile["decoder"]["activations"], profile["decoder"]["embeddings"]
        b = _example_size(acts["min"][1], acts["max"][1])
        k = _example_size(embs["min"][0], embs["max"][0])
        layers, _, tokens, width = acts["min"]
        activations = torch.randn(layers, b, tokens, width, device=device, dtype=_DTYPES[acts["dtype"]])
        embeddings = torch.randn(k, embs["min"][1], device=device)
        image_index = torch.arange(k, device=device) % b
        images = _dim("images", acts["min"][1], acts["max"][1])
        pairs = _dim("pairs", embs["min"][0], embs["max"][0])  # one Dim: embeddings and index share K
        return (activations, embeddings, image_index), ({1: images}, {0: pairs}, {0: pairs})
    raise ValueError(f"stage {stage!r} has no TensorRT profile: compiled stages are vision and decoder")


def export_prompt_stage(prompt: PromptStage, device: torch.device | str = "cpu"):
    """The prompt stage as a `torch.export` program with dynamic prompts and tokens (runs eagerly)."""
    max_tokens = int(prompt.max_tokens)
    tokens = min(7, max_tokens)
    ids = torch.zeros(2, tokens, dtype=torch.long, device=device)
    ids[:, -1] = int(prompt.eos_token_id)
    dynamic = ({0: torch.export.Dim("prompts", min=1), 1: torch.export.Dim("tokens", min=1, max=max_tokens)},)
    with torch.no_grad():
        return torch.export.export(prompt, (ids,), dynamic_shapes=dynamic, strict=False)


def export_stage(module: nn.Module, profile: dict, stage: str, device: torch.device | str = "cpu"):
    """`stage` exported with the dynamic dimensions of `profile` (what `dynamo.compile` takes)."""
    args, dynamic = export_inputs(profile, stage, device)
    with torch.no_grad():
        return torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)


# -- compiling (needs torch-tensorrt and a GPU) ----------------------------------------------------


def _trt_inputs(torch_tensorrt, specs: dict) -> list:
    return [
        torch_tensorrt.Input(min_shape=spec["min"], opt_shape=spec["opt"], max_shape=spec["max"],
                             dtype=_DTYPES[spec["dtype"]])
        for spec in specs.values()
    ]


def precision_options(compile_fn: Callable, precision: str) -> dict:
    """The precision arguments `torch_tensorrt.dynamo.compile` takes in the installed version.

    Recent versions type the network from the model itself (`use_explicit_typing=True`; the
    fp16 modules are already cast, int8 comes from ModelOpt's QDQ nodes) and deprecate
    `enabled_precisions`; older ones need `enabled_precisions` to allow fp16 / int8 kernels.
    """
    parameters = inspect.signature(compile_fn).parameters
    if "use_explicit_typing" in parameters:
        return {"use_explicit_typing": True}
    allowed = {"fp32": {torch.float32}, "fp16": {torch.float16, torch.float32}, "int8": {torch.int8, torch.float32}}
    return {"enabled_precisions": allowed[precision]}


def _calibrate_int8(vision: nn.Module, pixels: torch.Tensor, device: torch.device, batch: int) -> nn.Module:
    """ModelOpt PTQ ("Quantization (INT8 / FP8 / FP4)"): QDQ nodes with scales from `pixels`."""
    mtq = require_modelopt()

    def forward_loop(model: nn.Module) -> None:
        with torch.no_grad():
            for start in range(0, pixels.shape[0], batch):
                model(pixels[start:start + batch].to(device))

    return mtq.quantize(vision, mtq.INT8_DEFAULT_CFG, forward_loop)


def compile_stages(
    stages: Stages, precision: str, device: torch.device, profile: dict, directory: Path,
    calibration: Calibration | None = None, calibration_batch: int = 8,
) -> dict[str, Path]:
    """Compile the vision and decoder stages with TensorRT, export the prompt stage, save all three."""
    torch_tensorrt = require_tensorrt(device)
    if precision == "int8" and calibration is None:
        raise ValueError("precision 'int8' with backend 'tensorrt' needs calibration images (a Calibration)")
    modules = {name: module.to(device) for name, module in prepare_tensorrt_stages(stages, precision).items()}
    paths = {stage: directory / name for stage, name in FILES.items()}
    torch.export.save(export_prompt_stage(cast("PromptStage", modules["prompt"]), device), str(paths["prompt"]))
    for stage in ("vision", "decoder"):
        module = modules[stage]
        quantized = stage == "vision" and precision == "int8"
        export_mode = contextlib.nullcontext()
        if quantized:
            module = _calibrate_int8(module, calibration.pixels(), device, calibration_batch)  # type: ignore[union-attr]
            from modelopt.torch.quantization.utils import export_torch_mode  # type: ignore[import-not-found]

            export_mode = export_torch_mode()  # as "Deploy Quantized Models using Torch-TensorRT" does
        with export_mode:
            program = export_stage(module, profile, stage, device)
        args, dynamic = export_inputs(profile, stage, device)  # the shapes torch_tensorrt.save records
        with torch.no_grad():
            compiled = torch_tensorrt.dynamo.compile(
                program,
                inputs=_trt_inputs(torch_tensorrt, profile[stage]),
                device=device,
                min_block_size=1,
                **precision_options(torch_tensorrt.dynamo.compile, precision),
            )
            save_options: dict[str, Any] = {"output_format": "exported_program", "arg_inputs": list(args)}
            if "dynamic_shapes" in inspect.signature(torch_tensorrt.save).parameters:
                save_options["dynamic_shapes"] = dynamic  # "Saving and Loading Models with Dynamic Shapes"
            torch_tensorrt.save(compiled, str(paths[stage]), **save_options)
    return paths


# -- the engine ------------------------------------------------------------------------------------


class TensorRTEngine(ModuleEngine):
    """The Engine of a TensorRT build: files loaded with `torch.export.load`, calls padded to buckets.

    Calls of any size run: more images than the largest bucket are split into chunks (decode
    splits the pairs with their images), as the profile's shapes stop at that bucket.
    """

    name = BACKEND

    def __init__(self, files: dict[str, Path], device: torch.device, precision: str, profile: dict) -> None:
        require_tensorrt(device)  # registers TensorRT's runtime ops that the saved programs call
        self.device = torch.device(device)
        self.precision = precision
        self.profile = profile
        self.buckets = tuple(profile["buckets"])
        self.pair_buckets = tuple(profile["pair_buckets"])
        self.vision = torch.export.load(str(files["vision"])).module()
        self.prompt = torch.export.load(str(files["prompt"])).module()
        self.decoder = torch.export.load(str(files["decoder"])).module()

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.device, torch.float32)
        outputs, start = [], 0
        for chunk, bucket in split_into_buckets(int(pixel_values.shape[0]), self.buckets):
            padded, n = pad_batch(pixel_values[start:start + chunk], bucket)
            outputs.append(unpad(self.vision(padded), n, dim=1))
            start += chunk
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    @torch.inference_mode()
    def decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        dtype = _DTYPES[self.profile["decoder"]["activations"]["dtype"]]
        activations = activations.to(self.device, dtype)
        embeddings = embeddings.to(self.device, torch.float32)
        image_index = image_index.to(self.device, torch.int64)
        images, largest = int(activations.shape[1]), self.buckets[-1]
        if images <= largest or image_index.shape[0] == 0:
            return self._decode(activations, embeddings, image_index)
        # More images than the profile holds: each run of `largest` images with the pairs on them.
        logits, found = None, 0
        for low in range(0, images, largest):
            high = min(low + largest, images)
            pairs = ((image_index >= low) & (image_index < high)).nonzero().squeeze(1)
            if pairs.numel() == 0:
                continue
            part = self._decode(activations[:, low:high], embeddings[pairs], image_index[pairs] - low)
            if logits is None:
                logits = part.new_empty((image_index.shape[0], *part.shape[1:]))
            logits[pairs] = part
            found += pairs.numel()
        if logits is None or found != image_index.shape[0]:
            raise ValueError(f"image_index must hold image numbers in [0, {images})")
        return logits

    def _decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        """`decode` of at most the largest bucket of images, on the device in the profile's dtypes."""
        # Contiguous already, unless an unpadded slice of a call with more images.
        activations = pad_batch(activations, bucket_for(int(activations.shape[1]), self.buckets), dim=1)[0].contiguous()
        outputs, start = [], 0
        for chunk, bucket in split_into_buckets(int(image_index.shape[0]), self.pair_buckets):
            emb, n = pad_batch(embeddings[start:start + chunk], bucket)
            index, _ = pad_batch(image_index[start:start + chunk], bucket)
            outputs.append(unpad(self.decoder(activations, emb, index), n))
            start += chunk
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)


def _entry(cache_dir: Path, build: dict) -> Path:
    return Path(cache_dir) / "engines" / f"tensorrt-{build['engine_key'][:32]}"


def _shapes(profile: dict) -> dict:
    return {stage: profile[stage] for stage in ("vision", "decoder")}


def cached_tensorrt_engine(
    stages: Stages, precision: str, device: torch.device, cache_dir: Path, *,
    buckets: Sequence[int] = DEFAULT_BUCKETS, max_prompts: int = 8, calibration: Calibration | None = None,
    **profile_options,
) -> TensorRTEngine:
    """The TensorRT engine from `cache_dir` when a valid entry is there, else compiled and stored.

    As `compiled.cached_engine`: the entry's manifest must match this build (weights, precision,
    GPU, compute capability, versions, profile, calibration hash) and every file its sha256; a
    mismatched, corrupt or unloadable entry is rebuilt with a warning. Builds are atomic.
    """
    device = torch.device(device)
    require_tensorrt(device)
    check_tensorrt_precision(precision)
    profile = model_profiles(stages, buckets, max_prompts, precision=precision, **profile_options)
    build = describe_tensorrt_build(
        weights_sha256(stages), stage_dims(stages), int(stages.prompt.eos_token_id), precision, profile,
        gpu_facts(device), calibration.sha256 if calibration is not None else None,
    )
    entry = _entry(Path(cache_dir), build)
    if entry.exists():
        try:
            manifest = read_manifest(entry)
            problems = mismatches(manifest, build)
            if problems:
                raise ArtifactError(f"built for something else ({'; '.join(problems)})")
            engine = TensorRTEngine(verified_files(entry, manifest), device, precision, profile)
            log.info("loaded the tensorrt %s engine from the cache %s", precision, entry)
            return engine
        except (ArtifactError, RuntimeError, OSError) as error:
            warnings.warn(f"rebuilding the cached tensorrt {precision} engine in {entry}: {error}", stacklevel=2)
    log.info("compiling the tensorrt %s engine (minutes on first start; cached in %s)", precision, entry)

    def fill(staging: Path) -> None:
        # compile_stages works on copies of the stages: the model stays where it is.
        files = compile_stages(stages, precision, device, profile, staging, calibration)
        write_manifest(staging, build, files, _shapes(profile))

    build_atomically(entry, fill)
    return TensorRTEngine({stage: entry / name for stage, name in FILES.items()}, device, precision, profile)

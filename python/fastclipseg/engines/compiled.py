"""Building, caching, exporting and loading the compiled backends (torchscript, onnxruntime, aoti)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Collection
from pathlib import Path

import platformdirs
import torch

from ..model.files import first_line
from ..model.stages import Stages
from . import aoti_engine, onnx_engine, torchscript_engine
from .artifacts import (
    ArtifactError,
    build_atomically,
    check_machine,
    describe_build,
    mismatches,
    read_manifest,
    verified_files,
    weights_sha256,
    write_manifest,
)
from .base import Engine
from .example_inputs import example_inputs
from .precision import PRECISIONS, PreparedStages, int8_decoder_dtype, prepare_stages

log = logging.getLogger("fastclipseg")
COMPILED_BACKENDS = ("torchscript", "onnxruntime", "aoti")
CACHE_ENV = "FASTCLIPSEG_CACHE"


def default_cache_dir() -> Path:
    """`$FASTCLIPSEG_CACHE`, or the user cache folder (e.g. ~/.cache/fastclipseg on Linux)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return platformdirs.user_cache_path("fastclipseg")


def _stage_facts(stages: Stages) -> tuple[int, int, int]:
    return stages.vision.image_size, stages.prompt.max_tokens, stages.prompt.eos_token_id


def _build_files(
    backend: str, stages: Stages, precision: str, directory: Path, built: dict | None = None
) -> tuple[dict[str, Path], dict]:
    """Compile the stages of `stages` in `precision` into `directory`; returns the files and the I/O shapes.

    Tracing and export run on the CPU; the model's weights go back to their device afterwards.
    `built`: receives the traced modules (torchscript), which `_load` can run without reading the files.
    """
    device = next(stages.parameters()).device
    try:
        return _compile_on_cpu(backend, stages.cpu(), precision, directory, built)
    finally:
        stages.to(device)


def _shares_tensors(prepared: PreparedStages, stages: Stages) -> bool:
    """True where a prepared stage holds any of the model's own parameters or buffers."""
    def storages(modules) -> set[int]:
        return {tensor.untyped_storage().data_ptr() for module in modules
                for tensor in (*module.parameters(), *module.buffers()) if tensor.numel()}

    return bool(storages(prepared) & storages([stages]))


def _compile_on_cpu(
    backend: str, stages: Stages, precision: str, directory: Path, built: dict | None = None
) -> tuple[dict[str, Path], dict]:
    image_size, max_tokens, eos_token_id = _stage_facts(stages)
    # ONNX Runtime quantises the exported fp32 graph itself; torch's quantised modules do not export.
    source_precision = "fp32" if backend == "onnxruntime" and precision == "int8" else precision
    # The prompt stage in the precision saves memory (see precision.py); ONNX Runtime's int8 quantises
    # the exported fp32 prompt graph itself (onnx_engine.build).
    prepared = prepare_stages(stages.eval(), source_precision, int8_decoder_dtype(backend, torch.device("cpu")),
                              prompt_in_precision=True)
    if built is not None and _shares_tensors(prepared, stages):
        # Traced modules keep the tensors they were traced with: sharing the model's (fp32), they would
        # follow later in-place edits of it, which an engine loaded from the files does not.
        built = None
    inputs = example_inputs(prepared, image_size, max_tokens, eos_token_id)
    with torch.no_grad():
        logits = prepared.decoder(*inputs["decoder"])
    layers, _, tokens, width = inputs["decoder"][0].shape
    shapes = {
        "pixel_values": ["images", 3, image_size, image_size],
        "activations": [layers, "images", tokens, width],
        "input_ids": ["prompts", f"tokens <= {max_tokens}"],
        "embeddings": ["prompts", inputs["decoder"][1].shape[1]],
        "image_index": ["pairs"],
        "logits": ["pairs", *logits.shape[1:]],
    }
    started = time.perf_counter()
    if backend == "torchscript":
        files = torchscript_engine.build(prepared, directory, inputs, built)
    elif backend == "onnxruntime":
        files = onnx_engine.build(prepared, directory, inputs, precision, max_tokens)
    elif backend == "aoti":
        files = aoti_engine.build(prepared, directory, inputs, max_tokens)
    else:
        raise ValueError(f"backend {backend!r} has no compiled form: compiled backends are {', '.join(COMPILED_BACKENDS)}")
    log.info("compiled the %s %s stages in %.1f s", backend, precision, time.perf_counter() - started)
    return files, shapes


def _load(
    backend: str, files: dict[str, Path], device: torch.device, precision: str, threads, providers, built=None
) -> Engine:
    if backend == "torchscript":
        return torchscript_engine.TorchScriptEngine(files, device, precision, modules=built or None)
    if backend == "aoti":
        return aoti_engine.AotiEngine(files, device, precision)
    return onnx_engine.OnnxRuntimeEngine(files, precision, threads=threads, providers=providers)


def _entry(cache_dir: Path, build: dict) -> Path:
    key = hashlib.sha256(json.dumps(build, sort_keys=True).encode()).hexdigest()[:32]
    return Path(cache_dir) / "engines" / key


def _cached_entry(entry: Path, build: dict) -> tuple[dict[str, Path], dict]:
    """The verified files and manifest of a cache entry built exactly as `build` says; ArtifactError otherwise."""
    manifest = read_manifest(entry)
    problems = mismatches(manifest, build)
    if problems:
        raise ArtifactError(f"built for something else ({'; '.join(problems)})")
    return verified_files(entry, manifest), manifest


def write_export(
    backend: str, stages: Stages, precision: str, device: torch.device, directory: Path, processor=None,
    cache_dir: Path | None = None,
) -> dict:
    """Compile into `directory` (built aside, then renamed into place) and write the manifest.

    With `cache_dir`, the build goes through that cache: a valid build of the same model there is
    copied instead of compiling again, and a new build is stored there first (replacing a damaged
    entry), so a later start of the same model and backend loads it (an aoti build takes about a
    minute). A cache that cannot be
    written is skipped. With `processor`, its tokenizer and preprocessor files are saved too, so the
    folder loads on its own.
    """
    build = describe_build(backend, precision, device, weights_sha256(stages), *_stage_facts(stages))
    manifest: dict = {}

    def fill(staging: Path) -> None:
        stored = _through_cache(cache_dir, backend, stages, precision, build) if cache_dir is not None else None
        if stored is not None:
            cached, shapes = stored
            files = {stage: Path(shutil.copy2(path, staging / path.name)) for stage, path in cached.items()}
        else:
            files, shapes = _build_files(backend, stages, precision, staging)
        if processor is not None:
            processor.save_pretrained(staging)
        manifest.update(write_manifest(staging, build, files, shapes))

    build_atomically(directory, fill)
    return manifest


def _through_cache(cache_dir: Path, backend: str, stages: Stages, precision: str,
                   build: dict) -> tuple[dict[str, Path], dict] | None:
    """The stage files and I/O shapes of `build` in the cache: its valid entry, else one compiled into it
    now (replacing an invalid one); None where the cache cannot be written."""
    entry = _entry(cache_dir, build)
    if entry.is_dir():
        try:
            cached, cached_manifest = _cached_entry(entry, build)
            if isinstance(cached_manifest.get("shapes"), dict):
                return cached, cached_manifest["shapes"]
        except ArtifactError:
            pass  # compiled again below
    try:
        return _build_entry(entry, backend, stages, precision, build)
    except OSError as error:
        log.info("not storing the export's build in the cache %s (%s)", cache_dir, error)
        return None


def _build_entry(entry: Path, backend: str, stages: Stages, precision: str, build: dict,
                 built: dict | None = None) -> tuple[dict[str, Path], dict]:
    """Compile into the cache entry `entry` (built aside, then renamed into place); returns its stage
    files and I/O shapes."""
    names: dict[str, str] = {}
    shapes: dict = {}

    def fill(staging: Path) -> None:
        files, stage_shapes = _build_files(backend, stages, precision, staging, built)
        write_manifest(staging, build, files, stage_shapes)  # hashes the files it has just written
        names.update({stage: path.name for stage, path in files.items()})
        shapes.update(stage_shapes)

    build_atomically(entry, fill)
    return {stage: entry / name for stage, name in names.items()}, shapes


def load_export(
    directory: Path, device: torch.device, threads=None, providers=None, reads: Collection[str] = ()
) -> tuple[Engine, dict]:
    """The engine of an export folder, after checking the manifest and every file it lists against
    their sha256. `reads`: the other files the caller will read (the processor's); each one present
    must be listed in the manifest."""
    manifest = read_manifest(directory)
    files = verified_files(directory, manifest, reads)  # first: the fields below are trusted only once checked
    backend, precision = manifest["backend"], manifest["precision"]
    if backend not in COMPILED_BACKENDS:
        raise ArtifactError(f"{directory}: unknown backend {backend!r} in the manifest")
    if precision not in PRECISIONS:
        raise ArtifactError(f"{directory}: unknown precision {precision!r} in the manifest")
    if manifest["device"] != device.type:
        raise ArtifactError(f"{directory} was compiled for {manifest['device']!r}, not {device.type!r}")
    check_machine(directory, manifest)
    try:
        return _load(backend, files, device, precision, threads, providers), manifest
    except (RuntimeError, OSError) as error:
        # The files match their hashes, so the runtime itself refused them (e.g. another version's format).
        raise ArtifactError(f"{directory}: {backend} could not load the stage files ({first_line(error)}); export "
                            "the model again with this installation") from error


def cached_engine(
    backend: str, stages: Stages, precision: str, device: torch.device, cache_dir: Path | None, threads=None, providers=None
) -> Engine:
    """The compiled engine, from `cache_dir` when a valid entry is there, else built (and stored).

    An entry is loaded only if its manifest matches this model's weights hash, backend, precision,
    device and library versions, and every file matches its recorded sha256; otherwise it is
    rebuilt. `cache_dir=None` builds in a temporary folder that is removed after loading.
    """
    build = describe_build(backend, precision, device, weights_sha256(stages), *_stage_facts(stages))
    if cache_dir is not None:
        try:
            (Path(cache_dir) / "engines").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            warnings.warn(f"cannot use the cache folder {cache_dir} ({error.strerror or error}); "
                          "compiling without a cache", stacklevel=3)
            cache_dir = None
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="fastclipseg-") as scratch:
            built: dict = {}
            files, _ = _build_files(backend, stages, precision, Path(scratch), built)
            return _load(backend, files, device, precision, threads, providers, built)

    entry = _entry(cache_dir, build)
    if entry.exists():
        try:
            engine = _load(backend, _cached_entry(entry, build)[0], device, precision, threads, providers)
            log.info("loaded the %s %s stages from the cache %s", backend, precision, entry)
            return engine
        except (ArtifactError, RuntimeError, OSError) as error:
            # ArtifactError: mismatch or corruption; RuntimeError/OSError: a runtime refused the file.
            warnings.warn(f"rebuilding the cached {backend} {precision} engine in {entry}: {error}", stacklevel=3)
    log.info("compiling the %s %s stages (first start for this model; cached in %s)", backend, precision, entry)
    built: dict = {}
    files, _ = _build_entry(entry, backend, stages, precision, build, built)
    return _load(backend, files, device, precision, threads, providers, built)


def clear_cache(cache_dir: Path) -> int:
    """Remove every cached engine under `cache_dir`; returns how many entries were removed."""
    engines = Path(cache_dir) / "engines"
    if not engines.is_dir():
        return 0
    entries = [path for path in engines.iterdir() if path.is_dir()]
    for path in entries:
        shutil.rmtree(path, ignore_errors=True)
    return len(entries)

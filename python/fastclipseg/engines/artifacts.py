"""Compiled stages on disk: the manifest, content hashes, and atomic writes.

An export (`FastSegmenter.export`) and a cache entry are the same thing: a folder with one file
per stage and `fastclipseg-export.json`, which records what the files were built from (weights
hash, backend, precision, shapes, library versions) and the sha256 of every other file in the
folder (the stages, and an export's tokenizer and processor files), plus a sha256 of its own
contents. Loading checks all of them, so no byte that decides a result goes unchecked. The folder
is built under a temporary name and renamed into place, so a crash never leaves a half-written export.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .. import __version__
from ..model.files import ModelLoadError, read_json
from . import aoti_engine
from .precision import int8_decoder_dtype

MANIFEST_NAME = "fastclipseg-export.json"
FORMAT = "fastclipseg-export"
# 2: every file in the folder is hashed ("other_files") and the manifest itself ("manifest_sha256");
# version 1 hashed the stage files only.
FORMAT_VERSION = 2
DIGEST_KEY = "manifest_sha256"
REEXPORT = "export the model again (fastclipseg export MODEL --out FOLDER, or FastSegmenter.export)"
STAGES = ("vision", "prompt", "decoder")
# The libraries whose versions decide what a backend's files contain.
BACKEND_LIBRARIES = {
    "torchscript": ("torch",),
    "aoti": ("torch",),
    "onnxruntime": ("torch", "onnx", "onnxruntime"),
    "tensorrt": ("torch", "tensorrt", "torch-tensorrt", "nvidia-modelopt"),
}


class ArtifactError(ModelLoadError):
    """An export or cache folder that cannot be loaded: missing, corrupt, or built for something else."""


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions(backend: str) -> dict[str, str | None]:
    """fastclipseg's version and those of `BACKEND_LIBRARIES[backend]` (None where not installed)."""

    versions: dict[str, str | None] = {"fastclipseg": __version__}
    for package in BACKEND_LIBRARIES.get(backend, ()):
        versions[package] = torch.__version__ if package == "torch" else _version(package)
    return versions


# Backends whose files are machine code compiled against this torch and CPU: another torch's or
# CPU's may crash the process rather than misbehave, so a mismatch is refused, not warned about.
NATIVE_BACKENDS = ("aoti",)


def machine_fields(backend: str) -> dict:
    """The fields of a build that describe the installation (and, for native code, the CPU) it was
    built on: library versions, and an aoti build's CPU features."""
    fields: dict = {"versions": library_versions(backend)}
    if backend in NATIVE_BACKENDS:
        # Its compiled kernels use the vector instructions of the CPU they were built on.
        fields["cpu_features"] = aoti_engine.cpu_features()
    return fields


def check_machine(directory: Path, manifest: dict) -> None:
    """Refuse an export built for another CPU, or a native one built with other library versions;
    warn (and go on) where only another backend's versions differ."""
    backend = manifest["backend"]
    here = machine_fields(backend)
    if manifest.get("cpu_features") != here.get("cpu_features"):
        raise ArtifactError(
            f"{directory} was compiled for a CPU with {manifest.get('cpu_features')!r}; this one has "
            f"{here.get('cpu_features')!r}, and the compiled kernels may use instructions it lacks: export the "
            "model again on this kind of CPU")
    if manifest.get("versions") != here["versions"]:
        differ = f"{directory} was built with {manifest.get('versions')}, this installation has {here['versions']}"
        if backend in NATIVE_BACKENDS:
            raise ArtifactError(f"{differ}; {backend} packages load only into the torch they were compiled against: "
                                f"{REEXPORT}")
        warnings.warn(f"{differ}; loading it anyway (export again if it misbehaves)", stacklevel=4)


def _on_threads(function: Callable, items: Iterable) -> list:
    """`function` over `items` on a few threads, results in order. hashlib releases the GIL while it
    hashes a large buffer, so hashes run side by side: a full-size model's 0.6 GB of fp32 weights
    take 0.45 s on one thread of a Xeon and about half that on two, which a first run's start-up feels."""
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="fastclipseg-hash") as pool:
        return list(pool.map(function, items))


def weights_sha256(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer of `module`: the sha256 of each one's name, dtype, shape
    and the sha256 of its bytes (per tensor, so that the tensors hash on several threads)."""
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())

    def describe(name: str) -> str:
        tensor = tensors[name].detach().cpu().contiguous()
        # A byte view: works for every dtype (numpy has no bf16) and copies nothing.
        data = hashlib.sha256(memoryview(tensor.reshape(-1).view(torch.uint8).numpy())).hexdigest()
        return f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{data};"

    return hashlib.sha256("".join(_on_threads(describe, sorted(tensors))).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_build(
    backend: str, precision: str, device: torch.device, weights: str, image_size: int, max_tokens: int, eos_token_id: int
) -> dict:
    """The manifest fields that identify a build; an entry is loaded only if all of them match."""
    build = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "precision": precision,
        "device": device.type,
        "weights_sha256": weights,
        "image_size": image_size,
        "max_prompt_tokens": max_tokens,
        "eos_token_id": eos_token_id,
        **machine_fields(backend),
    }
    if precision == "int8":
        # The int8 decoder's dtype depends on the CPU (bf16 only where it is native).
        build["int8_decoder"] = str(int8_decoder_dtype(backend, device)).removeprefix("torch.")
    return build


def _file_entries(paths: list[Path]) -> list[dict]:
    return [{"sha256": digest, "bytes": path.stat().st_size} for path, digest in zip(paths, _on_threads(file_sha256, paths))]


def manifest_digest(manifest: dict) -> str:
    """The sha256 of the manifest's contents (all but this digest), independent of key order and layout."""
    body = {key: value for key, value in manifest.items() if key != DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(directory: Path, build: dict, files: dict[str, Path], shapes: dict) -> dict:
    """Write the manifest of `directory`: `build`, `shapes`, the stage `files` and every other file
    already in the folder (an export's tokenizer and processor files), each with its sha256."""
    manifest = dict(build)
    manifest["shapes"] = shapes
    stage_names = {path.name for path in files.values()}
    others = [path for path in sorted(directory.iterdir())
              if path.is_file() and path.name != MANIFEST_NAME and path.name not in stage_names]
    entries = _file_entries([*files.values(), *others])
    manifest["files"] = {stage: {"path": path.name, **entry} for (stage, path), entry in zip(files.items(), entries)}
    manifest["other_files"] = {path.name: entry for path, entry in zip(others, entries[len(files):])}
    manifest["created_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest[DIGEST_KEY] = manifest_digest(manifest)
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _plain_name(name: object) -> bool:
    """A file name inside the folder: no path may lead out of it."""
    return isinstance(name, str) and bool(name) and Path(name).name == name and name not in (".", "..")


def read_manifest(directory: Path) -> dict:
    """The parsed manifest of `directory`, its structure checked (not yet its digest or files)."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a fastclipseg export: {MANIFEST_NAME} is missing")
    manifest = read_json(path, REEXPORT, error=ArtifactError)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a fastclipseg export manifest")
    version = manifest.get("format_version")
    if version == 1:
        raise ArtifactError(
            f"{path} was written by an older fastclipseg (export format 1), which recorded the hashes of the stage "
            "files only, so its tokenizer and processor files cannot be checked; this fastclipseg loads only "
            f"exports whose every file can be checked: {REEXPORT}")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format version {version!r}; this fastclipseg reads version {FORMAT_VERSION}: {REEXPORT} "
            "with this version"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(STAGES):
        raise ArtifactError(f"{path} must list one file for each of the stages {', '.join(STAGES)}")
    for stage in STAGES:
        entry = files[stage]
        name = entry.get("path") if isinstance(entry, dict) else None
        if not _plain_name(name):
            raise ArtifactError(f"{path}: invalid file name {name!r} for stage {stage!r}")
    others = manifest.get("other_files")
    if not isinstance(others, dict) or not all(_plain_name(name) and isinstance(entry, dict)
                                               for name, entry in others.items()):
        raise ArtifactError(f"{path} must list the folder's other files (other_files, plain names): {REEXPORT}")
    if not isinstance(manifest.get(DIGEST_KEY), str):
        raise ArtifactError(f"{path} has no {DIGEST_KEY}: {REEXPORT}")
    for key, kind in (("backend", str), ("precision", str), ("device", str), ("max_prompt_tokens", int)):
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise ArtifactError(f"{path}: {key} must be a {kind.__name__}, got {manifest.get(key)!r}: {REEXPORT}")
    return manifest


def _check_files(checks: list[tuple[Path, dict, str]]) -> None:
    """Each `(path, manifest entry, what it is)` exists with the recorded size and sha256 (hashed on
    several threads); ArtifactError naming the first that does not."""
    for path, entry, what in checks:
        if not path.is_file():
            raise ArtifactError(f"{path} ({what}) is missing: {REEXPORT}")
    digests = _on_threads(file_sha256, [path for path, _, _ in checks])
    for (path, entry, what), digest in zip(checks, digests):
        if path.stat().st_size != entry.get("bytes") or digest != entry.get("sha256"):
            raise ArtifactError(f"{path} ({what}) is corrupt: its contents do not match the manifest's sha256; {REEXPORT}")


def verified_files(directory: Path, manifest: dict, reads: Collection[str] = ()) -> dict[str, Path]:
    """The stage files, after checking the manifest's own digest, then every file it lists (size
    and sha256). `reads`: other files the caller will read; each one present must be listed, so
    that no file is read unchecked. ArtifactError naming the file otherwise."""
    if manifest_digest(manifest) != manifest.get(DIGEST_KEY):
        raise ArtifactError(f"{directory / MANIFEST_NAME} is corrupt or was edited: its contents do not match its "
                            f"{DIGEST_KEY}; {REEXPORT}")
    paths = {stage: directory / manifest["files"][stage]["path"] for stage in STAGES}
    _check_files([(paths[stage], manifest["files"][stage], f"the {stage} stage") for stage in STAGES]
                 + [(directory / name, entry, "listed in the manifest") for name, entry in manifest["other_files"].items()])
    unlisted = [name for name in reads if name not in manifest["other_files"] and (directory / name).exists()]
    if unlisted:
        raise ArtifactError(f"{directory / unlisted[0]} is not in the manifest (added after the export was written?), "
                            f"so it cannot be checked: remove it, or {REEXPORT}")
    return paths


def mismatches(manifest: dict, build: dict) -> list[str]:
    """The fields of `build` that `manifest` records differently."""
    return [f"{key}: {manifest.get(key)!r} != {value!r}" for key, value in build.items() if manifest.get(key) != value]


def build_atomically(target: Path, fill: Callable[[Path], None]) -> None:
    """Run `fill` on a fresh temporary folder beside `target`, then rename it to `target`.

    An existing `target` is replaced; a failure leaves `target` as it was and removes the temporary
    folder. If another process renames its own build to `target` first, that one is kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        fill(staging)
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            # Another process built the same target in the meantime: keep theirs.
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

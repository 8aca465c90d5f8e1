"""Compiled stages on disk: the manifest, content hashes, and atomic writes.

An export (`FastSegmenter.export`) and a cache entry are the same thing: a folder with one file
per stage and `fastclipseg-export.json`, which records what the files were built from (weights
hash, backend, precision, shapes, library versions) and each file's sha256. The folder is built
under a temporary name and renamed into place, so a crash never leaves a half-written export.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

MANIFEST_NAME = "fastclipseg-export.json"
FORMAT = "fastclipseg-export"
FORMAT_VERSION = 1
STAGES = ("vision", "prompt", "decoder")
# The libraries whose versions decide what a backend's files contain.
BACKEND_LIBRARIES = {
    "torchscript": ("torch",),
    "onnxruntime": ("torch", "onnx", "onnxruntime"),
    "tensorrt": ("torch", "tensorrt", "torch-tensorrt", "nvidia-modelopt"),
}


class ArtifactError(ValueError):
    """An export or cache folder that cannot be loaded: missing, corrupt, or built for something else."""


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions(backend: str) -> dict[str, str | None]:
    """fastclipseg's version and those of `BACKEND_LIBRARIES[backend]` (None where not installed)."""
    from .. import __version__

    versions: dict[str, str | None] = {"fastclipseg": __version__}
    for package in BACKEND_LIBRARIES.get(backend, ()):
        versions[package] = torch.__version__ if package == "torch" else _version(package)
    return versions


def weights_sha256(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (names, dtypes, shapes and bytes) of `module`."""
    digest = hashlib.sha256()
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        # A byte view: works for every dtype (numpy has no bf16) and copies nothing.
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


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
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "precision": precision,
        "device": device.type,
        "weights_sha256": weights,
        "image_size": image_size,
        "max_prompt_tokens": max_tokens,
        "eos_token_id": eos_token_id,
        "versions": library_versions(backend),
    }


def write_manifest(directory: Path, build: dict, files: dict[str, Path], shapes: dict) -> dict:
    manifest = dict(build)
    manifest["shapes"] = shapes
    manifest["files"] = {
        stage: {"path": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size} for stage, path in files.items()
    }
    manifest["created_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a fastclipseg export: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path} is unreadable: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a fastclipseg export manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format version {manifest.get('format_version')!r}; this fastclipseg reads version "
            f"{FORMAT_VERSION}: export the model again with this version"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(STAGES):
        raise ArtifactError(f"{path} must list one file for each of the stages {', '.join(STAGES)}")
    return manifest


def verified_files(directory: Path, manifest: dict) -> dict[str, Path]:
    """The stage files, each checked against the size and sha256 in the manifest."""
    paths = {}
    for stage in STAGES:
        entry = manifest["files"][stage]
        # The manifest names files inside the folder only: no path may lead out of it.
        name = str(entry.get("path", ""))
        path = directory / name
        if not name or Path(name).name != name:
            raise ArtifactError(f"{directory / MANIFEST_NAME}: invalid file name {name!r} for stage {stage!r}")
        if not path.is_file():
            raise ArtifactError(f"{path} (the {stage} stage) is missing")
        if path.stat().st_size != entry.get("bytes") or file_sha256(path) != entry.get("sha256"):
            raise ArtifactError(f"{path} (the {stage} stage) is corrupt: its contents do not match the manifest's sha256")
        paths[stage] = path
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

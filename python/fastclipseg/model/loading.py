"""Loading a CLIPSeg model and its processor from a local folder or a hub id, without transformers.

A folder in the transformers layout (config.json, weights, tokenizer and image processor files)
loads into `StandaloneCLIPSeg` (`standalone.py`, weights by `weights.py`) and `FolderProcessor`
(`folder_processor.py`), which read the same files transformers reads and give the same weights and
token ids, without the seconds that importing transformers and building its model cost. A hub id
is first turned into such a folder (`hub.py`: the HuggingFace cache, or one download).

Diagnostic / escape hatch: FASTCLIPSEG_LOAD_WITH_TRANSFORMERS=1 in the environment (or
`with_transformers=True`) loads `transformers.CLIPSegForImageSegmentation` and `CLIPSegProcessor`
from the same folder instead, as fastclipseg did before; a config.json that asks for something
the standalone tree does not build (an unknown activation function) falls back to it by itself.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from . import hub
from .export_processor import check_image_settings
from .files import (
    REPLACE_MODEL_FILE,
    ModelLoadError,
    check_safetensors,
    first_line,
    read_json,
    read_json_object,
)
from .folder_processor import FolderProcessor
from .standalone import StandaloneCLIPSeg, UnsupportedModelError
from .standalone_config import ClipSegConfig
from .weights import WEIGHTS_FILES, load_standalone_model, read_state_dict, weights_file

if TYPE_CHECKING:
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

log = logging.getLogger("fastclipseg")
LOAD_WITH_TRANSFORMERS_ENV = "FASTCLIPSEG_LOAD_WITH_TRANSFORMERS"
# What a user can do about a damaged file of a cached hub model.
REFRESH_CACHED_MODEL = "clear its entry in the HuggingFace cache and download it again"

# A hub id is "name" or "owner/name" with no path syntax in it.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelUnavailableError(OSError):
    """The model could not be loaded: not on the hub, not downloadable here, or not a model folder."""


def _missing_files(folder: Path) -> list[str]:
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHTS_FILES):
        missing.append("model.safetensors")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        missing.append("tokenizer files (tokenizer.json or vocab.json + merges.txt)")
    elif not (folder / "tokenizer.json").is_file() and not (folder / "merges.txt").is_file():
        missing.append("merges.txt (vocab.json needs it)")
    if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        missing.append("preprocessor_config.json")
    return missing


def _require_files(folder: Path) -> None:
    missing = _missing_files(folder)
    if missing:
        raise ModelUnavailableError(
            f"{folder} is not a CLIPSeg model folder in the transformers layout: missing {', '.join(missing)}; "
            "copy the whole model folder (or run fastclipseg convert on an original CLIPSeg checkpoint)"
        )


# JSON files transformers may read from a model folder; each is parsed here first, so that a
# damaged one is named (transformers' own errors often name no file).
CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
IMAGE_SETTINGS_FILES = ("processor_config.json", "preprocessor_config.json")


def _check_files(folder: Path, fix: str, parse_tokenizer: bool = True) -> None:
    """Parse every config and check the weights' framing before the weights are read.

    Raises `ModelLoadError` naming the first file that is damaged; checks are cheap (headers and
    small JSON files). `parse_tokenizer=False` leaves tokenizer.json (a few MB) to the reader
    that parses it anyway, with the same errors."""
    names = (*CONFIG_FILES, "tokenizer.json", "vocab.json") if parse_tokenizer else (*CONFIG_FILES, "vocab.json")
    for name in names:
        path = folder / name
        if path.is_file():
            data = read_json(path, fix)
            if name != "vocab.json" and not isinstance(data, dict):
                raise ModelLoadError(f"{path} holds a JSON {type(data).__name__}, not an object: {fix}")
    config = read_json_object(folder / "config.json", fix)
    model_type = config.get("model_type")
    if model_type is not None and model_type != "clipseg":
        raise ModelLoadError(f"{folder / 'config.json'} describes a {model_type!r} model, not CLIPSeg: "
                             "pass a CLIPSeg model folder (model_type 'clipseg')")
    if (folder / "model.safetensors").is_file():
        check_safetensors(folder / "model.safetensors", fix)
    elif (folder / "model.safetensors.index.json").is_file():
        index = read_json_object(folder / "model.safetensors.index.json", fix)
        shards = index.get("weight_map")
        if not isinstance(shards, dict) or not all(isinstance(v, str) and Path(v).name == v for v in shards.values()):
            raise ModelLoadError(f"{folder / 'model.safetensors.index.json'} has no valid weight_map: {fix}")
        for shard in sorted(set(shards.values())):
            if not (folder / shard).is_file():
                raise ModelLoadError(f"{folder / shard} is missing (model.safetensors.index.json lists it): {fix}")
            check_safetensors(folder / shard, fix)


def load_with_transformers_requested() -> bool:
    """Whether FASTCLIPSEG_LOAD_WITH_TRANSFORMERS asks for the transformers loaders (diagnostics)."""
    return (os.environ.get(LOAD_WITH_TRANSFORMERS_ENV) or "").strip().lower() in ("1", "true", "yes", "on")


def load_model_and_processor(
    name_or_path: str | os.PathLike, local_files_only: bool = False, *, with_transformers: bool | None = None
) -> tuple[StandaloneCLIPSeg | CLIPSegForImageSegmentation, FolderProcessor | CLIPSegProcessor]:
    """Load from a local folder (transformers layout) or a hub id, in eval mode.

    Returns `(StandaloneCLIPSeg, FolderProcessor)`, read without importing transformers; with
    `with_transformers=True` (default: FASTCLIPSEG_LOAD_WITH_TRANSFORMERS=1 in the environment)
    transformers' `CLIPSegForImageSegmentation` and `CLIPSegProcessor` from the same files. A hub id
    is taken from the HuggingFace cache, or downloaded once (not with `local_files_only`, nor with
    HF_HUB_OFFLINE=1); `ModelUnavailableError` says at once when neither can be done.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if with_transformers is None:
        with_transformers = load_with_transformers_requested()
    if path.is_file():
        raise ModelUnavailableError(
            f"{text} is a file; a model is a folder in the transformers layout. To convert an original "
            "CLIPSeg checkpoint, run: fastclipseg convert " + text + " --out FOLDER"
        )
    if path.is_dir():
        _require_files(path)
        folder, fix = path, REPLACE_MODEL_FILE
    elif not _HUB_ID.match(text):
        raise FileNotFoundError(f"model folder not found: {text}")
    else:
        try:
            folder = hub.resolve(text, lambda snapshot: not _missing_files(snapshot), local_files_only=local_files_only)
        except hub.HubUnavailableError as error:
            raise ModelUnavailableError(str(error)) from error
        _require_files(folder)
        fix = REFRESH_CACHED_MODEL
    _check_files(folder, fix, parse_tokenizer=with_transformers)
    if not with_transformers:
        try:
            return _load_standalone(folder, fix)
        except UnsupportedModelError as error:
            log.info("loading %s with transformers: %s", folder, error)
            _check_files(folder, fix)
    return _load_with_transformers(folder, fix)


def _load_standalone(folder: Path, fix: str) -> tuple[StandaloneCLIPSeg, FolderProcessor]:
    """`StandaloneCLIPSeg` and `FolderProcessor` of `folder`; `ModelLoadError` naming the file otherwise."""
    config = ClipSegConfig.from_json_file(folder / "config.json", fix)
    weights = weights_file(folder)
    state = read_state_dict(folder, fix)
    try:
        model = load_standalone_model(config, state, str(folder), weights, fix)
    except (ModelLoadError, UnsupportedModelError, MemoryError):
        raise
    except Exception as error:  # torch's errors for sizes it cannot build
        raise ModelLoadError(f"{folder}: config.json and {weights} do not make a CLIPSeg model "
                             f"({type(error).__name__}: {first_line(error)}): {fix}") from error
    return model, FolderProcessor(folder, fix)


def _load_with_transformers(folder: Path, fix: str) -> tuple[CLIPSegForImageSegmentation, CLIPSegProcessor]:
    """transformers' loaders, their failures turned into `ModelLoadError`s naming the files."""
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    where = str(folder)
    weights = weights_file(folder)
    try:
        # output_loading_info: transformers fills absent weights with random values and only logs it.
        model, info = CLIPSegForImageSegmentation.from_pretrained(
            folder, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True)
    except MemoryError:
        raise
    except OSError as error:
        raise ModelLoadError(f"{where}: config.json and {weights} could not be loaded ({first_line(error)}): "
                             f"{fix}") from error
    except Exception as error:  # transformers and safetensors raise many types for damaged files
        raise ModelLoadError(f"{where}: config.json and {weights} do not make a CLIPSeg model "
                             f"({type(error).__name__}: {first_line(error)}): {fix}") from error
    mismatched = sorted(str(entry[0] if isinstance(entry, tuple) else entry)
                        for entry in info.get("mismatched_keys", ()))
    if mismatched:
        raise ModelLoadError(
            f"{where}: the weights in {weights} do not have the shapes config.json describes ({len(mismatched)} "
            f"tensors, e.g. {', '.join(mismatched[:3])}): the two files belong to different models; {fix}")
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ModelLoadError(
            f"{where}: {weights} lacks {len(missing)} of the model's weights (e.g. {', '.join(missing[:3])}), which "
            f"would be left random: it is not a whole CLIPSeg checkpoint; {fix}")
    try:
        processor = CLIPSegProcessor.from_pretrained(folder, local_files_only=True)
    except MemoryError:
        raise
    except OSError as error:
        raise ModelLoadError(f"{where}: the tokenizer and image processor files could not be loaded "
                             f"({first_line(error)}): {fix}") from error
    except Exception as error:
        present = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
        raise ModelLoadError(
            f"{where}: the tokenizer and image processor files ({', '.join(present) or 'tokenizer files'}) could not "
            f"be loaded ({type(error).__name__}: {first_line(error)}): {fix}") from error
    names = [name for name in IMAGE_SETTINGS_FILES if (folder / name).is_file()]
    check_image_settings(processor.image_processor, folder / names[0] if names else where, fix)
    return model.eval(), processor

"""Loading a CLIPSeg model and its processor from a hub id, a local folder or memory."""

from __future__ import annotations

import os
import re
from pathlib import Path

from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

from .export_processor import check_image_settings
from .files import (
    REPLACE_MODEL_FILE,
    ModelLoadError,
    check_safetensors,
    first_line,
    read_json,
    read_json_object,
)

# A hub id is "name" or "owner/name" with no path syntax in it.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelUnavailableError(OSError):
    """The model could not be loaded: not on the hub, not downloadable here, or not a model folder."""


def _require_files(folder: Path) -> None:
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")):
        missing.append("model.safetensors")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        missing.append("tokenizer files (tokenizer.json or vocab.json + merges.txt)")
    elif not (folder / "tokenizer.json").is_file() and not (folder / "merges.txt").is_file():
        missing.append("merges.txt (vocab.json needs it)")
    if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        missing.append("preprocessor_config.json")
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


def _check_files(folder: Path) -> None:
    """Parse every config and check the weights' framing before transformers reads them.

    Raises `ModelLoadError` naming the first file that is damaged; checks are cheap (headers and
    small JSON files; tokenizer.json is a few MB at most)."""
    for name in (*CONFIG_FILES, "tokenizer.json", "vocab.json"):
        path = folder / name
        if path.is_file():
            data = read_json(path, REPLACE_MODEL_FILE)
            if name != "vocab.json" and not isinstance(data, dict):
                raise ModelLoadError(f"{path} holds a JSON {type(data).__name__}, not an object: {REPLACE_MODEL_FILE}")
    config = read_json_object(folder / "config.json", REPLACE_MODEL_FILE)
    model_type = config.get("model_type")
    if model_type is not None and model_type != "clipseg":
        raise ModelLoadError(f"{folder / 'config.json'} describes a {model_type!r} model, not CLIPSeg: "
                             "pass a CLIPSeg model folder (model_type 'clipseg')")
    if (folder / "model.safetensors").is_file():
        check_safetensors(folder / "model.safetensors")
    elif (folder / "model.safetensors.index.json").is_file():
        index = read_json_object(folder / "model.safetensors.index.json", REPLACE_MODEL_FILE)
        shards = index.get("weight_map")
        if not isinstance(shards, dict) or not all(isinstance(v, str) and Path(v).name == v for v in shards.values()):
            raise ModelLoadError(f"{folder / 'model.safetensors.index.json'} has no valid weight_map: {REPLACE_MODEL_FILE}")
        for shard in sorted(set(shards.values())):
            if not (folder / shard).is_file():
                raise ModelLoadError(f"{folder / shard} is missing (model.safetensors.index.json lists it): "
                                     f"{REPLACE_MODEL_FILE}")
            check_safetensors(folder / shard)


def _weights_file(folder: Path) -> str:
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (folder / name).is_file():
            return name
    return "model.safetensors"


def load_model_and_processor(
    name_or_path: str | os.PathLike, local_files_only: bool = False
) -> tuple[CLIPSegForImageSegmentation, CLIPSegProcessor]:
    """Load from a local folder (transformers layout) or a hub id, in eval mode."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        raise ModelUnavailableError(
            f"{text} is a file; a model is a folder in the transformers layout. To convert an original "
            "CLIPSeg checkpoint, run: fastclipseg convert " + text + " --out FOLDER"
        )
    if path.is_dir():
        _require_files(path)
        _check_files(path)
        return _load(path, local_files_only=True, folder=path)
    if not _HUB_ID.match(text):
        raise FileNotFoundError(f"model folder not found: {text}")
    try:
        return _load(text, local_files_only=local_files_only)
    except ModelLoadError:
        raise
    except OSError as error:
        raise ModelUnavailableError(
            f"could not load model {text!r} from the HuggingFace hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}). Without network access, download it "
            "elsewhere (e.g. `huggingface-cli download " + text + " --local-dir FOLDER`), copy the folder here "
            "and pass its path instead of the id (HF_HUB_OFFLINE=1 skips the network retries)."
        ) from error


def _load(
    source: str | Path, local_files_only: bool, folder: Path | None = None
) -> tuple[CLIPSegForImageSegmentation, CLIPSegProcessor]:
    """transformers' loaders, their failures turned into `ModelLoadError`s naming the files (for a
    folder) or the hub id. A hub id's OSError (not found, no network) is left to the caller."""
    where = str(folder) if folder is not None else repr(source)
    weights = _weights_file(folder) if folder is not None else "the weights"
    fix = REPLACE_MODEL_FILE if folder is not None else "clear its entry in the HuggingFace cache and download it again"
    try:
        # output_loading_info: transformers fills absent weights with random values and only logs it.
        model, info = CLIPSegForImageSegmentation.from_pretrained(
            source, local_files_only=local_files_only, output_loading_info=True, ignore_mismatched_sizes=True)
    except MemoryError:
        raise
    except OSError as error:
        if folder is None:
            raise
        raise ModelLoadError(f"{where}: config.json and {weights} could not be loaded ({first_line(error)}): {fix}") from error
    except Exception as error:  # transformers and safetensors raise many types for damaged files
        raise ModelLoadError(f"{where}: config.json and {weights} do not make a CLIPSeg model "
                             f"({type(error).__name__}: {first_line(error)}): {fix}") from error
    mismatched = sorted(str(entry[0] if isinstance(entry, tuple) else entry) for entry in info.get("mismatched_keys", ()))
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
        processor = CLIPSegProcessor.from_pretrained(source, local_files_only=local_files_only)
    except MemoryError:
        raise
    except OSError as error:
        if folder is None:
            raise
        raise ModelLoadError(f"{where}: the tokenizer and image processor files could not be loaded "
                             f"({first_line(error)}): {fix}") from error
    except Exception as error:
        present = [name for name in TOKENIZER_FILES if folder is not None and (folder / name).is_file()]
        raise ModelLoadError(
            f"{where}: the tokenizer and image processor files ({', '.join(present) or 'tokenizer files'}) could not "
            f"be loaded ({type(error).__name__}: {first_line(error)}): {fix}") from error
    _check_processor_settings(processor, folder, where, fix)
    return model.eval(), processor


def _check_processor_settings(processor, folder: Path | None, where: str, fix: str) -> None:
    """The image settings as `FastSegmenter` will use them, checked here where the file is known."""

    names = [name for name in IMAGE_SETTINGS_FILES if folder is not None and (folder / name).is_file()]
    source = folder / names[0] if names else where
    check_image_settings(processor.image_processor, source, fix)

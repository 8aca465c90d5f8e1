"""Loading a CLIPSeg model and its processor from a hub id, a local folder or memory."""

from __future__ import annotations

import os
import re
from pathlib import Path

from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

from . import DEFAULT_MODEL

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
    if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        missing.append("preprocessor_config.json")
    if missing:
        raise ModelUnavailableError(
            f"{folder} is not a CLIPSeg model folder in the transformers layout: missing {', '.join(missing)}"
        )


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
        return _load(path, local_files_only=True)
    if not _HUB_ID.match(text):
        raise FileNotFoundError(f"model folder not found: {text}")
    try:
        return _load(text, local_files_only=local_files_only)
    except OSError as error:
        raise ModelUnavailableError(
            f"could not load model {text!r} from the HuggingFace hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}). Without network access, download it "
            "elsewhere (e.g. `huggingface-cli download " + text + " --local-dir FOLDER`), copy the folder here "
            "and pass its path instead of the id (HF_HUB_OFFLINE=1 skips the network retries)."
        ) from error


def _load(source: str | Path, local_files_only: bool) -> tuple[CLIPSegForImageSegmentation, CLIPSegProcessor]:
    model = CLIPSegForImageSegmentation.from_pretrained(source, local_files_only=local_files_only)
    processor = CLIPSegProcessor.from_pretrained(source, local_files_only=local_files_only)
    return model.eval(), processor

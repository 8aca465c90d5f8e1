"""An export's tokenizer and image settings, read without importing transformers.

An export folder holds the files `CLIPSegProcessor.save_pretrained` writes. Loading them through
transformers costs about 0.16 GB of memory and most of a second; transformers' CLIP tokenizer runs
on the `tokenizers` library's `tokenizer.json`, and the image settings are plain JSON, so an export
reads both directly (tests check the token ids against transformers' tokenizer).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import torch

IMAGE_SETTINGS = ("size", "image_mean", "image_std", "resample", "rescale_factor")


class ExportTokenizer:
    """The subset of a transformers tokenizer call that `PromptTokenizer` uses, on `tokenizer.json`."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: export the model again to write its tokenizer")
        self._plain = Tokenizer.from_file(str(path))
        self._truncating = Tokenizer.from_file(str(path))
        self._truncating_length: int | None = None
        self._lock = threading.Lock()  # truncation is a setting of the tokenizer object
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        pad = config.get("pad_token") or config.get("eos_token") or "<|endoftext|>"
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_token_id = self._plain.token_to_id(pad)
        if self.pad_token_id is None:
            raise ValueError(f"{config_path}: pad token {pad!r} is not in the vocabulary")

    def __call__(self, text, padding: bool = False, truncation: bool = False, max_length: int | None = None,
                 return_tensors: str | None = None) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        with self._lock:
            if truncation and max_length is not None:
                if self._truncating_length != max_length:
                    self._truncating.enable_truncation(max_length)  # counts the special tokens, as transformers does
                    self._truncating_length = max_length
                encodings = self._truncating.encode_batch(texts)
            else:
                encodings = self._plain.encode_batch(texts)
        ids = [encoding.ids for encoding in encodings]
        if padding:
            longest = max(len(row) for row in ids)
            ids = [row + [self.pad_token_id] * (longest - len(row)) for row in ids]  # right padding
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids, dtype=torch.long)}
        return {"input_ids": ids[0] if isinstance(text, str) else ids}


def image_settings(folder: Path) -> SimpleNamespace:
    """The image processor's settings, as attributes (what `PreprocessConfig.from_image_processor` reads)."""
    processor_config = folder / "processor_config.json"
    settings = None
    if processor_config.is_file():
        settings = json.loads(processor_config.read_text()).get("image_processor")
    if settings is None and (folder / "preprocessor_config.json").is_file():
        settings = json.loads((folder / "preprocessor_config.json").read_text())
    if not isinstance(settings, dict):
        raise FileNotFoundError(f"{folder} has no image processor settings (processor_config.json or preprocessor_config.json)")
    missing = [name for name in IMAGE_SETTINGS if name not in settings]
    if missing:
        raise ValueError(f"{folder}: the image processor settings lack {', '.join(missing)}")
    return SimpleNamespace(**settings)


class ExportProcessor:
    """`tokenizer` and `image_processor` of an export folder, as a `CLIPSegProcessor` offers them."""

    def __init__(self, folder: Path) -> None:
        self.tokenizer = ExportTokenizer(folder)
        self.image_processor = image_settings(folder)

"""An export's tokenizer and image settings, read without importing transformers.

An export folder holds the files `CLIPSegProcessor.save_pretrained` writes. Loading them through
transformers costs about 0.16 GB of memory and most of a second; transformers' CLIP tokenizer runs
on the `tokenizers` library's `tokenizer.json`, and the image settings are plain JSON, so an export
reads both directly (tests check the token ids against transformers' tokenizer).
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer

from .files import ModelLoadError, first_line, read_json_object

IMAGE_SETTINGS = ("size", "image_mean", "image_std", "resample", "rescale_factor")
# Every file an export's processor reads (the export loader checks each against the manifest).
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
# PIL's resampling filters: NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING.
RESAMPLE_FILTERS = range(6)
MAX_IMAGE_SIZE = 4096  # CLIPSeg runs at 352; far larger is a damaged setting, not a model
REEXPORT = "export the model again"


class TokenizerCall:
    """The subset of a transformers tokenizer call that `PromptTokenizer` uses, on a `tokenizers.Tokenizer`
    (whose own padding and truncation settings are replaced by each call's, as transformers does)."""

    def __init__(self, backend: Tokenizer, pad_token_id: int) -> None:
        self.backend = backend
        self.pad_token_id = pad_token_id
        self._truncation: int | None = None
        self._lock = threading.Lock()  # truncation is a setting of the tokenizer object
        backend.no_padding()
        backend.no_truncation()

    def __call__(self, text, padding: bool = False, truncation: bool = False, max_length: int | None = None,
                 return_tensors: str | None = None) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        truncate_to = max_length if truncation else None
        with self._lock:
            if self._truncation != truncate_to:
                if truncate_to is None:
                    self.backend.no_truncation()
                else:
                    self.backend.enable_truncation(truncate_to)  # counts the special tokens, as transformers does
                self._truncation = truncate_to
            encodings = self.backend.encode_batch(texts)
        ids = [encoding.ids for encoding in encodings]
        if padding:
            longest = max(len(row) for row in ids)
            ids = [row + [self.pad_token_id] * (longest - len(row)) for row in ids]  # right padding
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids, dtype=torch.long)}
        return {"input_ids": ids[0] if isinstance(text, str) else ids}


class ExportTokenizer(TokenizerCall):
    """An export's `tokenizer.json` (which the export wrote: the pipeline transformers runs)."""

    def __init__(self, folder: Path) -> None:
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: export the model again to write its tokenizer")
        read_json_object(path, REEXPORT)  # names the file when it is not JSON (tokenizers would not)
        try:
            backend = Tokenizer.from_str(path.read_bytes().decode("utf-8"))
        except Exception as error:  # tokenizers raises a bare Exception for a file it cannot use
            raise ModelLoadError(f"{path} is not a tokenizers tokenizer file ({first_line(error)}): "
                                 f"{REEXPORT}") from error
        config_path = folder / "tokenizer_config.json"
        config = read_json_object(config_path, REEXPORT) if config_path.is_file() else {}
        pad = config.get("pad_token") or config.get("eos_token") or "<|endoftext|>"
        pad = pad.get("content") if isinstance(pad, dict) else pad
        pad_token_id = backend.token_to_id(pad) if isinstance(pad, str) else None
        if pad_token_id is None:
            raise ModelLoadError(f"{config_path}: pad token {pad!r} is not in the vocabulary of {path}: {REEXPORT}")
        super().__init__(backend, pad_token_id)


def image_settings(folder: Path) -> SimpleNamespace:
    """The image processor's settings, as attributes (what `PreprocessConfig.from_image_processor` reads)."""
    processor_config = folder / "processor_config.json"
    settings, source = None, processor_config
    if processor_config.is_file():
        settings = read_json_object(processor_config, REEXPORT).get("image_processor")
        if settings is not None and not isinstance(settings, dict):
            raise ModelLoadError(f"{processor_config}: image_processor must be an object, got "
                                 f"{type(settings).__name__}: {REEXPORT}")
    if settings is None and (folder / "preprocessor_config.json").is_file():
        source = folder / "preprocessor_config.json"
        settings = read_json_object(source, REEXPORT)
    if settings is None:
        raise FileNotFoundError(f"{folder} has no image processor settings (processor_config.json or "
                                "preprocessor_config.json)")
    missing = [name for name in IMAGE_SETTINGS if name not in settings]
    if missing:
        raise ModelLoadError(f"{source}: the image processor settings lack {', '.join(missing)}: {REEXPORT}")
    check_image_settings(settings, source, REEXPORT)
    return SimpleNamespace(**settings)


def check_image_settings(settings: Mapping | object, source: Path | str, fix: str) -> None:
    """Refuse image settings that would preprocess wrongly or crash later: `ModelLoadError` naming
    `source` (the file they came from) and the setting. `settings`: a mapping (a JSON file) or a
    transformers image processor (its attributes)."""

    def get(name: str, default=None):
        if isinstance(settings, Mapping):
            return settings.get(name, default)
        return getattr(settings, name, default)

    def fail(message: str):
        raise ModelLoadError(f"{source}: {message}: {fix}")

    def number(value) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    if get("do_resize", True) is False:
        fail("do_resize is false; CLIPSeg needs every image resized to its square input size")
    size = get("size")
    if isinstance(size, Mapping) or hasattr(size, "height"):
        height = size.get("height") if isinstance(size, Mapping) else getattr(size, "height", None)
        width = size.get("width") if isinstance(size, Mapping) else getattr(size, "width", None)
    else:
        height = width = size
    for value in (height, width):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGE_SIZE:
            fail(f"size must give a height and width in 1..{MAX_IMAGE_SIZE}, got {size!r}")
    if height != width:
        fail(f"CLIPSeg needs a square input size, got {height}x{width}")
    if get("do_normalize", True) is not False:
        for name in ("image_mean", "image_std"):
            values = get(name)
            if (not isinstance(values, (list, tuple)) or len(values) != 3
                    or any(number(v) is None for v in values)):
                fail(f"{name} must be 3 finite numbers (one per RGB channel), got {values!r}")
        if any(float(v) <= 0 for v in get("image_std")):
            fail(f"image_std must be positive, got {get('image_std')!r}")
    try:
        resample = operator.index(get("resample"))
    except TypeError:
        resample = None
    if resample not in RESAMPLE_FILTERS or isinstance(get("resample"), bool):
        fail(f"resample must be one of PIL's filters 0..5, got {get('resample')!r}")
    if get("do_rescale", True) is not False:
        factor = number(get("rescale_factor"))
        if factor is None or factor <= 0:
            fail(f"rescale_factor must be a positive number, got {get('rescale_factor')!r}")


class ExportProcessor:
    """`tokenizer` and `image_processor` of an export folder, as a `CLIPSegProcessor` offers them."""

    def __init__(self, folder: Path) -> None:
        self.tokenizer = ExportTokenizer(folder)
        self.image_processor = image_settings(folder)

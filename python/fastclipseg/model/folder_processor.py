"""A model folder's tokenizer and image settings, read without transformers: `FolderProcessor`.

transformers 5's `CLIPTokenizer` does not run a folder's `tokenizer.json` as it stands: it takes
the BPE vocabulary and merges from it (or from `vocab.json` + `merges.txt`) and builds CLIP's
pipeline around them in code (NFC, whitespace runs to one space, lower case; CLIP's split regex
and byte-level pre-tokenizer; `</w>` word ends; `<|startoftext|> ... <|endoftext|>` around each
text). `clip_tokenizer` builds the same pipeline with the `tokenizers` library, so that any
folder's token ids equal transformers' (tests compare them on many texts). The image settings
are those of transformers' `ViTImageProcessor`: processor_config.json's `image_processor` or
preprocessor_config.json, over that class's defaults.

`save_pretrained` writes the files an export reads (`export_processor.py`): the pipeline above as
`tokenizer.json`, the special tokens in `tokenizer_config.json`, and the image settings in
`processor_config.json`, as transformers' `CLIPSegProcessor.save_pretrained` lays them out.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from .export_processor import TokenizerCall, check_image_settings
from .files import ModelLoadError, first_line, read_json_object

# transformers' CLIPTokenizer defaults, and its VERY_LARGE_INTEGER for "no length limit".
SPECIAL_TOKEN_DEFAULTS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                          "pad_token": "<|endoftext|>"}
NO_LENGTH_LIMIT = int(1e30)
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# transformers' ViTImageProcessor (CLIPSeg's) defaults: 224 px, bilinear, ImageNet "standard" mean and std.
VIT_DEFAULTS = {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5]}
_ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


def _token_text(value: object) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken object."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _vocabulary(folder: Path, tokenizer_json: dict | None, fix: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE vocabulary and merges, from tokenizer.json (parsed: `tokenizer_json`) or from
    vocab.json + merges.txt."""
    path = folder / "tokenizer.json"
    if tokenizer_json is not None:
        model = tokenizer_json.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        merges = model.get("merges") if isinstance(model, dict) else None
        if (not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or not isinstance(vocab, dict)
                or not isinstance(merges, list)):
            raise ModelLoadError(f"{path} is not a CLIP tokenizer file (no BPE vocabulary and merges): {fix}")
        pairs = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in merges]
        if not all(len(pair) == 2 and all(isinstance(part, str) for part in pair) for pair in pairs):
            raise ModelLoadError(f"{path} has damaged BPE merges (each must be two tokens): {fix}")
        if not all(isinstance(token, str) and isinstance(index, int) for token, index in vocab.items()):
            raise ModelLoadError(f"{path} has a damaged BPE vocabulary (token -> integer id): {fix}")
        return vocab, pairs  # type: ignore[return-value]
    try:
        vocab, merges = BPE.read_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    except Exception as error:  # tokenizers raises a bare Exception naming neither file
        raise ModelLoadError(f"{folder}: vocab.json and merges.txt are not a BPE vocabulary and merges list "
                             f"({first_line(error)}): {fix}") from error
    return vocab, merges


def _added_token(entry: dict) -> AddedToken | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
        return None
    return AddedToken(entry["content"], **{flag: bool(entry[flag]) for flag in _ADDED_TOKEN_FLAGS if flag in entry})


def _special_tokens(folder: Path, tokenizer_json: dict | None, fix: str
                    ) -> tuple[dict[str, str], list[AddedToken], object]:
    """(bos/eos/unk/pad tokens, added tokens in id order, model_max_length), read as transformers 5
    reads them: tokenizer_config.json's `added_tokens_decoder` when it has one; otherwise (older
    folders) special_tokens_map.json over tokenizer_config.json, and the added tokens of
    added_tokens.json and tokenizer.json."""
    config_path = folder / "tokenizer_config.json"
    config = read_json_object(config_path, fix) if config_path.is_file() else {}
    tokens = {name: _token_text(config.get(name)) for name in SPECIAL_TOKEN_DEFAULTS}
    added: dict[int, AddedToken] = {}
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for index, entry in decoder.items():
            token = _added_token(entry)
            if token is not None and str(index).isdigit():
                added[int(index)] = token
    else:
        map_path = folder / "special_tokens_map.json"
        special_map = read_json_object(map_path, fix) if map_path.is_file() else {}
        for name in SPECIAL_TOKEN_DEFAULTS:
            tokens[name] = _token_text(special_map.get(name)) or tokens[name]
        added_path = folder / "added_tokens.json"
        for text, index in (read_json_object(added_path, fix) if added_path.is_file() else {}).items():
            if isinstance(index, int):
                special = text in tokens.values()
                added[index] = AddedToken(text, lstrip=False, rstrip=False, normalized=not special, special=special)
        entries = (tokenizer_json or {}).get("added_tokens")
        for entry in entries if isinstance(entries, list) else ():
            token = _added_token(entry)
            if token is not None and isinstance(entry.get("id"), int):
                added[entry["id"]] = token
    tokens = {name: text or SPECIAL_TOKEN_DEFAULTS[name] for name, text in tokens.items()}
    return tokens, [added[index] for index in sorted(added)], config.get("model_max_length", NO_LENGTH_LIMIT)


def clip_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], special: dict[str, str],
                   added: list[AddedToken] = ()) -> Tokenizer:
    """transformers 5's `CLIPTokenizer` pipeline over `vocab` and `merges`, as a `tokenizers.Tokenizer`."""
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                              end_of_word_suffix="</w>", fuse_unk=False, unk_token=special["unk_token"]))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                                 normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    # The config's added tokens first, then each named special token not among them.
    present = {token.content for token in added}
    named = [AddedToken(text, special=True, normalized=False) for text in dict.fromkeys(special.values())
             if text not in present]
    tokenizer.add_special_tokens([*added, *named])
    tokenizer.post_processor = processors.RobertaProcessing(
        (special["eos_token"], tokenizer.token_to_id(special["eos_token"])),
        (special["bos_token"], tokenizer.token_to_id(special["bos_token"])),
        trim_offsets=False, add_prefix_space=False,
    )
    return tokenizer


def _saved_settings(tokenizer_json: dict | None) -> tuple[dict | None, dict | None]:
    """The padding and truncation settings a tokenizer.json holds (as `Tokenizer.padding` and
    `.truncation` give them), read as transformers reads them: from the file without its vocabulary."""
    if not tokenizer_json or (tokenizer_json.get("padding") is None and tokenizer_json.get("truncation") is None):
        return None, None
    bare = {**tokenizer_json, "added_tokens": [], "model": {**tokenizer_json["model"], "vocab": {}, "merges": []}}
    settings = Tokenizer.from_str(json.dumps(bare))
    return settings.padding, settings.truncation


class FolderTokenizer(TokenizerCall):
    """A model folder's CLIP tokenizer (see the module docstring), called as transformers' is.

    Each call sets its own padding and truncation; the folder's (`saved_padding`,
    `saved_truncation`) are kept only to be written again by `save_pretrained`."""

    def __init__(self, folder: Path, fix: str) -> None:
        path = folder / "tokenizer.json"
        tokenizer_json = read_json_object(path, fix) if path.is_file() else None
        vocab, merges = _vocabulary(folder, tokenizer_json, fix)
        self.special_tokens, added, self.model_max_length = _special_tokens(folder, tokenizer_json, fix)
        try:
            backend = clip_tokenizer(vocab, merges, self.special_tokens, added)
            self.saved_padding, self.saved_truncation = _saved_settings(tokenizer_json)
        except Exception as error:  # tokenizers raises a bare Exception for merges outside the vocabulary
            raise ModelLoadError(f"{folder}: the tokenizer files do not make a CLIP tokenizer "
                                 f"({first_line(error)}): {fix}") from error
        super().__init__(backend, backend.token_to_id(self.special_tokens["pad_token"]))

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)


def folder_image_settings(folder: Path, fix: str) -> SimpleNamespace:
    """The image processor's settings, as attributes (what `PreprocessConfig.from_image_processor` reads)."""
    source = folder / "processor_config.json"
    settings = read_json_object(source, fix).get("image_processor") if source.is_file() else None
    if not isinstance(settings, dict):
        source = folder / "preprocessor_config.json"
        settings = read_json_object(source, fix)
    settings = {**VIT_DEFAULTS, **{name: settings[name] for name in VIT_DEFAULTS if name in settings}}
    size = settings["size"]
    if isinstance(size, int) and not isinstance(size, bool):
        settings["size"] = {"height": size, "width": size}  # transformers 4's single number
    check_image_settings(settings, source, fix)
    return SimpleNamespace(**settings, image_processor_type="ViTImageProcessor")


def _write_json(path: Path, data: dict) -> None:
    # transformers' layout, so that an export's files are what transformers would write.
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


class FolderProcessor:
    """`tokenizer` and `image_processor` of a model folder, as a `CLIPSegProcessor` offers them."""

    def __init__(self, folder: Path, fix: str) -> None:
        self.tokenizer = FolderTokenizer(folder, fix)
        self.image_processor = folder_image_settings(folder, fix)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write tokenizer.json, tokenizer_config.json and processor_config.json into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer = Tokenizer.from_str(self.tokenizer.backend.to_str())
        if self.tokenizer.saved_padding is not None:
            tokenizer.enable_padding(**self.tokenizer.saved_padding)
        if self.tokenizer.saved_truncation is not None:
            tokenizer.enable_truncation(**self.tokenizer.saved_truncation)
        tokenizer.save(str(directory / "tokenizer.json"), pretty=True)
        _write_json(directory / "tokenizer_config.json", {
            "backend": "tokenizers", **self.tokenizer.special_tokens,
            "model_max_length": self.tokenizer.model_max_length, "processor_class": "CLIPSegProcessor",
            "tokenizer_class": "CLIPTokenizer",
        })
        _write_json(directory / "processor_config.json",
                    {"image_processor": dict(vars(self.image_processor)), "processor_class": "CLIPSegProcessor"})


__all__ = ["FolderProcessor", "FolderTokenizer", "clip_tokenizer", "folder_image_settings"]

"""CLIP tokenizer files (vocab.json + merges.txt) from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``.

OpenAI's ``clip.simple_tokenizer.SimpleTokenizer`` does not ship a vocabulary: it derives one from
the BPE merges list at start-up. HuggingFace's CLIP ``vocab.json``/``merges.txt`` are that same
derivation written to disk. Rebuilding them here lets a converted checkpoint carry its tokenizer
without network access to the model hub.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from transformers import CLIPTokenizerFast

# SimpleTokenizer keeps merges lines[1 : 49152 - 256 - 2 + 1]: line 0 is a version header, and
# 256 byte tokens + 256 "</w>" tokens + 48894 merges + 2 special tokens = 49408 tokens.
NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MERGES_HEADER = "#version: 0.2"


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP byte -> printable unicode character table (same order as OpenAI's)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values = printable[:]
    code_points = printable[:]
    extra = 0
    # Bytes without a printable glyph (controls, space, ...) are moved to code points 256+.
    for b in range(256):
        if b not in byte_values:
            byte_values.append(b)
            code_points.append(256 + extra)
            extra += 1
    return dict(zip(byte_values, (chr(c) for c in code_points)))


def read_bpe_merges(bpe_gz_path: str | Path) -> list[tuple[str, str]]:
    """The merges SimpleTokenizer uses, as (left, right) pairs, from the gzipped merges list."""
    path = Path(bpe_gz_path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP BPE merges file not found: {path}")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as file:
            lines = file.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as error:  # not gzip, cut short, or not text
        raise ValueError(
            f"{path} is not a readable gzipped CLIP BPE merges list ({error}); pass OpenAI's "
            "bpe_simple_vocab_16e6.txt.gz"
        ) from error
    selected = lines[1 : NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in selected]
    bad = [i + 1 for i, merge in enumerate(merges) if len(merge) != 2]
    if len(merges) != NUM_MERGES or bad:
        raise ValueError(
            f"{path} is not a CLIP BPE merges list: expected {NUM_MERGES} 'left right' lines after the "
            f"header, got {len(merges)} lines"
            + (f", malformed at line(s) {bad[:5]}" if bad else "")
        )
    return merges  # type: ignore[return-value]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """SimpleTokenizer's vocabulary: bytes, bytes + '</w>', every merge, then the two special tokens."""
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens]
    tokens += ["".join(merge) for merge in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("the BPE merges produce duplicate vocabulary entries; not a CLIP merges list")
    return vocab


def write_clip_tokenizer_files(bpe_gz_path: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` for the CLIP tokenizer into ``out_dir``.

    Returns the two paths. The result has 49408 tokens, ``<|startoftext|>`` = 49406 and
    ``<|endoftext|>`` = 49407, like every CLIP ViT text tower (and so CLIPSeg).
    """
    merges = read_bpe_merges(bpe_gz_path)
    vocab = build_vocab(merges)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path = out / "vocab.json"
    merges_path = out / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # The header line matters: tokenizers' readers skip the first line of merges.txt.
    merges_text = "\n".join([MERGES_HEADER] + [f"{a} {b}" for a, b in merges]) + "\n"
    merges_path.write_text(merges_text, encoding="utf-8")
    return vocab_path, merges_path


def load_clip_tokenizer(tokenizer_dir: str | Path, model_max_length: int = 77):
    """A transformers CLIP tokenizer (the fast, tokenizers-backed one) from a folder holding
    ``vocab.json`` + ``merges.txt`` (as written by :func:`write_clip_tokenizer_files`), or a saved
    tokenizer folder. Local files only: never touches the network.

    ``model_max_length`` is CLIP's context length (77), so ``truncation=True`` keeps prompts
    within the text tower's position embeddings.
    """
    folder = Path(tokenizer_dir)
    missing = [name for name in ("vocab.json", "merges.txt") if not (folder / name).is_file()]
    if missing and not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no CLIP tokenizer files in {folder}: missing {', '.join(missing)}")
    return CLIPTokenizerFast.from_pretrained(str(folder), local_files_only=True, model_max_length=model_max_length)


def clip_tokenizer_from_bpe(bpe_gz_path: str | Path, work_dir: str | Path, model_max_length: int = 77):
    """Convenience: write the files into ``work_dir`` and load a tokenizer from them."""
    write_clip_tokenizer_files(bpe_gz_path, work_dir)
    return load_clip_tokenizer(work_dir, model_max_length=model_max_length)

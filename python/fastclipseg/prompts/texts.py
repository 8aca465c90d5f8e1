"""Prompt validation, tokenization and the embedding cache."""

from __future__ import annotations

import threading
import unicodedata
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import torch

PromptT = TypeVar("PromptT")






class PromptTokenizer:
    """Turns prompts into right-padded token ids, truncating (with a warning) as the processor would."""

    def __init__(self, tokenizer, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        for prompt in prompts:
            length = len(self.tokenizer(prompt)["input_ids"])
            if length > self.max_tokens:
                warnings.warn(
                    f"prompt {prompt[:60]!r}{'...' if len(prompt) > 60 else ''} is {length} tokens long; "
                    f"the text tower reads at most {self.max_tokens}, so it is truncated",
                    stacklevel=3,
                )
        encoded = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return encoded["input_ids"]


def clip_cache_key(prompt: str) -> str:
    """The text as CLIP's tokenizer sees it: NFC, runs of whitespace as one space, stripped, lower
    case. Prompts with equal keys get identical token ids, so they share a cache entry."""
    return " ".join(unicodedata.normalize("NFC", prompt).split()).lower()


def whitespace_cache_key(prompt: str) -> str:
    """For encoders that may tell case and Unicode forms apart: only whitespace is normalised."""
    return " ".join(prompt.split())


class EmbeddingCache(Generic[PromptT]):
    """A bounded LRU map from a prompt (text, or an image prompt) to its conditional embedding
    (thread-safe).

    `get_many` encodes only the prompts it has not seen, in one batch, so a video or a large
    collection with fixed prompts runs the encoder once per distinct prompt. Entries are keyed
    by `key(prompt)` (default: the prompt itself), so "A  cat" and "a cat" can share one.
    """

    def __init__(self, encode: Callable[[list[PromptT]], torch.Tensor], max_size: int = 1024,
                 key: Callable[[PromptT], Hashable] | None = None) -> None:
        if max_size < 0:
            raise ValueError(f"prompt cache size must be >= 0, got {max_size}")
        self._encode = encode
        self._key = key or (lambda prompt: prompt)
        self._max_size = max_size
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get_many(self, prompts: list[PromptT]) -> torch.Tensor:
        """Embeddings `(K, P)` for `prompts`, in order."""
        keys = [self._key(p) for p in prompts]
        with self._lock:
            found = {k: self._entries[k] for k in keys if k in self._entries}
            for key in found:
                self._entries.move_to_end(key)
        # One prompt per missing key (the first one seen) is encoded.
        missing: dict[Hashable, PromptT] = {}
        for key, prompt in zip(keys, prompts):
            if key not in found:
                missing.setdefault(key, prompt)
        self.hits += len(prompts) - len(missing)
        self.misses += len(missing)
        if missing:
            encoded = self._encode(list(missing.values()))
            if not isinstance(encoded, torch.Tensor) or encoded.ndim != 2 or encoded.shape[0] != len(missing):
                shape = tuple(encoded.shape) if isinstance(encoded, torch.Tensor) else type(encoded).__name__
                raise ValueError(f"the prompt encoder returned {shape} for {len(missing)} prompts; expected a "
                                 f"({len(missing)}, embedding size) tensor")
            found.update(zip(missing, encoded))
            with self._lock:
                for key, embedding in zip(missing, encoded):
                    self._entries[key] = embedding
                    self._entries.move_to_end(key)
                while len(self._entries) > self._max_size:
                    self._entries.popitem(last=False)
        return torch.stack([found[k] for k in keys])

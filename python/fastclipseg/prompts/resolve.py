"""What a prompt can be, resolved: text, prompt expression, image prompt or embedding row.

`resolve_prompts` turns what a caller passes (strings, expressions, `ImagePrompt`s, PIL images,
arrays, paths, and `conditional_embeddings`) into `PromptItem`s with clear errors, before any
network runs; `looks_like_expression` tells an expression from an ordinary text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..ops.validation import check_prompt
from .embeddings import check_conditional_embeddings
from .expressions import ExpressionError, parse
from .image_prompts import ImagePrompt


class PromptItem:
    """One prompt of a call, resolved: `kind` is "text", "expression", "image" or "embedding";
    `label` is what the result calls it; `value` the text, the parsed expression, the
    `ImagePrompt` or the embedding row."""

    __slots__ = ("kind", "label", "value")

    def __init__(self, kind: str, label: str, value: object) -> None:
        self.kind, self.label, self.value = kind, label, value


def looks_like_expression(text: str) -> bool:
    """Whether a text prompt uses the expression syntax: an upper-case AND, OR or NOT as a word,
    or a {modifier}. Anything else (parentheses included) is an ordinary prompt."""
    return bool(re.search(r"\b(AND|OR|NOT)\b|\{", text))


def resolve_prompts(prompts: object, conditional_embeddings: object = None, embedding_dim: int | None = None,
                    name: str = "prompts") -> list[PromptItem]:
    """Text prompts, expressions, image prompts and embedding rows -> `PromptItem`s, with clear
    errors. A `str` is always text (or an expression); an image prompt is an `ImagePrompt`, a
    `PIL.Image`, an `H x W x 3` uint8 array or a `pathlib.Path`."""
    items: list[PromptItem] = []
    if prompts is not None:
        if isinstance(prompts, (str, Image.Image, ImagePrompt, Path)) or (
                isinstance(prompts, np.ndarray) and prompts.ndim in (2, 3) and prompts.dtype == np.uint8):
            prompts = [prompts]
        if not isinstance(prompts, Sequence) or isinstance(prompts, (bytes, bytearray)):
            raise TypeError(f"{name} must be a prompt or a list of prompts, got {type(prompts).__name__}")
        for index, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                text = check_prompt(prompt, f"{name}[{index}]")
                if looks_like_expression(text):
                    try:
                        expression = parse(text)
                    except ExpressionError as error:
                        # Name which prompt of the list; the caret still points into its text.
                        raise ExpressionError(f"{name}[{index}]: {error.reason}", error.text, error.column) from None
                    if expression.is_plain:
                        items.append(PromptItem("text", text, expression.terms()[0]))
                    else:
                        items.append(PromptItem("expression", str(expression), expression))
                else:
                    items.append(PromptItem("text", text, text))
            elif isinstance(prompt, (ImagePrompt, Image.Image, np.ndarray, Path)):
                image_prompt = prompt if isinstance(prompt, ImagePrompt) else ImagePrompt(prompt)
                items.append(PromptItem("image", image_prompt.label, image_prompt))
            else:
                raise TypeError(f"{name}[{index}] must be a string, got {type(prompt).__name__} (or an image prompt: "
                                "ImagePrompt, PIL.Image, uint8 array, pathlib.Path)")
    if conditional_embeddings is not None:
        rows = check_conditional_embeddings(conditional_embeddings, embedding_dim)
        items.extend(PromptItem("embedding", f"embedding {i}", row) for i, row in enumerate(rows))
    if not items:
        raise ValueError(f"{name} is empty: give at least one prompt (or conditional_embeddings=)")
    return items


__all__ = ["PromptItem", "looks_like_expression", "resolve_prompts"]

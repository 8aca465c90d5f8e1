"""What a prompt is, before any network runs: texts and their embedding cache (`texts`), prompt
expressions (`expressions`), image prompts and visual prompt engineering (`image_prompts`),
embeddings computed elsewhere (`embeddings`), and `resolve_prompts`, which turns what a caller
passes into `PromptItem`s. The inference core encodes them; nothing here calls the network."""

from __future__ import annotations

from .embeddings import check_conditional_embeddings
from .expressions import ExpressionError
from .image_prompts import ImagePrompt, as_image_prompts, check_mask, visual_prompt
from .resolve import PromptItem, looks_like_expression, resolve_prompts

__all__ = [
    "ExpressionError", "ImagePrompt", "PromptItem", "as_image_prompts", "check_conditional_embeddings", "check_mask",
    "looks_like_expression", "resolve_prompts", "visual_prompt",
]

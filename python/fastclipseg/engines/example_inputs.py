"""Inputs that the compiled backends trace or export the stages with, and which of their axes vary."""

from __future__ import annotations

import torch

from .precision import PreparedStages


def example_inputs(
    stages: PreparedStages, image_size: int, max_tokens: int, eos_token_id: int
) -> dict[str, tuple[torch.Tensor, ...]]:
    """One input tuple per stage, with batch sizes above 1 so that no size-1 dimension gets specialised.

    The decoder example pairs 2 images with 3 prompts, so the image index really gathers. Its
    activations are zeros of the vision stage's output shape and dtype: tracing records operations,
    not values, and running the vision stage for them took a quarter of a first run's start-up.
    """
    pixels = torch.zeros(2, 3, image_size, image_size)
    ids = torch.zeros(2, min(7, max_tokens), dtype=torch.long)
    ids[:, -1] = eos_token_id  # the prompt stage pools at the end-of-text token
    pairs = torch.tensor([0, 1, 1])
    activations = stages.vision.zero_activations(len(pixels))
    with torch.no_grad():
        embeddings = stages.prompt(ids)[torch.tensor([0, 1, 0])]
    return {"vision": (pixels,), "prompt": (ids,), "decoder": (activations, embeddings, pairs)}


def export_signatures(max_tokens: int) -> dict[str, tuple[list[str], list[str], dict[str, dict[int, object]]]]:
    """For `torch.export` (the onnxruntime and aoti backends): each stage's input names, output names
    and dynamic axes. Images, prompts and (image, prompt) pairs vary freely; a prompt's token count
    up to the text tower's `max_tokens` (its position table's length)."""
    batch = torch.export.Dim("images", min=1, max=4096)
    prompts = torch.export.Dim("prompts", min=1, max=4096)
    tokens = torch.export.Dim("tokens", min=2, max=max_tokens)
    pairs = torch.export.Dim("pairs", min=1, max=65536)
    return {
        "vision": (["pixel_values"], ["activations"], {"pixel_values": {0: batch}}),
        "prompt": (["input_ids"], ["embeddings"], {"input_ids": {0: prompts, 1: tokens}}),
        "decoder": (
            ["activations", "embeddings", "image_index"],
            ["logits"],
            {"activations": {1: batch}, "embeddings": {0: pairs}, "image_index": {0: pairs}},
        ),
    }

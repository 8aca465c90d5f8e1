"""Inputs that the compiled backends trace or export the stages with."""

from __future__ import annotations

import torch

from .precision import PreparedStages


def example_inputs(
    stages: PreparedStages, image_size: int, max_tokens: int, eos_token_id: int
) -> dict[str, tuple[torch.Tensor, ...]]:
    """One input tuple per stage, with batch sizes above 1 so that no size-1 dimension gets specialised.

    The decoder example pairs 2 images with 3 prompts, so the image index really gathers.
    """
    pixels = torch.zeros(2, 3, image_size, image_size)
    ids = torch.zeros(2, min(7, max_tokens), dtype=torch.long)
    ids[:, -1] = eos_token_id  # the prompt stage pools at the end-of-text token
    pairs = torch.tensor([0, 1, 1])
    with torch.no_grad():
        activations = stages.vision(pixels)
        embeddings = stages.prompt(ids)[torch.tensor([0, 1, 0])]
    return {"vision": (pixels,), "prompt": (ids,), "decoder": (activations, embeddings, pairs)}

"""The image-prompt encoder: CLIP's image embedding of an example image, which CLIPSeg's decoder
takes in place of a text prompt's embedding (`conditional_pixel_values` in transformers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .stages import VisionStage

if TYPE_CHECKING:
    from transformers import CLIPSegForImageSegmentation

    from ..ops.image_processor import PreprocessConfig


class ImagePromptEncoder(nn.Module):
    """Pixels `(N, 3, S, S)` -> `(N, projection_dim)` conditional embeddings of image prompts.

    The CLIP vision tower of `model` on all its layers, the class token after `post_layernorm`,
    then `visual_projection`: `model.clip.get_image_features(pixel_values).pooler_output`, which
    is what `CLIPSegForImageSegmentation.get_conditional_embeddings` uses for
    `conditional_pixel_values`. The parameters are shared with `model` (no copy); the position
    embeddings for `S x S` inputs are interpolated once, as transformers does on every call.
    Runs in eval mode without gradients, in the weights' dtype, and returns float32.
    """

    def __init__(self, model: CLIPSegForImageSegmentation, preprocess_config: PreprocessConfig | int) -> None:
        super().__init__()
        size = preprocess_config if isinstance(preprocess_config, int) else preprocess_config.size
        size = int(size)
        vision = model.clip.vision_model
        patch = vision.embeddings.patch_size
        if size < patch or size % patch:
            raise ValueError(f"input size {size} is not a multiple of the patch size {patch}")
        self.image_size = size
        self.tower = VisionStage(model, size, depth=len(vision.encoder.layers))
        self.post_layernorm = vision.post_layernorm
        self.visual_projection = model.clip.visual_projection
        self.eval()

    @property
    def projection_dim(self) -> int:
        return int(self.visual_projection.out_features)

    @property
    def device(self) -> torch.device:
        return self.visual_projection.weight.device

    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"pixel_values must be (N, 3, {size}, {size}), got {tuple(pixel_values.shape)}")
        x = self.tower.embed(pixel_values.to(self.device))
        for layer in self.tower.layers:
            x = layer(x)
        pooled = self.post_layernorm(x[:, 0, :])
        return self.visual_projection(pooled).float()


__all__ = ["ImagePromptEncoder"]

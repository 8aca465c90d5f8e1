"""`torch`: the stages in eager PyTorch, fp32. The reference every other backend is tested against."""

from __future__ import annotations

import torch

from ..model.stages import Stages


class TorchEngine:
    name = "torch"

    def __init__(self, stages: Stages, device: torch.device) -> None:
        self.device = device
        self.stages = stages.to(device).eval()

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.stages.vision(pixel_values.to(self.device))

    @torch.inference_mode()
    def encode_prompts(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.stages.prompt(input_ids.to(self.device))

    @torch.inference_mode()
    def decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        return self.stages.decoder(activations, embeddings.to(self.device), image_index.to(self.device)).float()

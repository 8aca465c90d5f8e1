"""`torch`: the stages in eager PyTorch. In fp32 it is the reference every other engine is tested against."""

from __future__ import annotations

import torch

from ..model.stages import Stages
from .precision import prepare_stages


class TorchEngine:
    name = "torch"

    def __init__(self, stages: Stages, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        self.precision = precision
        prepared = prepare_stages(stages.to(device).eval(), precision)
        self.vision = prepared.vision.to(device).eval()
        self.prompt = prepared.prompt.to(device).eval()
        self.decoder = prepared.decoder.to(device).eval()

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values.to(self.device))

    @torch.inference_mode()
    def encode_prompts(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.prompt(input_ids.to(self.device))

    @torch.inference_mode()
    def decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        return self.decoder(activations, embeddings.to(self.device), image_index.to(self.device))

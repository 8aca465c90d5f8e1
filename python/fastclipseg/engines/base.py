"""The one small interface every backend implements."""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch


class Engine(Protocol):
    """Runs the three stages (see `fastclipseg.model.stages`) on one device and precision."""

    name: str  # the backend: "torch", "torchscript", "onnxruntime", "aoti", "cudagraphs", "tensorrt"
    precision: str  # "fp32", "bf16", "fp16", "int8"
    device: torch.device

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, S, S)` float32 pixels -> `(L, B, T, D)` vision activations."""
        ...

    def encode_prompts(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`(K, N)` right-padded token ids -> `(K, P)` conditional embeddings."""
        ...

    def decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        """Activations of B images, K embeddings and the image of each -> `(K, h, w)` float32 logits."""
        ...


class ModuleEngine:
    """An engine whose stages are callables on one device (eager modules, TorchScript, AOTInductor
    packages, CUDA graphs or loaded TensorRT programs; the last two override `encode_images` and `decode`)."""

    name: str
    precision: str
    device: torch.device
    vision: torch.nn.Module
    prompt: torch.nn.Module
    decoder: torch.nn.Module  # returns fp32 logits whatever it computes in

    def running(self) -> contextlib.AbstractContextManager:
        """The context each stage call runs in (TorchScript sets its graph executor's mode there)."""
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with self.running():
            return self.vision(pixel_values.to(self.device))

    @torch.inference_mode()
    def encode_prompts(self, input_ids: torch.Tensor) -> torch.Tensor:
        with self.running():
            return self.prompt(input_ids.to(self.device))

    @torch.inference_mode()
    def decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        with self.running():
            return self.decoder(activations, embeddings.to(self.device), image_index.to(self.device))

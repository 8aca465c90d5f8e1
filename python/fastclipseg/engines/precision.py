"""What each precision does to the three stages (shared by every backend, so they agree).

The stated choice, per precision:

| precision | vision stage | prompt stage | decoder stage |
| --- | --- | --- | --- |
| fp32 | fp32 | fp32 | fp32 |
| bf16 | bf16 weights and activations | fp32 | bf16, logits returned as fp32 |
| fp16 | fp16 weights and activations (CUDA) | fp32 | fp16, logits returned as fp32 |
| int8 | linear layers int8 (dynamic quantisation: int8 weights, activations quantised per batch) | fp32 | fp32 |

The prompt stage runs once per distinct prompt (its results are cached), so it stays fp32 in
every precision. The vision tower holds almost all the arithmetic (about 76 GFLOP per 352x352
image); the decoder is small, and in int8 it stays fp32 because its FiLM-conditioned layers
decide the mask boundary. fp16 is offered on CUDA only: CPUs have no fast fp16 matrix products
(bf16 is their half precision). CLIP's vision tower was trained in fp16 by OpenAI, so its
activations stay inside fp16's range.
"""

from __future__ import annotations

import copy
import warnings
from typing import NamedTuple

import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic

from ..model.stages import Stages

PRECISIONS = ("fp32", "bf16", "fp16", "int8")

# The dtype of the vision and decoder stages in the half precisions.
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PreparedStages(NamedTuple):
    """The stages in one precision: vision(pixels), prompt(ids), decoder(acts, embs, index) -> fp32 logits."""

    vision: nn.Module
    prompt: nn.Module
    decoder: nn.Module


class Float32Logits(nn.Module):
    """Wraps a decoder so that its logits come back in fp32 whatever it computes in."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        return self.decoder(activations, embeddings, image_index).float()


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 matrix products natively (AVX512-BF16 or AMX)."""
    # torch.cpu exposes these checks only as private helpers; treat their absence as "no".
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def check_precision(precision: str, device: torch.device, available: tuple[str, ...], backend: str) -> None:
    """A clear ValueError for a precision this backend, device or CPU cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: precisions are {', '.join(PRECISIONS)}")
    if precision not in available:
        raise ValueError(
            f"precision {precision!r} is not available for backend {backend!r} on {device.type}: "
            f"available precisions are {', '.join(available)}"
        )
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ValueError(
            "precision 'bf16' needs a CPU with native bf16 arithmetic (AVX512-BF16 or AMX); on this CPU "
            "it would be emulated and slower than fp32. Use precision='int8' or 'fp32'."
        )


def quantize_linear_int8(module: nn.Module) -> nn.Module:
    """A copy of `module` whose nn.Linear layers are dynamically quantised to int8."""
    with warnings.catch_warnings():
        # torch.ao.quantization warns on every call that it is deprecated in favour of torchao,
        # whose int8 path needs torch.compile; its eager dynamic quantisation is still the one that
        # TorchScript can trace. Only this call's warnings are hidden.
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*torch\.quantize_per_tensor.*deprecated.*")
        return quantize_dynamic(copy.deepcopy(module), {nn.Linear}, dtype=torch.qint8)


def prepare_stages(stages: Stages, precision: str) -> PreparedStages:
    """The stages as `precision` runs them (see the table above); fp32 shares the model's weights."""
    if precision == "fp32":
        return PreparedStages(stages.vision, stages.prompt, Float32Logits(stages.decoder))
    if precision in HALF_DTYPES:
        vision = copy.deepcopy(stages.vision).to(HALF_DTYPES[precision])
        decoder = copy.deepcopy(stages.decoder).to(HALF_DTYPES[precision])
        return PreparedStages(vision, stages.prompt, Float32Logits(decoder))
    if precision == "int8":
        return PreparedStages(quantize_linear_int8(stages.vision), stages.prompt, Float32Logits(stages.decoder))
    raise ValueError(f"unknown precision {precision!r}: precisions are {', '.join(PRECISIONS)}")

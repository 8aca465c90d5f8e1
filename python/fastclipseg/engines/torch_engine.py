"""`torch`: the stages in eager PyTorch. In fp32 it is the reference every other engine is tested against."""

from __future__ import annotations

import torch

from ..model.stages import Stages
from .base import ModuleEngine
from .precision import int8_decoder_dtype, prepare_stages


class TorchEngine(ModuleEngine):
    name = "torch"

    def __init__(self, stages: Stages, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        self.precision = precision
        # The precision's copies are made from weights already on `device`.
        prepared = prepare_stages(stages.to(device).eval(), precision, int8_decoder_dtype(self.name, device),
                                  prompt_in_precision=device.type == "cpu")
        self.vision, self.prompt, self.decoder = (module.eval() for module in prepared)

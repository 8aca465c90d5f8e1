"""`torchscript`: each stage traced with `torch.jit.trace`, frozen, and saved as a `.pt` file.

The files load without fastclipseg's or transformers' Python model code (`torch.jit.load` in
Python, `torch::jit::load` in a libtorch application). `torch.jit` is deprecated as of torch 2.13
but still the format libtorch loads; its deprecation warnings are left as torch emits them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import ModuleEngine
from .precision import PreparedStages

FILES = {"vision": "vision.pt", "prompt": "prompt.pt", "decoder": "decoder.pt"}


def _trace(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(module.eval(), inputs, check_trace=False)
        # Freezing folds the weights into the graph as constants, which lets the JIT fuse
        # and pre-pack them (about 10-20 % faster on CPU than the plain trace).
        return torch.jit.freeze(traced.eval())


def build(stages: PreparedStages, directory: Path, inputs: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, Path]:
    """Trace the three stages on `inputs` (see `example_inputs`) and save them under `directory`."""
    paths = {}
    for stage, module in stages._asdict().items():
        paths[stage] = directory / FILES[stage]
        torch.jit.save(_trace(module, inputs[stage]), str(paths[stage]))
    return paths


class TorchScriptEngine(ModuleEngine):
    name = "torchscript"

    def __init__(self, files: dict[str, Path], device: torch.device, precision: str) -> None:
        self.device = device
        self.precision = precision
        self.vision = torch.jit.load(str(files["vision"]), map_location=device).eval()
        self.prompt = torch.jit.load(str(files["prompt"]), map_location=device).eval()
        self.decoder = torch.jit.load(str(files["decoder"]), map_location=device).eval()

"""`torchscript`: each stage traced with `torch.jit.trace`, its weights made constants of the graph
(by freezing the traced module, or by tracing a bf16 copy as a plain function), saved as a `.pt` file.

The files load without fastclipseg's or transformers' Python model code (`torch.jit.load` in
Python, `torch::jit::load` in a libtorch application). `torch.jit` is deprecated as of torch 2.13
but still the format libtorch loads; its deprecation warnings are left as torch emits them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.ao.nn.quantized.modules.linear import LinearPackedParams

from .base import ModuleEngine
from .heap import release_freed_memory
from .precision import PreparedStages

FILES = {"vision": "vision.pt", "prompt": "prompt.pt", "decoder": "decoder.pt"}


def _traces_as_function(module: torch.nn.Module) -> bool:
    """True where `module` can be traced as a plain function: no weight needs a gradient (a function
    trace stores the weights as constants, which must not) and no quantised layer (its packed
    weights must belong to a traced module). The precisions' private copies (bf16) qualify."""
    tensors = (*module.parameters(), *module.buffers())
    return not any(tensor.requires_grad for tensor in tensors) and not any(
        isinstance(layer, LinearPackedParams) for layer in module.modules())


def _trace(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]):
    """The stage traced, its weights held as constants in the graph."""
    with torch.inference_mode(False), torch.no_grad():
        if _traces_as_function(module.eval()):
            # The weights become constants as freezing makes them, without turning each of the
            # stage's hundreds of submodules into a TorchScript module first: 0.6 s less of a
            # full-size bf16 first start, and the same speed as the frozen module (measured).
            return torch.jit.trace(lambda *args: module(*args), inputs, check_trace=False)
        traced = torch.jit.trace(module, inputs, check_trace=False)
        # Freezing folds the weights into the graph as constants, which lets the JIT fuse
        # and pre-pack them (about 10-20 % faster on CPU than the plain trace).
        return torch.jit.freeze(traced.eval())


def build(
    stages: PreparedStages, directory: Path, inputs: dict[str, tuple[torch.Tensor, ...]], built: dict | None = None
) -> dict[str, Path]:
    """Trace the three stages on `inputs` (see `example_inputs`) and save them under `directory`.
    `built`, when given, receives the traced modules, for an engine that runs them without reading
    the files back (`TorchScriptEngine(modules=)`)."""
    paths = {}
    for stage, module in stages._asdict().items():
        paths[stage] = directory / FILES[stage]
        traced = _trace(module, inputs[stage])
        torch.jit.save(traced, str(paths[stage]))
        if built is not None:
            built[stage] = traced
    return paths


class TorchScriptEngine(ModuleEngine):
    """The traced stages. On the CPU they run without the JIT graph executor's optimisations: for these
    frozen graphs its profiling runs and the specialised copy of each graph it keeps made no difference
    to speed (2 threads of a Xeon, bf16 and int8, 1 to 4 images) but held about 0.1 GB more (int8) and
    made the first calls 1.5-2x slower. The setting is per thread, so each call sets it for its own."""

    name = "torchscript"

    def __init__(self, files: dict[str, Path], device: torch.device, precision: str, modules: dict | None = None) -> None:
        """`modules`: the stages `build` has just traced (on the CPU) from these files; a CPU engine runs
        them instead of loading the files again (full-size int8: 0.7 s less on a first start)."""
        self.device = device
        self.precision = precision
        self.optimize = device.type != "cpu"
        # Vision first: its load's buffers (twice its file size, int8) are the largest, and freeing
        # them before the next load keeps the peak down (full-size int8: 0.47 -> 0.44 GB).
        for stage in ("vision", "prompt", "decoder"):
            if modules is not None and device.type == "cpu":
                setattr(self, stage, modules[stage])  # in eval mode already; a traced function has no .eval()
            else:
                setattr(self, stage, torch.jit.load(str(files[stage]), map_location=device).eval())
            release_freed_memory()

    def running(self):
        return torch.jit.optimized_execution(self.optimize)

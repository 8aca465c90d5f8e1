"""`aoti`: each stage exported with `torch.export` (dynamic image, prompt, token and pair counts) and
compiled ahead of time by AOTInductor into a `.pt2` package: generated C++ kernels in a shared
library, plus the weights. torch.export + AOTInductor is what PyTorch offers in place of the
deprecated `torch.jit`; the packages load without fastclipseg's or transformers' Python model code
(libtorch's `torch::inductor::AOTIModelPackageLoader`, in Python as in a libtorch application).

The price is the first start: Inductor generates and compiles C++ for every stage (about a minute
for the full-size model on 2 cores, where TorchScript takes 2-5 s), and it needs a C++ compiler at
that point. The compiled kernels use the vector instructions of the CPU they were built on, so a build
is tied to that kind of CPU (`cpu_features`, which the manifest records). CPU only: the CUDA form
has not been built or run in this project (no GPU was available to check it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .base import ModuleEngine
from .example_inputs import export_signatures
from .heap import release_freed_memory
from .precision import PreparedStages, cpu_has_amx, cpu_has_native_bf16, cpu_has_vnni

FILES = {"vision": "vision.pt2", "prompt": "prompt.pt2", "decoder": "decoder.pt2"}
INDUCTOR_CONFIGS = {
    # The kernels read the thread count when they run, not the one at compile time, so one package
    # serves any `torch.set_num_threads` (Inductor otherwise writes the build's count into every loop).
    "cpp.dynamic_threads": True,
    # The weights as one file in the package beside the library, not inside it: a library's copy is
    # mapped and then copied again at load (full-size bf16 vision stage: +0.37 GB for 0.15 GB of
    # weights; +0.15 GB this way). The C++ loader reads this layout too.
    "aot_inductor.package_constants_in_so": False,
    "aot_inductor.package_constants_on_disk_format": "binary_blob",
}


def cpu_features() -> str:
    """What the generated kernels may assume of the CPU: ATen's vector level (e.g. AVX512) and the
    AMX, AVX512-BF16 and VNNI extensions Inductor compiles for where present. A build loads only
    where this string is the same (conservative: a build for fewer features would run elsewhere)."""
    extensions = [name for name, present in (("amx", cpu_has_amx()), ("bf16", cpu_has_native_bf16()),
                                             ("vnni", cpu_has_vnni())) if present]
    return "+".join([torch.backends.cpu.get_cpu_capability(), *extensions])


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor will call (its own search: $CXX, else g++), or None where it finds none."""
    from torch._inductor import cpp_builder, exc  # Inductor is imported for the build anyway

    try:
        return cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return None


def require_compiler() -> None:
    if cxx_compiler() is None:
        raise RuntimeError(
            "backend 'aoti' compiles C++ code on its first start and found no C++ compiler (set $CXX, or install "
            "g++, e.g. apt-get install g++); backend 'torchscript' needs none")


def build(stages: PreparedStages, directory: Path, inputs: dict[str, tuple[torch.Tensor, ...]], max_tokens: int) -> dict[str, Path]:
    """Export and compile the three stages into `.pt2` packages under `directory`."""
    require_compiler()
    paths = {}
    for stage, module in stages._asdict().items():
        input_names, _, dynamic = export_signatures(max_tokens)[stage]
        paths[stage] = directory / FILES[stage]
        with torch.no_grad(), warnings.catch_warnings():
            # torch.export's own use of a pytree API it deprecated (torch 2.13): not the user's business.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec.*")
            program = torch.export.export(module.eval(), inputs[stage],
                                          dynamic_shapes={name: dynamic.get(name) for name in input_names})
            torch._inductor.aoti_compile_and_package(program, package_path=str(paths[stage]),
                                                     inductor_configs=INDUCTOR_CONFIGS)
        del program
        release_freed_memory()
    return paths


class _Package:
    """One compiled stage, called with tensors, returning its one output tensor.

    It holds libtorch's package loader (`torch::inductor::AOTIModelPackageLoader`, the class the C++
    runtime uses) rather than `torch._inductor.aoti_load_package`'s wrapper of it: that wrapper imports
    Inductor, 4.6 s of a start that otherwise loads a full-size package in 0.2 s, only to flatten the
    inputs and outputs, which are flat tensors here already. Either way a call holds the GIL while it
    runs (torch's binding does not release it), so other Python threads wait for it (README)."""

    def __init__(self, path: Path) -> None:
        self.loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.loader.run(list(inputs))[0]


class AotiEngine(ModuleEngine):
    """The compiled packages, each called like the stage it was built from."""

    name = "aoti"

    def __init__(self, files: dict[str, Path], device: torch.device, precision: str) -> None:
        self.device = device
        self.precision = precision
        for stage in ("vision", "prompt", "decoder"):  # vision first, as TorchScriptEngine does
            setattr(self, stage, _Package(files[stage]))
            release_freed_memory()

"""`aoti`: each stage exported with `torch.export` (dynamic image, prompt, token and pair counts) and
compiled ahead of time by AOTInductor into a `.pt2` package: generated C++ kernels in a shared
library, plus the weights. torch.export + AOTInductor is what PyTorch offers in place of the
deprecated `torch.jit`; the packages load without fastclipseg's or transformers' Python model code
(a libtorch application uses libtorch's `torch::inductor::AOTIModelPackageLoader`; Python calls the
package's C interface directly, so that a call releases the GIL: `_Package`).

The price is the first start: Inductor generates and compiles C++ for every stage (about a minute
for the full-size model on 2 cores, where TorchScript takes 2-5 s), and it needs a C++ compiler at
that point. The compiled kernels use the vector instructions of the CPU they were built on, so a build
is tied to that kind of CPU (`cpu_features`, which the manifest records). CPU only: the CUDA form
has not been built or run in this project (no GPU was available to check it).
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import tempfile
import warnings
import zipfile
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


# torch's Python bindings of the package loader hold the GIL for the whole run, so every other
# Python thread (a video pipeline's decoding, a server's requests) stopped for 0.1-0.2 s per call.
# The package's library exports a C interface (torch/csrc/inductor/aoti_runtime/interface.h, the
# boundary AOTInductor keeps stable), and ctypes releases the GIL while a foreign function runs;
# so the stages are called through it. Tensors cross it as the opaque handles torch's own cpp
# wrapper uses (torch._C._aoti), which come wrapped in unnamed capsules.
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype, _new_capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


class _Package:
    """One compiled stage, called with tensors, returning its one output tensor; the call releases the GIL.

    Loading does what libtorch's `AOTIModelPackageLoader` does for a CPU package (the C++ runtime uses
    that class): the library is extracted and loaded, a model container made, and the weights copied
    in from the package's weights blob, which is read in place (the package stores it uncompressed)."""

    def __init__(self, path: Path) -> None:
        with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory(prefix="fastclipseg-aoti-") as scratch:
            library = _member(archive, path, ".wrapper.so")
            blob = _member(archive, path, "_weights.blob", required=False)
            # Loaded libraries stay mapped after their file is removed with the temporary folder.
            self.library = ctypes.CDLL(archive.extract(library, scratch))
        self._functions()
        self.container = ctypes.c_void_p()
        self._check(self.library.AOTInductorModelContainerCreateWithDevice(
            ctypes.byref(self.container), ctypes.c_size_t(1), b"cpu", None), "creating the model")
        if blob is not None:
            self._load_weights(path, blob)
        self.inputs, self.outputs = ctypes.c_size_t(), ctypes.c_size_t()
        self._check(self.library.AOTInductorModelContainerGetNumInputs(self.container, ctypes.byref(self.inputs)),
                    "counting its inputs")
        self._check(self.library.AOTInductorModelContainerGetNumOutputs(self.container, ctypes.byref(self.outputs)),
                    "counting its outputs")

    def _functions(self) -> None:
        handle, handles, size = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t
        run = self.library.AOTInductorModelContainerRun
        run.argtypes = [handle, handles, size, handles, size, handle, handle]
        self.library.AOTInductorModelContainerDelete.argtypes = [handle]
        self.library.AOTInductorGetLastError.argtypes = [ctypes.POINTER(ctypes.c_char_p)]

    def _load_weights(self, path: Path, blob: zipfile.ZipInfo) -> None:
        expected = ctypes.c_uint64()
        self._check(self.library.AOTInductorModelContainerGetConstantsBlobSize(self.container, ctypes.byref(expected)),
                    "reading the weights' size")
        if blob.compress_type != zipfile.ZIP_STORED or blob.file_size != expected.value:
            raise RuntimeError(f"{path}: the weights in the package are not what its library expects ({blob.file_size} "
                               f"bytes, compression {blob.compress_type}; expected {expected.value} stored)")
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY) as view:
            # zipfile has no public way to the offset of a member's bytes: read its local header.
            signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack_from(view, blob.header_offset)
            start = blob.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length
            if signature != b"PK\x03\x04" or start + blob.file_size > len(view):
                raise RuntimeError(f"{path}: malformed package (the weights' entry)")
            weights = (ctypes.c_uint8 * blob.file_size).from_buffer(view, start)
            try:  # the container copies the weights: the mapping can go afterwards
                loaded = self.library.AOTInductorModelUpdateConstantsFromBlob(self.container, weights)
                self._check(loaded, "loading the weights")
            finally:
                del weights  # the buffer must be released before the mapping closes

    def _check(self, status: int, doing: str) -> None:
        if status != 0:
            message = ctypes.c_char_p()
            self.library.AOTInductorGetLastError(ctypes.byref(message))
            detail = message.value.decode(errors="replace") if message.value else "no message"
            raise RuntimeError(f"aoti package: {doing} failed ({detail})")

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != self.inputs.value:
            raise ValueError(f"this stage takes {self.inputs.value} tensors, got {len(inputs)}")
        # New handles to the inputs, which the container takes over (and frees); outputs come back the same way.
        capsules = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors(list(inputs))
        handles = [_capsule_pointer(capsule, None) for capsule in capsules]
        input_array = (ctypes.c_void_p * len(handles))(*handles)
        output_array = (ctypes.c_void_p * self.outputs.value)()
        status = self.library.AOTInductorModelContainerRun(
            self.container, input_array, len(handles), output_array, self.outputs.value, None, None)
        self._check(status, "running the stage")
        outputs = [_new_capsule(pointer, None, None) for pointer in output_array]
        return torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs(outputs)[0]

    def __del__(self) -> None:
        container = getattr(self, "container", None)
        if container:
            self.library.AOTInductorModelContainerDelete(container)


def _member(archive: zipfile.ZipFile, path: Path, suffix: str, required: bool = True) -> zipfile.ZipInfo | None:
    """The one member of an AOTInductor package whose name ends with `suffix`."""
    found = [info for info in archive.infolist()
             if info.filename.endswith(suffix) and "/data/aotinductor/" in info.filename]
    if len(found) > 1 or (required and not found):
        raise RuntimeError(f"{path}: expected one '*{suffix}' in the package, found {len(found)}")
    return found[0] if found else None


class AotiEngine(ModuleEngine):
    """The compiled packages, each called like the stage it was built from."""

    name = "aoti"

    def __init__(self, files: dict[str, Path], device: torch.device, precision: str) -> None:
        self.device = device
        self.precision = precision
        for stage in ("vision", "prompt", "decoder"):  # vision first, as TorchScriptEngine does
            setattr(self, stage, _Package(files[stage]))
            release_freed_memory()

"""`onnxruntime`: each stage exported to ONNX (torch.export-based exporter, dynamic batch axes) and
run by ONNX Runtime.

int8 is ONNX Runtime's dynamic quantisation of the vision and prompt graphs' matrix products
(MatMul/Gemm: int8 weights, activations quantised per batch), the same choice as the torch
backends make (their decoder may run in bf16, which ONNX Runtime's CPU provider lacks). ONNX
Runtime's CPU provider has no bf16 kernels for most of these operators, so bf16 is not offered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .example_inputs import export_signatures
from .precision import PreparedStages

FILES = {"vision": "vision.onnx", "prompt": "prompt.onnx", "decoder": "decoder.onnx"}
INSTALL_HINT = "install the ONNX extra: pip install 'fastclipseg[onnx]'"


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"backend 'onnxruntime' needs the {module!r} package, which is not installed: {INSTALL_HINT}") from error


@contextlib.contextmanager
def _quiet_torchvision_notice():
    """The exporter logs a warning per torchvision operator when torchvision is absent; CLIPSeg
    uses none of them. Only that logger is raised to ERROR, and only during the export."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def build(
    stages: PreparedStages, directory: Path, inputs: dict[str, tuple[torch.Tensor, ...]], precision: str, max_tokens: int
) -> dict[str, Path]:
    """Export the three stages under `directory` (and quantise the vision and prompt graphs for int8)."""
    _require("onnx")
    _require("onnxscript")  # the torch.export-based exporter's dependency
    paths = {}
    for stage, module in stages._asdict().items():
        input_names, output_names, dynamic = export_signatures(max_tokens)[stage]
        dynamic_shapes = {name: dynamic.get(name) for name in input_names}
        paths[stage] = directory / FILES[stage]
        with torch.no_grad(), warnings.catch_warnings(), _quiet_torchvision_notice():
            # The decoder's two "pairs" axes are one Dim on purpose (they must be equal); the
            # exporter warns that it keeps one name for both.
            warnings.filterwarnings("ignore", message=r".*axis name: pairs will not be used.*")
            # torch.export's own use of a pytree API it deprecated (torch 2.13): not the user's business.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec.*")
            torch.onnx.export(
                module.eval(), inputs[stage], str(paths[stage]), input_names=input_names, output_names=output_names,
                dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False, verbose=False,
            )
    if precision == "int8":
        _require("onnxruntime")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # ONNX Runtime recommends its quant_pre_process step first; measured on the full-size model
        # (AMD EPYC, 2 threads) it changed neither the speed nor a mask pixel (99.888 % agreement
        # with fp32 either way), took 4 s of the build and failed on some exporter versions: left out.
        # The prompt graph too: its text tower was most of the process's memory (precision.py).
        for stage in ("vision", "prompt"):
            fp32 = paths[stage].with_suffix(".fp32.onnx")
            os.replace(paths[stage], fp32)
            quantize_dynamic(fp32, paths[stage], weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
            fp32.unlink()
    return paths


class OnnxRuntimeEngine:
    """Runs the exported stages with ONNX Runtime; tensors cross as numpy arrays on the CPU."""

    name = "onnxruntime"

    def __init__(
        self, files: dict[str, Path], precision: str, threads: int | None = None, providers: list[str] | None = None
    ) -> None:
        ort = _require("onnxruntime")
        available = ort.get_available_providers()
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in available]
        if missing:
            raise ValueError(
                f"ONNX Runtime provider(s) {', '.join(missing)} are not available in this installation; "
                f"available: {', '.join(available)}"
            )
        options = ort.SessionOptions()
        # Default to torch's thread count, so one setting (torch.set_num_threads) governs every backend.
        options.intra_op_num_threads = int(threads) if threads else torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Without the arena ONNX Runtime returns freed buffers to the system: peak memory on the
        # 16-frame benchmark falls from 2.2 to 1.4 GB at about the same speed.
        options.enable_cpu_mem_arena = False
        # ONNX Runtime's idle threads spin by default; they then take the cores from whatever the
        # process runs next (preprocessing, another engine): measured here, that made a
        # TorchScript call after an ONNX Runtime call 30 % slower, and ONNX Runtime itself slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.device = torch.device("cpu")
        self.precision = precision
        self.providers = providers
        self.threads = options.intra_op_num_threads
        self.sessions = {
            stage: ort.InferenceSession(str(path), options, providers=providers) for stage, path in files.items()
        }

    def _run(self, stage: str, **inputs: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.sessions[stage].run(None, inputs)[0])

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._run("vision", pixel_values=pixel_values.detach().cpu().float().numpy())

    def encode_prompts(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._run("prompt", input_ids=input_ids.detach().cpu().long().numpy())

    def decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        return self._run(
            "decoder",
            activations=activations.detach().cpu().numpy(),
            embeddings=embeddings.detach().cpu().float().numpy(),
            image_index=image_index.detach().cpu().long().numpy(),
        )

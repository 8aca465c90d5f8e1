"""What each precision does to the three stages (shared by every backend, so they agree).

The stated choice, per precision:

| precision | vision stage | prompt stage | decoder stage |
| --- | --- | --- | --- |
| fp32 | fp32 | fp32 | fp32 |
| bf16 | bf16 weights and activations; quick-GELU MLPs folded to one SiLU (`fold_quick_gelu`) | bf16 on the CPU (fp32 on CUDA), embeddings returned as fp32 | bf16, logits returned as fp32 |
| fp16 | fp16 weights and activations (CUDA) | fp32 | fp16, logits returned as fp32 |
| int8 | linear layers int8 (dynamic quantisation: int8 weights, activations quantised per batch); quick-GELU MLPs folded | linear layers int8 on the CPU; token embeddings int8 per row (torch, torchscript) | bf16 where the CPU has native bf16 (torch, torchscript), else fp32 |

The prompt stage runs once per distinct prompt (its results are cached), so its speed hardly
matters, but its weights (the text tower, 0.25 GB in fp32) were most of a CPU process's memory
once the vision tower is int8: on the CPU it takes the precision's weights too. Measured on
clipseg-shapes-prompted (64 scenes, mean IoU): fp32 0.7345, int8 0.7346 with an fp32 text tower
and 0.7346 with an int8 one, bf16 0.7346 and 0.7344; full-size model, 6 images x 8 prompts:
99.70 / 99.68 % of mask pixels as fp32 (int8), 99.85 / 99.84 % (bf16).

The vision tower holds almost all the arithmetic (about 76 GFLOP per 352x352 image) and runs
once per image; the decoder runs once per (image, prompt) pair, so with many
prompts it takes a large share too (8 prompts: 135 of 335 ms on the AMD EPYC of README's
tables). In int8 its linear layers gain little from int8 (121 ms, 99.4 % mask agreement) but
much from bf16 (57 ms, 99.94 %), so the int8 precision runs it in bf16 where the CPU multiplies
bf16 natively; ONNX Runtime has no fast bf16 CPU kernels, so its int8 keeps an fp32 decoder.
`auto` (`choose_precision`) picks one of these per device.
fp16 is offered on CUDA only: CPUs have no fast fp16 matrix products (bf16 is their half
precision). CLIP's vision tower was trained in fp16 by OpenAI, so its activations stay inside
fp16's range.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Collection
from typing import NamedTuple

import torch
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from ..model.stages import MLP, Stages

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
PRECISION_CHOICES = ("auto", *PRECISIONS)

# The dtype of the vision and decoder stages in the half precisions.
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PreparedStages(NamedTuple):
    """The stages in one precision: vision(pixels), prompt(ids), decoder(acts, embs, index) -> fp32 logits."""

    vision: nn.Module
    prompt: nn.Module
    decoder: nn.Module


class Float32Embeddings(nn.Module):
    """Wraps a prompt stage so that its embeddings come back in fp32 whatever it computes in."""

    def __init__(self, prompt: nn.Module) -> None:
        super().__init__()
        self.prompt = prompt

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.prompt(input_ids).float()


class Float32Logits(nn.Module):
    """Wraps a decoder so that its logits come back in fp32 whatever it computes in.

    `activations_dtype`: cast the vision activations to it first (an int8 vision stage gives fp32
    activations to a bf16 decoder); None passes them through.
    """

    def __init__(self, decoder: nn.Module, activations_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.decoder = decoder
        self.activations_dtype = activations_dtype

    def forward(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        if self.activations_dtype is not None:
            activations = activations.to(self.activations_dtype)
        return self.decoder(activations, embeddings, image_index).float()


def _cpu_supports(check: str) -> bool:
    # torch.cpu exposes these checks only as private helpers; treat their absence as "no".
    return bool(getattr(torch.cpu, check, lambda: False)())


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 matrix products natively (AVX512-BF16 or AMX)."""
    return _cpu_supports("_is_avx512_bf16_supported") or cpu_has_amx()


def cpu_has_amx() -> bool:
    """True where the CPU has AMX tiles (Intel Xeon 4th generation and later)."""
    return _cpu_supports("_is_amx_tile_supported")


def cpu_has_vnni() -> bool:
    """True where the CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI)."""
    return _cpu_supports("_is_vnni_supported")


class PrecisionChoice(NamedTuple):
    precision: str
    reason: str


def _precisions_fastest_first(device: torch.device) -> tuple[tuple[str, ...], str]:
    """The precisions worth running on `device`, fastest first, and why in that order."""
    if device.type != "cpu":
        return ("fp32",), f"no faster precision has been measured on {device.type} yet"
    if cpu_has_amx():
        return ("bf16", "int8", "fp32"), "this CPU has AMX, where bf16 is the fastest precision"
    if cpu_has_vnni():
        order = ("int8", "bf16", "fp32") if cpu_has_native_bf16() else ("int8", "fp32")
        return order, "this CPU has int8 dot products (VNNI) but no AMX, where int8 is the fastest"
    return ("fp32",), "this CPU has neither AMX nor VNNI, so fp32 is the fastest measured precision"


def choose_precision(precision: str, device: torch.device, available: Collection[str] | None = None) -> PrecisionChoice:
    """`auto` -> the fastest precision measured for this device whose parity bar holds; others unchanged.

    `available`: the precisions of a backend that was named (None: any, the backend is chosen
    after the precision); `auto` then takes the fastest of them.
    The rules follow benchmarks/bench_segment.py (full-size model, 2 threads; README's tables):
    a CPU with AMX -> bf16 (Intel Xeon: bf16 beat int8); one with VNNI but no AMX -> int8 (AMD
    EPYC: int8 about 1.5x bf16, and bf16 is slower still where it is not native); any other CPU ->
    fp32 (int8 without VNNI is unmeasured here). CUDA -> fp32: no precision has been measured on a
    GPU in this project yet.
    """
    if precision != "auto":
        return PrecisionChoice(precision, "as asked")
    order, reason = _precisions_fastest_first(device)
    usable = [name for name in order if available is None or name in available] or ["fp32"]
    if usable[0] != order[0]:
        reason += f"; {usable[0]} is the fastest of the precisions this backend runs"
    return PrecisionChoice(usable[0], reason)


def int8_decoder_dtype(backend: str, device: torch.device) -> torch.dtype:
    """The decoder's dtype in precision int8: bf16 where `backend` runs it natively, else fp32."""
    if backend in ("torch", "torchscript") and device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def check_precision(precision: str, device: torch.device, available: tuple[str, ...], backend: str) -> None:
    """A clear ValueError for a precision this backend, device or CPU cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: precisions are {', '.join(PRECISION_CHOICES)}")
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


class _DynamicInt8Linear(torch.ao.nn.quantized.dynamic.Linear):
    """torch's dynamically quantised int8 linear layer, constructed without first packing an empty
    weight of the full size, which `from_float` then replaces with the real one: that placeholder
    took about 40 % of the time to quantise a full-size vision tower."""

    def __init__(self, in_features: int, out_features: int, bias_: bool = True, dtype: torch.dtype = torch.qint8):
        super().__init__(1, 1, bias_, dtype)  # a 1 x 1 placeholder; from_float packs the real weight next
        self.in_features, self.out_features = in_features, out_features


def quantize_linear_int8(module: nn.Module, per_channel: bool = False, inplace: bool = False) -> nn.Module:
    """A copy of `module` (`module` itself with `inplace`, for a caller's own copy) whose nn.Linear
    layers are dynamically quantised to int8 (weights per tensor, or per output channel)."""
    with warnings.catch_warnings():
        # torch.ao.quantization warns on every call that it is deprecated in favour of torchao,
        # whose int8 path needs torch.compile; its eager dynamic quantisation is still the one that
        # TorchScript can trace. Only this call's warnings are hidden.
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*torch\.quantize_per_tensor.*deprecated.*")
        warnings.filterwarnings("ignore", message=r".*per_channel_dynamic_qconfig.*")
        layers = {nn.Linear: per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
        # Quantising only reads the linear weights, and the quantised layers replace them in the copy.
        target = module if inplace else _copy_sharing_linear_weights(module)
        return quantize_dynamic(target, layers, dtype=torch.qint8, inplace=True, mapping={nn.Linear: _DynamicInt8Linear})


def _copy_sharing_linear_weights(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose linear layers share their weights with `module`'s (0.5 GB not
    copied at full size), for a caller that replaces those layers rather than changing them."""
    shared = {id(layer.weight): layer.weight for layer in module.modules() if type(layer) is nn.Linear}
    return copy.deepcopy(module, memo=shared)


class Int8Embedding(nn.Module):
    """An embedding table held as int8 with one fp32 scale per row (symmetric), looked up as fp32.

    CLIP's 49408 x 512 token table takes 25 MB this way, against 50 MB in bf16 and 100 MB in fp32;
    torch's quantised embedding modules do not trace to TorchScript, so the lookup is written here.
    """

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        weight = embedding.weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) / 127
        self.register_buffer("rows", torch.round(weight / scale).to(torch.int8))
        self.register_buffer("scale", scale)
        self.num_embeddings, self.embedding_dim = weight.shape  # as nn.Embedding's

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.rows[input_ids].float() * self.scale[input_ids]


def quantize_prompt_int8(prompt: nn.Module) -> nn.Module:
    """A copy of the prompt stage with int8 linear layers and an int8 token table (`Int8Embedding`).

    Weights per channel: it runs once per prompt, so its speed hardly matters, and on the tiny
    test models per-tensor weights doubled the logit error that the text tower adds.
    """
    quantized = quantize_linear_int8(prompt, per_channel=True)
    quantized.token_embedding = Int8Embedding(quantized.token_embedding)
    return quantized


QUICK_GELU_SLOPE = 1.702  # CLIP's activation: quick_gelu(x) = x * sigmoid(1.702 x)


def _is_quick_gelu(activation: nn.Module) -> bool:
    """True where `activation` computes CLIP's quick GELU (transformers' or the standalone tree's
    class; checked on values, not by class)."""
    probe = torch.linspace(-8, 8, 257)
    with torch.no_grad():
        got = activation(probe)
    return torch.allclose(got, probe * torch.sigmoid(QUICK_GELU_SLOPE * probe), rtol=0, atol=1e-6)


def _scaled_linear(linear: nn.Linear, weight_scale: float, bias_scale: float) -> nn.Linear:
    # skip_init: the weights are overwritten below, and random initialisation took 0.5 s at full size.
    scaled = torch.nn.utils.skip_init(nn.Linear, linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        scaled.weight.copy_(linear.weight.float() * weight_scale)
        if linear.bias is not None:
            scaled.bias.copy_(linear.bias.float() * bias_scale)
    return scaled.requires_grad_(linear.weight.requires_grad)


def fold_quick_gelu(stage: nn.Module) -> nn.Module:
    """Rewrite each quick-GELU MLP of `stage` as `fc2'(silu(fc1'(x)))`, the same function with one
    elementwise pass instead of three.

    x * sigmoid(1.702 x) = silu(1.702 x) / 1.702, so fc1 takes the factor 1.702 (weight and bias)
    and fc2's weight the 1 / 1.702. The mul, sigmoid and mul of the quick GELU took 18 % of a bf16
    vision stage's time (4 images, 2 threads of the Xeon). New linear layers replace the MLP's, so
    `stage` must own its MLP objects (a copy): the model's own layers are never changed. Used for
    bf16 and int8, whose rounding dwarfs the factor's; fp32 keeps the reference's arithmetic.
    """
    for module in stage.modules():
        if isinstance(module, MLP) and _is_quick_gelu(module.activation):
            module.fc1 = _scaled_linear(module.fc1, QUICK_GELU_SLOPE, QUICK_GELU_SLOPE)
            module.fc2 = _scaled_linear(module.fc2, 1 / QUICK_GELU_SLOPE, 1.0)
            module.activation = nn.SiLU()
    return stage


def prepare_stages(
    stages: Stages, precision: str, int8_decoder: torch.dtype = torch.float32, prompt_in_precision: bool = False
) -> PreparedStages:
    """The stages as `precision` runs them (see the table above); fp32 shares the model's weights.

    `int8_decoder`: the decoder's dtype in precision int8 (`int8_decoder_dtype`).
    `prompt_in_precision`: the prompt stage's weights in the precision too (bf16, int8), as the
    CPU engines run it to save memory; otherwise it stays fp32.
    """
    if precision == "fp32":
        return PreparedStages(stages.vision, stages.prompt, Float32Logits(stages.decoder))
    if precision in HALF_DTYPES:
        vision = copy.deepcopy(stages.vision)
        if precision == "bf16":  # a CPU precision; fp16 (CUDA, never run) keeps the reference's MLP
            vision = fold_quick_gelu(vision)
        # Inference copies: no gradients (which also lets TorchScript trace them as functions).
        vision = vision.to(HALF_DTYPES[precision]).requires_grad_(False)
        decoder = copy.deepcopy(stages.decoder).to(HALF_DTYPES[precision]).requires_grad_(False)
        prompt = stages.prompt
        if prompt_in_precision and precision == "bf16":  # fp16 is a CUDA precision: its prompt stays fp32
            prompt = Float32Embeddings(copy.deepcopy(stages.prompt).to(HALF_DTYPES[precision]).requires_grad_(False))
        return PreparedStages(vision, prompt, Float32Logits(decoder))
    if precision == "int8":
        vision = quantize_linear_int8(fold_quick_gelu(_copy_sharing_linear_weights(stages.vision)), inplace=True)
        prompt = quantize_prompt_int8(stages.prompt) if prompt_in_precision else stages.prompt
        if int8_decoder == torch.float32:
            return PreparedStages(vision, prompt, Float32Logits(stages.decoder))
        decoder = copy.deepcopy(stages.decoder).to(int8_decoder)
        return PreparedStages(vision, prompt, Float32Logits(decoder, activations_dtype=int8_decoder))
    raise ValueError(f"unknown precision {precision!r}: precisions are {', '.join(PRECISIONS)}")

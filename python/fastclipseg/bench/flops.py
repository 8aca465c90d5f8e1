"""FLOPs of the three stages, counted analytically, and the matmul-rate floor they imply.

The GPU benchmark (issue 7) reports how close the best network time comes to the FLOP floor:
FLOPs per frame over the matmul rate measured on the same GPU in the same run. This module gives
both halves:

- `stage_flops` counts the FLOPs of the vision, prompt and decoder stages from the model's
  dimensions (written out as formulas in `_count`), a multiply-add counting as 2 FLOPs;
- `matmul_rate` measures the FLOP/s of a large square matmul on a device, and `floor_seconds`
  and `efficiency` turn a FLOP count and a rate into the floor and the floor/measured ratio.

What is counted: the matrix products and convolutions (the patch embedding, every linear layer,
the attention products QK^T and AV, the decoder's convolutions), which is what a matmul rate
bounds. Not counted: bias additions, layer norms, activations, softmax, residual and position
additions, the FiLM multiply-add, embedding gathers; these are memory-bound, and for the real
model they add well under 1 % to the count. That is also exactly what
`torch.utils.flop_counter.FlopCounterMode` counts (mm/addmm/bmm/convolution/attention, each
product of an m x k and a k x n matrix as 2*m*k*n), so the two agree exactly; the tests check it.

Attention is counted in full (T x T scores) even in the causal text tower, as the kernels and
FlopCounterMode do.

For the full-size CIDAS/clipseg-rd64-refined at 352x352 pixels (485 tokens, vision tower run to
layer 10 of 12): vision 76.45 GFLOP per frame (0.57 patch embedding + 10 x 7.59 per layer),
decoder 0.143 GFLOP per frame for the prompt-independent part (the reduces) plus 1.067 GFLOP per
(image, prompt) pair, so 77.66 GFLOP per frame with one prompt; prompt stage 0.53 GFLOP per
7-token prompt (5.96 GFLOP at the full 77 tokens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

# The CLIPSeg processor's input size, used when a bare config gives no other.
REFERENCE_IMAGE_SIZE = 352


@dataclass(frozen=True)
class Dimensions:
    """The sizes the FLOP formulas need (heads do not matter: the heads split the width)."""

    image_size: int  # pixels per side of the (square) input
    channels: int  # input channels (3)
    patch_size: int  # vision patch size (16)
    vision_width: int  # D, vision hidden size (768)
    vision_mlp: int  # vision MLP inner size (3072)
    vision_layers: int  # vision layers run: deepest extracted index + 1 (10)
    text_width: int  # text hidden size (512)
    text_mlp: int  # text MLP inner size (2048)
    text_layers: int  # text layers (12)
    projection_dim: int  # P, the conditional embedding size (512)
    max_tokens: int  # text positions (77)
    reduce_dim: int  # R, decoder width (64)
    decoder_mlp: int  # decoder MLP inner size (2048)
    decoder_layers: int  # decoder blocks = number of extracted layers = number of reduces (3)
    conditional_layer: int  # decoder blocks run before FiLM, per image (0)
    complex_transposed_convolution: bool  # conv 3x3 + 2 transposed convs, or 1 transposed conv


def dimensions_from_config(config, image_size: int | None = None) -> Dimensions:
    """`Dimensions` of a `CLIPSegConfig` (or of a model carrying one) at `image_size` pixels (default 352)."""
    config = getattr(config, "config", config)
    vision, text = config.vision_config, config.text_config
    extract = [int(i) for i in config.extract_layers]
    return Dimensions(
        image_size=int(image_size or REFERENCE_IMAGE_SIZE),
        channels=int(getattr(vision, "num_channels", 3)),
        patch_size=int(vision.patch_size),
        vision_width=int(vision.hidden_size),
        vision_mlp=int(vision.intermediate_size),
        vision_layers=max(extract) + 1,
        text_width=int(text.hidden_size),
        text_mlp=int(text.intermediate_size),
        text_layers=int(text.num_hidden_layers),
        projection_dim=int(config.projection_dim),
        max_tokens=int(text.max_position_embeddings),
        reduce_dim=int(config.reduce_dim),
        decoder_mlp=int(config.decoder_intermediate_size),
        decoder_layers=len(extract),
        conditional_layer=int(config.conditional_layer),
        complex_transposed_convolution=bool(config.use_complex_transposed_convolution),
    )


def dimensions_from_stages(stages, image_size: int | None = None) -> Dimensions:
    """`Dimensions` read off the modules of a `Stages` (or `PreparedStages`) object."""
    vision, prompt, decoder = stages.vision, stages.prompt, stages.decoder
    width, channels, patch, _ = vision.patch_embedding.weight.shape
    return Dimensions(
        image_size=int(image_size or vision.image_size),
        channels=int(channels),
        patch_size=int(patch),
        vision_width=int(width),
        vision_mlp=int(vision.layers[0].mlp.fc1.out_features),
        vision_layers=len(vision.layers),
        text_width=int(prompt.token_embedding.embedding_dim),
        text_mlp=int(prompt.layers[0].mlp.fc1.out_features),
        text_layers=len(prompt.layers),
        projection_dim=int(prompt.text_projection.out_features),
        max_tokens=int(prompt.max_tokens),
        reduce_dim=int(decoder.reduces[0].out_features),
        decoder_mlp=int(decoder.layers[0].mlp.fc1.out_features),
        decoder_layers=len(decoder.layers),
        conditional_layer=int(decoder.conditional_layer),
        complex_transposed_convolution=isinstance(decoder.transposed_convolution, nn.Sequential),
    )


def _linear(rows: int, fan_in: int, fan_out: int) -> int:
    """A linear layer on `rows` vectors: rows x fan_in x fan_out multiply-adds (bias not counted)."""
    return 2 * rows * fan_in * fan_out


def _block(tokens: int, width: int, mlp: int) -> int:
    """One transformer block (pre- or post-norm alike) on `tokens` tokens of `width` features."""
    projections = 4 * _linear(tokens, width, width)  # q, k, v and out projections
    # QK^T: (T x d) @ (d x T) per head, and AV: (T x T) @ (T x d) per head; summed over the
    # heads d becomes the width: 2*T*T*D FLOPs each.
    attention = 2 * (2 * tokens * tokens * width)
    feed_forward = _linear(tokens, width, mlp) + _linear(tokens, mlp, width)  # fc1, fc2
    return projections + attention + feed_forward


def _count(d: Dimensions, tokens: int) -> dict[str, int]:
    """The formulas: FLOPs of the vision stage and the decoder per frame/pair, of a prompt."""
    grid = d.image_size // d.patch_size  # patch grid side (22 at 352 pixels)
    vision_tokens = grid * grid + 1  # patches + class token (485)

    # Vision: the patch embedding is a stride-p convolution, i.e. a linear layer from each
    # p x p x C patch to D features; then the layers up to the deepest extracted one.
    patch_embedding = _linear(grid * grid, d.channels * d.patch_size**2, d.vision_width)
    vision = patch_embedding + d.vision_layers * _block(vision_tokens, d.vision_width, d.vision_mlp)

    # Decoder, prompt-independent part (once per image): one reduce (D -> R linear) per
    # extracted layer, and the blocks before the FiLM conditioning.
    reduces = d.decoder_layers * _linear(vision_tokens, d.vision_width, d.reduce_dim)
    decoder_image = reduces + d.conditional_layer * _block(vision_tokens, d.reduce_dim, d.decoder_mlp)

    # Decoder, per (image, prompt) pair: FiLM's two P -> R linears on the one embedding, the
    # blocks from the conditional one on, then the convolutions on the R x grid x grid patch
    # map (class token dropped). A convolution costs 2 * (input positions of a transposed /
    # output positions of a plain convolution) * kernel area * C_in * C_out.
    film = 2 * _linear(1, d.projection_dim, d.reduce_dim)
    blocks = (d.decoder_layers - d.conditional_layer) * _block(vision_tokens, d.reduce_dim, d.decoder_mlp)
    r = d.reduce_dim
    if d.complex_transposed_convolution:
        k = d.patch_size // 4  # both transposed kernels (and strides) are patch/4
        conv = 2 * grid**2 * 3 * 3 * r * r  # Conv2d R -> R, 3x3, padding 1: grid x grid outputs
        up1 = 2 * grid**2 * k * k * r * (r // 2)  # ConvTranspose2d R -> R/2, k x k, stride k
        up2 = 2 * (grid * k) ** 2 * k * k * (r // 2) * 1  # ConvTranspose2d R/2 -> 1 on the (grid*k)^2 map
        convolutions = conv + up1 + up2
    else:
        convolutions = 2 * grid**2 * d.patch_size**2 * r * 1  # ConvTranspose2d R -> 1, p x p, stride p
    decoder_pair = film + blocks + convolutions

    # Prompt (once per distinct prompt, `tokens` long after padding): the token and position
    # embeddings are gathers and an add (0 FLOPs), then every text layer, then the projection of
    # the pooled end-of-text state only.
    prompt = d.text_layers * _block(tokens, d.text_width, d.text_mlp) + _linear(1, d.text_width, d.projection_dim)

    return {
        "vision": vision,
        "decoder_image": decoder_image,
        "decoder_pair": decoder_pair,
        "prompt": prompt,
    }


def stage_flops(stages, image_size: int | None = None, prompts_per_image: int = 1, tokens: int | None = None) -> dict[str, int]:
    """FLOPs (multiply-add = 2) of each stage, counted from the model's dimensions.

    `stages`: a `Stages`/`PreparedStages` (its modules are read; `image_size` defaults to the size
    it was built for), or a `CLIPSegConfig` or model (`image_size` defaults to 352).
    `prompts_per_image`: prompts decoded per frame. `tokens`: padded prompt length (default the
    text tower's maximum, 77, an upper bound; CLIPSeg prompts are usually 5-10 tokens).

    Returns ints:
    - `vision`: the vision stage, per frame;
    - `decoder_image`: the decoder's prompt-independent part (reduces, pre-FiLM blocks), per frame;
    - `decoder_pair`: the decoder's per-(image, prompt) part (FiLM, blocks, convolutions);
    - `decoder`: the decoder per frame, `decoder_image + prompts_per_image * decoder_pair`;
    - `prompt`: the prompt stage, per prompt of `tokens` tokens;
    - `frame`: `vision + decoder`, the network's work per frame with the prompt embeddings
      cached (as the segmenter does), the numerator of the FLOP floor;
    - `frame_with_prompts`: `frame + prompts_per_image * prompt`, with no prompt cache.
    """
    if prompts_per_image < 0:
        raise ValueError(f"prompts_per_image must be >= 0, got {prompts_per_image}")
    if hasattr(stages, "vision") and hasattr(stages, "decoder"):
        dims = dimensions_from_stages(stages, image_size)
    else:
        dims = dimensions_from_config(stages, image_size)
    tokens = dims.max_tokens if tokens is None else int(tokens)
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    counts = _count(dims, tokens)
    counts["decoder"] = counts["decoder_image"] + prompts_per_image * counts["decoder_pair"]
    counts["frame"] = counts["vision"] + counts["decoder"]
    counts["frame_with_prompts"] = counts["frame"] + prompts_per_image * counts["prompt"]
    return counts


def matmul_rate(
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.float16,
    size: int = 8192,
    repeats: int = 20,
    warmup: int = 3,
) -> float:
    """FLOP/s of a `size` x `size` by `size` x `size` matmul (2*size^3 FLOPs) on `device`.

    Each of `repeats` products is timed on its own (CUDA events, then a synchronize, on CUDA; a
    wall clock elsewhere) after `warmup` untimed ones, and the fastest gives the rate: the best
    the device reaches, to set against the best network time. On CPU use a small size (and a
    dtype the CPU multiplies fast, e.g. float32).
    """
    if size < 1 or repeats < 1:
        raise ValueError(f"size and repeats must be >= 1, got {size}, {repeats}")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    out = torch.empty(size, size, device=device, dtype=dtype)
    with torch.no_grad():
        for _ in range(warmup):
            torch.matmul(a, b, out=out)
        times: list[float] = []
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.synchronize()
                events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
                for start, end in events:
                    start.record()
                    torch.matmul(a, b, out=out)
                    end.record()
                torch.cuda.synchronize()
                times = [start.elapsed_time(end) / 1e3 for start, end in events]
        else:
            for _ in range(repeats):
                began = time.perf_counter()
                torch.matmul(a, b, out=out)
                times.append(time.perf_counter() - began)
    best = min(times)
    if best <= 0:
        raise RuntimeError(f"matmul of size {size} timed at {best} s: use a larger size")
    return 2.0 * size**3 / best


def floor_seconds(flops: float, rate: float) -> float:
    """The FLOP floor: the time `flops` take at `rate` FLOP/s."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    return float(flops) / float(rate)


def efficiency(measured_seconds: float, flops: float, rate: float) -> float:
    """Floor over measured time: the fraction of the matmul rate the network reaches (<= ~1)."""
    if measured_seconds <= 0:
        raise ValueError(f"measured_seconds must be positive, got {measured_seconds}")
    return floor_seconds(flops, rate) / float(measured_seconds)

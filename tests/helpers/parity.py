"""The tolerance rule of the fp32 parity tests, shared by the test modules."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

# fp32 on the same weights: the stages compute the same operations as the reference, in another
# order (other batch shapes, hence other blocking in the CPU's matrix kernels), so the difference
# is float rounding only. "Relative" = max |difference| / max |reference|.
UNIT_ROUNDOFF = 2.0**-24  # fp32
CONFIDENCE = 6.0  # lambda below: a sum exceeds its bound with probability < 2 exp(-18), about 3e-8


def order_tolerance(reduction_lengths: Iterable[int]) -> float:
    """Relative bound on the difference between two fp32 evaluations of one network that differ
    only in the order of their sums; `reduction_lengths` lists the length of every sum on the
    longest path from input to output (one entry per layer that sums).

    The derivation, once for every parity test:
    - One sum of n terms x_i in fp32, in any order, is off by at most lambda * sqrt(n) * u * S,
      with S = sum |x_i| and u = 2^-24, with probability at least 1 - 2 exp(-lambda^2 / 2)
      (rounding errors as independent zero-mean variables: Higham & Mary, "A new approach to
      probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019; the worst case,
      n * u * S, is reached only if every rounding goes the same way).
    - The magnitude of what is summed: products of weights and activations of both signs, so
      S is about sqrt(n) times the size of the result; one layer's relative error is thus
      lambda * n * u.
    - Normalised layers (layer norms, softmax) keep each layer's gain near 1, so the layers'
      independent errors add in quadrature along the path: lambda * u * sqrt(sum of n_l^2).
    So the bound grows with the reduction lengths (the width of the widest layers dominates) and
    does not depend on the machine: on any CPU two summation orders stay within it.
    """
    lengths = [int(n) for n in reduction_lengths]
    return CONFIDENCE * UNIT_ROUNDOFF * math.sqrt(sum(n * n for n in lengths))


def _transformer_layer_sums(width: int, heads: int, intermediate: int, tokens: int) -> list[int]:
    # q/k/v projection, q.k over a head, attention-weighted sum of v, output projection, MLP in and out
    return [width, width // heads, tokens, width, width, intermediate]


def clipseg_reduction_lengths(config, image_size: int, prompt_tokens: int = 77) -> list[int]:
    """The sums on the longest path through CLIPSeg (`CLIPSegConfig`) at `image_size` pixels:
    patch embedding and vision layers up to the deepest one the decoder reads, the text tower and
    projection (the prompt embedding), FiLM, the decoder's layers and its convolutions."""
    vision, text = config.vision_config, config.text_config
    patch = vision.patch_size
    image_tokens = (image_size // patch) ** 2 + 1
    lengths = [3 * patch * patch]
    for _ in range(max(config.extract_layers) + 1):
        lengths += _transformer_layer_sums(vision.hidden_size, vision.num_attention_heads, vision.intermediate_size, image_tokens)
    for _ in range(text.num_hidden_layers):
        lengths += _transformer_layer_sums(text.hidden_size, text.num_attention_heads, text.intermediate_size, prompt_tokens)
    lengths += [text.hidden_size, config.projection_dim, vision.hidden_size]  # projection, FiLM, reduce
    for _ in range(len(config.extract_layers)):
        lengths += _transformer_layer_sums(config.reduce_dim, config.decoder_num_attention_heads,
                                           config.decoder_intermediate_size, image_tokens)
    # Transposed convolutions (stride = kernel / 2 or = kernel: at most (kernel / stride)^2 taps
    # per input channel) and the 3x3 convolution of the complex head.
    lengths += [config.reduce_dim * 9, config.reduce_dim * 4, config.reduce_dim * 4]
    return lengths


def clipseg_tolerance(config, image_size: int) -> float:
    """`order_tolerance` of CLIPSeg with `config` at `image_size`: see both."""
    return order_tolerance(clipseg_reduction_lengths(config, image_size))


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0
    error = (actual - expected).abs().max().item()
    assert error <= tolerance * scale, f"max |difference| {error:.3g} > {tolerance} x max |reference| {scale:.3g}"


# Masks thresholded from logits that differ by float rounding (another batch size, another CPU's
# matrix kernels) may disagree where the probability sits on the threshold, and only there.
THRESHOLD_BAND = 1e-4


def assert_masks_agree(got: np.ndarray, expected, index: int, band: float = THRESHOLD_BAND) -> None:
    """`got` equals mask `index` of the `SegmentationResult` `expected`, except at pixels whose
    probability is within `band` of the threshold."""
    want = expected.masks[index]
    assert got.shape == want.shape
    differ = got != want
    on_threshold = np.abs(expected.probs[index] - expected.threshold) <= band
    assert not (differ & ~on_threshold).any(), (
        f"{int((differ & ~on_threshold).sum())} pixels differ away from the threshold "
        f"({int(differ.sum())} in all)"
    )


def reference_logits(model, tokenizer, pixel_values, prompts_per_image):
    """The reference's own way: one image copy per (image, prompt) pair."""
    pairs = [(i, p) for i, prompts in enumerate(prompts_per_image) for p in prompts]
    encoded = tokenizer([p for _, p in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            pixel_values=pixel_values[[i for i, _ in pairs]],
        ).logits

"""The analytic FLOP counts against torch's FlopCounterMode on the real stage modules.

FlopCounterMode counts matrix products and convolutions only (mm/addmm/bmm/convolution and the
fused attention kernels): no bias, layer norm, activation, softmax or elementwise op. The
analytic count leaves out the same things, so the two must agree EXACTLY (tolerance 0).

CPU attention runs `_scaled_dot_product_flash_attention_for_cpu`, which FlopCounterMode has no
formula for (it would count 0 for QK^T and AV), so the counts are taken under the MATH sdpa
backend, whose QK^T and AV are plain bmm's that it does count.
"""

from __future__ import annotations

import math

import pytest
import torch
from fastclipseg.bench.flops import efficiency, floor_seconds, matmul_rate, stage_flops
from fastclipseg.model.stages import Stages
from helpers.tiny_models import TINY_IMAGE_SIZE, tiny_config, tiny_model
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def counted(fn, *args) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def check_against_counter(stages: Stages, image_size: int, device: str = "cpu") -> dict[str, int]:
    """Runs each stage on 2 images / 3 prompts of 7 tokens / 3 pairs; the counts must match exactly."""
    images, prompts, tokens = 2, 3, 7
    expected = stage_flops(stages, tokens=tokens)
    pixels = torch.zeros(images, 3, image_size, image_size, device=device)
    ids = torch.zeros(prompts, tokens, dtype=torch.long, device=device)
    ids[:, -1] = stages.prompt.eos_token_id
    pairs = torch.tensor([0, 1, 1], device=device)
    with torch.no_grad():
        activations = stages.vision(pixels)
        embeddings = stages.prompt(ids)
        film_input, later = stages.decoder.prepare(activations)

    assert counted(stages.vision, pixels) == images * expected["vision"]
    assert counted(stages.prompt, ids) == prompts * expected["prompt"]
    assert counted(stages.decoder.prepare, activations) == images * expected["decoder_image"]
    assert counted(stages.decoder.decode, film_input, later, embeddings, pairs) == prompts * expected["decoder_pair"]
    assert counted(stages.decoder, activations, embeddings, pairs) == (
        images * expected["decoder_image"] + prompts * expected["decoder_pair"]
    )
    return expected


def test_tiny_stages_match_flop_counter(tiny_reference):
    model, _ = tiny_reference
    stages = Stages(model, TINY_IMAGE_SIZE)
    expected = check_against_counter(stages, TINY_IMAGE_SIZE)
    # The same count from the config alone.
    assert stage_flops(model.config, image_size=TINY_IMAGE_SIZE, tokens=7) == expected


@pytest.mark.parametrize(
    "config",
    [
        tiny_config(conditional_layer=1),  # one decoder block before FiLM, run per image
        tiny_config(extract_layers=(1, 3), conditional_layer=1, complex_conv=False),  # plain transposed conv
    ],
    ids=["conditional-1", "simple-conv"],
)
def test_tiny_variants_match_flop_counter(config):
    model = tiny_model(config)
    stages = Stages(model, TINY_IMAGE_SIZE)
    expected = check_against_counter(stages, TINY_IMAGE_SIZE)
    assert stage_flops(config, image_size=TINY_IMAGE_SIZE, tokens=7) == expected


def test_per_frame_totals(tiny_reference):
    stages = Stages(tiny_reference[0], TINY_IMAGE_SIZE)
    one = stage_flops(stages)
    four = stage_flops(stages, prompts_per_image=4, tokens=5)
    assert four["decoder"] == four["decoder_image"] + 4 * four["decoder_pair"]
    assert four["frame"] == four["vision"] + four["decoder"]
    assert four["frame_with_prompts"] == four["frame"] + 4 * four["prompt"]
    assert one["prompt"] > four["prompt"]  # default is the full 77 tokens
    # Bigger images cost more; the vision tokens grow with the square of the side.
    assert stage_flops(stages, image_size=2 * TINY_IMAGE_SIZE)["vision"] > 3 * one["vision"]


def test_full_size_matches_flop_counter_and_issue():
    """The real config: random weights (about 4 s to build), counted on the meta device (no arithmetic)."""
    from fastclipseg.model.random_model import random_reference_model

    model, _ = random_reference_model()
    stages = Stages(model, 352).to("meta")
    expected = check_against_counter(stages, 352, device="meta")
    # "about 76 GFLOP per 352x352 frame (vision tower to hidden state 10)".
    assert 75e9 < expected["vision"] < 78e9
    assert expected["vision"] == 76_452_575_232
    assert expected["decoder_image"] == 143_032_320
    assert expected["decoder_pair"] == 1_066_633_984
    assert expected["prompt"] == 530_210_816  # 7 tokens
    # The vision tower is almost all of a frame's work with one prompt.
    assert expected["vision"] / expected["frame"] > 0.98


def test_matmul_rate_on_cpu():
    rate = matmul_rate("cpu", dtype=torch.float32, size=128, repeats=3, warmup=1)
    assert math.isfinite(rate) and rate > 0


def test_floor_and_efficiency_arithmetic():
    assert floor_seconds(76e9, 400e12) == pytest.approx(1.9e-4)
    assert efficiency(2.0, 1e12, 1e12) == pytest.approx(0.5)  # floor 1 s, measured 2 s
    assert efficiency(1.9e-4 * 4, 76e9, 400e12) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        floor_seconds(1e9, 0.0)
    with pytest.raises(ValueError):
        efficiency(0.0, 1e9, 1e12)
    with pytest.raises(ValueError):
        stage_flops(tiny_config(), prompts_per_image=-1)

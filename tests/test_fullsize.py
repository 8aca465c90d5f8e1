"""Parity on the full-size CIDAS/clipseg-rd64-refined architecture (random CLIP weights).

The real refined decoder weights are loaded from ../shared/data when present, so the logits are
in a realistic range; without them the decoder is random too. A few cases only: each reference
forward pass costs about 0.7 s on two cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastclipseg.bench.measure import natural_image
from helpers.parity import assert_relative_close, clipseg_tolerance, reference_logits

pytestmark = pytest.mark.fullsize


@pytest.fixture(scope="module")
def fullsize(fullsize_model):
    return fullsize_model


CASES = {
    "1 image x 3 prompts": [["a cat", "the red car", "a dog but not its collar"]],
    "2 images x shared prompts": [["a cat", "a tree"], ["a cat", "a tree"]],
    "2 images x own prompts": [["a cat"], ["a tree", "the sky"]],
}


@pytest.mark.parametrize("case", list(CASES))
def test_fullsize_logits_match_transformers(fullsize, case):
    model, processor, segmenter = fullsize
    prompts_per_image = CASES[case]
    images = [natural_image(240, 320, seed=i) for i in range(len(prompts_per_image))]
    pixel_values = segmenter.pixel_values(images)
    assert pixel_values.shape == (len(images), 3, 352, 352)
    ours = torch.cat(segmenter.predict_logits(pixel_values, prompts_per_image))
    expected = reference_logits(model, processor.tokenizer, pixel_values, prompts_per_image)
    assert ours.shape == (sum(map(len, prompts_per_image)), 352, 352)
    assert_relative_close(ours, expected, clipseg_tolerance(model.config, 352))


def test_fullsize_vision_stage_reads_ten_of_twelve_layers(fullsize):
    _, _, segmenter = fullsize
    assert len(segmenter.stages.vision.layers) == 10
    activations = segmenter.engine.encode_images(segmenter.pixel_values([natural_image(64, 64)]))
    assert tuple(activations.shape) == (3, 1, 485, 768)


def test_real_decoder_gives_realistic_logits(fullsize, shared_data):
    # With the released decoder weights the logits spread over several units, as real CLIPSeg's do.
    _, _, segmenter = fullsize
    logits = segmenter.segment(natural_image(100, 100), "a cat").logits
    assert np.isfinite(logits).all() and logits.std() > 0.1


def test_benchmark_processor_gives_our_pixel_values(fullsize):
    # The benchmarks time the reference from uint8 images through this processor: equal work only
    # if it computes exactly our pixel values (its PIL implementation, torchvision or not).
    _, processor, segmenter = fullsize
    images = [natural_image(480, 640, seed=1), natural_image(97, 131, seed=2)]
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.equal(segmenter.pixel_values(images), expected)

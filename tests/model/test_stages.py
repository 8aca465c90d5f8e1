"""The staged network against transformers' CLIPSegForImageSegmentation on tiny random models."""

from __future__ import annotations

import pytest
import torch
from fastclipseg import FastSegmenter
from fastclipseg.model.stages import Stages
from helpers.parity import (
    assert_relative_close,
    clipseg_tolerance,
    order_tolerance,
    reference_logits,
)
from helpers.tiny_models import TINY_IMAGE_SIZE, tiny_config, tiny_model

CONFIGS = {
    "real-like": dict(extract_layers=(0, 1, 2), conditional_layer=0),
    "film-at-layer-1": dict(extract_layers=(0, 1, 2), conditional_layer=1),
    "film-last": dict(extract_layers=(1, 2, 3), conditional_layer=2),
    "unordered-two": dict(extract_layers=(3, 1), conditional_layer=1),
    "single": dict(extract_layers=(2,), conditional_layer=0),
    "simple-conv": dict(extract_layers=(0, 2), conditional_layer=0, complex_conv=False),
}

CASES = {
    "1 image x 3 prompts": [["a cat", "red dog", "a"]],
    "2 images x shared prompts": [["a cat", "red dog"], ["a cat", "red dog"]],
    "3 images x own prompts": [["a cat"], ["red dog", "a cat", "dog"], ["a red cat on a dog"]],
}


@pytest.fixture(scope="module")
def segmenters(tiny_reference):
    _, processor = tiny_reference
    built = {}
    for name, options in CONFIGS.items():
        model = tiny_model(tiny_config(vocab_size=len(processor.tokenizer), **options), seed=len(built))
        built[name] = (model, FastSegmenter(model, processor))
    return built, processor


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(segmenters, config_name, case):
    built, processor = segmenters
    model, segmenter = built[config_name]
    prompts_per_image = CASES[case]
    torch.manual_seed(1)
    pixel_values = torch.randn(len(prompts_per_image), 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    ours = torch.cat(segmenter.predict_logits(pixel_values, prompts_per_image))
    expected = reference_logits(model, processor.tokenizer, pixel_values, prompts_per_image)
    assert_relative_close(ours, expected, clipseg_tolerance(model.config, TINY_IMAGE_SIZE))
    # The prompts change the answer (so the comparison above is not of constants).
    assert ours.std(dim=0).mean() > 1e-3


def test_chunked_batches_match_one_batch(segmenters):
    built, _ = segmenters
    model, segmenter = built["real-like"]
    pixel_values = torch.randn(5, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    prompts = [["a cat", "dog"]] * 5
    whole = torch.cat(segmenter.predict_logits(pixel_values, prompts))
    segmenter.batch_size = 2
    try:
        chunked = torch.cat(segmenter.predict_logits(pixel_values, prompts))
    finally:
        segmenter.batch_size = 8
    # Each image runs through network calls of its own on the CPU: identical, not close, on any CPU.
    assert torch.equal(chunked, whole)


def test_an_images_logits_do_not_depend_on_its_batch(segmenters):
    # On an AMD EPYC a linear layer over 10 rows rounds differently from the same layer over 2, so
    # an image batched with others used to differ from itself alone by ~1e-5 (scores, and mask
    # pixels on the threshold, then changed when a resumed run shifted the batch boundaries).
    built, _ = segmenters
    _, segmenter = built["real-like"]
    torch.manual_seed(3)
    pixel_values = torch.randn(6, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    prompts = [["a cat", "dog"], ["dog"], ["a cat", "red dog", "a"], ["a cat", "dog"], ["a"], ["dog", "a cat"]]
    together = segmenter.predict_logits(pixel_values, prompts)
    for i in range(6):
        alone = segmenter.predict_logits(pixel_values[i : i + 1], prompts[i : i + 1])[0]
        assert torch.equal(alone, together[i]), f"image {i}"


def test_vision_stage_stops_at_deepest_extracted_layer(tiny_reference):
    _, processor = tiny_reference
    model = tiny_model(tiny_config(extract_layers=(0, 2), vocab_size=len(processor.tokenizer)))
    stages = Stages(model, TINY_IMAGE_SIZE)
    assert len(model.clip.vision_model.encoder.layers) == 4
    assert len(stages.vision.layers) == 3
    pixel_values = torch.randn(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    with torch.no_grad():
        before = stages.vision(pixel_values)
        # Layers past the deepest extracted one and the pooled head cannot influence the output.
        model.clip.vision_model.encoder.layers[3].mlp.fc1.weight.mul_(5.0)
        model.clip.vision_model.post_layernorm.weight.mul_(5.0)
        after = stages.vision(pixel_values)
        reference = model.clip.vision_model(pixel_values, output_hidden_states=True).hidden_states
    assert before.shape == (2, 1, 17, 32)
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    tolerance = clipseg_tolerance(model.config, TINY_IMAGE_SIZE)
    assert_relative_close(before[0], reference[1], tolerance)
    assert_relative_close(before[1], reference[3], tolerance)


def test_conditional_layer_outside_decoder_is_rejected(tiny_reference):
    model = tiny_model(tiny_config(extract_layers=(0, 1), conditional_layer=0))
    model.config.conditional_layer = 2
    with pytest.raises(ValueError, match="conditional_layer=2"):
        Stages(model, TINY_IMAGE_SIZE)


def test_prompt_embedding_does_not_depend_on_batch(tiny_model_dir):
    # Padded in a batch, a prompt's embedding is the same up to rounding (the text tower is causal)...
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir)
    alone = segmenter.engine.encode_prompts(segmenter.core.tokenize(["a cat"]))
    padded = segmenter.engine.encode_prompts(segmenter.core.tokenize(["a cat", "a red cat on a red dog"]))
    text = segmenter.model.config.text_config
    lengths = [text.hidden_size, text.hidden_size // text.num_attention_heads, 77, text.hidden_size,
               text.hidden_size, text.intermediate_size] * text.num_hidden_layers + [text.hidden_size]
    assert_relative_close(padded[0], alone[0], order_tolerance(lengths))
    # ... and the cache holds exactly the same embedding whichever prompts were encoded with it.
    first = segmenter.encode_prompts(["a red cat on a red dog", "a cat"])[1]
    fresh = FastSegmenter.from_pretrained(tiny_model_dir)
    assert torch.equal(fresh.encode_prompts(["a cat"])[0], first)


def test_prompt_cache_encodes_each_prompt_once_and_stays_bounded(tiny_model_dir):
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, prompt_cache_size=2)
    calls = []
    original = segmenter.engine.encode_prompts

    def counting(input_ids):
        calls.append(input_ids.shape[0])
        return original(input_ids)

    segmenter.engine.encode_prompts = counting
    first = segmenter.encode_prompts(["a cat", "dog", "a cat"])
    assert calls == [1, 1]  # one call per distinct prompt (see _encode_uncached)
    again = segmenter.encode_prompts(["dog", "a cat"])
    assert calls == [1, 1]
    torch.testing.assert_close(again, first[[1, 0]])
    segmenter.encode_prompts(["red"])  # evicts the least recently used entry ("dog")
    assert len(segmenter.prompt_cache) == 2
    segmenter.encode_prompts(["dog"])
    assert calls == [1, 1, 1, 1]


def test_prompt_independent_decoder_work_runs_once_per_image(segmenters):
    built, _ = segmenters
    _, segmenter = built["film-at-layer-1"]
    calls = []
    hooks = [m.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0])) for m in segmenter.stages.decoder.reduces]
    try:
        segmenter.predict_logits(torch.randn(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), [["a", "b", "c"], ["a", "b", "c"]])
    finally:
        for hook in hooks:
            hook.remove()
    # Three reduce projections, each applied once per image (each image has its own decoder call on
    # the CPU), not once per pair: 2 images, not the 6 pairs.
    assert calls == [1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_zero_activations_match_the_vision_stage_output(precision):
    """The compiled backends trace the decoder on these zeros instead of running the vision stage."""
    from fastclipseg.engines.precision import prepare_stages

    stages = Stages(tiny_model(tiny_config(extract_layers=(3, 1), conditional_layer=1)), TINY_IMAGE_SIZE).eval()
    vision = prepare_stages(stages, precision).vision
    with torch.no_grad():
        computed = vision(torch.zeros(3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    zeros = vision.zero_activations(3)
    assert (zeros.shape, zeros.dtype) == (computed.shape, computed.dtype)
    assert not zeros.any()

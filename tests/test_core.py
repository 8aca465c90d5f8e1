"""The inference core's public interface: what sessions, streams, features and integrations use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastclipseg import FastSegmenter, InferenceCore, Session
from fastclipseg.bench.measure import natural_image
from fastclipseg.core import core_of
from fastclipseg.features import dense_features
from fastclipseg.prompts import PromptItem, resolve_prompts

IMAGE = natural_image(40, 56, seed=3)


def test_the_facade_hands_out_its_core(tiny_segmenter):
    core = tiny_segmenter.core
    assert isinstance(core, InferenceCore)
    assert core_of(tiny_segmenter) is core and core_of(core) is core
    # The facade's attributes are the core's, not copies.
    assert tiny_segmenter.engine is core.engine and tiny_segmenter.prompt_cache is core.prompt_cache
    with pytest.raises(TypeError, match="expected a FastSegmenter or an InferenceCore, got str"):
        core_of("a segmenter")


def test_core_predicts_what_the_facade_segments(tiny_segmenter):
    core = tiny_segmenter.core
    prompts = ["a cat", "a dog"]
    pixels = core.pixel_values([IMAGE])
    logits = core.predict_logits(pixels, [prompts])[0]
    arrays, packed = core.host_outputs(logits, [2], [IMAGE.shape[:2]], 0.5)
    result = tiny_segmenter.segment(IMAGE, prompts)
    np.testing.assert_array_equal(arrays[0], result.logits)
    assert packed == [None]  # no device processing on the CPU
    # The same through the stages one by one.
    activations = core.encode_images(pixels)
    by_stage = core.decode(activations, core.encode_prompts(prompts), torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(by_stage, logits, rtol=0, atol=0)


def test_embed_takes_every_kind_of_leaf(tiny_segmenter):
    core = tiny_segmenter.core
    row = np.random.default_rng(0).normal(size=(1, core.embedding_dim)).astype(np.float32)
    items = resolve_prompts(["a cat", IMAGE], conditional_embeddings=row, embedding_dim=core.embedding_dim)
    embedded = core.embed(items)
    assert embedded.shape == (3, core.embedding_dim)
    torch.testing.assert_close(embedded[0], core.encode_prompts("a cat")[0])
    torch.testing.assert_close(embedded[1], core.encode_image_prompts([IMAGE])[0])
    torch.testing.assert_close(embedded[2], torch.from_numpy(row[0]))
    with pytest.raises(ValueError, match="evaluate expressions on their terms"):
        core.embed([PromptItem("expression", "a OR b", None)])


def test_sessions_and_features_run_on_the_core_alone(tiny_segmenter):
    core = tiny_segmenter.core
    from_core = Session(core, IMAGE).segment("a cat")
    from_facade = tiny_segmenter.session(IMAGE).segment("a cat")
    np.testing.assert_array_equal(from_core.logits, from_facade.logits)
    np.testing.assert_array_equal(dense_features(core, IMAGE).embeddings, tiny_segmenter.dense_features(IMAGE).embeddings)


def test_batch_size_is_checked_in_one_place(tiny_model_dir):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
            FastSegmenter.from_pretrained(tiny_model_dir, batch_size=bad)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        FastSegmenter.from_pretrained(tiny_model_dir).segment_video([IMAGE], "a cat", batch_size=0)


def test_batch_size_set_later_is_checked_too(tiny_model_dir):
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir)
    segmenter.batch_size = 3
    assert segmenter.core.batch_size == 3
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        segmenter.batch_size = 0
    assert segmenter.batch_size == 3

"""`edges=` through every entry point (segment, segment_batch, sessions, streams, the device path,
instances) on the tiny random model: each gives what `ops.postprocess(..., edges, guide=image)`
gives on its logits, and nothing changes without it."""

from __future__ import annotations

import numpy as np
import pytest
from fastclipseg import FastSegmenter, ops
from fastclipseg.bench.measure import natural_image
from fastclipseg.ops import instances as components
from fastclipseg.ops.edges import DEFAULT_EDGES, Edges

PROMPTS = ["a cat", "red dog"]
EDGES = Edges(3, 1e-3, "grey")


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir):
    return FastSegmenter.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def images():
    return [natural_image(90, 120, seed=11), natural_image(121, 77, seed=12)]


def expected_outputs(result, image, edges=EDGES):
    return ops.postprocess(result.logits, result.image_size, result.threshold, masks=True, rle=True, area=True,
                           bbox=True, score=True, stability=True, edges=edges, guide=image)


def assert_edge_aware(result, image, edges=EDGES):
    expected = expected_outputs(result, image, edges)
    assert result.edges == edges
    np.testing.assert_array_equal(result.masks, expected.masks)
    assert result.rle == expected.rle
    np.testing.assert_array_equal(result.scores, expected.score)
    np.testing.assert_array_equal(result.stability, expected.stability)


def test_segment_and_segment_batch(segmenter, images):
    for image in images:
        assert_edge_aware(segmenter.segment(image, PROMPTS, edges=EDGES), image)
    for result, image in zip(segmenter.segment_batch(images, PROMPTS, threshold=0.4, edges=EDGES), images):
        assert_edge_aware(result, image)
    assert segmenter.segment(images[0], PROMPTS, edges=True).edges == DEFAULT_EDGES
    assert segmenter.segment(images[0], PROMPTS, edges={"radius": 2}).edges == Edges(radius=2)


def test_without_edges_nothing_changes(segmenter, images):
    plain = segmenter.segment(images[0], PROMPTS)
    off = segmenter.segment(images[0], PROMPTS, edges=False)
    assert plain.edges is None and plain.guide is None
    np.testing.assert_array_equal(plain.masks, off.masks)
    bilinear = ops.postprocess(plain.logits, plain.image_size, masks=True)
    np.testing.assert_array_equal(plain.masks, bilinear.masks)


def test_sessions_and_expressions(segmenter, images):
    session = segmenter.session(images[0], edges=EDGES)
    assert_edge_aware(session.segment("a cat"), images[0])
    # An expression combines edge-aware maps: its terms' probabilities are the filtered ones.
    combined = segmenter.segment(images[0], ["a cat OR red dog"], edges=EDGES)
    leaves = expected_outputs(segmenter.segment(images[0], PROMPTS), images[0])
    assert combined.edges is None  # its logits are at the image's size already, edge-aware
    either = leaves.masks[0] | leaves.masks[1]
    assert (combined.masks == either).mean() > 0.99


def test_streams(segmenter, images):
    for result, image in zip(segmenter.segment_stream(images, PROMPTS, edges=EDGES), images, strict=True):
        assert_edge_aware(result, image)
    frames = [natural_image(64, 96, seed=s) for s in (1, 2)]
    for result, frame in zip(segmenter.segment_video(frames, PROMPTS, edges=EDGES), frames, strict=True):
        assert_edge_aware(result, frame)


def test_instances_are_the_objects_of_the_edge_aware_mask(segmenter, images):
    result = segmenter.segment(images[1], PROMPTS, threshold=0.45, edges=EDGES)
    for k in range(len(PROMPTS)):
        labels, count = components.label(result.masks[k], 8)
        found = result.instances(k)
        assert len(found) == count
        assert sum(i.area for i in found) == result.areas[k]
        probabilities = result.probs[k]
        for instance in found:
            assert 0.0 <= instance.score <= 1.0 and 0.0 <= instance.stability <= 1.0
        if found:
            first = found[0]
            mask = labels == 1
            assert first.area == mask.sum()
            assert first.score == pytest.approx(probabilities[mask].astype(np.float64).mean(), abs=1e-6)
    assert all(d["image_id"] == 7 for d in result.to_coco(7, instances=True))


def test_the_device_path_uses_the_torch_twin(tiny_model_dir, segmenter, images):
    on_device = FastSegmenter.from_pretrained(tiny_model_dir, device_processing=True)
    for got, image in zip(on_device.segment_batch(images, PROMPTS, edges=EDGES), images, strict=True):
        assert got.packed is not None
        expected = expected_outputs(got, image)
        q = ops.postprocess(got.logits, got.image_size, masks=False, probs="float32", edges=EDGES, guide=image).probs
        differ = got.masks != expected.masks
        assert np.all(np.abs(q[differ] - 0.5) <= 1e-5)
        np.testing.assert_allclose(got.scores, expected.score, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.stability, expected.stability, rtol=0, atol=1e-3)

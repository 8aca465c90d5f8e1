"""Masks that mean something: the clipseg-shapes model from ../shared/data on scenes with known answers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from fastclipseg import FastSegmenter
from helpers.backends import FAST_PATHS, skip_unavailable
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

SCENES = 24


@pytest.fixture(scope="module")
def shapes(shared_data):
    spec = importlib.util.spec_from_file_location("shapes", shared_data / "shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(1234)
    scenes = []
    for _ in range(SCENES):
        image, objects = module.scene(rng)
        prompt, truth = module.query(rng, objects)
        scenes.append((image, prompt, truth))
    return module, scenes


def test_shapes_iou_matches_the_reference(shared_data, shapes):
    module, scenes = shapes
    folder = shared_data / "clipseg-shapes"
    segmenter = FastSegmenter.from_pretrained(folder)
    model = CLIPSegForImageSegmentation.from_pretrained(folder).eval()
    processor = CLIPSegProcessor.from_pretrained(folder, backend="pil")  # see conftest.tiny_reference

    ours, reference = [], []
    for image, prompt, truth in scenes:
        result = segmenter.segment(image, prompt)
        inputs = processor(text=[prompt], images=[image], padding=True, return_tensors="pt")
        with torch.no_grad():
            expected_logits = model(**inputs).logits
        expected_masks = torch.sigmoid(expected_logits[0]).numpy() > 0.5  # 352x352 scenes: no resizing
        error = np.abs(result.logits[0] - expected_logits[0].numpy()).max()
        assert error <= 1e-5 * np.abs(expected_logits[0].numpy()).max()
        ours.append(module.iou(result.masks[0], truth))
        reference.append(module.iou(expected_masks, truth))
    present = [i for i, (_, _, truth) in enumerate(scenes) if truth.any()]
    assert abs(np.mean(ours) - np.mean(reference)) <= 0.03
    # The model's held-out IoU for objects that are present is about 0.6-0.7 (see its README).
    assert np.mean([ours[i] for i in present]) > 0.4


def _mean_iou(segmenter: FastSegmenter, module, scenes) -> float:
    return float(np.mean([module.iou(segmenter.segment(image, prompt).masks[0], truth) for image, prompt, truth in scenes]))


@pytest.fixture(scope="module")
def fp32_iou(shared_data, shapes):
    module, scenes = shapes
    return _mean_iou(FastSegmenter.from_pretrained(shared_data / "clipseg-shapes"), module, scenes)


@pytest.mark.parametrize("backend,precision", FAST_PATHS)
def test_fast_paths_keep_the_fp32_iou(shared_data, shapes, fp32_iou, backend, precision):
    # The ../shared/data README's semantic check: a fast path keeps the fp32 path's held-out IoU
    # within 0.03 over a few dozen scenes.
    skip_unavailable(backend, precision)
    module, scenes = shapes
    segmenter = FastSegmenter.from_pretrained(shared_data / "clipseg-shapes", backend=backend, precision=precision)
    iou = _mean_iou(segmenter, module, scenes)
    print(f"{backend} {precision}: mean IoU {iou:.4f} (fp32 torch: {fp32_iou:.4f})")
    assert abs(iou - fp32_iou) <= 0.03

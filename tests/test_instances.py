"""`SegmentationResult.instances` (issue 18): each object of a prompt's mask with its RLE, box,
area, score and stability, checked against scipy.ndimage and numpy on known logits."""

from __future__ import annotations

import numpy as np
import pytest
from fastclipseg import SegmentationResult
from fastclipseg.ops import rle as coco_rle
from pycocotools import mask as coco_mask
from scipy import ndimage


def two_blobs_result() -> SegmentationResult:
    """Logits at the image's size: two separate squares for prompt 0, one for prompt 1 touching a
    speck by a corner, and a ramp that gives the stability score something to measure."""
    logits = np.full((2, 40, 60), -6.0, np.float32)
    logits[0, 5:15, 5:20] = 4.0      # object A: 150 pixels
    logits[0, 25:35, 30:50] = 0.5    # object B: 200 pixels just above the threshold (unstable)
    logits[0, 24, 30:50] = -0.5      # a rim of B between the two stability cuts
    logits[1, 10:30, 10:30] = 3.0
    logits[1, 30, 30] = 3.0          # a speck touching the square by a corner only
    return SegmentationResult(prompts=["a square", "a box"], logits=logits, image_size=(40, 60))


def test_instances_are_the_components_with_their_measures():
    result = two_blobs_result()
    found = result.instances(0)
    assert [i.area for i in found] == [150, 200]
    assert [i.bbox for i in found] == [[5.0, 5.0, 15.0, 10.0], [30.0, 25.0, 20.0, 10.0]]
    assert all(i.prompt == "a square" and i.prompt_index == 0 for i in found)
    sigmoid = 1 / (1 + np.exp(-np.array([4.0, 0.5])))
    assert [i.score for i in found] == pytest.approx(sigmoid.tolist(), rel=1e-6)
    # A: nothing between the cuts (logit - 1 and + 1 keep the same square) -> 1.
    # B: above logit(0.5) + 1 = 1.0 nothing; the low cut adds the rim -> 0 / 220.
    assert [i.stability for i in found] == [1.0, 0.0]
    labels, count = ndimage.label(result.masks[0])
    assert count == 2
    for k, instance in enumerate(found, start=1):
        decoded = coco_mask.decode({"size": instance.rle["size"], "counts": instance.rle["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), labels == k)
        assert instance.rle == coco_rle.encode(labels == k)


def test_connectivity_and_min_area():
    result = two_blobs_result()
    assert [i.area for i in result.instances(1, connectivity=8)] == [401]
    assert [i.area for i in result.instances(1, connectivity=4)] == [400, 1]
    assert [i.area for i in result.instances(1, connectivity=4, min_area=2)] == [400]
    assert result.instances(1, min_area=10_000) == []


def test_instances_of_an_empty_mask_and_of_network_sized_logits():
    empty = SegmentationResult(prompts=["nothing"], logits=np.full((1, 8, 8), -5, np.float32), image_size=(30, 20))
    assert empty.instances(0) == []
    # Logits at the model's resolution are upsampled first, as for the masks.
    rng = np.random.default_rng(2)
    logits = ndimage.gaussian_filter(rng.normal(size=(1, 22, 22)), 2).astype(np.float32) * 20
    result = SegmentationResult(prompts=["blobs"], logits=logits, image_size=(97, 131))
    found = result.instances(0)
    labels, count = ndimage.label(result.masks[0], structure=np.ones((3, 3)))
    assert len(found) == count > 1
    assert sum(i.area for i in found) == int(result.masks[0].sum())
    for k, instance in enumerate(found, start=1):
        assert instance.area == int((labels == k).sum())
        assert 0 < instance.stability <= 1 and 0.5 < instance.score <= 1


def test_to_dict_is_json_ready():
    instance = two_blobs_result().instances(0)[0]
    assert instance.to_dict() == {"prompt": "a square", "prompt_index": 0, "score": instance.score,
                                  "stability": 1.0, "area": 150, "bbox": [5.0, 5.0, 15.0, 10.0], "rle": instance.rle}


@pytest.mark.parametrize(("arguments", "message"), [
    ({"k": 2}, "k must be the index of a prompt, 0 .. 1, got 2"),
    ({"k": -1}, "k must be the index of a prompt"),
    ({"k": True}, "k must be the index of a prompt"),
    ({"k": 0, "min_area": -1}, "min_area must be an int >= 0"),
    ({"k": 0, "min_area": 2.5}, "min_area must be an int >= 0"),
    ({"k": 0, "connectivity": 6}, "connectivity must be 4 or 8, got 6"),
])
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        two_blobs_result().instances(**arguments)

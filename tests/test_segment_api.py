"""FastSegmenter.segment / segment_batch: inputs, outputs and agreement with the processor path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastclipseg import FastSegmenter, SegmentationResult
from fastclipseg.bench.measure import natural_image
from PIL import Image
from pycocotools import mask as coco_mask


def test_result_fields(tiny_segmenter):
    image = natural_image(48, 80)
    result = tiny_segmenter.segment(image, ["a cat", "red dog"], threshold=0.5)
    assert isinstance(result, SegmentationResult)
    assert result.prompts == ["a cat", "red dog"]
    assert result.logits.shape == (2, 64, 64) and result.logits.dtype == np.float32
    assert result.image_size == (48, 80)
    assert result.probs.shape == (2, 48, 80) and result.probs.dtype == np.float32
    assert result.probs.min() >= 0 and result.probs.max() <= 1
    # The torch path (issue 2's reference): interpolate, sigmoid, threshold the probability.
    upsampled = F.interpolate(torch.from_numpy(result.logits)[None], size=(48, 80), mode="bilinear", align_corners=False)[0]
    expected_probs = torch.sigmoid(upsampled).numpy()
    np.testing.assert_allclose(result.probs, expected_probs, rtol=0, atol=1e-6)
    # Masks are decided on the logit (> log(t/(1-t)) = 0 for t = 0.5); they may differ from
    # the float32 probability test only where the logit is within rounding of the boundary.
    disagree = result.masks != (expected_probs > 0.5)
    assert np.all(np.abs(upsampled.numpy()[disagree]) <= 1e-5)
    assert result.masks.any() and not result.masks.all()  # both classes present: the check bites
    for k in range(2):
        mask = result.masks[k]
        expected_score = expected_probs[k][mask].mean() if mask.any() else 0.0
        assert result.scores[k] == pytest.approx(expected_score, abs=1e-6)
        assert result.areas[k] == int(mask.sum())
        decoded = coco_mask.decode({"size": result.rle[k]["size"], "counts": result.rle[k]["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask)
        assert isinstance(result.rle[k]["counts"], str)
        np.testing.assert_allclose(result.bboxes[k], coco_mask.toBbox(coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))))
    record = json.loads(result.to_json())
    assert record["height"] == 48 and record["width"] == 80
    assert [m["prompt"] for m in record["masks"]] == ["a cat", "red dog"]
    assert record["masks"][1]["rle"] == result.rle[1]


def test_masks_of_both_kinds_are_exercised(tiny_segmenter):
    # Thresholds at the extremes give full and empty masks; scores follow the definition.
    image = natural_image(40, 40, seed=3)
    full = tiny_segmenter.segment(image, "a cat", threshold=0.0)
    empty = tiny_segmenter.segment(image, "a cat", threshold=1.0)
    assert full.masks.all() and full.scores[0] == pytest.approx(full.probs.mean(), abs=1e-6)
    assert not empty.masks.any() and empty.scores[0] == 0.0 and empty.bboxes[0] == [0.0, 0.0, 0.0, 0.0]


def test_image_file_agrees_with_processor_and_model(tiny_segmenter, tiny_reference, tmp_path):
    model, processor = tiny_reference
    path = tmp_path / "photo.png"
    Image.fromarray(natural_image(97, 131, seed=5)).save(path)
    prompts = ["a cat", "red dog"]
    ours = torch.from_numpy(tiny_segmenter.segment(path, prompts).logits)
    with Image.open(path) as image:
        inputs = processor(text=prompts, images=[image.convert("RGB")] * len(prompts), padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits
    # The pixel values are bit-identical to the processor's, so the logits agree as closely as
    # the stages do (the bound is 1e-3 relative; 1e-5 holds).
    pixels = tiny_segmenter.pixel_values([np.asarray(Image.open(path).convert("RGB"))])
    np.testing.assert_array_equal(pixels.numpy(), inputs["pixel_values"][:1].numpy())
    error = (ours - expected).abs().max().item()
    assert error <= 1e-5 * expected.abs().max().item()


def _logits(segmenter, image) -> np.ndarray:
    return segmenter.segment(image, "a cat").logits


def test_input_kinds_give_the_same_answer(tiny_segmenter, tmp_path):
    rgb = natural_image(30, 50, seed=7)
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    expected = _logits(tiny_segmenter, rgb)
    np.testing.assert_array_equal(_logits(tiny_segmenter, str(path)), expected)
    np.testing.assert_array_equal(_logits(tiny_segmenter, path), expected)
    np.testing.assert_array_equal(_logits(tiny_segmenter, Image.fromarray(rgb)), expected)
    rgba = np.concatenate([rgb, np.full((30, 50, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(_logits(tiny_segmenter, rgba), expected)
    # A strided (non-contiguous) view is accepted.
    wide = np.zeros((30, 100, 3), np.uint8)
    wide[:, ::2] = rgb
    np.testing.assert_array_equal(_logits(tiny_segmenter, wide[:, ::2]), expected)


def test_grey_palette_and_16_bit_images(tiny_segmenter, tmp_path):
    grey = natural_image(20, 24)[:, :, 0]
    grey_rgb = np.repeat(grey[:, :, None], 3, axis=2)
    expected = _logits(tiny_segmenter, grey_rgb)
    np.testing.assert_array_equal(_logits(tiny_segmenter, grey), expected)
    np.testing.assert_array_equal(_logits(tiny_segmenter, grey[:, :, None]), expected)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(_logits(tiny_segmenter, tmp_path / "grey.png"), expected)
    # 16-bit greyscale: the full 0..65535 range maps onto 0..255.
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    np.testing.assert_array_equal(_logits(tiny_segmenter, tmp_path / "grey16.png"), expected)
    palette = Image.fromarray(natural_image(20, 24)).convert("P")
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(
        _logits(tiny_segmenter, tmp_path / "palette.png"), _logits(tiny_segmenter, np.asarray(palette.convert("RGB")))
    )


def test_exif_orientation_is_applied_for_files(tiny_segmenter, tmp_path):
    rgb = natural_image(20, 36, seed=2)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    result = tiny_segmenter.segment(path, "a cat")
    assert result.image_size == (36, 20)


def test_segment_batch_shared_and_own_prompts(tiny_segmenter):
    images = [natural_image(20, 30, seed=s) for s in range(3)]
    shared = tiny_segmenter.segment_batch(images, ["a cat", "dog"])
    assert [r.prompts for r in shared] == [["a cat", "dog"]] * 3
    for image, result in zip(images, shared):
        np.testing.assert_allclose(result.logits, tiny_segmenter.segment(image, ["a cat", "dog"]).logits, rtol=1e-5, atol=1e-5)
    own = tiny_segmenter.segment_batch(images, [["a cat"], ["dog", "red"], ["a red cat"]])
    assert [r.prompts for r in own] == [["a cat"], ["dog", "red"], ["a red cat"]]
    np.testing.assert_allclose(own[1].logits[0], shared[1].logits[1], rtol=1e-5, atol=1e-5)


def test_from_pretrained_accepts_a_loaded_model(tiny_reference):
    model, processor = tiny_reference
    segmenter = FastSegmenter.from_pretrained(model, processor=processor)
    assert segmenter.segment(natural_image(10, 10), "a cat").masks.shape == (1, 10, 10)
    with pytest.raises(ValueError, match="processor"):
        FastSegmenter.from_pretrained(model)


def test_kernel_threads_do_not_change_results(tiny_model_dir):
    image = natural_image(123, 77, seed=11)
    one, two = (FastSegmenter.from_pretrained(tiny_model_dir, kernel_threads=n).segment(image, ["a cat", "dog"])
                for n in (1, 2))
    np.testing.assert_array_equal(one.logits, two.logits)
    np.testing.assert_array_equal(one.probs, two.probs)
    np.testing.assert_array_equal(one.masks, two.masks)
    assert one.to_dict() == two.to_dict()


@pytest.mark.parametrize(("threads", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                                 (True, TypeError), ("2", TypeError)])
def test_bad_kernel_threads_are_rejected(tiny_reference, threads, error):
    model, processor = tiny_reference
    with pytest.raises(error, match="kernel_threads"):
        FastSegmenter(model, processor, kernel_threads=threads)


def test_summary_is_the_same_whichever_field_is_read_first(tiny_segmenter):
    # Reading masks first computes the summary in the same pass; it must equal the summary alone.
    image = natural_image(70, 90, seed=12)
    masks_first = tiny_segmenter.segment(image, ["a cat", "dog"])
    masks = masks_first.masks
    summary_first = tiny_segmenter.segment(image, ["a cat", "dog"])
    record = summary_first.to_dict()
    assert masks_first.to_dict() == record
    np.testing.assert_array_equal(summary_first.masks, masks)
    assert [m["area"] for m in record["masks"]] == [int(m.sum()) for m in masks]


@pytest.mark.parametrize("flags", [dict(do_normalize=False), dict(do_rescale=False), dict(resample=3)])
def test_preprocessing_follows_the_processor_config(flags):
    from fastclipseg.ops.image_processor import (
        PreprocessConfig,
        preprocess,
        preprocess_images,
    )
    from transformers import ViTImageProcessorPil

    image_processor = ViTImageProcessorPil(size={"height": 48, "width": 48}, **flags)
    image = natural_image(37, 61, seed=9)
    expected = image_processor(images=[image], return_tensors="np")["pixel_values"]
    config = PreprocessConfig.from_image_processor(image_processor)
    np.testing.assert_array_equal(preprocess([image], config), expected)
    # What FastSegmenter runs: the native kernel for bilinear, the PIL path for other filters.
    np.testing.assert_array_equal(preprocess_images([image], config), expected)


def test_processor_without_resize_is_rejected():
    from fastclipseg.ops.image_processor import PreprocessConfig
    from transformers import ViTImageProcessorPil

    with pytest.raises(ValueError, match="do_resize=False"):
        PreprocessConfig.from_image_processor(ViTImageProcessorPil(do_resize=False))

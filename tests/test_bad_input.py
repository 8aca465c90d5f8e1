"""Every kind of bad input gets the documented exception with a message naming the input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from fastclipseg import FastSegmenter

GOOD = np.zeros((16, 16, 3), np.uint8)


@pytest.mark.parametrize(
    "prompts, error, message",
    [
        ([], ValueError, "empty"),
        ("", ValueError, r"prompts\[0\] is empty"),
        ("   \t", ValueError, "whitespace"),
        (["a cat", " "], ValueError, r"prompts\[1\]"),
        (["a cat", 3], TypeError, r"prompts\[1\] must be a string, got int"),
        (None, TypeError, "got NoneType"),
        (b"a cat", TypeError, "bytes"),
    ],
)
def test_bad_prompts(tiny_segmenter, prompts, error, message):
    with pytest.raises(error, match=message):
        tiny_segmenter.segment(GOOD, prompts)


def test_long_prompt_is_truncated_with_a_warning(tiny_segmenter):
    long_prompt = " ".join(["cat"] * 120)
    with pytest.warns(UserWarning, match="truncated"):
        result = tiny_segmenter.segment(GOOD, long_prompt)
    assert result.logits.shape[0] == 1
    # Truncated to the first 77 tokens: the same as the prompt cut to fit.
    fitting = " ".join(["cat"] * 75)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(tiny_segmenter.segment(GOOD, fitting).logits, result.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.zeros((16, 16, 3), np.float32), TypeError, "dtype uint8, got float32"),
        (np.zeros((16, 16, 3), np.uint16), TypeError, "uint16"),
        (np.zeros((2, 16, 16, 3), np.uint8), ValueError, "4 dimensions"),
        (np.zeros((16,), np.uint8), ValueError, "1 dimensions"),
        (np.zeros((16, 16, 2), np.uint8), ValueError, "got 2"),
        (np.zeros((16, 16, 5), np.uint8), ValueError, "got 5"),
        (np.zeros((0, 0, 3), np.uint8), ValueError, "empty"),
        (np.zeros((0, 10), np.uint8), ValueError, "empty"),
        (12, TypeError, "got int"),
        ([GOOD], TypeError, "got list"),
    ],
)
def test_bad_arrays_and_types(tiny_segmenter, image, error, message):
    with pytest.raises(error, match=message):
        tiny_segmenter.segment(image, "a cat")


def test_pixel_limit(tiny_model_dir, tmp_path):
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, max_image_pixels=100)
    with pytest.raises(ValueError, match="above the limit of 100"):
        segmenter.segment(np.zeros((11, 10, 3), np.uint8), "a cat")
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="big.png.*above the limit"):
        segmenter.segment(path, "a cat")
    assert segmenter.segment(np.zeros((10, 10, 3), np.uint8), "a cat").masks.shape == (1, 10, 10)


@pytest.mark.parametrize("threshold", [float("nan"), -0.1, 1.5, float("inf")])
def test_bad_threshold_values(tiny_segmenter, threshold):
    with pytest.raises(ValueError, match="threshold"):
        tiny_segmenter.segment(GOOD, "a cat", threshold=threshold)


@pytest.mark.parametrize("threshold", ["0.5", None, True])
def test_bad_threshold_types(tiny_segmenter, threshold):
    with pytest.raises(TypeError, match="threshold"):
        tiny_segmenter.segment(GOOD, "a cat", threshold=threshold)


def test_missing_file(tiny_segmenter, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        tiny_segmenter.segment(tmp_path / "nothere.png", "a cat")


def test_corrupt_and_non_image_files(tiny_segmenter, tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="garbage.jpg"):
        tiny_segmenter.segment(garbage, "a cat")
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.png"):
        tiny_segmenter.segment(truncated, "a cat")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png"):
        tiny_segmenter.segment(empty, "a cat")
    with pytest.raises(ValueError, match="is a directory"):
        tiny_segmenter.segment(tmp_path, "a cat")


def test_batch_errors_name_the_image(tiny_segmenter, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"images\[1\].*missing.png"):
        tiny_segmenter.segment_batch([GOOD, tmp_path / "missing.png"], "a cat")
    with pytest.raises(ValueError, match="images is empty"):
        tiny_segmenter.segment_batch([], "a cat")
    with pytest.raises(TypeError, match="list of images"):
        tiny_segmenter.segment_batch("one.png", "a cat")
    with pytest.raises(ValueError, match="2 prompt lists for 3 images"):
        tiny_segmenter.segment_batch([GOOD] * 3, [["a"], ["b"]])
    with pytest.raises(ValueError, match=r"prompts\[1\]\[0\] is empty"):
        tiny_segmenter.segment_batch([GOOD] * 2, [["a"], [""]])


def test_unsupported_backend_and_precision(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown backend 'tensorrt-fast'"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="tensorrt-fast")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        FastSegmenter.from_pretrained(tiny_model_dir, precision="int4")
    with pytest.raises(ValueError, match="'bf16' is not available for backend 'onnxruntime'"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="invalid device"):
        FastSegmenter.from_pretrained(tiny_model_dir, device="quantum")


def test_single_array_given_to_segment_batch_is_rejected(tiny_segmenter):
    with pytest.raises(TypeError, match="for one image use segment"):
        tiny_segmenter.segment_batch(GOOD, "a cat")
    batch = np.stack([GOOD, GOOD])
    assert len(tiny_segmenter.segment_batch(batch, "a cat")) == 2

"""Pre- and post-processing on the network's device (`fastclipseg.ops.device.processing`) against the
native CPU kernels, through every `FastSegmenter` entry point.

`device_processing=True` runs the device path on the CPU here (CI has no CUDA): the same torch
code a GPU runs, so these tests check its logic, the packed-mask results and the wiring into
`segment`, `segment_batch`, streams and sessions. Images are larger than 64 + 64 pixels in
height + width, where the native upsampling is bit-identical to PyTorch's, so masks, RLE, areas,
boxes and stability are equal and scores equal to float64 summation order. The CUDA tests at the
end skip where there is no CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastclipseg import FastSegmenter, _core, ops
from fastclipseg.bench.measure import natural_image
from fastclipseg.ops import rle as coco_rle
from fastclipseg.ops.device import processing
from fastclipseg.ops.device.processing import DeviceProcessing
from fastclipseg.ops.device.upload import FrameUploader

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (PyTorch sees none)")
SCORE_TOLERANCE = 1e-6
PROMPTS = ["a cat", "red dog"]


@pytest.fixture(scope="module")
def on_device(tiny_model_dir):
    return FastSegmenter.from_pretrained(tiny_model_dir, device_processing=True)


@pytest.fixture(scope="module")
def native(tiny_model_dir):
    """A native-path twin made here, not the session's `tiny_segmenter`, whose prompt cache may
    hold "a cat" encoded by an earlier test in another batch of prompts (padded to another length,
    which moves the embedding's last bits)."""
    return FastSegmenter.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def images():
    return [natural_image(90, 120, seed=1), natural_image(90, 120, seed=2), natural_image(121, 77, seed=3)]


def assert_same_results(got, expected):
    assert got.packed is not None and expected.packed is None
    np.testing.assert_array_equal(got.logits, expected.logits)
    np.testing.assert_array_equal(got.masks, expected.masks)
    assert got.rle == expected.rle
    assert got.areas == expected.areas and got.bboxes == expected.bboxes
    np.testing.assert_array_equal(got.stability, expected.stability)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=0, atol=SCORE_TOLERANCE)
    assert got.to_dict().keys() == expected.to_dict().keys()


def test_cpu_devices_default_to_the_native_kernels(native):
    assert native.device_processing is None


def test_device_processing_must_be_a_bool(tiny_model_dir):
    with pytest.raises(TypeError, match="device_processing must be True, False or None"):
        FastSegmenter.from_pretrained(tiny_model_dir, device_processing="yes")


def test_pixel_values_equal_the_native_kernel(on_device, native, images):
    np.testing.assert_array_equal(on_device.pixel_values(images).numpy(), native.pixel_values(images).numpy())


def test_segment_batch_equals_the_native_path(on_device, native, images):
    for got, expected in zip(on_device.segment_batch(images, PROMPTS, threshold=0.4),
                             native.segment_batch(images, PROMPTS, threshold=0.4)):
        assert_same_results(got, expected)
    assert_same_results(on_device.segment(images[2], "a cat"), native.segment(images[2], "a cat"))


def test_segment_batch_in_batches_smaller_than_the_list(tiny_model_dir, native, images):
    small_batches = FastSegmenter.from_pretrained(tiny_model_dir, device_processing=True, batch_size=2)
    # Other batch sizes may round the network's last bits differently (as in test_stages).
    for got, expected in zip(small_batches.segment_batch(images, PROMPTS), native.segment_batch(images, PROMPTS),
                             strict=True):
        assert got.packed is not None and got.image_size == expected.image_size
        np.testing.assert_allclose(got.logits, expected.logits, rtol=1e-5, atol=1e-5)
        assert (got.masks == expected.masks).mean() > 0.999


@pytest.mark.parametrize("threshold", [0.0, 0.02, 0.5, 0.97, 1.0])
def test_summaries_equal_the_native_kernel_at_any_threshold(threshold):
    logits = torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(1)) * 4
    size = (70, 95)
    (packed,) = _cpu_processing().summarize(logits, [3], [size], threshold)
    expected = ops.postprocess(logits.numpy(), size, threshold, masks=True, rle=True, area=True, bbox=True,
                               score=True, stability=True)
    np.testing.assert_array_equal(np.packbits(expected.masks, axis=-1, bitorder="little"), packed.bits)
    np.testing.assert_array_equal(packed.stability, expected.stability)
    np.testing.assert_allclose(packed.score, expected.score, rtol=0, atol=SCORE_TOLERANCE)
    assert coco_rle.encode_packed(packed.bits, size[1]) == expected.rle


def _cpu_processing() -> DeviceProcessing:
    from fastclipseg.ops.image_processor import PreprocessConfig

    return DeviceProcessing(PreprocessConfig(size=64), "cpu")


def test_the_bound_stability_thresholds_are_the_kernels():
    logits = np.linspace(-3, 3, 6001, dtype=np.float32).reshape(1, 1, -1)
    for threshold in (0.1, 0.3, 0.5, 0.77):
        low, high = _core.postprocess_stability_thresholds(threshold, 1.0)
        expected = np.count_nonzero(logits > high) / np.count_nonzero(logits > low)
        stability = ops.postprocess(logits, logits.shape[1:], threshold, masks=False, stability=True).stability
        assert stability[0] == expected


def test_summaries_are_chunked_without_changing_them(monkeypatch, images):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 24, 24, generator=generator)
    counts, sizes = [2, 2, 2, 2], [(50, 60), (50, 60), (33, 90), (50, 60)]
    # Images 0, 1 and 3 share a size but not consecutive rows: both ways of gathering rows run.
    whole = _cpu_processing().summarize(logits, counts, sizes, 0.5)
    monkeypatch.setattr(processing, "MAX_UPSAMPLED_ELEMENTS", 2 * 50 * 60)  # one image per chunk
    chunked = _cpu_processing().summarize(logits, counts, sizes, 0.5)
    for index, (a, b) in enumerate(zip(whole, chunked, strict=True)):
        alone = _cpu_processing().summarize(logits[2 * index : 2 * index + 2], [2], [sizes[index]], 0.5)[0]
        np.testing.assert_array_equal(a.bits, alone.bits)
        np.testing.assert_array_equal(a.bits, b.bits)
        np.testing.assert_array_equal(a.stability, b.stability)
        # The vectorised sigmoid rounds the last bit by position: scores agree to the stated tolerance.
        np.testing.assert_allclose(a.score, b.score, rtol=0, atol=SCORE_TOLERANCE)


def test_stream_equals_the_native_path(on_device, native, images):
    frames = [images[0], images[1], images[0], images[1], images[0]]
    with on_device.segment_video(frames, PROMPTS, batch_size=2) as got, \
            native.segment_video(frames, PROMPTS, batch_size=2) as expected:
        pairs = list(zip(got, expected, strict=True))
    for a, b in pairs:
        assert a.index == b.index
        assert_same_results(a, b)


def test_smoothed_stream_post_processes_on_the_host(on_device, native, images):
    frames = [images[0], images[1], images[0]]
    with on_device.segment_video(frames, PROMPTS, batch_size=2, smooth=0.5) as got, \
            native.segment_video(frames, PROMPTS, batch_size=2, smooth=0.5) as expected:
        for a, b in zip(got, expected, strict=True):
            assert a.packed is None
            np.testing.assert_array_equal(a.logits, b.logits)
            assert a.rle == b.rle


def test_sessions_run_with_device_processing(on_device, native, images):
    got = on_device.session(images[2]).segment("a cat OR red dog")
    expected = native.session(images[2]).segment("a cat OR red dog")
    np.testing.assert_array_equal(got.masks, expected.masks)


def test_packed_summary_needs_a_stack_of_masks():
    bits = np.packbits(np.ones((3, 5, 9), dtype=bool), axis=-1, bitorder="little")
    rles, areas, boxes = coco_rle.packed_summary(bits, 9)
    assert rles == coco_rle.encode(np.ones((3, 5, 9), dtype=bool)) and list(areas) == [45] * 3
    np.testing.assert_array_equal(boxes, [[0, 0, 9, 5]] * 3)
    with pytest.raises(ValueError, match=r"must be 3-D \(K, H, ceil\(W/8\)\)"):
        coco_rle.packed_summary(bits[0], 9)
    with pytest.raises(ValueError, match="needs ceil"):
        coco_rle.packed_summary(bits, 17)


def test_uploader_on_the_cpu_returns_the_frames():
    frames = [natural_image(5, 7, seed=1), natural_image(3, 2, seed=2)]
    uploaded = FrameUploader("cpu").upload(frames)
    assert isinstance(uploaded, list)
    for frame, tensor in zip(frames, uploaded, strict=True):
        np.testing.assert_array_equal(tensor.numpy(), frame)
    # Frames of one shape come back as one batch tensor (the preprocessor then stacks nothing),
    # strided views included.
    same = [natural_image(6, 8, seed=3), natural_image(12, 8, seed=4)[::2], natural_image(6, 8, seed=5)]
    batch = FrameUploader("cpu").upload(same)
    assert isinstance(batch, torch.Tensor) and batch.shape == (3, 6, 8, 3)
    np.testing.assert_array_equal(batch.numpy(), np.stack(same))
    assert FrameUploader("cpu").upload([]) == []
    with pytest.raises(TypeError, match="frame #1 has dtype float32; expected uint8"):
        FrameUploader("cpu").upload([same[0], same[0].astype(np.float32)])


def test_other_resampling_filters_are_refused_clearly():
    from fastclipseg.ops.image_processor import PreprocessConfig
    from PIL import Image

    bicubic = PreprocessConfig(size=64, resample=Image.Resampling.BICUBIC)
    assert not DeviceProcessing.supports(bicubic) and DeviceProcessing.supports(PreprocessConfig(size=64))
    with pytest.raises(ValueError, match="bilinear filter only.*BICUBIC: use device_processing=False"):
        DeviceProcessing(bicubic, "cpu")


# -- on CUDA --------------------------------------------------------------------------------------


@needs_cuda
def test_pinned_uploads_return_the_frames_on_cuda():
    uploader = FrameUploader("cuda")
    for round_ in range(5):  # more rounds than staging buffers, growing sizes
        frames = [natural_image(30 + 10 * round_, 41, seed=round_ + i) for i in range(3)]
        uploaded = uploader.upload(frames)
        torch.cuda.current_stream().wait_stream(uploader.stream)
        assert isinstance(uploaded, torch.Tensor) and uploaded.shape == (3, *frames[0].shape)  # one shape: a batch
        for frame, tensor in zip(frames, uploaded, strict=True):
            assert tensor.device.type == "cuda"
            np.testing.assert_array_equal(tensor.cpu().numpy(), frame)
    frames = [natural_image(20, 31, seed=1), natural_image(12, 8, seed=2)[::2, ::-1]]  # two shapes, strided
    uploaded = uploader.upload(frames)
    torch.cuda.current_stream().wait_stream(uploader.stream)
    for frame, tensor in zip(frames, uploaded, strict=True):
        np.testing.assert_array_equal(tensor.cpu().numpy(), frame)


@needs_cuda
def test_cuda_device_processing_matches_the_native_path(tiny_model_dir, native):
    # On a GPU the upsampling may round differently in the last bit: masks agree to 99.99 %, and
    # the RLE from the packed bits is the native encoding of exactly those bits.
    gpu = FastSegmenter.from_pretrained(tiny_model_dir, device="cuda")
    assert gpu.device_processing is not None
    images = [natural_image(480, 640, seed=s) for s in range(3)]
    np.testing.assert_array_equal(gpu.pixel_values(images).cpu().numpy(), native.pixel_values(images).numpy())
    for got, expected in zip(gpu.segment_batch(images, PROMPTS), native.segment_batch(images, PROMPTS)):
        assert got.packed is not None
        assert (got.masks == expected.masks).mean() >= 0.9999
        assert got.rle == coco_rle.encode(got.masks)
    with gpu.segment_video(images * 3, PROMPTS, batch_size=4) as stream:
        assert sum(1 for result in stream if result.ok and result.packed is not None) == 9

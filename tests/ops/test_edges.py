"""Edge-aware upsampling (`fastclipseg.ops.edges`): the native fast guided filter against its torch
twin, what every output means with edges on, parameter errors, and that masks do follow edges.

Tolerance: the kernel and the twin compute the same float64 low-resolution maths and differ in the
full-resolution ``A . I + B`` only by fused multiply-adds and summation order, a few float32 ulp
of a probability: ``TWIN_TOLERANCE`` (1e-5) bounds that; masks may then differ only at pixels whose
probability is within it of the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastclipseg import _core, ops
from fastclipseg.ops import rle as coco_rle
from fastclipseg.ops.device.edges import guided_probabilities
from fastclipseg.ops.edges import DEFAULT_EDGES, Edges, as_edges, probability_cuts
from PIL import Image

TWIN_TOLERANCE = 1e-5
SUMMARY = {"rle": True, "area": True, "bbox": True, "score": True, "stability": True}


def logits_and_image(k: int, grid: tuple[int, int], size: tuple[int, int], seed: int = 0, channels: int = 3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (k, *grid)).astype(np.float32)
    shape = (*size, channels) if channels == 3 else size
    return logits, rng.integers(0, 256, shape, dtype=np.uint8)


def assert_twin_agrees(logits, image, edges, threshold=0.5):
    got = ops.postprocess(logits, image.shape[:2], threshold, masks=True, probs="float32", edges=edges, guide=image)
    twin = guided_probabilities(torch.from_numpy(logits), torch.from_numpy(image), edges).numpy()
    np.testing.assert_allclose(got.probs, twin, rtol=0, atol=TWIN_TOLERANCE)
    differ = got.masks != (twin > threshold)
    assert np.all(np.abs(twin[differ] - threshold) <= TWIN_TOLERANCE)


# Odd sizes: 1 x N, N x 1, grids larger than the image, nothing divisible by anything.
SIZES = [((22, 17), (7, 300)), ((5, 5), (1, 9)), ((8, 8), (40, 1)), ((13, 11), (97, 61)), ((24, 24), (120, 90)),
         ((3, 1), (1, 1))]


@pytest.mark.parametrize("grid,size", SIZES)
@pytest.mark.parametrize("guide", ["grey", "colour"])
def test_the_kernel_equals_its_torch_twin(grid, size, guide):
    logits, image = logits_and_image(2, grid, size, seed=sum(size))
    for radius in (1, 3, 40):
        for subsample in (1, 2, 5):
            assert_twin_agrees(logits, image, Edges(radius, 1e-3, guide, subsample))


def test_the_twin_agrees_on_a_grey_guide_and_at_the_models_grid():
    logits, image = logits_and_image(3, (44, 44), (131, 170), seed=4, channels=1)
    assert_twin_agrees(logits, image, Edges(4, 1e-4, "grey"), threshold=0.3)
    logits, image = logits_and_image(1, (352, 352), (240, 320), seed=5)
    assert_twin_agrees(logits, image, DEFAULT_EDGES)
    assert_twin_agrees(logits, image, Edges(3, 1e-3, "grey", 4))


def test_the_grey_guide_is_pillows_grey_value():
    logits, image = logits_and_image(2, (16, 16), (50, 70), seed=6)
    grey = np.asarray(Image.fromarray(image).convert("L"))
    grey_guide = Edges(guide="grey")
    from_rgb = ops.postprocess(logits, (50, 70), probs="float32", edges=grey_guide, guide=image)
    from_grey = ops.postprocess(logits, (50, 70), probs="float32", edges=grey_guide, guide=grey)
    np.testing.assert_array_equal(from_rgb.probs, from_grey.probs)
    np.testing.assert_array_equal(from_rgb.masks, from_grey.masks)


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_every_output_derives_from_the_filtered_probability(threshold):
    logits, image = logits_and_image(3, (20, 20), (61, 83), seed=7)
    out = ops.postprocess(logits, (61, 83), threshold, masks=True, probs="float32", edges=True, guide=image, **SUMMARY)
    q = out.probs
    assert q.dtype == np.float32 and q.min() >= 0.0 and q.max() <= 1.0
    np.testing.assert_array_equal(out.masks, q > threshold)
    cut, low, high = probability_cuts(threshold, 1.0)
    for k in range(3):
        mask = out.masks[k]
        assert out.area[k] == mask.sum()
        np.testing.assert_array_equal(coco_rle.decode(out.rle[k]), mask)
        assert out.score[k] == pytest.approx(q[k][mask].astype(np.float64).mean() if mask.any() else 0.0, abs=1e-9)
        above_low, above_high = np.count_nonzero(q[k] > low), np.count_nonzero(q[k] > high)
        assert out.stability[k] == (above_high / above_low if above_low else 1.0)
    as_u8 = ops.postprocess(logits, (61, 83), threshold, masks=False, probs="uint8", edges=True, guide=image).probs
    np.testing.assert_array_equal(as_u8, np.floor(q * np.float32(255) + np.float32(0.5)).astype(np.uint8))


def test_the_probability_cuts_are_exact():
    for threshold in (0.1, 0.5, 0.73):
        cut, low, high = probability_cuts(threshold, 1.0)
        def next_float(x):
            return float(np.nextafter(np.float32(x), np.float32(2)))

        assert cut <= threshold < next_float(cut)
        logit = np.log(threshold / (1 - threshold))
        assert low <= 1 / (1 + np.exp(-(logit - 1))) < next_float(low)
        assert high <= 1 / (1 + np.exp(-(logit + 1))) < next_float(high)
    assert probability_cuts(0.0, 1.0) == (0.0, 0.0, 0.0)
    assert probability_cuts(1.0, 1.0) == (1.0, 1.0, 1.0)


def test_results_do_not_depend_on_the_thread_count():
    logits, image = logits_and_image(5, (30, 30), (150, 211), seed=8)
    for guide in ("grey", "colour"):
        runs = [ops.postprocess(logits, (150, 211), masks=True, probs="float32", edges=Edges(3, 1e-3, guide),
                                guide=image, threads=n, **SUMMARY) for n in (1, 2, 5)]
        for other in runs[1:]:
            np.testing.assert_array_equal(other.probs, runs[0].probs)
            assert other.rle == runs[0].rle
            np.testing.assert_array_equal(other.score, runs[0].score)


def test_off_is_the_bilinear_path_bit_for_bit():
    logits, image = logits_and_image(2, (24, 24), (90, 130), seed=9)
    plain = ops.postprocess(logits, (90, 130), masks=True, probs="float32", **SUMMARY)
    for off in (None, False):
        other = ops.postprocess(logits, (90, 130), masks=True, probs="float32", edges=off, guide=image, **SUMMARY)
        np.testing.assert_array_equal(other.probs, plain.probs)
        np.testing.assert_array_equal(other.masks, plain.masks)
        assert other.rle == plain.rle


def test_masks_follow_an_edge_of_the_image():
    """A dark left half and a bright right half (edge at column 120), and probabilities whose 0.5
    crossing the model put 12 pixels right of it: the guided mask's edge moves onto the image's."""
    height, width = 160, 240
    image = np.zeros((height, width, 3), np.uint8)
    image[:, 120:] = 200
    grid = 40
    centres = (np.arange(grid) + 0.5) * width / grid - 0.5
    logits = np.repeat(((centres - 132.0) / 6.0).astype(np.float32)[None, None], grid, axis=1)  # (1, grid, grid)
    bilinear = ops.postprocess(logits, (height, width)).masks[0]
    guided = ops.postprocess(logits, (height, width), edges=Edges(4, 1e-3, "grey"), guide=image).masks[0]
    truth = np.zeros((height, width), bool)
    truth[:, 120:] = True

    def wrong(mask):
        return np.count_nonzero(mask != truth)

    assert wrong(guided) * 4 < wrong(bilinear)


@pytest.mark.parametrize("edges,message", [
    (Edges, None),
    ({"radius": 0}, "edges radius must be in"),
    ({"radius": -3}, "edges radius must be in"),
    ({"radius": 2.5}, "edges radius must be an int"),
    ({"eps": 0.0}, "edges eps must be finite and > 0"),
    ({"eps": -1e-3}, "edges eps must be finite and > 0"),
    ({"eps": float("nan")}, "edges eps must be finite and > 0"),
    ({"eps": float("inf")}, "edges eps must be finite and > 0"),
    ({"guide": "rgb"}, "edges guide must be 'grey' or 'colour'"),
    ({"subsample": 0}, "edges subsample must be in"),
    ({"subsample": 65}, "edges subsample must be in"),
    ({"subsample": 2.0}, "edges subsample must be an int"),
    ({"sigma": 2}, "unknown parameter"),
    ("on", "edges must be None, a bool, an Edges or a dict"),
])
def test_bad_parameters_are_clear_errors(edges, message):
    if message is None:
        assert as_edges(True) == DEFAULT_EDGES and as_edges(False) is None and as_edges(None) is None
        return
    logits, image = logits_and_image(1, (8, 8), (20, 20))
    with pytest.raises((ValueError, TypeError), match=message):
        ops.postprocess(logits, (20, 20), edges=edges, guide=image)


@pytest.mark.parametrize("guide,message", [
    (None, "edges needs the image as guide="),
    (np.zeros((20, 21, 3), np.uint8), "the edges guide is 20 x 21 but the output is 20 x 20"),
    (np.zeros((20, 20, 3), np.float32), "the edges guide must be uint8"),
    (np.zeros((20, 20, 4), np.uint8), "H x W x 3"),
    ([[0]], "must be the image as a uint8 numpy array"),
])
def test_a_bad_guide_is_a_clear_error(guide, message):
    logits, _ = logits_and_image(1, (8, 8), (20, 20))
    with pytest.raises((ValueError, TypeError), match=message):
        ops.postprocess(logits, (20, 20), edges=True, guide=guide)


def test_the_colour_guide_needs_colour():
    logits, grey = logits_and_image(1, (8, 8), (20, 20), channels=1)
    with pytest.raises(ValueError, match="colour guide needs an RGB image"):
        ops.postprocess(logits, (20, 20), edges=Edges(guide="colour"), guide=grey)


def test_the_binding_checks_what_the_wrapper_does_not():
    logits, image = logits_and_image(1, (8, 8), (20, 20))
    args = (logits, 20, 20, 0.5, True, None, False, False, False, False, 1, False, 1.0)
    with pytest.raises(ValueError, match="edge radius must be >= 1"):
        _core.postprocess(*args, image, -1, 1e-3, False)
    with pytest.raises(ValueError, match="eps"):
        _core.postprocess(*args, image, 2, 0.0, False)
    with pytest.raises(ValueError, match="edge subsample must be >= 1"):
        _core.postprocess(*args, image, 2, 1e-3, False, 0)
    with pytest.raises(ValueError, match="subsample 65 is outside"):
        _core.postprocess(*args, image, 2, 1e-3, False, 65)
    with pytest.raises(ValueError, match="the guide image is 20 x 19"):
        _core.postprocess(*args, np.ascontiguousarray(image[:, :19]), 2, 1e-3, False)
    with pytest.raises(ValueError, match="colour guide needs an RGB image"):
        _core.postprocess(*args, np.ascontiguousarray(image[..., 0]), 2, 1e-3, True)
    with pytest.raises(TypeError, match="uint8"):
        _core.postprocess(*args, image.astype(np.int16), 2, 1e-3, False)
    # A non-contiguous guide is copied, not misread.
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, ::2] = image
    np.testing.assert_array_equal(
        _core.postprocess(*args, wide[:, ::2], 2, 1e-3, False)["masks"],
        _core.postprocess(*args, image, 2, 1e-3, False)["masks"])

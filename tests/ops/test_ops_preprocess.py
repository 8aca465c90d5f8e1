"""fastclipseg.ops.preprocess (and the fastclipseg._core kernels under it) against Pillow and transformers."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from fastclipseg import _core
from fastclipseg.ops.image_processor import PreprocessConfig
from fastclipseg.ops.image_processor import preprocess as reference_preprocess
from fastclipseg.ops.preprocess import preprocess, resize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

# The module itself (fastclipseg.ops re-exports the function under the same name).
ops_pre = importlib.import_module("fastclipseg.ops.preprocess")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def natural_image(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Smooth colour gradients plus sensor-like noise: what a camera frame looks like to a resampler."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [127 + 90 * np.sin(xx / (17 + 29 * c) + c) * np.cos(yy / (13 + 11 * c) - c) for c in range(channels)]
    return np.clip(np.stack(planes, -1) + rng.normal(0, 10, (h, w, channels)), 0, 255).astype(np.uint8)


def random_image(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def pil_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((size, size), Image.Resampling.BILINEAR))


def assert_matches_pil(got: np.ndarray, ref: np.ndarray, what: str = "") -> None:
    """The issue's bound (every value within 1) first, then exact equality, which the kernel achieves."""
    assert got.shape == ref.shape and got.dtype == ref.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    exact = float((diff == 0).mean())
    assert diff.max() <= 1, f"{what}: max |difference| {diff.max()}, exact-match fraction {exact:.6f}"
    assert exact == 1.0, f"{what}: within +-1 but exact-match fraction only {exact:.6f}"


# Heights x widths: up- and downscaling, identity, odd sizes, very tall and very wide.
SHAPES = [(1, 1), (7, 5), (100, 352), (352, 352), (480, 640), (351, 353), (2000, 30), (30, 2000), (3, 1000), (1000, 3), (13, 700), (517, 293)]


# --------------------------------------------------------------------------- resize vs PIL


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["natural", "random"])
def test_resize_matches_pil(shape, kind):
    image = (natural_image if kind == "natural" else random_image)(*shape, seed=sum(shape))
    for size in (352, 224, 7, 1):
        assert_matches_pil(resize(image, size), pil_resize(image, size), f"{shape} -> {size}")


@pytest.mark.parametrize("shape", [(1080, 1920), (1920, 1080)])
def test_resize_full_hd_matches_pil(shape):
    image = natural_image(*shape, seed=3)
    assert_matches_pil(resize(image, 352), pil_resize(image, 352), f"{shape}")


def test_upscale_matches_pil():
    for shape, size in [((5, 7), 352), ((40, 30), 500), ((352, 100), 400), ((2, 2), 3)]:
        image = random_image(*shape, seed=size)
        assert_matches_pil(resize(image, size), pil_resize(image, size), f"{shape} -> {size}")


def test_identity_is_a_copy():
    image = random_image(352, 352, seed=5)
    np.testing.assert_array_equal(resize(image, 352), image)


def test_scalar_and_simd_kernels_agree():
    """simd=False forces the portable kernels; both must equal PIL (and so each other)."""
    base = natural_image(301, 433, seed=9, channels=4)
    views = {
        "rgb": np.ascontiguousarray(base[..., :3]),
        "rgba": base,
        "grey": np.ascontiguousarray(base[..., 0]),
        "crop": base[7:290:2, 3:400:3, :3],
        "flipped": base[::-1, ::-1, :3],
        "channels reversed": base[..., 2::-1],
        "fortran": np.asfortranarray(base[..., :3]),
        "tall": np.ascontiguousarray(np.repeat(base[..., :3], 4, axis=0)[:, :150]),
    }
    for name, view in views.items():
        for size in (352, 64):
            simd = _core.preprocess_resize(view, size, simd=True, pass_order=ops_pre.pass_order_of_installed_pillow())
            scalar = _core.preprocess_resize(view, size, simd=False, pass_order=ops_pre.pass_order_of_installed_pillow())
            np.testing.assert_array_equal(simd, scalar, err_msg=name)
            rgb = np.repeat(view[..., None], 3, -1) if view.ndim == 2 else view[..., :3]
            assert_matches_pil(simd, pil_resize(rgb, size), name)


# --------------------------------------------------------------------------- layouts


def test_rgba_grey_and_bgr():
    rgba = natural_image(123, 211, seed=1, channels=4)
    rgb = np.ascontiguousarray(rgba[..., :3])
    np.testing.assert_array_equal(resize(rgba, 96), pil_resize(rgb, 96))  # alpha ignored, not premultiplied
    grey = rgb[..., 1].copy()
    grey_rgb = np.repeat(grey[..., None], 3, -1)
    np.testing.assert_array_equal(resize(grey, 96), pil_resize(grey_rgb, 96))
    np.testing.assert_array_equal(resize(grey[..., None], 96), pil_resize(grey_rgb, 96))  # (H, W, 1)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    np.testing.assert_array_equal(resize(bgr, 96, bgr=True), pil_resize(rgb, 96))
    bgra = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    np.testing.assert_array_equal(resize(bgra, 96, bgr=True), pil_resize(rgb, 96))
    # bgr on a grey image changes nothing.
    np.testing.assert_array_equal(resize(grey, 96, bgr=True), resize(grey, 96))


def test_strided_views_are_read_in_place():
    base = natural_image(400, 500, seed=2, channels=4)
    views = [
        base[10:-5:2, 3:-7:3, :3],  # strided crop
        base[::-1, :, :3],  # negative row stride
        base[:, ::-1, :3],  # negative column stride
        base[::-3, ::-2, 2::-1],  # everything reversed, channels too
        base[..., :3].transpose(1, 0, 2),  # column-major rows
        np.asfortranarray(base[..., :3]),
        np.broadcast_to(base[5, :, :3], (300, 500, 3)),  # zero row stride
        base[50:51, :, :3],  # a single row
        base[:, 70:71, :3],  # a single column
    ]
    for i, view in enumerate(views):
        for size in (352, 33):
            assert_matches_pil(resize(view, size), pil_resize(view, size), f"view #{i} -> {size}")


# --------------------------------------------------------------------------- full output


@pytest.fixture(scope="module")
def processor():
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(size={"height": 352, "width": 352}, image_mean=list(MEAN), image_std=list(STD))


def test_bit_identical_to_transformers_processor(processor):
    images = [natural_image(480, 640, seed=1), natural_image(1080, 1920, seed=2), natural_image(900, 200, seed=3),
              random_image(37, 51, seed=4), natural_image(352, 352, seed=5), natural_image(120, 2000, seed=6)]
    ref = processor(images=images, return_tensors="np")["pixel_values"]
    ours = preprocess(images, 352, MEAN, STD)
    assert ours.shape == ref.shape == (6, 3, 352, 352) and ours.dtype == np.float32 and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, ref)


def test_matches_reference_preprocess_with_other_settings():
    """python/fastclipseg/preprocess.py with non-default size, mean, std and rescale factor."""
    images = [natural_image(200, 300, seed=7), natural_image(64, 48, seed=8)]
    for config in (PreprocessConfig(), PreprocessConfig(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
                   PreprocessConfig(size=97, mean=(0.1, 0.2, 0.3), std=(0.9, 1.1, 0.7), rescale_factor=1 / 127.5)):
        ref = reference_preprocess(images, config)
        ours = preprocess(images, config.size, config.mean, config.std, config.rescale_factor)
        np.testing.assert_array_equal(ours, ref)


def test_single_image_and_empty_list():
    image = natural_image(50, 60)
    one = preprocess(image, 32)
    assert one.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(one, preprocess([image], 32))
    np.testing.assert_array_equal(one, preprocess((image,), 32))
    np.testing.assert_array_equal(one, preprocess(torch.from_numpy(image), 32))  # array-like via np.asarray
    assert preprocess([], 32).shape == (0, 3, 32, 32)


def test_bgr_and_layouts_in_full_output():
    rgba = natural_image(150, 170, seed=11, channels=4)
    rgb = np.ascontiguousarray(rgba[..., :3])
    ref = preprocess(rgb, 64)
    np.testing.assert_array_equal(preprocess(rgba, 64), ref)
    np.testing.assert_array_equal(preprocess(np.ascontiguousarray(rgb[..., ::-1]), 64, bgr=True), ref)
    np.testing.assert_array_equal(preprocess(rgb[..., ::-1], 64, bgr=True), ref)  # reversed view, no copy
    grey = rgb[..., 0]
    np.testing.assert_array_equal(preprocess(grey, 64), preprocess(np.repeat(grey[..., None], 3, -1), 64))


# --------------------------------------------------------------------------- half precision


def test_float16_and_bfloat16_equal_torch_rounding():
    images = [natural_image(90, 130, seed=12), random_image(33, 17, seed=13)]
    f32 = torch.from_numpy(preprocess(images, 48))
    f16 = preprocess(images, 48, dtype="float16")
    assert f16.dtype == np.float16
    np.testing.assert_array_equal(f16, f32.to(torch.float16).numpy())
    bf16 = preprocess(images, 48, dtype="bfloat16")
    assert bf16.dtype == np.uint16 and bf16.flags.c_contiguous
    assert torch.equal(torch.from_numpy(bf16).view(torch.bfloat16), f32.to(torch.bfloat16))
    # torch and numpy dtype objects name the same outputs.
    np.testing.assert_array_equal(preprocess(images, 48, dtype=torch.float16), f16)
    np.testing.assert_array_equal(preprocess(images, 48, dtype=np.float16), f16)
    np.testing.assert_array_equal(preprocess(images, 48, dtype=torch.bfloat16), bf16)


@pytest.mark.parametrize("mean,std,rescale", [
    ((0.0, 0.5, -3.0), (1e-3, 7.0, 1e4), 1 / 255),  # large values and subnormal-range half values
    ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 300.0),  # overflows float16 to inf
    ((1e-9, -1e-9, 0.0), (1e5, 3e6, 2.5e4), 1 / 255),  # tiny: half subnormals and zero
])
def test_half_conversions_on_extreme_tables(mean, std, rescale):
    """Every uint8 level of every channel: the 768 table entries go through the conversions."""
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    image = np.stack([ramp, ramp.T, ramp[::-1]], -1)
    f32 = torch.from_numpy(preprocess(image, 256, mean, std, rescale))
    np.testing.assert_array_equal(preprocess(image, 256, mean, std, rescale, dtype="float16"), f32.to(torch.float16).numpy())
    bf16 = preprocess(image, 256, mean, std, rescale, dtype="bfloat16")
    assert torch.equal(torch.from_numpy(bf16).view(torch.bfloat16), f32.to(torch.bfloat16))


# --------------------------------------------------------------------------- out=


@pytest.mark.parametrize("dtype,np_dtype", [("float32", np.float32), ("float16", np.float16), ("bfloat16", np.uint16)])
def test_out_numpy_filled_in_place(dtype, np_dtype):
    images = [natural_image(70, 90, seed=14), natural_image(40, 20, seed=15)]
    expected = preprocess(images, 40, dtype=dtype)
    out = np.full((2, 3, 40, 40), 7, dtype=np_dtype)
    result = preprocess(images, 40, out=out, dtype=dtype)
    assert result is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_out_torch_filled_in_place(dtype):
    images = [natural_image(70, 90, seed=16)]
    name = str(dtype).removeprefix("torch.")
    f32 = torch.from_numpy(preprocess(images, 40))
    out = torch.full((1, 3, 40, 40), 7.0, dtype=dtype)
    ptr = out.data_ptr()
    result = preprocess(images, 40, out=out, dtype=name)
    assert result is out and out.data_ptr() == ptr
    assert torch.equal(out, f32.to(dtype))


def test_out_slice_of_a_larger_batch_buffer():
    buffer = np.zeros((4, 3, 24, 24), np.float32)
    preprocess([natural_image(30, 30)], 24, out=buffer[1:2])
    np.testing.assert_array_equal(buffer[1:2], preprocess(natural_image(30, 30), 24))
    assert not buffer[0].any() and not buffer[2:].any()


# --------------------------------------------------------------------------- threads


def test_thread_count_does_not_change_the_result():
    images = [natural_image(1080, 1920, seed=17), natural_image(31, 500, seed=18), natural_image(700, 90, seed=19),
              random_image(5, 5, seed=20)]
    single = preprocess(images, 352, threads=1)
    for threads in (2, 3, 8, 64):
        np.testing.assert_array_equal(preprocess(images, 352, threads=threads), single)
    np.testing.assert_array_equal(preprocess(images, 352), single)  # default: hardware concurrency
    assert _core.preprocess_hardware_threads() >= 1
    for threads in (1, 2, 5):
        np.testing.assert_array_equal(_core.preprocess_resize(images[0], 352, threads=threads), resize(images[0], 352))


# --------------------------------------------------------------------------- Pillow pass order


def _two_step(image: np.ndarray, size: int, vertical_first: bool) -> np.ndarray:
    """Two single-axis PIL resizes: one pass order, whatever the installed Pillow's rule."""
    h, w = image.shape[:2]
    first = (w, size) if vertical_first else (size, h)
    once = Image.fromarray(image).resize(first, Image.Resampling.BILINEAR)
    return np.asarray(once.resize((size, size), Image.Resampling.BILINEAR))


PILLOW_13, PILLOW_12, HORIZONTAL_FIRST = 0, 1, 2


def test_pass_order_rules():
    """Each rule picks the order its Pillow picks; the order only moves rounding (by 1)."""
    # (h, w): which rules run the vertical pass first when resizing to 352.
    cases = {
        (1500, 200): {PILLOW_13},             # height shrinks much more than the width
        (1000, 3): {PILLOW_13, PILLOW_12},     # and h > 100 w
        (360, 4): {PILLOW_13},                 # h < 100 w
        (300, 900): set(),                     # the width shrinks more
        (200, 1): set(),                       # h > 100 w, but the height grows
    }
    for (h, w), vertical in cases.items():
        image = natural_image(h, w, seed=h + w)
        vertical_result = _two_step(image, 352, vertical_first=True)
        horizontal_result = _two_step(image, 352, vertical_first=False)
        for order in (PILLOW_13, PILLOW_12, HORIZONTAL_FIRST):
            expected = vertical_result if order in vertical else horizontal_result
            np.testing.assert_array_equal(_core.preprocess_resize(image, 352, pass_order=order), expected,
                                          err_msg=f"{(h, w)} pass_order={order}")
        if h > 352 and w < 352:
            assert np.abs(vertical_result.astype(int) - horizontal_result).max() == 1


def test_pass_order_probe_detects_the_installed_pillow():
    import PIL

    major = int(PIL.__version__.split(".")[0])
    expected = PILLOW_13 if major >= 13 else PILLOW_12 if major == 12 else HORIZONTAL_FIRST
    assert ops_pre.pass_order_of_installed_pillow() == expected
    # The probes tell the rules apart: each gives a different result in each order.
    for probe in (ops_pre._PROBE_13, ops_pre._PROBE_12):
        assert not np.array_equal(_two_step(probe, 3, True), _two_step(probe, 3, False))
    tall = natural_image(1000, 3, seed=21)  # vertical first under Pillow >= 12, horizontal before
    assert_matches_pil(resize(tall, 352), pil_resize(tall, 352), "1000 x 3")


@pytest.mark.parametrize("code", [-1, 3])
def test_bad_pass_order_is_rejected(code):
    with pytest.raises(ValueError, match="pass_order"):
        _core.preprocess_resize(natural_image(8, 8), 4, pass_order=code)


# --------------------------------------------------------------------------- errors


def test_bad_images():
    good = natural_image(10, 10)
    with pytest.raises(TypeError, match="float32"):
        preprocess(good.astype(np.float32))
    with pytest.raises(TypeError, match="image #1 has dtype int64"):
        preprocess([good, good.astype(np.int64)])
    with pytest.raises(TypeError, match="bool"):
        resize(good > 0, 8)
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        preprocess(good[0, :, 0])
    with pytest.raises(ValueError, match="4-D"):
        preprocess(good[None])
    with pytest.raises(ValueError, match=r"image #0 has shape \(1, 10, 10, 3\)"):
        preprocess([good[None]])
    for channels in (2, 5):
        with pytest.raises(ValueError, match=rf"\(10, 10, {channels}\)"):
            preprocess(np.zeros((10, 10, channels), np.uint8))
    for shape in [(0, 5, 3), (5, 0, 3), (0, 0)]:
        with pytest.raises(ValueError, match="empty"):
            preprocess([good, np.zeros(shape, np.uint8)])
    with pytest.raises(TypeError, match="list or tuple"):
        _core.preprocess(good, 8, MEAN, STD, 1 / 255)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        _core.preprocess([[1, 2]], 8, MEAN, STD, 1 / 255)


def test_bad_settings():
    image = natural_image(10, 10)
    for size in (0, -3):
        with pytest.raises(ValueError, match="size must be in"):
            preprocess(image, size)
        with pytest.raises(ValueError, match="size must be in"):
            resize(image, size)
    with pytest.raises(ValueError, match="size must be in"):
        preprocess(image, _core.PREPROCESS_MAX_SIZE + 1)
    with pytest.raises(TypeError, match="size must be an int"):
        preprocess(image, 352.0)
    with pytest.raises(ValueError, match="mean must have 3 values"):
        preprocess(image, 8, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"std\[1\].*zero"):
        preprocess(image, 8, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        preprocess(image, 8, mean=(float("nan"), 0.0, 0.0))
    with pytest.raises(ValueError, match="dtype must be"):
        preprocess(image, 8, dtype="int8")
    with pytest.raises(ValueError, match="ask for dtype='bfloat16'"):
        preprocess(image, 8, dtype=np.uint16)
    for threads in (0, -1):
        with pytest.raises(ValueError, match="threads must be >= 1"):
            preprocess(image, 8, threads=threads)
    with pytest.raises(TypeError, match="threads must be an int"):
        preprocess(image, 8, threads=1.5)


def test_bad_out():
    images = [natural_image(10, 10), natural_image(12, 9)]
    with pytest.raises(ValueError, match=r"out has shape \(1, 3, 8, 8\); expected \(2, 3, 8, 8\)"):
        preprocess(images, 8, out=np.empty((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"expected \(2, 3, 8, 8\)"):
        preprocess(images, 8, out=np.empty((2, 3, 8, 9), np.float32))
    with pytest.raises(ValueError, match="out has dtype float64"):
        preprocess(images, 8, out=np.empty((2, 3, 8, 8), np.float64))
    with pytest.raises(ValueError, match="dtype='float32' needs float32"):
        preprocess(images, 8, out=np.empty((2, 3, 8, 8), np.float16))
    with pytest.raises(ValueError, match="bfloat16 bit patterns"):
        preprocess(images, 8, out=np.empty((2, 3, 8, 8), np.float32), dtype="bfloat16")
    with pytest.raises(ValueError, match="C-contiguous"):
        preprocess(images, 8, out=np.empty((2, 3, 8, 16), np.float32)[..., ::2])
    with pytest.raises(ValueError, match="C-contiguous"):
        preprocess(images, 8, out=np.empty((8, 8, 3, 2), np.float32).T)
    read_only = np.empty((2, 3, 8, 8), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        preprocess(images, 8, out=read_only)
    with pytest.raises(ValueError, match="byte order|dtype"):
        preprocess(images, 8, out=np.empty((2, 3, 8, 8), ">f4"))
    with pytest.raises(TypeError, match="out must be"):
        preprocess(images, 8, out=[[0.0]])
    with pytest.raises(ValueError, match="torch.bfloat16"):
        preprocess(images, 8, out=torch.empty(2, 3, 8, 8), dtype="bfloat16")
    with pytest.raises(ValueError, match="requires grad"):
        preprocess(images, 8, out=torch.empty(2, 3, 8, 8, requires_grad=True))
    with pytest.raises(ValueError, match="C-contiguous"):
        preprocess(images, 8, out=torch.empty(2, 3, 8, 16)[..., ::2])
    # An image overlapping the output buffer would be overwritten while being read.
    buffer = np.zeros(2 * 3 * 8 * 8 * 4, np.uint8)
    with pytest.raises(ValueError, match="overlaps the output"):
        preprocess([buffer[:300].reshape(10, 10, 3)], 8, out=buffer[:768].view(np.float32).reshape(1, 3, 8, 8))
    # Nothing was written by any failed call.
    out = np.full((2, 3, 8, 8), 5, np.float32)
    with pytest.raises(TypeError):
        preprocess([images[0], images[1].astype(np.float32)], 8, out=out)
    assert (out == 5).all()


# --------------------------------------------------------------------------- property test


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 300), w=st.integers(1, 300), size=st.integers(1, 400),
    channels=st.sampled_from([1, 3, 4]), seed=st.integers(0, 2**32 - 1),
)
def test_property_resize_matches_pil(h, w, size, channels, seed):
    image = random_image(h, w, seed=seed, channels=channels)
    if channels == 1:
        image = image[..., 0]
    rgb = np.repeat(image[..., None], 3, -1) if channels == 1 else image[..., :3]
    assert_matches_pil(resize(image, size), pil_resize(rgb, size), f"{h}x{w}x{channels} -> {size}")

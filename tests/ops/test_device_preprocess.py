"""fastclipseg.ops.device.preprocess (torch, any device) against the native kernel (fastclipseg.ops.preprocess) and Pillow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fastclipseg import _core, ops
from fastclipseg.ops.device.preprocess import (
    PRECISION_BITS,
    TorchPreprocessor,
    resize_matrix,
    resize_weights,
    vertical_first,
)
from fastclipseg.ops.image_processor import PreprocessConfig, value_table
from fastclipseg.ops.preprocess import pass_order_of_installed_pillow
from PIL import Image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus a little noise: what a camera frame looks like to a resampler."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [127 + 90 * np.sin(xx / (17 + 29 * c) + c) * np.cos(yy / (13 + 11 * c) - c) for c in range(3)]
    return np.clip(np.stack(planes, -1) + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make(kind: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    return (smooth_image if kind == "smooth" else random_image)(h, w, seed)


# Up- and downscaling, identity, tiny, tall, wide, odd, HD, and both pass orders' triggers.
SHAPES = [
    (1, 1), (3, 2), (2, 3), (1, 500), (500, 1), (7, 5), (24, 2), (301, 2), (100, 352), (352, 352),
    (351, 353), (353, 351), (480, 640), (517, 293), (2000, 30), (30, 2000), (1080, 1920), (1920, 1080),
]  # fmt: skip


@pytest.fixture(scope="module")
def pre352() -> TorchPreprocessor:
    return TorchPreprocessor(352, MEAN, STD, 1 / 255)


# --------------------------------------------------------------------------- against ops.preprocess


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_matches_native_kernel(pre352, shape, kind):
    image = make(kind, *shape, seed=sum(shape))
    got = pre352([torch.from_numpy(image)])
    assert got.dtype == torch.float32 and got.shape == (1, 3, 352, 352) and got.device.type == "cpu"
    np.testing.assert_array_equal(got.numpy(), ops.preprocess([image], 352, MEAN, STD, 1 / 255))


@pytest.mark.parametrize("size", [1, 2, 7, 64, 224, 353, 800])
def test_other_output_sizes(size):
    pre = TorchPreprocessor(size, (0.5, 0.25, 0.0), (0.5, 0.3, 2.0), 1 / 127.5)
    images = [random_image(h, w, seed=h * w + size) for h, w in [(1, 1), (5, 9), (300, 200), (61, 1024)]]
    want = ops.preprocess(images, size, (0.5, 0.25, 0.0), (0.5, 0.3, 2.0), 1 / 127.5)
    np.testing.assert_array_equal(pre([torch.from_numpy(im) for im in images]).numpy(), want)


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize(
    "shape",
    [(24, 2), (301, 2), (2000, 30), (1000, 3), (900, 500), (640, 480), (5, 700)],
)
def test_every_pass_order_matches_the_kernel(order, shape):
    """Each of Pillow's rules against the kernel told to follow it (the probes' shapes differ between rules)."""
    size = 3 if shape[1] <= 3 else 352
    image = random_image(*shape, seed=order + shape[0])
    want = _core.preprocess([image], size, MEAN, STD, 1 / 255, None, "float32", False, None, True, order)
    got = TorchPreprocessor(size, MEAN, STD, pass_order=order)(torch.from_numpy(image))
    np.testing.assert_array_equal(got.numpy(), want)


def test_pass_order_follows_installed_pillow(pre352):
    assert pre352.pass_order == pass_order_of_installed_pillow()
    probe = random_image(24, 2, seed=3)  # its result depends on the order (see ops.preprocess's probes)
    pil = np.asarray(Image.fromarray(probe).resize((3, 3), Image.Resampling.BILINEAR))
    got = TorchPreprocessor(3).resize(torch.from_numpy(probe))[0].numpy()
    np.testing.assert_array_equal(got, pil)


def test_vertical_first_rules():
    assert vertical_first(24, 2, 3, 0) and not vertical_first(24, 2, 3, 1) and not vertical_first(24, 2, 3, 2)
    assert vertical_first(301, 2, 3, 1) and not vertical_first(300, 3, 3, 1) and not vertical_first(301, 2, 400, 1)
    assert not vertical_first(1080, 1920, 352, 0) and vertical_first(1920, 1080, 352, 0)
    assert not vertical_first(352, 352, 352, 0) and not vertical_first(100, 20, 352, 0)
    with pytest.raises(ValueError, match="pass_order"):
        vertical_first(10, 10, 3, 3)
    with pytest.raises(ValueError, match="pass_order"):
        TorchPreprocessor(352, pass_order=5)


def test_resize_matches_ops_and_pil(pre352):
    for shape in [(1, 1), (3, 2), (480, 640), (1000, 3), (517, 293)]:
        image = smooth_image(*shape, seed=1)
        got = pre352.resize(torch.from_numpy(image))
        assert got.dtype == torch.uint8 and got.shape == (1, 352, 352, 3)
        np.testing.assert_array_equal(got[0].numpy(), ops.resize(image, 352))
        pil = np.asarray(Image.fromarray(image).resize((352, 352), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(got[0].numpy(), pil)


# --------------------------------------------------------------------------- batches and layouts


def test_mixed_size_batch_keeps_order(pre352):
    shapes = [
        (480, 640),
        (3, 2),
        (480, 640),
        (1, 1),
        (720, 1280),
        (3, 2),
        (480, 640),
        (1000, 7),
    ]
    images = [make("random" if i % 2 else "smooth", *s, seed=i) for i, s in enumerate(shapes)]
    got = pre352([torch.from_numpy(im) for im in images])
    np.testing.assert_array_equal(got.numpy(), ops.preprocess(images, 352, MEAN, STD, 1 / 255))
    # A tuple, and numpy arrays, work too.
    np.testing.assert_array_equal(pre352(tuple(images[:3])).numpy(), got[:3].numpy())


def test_batch_tensor_single_frame_and_views(pre352):
    images = np.stack([random_image(300, 401, seed=i) for i in range(3)])
    want = ops.preprocess(list(images), 352, MEAN, STD, 1 / 255)
    np.testing.assert_array_equal(pre352(torch.from_numpy(images)).numpy(), want)
    np.testing.assert_array_equal(pre352(torch.from_numpy(images[1])).numpy(), want[1:2])
    # Non-contiguous views: a crop, a column-strided view and a channels-last view of a planar array.
    big = torch.from_numpy(random_image(400, 900, seed=7))
    planar = big.permute(2, 0, 1).contiguous()
    views = [big[10:310, 50:451], big[:, ::2], planar.permute(1, 2, 0)]
    got = pre352(views)
    want = ops.preprocess([np.ascontiguousarray(v.numpy()) for v in views], 352, MEAN, STD, 1 / 255)
    np.testing.assert_array_equal(got.numpy(), want)


def test_large_group_is_chunked(monkeypatch, pre352):
    import fastclipseg.ops.device.preprocess as gp

    monkeypatch.setattr(gp, "_CHUNK_BYTES", 3 * 60 * 70 * 8 * 2)  # two frames per chunk
    images = [random_image(60, 70, seed=i) for i in range(5)] + [random_image(9, 9, seed=9)]
    order = [0, 5, 1, 2, 3, 4]
    frames = [torch.from_numpy(images[i]) for i in order]
    want = ops.preprocess([images[i] for i in order], 352, MEAN, STD, 1 / 255)
    np.testing.assert_array_equal(pre352(frames).numpy(), want)
    np.testing.assert_array_equal(pre352(torch.from_numpy(np.stack(images[:5]))).numpy(), want[[0, 2, 3, 4, 5]])


def test_empty_batch(pre352):
    assert pre352([]).shape == (0, 3, 352, 352)
    assert pre352(torch.zeros((0, 4, 4, 3), dtype=torch.uint8)).shape == (
        0,
        3,
        352,
        352,
    )


# --------------------------------------------------------------------------- weights


def pillow_coeffs(in_size: int, out_size: int) -> tuple[list[int], list[int], list[list[int]]]:
    """A scalar transcription of Pillow's precompute_coeffs + normalize_coeffs_8bpc (bilinear)."""
    scale = float(in_size) / out_size
    filterscale = max(1.0, scale)
    support = 1.0 * filterscale
    ksize = math.ceil(support) * 2 + 1
    starts, taps, rows = [], [], []
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        ww, ss = 0.0, 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = []
        for x in range(xmax):
            a = abs((x + xmin - center + 0.5) * ss)
            w = 1.0 - a if a < 1.0 else 0.0
            k.append(w)
            ww += w
        k = [w / ww if ww != 0.0 else w for w in k]
        fixed = [int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS)) for w in k]
        starts.append(xmin)
        taps.append(xmax)
        rows.append(fixed + [0] * (ksize - xmax))
    return starts, taps, rows


SIZE_PAIRS = [
    (1, 1),
    (1, 352),
    (2, 3),
    (3, 2),
    (5, 352),
    (352, 352),
    (353, 352),
    (640, 352),
    (1920, 352),
    (1080, 352),
    (1000, 3),
    (7, 1),
    (97, 41),
    (41, 97),
]


@pytest.mark.parametrize("pair", SIZE_PAIRS, ids=lambda p: f"{p[0]}to{p[1]}")
def test_weights_equal_pillow_loop(pair):
    weights = resize_weights(*pair)
    start, taps, coeffs = pillow_coeffs(*pair)
    assert weights.start.tolist() == start and weights.taps.tolist() == taps
    assert weights.coeffs.tolist() == coeffs
    assert weights.coeffs.dtype == torch.int64 and weights.start.dtype == torch.int64
    # Each window's coefficients sum to about 2^22 (the normalised weights sum to 1).
    assert (weights.coeffs.sum(1) - (1 << PRECISION_BITS)).abs().max() <= weights.coeffs.shape[1]
    m = weights.matrix(pair[0])
    assert m.shape == (pair[1], pair[0]) and torch.equal(m.sum(1), weights.coeffs.sum(1))


@pytest.mark.parametrize(
    "pair",
    [(2, 3), (7, 352), (97, 41), (640, 352), (300, 7)],
    ids=lambda p: f"{p[0]}to{p[1]}",
)
def test_weights_reproduce_pillow_one_hot(pair):
    """Pillow resizing the width only of an identity image: row j shows clip8(255 * k[:, j] + 2^21 >> 22)."""
    n_in, n_out = pair
    eye = np.eye(n_in, dtype=np.uint8) * 255
    pil = np.asarray(Image.fromarray(eye).resize((n_out, n_in), Image.Resampling.BILINEAR))  # (in rows, out cols)
    m = resize_matrix(n_in, n_out)  # (out, in) float64
    expect = torch.floor((255 * m.T + 2 ** (PRECISION_BITS - 1)) / 2**PRECISION_BITS).clamp(0, 255).to(torch.uint8)
    np.testing.assert_array_equal(expect.numpy(), pil)
    # And the height only, with a random image: one exact pass through the transposed axis.
    image = random_image(n_in, 5, seed=n_in)[:, :, 0]
    pil_v = np.asarray(Image.fromarray(image).resize((5, n_out), Image.Resampling.BILINEAR))
    got_v = torch.floor((m @ torch.from_numpy(image).double() + 2 ** (PRECISION_BITS - 1)) / 2**PRECISION_BITS).clamp(
        0, 255
    )
    np.testing.assert_array_equal(got_v.to(torch.uint8).numpy(), pil_v)


def test_weights_are_cached():
    assert resize_weights(640, 352) is resize_weights(640, 352)
    assert resize_matrix(640, 352) is resize_matrix(640, 352)
    assert resize_matrix(640, 352).dtype == torch.float64


def test_value_table_is_the_processors():
    pre = TorchPreprocessor(352, MEAN, STD, 1 / 255)
    want = value_table(PreprocessConfig(size=352, mean=MEAN, std=STD, rescale_factor=1 / 255))
    np.testing.assert_array_equal(pre.table.numpy(), want)


# --------------------------------------------------------------------------- devices


def test_device_is_preserved_cpu(pre352):
    out = pre352([torch.from_numpy(random_image(20, 30))])
    assert out.device == torch.device("cpu") and out.dtype == torch.float32


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: torch.cuda.is_available() is False",
)
def test_cuda_matches_cpu_kernel():
    pre = TorchPreprocessor(352, MEAN, STD, 1 / 255)
    shapes = [
        (1, 1),
        (3, 2),
        (24, 2),
        (301, 2),
        (480, 640),
        (720, 1280),
        (1080, 1920),
        (1920, 1080),
        (2000, 30),
        (517, 293),
    ]
    images = [make("random" if i % 2 else "smooth", *s, seed=i) for i, s in enumerate(shapes)]
    frames = [torch.from_numpy(im).cuda() for im in images]
    got = pre(frames)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    np.testing.assert_array_equal(got.cpu().numpy(), ops.preprocess(images, 352, MEAN, STD, 1 / 255))
    batch = torch.from_numpy(np.stack([random_image(720, 1280, seed=i) for i in range(4)])).cuda()
    want = ops.preprocess(list(batch.cpu().numpy()), 352, MEAN, STD, 1 / 255)
    np.testing.assert_array_equal(pre(batch).cpu().numpy(), want)
    for order in (0, 1, 2):
        im = random_image(301, 2, seed=order)
        want = _core.preprocess([im], 3, MEAN, STD, 1 / 255, None, "float32", False, None, True, order)
        got = TorchPreprocessor(3, MEAN, STD, pass_order=order)(torch.from_numpy(im).cuda())
        np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: torch.cuda.is_available() is False",
)
def test_mixed_devices_rejected():
    pre = TorchPreprocessor(8)
    with pytest.raises(ValueError, match="one device"):
        pre(
            [
                torch.zeros((4, 4, 3), dtype=torch.uint8),
                torch.zeros((4, 4, 3), dtype=torch.uint8, device="cuda"),
            ]
        )


# --------------------------------------------------------------------------- bad input


def test_bad_frames(pre352):
    with pytest.raises(TypeError, match="dtype torch.float32"):
        pre352([torch.zeros((4, 4, 3))])
    with pytest.raises(TypeError, match="frame #1 has dtype torch.int16"):
        pre352(
            [
                torch.zeros((4, 4, 3), dtype=torch.uint8),
                torch.zeros((4, 4, 3), dtype=torch.int16),
            ]
        )
    with pytest.raises(TypeError, match="frames has dtype torch.float64"):
        pre352(torch.zeros((2, 4, 4, 3), dtype=torch.float64))
    with pytest.raises(ValueError, match="4 channels"):
        pre352([torch.zeros((4, 4, 4), dtype=torch.uint8)])
    with pytest.raises(ValueError, match="1 channels"):
        pre352(torch.zeros((2, 4, 4, 1), dtype=torch.uint8))
    with pytest.raises(ValueError, match="2-D"):
        pre352(torch.zeros((4, 4), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expected \(H, W, 3\)"):
        pre352([torch.zeros((4, 4), dtype=torch.uint8)])
    with pytest.raises(ValueError, match="empty"):
        pre352([torch.zeros((0, 4, 3), dtype=torch.uint8)])
    with pytest.raises(TypeError, match="torch.Tensor"):
        pre352([[1, 2, 3]])
    with pytest.raises(TypeError, match="frames must be"):
        pre352("image.png")


def test_bad_settings():
    with pytest.raises(ValueError, match="size"):
        TorchPreprocessor(0)
    with pytest.raises(TypeError, match="size"):
        TorchPreprocessor(3.5)
    with pytest.raises(ValueError, match="3 values"):
        TorchPreprocessor(8, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="zero"):
        TorchPreprocessor(8, std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="finite"):
        TorchPreprocessor(8, mean=(0.5, float("nan"), 0.5))
    with pytest.raises(ValueError, match="in_size"):
        resize_weights(0, 3)

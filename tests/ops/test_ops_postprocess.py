"""fastclipseg.ops.postprocess against the library path: torch interpolate + sigmoid + threshold + pycocotools."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import fastclipseg
import numpy as np
import pycocotools.mask as coco
import pytest
import torch
import torch.nn.functional as F
from fastclipseg import _core
from fastclipseg.ops.postprocess import Postprocessed, postprocess, upsample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# pycocotools.mask.decode trips a NumPy 2 DeprecationWarning inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

# PyTorch's AVX2/AVX-512 kernels contract the interpolation to FMAs, as ours do: then the two
# agree bit for bit (for H + W > 128, where PyTorch does not switch to its separable kernel).
TORCH_FMA = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def torch_upsample(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(torch.from_numpy(logits)[None], size=size, mode="bilinear", align_corners=False)[0].numpy()


def torch_probs(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return torch.sigmoid(torch.from_numpy(torch_upsample(logits, size))).numpy()


def coco_counts(mask: np.ndarray) -> str:
    return coco.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def random_logits(rng: np.random.Generator, k: int, h: int, w: int, scale: float = 5.0) -> np.ndarray:
    return (rng.standard_normal((k, h, w)) * scale).astype(np.float32)


def blob_logits(rng: np.random.Generator, k: int, side: int = 352) -> np.ndarray:
    """Smooth logits with a few blobs, like a real mask's."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = np.full((k, side, side), -4.0, np.float32)
    for i in range(k):
        for _ in range(3):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
            out[i] += 10 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return out


def everything(logits, size, threshold=0.5, threads=1, probs="float32") -> Postprocessed:
    return postprocess(logits, size, threshold, masks=True, probs=probs, rle=True, area=True, bbox=True,
                       score=True, threads=threads, stability=True)


def reference_stability(up: np.ndarray, t: float, offset: float) -> np.ndarray:
    """SAM's calculate_stability_score on upsampled logits, thresholds compared in float64."""
    thr = math.log(t / (1 - t)) if 0 < t < 1 else (-math.inf if t == 0 else math.inf)
    u = up.astype(np.float64).reshape(len(up), -1)
    hi = np.count_nonzero(u > thr + offset, axis=1)
    lo = np.count_nonzero(u > thr - offset, axis=1)
    return np.where(lo == 0, 1.0, hi / np.maximum(lo, 1))


# --------------------------------------------------------------------------- upsample

UPSAMPLE_CASES = [
    # (k, h, w, H, W)
    (1, 352, 352, 480, 640),
    (2, 352, 352, 1080, 1920),
    (1, 352, 352, 200, 100),  # down
    (1, 352, 352, 64, 65),
    (3, 24, 40, 100, 77),  # non-square, mixed
    (1, 5, 7, 13, 3),  # tiny: PyTorch's separable kernel
    (2, 1, 1, 5, 5),
    (1, 1, 1, 1, 1),
    (1, 7, 9, 1, 1),
    (1, 9, 6, 1, 200),  # H = 1
    (1, 6, 9, 300, 1),  # W = 1
    (1, 1, 12, 40, 30),  # h = 1
    (1, 12, 1, 40, 30),  # w = 1
    (2, 3, 4, 3, 4),  # same size: a copy
    (1, 352, 352, 352, 1000),  # one axis unchanged
]


@pytest.mark.parametrize("k,h,w,H,W", UPSAMPLE_CASES)
def test_upsample_matches_torch(k, h, w, H, W):
    rng = np.random.default_rng(h * 1000 + W)
    x = random_logits(rng, k, h, w)
    ours = upsample(x, (H, W), threads=1)
    ref = torch_upsample(x, (H, W))
    assert ours.shape == (k, H, W) and ours.dtype == np.float32 and ours.flags.c_contiguous
    assert np.all(np.abs(ours - ref) <= 1e-5 * np.maximum(1.0, np.abs(ref)))
    # PyTorch's multi-threaded kernel is the one ours matches bit for bit; with one intra-op
    # thread it takes another path for some sizes (e.g. 24x40 -> 100x77), which rounds differently.
    if TORCH_FMA and H + W > 128 and torch.get_num_threads() > 1:
        assert np.array_equal(ours, ref), "bit-identical to PyTorch's FMA kernel"


def test_upsample_huge_and_tiny_magnitudes():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 20, 30)) * np.array([1e-30, 1e30], np.float32)[:, None, None]).astype(np.float32)
    ours, ref = upsample(x, (90, 70)), torch_upsample(x, (90, 70))
    assert np.all(np.abs(ours - ref) <= 1e-5 * np.maximum(1.0, np.abs(ref)))


# --------------------------------------------------------------------------- masks vs the torch path


def test_masks_exact_away_from_the_threshold():
    # Integer logits upsampled x4: weights are odd multiples of 1/8, so every upsampled logit
    # is a multiple of 1/64 and the threshold logit 1/128 is never within 1/128 of one.
    rng = np.random.default_rng(0)
    x = rng.integers(-4, 5, size=(3, 40, 60)).astype(np.float32)
    t = 1 / (1 + math.exp(-1 / 128))
    size = (160, 240)
    res = everything(x, size, t)
    probs = torch_probs(x, size)
    ref = probs > t
    assert 0.2 < ref.mean() < 0.8
    np.testing.assert_array_equal(res.masks, ref)
    assert [r["counts"] for r in res.rle] == [coco_counts(m) for m in ref]


@pytest.mark.parametrize("size", [(480, 640), (1080, 1920), (131, 77)])
@pytest.mark.parametrize("t", [0.5, 0.2, 0.9])
def test_masks_agree_with_torch_on_random_logits(size, t):
    rng = np.random.default_rng(size[0] + int(100 * t))
    x = random_logits(rng, 2, 352, 352, scale=3.0)
    res = everything(x, size, t, threads=2)
    probs = torch_probs(x, size)
    ref = probs > t
    agree = res.masks == ref
    assert agree.mean() >= 0.9999
    # Disagreements only where the logit is within float rounding of the threshold logit.
    up = torch_upsample(x, size)
    assert np.all(np.abs(up[~agree] - math.log(t / (1 - t))) < 1e-5)
    for i in range(len(x)):
        assert res.rle[i] == {"size": list(size), "counts": coco_counts(res.masks[i])}
        if agree[i].all():
            assert res.rle[i]["counts"] == coco_counts(ref[i])


def test_blob_logits_all_outputs_match_the_library_path():
    rng = np.random.default_rng(3)
    x = blob_logits(rng, 4)
    size = (1080, 1920)
    res = everything(x, size)
    probs = torch_probs(x, size)
    ref = probs > 0.5
    np.testing.assert_array_equal(res.masks, ref)
    rles = coco.encode(np.asfortranarray(ref.transpose(1, 2, 0).astype(np.uint8)))
    assert [r["counts"] for r in res.rle] == [r["counts"].decode() for r in rles]
    assert all(r["size"] == [1080, 1920] for r in res.rle)
    np.testing.assert_array_equal(res.area, coco.area(rles))
    np.testing.assert_array_equal(res.bbox, coco.toBbox(rles))
    want = [probs[i][ref[i]].astype(np.float64).mean() for i in range(len(x))]
    np.testing.assert_allclose(res.score, want, rtol=0, atol=1e-6)
    assert np.abs(res.probs - probs).max() <= 1e-6


# --------------------------------------------------------------------------- per-output checks


def test_probabilities_float32_and_uint8():
    rng = np.random.default_rng(11)
    x = random_logits(rng, 2, 40, 30, scale=8.0)
    size = (150, 97)
    ref = torch.sigmoid(torch.from_numpy(torch_upsample(x, size)).double()).numpy()
    p32 = postprocess(x, size, masks=False, probs="float32").probs
    p8 = postprocess(x, size, masks=False, probs="uint8").probs
    assert p32.dtype == np.float32 and p32.shape == (2, *size)
    assert p8.dtype == np.uint8 and p8.shape == (2, *size)
    assert np.abs(p32 - ref).max() <= 1e-6
    assert np.abs(p8.astype(int) - np.round(255 * ref)).max() <= 1
    torch_sig = torch_probs(x, size)
    assert np.abs(p32 - torch_sig).max() <= 1e-6


def test_area_bbox_score_match_pycocotools_and_torch():
    rng = np.random.default_rng(5)
    x = np.concatenate([blob_logits(rng, 2, 64), np.full((1, 64, 64), -5, np.float32)])  # last mask empty
    size = (300, 451)
    res = everything(x, size)
    rles = [coco.encode(np.asfortranarray(m.astype(np.uint8))) for m in res.masks]
    assert res.area.dtype == np.int64 and res.bbox.dtype == np.float64 and res.score.dtype == np.float64
    np.testing.assert_array_equal(res.area, [coco.area(r) for r in rles])
    np.testing.assert_array_equal(res.bbox, np.array([coco.toBbox(r) for r in rles]))
    assert res.area[2] == 0 and np.all(res.bbox[2] == 0) and res.score[2] == 0.0
    probs = torch_probs(x, size).astype(np.float64)
    for i in range(2):
        assert abs(res.score[i] - probs[i][res.masks[i]].mean()) <= 1e-6


def test_rle_decodes_back_to_the_masks():
    rng = np.random.default_rng(9)
    x = random_logits(rng, 3, 17, 23)
    res = everything(x, (61, 45))
    for m, r in zip(res.masks, res.rle):
        np.testing.assert_array_equal(coco.decode({"size": r["size"], "counts": r["counts"].encode()}), m)


def test_only_requested_fields_are_set():
    x = np.zeros((2, 8, 8), np.float32)
    res = postprocess(x, (16, 16))
    assert res.masks is not None and res.masks.dtype == np.bool_ and res.masks.shape == (2, 16, 16)
    assert res.probs is None and res.rle is None and res.area is None and res.bbox is None and res.score is None
    assert res.stability is None
    res = postprocess(x, (16, 16), masks=False, area=True)
    assert res.masks is None and res.area.tolist() == [0, 0]
    with pytest.raises(AttributeError):
        res.area = None  # frozen


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_threshold_extremes(t):
    x = np.array([[[-80.0, -3.0, 0.0, 5.0, 1e30, -1e30]]], np.float32)
    res = everything(x, (1, 6), t)
    if t == 0.0:  # every logit above -inf
        assert res.masks.all() and res.area[0] == 6
        assert res.bbox.tolist() == [[0, 0, 6, 1]]
    else:
        assert not res.masks.any() and res.area[0] == 0 and res.score[0] == 0.0
        assert res.rle[0]["counts"] == coco_counts(np.zeros((1, 6), bool))
    assert _core.postprocess_threshold_logit(t) == (-math.inf if t == 0 else math.inf)


def test_nan_logits_are_background_with_nan_probability():
    x = np.array([[[np.nan, 2.0], [3.0, -1.0]]], np.float32)
    res = everything(x, (2, 2), 0.5)  # same size: a copy, so the NaN stays in one pixel
    assert res.masks.tolist() == [[[False, True], [True, False]]]
    assert np.isnan(res.probs[0, 0, 0]) and not np.isnan(res.probs[0, 1:, :]).any()
    assert postprocess(x, (2, 2), probs="uint8").probs[0, 0, 0] == 0
    expect = (1 / (1 + math.exp(-2)) + 1 / (1 + math.exp(-3))) / 2
    assert abs(res.score[0] - expect) <= 1e-6 and res.area[0] == 2


@pytest.mark.parametrize("size", [(4, 5), (9, 13), (2, 2), (100, 90)])
def test_non_finite_logits_propagate_as_in_torch(size):
    # A NaN spreads to every pixel that weighs it and inf * 0 weights give NaN, as in PyTorch.
    x = np.zeros((1, 4, 5), np.float32)
    x[0, 1, 2], x[0, 3, 0], x[0, 0, 4] = np.inf, -np.inf, np.nan
    up = upsample(x, size)
    ref = torch_upsample(x, size)
    np.testing.assert_array_equal(np.isnan(up), np.isnan(ref))
    np.testing.assert_array_equal(up[~np.isnan(up)], ref[~np.isnan(ref)])
    res = everything(x, size)
    np.testing.assert_array_equal(res.masks[0], up[0] > 0)
    assert np.isfinite(res.score[0])


def test_empty_batch():
    x = np.zeros((0, 352, 352), np.float32)
    res = everything(x, (480, 640))
    assert res.masks.shape == (0, 480, 640) and res.probs.shape == (0, 480, 640)
    assert res.rle == [] and res.area.shape == (0,) and res.bbox.shape == (0, 4) and res.score.shape == (0,)
    assert res.stability.shape == (0,) and res.stability.dtype == np.float64
    assert upsample(x, (4, 5)).shape == (0, 4, 5)


def test_thread_count_invariance():
    rng = np.random.default_rng(21)
    x = np.concatenate([blob_logits(rng, 3, 96), random_logits(rng, 2, 96, 96)])
    ref = everything(x, (517, 389), 0.4, threads=1)
    for threads in (2, 3, 8, None):
        res = everything(x, (517, 389), 0.4, threads=threads)
        np.testing.assert_array_equal(res.masks, ref.masks)
        assert res.probs.tobytes() == ref.probs.tobytes()
        assert res.rle == ref.rle
        np.testing.assert_array_equal(res.area, ref.area)
        np.testing.assert_array_equal(res.bbox, ref.bbox)
        assert res.score.tobytes() == ref.score.tobytes()
        assert res.stability.tobytes() == ref.stability.tobytes()
        assert upsample(x, (517, 389), threads=threads).tobytes() == upsample(x, (517, 389), threads=1).tobytes()


# --------------------------------------------------------------------------- stability score


@pytest.mark.parametrize("k,h,w,H,W", [(3, 24, 40, 100, 77), (2, 9, 6, 1, 200), (2, 352, 352, 240, 320),
                                       (1, 5, 7, 13, 3), (2, 3, 4, 3, 4)])
def test_stability_matches_numpy_reference(k, h, w, H, W):
    rng = np.random.default_rng(k * 1000 + H)
    x = np.concatenate([random_logits(rng, k, h, w, scale=3.0), np.full((1, h, w), -9.0, np.float32)])
    up = upsample(x, (H, W), threads=1)
    for t in (0.0, 0.3, 0.5, 0.9, 1.0):
        for offset in (0.0, 0.5, 1.0, 2.0):
            ref = reference_stability(up, t, offset)
            results = [postprocess(x, (H, W), t, masks=False, stability=True, stability_offset=offset,
                                   threads=threads).stability for threads in (1, 2, 3)]
            assert results[0].dtype == np.float64 and results[0].shape == (k + 1,)
            np.testing.assert_array_equal(results[0], ref)
            for other in results[1:]:
                assert other.tobytes() == results[0].tobytes()
            if offset == 1.0 and t == 0.5:  # the default offset
                default = postprocess(x, (H, W), masks=False, stability=True, threads=1).stability
                np.testing.assert_array_equal(default, ref)
    # The all-background mask (last) is 1.0 once neither shifted threshold selects a pixel.
    assert postprocess(x, (H, W), 0.5, masks=False, stability=True).stability[-1] == 1.0


def test_stability_with_other_outputs_and_edge_cases():
    rng = np.random.default_rng(5)
    x = blob_logits(rng, 2, 64)
    res = everything(x, (150, 200), 0.5)
    np.testing.assert_array_equal(res.stability, reference_stability(upsample(x, (150, 200)), 0.5, 1.0))
    assert np.all((res.stability > 0.5) & (res.stability < 1.0))  # smooth blobs: stable but not exactly
    # Offset 0: both thresholds are the mask's own, so 1 for nonempty (and empty) masks.
    zero = postprocess(x, (150, 200), 0.5, area=True, stability=True, stability_offset=0).stability
    assert zero.tolist() == [1.0, 1.0]
    # t = 1 keeps nothing at either threshold; t = 0 keeps every non-NaN logit at both.
    assert postprocess(x, (150, 200), 1.0, stability=True).stability.tolist() == [1.0, 1.0]
    assert postprocess(x, (150, 200), 0.0, stability=True).stability.tolist() == [1.0, 1.0]
    # A mask that is empty at t but not at t - offset, and NaN counting in neither (same size: a copy).
    y = np.array([[[np.nan, -0.9], [-0.2, -3.0]], [[-1.5, -0.5], [0.5, 2.0]]], np.float32)
    res = postprocess(y, (2, 2), 0.5, area=True, stability=True)
    assert res.area.tolist() == [0, 2] and res.stability.tolist() == [0.0, 1 / 3]


@pytest.mark.parametrize("offset", [math.nan, -0.5, -1e-300, math.inf, -math.inf])
def test_rejects_bad_stability_offsets(offset):
    x = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="stability_offset"):
        postprocess(x, (8, 8), stability=True, stability_offset=offset)
    with pytest.raises(ValueError, match="stability offset"):
        _core.postprocess(x, 8, 8, 0.5, True, None, False, False, False, False, 1, True, offset)


@pytest.mark.parametrize("offset", ["1", None, True, np.bool_(False), 1j])
def test_rejects_stability_offset_types(offset):
    with pytest.raises(TypeError, match="stability_offset"):
        postprocess(np.zeros((1, 4, 4), np.float32), (8, 8), stability=True, stability_offset=offset)


# Runs in a fresh interpreter: its peak RSS starts near the size of numpy, whatever this test
# session allocated before (a session's peak cannot always be reset, e.g. in some sandboxes).
_PEAK_RSS_SCRIPT = """
import json, sys
import numpy as np
from fastclipseg.ops import postprocess

def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

x = np.load(sys.argv[1])
full = sys.argv[2] == "masks"
before = peak_kib()
res = postprocess(x, (16384, 16384), masks=full, rle=not full, area=not full, bbox=not full,
                  score=not full, threads=2)
grown = peak_kib() - before
print(json.dumps({"grown_kib": grown} if full else
                 {"grown_kib": grown, "area": int(res.area[0]), "bbox": res.bbox[0].tolist(),
                  "counts": res.rle[0]["counts"]}))
"""


def _run_peak_rss(logits_path: Path, what: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(fastclipseg.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS_SCRIPT, str(logits_path), what],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS from /proc")
def test_no_full_size_array_for_rle_and_stats(tmp_path):
    # 16384 x 16384 = 268M pixels: any full-size array (bool 268 MB, float32 1 GB) would show in
    # the peak RSS; runs and per-row buffers take a few MB.
    path = tmp_path / "logits.npy"
    np.save(path, blob_logits(np.random.default_rng(2), 1, 64))
    stats = _run_peak_rss(path, "stats")
    assert stats["grown_kib"] < 64 * 1024
    assert 0 < stats["area"] < 16384**2
    assert _core.rle_area(stats["counts"], 16384, 16384) == stats["area"]
    np.testing.assert_array_equal(_core.rle_bbox(stats["counts"], 16384, 16384), stats["bbox"])
    # ...while asking for the masks does allocate them (the measurement works).
    assert _run_peak_rss(path, "masks")["grown_kib"] > 200 * 1024


# --------------------------------------------------------------------------- input handling


def test_accepts_torch_tensors_and_non_contiguous_arrays():
    rng = np.random.default_rng(4)
    x = random_logits(rng, 3, 20, 24)
    ref = everything(x, (50, 40))
    for other in (torch.from_numpy(x), np.asfortranarray(x), x[::-1][::-1].copy(order="F"), x.transpose(0, 2, 1).copy().transpose(0, 2, 1)):
        res = everything(other, (50, 40))
        np.testing.assert_array_equal(res.masks, ref.masks)
        assert res.rle == ref.rle
    strided = np.zeros((3, 40, 48), np.float32)
    strided[:, ::2, ::2] = x
    view = strided[:, ::2, ::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(upsample(view, (50, 40)), upsample(x, (50, 40)))
    res = everything(view, (50, 40))
    np.testing.assert_array_equal(res.masks, ref.masks)
    # Read-only and misaligned by one byte: copied once at the boundary.
    unaligned = np.frombuffer(b"\0" + x.tobytes(), dtype=np.float32, count=x.size, offset=1).reshape(x.shape)
    assert not unaligned.flags.aligned
    np.testing.assert_array_equal(everything(unaligned, (50, 40)).masks, ref.masks)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.uint8, ">f4"])
def test_rejects_other_dtypes(dtype):
    x = np.zeros((1, 4, 4), dtype)
    with pytest.raises(TypeError, match="float32"):
        postprocess(x, (8, 8))
    with pytest.raises(TypeError, match="float32"):
        upsample(x, (8, 8))


@pytest.mark.parametrize("shape", [(4, 4), (1, 1, 4, 4), (4,), ()])
def test_rejects_wrong_ndim(shape):
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match="3-D"):
        postprocess(x, (8, 8))
    with pytest.raises(ValueError, match="3-D"):
        upsample(x, (8, 8))


@pytest.mark.parametrize("shape", [(1, 0, 4), (1, 4, 0)])
def test_rejects_empty_logit_planes(shape):
    with pytest.raises(ValueError, match="must be >= 1"):
        postprocess(np.zeros(shape, np.float32), (8, 8))


@pytest.mark.parametrize("size", [(0, 8), (8, 0), (-1, 8), (8, -5), (2**31, 8)])
def test_rejects_bad_sizes(size):
    x = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="size"):
        postprocess(x, size)
    with pytest.raises(ValueError, match="size"):
        upsample(x, size)


@pytest.mark.parametrize("size", [(8,), (8, 8, 8), "88", 8, (8.0, 8), (True, 8)])
def test_rejects_malformed_sizes(size):
    with pytest.raises((ValueError, TypeError)):
        postprocess(np.zeros((1, 4, 4), np.float32), size)


def test_rejects_sizes_whose_product_overflows():
    x = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="too large|overflows"):
        postprocess(x, (2**31 - 1, 2**31 - 1))
    with pytest.raises(ValueError, match="overflows"):
        # K * H * W = 16 * (2^31 - 1) * 2^28 > 2^62 (each plane is within the RLE limit):
        # rejected before anything is allocated.
        postprocess(np.zeros((16, 1, 1), np.float32), (2**31 - 1, 2**28), masks=False, rle=True)


@pytest.mark.parametrize("t", [math.nan, -0.01, 1.01, math.inf, -math.inf])
def test_rejects_bad_thresholds(t):
    with pytest.raises(ValueError, match="threshold"):
        postprocess(np.zeros((1, 4, 4), np.float32), (8, 8), t)
    with pytest.raises(ValueError, match="threshold"):
        _core.postprocess(np.zeros((1, 4, 4), np.float32), 8, 8, t, True, None, False, False, False, False, 1)


@pytest.mark.parametrize("t", ["0.5", None, True])
def test_rejects_threshold_types(t):
    with pytest.raises(TypeError):
        postprocess(np.zeros((1, 4, 4), np.float32), (8, 8), t)


@pytest.mark.parametrize("probs", ["float64", "f4", "", np.float32, 1])
def test_rejects_bad_probs(probs):
    with pytest.raises(ValueError, match="probs"):
        postprocess(np.zeros((1, 4, 4), np.float32), (8, 8), probs=probs)


@pytest.mark.parametrize("threads", [0, -1])
def test_rejects_bad_threads(threads):
    with pytest.raises(ValueError, match="threads"):
        postprocess(np.zeros((1, 4, 4), np.float32), (8, 8), threads=threads)
    with pytest.raises(ValueError, match="threads"):
        upsample(np.zeros((1, 4, 4), np.float32), (8, 8), threads=threads)


def test_native_layer_validates_too():
    x = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="height"):
        _core.postprocess(x, 0, 8, 0.5, True, None, False, False, False, False, 1)
    with pytest.raises(ValueError, match="probs"):
        _core.postprocess(x, 8, 8, 0.5, True, "float64", False, False, False, False, 1)
    with pytest.raises(ValueError, match="threads"):
        _core.postprocess_upsample(x, 8, 8, -2)
    with pytest.raises(TypeError, match="ndarray"):
        _core.postprocess([[[0.0]]], 8, 8, 0.5, True, None, False, False, False, False, 1)


# --------------------------------------------------------------------------- properties

dims = st.integers(min_value=1, max_value=24)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 3), h=dims, w=dims, H=st.integers(1, 70), W=st.integers(1, 70),
       t=st.sampled_from([0.0, 0.1, 0.5, 0.73, 1.0]), threads=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_property_against_torch_and_pycocotools(k, h, w, H, W, t, threads, seed):
    rng = np.random.default_rng(seed)
    x = random_logits(rng, k, h, w, scale=4.0)
    res = everything(x, (H, W), t, threads=threads)
    up = upsample(x, (H, W), threads=threads)
    ref_up = torch_upsample(x, (H, W))
    assert np.all(np.abs(up - ref_up) <= 1e-5 * np.maximum(1.0, np.abs(ref_up)))
    ref = torch_probs(x, (H, W)) > t
    thr = math.log(t / (1 - t)) if 0 < t < 1 else (-math.inf if t == 0 else math.inf)
    near = np.abs(ref_up - thr) < 1e-5
    assert np.array_equal(res.masks[~near], ref[~near])
    for i in range(k):
        assert res.rle[i]["counts"] == coco_counts(res.masks[i])
        if np.array_equal(res.masks[i], ref[i]):
            assert res.rle[i]["counts"] == coco_counts(ref[i])
        decoded = coco.decode({"size": [H, W], "counts": res.rle[i]["counts"].encode()})
        np.testing.assert_array_equal(decoded, res.masks[i])
        r = coco.encode(np.asfortranarray(res.masks[i].astype(np.uint8)))
        assert res.area[i] == coco.area(r)
        np.testing.assert_array_equal(res.bbox[i], coco.toBbox(r))
        p = torch.sigmoid(torch.from_numpy(ref_up[i]).double()).numpy()
        want = p[res.masks[i]].mean() if res.masks[i].any() else 0.0
        assert abs(res.score[i] - want) <= 1e-6
    np.testing.assert_array_equal(res.stability, reference_stability(up, t, 1.0))

"""The device-agnostic post-processing of the GPU path, checked on the CPU against the native kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastclipseg import ops
from fastclipseg.ops import rle
from fastclipseg.ops.device.postprocess import (
    pack_masks,
    threshold_logit,
    upsample_logits,
)

SIZES = [(480, 640), (720, 1280), (100, 301), (97, 45), (352, 352)]  # all with H + W > 128


def packed_masks(logits: torch.Tensor, size: tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """Upsample, threshold and pack, as `processing.DeviceProcessing.summarize` does on the device."""
    return pack_masks(upsample_logits(logits, size) > threshold_logit(threshold))


def smooth_logits(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.normal(0, 3, (count, 1, 12, 12)).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, size=(88, 88), mode="bicubic", align_corners=False)[:, 0].numpy()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.9])
def test_packed_masks_equal_the_native_masks(size, threshold):
    logits = smooth_logits(3, seed=size[0])
    packed = packed_masks(torch.from_numpy(logits), size, threshold).numpy()
    native = ops.postprocess(logits, size, threshold, masks=True, rle=True)
    assert packed.shape == (3, size[0], -(-size[1] // 8)) and packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, np.packbits(native.masks, axis=-1, bitorder="little"))
    # The RLE built on the host from the packed bits is the native pass's, byte for byte.
    assert rle.encode_packed(packed, size[1]) == native.rle


def test_pack_masks_layout_and_errors():
    masks = torch.zeros((2, 3, 13), dtype=torch.bool)
    masks[0, 1, 0] = masks[0, 1, 9] = masks[1, 2, 12] = True
    packed = pack_masks(masks)
    assert packed.shape == (2, 3, 2)
    assert packed[0, 1].tolist() == [1, 2] and packed[1, 2].tolist() == [0, 16]
    np.testing.assert_array_equal(packed.numpy(), np.packbits(masks.numpy(), axis=-1, bitorder="little"))
    assert pack_masks(torch.zeros((0, 4, 4), dtype=torch.bool)).shape == (0, 4, 1)
    with pytest.raises(TypeError, match="bool"):
        pack_masks(torch.zeros((1, 2, 2)))
    with pytest.raises(TypeError, match=r"\(K, h, w\)"):
        packed_masks(torch.zeros((4, 4)), (8, 8))
    with pytest.raises(ValueError, match="threshold"):
        packed_masks(torch.zeros((1, 4, 4)), (8, 8), threshold=1.5)
    assert threshold_logit(0.5) == 0.0 and threshold_logit(1.0) == float("inf")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI and the development machines have none)")
def test_on_cuda_the_masks_agree_with_the_cpu_kernel():
    logits = smooth_logits(4, seed=3)
    size = (720, 1280)
    packed = packed_masks(torch.from_numpy(logits).cuda(), size).cpu().numpy()
    native = ops.postprocess(logits, size, 0.5, masks=True)
    got = np.unpackbits(packed, axis=-1, bitorder="little", count=size[1]).astype(bool)
    # The GPU's interpolation may round the last bit differently: only near-threshold pixels may move.
    assert (got != native.masks).mean() < 1e-4

"""Post-processing as torch operations on the logits' device: upsample, threshold, pack the bits.

On a GPU this keeps the full-size work on the device: the `(K, h, w)` logits are upsampled to the
image's size and thresholded there, and only bit-packed masks (`K x H x ceil(W / 8)` bytes, an
eighth of a bool array) come back to the host, where `fastclipseg.ops.rle.encode_packed` builds the
COCO RLE from the packed bits (`processing.DeviceProcessing.summarize` puts these together).

The threshold is the same float as the native kernel's (`logit > threshold_logit(t)`), and the
upsampling is `torch.nn.functional.interpolate(..., "bilinear", align_corners=False)`, so on the
CPU the masks equal `fastclipseg.ops.postprocess`'s wherever that kernel is bit-identical to
PyTorch's (`H + W > 128`); on a GPU the interpolation may round differently in the last bit,
which moves only pixels whose logit is within rounding of the threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import _core
from ..validation import check_threshold


def threshold_logit(threshold: float) -> float:
    """The float f with `logit > f` exactly when `sigmoid(logit) > threshold` (the native kernel's)."""
    return float(_core.postprocess_threshold_logit(check_threshold(threshold)))


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(K, h, w)` logits -> `(K, H, W)` float32 on the same device (bilinear, align_corners=False)."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise TypeError(f"logits must be a (K, h, w) torch tensor, got {type(logits).__name__} "
                        f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else ''}")
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive ints, got {size!r}")
    if logits.shape[0] == 0:
        return logits.new_zeros((0, height, width), dtype=torch.float32)
    return F.interpolate(logits[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]


def pack_masks(masks: torch.Tensor) -> torch.Tensor:
    """`(K, H, W)` bool -> `(K, H, ceil(W / 8))` uint8, bit j of byte b = column 8 b + j (padding 0)."""
    if masks.dtype != torch.bool or masks.ndim != 3:
        raise TypeError(f"masks must be a (K, H, W) bool tensor, got {masks.dtype} with shape {tuple(masks.shape)}")
    count, height, width = masks.shape
    padded = -(-width // 8) * 8
    if padded != width:
        masks = F.pad(masks, (0, padded - width))
    groups = masks.reshape(count, height, padded // 8, 8).to(torch.uint8)
    # Bit j of each byte is column 8 * byte + j (np.packbits' "little" order). Made on the device:
    # a host tensor would be copied there on every call.
    weights = 1 << torch.arange(8, dtype=torch.uint8, device=masks.device)
    return (groups * weights).sum(dim=-1, dtype=torch.uint8)


"""The torch twin of the native edge-aware upsampling (`fastclipseg.ops.edges`), for the device path.

`guided_probabilities` computes what the native kernel computes (``fastclipseg/edges.hpp``) with
torch operations on the logits' device; on the CPU it is tested against the kernel (a few float32
ulp apart: no fused multiply-adds here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..edges import Edges


def _grey(image: torch.Tensor) -> torch.Tensor:
    """Pillow's convert("L") of an (H, W, 3) uint8 tensor, as int32."""
    rgb = image.to(torch.int32)
    return (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 32768) >> 16


def guided_probabilities(logits: torch.Tensor, image: torch.Tensor, edges: Edges) -> torch.Tensor:
    """The filtered probabilities ``(K, H, W)`` float32 in [0, 1], on the logits' device: the same
    computation as the native kernel (``fastclipseg/edges.hpp``) in torch operations, for the device
    path. ``logits``: ``(K, h, w)``; ``image``: ``(H, W)`` or ``(H, W, 3)`` uint8 on any device.

    Low-resolution maths in float64 (as the kernel), the full-resolution ``A . I + B`` in float32
    without fused multiply-adds, so it differs from the kernel by a few float32 ulp."""
    device = logits.device
    image = image.to(device)
    if image.ndim == 2:
        image = image[..., None]
    if edges.guide == "grey" and image.shape[-1] == 3:
        guide = _grey(image)[None]
    elif edges.guide == "grey":
        guide = image[..., 0].to(torch.int32)[None]
    else:
        if image.shape[-1] != 3:
            raise ValueError("the colour guide needs an RGB image (3 channels)")
        guide = image.permute(2, 0, 1).to(torch.int32)
    count, h, w = logits.shape
    height, width = guide.shape[1:]
    channels = guide.shape[0]
    h, w = max(1, h // edges.subsample), max(1, w // edges.subsample)  # the filter's grid
    low = F.adaptive_avg_pool2d(guide[None].to(torch.float64), (h, w))[0] / 255.0  # (C, h, w)
    r = edges.radius

    def box(x: torch.Tensor) -> torch.Tensor:
        # (..., h, w) -> window means clipped at the borders; a window wider than the grid is the
        # whole grid's mean along that side, which avg_pool2d's padding limit cannot express.
        size = x.shape
        flat = x.reshape(-1, 1, h, w)
        ry, rx = min(r, h - 1), min(r, w - 1)
        out = F.avg_pool2d(flat, (2 * ry + 1, 2 * rx + 1), stride=1, padding=(ry, rx), count_include_pad=False)
        return out.reshape(size)

    mean_i = box(low)  # (C, h, w)
    # The kernel's float32 sigmoid, averaged into the filter's grid.
    p = torch.sigmoid(logits.float()).nan_to_num(nan=0.0).to(torch.float64)
    p = F.adaptive_avg_pool2d(p[None], (h, w))[0] if count else p.new_zeros((0, h, w))  # (K, h, w)
    mean_p = box(p)
    cov_ip = box(low[None] * p[:, None]) - mean_i[None] * mean_p[:, None]  # (K, C, h, w)
    if channels == 1:
        var = box(low * low) - mean_i * mean_i  # (1, h, w)
        a = cov_ip / (var[None] + edges.eps)
    else:
        sigma = box(low[:, None] * low[None]) - mean_i[:, None] * mean_i[None]  # (3, 3, h, w)
        sigma = sigma.permute(2, 3, 0, 1) + edges.eps * torch.eye(3, dtype=torch.float64, device=device)
        a = torch.linalg.solve(sigma[None], cov_ip.permute(0, 2, 3, 1)[..., None])[..., 0].permute(0, 3, 1, 2)
    b = mean_p - (a * mean_i[None]).sum(dim=1)
    coef = torch.cat([box(a) / 255.0, box(b)[:, None]], dim=1).to(torch.float32)  # (K, C + 1, h, w)
    if count == 0:
        return torch.zeros((0, height, width), dtype=torch.float32, device=device)
    up = F.interpolate(coef, size=(height, width), mode="bilinear", align_corners=False)
    q = up[:, channels] + (up[:, :channels] * guide[None].to(torch.float32)).sum(dim=1)
    return q.clamp_(0.0, 1.0)

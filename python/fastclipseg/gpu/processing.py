"""The work around the network on the network's device: what `FastSegmenter(device="cuda")` runs.

- before: uint8 frames are uploaded (`upload.FrameUploader`: pinned memory, a copy stream of its
  own) and resized + normalised there (`preprocess.TorchPreprocessor`, bit-identical to the native
  CPU kernel on the CPU; on a GPU its float64 products are exact too, so the same);
- after: the `(K, h, w)` logits are upsampled to each image's size and thresholded there, the
  score (mean probability inside the mask) and the stability score are reduced there, and only
  the bit-packed masks, those 2K numbers and the model-resolution logits come back to the host,
  where `SegmentationResult` builds the COCO RLE, area and box from the packed bits with the
  native kernel (`rle.encode_packed`, `rle.packed_area_bbox`).

Masks are `logit > threshold_logit(t)` and the stability counts use the same two float
thresholds as the native kernel (`stability_thresholds`), so a pixel can differ from the native
path only where the two upsamplings round differently in the last bit of a logit at a threshold.

`DeviceProcessing` runs on any device; the CPU tests use it there (slowly: the resize is a dense
matrix product) to check it against the native path. Nothing here has run on a GPU yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..preprocess import PreprocessConfig
from ..results import PackedMasks
from .postprocess import pack_masks, threshold_logit, upsample_logits
from .preprocess import TorchPreprocessor
from .upload import FrameUploader

#: Upsampled logits held at once while summarising (float32 elements: 512 MiB).
MAX_UPSAMPLED_ELEMENTS = 1 << 27


def _round_down(value: float) -> float:
    """The largest float32 <= `value` (the native kernel's `round_down`)."""
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def stability_thresholds(threshold: float, offset: float) -> tuple[float, float]:
    """The float32 logit thresholds `(L - d, L + d)` of the stability score, as the native kernel's."""
    if threshold in (0.0, 1.0):
        edge = threshold_logit(threshold)  # +-inf shifted by a finite offset
        return edge, edge
    logit = math.log(threshold / (1.0 - threshold))
    return _round_down(logit - offset), _round_down(logit + offset)


@dataclass
class DeviceBatch:
    """Pixel values made on the device, and the event after which they are ready (CUDA)."""

    pixels: torch.Tensor
    ready: torch.cuda.Event | None = None

    def wait(self) -> torch.Tensor:
        """The pixels, safe to use on the calling thread's current stream."""
        if self.ready is not None:
            stream = torch.cuda.current_stream(self.pixels.device)
            stream.wait_event(self.ready)
            # Made on the upload stream: keep the allocator from reusing the memory while this
            # stream may still read it.
            self.pixels.record_stream(stream)
        return self.pixels


class DeviceProcessing:
    """Pre- and post-processing of `FastSegmenter` on `device` (see the module docstring)."""

    def __init__(self, config: PreprocessConfig, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.preprocessor = TorchPreprocessor(config.size, config.mean, config.std, config.rescale_factor)
        self.uploader = FrameUploader(self.device)

    def prepare(self, images: Sequence[np.ndarray]) -> DeviceBatch:
        """Upload and preprocess `images` on the upload stream; `DeviceBatch.wait()` before use."""
        frames = self.uploader.upload(images)
        if self.uploader.stream is None:
            return DeviceBatch(self.preprocessor(frames))
        with torch.cuda.stream(self.uploader.stream):
            pixels = self.preprocessor(frames)
            ready = torch.cuda.Event()
            ready.record(self.uploader.stream)
        return DeviceBatch(pixels, ready)

    def pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """`(N, 3, S, S)` float32 pixel values on the device, ready on the current stream."""
        return self.prepare(images).wait()

    @torch.inference_mode()
    def summarize(self, logits: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]], threshold: float,
                  stability_offset: float = 1.0) -> list[PackedMasks]:
        """Per image: its `(K, h, w)` device logits upsampled to its size, thresholded and packed,
        with the score and stability of each mask, on the host.

        Images of one size (a video's frames) are upsampled together, in chunks of at most
        `MAX_UPSAMPLED_ELEMENTS`; one copy to the host per chunk.
        """
        results: list[PackedMasks | None] = [None] * len(logits)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            groups.setdefault((int(size[0]), int(size[1])), []).append(index)
        cut = threshold_logit(threshold)
        low, high = stability_thresholds(threshold, stability_offset)
        for (height, width), members in groups.items():
            start = 0
            while start < len(members):
                chunk: list[int] = []
                elements = 0
                while start < len(members):
                    count = int(logits[members[start]].shape[0]) * height * width
                    if chunk and elements + count > MAX_UPSAMPLED_ELEMENTS:
                        break
                    chunk.append(members[start])
                    elements += count
                    start += 1
                counts = [int(logits[i].shape[0]) for i in chunk]
                stacked = torch.cat([logits[i].to(self.device, torch.float32) for i in chunk])
                summary = _summarize(stacked, (height, width), cut, low, high)
                for i, packed in zip(chunk, _split(summary, counts)):
                    results[i] = packed
        return results  # type: ignore[return-value]


def _summarize(logits: torch.Tensor, size: tuple[int, int], cut: float, low: float, high: float) -> PackedMasks:
    upsampled = upsample_logits(logits, size)
    masks = upsampled > cut
    area = masks.sum(dim=(1, 2), dtype=torch.float64)
    # Mean probability inside the mask, summed in float64 as the native kernel does per row.
    inside = torch.where(masks, torch.sigmoid(upsampled), 0.0).sum(dim=(1, 2), dtype=torch.float64)
    score = torch.where(area > 0, inside / area.clamp(min=1), 0.0)
    above_low = (upsampled > low).sum(dim=(1, 2), dtype=torch.float64)
    above_high = (upsampled > high).sum(dim=(1, 2), dtype=torch.float64)
    stability = torch.where(above_low > 0, above_high / above_low.clamp(min=1), 1.0)
    bits = pack_masks(masks)
    return PackedMasks(bits=bits.cpu().numpy(), score=score.cpu().numpy(), stability=stability.cpu().numpy())


def _split(summary: PackedMasks, counts: list[int]) -> list[PackedMasks]:
    parts, start = [], 0
    for count in counts:
        parts.append(PackedMasks(bits=summary.bits[start : start + count], score=summary.score[start : start + count],
                                 stability=summary.stability[start : start + count]))
        start += count
    return parts

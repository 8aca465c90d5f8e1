"""The work around the network on the network's device: what `FastSegmenter(device="cuda")` runs.

- before: uint8 frames are uploaded (`upload.FrameUploader`: pinned memory, a copy stream of its
  own) and resized + normalised there (`preprocess.TorchPreprocessor`, bit-identical to the native
  CPU kernel on the CPU; on a GPU its float64 products are exact too, so the same);
- after: the `(K, h, w)` logits are upsampled to each image's size and thresholded there, the
  score (mean probability inside the mask) and the stability score are reduced there, and only
  the bit-packed masks, those 2K numbers and the model-resolution logits come back to the host,
  where `SegmentationResult` builds the COCO RLE, area and box from the packed bits with the
  native kernel (`rle.encode_packed`, `rle.packed_area_bbox`).

Masks are `logit > threshold_logit(t)` and the stability counts use the native kernel's own two
float thresholds (`_core.postprocess_stability_thresholds`), so a pixel can differ from the native
path only where the two upsamplings round differently in the last bit of a logit at a threshold.
With edges, the filtered probabilities come from the torch twin of the native guided filter
(`edges.guided_probabilities`, a few float32 ulp from the kernel) and are compared with the
kernel's own probability cuts.

`DeviceProcessing` runs on any device; the CPU tests use it there (slowly: the resize is a dense
matrix product) to check it against the native path. Nothing here has run on a GPU yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ... import _core
from ..edges import Edges, probability_cuts
from ..image_processor import PreprocessConfig
from ..postprocess import PackedMasks
from .edges import guided_probabilities
from .postprocess import pack_masks, threshold_logit, upsample_logits
from .preprocess import TorchPreprocessor
from .upload import FrameUploader

#: Upsampled logits held at once while summarising (float32 elements: 512 MiB).
MAX_UPSAMPLED_ELEMENTS = 1 << 27


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
    """Pre- and post-processing of `FastSegmenter` on `device` (see the module docstring).

    Raises:
        ValueError: `config.resample` is not bilinear (`supports` is False): `TorchPreprocessor`
            replicates Pillow's bilinear filter only.
    """

    def __init__(self, config: PreprocessConfig, device: torch.device | str) -> None:
        if not self.supports(config):
            raise ValueError(
                f"device processing resizes with Pillow's bilinear filter only, but this processor resamples with "
                f"{_filter_name(config.resample)}: use device_processing=False (the native/PIL path)"
            )
        self.device = torch.device(device)
        self.preprocessor = TorchPreprocessor(config.size, config.mean, config.std, config.rescale_factor)
        self.uploader = FrameUploader(self.device)

    @staticmethod
    def supports(config: PreprocessConfig) -> bool:
        """Whether `config` can be preprocessed on the device (its filter is Pillow's bilinear)."""
        return config.resample == Image.Resampling.BILINEAR

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
    def summarize(self, logits: torch.Tensor, counts: Sequence[int], sizes: Sequence[tuple[int, int]],
                  threshold: float, stability_offset: float = 1.0, edges: Edges | None = None,
                  guides: Sequence[np.ndarray] | None = None) -> list[PackedMasks]:
        """Per image: its rows of the `(sum(counts), h, w)` device logits upsampled to its size,
        thresholded and packed, with the score and stability of each mask, on the host.

        Images of one size (a video's frames) are upsampled together, in chunks of at most
        `MAX_UPSAMPLED_ELEMENTS`; two copies to the host per chunk (the packed bits, and the
        scores with the stabilities), and no copy of the logits when a chunk's rows are
        consecutive (as they are in a video). With `edges`, each image is filtered on its own,
        guided by `guides[i]` (its uint8 pixels, uploaded here).
        """
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        if edges is not None:
            if guides is None or len(guides) != len(counts):
                raise ValueError("edges on the device need each image as its guide")
            cut, low, high = probability_cuts(threshold, stability_offset)
            return [_summarize_values(guided_probabilities(logits[starts[i]:starts[i + 1]].float(),
                                                           torch.from_numpy(np.ascontiguousarray(guide)), edges),
                                      cut, low, high, probabilities=True)
                    for i, guide in enumerate(guides)]
        cut = threshold_logit(threshold)
        low, high = _core.postprocess_stability_thresholds(threshold, stability_offset)
        results: list[PackedMasks | None] = [None] * len(counts)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            groups.setdefault((int(size[0]), int(size[1])), []).append(index)
        for (height, width), members in groups.items():
            for chunk in _chunks(members, counts, height * width):
                if all(b == a + 1 for a, b in zip(chunk, chunk[1:])):
                    rows = logits[starts[chunk[0]] : starts[chunk[-1] + 1]]
                else:
                    rows = torch.cat([logits[starts[i] : starts[i + 1]] for i in chunk])
                summary = _summarize(rows.float(), (height, width), cut, low, high)
                for i, packed in zip(chunk, _split(summary, [counts[i] for i in chunk])):
                    results[i] = packed
        return results  # type: ignore[return-value]


def _chunks(members: list[int], counts: Sequence[int], pixels: int) -> list[list[int]]:
    """`members` in runs whose upsampled logits (`counts[i] * pixels` each) stay under the limit;
    an image over the limit on its own is a run of one."""
    chunks: list[list[int]] = [[]]
    elements = 0
    for index in members:
        size = counts[index] * pixels
        if chunks[-1] and elements + size > MAX_UPSAMPLED_ELEMENTS:
            chunks.append([])
            elements = 0
        chunks[-1].append(index)
        elements += size
    return chunks


def _summarize(logits: torch.Tensor, size: tuple[int, int], cut: float, low: float, high: float) -> PackedMasks:
    return _summarize_values(upsample_logits(logits, size), cut, low, high)


def _summarize_values(upsampled: torch.Tensor, cut: float, low: float, high: float,
                      probabilities: bool = False) -> PackedMasks:
    """Packed masks, scores and stabilities of `(K, H, W)` upsampled logits, or filtered
    probabilities (`probabilities`), against the cuts `cut`, `low` and `high`."""
    masks = upsampled > cut
    area = masks.sum(dim=(1, 2), dtype=torch.float64)
    # Mean probability inside the mask, summed in float64 as the native kernel does per row.
    probability = upsampled if probabilities else torch.sigmoid(upsampled)
    inside = torch.where(masks, probability, 0.0).sum(dim=(1, 2), dtype=torch.float64)
    score = torch.where(area > 0, inside / area.clamp(min=1), 0.0)
    above_low = (upsampled > low).sum(dim=(1, 2), dtype=torch.float64)
    above_high = (upsampled > high).sum(dim=(1, 2), dtype=torch.float64)
    stability = torch.where(above_low > 0, above_high / above_low.clamp(min=1), 1.0)
    bits = pack_masks(masks).cpu().numpy()
    score, stability = torch.stack([score, stability]).cpu().numpy()  # one copy (and wait) for both
    return PackedMasks(bits=bits, score=score, stability=stability)


def _filter_name(resample: int) -> str:
    try:
        return Image.Resampling(resample).name
    except ValueError:
        return repr(resample)


def _split(summary: PackedMasks, counts: list[int]) -> list[PackedMasks]:
    cuts = np.cumsum(counts)[:-1]
    fields = (summary.bits, summary.score, summary.stability)
    return [PackedMasks(*parts) for parts in zip(*(np.split(field, cuts) for field in fields))]

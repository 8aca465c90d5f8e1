"""`SegmentationResult`: what `FastSegmenter.segment` returns for one image."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import cast

import numpy as np

from . import ops
from .instances import Instance, find_instances
from .ops import rle as coco_rle
from .ops.edges import Edges
from .ops.postprocess import PackedMasks
from .overlays import draw_heatmap, draw_overlay

# Everything a summary needs, computed in one native pass.
_SUMMARY_OUTPUTS = {"rle": True, "area": True, "bbox": True, "score": True, "stability": True}


@dataclass(eq=False)
class SegmentationResult:
    """Masks for K prompts on one image.

    The network's `logits` are kept at the model's resolution (results of prompt expressions and
    session refinements hold theirs at the image's resolution); everything at the image's own
    resolution is computed on first use by the native post-processing kernel
    (`fastclipseg.ops.postprocess`), which upsamples bilinearly (`align_corners=False`, as
    `torch.nn.functional.interpolate`) row by row:

    - `probs`: `K x H x W` float32, the sigmoid of the upsampled logits.
    - `masks`: `K x H x W` bool, `sigmoid(logit) > threshold`, decided on the upsampled logit
      (`logit > log(t / (1 - t))`), so a pixel whose float32 probability rounds to exactly
      the threshold is still classed by its logit.
    - `scores`: K floats in [0, 1], the mean probability inside each mask (0 for an empty mask):
      how sure the model is of the pixels it selected.
    - `stability`: K floats in [0, 1], segment-anything's stability score: the IoU of the masks
      at logit thresholds `logit(t) + d` and `logit(t) - d` (`d = 1.0`, as in
      segment-anything), 1 when both are empty. A mask whose edge sits in a steep logit ramp
      scores near 1; one that grows or shrinks a lot with the threshold scores low.
    - `rle`: K COCO run-length encodings (`{"size": [H, W], "counts": str}`) that
      `pycocotools.mask.decode` reads.
    - `areas` (pixels) and `bboxes` (`[x, y, width, height]`, COCO convention) of the masks.

    `rle`, `scores`, `stability`, `areas`, `bboxes` and `to_dict()` come from one pass that allocates no
    full-size array; reading `masks` first computes them in the same pass (the command line reads
    both), and `probs` is one more pass. `threads`: native threads for those passes (None: all
    cores).

    `packed`: masks, scores and stability already computed on the network's device (the CUDA
    path); then `masks` are unpacked from its bits, and `rle`, `areas` and `bboxes` are built from
    the bits by the native kernel (`rle.packed_summary`); `probs` still comes from the logits.

    `edges` (with the image as `guide`): masks that follow the image's edges, the fast guided
    filter of the probabilities in place of the bilinear upsampling (`fastclipseg.ops.edges`);
    then `probs` are the filtered probabilities q, masks `q > threshold`, scores the mean q over
    each mask, and stability compares `q` with `sigmoid(logit(t) -/+ 1)`.
    """

    prompts: list[str]
    logits: np.ndarray
    image_size: tuple[int, int]
    threshold: float = 0.5
    source: str | None = field(default=None)
    threads: int | None = field(default=None, repr=False)
    packed: PackedMasks | None = field(default=None, repr=False)
    edges: Edges | None = field(default=None, repr=False)
    guide: np.ndarray | None = field(default=None, repr=False)

    def _postprocess(self, **outputs) -> ops.Postprocessed:
        return ops.postprocess(self.logits, self.image_size, self.threshold, threads=self.threads,
                               edges=self.edges, guide=self.guide, **outputs)

    def _from_packed(self, packed: PackedMasks) -> ops.Postprocessed:
        rles, area, bbox = coco_rle.packed_summary(packed.bits, self.image_size[1], threads=self.threads)
        return ops.Postprocessed(rle=rles, area=area, bbox=bbox, score=packed.score, stability=packed.stability)

    @cached_property
    def probs(self) -> np.ndarray:
        return cast(np.ndarray, self._postprocess(masks=False, probs="float32").probs)

    @cached_property
    def masks(self) -> np.ndarray:
        if self.packed is not None:
            width = self.image_size[1]
            return np.unpackbits(self.packed.bits, axis=-1, count=width, bitorder="little").view(bool)
        if "_summary" in self.__dict__:
            return cast(np.ndarray, self._postprocess(masks=True).masks)
        # One upsampling pass for both: the summary costs little on top of the masks.
        both = self._postprocess(masks=True, **_SUMMARY_OUTPUTS)
        self.__dict__["_summary"] = both
        return cast(np.ndarray, both.masks)

    @cached_property
    def _summary(self) -> ops.Postprocessed:
        if self.packed is not None:
            return self._from_packed(self.packed)
        return self._postprocess(masks=False, **_SUMMARY_OUTPUTS)

    @cached_property
    def scores(self) -> np.ndarray:
        return cast(np.ndarray, self._summary.score)

    @cached_property
    def stability(self) -> np.ndarray:
        return cast(np.ndarray, self._summary.stability)

    @cached_property
    def rle(self) -> list[coco_rle.RLE]:
        return cast("list[coco_rle.RLE]", self._summary.rle)

    @cached_property
    def areas(self) -> list[int]:
        return [int(a) for a in cast(np.ndarray, self._summary.area)]

    @cached_property
    def bboxes(self) -> list[list[float]]:
        return [[float(v) for v in box] for box in cast(np.ndarray, self._summary.bbox)]

    def mask_records(self) -> list[dict]:
        """Per prompt: prompt, score, stability, area, bbox and RLE (JSON-ready)."""
        return [
            {
                "prompt": prompt,
                "score": float(score),
                "stability": float(stable),
                "area": area,
                "bbox": [float(v) for v in box],
                "rle": encoded,
            }
            for prompt, score, stable, area, box, encoded in zip(
                self.prompts, self.scores, self.stability, self.areas, self.bboxes, self.rle
            )
        ]

    def instances(self, k: int, *, min_area: int = 0, connectivity: int = 8) -> list[Instance]:
        """The objects in prompt `k`'s mask: its connected components (`connectivity` 4 or 8) of
        at least `min_area` pixels, each with its RLE, COCO bbox, area, score (mean probability)
        and stability, in raster order of their first pixel (`fastclipseg.instances`)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(self.prompts):
            raise ValueError(f"k must be the index of a prompt, 0 .. {len(self.prompts) - 1}, got {k!r}")
        if self.edges is not None:
            # The objects of the edge-aware mask, from the filtered probabilities (`probs`: one pass
            # for every prompt, so listing each prompt's objects filters once).
            return find_instances(self.probs[k], self.threshold, self.prompts[k], int(k), min_area=min_area,
                                  connectivity=connectivity, probabilities=True)
        logits = ops.upsample(self.logits[k:k + 1], self.image_size, threads=self.threads)[0]
        return find_instances(logits, self.threshold, self.prompts[k], int(k), min_area=min_area,
                              connectivity=connectivity)

    def instance_records(self, min_area: int = 0, connectivity: int = 8) -> list[list[dict]]:
        """Per prompt, its instances as JSON-ready records (score, stability, area, bbox, RLE):
        what the command line writes under each mask's "instances"."""
        return [[{key: value for key, value in instance.to_dict().items() if key not in ("prompt", "prompt_index")}
                 for instance in self.instances(k, min_area=min_area, connectivity=connectivity)]
                for k in range(len(self.prompts))]

    def to_coco(self, image_id: int = 1, *, instances: bool = False, min_area: int = 0,
                connectivity: int = 8, category_ids: list[int] | None = None) -> list[dict]:
        """A COCO results list (what `pycocotools.coco.COCO.loadRes` and `COCOeval` read): one
        detection `{image_id, category_id, segmentation, score, bbox, area}` per non-empty mask, or
        with `instances=True` per object of each mask (`instances`, with `min_area` and
        `connectivity`). `category_ids[k]` is prompt k's category (default: k + 1)."""
        if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)):
            raise TypeError(f"image_id must be an int, got {type(image_id).__name__}")
        if category_ids is None:
            category_ids = list(range(1, len(self.prompts) + 1))
        if len(category_ids) != len(self.prompts):
            raise ValueError(f"category_ids has {len(category_ids)} ids for {len(self.prompts)} prompts")
        if instances:
            records = [instance.to_dict() for k in range(len(self.prompts))
                       for instance in self.instances(k, min_area=min_area, connectivity=connectivity)]
        else:
            records = [{**record, "prompt_index": k} for k, record in enumerate(self.mask_records())]
        return coco_detections(records, int(image_id), category_ids)

    def to_dict(self) -> dict:
        """JSON-ready summary: image size and, per prompt, score, stability, area, bbox and RLE."""
        height, width = self.image_size
        return {"image": self.source, "height": height, "width": width, "threshold": self.threshold,
                "masks": self.mask_records()}

    def to_json(self, **kwargs) -> str:
        """`to_dict()` as a JSON string; keyword arguments go to `json.dumps`."""
        return json.dumps(self.to_dict(), **kwargs)

    def overlay(self, image: np.ndarray | None = None, **options) -> np.ndarray:
        """The masks over `image` (`H x W x 3` uint8; a stream's frame by default): a colour per
        prompt, contours and a legend of prompts and scores (`fastclipseg.overlays.draw_overlay`,
        whose keyword options `options` are)."""
        return draw_overlay(self._image(image), self.masks, labels=self.prompts, scores=list(self.scores), **options)

    def heatmap(self, image: np.ndarray | None = None, **options) -> np.ndarray:
        """The probabilities (the pixelwise maximum over prompts) as a heat-map over `image`
        (`fastclipseg.overlays.draw_heatmap`, whose keyword options `options` are)."""
        label = self.prompts[0] if len(self.prompts) == 1 else None
        return draw_heatmap(self._image(image), self.probs, label=label, **options)

    def _image(self, image: np.ndarray | None) -> np.ndarray:
        image = getattr(self, "image", None) if image is None else image
        if image is None:
            raise ValueError("pass the image the result was computed on: this result does not hold it")
        return np.asarray(image)


def record_detections(record: dict, image_id: int, instances: bool = False) -> list[dict]:
    """COCO detections of one record the command line writes (`<stem>.json`, a `masks.jsonl`
    line): one per non-empty mask, or with `instances` one per object listed under each mask's
    "instances"; `category_id` is the prompt's position, from 1."""
    records = [{**item, "prompt_index": k} for k, mask in enumerate(record["masks"])
               for item in (mask["instances"] if instances else [mask])]
    return coco_detections(records, image_id, list(range(1, len(record["masks"]) + 1)))


def coco_detections(records: list[dict], image_id: int, category_ids: list[int]) -> list[dict]:
    """COCO detections of mask or instance records (with "prompt_index", "rle", "score", "bbox",
    "area"); empty ones are left out."""
    return [{"image_id": image_id, "category_id": int(category_ids[record["prompt_index"]]),
             "segmentation": record["rle"], "score": record["score"], "bbox": record["bbox"],
             "area": float(record["area"])}
            for record in records if record["area"] > 0]


@dataclass(eq=False)
class FrameResult(SegmentationResult):
    """A `SegmentationResult` from a stream: `index` is the frame number in the video (or the
    position in the image stream), `timestamp` its time in seconds (videos only), `image` the
    RGB frame that was segmented, `key` its identity across runs (see `fastclipseg.streams.sources`)."""

    index: int = 0
    timestamp: float | None = None
    key: str = field(default="", repr=False)
    image: np.ndarray | None = field(default=None, repr=False)
    ok = True
    error = None

    def to_dict(self) -> dict:
        """JSON-ready: frame, timestamp, image, size, threshold and the per-prompt records."""
        return {"frame": self.index, "timestamp": self.timestamp, **super().to_dict()}


@dataclass(eq=False)
class FrameError:
    """A stream item that failed (a frame that did not decode, an image that could not be read),
    reported in stream order in place of its result; `error` says why."""

    index: int
    error: str
    timestamp: float | None = None
    source: str | None = None
    key: str = ""
    ok = False

    def to_dict(self) -> dict:
        return {"frame": self.index, "timestamp": self.timestamp, "image": self.source, "error": self.error}

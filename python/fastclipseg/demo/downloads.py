"""What the demo page shows and downloads, made in memory from a session's current result: the
overlay and heat-map pictures, the masks as a zip of PNGs, the RLE JSON and a COCO results file.

Nothing here touches the disk: the demo writes no file anywhere (see `fastclipseg.demo.app`).
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from ..overlays import colour, draw_heatmap, draw_overlay
from ..results import SegmentationResult
from ..streams.writers import png_bytes, slug


def overlay_png(image: np.ndarray, result: SegmentationResult | None) -> bytes:
    """The masks tinted over the image with contours and a legend (the plain image before any prompt)."""
    if result is None:
        return png_bytes(image)
    return png_bytes(draw_overlay(image, result.masks, labels=result.prompts, scores=list(result.scores)))


def heatmap_png(image: np.ndarray, result: SegmentationResult) -> bytes:
    """The probability map (the pixelwise maximum over the masks) over the image."""
    return png_bytes(draw_heatmap(image, result.probs))


def masks_zip(result: SegmentationResult, stem: str) -> bytes:
    """One 8-bit PNG per mask (255 inside), named `<stem>_<k>_<prompt>.png` as `fastclipseg segment`
    names them."""
    buffer = io.BytesIO()
    # PNGs are already compressed: storing them is as small and much faster.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for k, (prompt, mask) in enumerate(zip(result.prompts, result.masks)):
            archive.writestr(f"{stem}_{k}_{slug(prompt)}.png", png_bytes(mask.astype(np.uint8) * 255))
    return buffer.getvalue()


def result_json(result: SegmentationResult, name: str) -> bytes:
    """`SegmentationResult.to_dict()` (image size; per mask: prompt, score, stability, area, bbox,
    COCO RLE), with the image's file name as "image"."""
    record = result.to_dict()
    record["image"] = name
    return json.dumps(record, indent=1).encode("utf-8")


def coco_json(result: SegmentationResult, image_id: int = 1) -> bytes:
    """`SegmentationResult.to_coco`: one detection per non-empty mask, whose `category_id` is its
    prompt's position in the result, counted from 1."""
    return json.dumps(result.to_coco(image_id)).encode("utf-8")


def legend(result: SegmentationResult) -> list[dict]:
    """Per mask, what the page's legend lists: prompt, score, stability, area, bbox and the colour
    the overlay gives it (`#rrggbb`)."""
    return [
        {"prompt": record["prompt"], "score": record["score"], "stability": record["stability"],
         "area": record["area"], "bbox": record["bbox"], "colour": "#%02x%02x%02x" % colour(k)}
        for k, record in enumerate(result.mask_records())
    ]

"""Writing outputs safely: every file is written under a temporary name, then renamed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..overlays import draw_heatmap, draw_overlay


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent/old or complete, never half-written."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a prompt."""
    value = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return value[:limit].rstrip("-") or "prompt"


def unique_stems(paths: list) -> dict[str, str]:
    """A distinct file stem for each path (same-named files in different folders get -2, -3, ...),
    decided from the whole list, so that a resumed run names files as the first one did."""
    used: set[str] = set()
    names: dict[str, str] = {}
    for path in map(str, paths):
        stem, n = _short_stem(Path(path).stem), 2
        candidate = stem
        while candidate in used:
            candidate = f"{stem}-{n}"
            n += 1
        used.add(candidate)
        names[path] = candidate
    return names


# Output names add "_<k>_<prompt>.png" or "_overlay.png" to the stem; file systems allow 255 bytes.
MAX_STEM_BYTES = 100


def _short_stem(stem: str) -> str:
    """`stem`, or for a very long one its first bytes and a hash of the whole (still distinct)."""
    if len(stem.encode("utf-8")) <= MAX_STEM_BYTES:
        return stem
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    head = stem.encode("utf-8")[: MAX_STEM_BYTES - 13].decode("utf-8", "ignore")
    return f"{head}-{digest}"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_json(path: Path, payload: object) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=1) + "\n").encode("utf-8"))


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    """A bool mask as an 8-bit PNG, 255 inside the mask."""
    atomic_write_bytes(path, png_bytes(mask.astype(np.uint8) * 255))


def write_mask_pngs(root: Path, prefix: str, records: list[dict], masks: np.ndarray) -> None:
    """One PNG per mask, at `root / f"{prefix}_{k}_{slug(prompt)}.png"`; each of the per-prompt
    `records` gets that path, relative to `root`, as "mask_png"."""
    for k, (record, mask) in enumerate(zip(records, masks)):
        record["mask_png"] = f"{prefix}_{k}_{slug(record['prompt'])}.png"
        write_mask_png(root / record["mask_png"], mask)


def write_overlay_png(path: Path, image: np.ndarray, masks: np.ndarray, records: list[dict]) -> None:
    """The masks drawn over the image (`fastclipseg.overlays.draw_overlay`: a colour per prompt,
    contours, a legend of each record's prompt and score) as a PNG."""
    labels = [record["prompt"] for record in records]
    scores = [record["score"] for record in records]
    atomic_write_bytes(path, png_bytes(draw_overlay(image, masks, labels=labels, scores=scores)))


def write_heatmap_png(path: Path, image: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> None:
    """The probability map (the pixelwise maximum over prompts) as a heat-map over the image, as a PNG."""
    label = labels[0] if len(labels) == 1 else None
    atomic_write_bytes(path, png_bytes(draw_heatmap(image, probabilities, label=label)))

"""fastclipseg: fast, dependable text-prompted image segmentation with CLIPSeg."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names, imported on first use so that `fastclipseg --help` does not load transformers.
_EXPORTS = {
    "FastSegmenter": ".segmenter",
    "SegmentationResult": ".results",
    "FrameResult": ".results",
    "FrameError": ".results",
    "FrameStream": ".pipeline",
    "ModelUnavailableError": ".model.loading",
    "ModelLoadError": ".model.files",
    "ArtifactError": ".engines.artifacts",
    "DEFAULT_MODEL": ".model",
    "load_image": ".imaging",
}

if TYPE_CHECKING:
    from .imaging import load_image
    from .model import DEFAULT_MODEL
    from .engines.artifacts import ArtifactError
    from .model.files import ModelLoadError
    from .model.loading import ModelUnavailableError
    from .pipeline import FrameStream
    from .results import FrameError, FrameResult, SegmentationResult
    from .segmenter import FastSegmenter


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'fastclipseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEFAULT_MODEL", "ArtifactError", "FastSegmenter", "FrameError", "FrameResult", "FrameStream", "ModelLoadError",
    "ModelUnavailableError",
    "SegmentationResult", "__version__", "load_image",
]

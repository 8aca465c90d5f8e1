"""fastclipseg: fast, dependable text-prompted image segmentation with CLIPSeg."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._moved import install as _install_moved_modules

__version__ = "0.1.0"

# Public names, imported on first use so that `fastclipseg --help` does not load transformers.
_EXPORTS = {
    "FastSegmenter": ".segmenter",
    "InferenceCore": ".core",
    "Session": ".session",
    "SegmentationResult": ".results",
    "FrameResult": ".results",
    "FrameError": ".results",
    "FrameStream": ".streams",
    "ImagePrompt": ".prompts",
    "ModelUnavailableError": ".model.loading",
    "ModelLoadError": ".model.files",
    "ArtifactError": ".engines",
    "DEFAULT_MODEL": ".model",
    "load_image": ".ops.validation",
    "Edges": ".ops.edges",
    "cmake_dir": ".native_package",
}

if TYPE_CHECKING:
    from .core import InferenceCore
    from .engines import ArtifactError
    from .model import DEFAULT_MODEL
    from .model.files import ModelLoadError
    from .model.loading import ModelUnavailableError
    from .native_package import cmake_dir
    from .ops.validation import load_image
    from .prompts import ImagePrompt
    from .results import FrameError, FrameResult, SegmentationResult
    from .segmenter import FastSegmenter
    from .session import Session
    from .streams import FrameStream

# Modules that moved when the package was regrouped (issue 15) still import, with a warning.
_install_moved_modules()


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'fastclipseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEFAULT_MODEL", "ArtifactError", "Edges", "FastSegmenter", "FrameError", "FrameResult", "FrameStream",
    "ImagePrompt",
    "InferenceCore", "ModelLoadError", "ModelUnavailableError", "SegmentationResult", "Session", "__version__",
    "cmake_dir", "load_image",
]

"""Many images through one segmenter: sources (videos, frames, image collections as items), the
threaded pipeline (`FrameStream`), temporal smoothing, resumable run folders, safe writers, the
command line's `video` and `batch` jobs, and int8 calibration sets."""

from __future__ import annotations

from .builders import image_stream, video_stream
from .pipeline import FrameStream, StageTimes

__all__ = ["FrameStream", "StageTimes", "image_stream", "video_stream"]

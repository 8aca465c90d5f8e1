"""Streams from what a caller has: an iterable of images, a video file, an iterable of frames.

`image_stream` and `video_stream` check their arguments (at once, in the caller's thread), turn
the source into items (`sources`), and start a `FrameStream` on an inference core;
`FastSegmenter.segment_stream` and `segment_video` are these two.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence

import numpy as np

from ..core import InferenceCore
from ..ops.edges import as_edges
from ..ops.validation import check_batch_size, check_threshold, normalize_prompts
from ..prompts.resolve import looks_like_expression
from .pipeline import FrameStream
from .smoothing import LogitSmoother, check_smoothing
from .sources import (
    Item,
    check_every,
    check_time_range,
    frame_items,
    image_items,
    open_video,
    video_items,
)


def image_stream(core: InferenceCore, images: Iterable[object], prompts: str | Sequence[str], *, threshold: float,
                 batch_size: int | None, smooth: float | None, skip: Collection[str],
                 edges: object = None) -> FrameStream:
    """A `FrameStream` over any iterable of images: `FastSegmenter.segment_stream`, which documents
    the arguments and gives their defaults."""
    items = image_items(images, skip=skip, max_pixels=core.max_image_pixels)
    return _stream(core, items, prompts, threshold=threshold, batch_size=batch_size, smooth=smooth, edges=edges)


def video_stream(core: InferenceCore, source: str | os.PathLike | Iterable[object], prompts: str | Sequence[str], *,
                 threshold: float, batch_size: int | None, every_n: int, start: float | None, end: float | None,
                 smooth: float | None, skip: Collection[str], smooth_state: np.ndarray | None,
                 edges: object = None) -> FrameStream:
    """A `FrameStream` over a video file or an iterable of frames: `FastSegmenter.segment_video`,
    which documents the arguments and gives their defaults."""
    check_every(every_n)
    check_time_range(start, end)
    if isinstance(source, (str, os.PathLike)):
        # Open the file now, so that a missing or unreadable video raises here, not in a thread.
        open_video(source).close()
        items = video_items(source, every_n=every_n, start=start, end=end, skip=skip, max_pixels=core.max_image_pixels)
    else:
        if start is not None or end is not None:
            raise ValueError("start and end need a video file (frames from an iterable have no timestamps)")
        items = frame_items(source, every_n=every_n, skip=skip, max_pixels=core.max_image_pixels)
    return _stream(core, items, prompts, threshold=threshold, batch_size=batch_size, smooth=smooth,
                   smooth_state=smooth_state, edges=edges)


def _stream(core: InferenceCore, items: Iterable[Item], prompts: str | Sequence[str], *, threshold: float,
            batch_size: int | None, smooth: float | None, smooth_state: np.ndarray | None = None,
            edges: object = None) -> FrameStream:
    threshold = check_threshold(threshold)
    edge_options = as_edges(edges)
    prompt_list = normalize_prompts(prompts)
    expressions = [p for p in prompt_list if looks_like_expression(p)]
    if expressions:
        raise ValueError(f"streams take text prompts; {expressions[0]!r} is a prompt expression (AND, OR, NOT, "
                         "{...}): use segment() or a session for expressions")
    batch_size = core.batch_size if batch_size is None else check_batch_size(batch_size, none_means="the segmenter's")
    weight = check_smoothing(smooth)
    smoother = LogitSmoother(weight) if weight is not None else None
    if smooth_state is not None:
        if smoother is None:
            raise ValueError("smooth_state needs smooth= (it is the state of the moving average)")
        smoother.restore(smooth_state)
    return FrameStream(core, iter(items), prompt_list, threshold=threshold, batch_size=batch_size, smoother=smoother,
                       edges=edge_options)


__all__ = ["image_stream", "video_stream"]

"""Streaming sources: what a video or a collection of images yields, one `Item` at a time.

Every source is a generator of `Item`s in a fixed, reproducible order, so that a run can be
resumed by skipping the keys it has already written (`skip=`). An item is either a frame to
segment (`load` set, run by the pipeline's decode thread) or a failure to report
(`error` set): a frame that did not decode, a file that is not an image.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .imaging import DEFAULT_MAX_PIXELS, describe, load_image


@dataclass
class Item:
    """One unit of a stream, in stream order.

    `key` identifies it across runs (`"frame:12"`, `"packet:40"`, or an image path); `index` is
    the frame number in the video (counted from its first decoded frame) or the position in the
    image collection; `timestamp` is in seconds (videos only). `load` returns the RGB frame
    (run in the decode thread); `error` is set instead for an item that failed.
    """

    key: str
    index: int
    timestamp: float | None = None
    source: str | None = None
    load: Callable[[], np.ndarray] | None = None
    error: str | None = None


# -- videos -----------------------------------------------------------------------------------


def import_av():
    try:
        import av
    except ImportError as error:
        raise ImportError("reading video needs PyAV: pip install 'fastclipseg[video]' (or pip install av)") from error
    return av


def check_time_range(start: float | None, end: float | None) -> tuple[float, float]:
    """Validated `[start, end)` in seconds; None means the video's start / end."""
    low = 0.0 if start is None else float(start)
    high = math.inf if end is None else float(end)
    if math.isnan(low) or low < 0:
        raise ValueError(f"start must be a time in seconds >= 0, got {start!r}")
    if math.isnan(high) or high <= low:
        raise ValueError(f"end must be a time in seconds after start ({low}), got {end!r}")
    return low, high


def check_every(every: int) -> int:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every_n must be an int >= 1 (1 keeps every frame), got {every!r}")
    return every


def open_video(path: str | os.PathLike):
    """Open `path` (a file or a URL FFmpeg reads) with PyAV; clear errors for missing or unreadable input."""
    av = import_av()
    name = str(path)
    if "://" not in name:
        local = Path(name)
        if not local.exists():
            raise FileNotFoundError(f"video file not found: {name}")
        if local.is_dir():
            raise ValueError(f"{name}: is a directory, not a video file")
    try:
        container = av.open(name)
    except av.error.FFmpegError as error:
        raise ValueError(f"{name}: not a readable video ({error})") from error
    if not container.streams.video:
        container.close()
        raise ValueError(f"{name}: has no video stream")
    return container


def video_info(path: str | os.PathLike) -> dict:
    """Frame count (0 when the container does not say), frame rate, size and duration of a video."""
    with open_video(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else None
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if duration is None and container.duration:
            duration = container.duration / 1_000_000
        return {"frames": int(stream.frames or 0), "fps": rate, "width": stream.codec_context.width,
                "height": stream.codec_context.height, "duration": duration}


def video_items(
    path: str | os.PathLike,
    *,
    every_n: int = 1,
    start: float | None = None,
    end: float | None = None,
    skip: Collection[str] = (),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Item]:
    """The frames of a video as items: decoded in order, every `every_n`-th frame in `[start, end)`.

    Frame numbers count every decoded frame from the start, so they are the same in every run
    (the video is decoded from its beginning rather than seeked, which would make them depend on
    keyframes). A packet that fails to decode becomes an error item (key `packet:N`) and decoding
    goes on. Keys in `skip` are decoded but not converted. Raises for a missing or unreadable file
    before yielding anything, and `ValueError` at the end when no frame decoded at all.
    """
    every_n = check_every(every_n)
    low, high = check_time_range(start, end)
    av = import_av()
    name = str(path)
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's own frame threads
        decoded = 0
        selected = 0
        packets = 0
        failures = 0
        demuxer = container.demux(stream)
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                # The container itself is unreadable from here on: report it and end the video.
                key = f"packet:{packets}"
                if key not in skip:
                    yield Item(key=key, index=decoded, source=name,
                               error=f"{name}: reading stopped after frame {decoded - 1} ({error})")
                break
            packets += 1
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                failures += 1
                key = f"packet:{packets - 1}"
                if key not in skip:
                    when = float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else None
                    yield Item(key=key, index=decoded, timestamp=when, source=name,
                               error=f"{name}: a packet near frame {decoded} failed to decode ({error}); skipped")
                continue
            for frame in frames:
                index = decoded
                decoded += 1
                timestamp = float(frame.time) if frame.time is not None else None
                moment = timestamp if timestamp is not None else 0.0
                if moment < low:
                    continue
                if moment >= high:
                    return
                selected += 1
                if (selected - 1) % every_n:
                    continue
                key = f"frame:{index}"
                if key in skip:
                    continue
                width, height = frame.width, frame.height
                if width * height > max_pixels:
                    yield Item(key=key, index=index, timestamp=timestamp, source=name,
                               error=f"{name}: frame {index} has {width}x{height} pixels, above the limit of {max_pixels}")
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                yield Item(key=key, index=index, timestamp=timestamp, source=name, load=lambda rgb=rgb: rgb)
        if decoded == 0:
            reason = f" ({failures} of {packets} packets failed to decode)" if failures else ""
            raise ValueError(f"{name}: contains no decodable video frames{reason}")
    finally:
        container.close()


# -- images -----------------------------------------------------------------------------------


def image_items(images: Iterable[object], *, skip: Collection[str] = (), max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Item]:
    """Images (paths, PIL images, arrays), in order; paths are read in the pipeline's decode thread.

    A path's key is the path; any other image's key is its position. An image that fails to load
    becomes an error item when the pipeline reaches it.
    """
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        raise TypeError(f"images must be an iterable of images, got {describe(images)}; for one image use segment()")
    for index, image in enumerate(images):
        is_path = isinstance(image, (str, os.PathLike))
        key = str(image) if is_path else f"image:{index}"
        if key in skip:
            continue
        yield Item(key=key, index=index, source=str(image) if is_path else None,
                   load=lambda image=image: load_image(image, max_pixels))


def frame_items(frames: Iterable[object], *, every_n: int = 1, skip: Collection[str] = (),
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Item]:
    """An iterable of frames (arrays, PIL images or paths), numbered from 0, every `every_n`-th kept."""
    every_n = check_every(every_n)
    if isinstance(frames, (str, os.PathLike, np.ndarray)):
        raise TypeError(f"frames must be an iterable of images, got {describe(frames)}")
    for index, frame in enumerate(frames):
        if index % every_n:
            continue
        key = f"frame:{index}"
        if key in skip:
            continue
        yield Item(key=key, index=index, source=str(frame) if isinstance(frame, (str, os.PathLike)) else None,
                   load=lambda frame=frame: load_image(frame, max_pixels))


# -- collections of image files for `fastclipseg batch` ------------------------------------------


def image_extensions() -> set[str]:
    """File extensions Pillow can open (lower case, with the dot)."""
    from PIL import Image

    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


@dataclass
class Collected:
    """The image files named by some inputs, in order, and the files skipped as not images."""

    images: list[str]
    skipped: list[str]


def collect_image_paths(inputs: Iterable[str | os.PathLike]) -> Collected:
    """Expand folders (recursively, sorted), glob patterns (sorted) and `.txt` lists (one path per
    line; blank lines and `#` comments ignored) into image paths, without duplicates.

    Files inside folders or matched by a glob are kept when Pillow knows their extension; the
    others are returned as `skipped`. A file named directly is always kept (it fails later, with
    its reason, if it is not an image). A named path that does not exist, or a glob or list that
    matches nothing, raises `FileNotFoundError`.
    """
    extensions = image_extensions()
    images: list[str] = []
    skipped: list[str] = []
    seen: set[str] = set()

    def add(path: str, named: bool) -> None:
        if path in seen:
            return
        seen.add(path)
        if named or Path(path).suffix.lower() in extensions:
            images.append(path)
        else:
            skipped.append(path)

    for raw in inputs:
        text = str(raw)
        path = Path(text)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                add(str(child), named=False)
        elif path.suffix.lower() == ".txt" and path.is_file():
            listed = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            listed = [line for line in listed if line and not line.startswith("#")]
            if not listed:
                raise FileNotFoundError(f"{text}: the list of images is empty")
            for line in listed:
                add(line, named=True)
        elif path.exists():
            add(text, named=True)
        elif glob.has_magic(text):
            matches = sorted(m for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(f"no files match {text!r}")
            for match in matches:
                add(match, named=False)
        else:
            raise FileNotFoundError(f"input not found: {text}")
    return Collected(images=images, skipped=skipped)

"""Streaming sources: what a video or a collection of images yields, one `Item` at a time.

Every source is a generator of `Item`s in a fixed, reproducible order, so that a run can be
resumed by skipping the keys it has already written (`skip=`). An item is either a frame to
segment (`load` set, run by the pipeline's decode thread) or a failure to report
(`error` set): a frame that did not decode, a file that is not an image.
"""

from __future__ import annotations

import glob
import math
import numbers
import os
import stat
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..ops.validation import DEFAULT_MAX_PIXELS, describe, load_image


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
    low = 0.0 if start is None else _seconds("start", start)
    high = math.inf if end is None else _seconds("end", end)
    if math.isnan(low) or low < 0 or math.isinf(low):
        raise ValueError(f"start must be a finite time in seconds >= 0, got {start!r}")
    if math.isnan(high) or high <= low:
        raise ValueError(f"end must be a time in seconds after start ({low}), got {end!r}")
    return low, high


def _seconds(name: str, value: object) -> float:
    # A bool or a string is a caller's mistake, not a time (float("1") would accept the string).
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a time in seconds (a number), got {value!r}")
    return float(value)


def check_every(every: int) -> int:
    if isinstance(every, bool) or not isinstance(every, numbers.Integral):
        raise TypeError(f"every_n must be an int >= 1 (1 keeps every frame), got {every!r}")
    if every < 1:
        raise ValueError(f"every_n must be an int >= 1 (1 keeps every frame), got {every!r}")
    return int(every)


def open_video(path: str | os.PathLike):
    """Open `path` (a file or a URL FFmpeg reads) with PyAV; clear errors for missing or unreadable input."""
    av = import_av()
    name = str(path)
    if "://" not in name:
        local = Path(name)
        if _is_capture_device(local):
            raise ValueError(
                f"{name}: capture devices (cameras) are not supported yet; record a clip first (e.g. `ffmpeg -f v4l2 "
                f"-i {name} -t 10 clip.mp4`), or pass segment_video an iterable of frames from your own capture loop")
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


def _is_capture_device(path: Path) -> bool:
    """/dev/video0 and the like, present or not, and any other character device."""
    if str(path).startswith("/dev/video"):
        return True
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False


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


@dataclass
class Decoded:
    """One step of `decode_video`: a frame (`frame` set) numbered `index`, or a failure (`error`
    set, `key` names it across runs, `index` is the number the next frame will get)."""

    index: int
    frame: object | None = None
    key: str | None = None
    timestamp: float | None = None
    error: str | None = None


def decode_video(container, stream, name: str) -> Iterator[Decoded]:
    """Decode `stream` of an open `container` from its start: every frame that decodes, in
    order, numbered from 0, and a failure for every piece of the video that did not.

    Failures (keys stable across runs): `packet:N` for the N-th packet when it failed to decode,
    came out of the file damaged or cut short (its frames, if any decode, still come), or could
    not be read (reading stops there); `drain` when the frames held in the decoder at the end
    failed; `packet:N-M` when the container's index lists packets N..M that the file does not
    hold (an MP4 cut short). `video_items` and the overlay renderer both decode with this, so
    they number frames the same way.
    """
    av = import_av()
    # One thread: FFmpeg's frame threads hand a failure back one call late, and PyAV drops it when
    # that call also returned frames; on the final drain the frames behind it are lost too. Slice
    # threads turn H.264's error concealment off, so damaged frames would differ from a plain
    # decode. Most videos have one slice per frame, where slice threads gain nothing anyway.
    stream.thread_type = "SLICE"
    stream.thread_count = 1
    decoder = stream.codec_context
    decoded = 0
    packets = 0
    demuxer = container.demux(stream)
    while True:
        try:
            packet = next(demuxer)
        except StopIteration:
            break
        except av.error.FFmpegError as error:
            # The container is unreadable from here on: the frames the decoder holds still come
            # (B-frame reordering keeps a few), then the failure.
            for frame in _drain(decoder, stream, av):
                yield Decoded(index=decoded, frame=frame)
                decoded += 1
            where = f"after frame {decoded - 1}" if decoded else "before the first frame"
            yield Decoded(index=decoded, key=f"packet:{packets}", error=f"{name}: reading stopped {where} ({error})")
            return
        # PyAV ends the demuxing with an empty packet that drains the decoder.
        final = packet.size == 0 and packet.pts is None and packet.dts is None
        key = "drain" if final else f"packet:{packets}"
        if not final:
            packets += 1
        try:
            frames = packet.decode()
            failure = None
        except av.error.FFmpegError as error:
            frames, failure = [], f"failed to decode ({error})"
        if getattr(packet, "is_corrupt", False):
            failure = "is damaged or cut short in the file" + (
                f" and {failure}" if failure else " (frames decoded from it may show the damage)")
        if failure is not None:
            when = float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else None
            what = "the frames held in the decoder at the end" if final else f"packet {packets - 1}"
            at = f" at {when:.3f} s" if when is not None else ""
            yield Decoded(index=decoded, key=key, timestamp=when,
                          error=f"{name}: {what}{at} (near frame {decoded}) {failure}")
        for frame in frames:
            yield Decoded(index=decoded, frame=frame)
            decoded += 1
    listed = _listed_packets(container, stream)
    if packets < listed:
        yield Decoded(index=decoded, key=f"packet:{packets}-{listed - 1}",
                      error=f"{name}: the file ends early: its index lists {listed} video packets, the file holds "
                            f"only {packets} (packets {packets}..{listed - 1} are missing: a truncated file?)")


def _drain(decoder, stream, av) -> list:
    """The frames a decoder still holds once no packet will come, with their timestamps."""
    try:
        frames = decoder.decode(None)
    except av.error.FFmpegError:
        return []
    for frame in frames:
        frame.time_base = stream.time_base  # a drain without a packet leaves it unset
    return frames


def _listed_packets(container, stream) -> int:
    """How many packets the container's index lists for `stream`, where that is every packet of
    the file (MP4/MOV index every sample); 0 where unknown."""
    format_name = getattr(getattr(container, "format", None), "name", "") or ""
    if "mp4" not in format_name.split(","):
        return 0
    entries = getattr(stream, "index_entries", None)  # PyAV >= 15
    return len(entries) if entries is not None else 0


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
    keyframes). Every failure `decode_video` finds becomes an error item and decoding goes on.
    Keys in `skip` are decoded but not converted. Raises for a missing or unreadable file before
    yielding anything, and `ValueError` at the end when no frame decoded at all, or none lay in
    `[start, end)`.
    """
    every_n = check_every(every_n)
    low, high = check_time_range(start, end)
    name = str(path)
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        decoded = 0
        failures = 0
        selected = 0
        last_time = None
        past_range = False
        for step in decode_video(container, stream, name):
            if step.error is not None:
                failures += 1
                if step.key not in skip:
                    yield Item(key=step.key, index=step.index, timestamp=step.timestamp, source=name, error=step.error)
                continue
            frame = step.frame
            index = step.index
            decoded += 1
            timestamp = float(frame.time) if frame.time is not None else None
            moment = timestamp if timestamp is not None else 0.0
            last_time = moment
            if moment < low:
                continue
            if moment >= high:
                past_range = True
                break  # stop decoding: the rest of the video is past the range
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
            reason = f" ({failures} parts of it failed, reported as errors)" if failures else ""
            raise ValueError(f"{name}: contains no decodable video frames{reason}")
        if selected == 0:
            where = "the next frame is" if past_range else "its last frame is"
            raise ValueError(f"{name}: no frame in the time range start={start!r}, end={end!r} "
                             f"({where} at {last_time:.3f} s)")
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

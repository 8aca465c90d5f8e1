"""The loops behind `fastclipseg video` and `fastclipseg batch`: stream, write, report, resume.

`cli.py` parses options and loads the model; these functions run a `FrameStream` into a
`RunFolder`, with a progress bar, per-item error lines and a stop between items on Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..ops import rle
from ..overlays import draw_overlay
from ..results import FrameError, FrameResult
from . import writers as outputs
from .pipeline import FrameStream, StageTimes
from .runs import RunFolder, read_complete_lines, stop_between_items
from .sources import decode_video, open_video, video_info
from .writers import unique_stems


@dataclass
class RunSummary:
    """What a run did in this session: items written and failed, and where the time went."""

    written: int = 0
    failed: int = 0
    times: StageTimes | None = None
    write_seconds: float = 0.0
    postprocess_seconds: float = 0.0

    def breakdown(self) -> dict:
        """Where the time went: seconds per stage (threads overlap, so they can sum past wall)."""
        times = self.times.as_dict() if self.times is not None else {}
        return {**times, "postprocess": round(self.postprocess_seconds, 4), "write": round(self.write_seconds, 4)}


def _consume(stream: FrameStream, run: RunFolder, handle: Callable[[FrameResult], dict], progress: tqdm,
             summary: RunSummary, save_state: bool) -> None:
    """Write each result of `stream` to `run`, stopping cleanly between items on a signal.

    `summary` is counted as items are written, so it stays true when `Interrupted` (or an error)
    leaves this function early; its stage times are filled in either way."""
    try:
        _consume_items(stream, run, handle, progress, summary, save_state)
    finally:
        summary.times = stream.times


def _consume_items(stream: FrameStream, run: RunFolder, handle: Callable[[FrameResult], dict], progress: tqdm,
                   summary: RunSummary, save_state: bool) -> None:
    with stop_between_items() as check, stream:
        for item in stream:
            if isinstance(item, FrameError):
                run.write_error({"key": item.key, **item.to_dict()})
                summary.failed += 1
                tqdm.write(f"error: {item.error}", file=sys.stderr)
            else:
                started = time.perf_counter()
                record = handle(item)
                summary.postprocess_seconds += time.perf_counter() - started
                started = time.perf_counter()
                run.write(record)
                if save_state:
                    run.save_state(item.index, item.logits)
                summary.write_seconds += time.perf_counter() - started
                summary.written += 1
            progress.update(1)
            check()


def _progress(total: int | None, unit: str, done: int) -> tqdm:
    return tqdm(total=total, initial=done, unit=unit, desc="segmenting", dynamic_ncols=True,
                disable=None, file=sys.stderr, smoothing=0.1)


# -- video ----------------------------------------------------------------------------------------


def run_video(segmenter, video: str, prompts: list[str], run: RunFolder, *, threshold: float, batch_size: int | None,
              every_n: int, start: float | None, end: float | None, smooth: float | None, png: bool,
              info: dict | None = None, summary: RunSummary | None = None, min_area: int | None = None,
              edges=None) -> RunSummary:
    """Segment `video` into `run` (masks.jsonl, errors.jsonl, PNG masks with `png`). `info`: the
    video's `sources.video_info`, when the caller has it already. `summary`: filled as frames are
    written (pass one to keep the counts when the run is interrupted); a new one by default.
    `min_area`: list each mask's objects of at least that many pixels (None: no objects).
    `edges`: masks that follow the frames' edges (`fastclipseg.ops.edges.Edges`; None: bilinear)."""

    info = video_info(video) if info is None else info
    total = None
    if info["frames"]:
        total = -(-info["frames"] // every_n)  # ceil: frames in range are not known before decoding
    summary = RunSummary() if summary is None else summary
    png_folder = run.folder / "png"
    if png:
        png_folder.mkdir(exist_ok=True)

    def handle(result: FrameResult) -> dict:
        # Masks first: on the CPU path the summary then comes from the same native pass.
        masks = result.masks if png else None
        record = {"frame": result.index, "timestamp": result.timestamp, "width": result.image_size[1],
                  "height": result.image_size[0], "masks": result.mask_records()}
        _add_instances(record, result, min_area)
        if png:
            outputs.write_mask_pngs(run.folder, f"png/frame{result.index:06d}", record["masks"], masks)
        return record

    stream = segmenter.segment_video(video, prompts, threshold=threshold, batch_size=batch_size, every_n=every_n,
                                     start=start, end=end, smooth=smooth, skip=frozenset(run.done),
                                     smooth_state=run.smooth_state, edges=edges)
    with _progress(total if start is None and end is None else None, "frame", len(run.done)) as progress:
        _consume(stream, run, handle, progress, summary, save_state=smooth is not None)
    return summary


def _add_instances(record: dict, result: FrameResult, min_area: int | None) -> None:
    """Each mask record's objects under "instances", when asked for (`min_area` not None)."""
    if min_area is not None:
        for mask_record, objects in zip(record["masks"], result.instance_records(min_area)):
            mask_record["instances"] = objects


def render_overlay_video(video: str, masks_jsonl: Path, out: Path, *, every_n: int = 1) -> int:
    """Draw the masks of `masks_jsonl` over the frames of `video` into `out` (an MP4 written under a
    temporary name, then renamed). Frames without a record (skipped by `--every`, outside the time
    range) show the latest masks before them, so the overlay plays at the video's own speed; frames
    before the first record are left out. Returns the number of frames written.
    """
    import av


    records = {r["frame"]: r for r in read_complete_lines(masks_jsonl)}
    if not records:
        return 0
    last_frame = max(records) + every_n - 1  # the last record's masks hold until the next would be due
    temporary = out.with_name(f".{out.name}.tmp{out.suffix}")
    written = 0
    try:
        with open_video(video) as source, av.open(str(temporary), "w") as sink:
            stream_in = source.streams.video[0]
            rate = stream_in.average_rate or 25
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream_out = None
            masks = shown = None
            for index, frame in _numbered_frames(source, stream_in):
                if index > last_frame:
                    break  # stop decoding: a run with --end need not read the rest of the video
                record = records.get(index)
                if record is not None:
                    masks, shown = _frame_masks(record, frame.height, frame.width, masks_jsonl), record
                if masks is None:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                if stream_out is None:
                    stream_out = sink.add_stream(codec, rate=rate)
                    stream_out.width, stream_out.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
                    stream_out.pix_fmt = "yuv420p"
                drawn = draw_overlay(rgb, masks, labels=[m["prompt"] for m in shown["masks"]],
                                     scores=[m["score"] for m in shown["masks"]])
                drawn = np.ascontiguousarray(drawn[: stream_out.height, : stream_out.width])
                for encoded in stream_out.encode(av.VideoFrame.from_ndarray(drawn, format="rgb24")):
                    sink.mux(encoded)
                written += 1
            if stream_out is not None:
                for encoded in stream_out.encode():
                    sink.mux(encoded)
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)
    return written


def _frame_masks(record: dict, height: int, width: int, masks_jsonl: Path) -> np.ndarray | None:
    """A masks.jsonl record's masks as `(K, height, width)` bools, or None when it has none.

    The decode may allocate exactly K frames' worth (not the 4K-sized default cap, which K
    prompts on a 4K video exceed), and a record of another size is named as damage."""

    rles = [m["rle"] for m in record["masks"]]
    if not rles:
        return None
    try:
        masks = rle.decode(rles, max_pixels=len(rles) * height * width)
    except ValueError as error:
        raise ValueError(f"{masks_jsonl}: frame {record['frame']}: {error}") from error
    if masks.shape[1:] != (height, width):
        raise ValueError(f"{masks_jsonl}: frame {record['frame']}: masks of {masks.shape[2]}x{masks.shape[1]} "
                         f"for a {width}x{height} video")
    return masks.astype(bool)


def _numbered_frames(container, stream) -> Iterator[tuple[int, object]]:
    """`(frame number, frame)` in decoding order, numbered as `sources.video_items` numbers them
    (both decode with `sources.decode_video`); failures were reported by the run, so passed over."""

    for step in decode_video(container, stream, ""):
        if step.frame is not None:
            yield step.index, step.frame


# -- collections of images ------------------------------------------------------------------------


def run_batch(segmenter, images: list[str], prompts: list[str], run: RunFolder, *, threshold: float,
              batch_size: int | None, png: bool, overlay: bool, summary: RunSummary | None = None,
              min_area: int | None = None, edges=None) -> RunSummary:
    """Segment image files into `run` (masks.jsonl, errors.jsonl, PNG masks / overlays when asked).
    `summary`: filled as images are written (pass one to keep the counts when the run is
    interrupted); a new one by default. `min_area` and `edges`: as in `run_video`."""
    stems = unique_stems(images)
    summary = RunSummary() if summary is None else summary
    already_done = sum(1 for p in images if p in run.done)
    png_folder = run.folder / "png"
    if png or overlay:
        png_folder.mkdir(exist_ok=True)

    def handle(result: FrameResult) -> dict:
        # Masks first: on the CPU path the summary then comes from the same native pass.
        masks = result.masks if png or overlay else None
        record = {"image": result.source, "width": result.image_size[1], "height": result.image_size[0],
                  "masks": result.mask_records()}
        _add_instances(record, result, min_area)
        stem = stems[result.key]
        if png:
            outputs.write_mask_pngs(run.folder, f"png/{stem}", record["masks"], masks)
        if overlay:
            record["overlay_png"] = f"png/{stem}_overlay.png"
            outputs.write_overlay_png(run.folder / record["overlay_png"], result.image, masks, record["masks"])
        return record

    stream = segmenter.segment_stream(images, prompts, threshold=threshold, batch_size=batch_size,
                                      skip=frozenset(run.done), edges=edges)
    with _progress(len(images), "image", already_done) as progress:
        _consume(stream, run, handle, progress, summary, save_state=False)
    return summary

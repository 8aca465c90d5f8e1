"""Segment image collections and videos at scale with Ray Data (`pip install 'fastclipseg[ray]'`).

Ray is the scale-out engine: these helpers only give it callable classes that hold one
`FastSegmenter` per Ray actor (the model is loaded once per actor, not once per batch) and
two ready-made pipelines around them.

- `SegmentBatch`: for `Dataset.map_batches` over images (pixel arrays, file paths or bytes). Each
  row gets `masks` (a JSON string: per prompt its prompt, score, stability, area, bbox and COCO
  RLE), `error` ("" or why the row failed), `height` and `width`. A row that fails (a bad array,
  an unreadable file) is reported in its `error` column; the batch goes on and no row is dropped.
- `SegmentVideo`: for `map_batches` over a column of video paths/URLs, one video per call; emits
  one row per processed frame (`video`, `frame`, `timestamp`, `masks`, `error`, `height`,
  `width`), an error row for a frame that failed to decode, and one error row (frame -1) for a
  video that could not be opened.
- `segment_images(...)` / `segment_videos(...)`: read, segment and write JSON lines or Parquet
  into an output folder, returning `{"rows": ..., "failed": ...}`; with `output=None` they
  return the lazy `ray.data.Dataset` instead, for your own writes or further transforms.

Example (one machine)::

    import ray
    from fastclipseg.integrations.ray import segment_images

    ray.init()
    summary = segment_images("photos/", ["a cat", "a dog"], "CIDAS/clipseg-rd64-refined", "out/",
                             format="parquet", concurrency=2)
    print(summary)  # {'rows': 1000, 'failed': 3, ...}

Or, with your own dataset::

    ds = ray.data.read_images("s3://bucket/images/", include_paths=True, mode="RGB")
    ds = ds.map_batches(SegmentBatch, fn_constructor_kwargs=dict(model="CIDAS/clipseg-rd64-refined",
                        prompts=["a cat"]), batch_format="numpy", batch_size=8,
                        compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1)
    ds.write_parquet("s3://bucket/masks/")

(`read_images` raises for an undecodable file and fails the whole read; reading a column of paths
with `path_column=`, as `segment_images` does, reports such a file in its row's `error` instead.
Ray >= 2.51 deprecates `map_batches(concurrency=N)` in favour of
`compute=ray.data.ActorPoolStrategy(size=N)`; both work.)

Multi-node clusters: start Ray on the nodes (`ray start --head` / `ray start --address=...`) and
call `ray.init(address="auto")` in the driver before these functions. fastclipseg must be
installed on every node, and `model` must be loadable from every node: a hub id (each node
downloads and caches it; set `HF_HOME` to a shared folder to download once) or a folder on a
filesystem that all nodes mount at the same path; the same holds for image and video paths
(local paths are made absolute on the driver; URLs such as s3:// work where the readers support
them). Pass `num_gpus=1` to give each actor a GPU: an actor that has one runs the model on "cuda"
(unless `segmenter_options={"device": ...}` says otherwise), and `concurrency` then caps how many
GPUs are used. On CPU actors, set `num_cpus` to the cores each actor may use (Ray sets the
actor's thread count to it).
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ops.validation import (
    check_threshold,
    decode_image_bytes,
    load_image,
    normalize_prompts,
)
from ..prompts.resolve import looks_like_expression, resolve_prompts
from ..results import SegmentationResult
from ..segmenter import FastSegmenter
from ..streams.smoothing import check_smoothing
from ..streams.sources import (
    check_every,
    check_time_range,
    collect_image_paths,
    import_av,
)

if TYPE_CHECKING:
    import ray.data

INSTALL_HINT = "pip install 'fastclipseg[ray]'"
FORMATS = ("jsonl", "parquet")
OUTPUT_COLUMNS = ("masks", "error", "height", "width")
VIDEO_COLUMNS = ("video", "frame", "timestamp", "masks", "error", "height", "width")


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError(f"fastclipseg.integrations.ray needs Ray Data: {INSTALL_HINT}") from error
    return ray


def _actor_has_gpu() -> bool:
    """Whether this process is a Ray worker with a GPU assigned (False outside Ray).

    `ray.get_gpu_ids()` starts a local Ray instance when none is connected, so it is asked only
    when one is.
    """
    try:
        import ray
    except ImportError:
        return False
    return bool(ray.is_initialized() and ray.get_gpu_ids())


def _load_segmenter(model: str | os.PathLike, segmenter_options: Mapping[str, Any] | None) -> FastSegmenter:
    options = dict(segmenter_options or {})
    if "device" not in options:
        options["device"] = "cuda" if _actor_has_gpu() else "cpu"
    return FastSegmenter.from_pretrained(model, **options)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _is_bytes(value: object) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview))


def _image_prompts(prompts: str | Sequence[str]) -> list[str]:
    """Text prompts or expressions, parsed now: a syntax error raises here, not in every row."""
    checked = normalize_prompts(prompts)
    resolve_prompts(checked)
    return checked


def _video_prompts(prompts: str | Sequence[str]) -> list[str]:
    """Text prompts only: `segment_video` refuses expressions, which would make every video an
    error row; this says so at once."""
    checked = normalize_prompts(prompts)
    expressions = [p for p in checked if looks_like_expression(p)]
    if expressions:
        raise ValueError(f"videos take text prompts; {expressions[0]!r} is a prompt expression (AND, OR, NOT, "
                         "{...}): use SegmentBatch or segment_images on frames for expressions")
    return checked


def _read_image(value: object, max_pixels: int) -> np.ndarray:
    """A row's image (array, path, PIL image or encoded bytes) -> H x W x 3 uint8 RGB."""
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
        value = value.item()
    if value is None:
        raise ValueError("the row has no image (None)")
    if _is_bytes(value):
        return decode_image_bytes(bytes(value), max_pixels, "the row's image bytes")
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return load_image(str(value), max_pixels)  # np.str_ -> str
    return load_image(value, max_pixels)


def _object_column(values: Sequence[object]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        column[index] = value
    return column


def _records_json(result: SegmentationResult) -> str:
    return json.dumps(result.mask_records())


class SegmentBatch:
    """`Dataset.map_batches` callable: one `FastSegmenter` per Ray actor, one `segment_batch` call
    per batch.

    Use it as a class (Ray builds one instance per actor)::

        ds.map_batches(SegmentBatch, fn_constructor_kwargs=dict(model=..., prompts=[...]),
                       batch_format="numpy", batch_size=8,
                       compute=ray.data.ActorPoolStrategy(size=2), num_gpus=0)

    `model`: a hub id or a folder every node can read (see the module notes); `prompts`: shared
    by all images, text or expressions as in `FastSegmenter.segment` (a syntax error raises
    `ValueError` here); `threshold`: the mask threshold. Images come from `image_column` (H x W x 3
    uint8 arrays, as `ray.data.read_images(mode="RGB")` gives) or, when `path_column` is given,
    from that column's file paths or encoded image bytes (read with `load_image`). The segmenter
    is built with `FastSegmenter.from_pretrained(model, **segmenter_options)`; without a
    "device" option it runs on "cuda" when the actor was given a GPU (`ray.get_gpu_ids()`), else
    on "cpu".

    Each call returns the batch's columns less the image pixels (`image_column`, and
    `path_column` when it holds bytes) plus `masks` (a JSON string: a list with, per prompt,
    prompt, score, stability, area, bbox and COCO RLE; "[]" for a failed row), `error` ("" or
    the reason), `height` and `width` (0 for a failed row). A row whose image cannot be read
    gets its `error` and the others are segmented; if the batched network call itself raises,
    the readable images are retried one at a time so that only the culprit fails. Rows are never
    dropped or reordered.

    The instance also works without Ray: `SegmentBatch(model, prompts)({"image": images})`.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        prompts: str | Sequence[str],
        threshold: float = 0.5,
        image_column: str = "image",
        path_column: str | None = None,
        segmenter_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.prompts = _image_prompts(prompts)
        self.threshold = check_threshold(threshold)
        self.image_column = image_column
        self.path_column = path_column
        self.segmenter = _load_segmenter(model, segmenter_options)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        source = self.path_column or self.image_column
        if source not in batch:
            which = "path_column" if self.path_column else "image_column"
            raise KeyError(f"the batch has no column {source!r} (columns: {sorted(batch)}); set {which}=")
        values = list(batch[source])
        count = len(values)
        errors = [""] * count
        arrays: dict[int, np.ndarray] = {}
        for index, value in enumerate(values):
            try:
                arrays[index] = _read_image(value, self.segmenter.max_image_pixels)
            except Exception as error:  # noqa: BLE001 - any unreadable row is reported, not raised
                errors[index] = _reason(error)

        masks = ["[]"] * count
        heights = np.zeros(count, dtype=np.int64)
        widths = np.zeros(count, dtype=np.int64)
        for index, result in self._segment(arrays, errors).items():
            try:
                masks[index] = _records_json(result)
            except Exception as error:  # noqa: BLE001
                errors[index] = _reason(error)
                continue
            heights[index], widths[index] = arrays[index].shape[:2]

        drop = {self.image_column}
        if self.path_column is not None and any(_is_bytes(v) for v in values):
            drop.add(self.path_column)
        out = {name: column for name, column in batch.items() if name not in drop}
        out["masks"] = _object_column(masks)
        out["error"] = _object_column(errors)
        out["height"] = heights
        out["width"] = widths
        return out

    def _segment(self, arrays: dict[int, np.ndarray], errors: list[str]) -> dict[int, SegmentationResult]:
        """Results by row; one batched call, or one call per image when the batched one raises."""
        if not arrays:
            return {}
        indices = list(arrays)
        try:
            results = self.segmenter.segment_batch([arrays[i] for i in indices], self.prompts, threshold=self.threshold)
        except Exception:  # noqa: BLE001 - find the culprit(s) below
            results = None
        if results is not None:
            return dict(zip(indices, results))
        found: dict[int, SegmentationResult] = {}
        for index in indices:
            try:
                found[index] = self.segmenter.segment_batch([arrays[index]], self.prompts, threshold=self.threshold)[0]
            except Exception as error:  # noqa: BLE001
                errors[index] = _reason(error)
        return found


class SegmentVideo:
    """`Dataset.map_batches` callable over a column of videos (paths or URLs PyAV opens): one
    `FastSegmenter` per Ray actor, `segment_video` on each video, one output row per frame.

    Use it with `batch_size=1` so that each call (a Ray task on an actor) is one video::

        ds = ray.data.from_items([{"video": p} for p in paths], override_num_blocks=len(paths))
        ds.map_batches(SegmentVideo, fn_constructor_kwargs=dict(model=..., prompts=[...], every_n=5),
                       batch_format="numpy", batch_size=1, compute=ray.data.ActorPoolStrategy(size=2))

    Output rows: `video`, `frame` (frame number from the video's first frame), `timestamp`
    (seconds; NaN when unknown), `masks` (JSON, as in `SegmentBatch`), `error`, `height`,
    `width`, plus the input row's other columns. A frame that fails to decode gives an error
    row; a video that cannot be opened, or that fails part way, gives an error row with frame -1
    (after the frames already done). Rows are yielded in chunks of `rows_per_batch`, so a long
    video is never held in memory whole. `prompts` are text prompts (an expression raises
    `ValueError` here, as `segment_video` takes none). `every_n`, `start`, `end`, `smooth` and
    `batch_size` (frames per network call) are `segment_video`'s; the segmenter is built as in
    `SegmentBatch`.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        prompts: str | Sequence[str],
        threshold: float = 0.5,
        video_column: str = "video",
        every_n: int = 1,
        start: float | None = None,
        end: float | None = None,
        smooth: float | None = None,
        batch_size: int | None = None,
        rows_per_batch: int = 64,
        segmenter_options: Mapping[str, Any] | None = None,
    ) -> None:
        import_av()  # a missing PyAV fails the actor at once, not every video
        self.prompts = _video_prompts(prompts)
        self.threshold = check_threshold(threshold)
        self.video_column = video_column
        self.every_n = check_every(every_n)
        check_time_range(start, end)
        check_smoothing(smooth)
        self.start, self.end, self.smooth = start, end, smooth
        self.batch_size = batch_size
        if isinstance(rows_per_batch, bool) or not isinstance(rows_per_batch, int) or rows_per_batch < 1:
            raise ValueError(f"rows_per_batch must be an int >= 1, got {rows_per_batch!r}")
        self.rows_per_batch = rows_per_batch
        self.segmenter = _load_segmenter(model, segmenter_options)

    def __call__(self, batch: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        if self.video_column not in batch:
            raise KeyError(f"the batch has no column {self.video_column!r} (columns: {sorted(batch)}); set video_column=")
        videos = batch[self.video_column]
        for row, video in enumerate(videos):
            video = os.fspath(video) if isinstance(video, os.PathLike) else str(video)
            extras = {name: column[row:row + 1] for name, column in batch.items()
                      if name != self.video_column and name not in VIDEO_COLUMNS}
            rows: list[dict[str, Any]] = []
            for record in self._frames(video):
                rows.append(record)
                if len(rows) >= self.rows_per_batch:
                    yield _video_columns(rows, extras)
                    rows = []
            if rows:
                yield _video_columns(rows, extras)

    def _frames(self, video: str) -> Iterator[dict[str, Any]]:
        try:
            stream = self.segmenter.segment_video(
                video, self.prompts, threshold=self.threshold, batch_size=self.batch_size, every_n=self.every_n,
                start=self.start, end=self.end, smooth=self.smooth,
            )
        except Exception as error:  # noqa: BLE001 - a video that cannot be opened is one error row
            yield _frame_row(video, -1, None, error=_reason(error))
            return
        with stream:
            try:
                for item in stream:
                    if not item.ok:
                        yield _frame_row(video, item.index, item.timestamp, error=item.error or "frame failed")
                        continue
                    try:
                        masks = _records_json(item)
                    except Exception as error:  # noqa: BLE001
                        yield _frame_row(video, item.index, item.timestamp, error=_reason(error))
                        continue
                    height, width = item.image_size
                    yield _frame_row(video, item.index, item.timestamp, masks=masks, height=height, width=width)
            except Exception as error:  # noqa: BLE001 - e.g. no decodable frame: reported, the job goes on
                yield _frame_row(video, -1, None, error=_reason(error))


def _frame_row(video: str, frame: int, timestamp: float | None, *, masks: str = "[]", error: str = "",
               height: int = 0, width: int = 0) -> dict[str, Any]:
    return {"video": video, "frame": int(frame), "timestamp": np.nan if timestamp is None else float(timestamp),
            "masks": masks, "error": error, "height": int(height), "width": int(width)}


def _video_columns(rows: list[dict[str, Any]], extras: Mapping[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {name: np.repeat(value, len(rows), axis=0) for name, value in extras.items()}
    out["video"] = _object_column([r["video"] for r in rows])
    out["frame"] = np.array([r["frame"] for r in rows], dtype=np.int64)
    out["timestamp"] = np.array([r["timestamp"] for r in rows], dtype=np.float64)
    out["masks"] = _object_column([r["masks"] for r in rows])
    out["error"] = _object_column([r["error"] for r in rows])
    out["height"] = np.array([r["height"] for r in rows], dtype=np.int64)
    out["width"] = np.array([r["width"] for r in rows], dtype=np.int64)
    return out


# -- ready-made pipelines ---------------------------------------------------------------------


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    return format


def _is_url(path: str) -> bool:
    return "://" in path


def _absolute(path: str) -> str:
    return path if _is_url(path) else os.path.abspath(path)


def _check_output(output: str | os.PathLike) -> str:
    text = os.fspath(output)
    if not _is_url(text):
        folder = Path(text)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"output {text} exists and is not an empty folder: choose a new or empty folder")
        text = os.path.abspath(text)
    return text


def _actor_pool(ray, concurrency: int | tuple[int, int] | None):
    if concurrency is None:
        return ray.data.ActorPoolStrategy(min_size=1, max_size=None)
    if isinstance(concurrency, tuple):
        low, high = concurrency
        return ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    return ray.data.ActorPoolStrategy(size=concurrency)


def _resources(num_gpus: float, num_cpus: float | None) -> dict[str, float]:
    resources: dict[str, float] = {}
    if num_gpus:
        resources["num_gpus"] = num_gpus
    if num_cpus is not None:
        resources["num_cpus"] = num_cpus
    return resources


def _write(dataset: ray.data.Dataset, output: str, format: str) -> dict[str, Any]:
    """Write `dataset` (materialised first, so that the counts do not run the pipeline twice)."""
    done = dataset.materialize()
    if format == "jsonl":
        done.write_json(output)
    else:
        done.write_parquet(output)
    rows = failed = 0
    for batch in done.select_columns(["error"]).iter_batches(batch_format="numpy", batch_size=4096):
        rows += len(batch["error"])
        failed += sum(1 for error in batch["error"] if error)
    return {"rows": rows, "failed": failed, "output": output, "format": format}


def _image_paths(named: Sequence[str | os.PathLike]) -> list[str]:
    """Folders, globs and .txt lists expanded on the driver (`collect_image_paths`); a file or URL
    named directly is kept as it is, even when missing here: its row reports the error. Files in
    folders or globs that are not images (by extension) are left out with a warning."""
    paths: list[str] = []
    skipped: list[str] = []
    for entry in named:
        text = os.fspath(entry)
        path = Path(text)
        if not _is_url(text) and (path.is_dir() or glob.has_magic(text) or (path.suffix.lower() == ".txt" and path.is_file())):
            collected = collect_image_paths([text])
            paths.extend(_absolute(p) for p in collected.images)
            skipped.extend(collected.skipped)
        else:
            paths.append(_absolute(text))
    if skipped:
        # They get no row in the output, so say which (the CLI lists them in skipped.txt).
        names = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} files that are not images (by extension): {names}", stacklevel=5)
    return list(dict.fromkeys(paths))


def _pipeline(callable_class: type, build, *, output: str | os.PathLike | None, format: str, batch_size: int,
              concurrency: int | tuple[int, int] | None, num_gpus: float, num_cpus: float | None):
    """What both pipelines share: check `format` and `output` before any work, `build(ray)` the
    dataset and `callable_class`'s constructor kwargs, map the dataset with `callable_class` on a
    pool of actors, then write it (or return it lazily when `output` is None)."""
    ray = _import_ray()
    _check_format(format)
    target = _check_output(output) if output is not None else None
    dataset, constructor_kwargs = build(ray)
    result = dataset.map_batches(
        callable_class,
        fn_constructor_kwargs=constructor_kwargs,
        batch_format="numpy",
        batch_size=batch_size,
        compute=_actor_pool(ray, concurrency),
        **_resources(num_gpus, num_cpus),
    )
    if target is None:
        return result
    return _write(result, target, format)


def segment_images(
    inputs: ray.data.Dataset | str | os.PathLike | Sequence[str | os.PathLike],
    prompts: str | Sequence[str],
    model: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    format: str = "jsonl",
    concurrency: int | tuple[int, int] | None = None,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    batch_size: int = 8,
    threshold: float = 0.5,
    segmenter_options: Mapping[str, Any] | None = None,
    image_column: str = "image",
    path_column: str | None = None,
) -> dict[str, Any] | ray.data.Dataset:
    """Segment images with `SegmentBatch` on a pool of Ray actors and write the results.

    `inputs`: a `ray.data.Dataset` whose `image_column` holds RGB arrays (or whose `path_column`
    holds paths or bytes), or image files: a path, a folder (searched recursively for files
    Pillow opens), a glob, a `.txt` list, or a list of these. Files in folders and globs whose
    extension is not an image format are left out with a warning (their count and first names).
    Files are read by the actors from a `path` column, so an unreadable or missing file is a row
    with an `error`, not a failed job.
    `output`: a new or empty folder (or a URL Ray writes to) that receives JSON lines
    (`format="jsonl"`, via `write_json`) or Parquet (`format="parquet"`) files, one row per
    image: the input's columns without the pixels (`path` for files) plus `masks`, `error`,
    `height`, `width` (see `SegmentBatch`). Returns `{"rows", "failed", "output", "format"}`;
    with `output=None` nothing is written and the lazy `ray.data.Dataset` is returned.

    `prompts`: shared by all images, text or expressions (a syntax error raises `ValueError`
    before any work). `concurrency`: actors (`n`, or `(min, max)` to autoscale; None: 1 to as
    many as fit); `num_gpus`: GPUs per actor (1 runs each actor's model on "cuda"); `num_cpus`:
    CPUs per actor; `batch_size`: images per `segment_batch` call; `segmenter_options`: keyword
    arguments of `FastSegmenter.from_pretrained` (backend, precision, device, ...). Call
    `ray.init(...)` first to choose the cluster; otherwise Ray starts a local one.
    """
    def build(ray):
        kwargs = {"model": model, "prompts": _image_prompts(prompts), "threshold": threshold,
                  "image_column": image_column, "path_column": path_column,
                  "segmenter_options": dict(segmenter_options or {})}
        if isinstance(inputs, ray.data.Dataset):
            return inputs, kwargs
        named = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        paths = _image_paths(named)
        if not paths:
            raise FileNotFoundError(f"no image files in {[os.fspath(p) for p in named]}")
        return ray.data.from_items([{"path": p} for p in paths]), {**kwargs, "path_column": "path"}

    return _pipeline(SegmentBatch, build, output=output, format=format, batch_size=batch_size,
                     concurrency=concurrency, num_gpus=num_gpus, num_cpus=num_cpus)


def segment_videos(
    videos: ray.data.Dataset | str | os.PathLike | Sequence[str | os.PathLike],
    prompts: str | Sequence[str],
    model: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    format: str = "jsonl",
    every_n: int = 1,
    start: float | None = None,
    end: float | None = None,
    smooth: float | None = None,
    concurrency: int | tuple[int, int] | None = None,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    batch_size: int | None = None,
    threshold: float = 0.5,
    segmenter_options: Mapping[str, Any] | None = None,
    video_column: str = "video",
) -> dict[str, Any] | ray.data.Dataset:
    """Segment videos, one video per Ray task, on a pool of actors running `SegmentVideo`.

    `videos`: a path or URL, a folder (its files, sorted; a file that is not a video gives an
    error row), a list of these, or a `ray.data.Dataset` with a `video_column`. `prompts`: text
    prompts (an expression raises `ValueError` before any work). `output`, `format`,
    `concurrency`, `num_gpus`, `num_cpus`, `threshold` and `segmenter_options` are as in
    `segment_images`; `every_n`, `start`, `end`, `smooth` and `batch_size` (frames per network
    call) as in `FastSegmenter.segment_video`. Rows: one per processed frame (`video`, `frame`,
    `timestamp`, `masks`, `error`, `height`, `width`), error rows for frames that failed and one
    (frame -1) for a video that could not be opened. Returns `{"rows", "failed", "output",
    "format"}` (`failed`: error rows), or the lazy `ray.data.Dataset` with `output=None`.
    """
    def build(ray):
        kwargs = {"model": model, "prompts": _video_prompts(prompts), "threshold": threshold,
                  "video_column": video_column, "every_n": every_n, "start": start, "end": end, "smooth": smooth,
                  "batch_size": batch_size, "segmenter_options": dict(segmenter_options or {})}
        if isinstance(videos, ray.data.Dataset):
            return videos, kwargs
        named = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
        paths: list[str] = []
        for entry in named:
            text = os.fspath(entry)
            if not _is_url(text) and Path(text).is_dir():
                paths.extend(os.path.abspath(p) for p in sorted(Path(text).iterdir())
                             if p.is_file() and not p.name.startswith("."))
            else:
                paths.append(_absolute(text))
        if not paths:
            raise FileNotFoundError(f"no videos in {[os.fspath(v) for v in named]}")
        # One block per video, so that videos spread over the actors as separate tasks.
        return ray.data.from_items([{video_column: p} for p in paths], override_num_blocks=len(paths)), kwargs

    # batch_size=1: one video per call (`batch_size` above is frames per network call).
    return _pipeline(SegmentVideo, build, output=output, format=format, batch_size=1,
                     concurrency=concurrency, num_gpus=num_gpus, num_cpus=num_cpus)


__all__ = ["SegmentBatch", "SegmentVideo", "segment_images", "segment_videos"]

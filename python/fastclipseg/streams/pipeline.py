"""The streaming pipeline behind `segment_video` and `segment_stream`.

Three background threads, joined by bounded queues, overlap with the caller:

    source -> [decode] -> queue -> [preprocess + batch] -> queue -> [network] -> queue -> caller

- decode: reads the next item (decodes a video frame, opens an image file);
- preprocess: gathers up to `batch_size` frames and runs the native resize + normalise (with
  the segmenter's `device_processing`: uploads them through pinned memory on a copy stream and
  preprocesses them on the device, so batch n+1 is uploaded while batch n is in the network);
- network: the vision stage once per frame, the decoder once per (frame, prompt), optional
  temporal smoothing, and `FrameResult`s in stream order (with `device_processing` and no
  smoothing, their masks are already thresholded and packed on the device);
- the caller post-processes (masks, RLE; native, GIL released) and writes while the threads
  work on the next frames.

The queues hold at most a few batches, so memory stays bounded however long the stream: a slow
consumer stalls the threads rather than letting frames pile up. Torch, ONNX Runtime and the
native kernels (and the aoti packages' C interface) release the GIL, so the stages really run at
the same time. Closing the stream
(or leaving a `for` loop early) stops and joins the threads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core import InferenceCore, core_of
from ..ops.device.processing import DeviceBatch
from ..ops.edges import Edges
from ..ops.postprocess import PackedMasks
from ..results import FrameError, FrameResult
from .smoothing import LogitSmoother
from .sources import Item

_DONE = object()  # end of stream marker


class _Crash:
    """An exception raised in a worker thread, handed down the queues to the caller."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


@dataclass
class StageTimes:
    """Seconds each stage spent working (not waiting), and what went through the pipeline.

    decode, preprocess and network run in their own threads, so their sum can exceed the wall
    time: the largest one is the bottleneck. `consumer` is the time the caller held each result
    before asking for the next (post-processing and writing, for the command line).
    """

    decode: float = 0.0
    preprocess: float = 0.0
    network: float = 0.0
    consumer: float = 0.0
    wall: float = 0.0
    frames: int = 0
    failed: int = 0
    batches: int = 0

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class _Batch:
    items: list[tuple[Item, np.ndarray | None, str | None]] = field(default_factory=list)
    pixels: torch.Tensor | DeviceBatch | None = None

    def frames(self) -> int:
        return sum(1 for _, image, _ in self.items if image is not None)


class _Workers:
    """The three threads and their queues. Kept apart from `FrameStream` so that the threads do
    not keep the stream alive: an abandoned stream is collected, and its `__del__` stops them."""

    def __init__(self, core: InferenceCore, items: Iterator[Item], prompts: list[str], *, threshold: float,
                 batch_size: int, smoother: LogitSmoother | None, queue_batches: int, edges: Edges | None) -> None:
        self.core = core
        self.items = items
        self.prompts = prompts
        self.threshold = threshold
        self.edges = edges
        self.batch_size = batch_size
        self.smoother = smoother
        self.stop = threading.Event()
        self.decoded: queue.Queue = queue.Queue(maxsize=batch_size * queue_batches)
        self.batches: queue.Queue = queue.Queue(maxsize=queue_batches)
        self.results: queue.Queue = queue.Queue(maxsize=batch_size * queue_batches)
        self.times = StageTimes()
        # Prompt embeddings once per run, before any thread starts (a bad prompt raises here).
        self.embeddings = core.encode_prompts(prompts)
        self.threads = [
            threading.Thread(target=self._guard, args=(work, output), name=f"fastclipseg-{name}", daemon=True)
            for name, work, output in (
                ("decode", self._decode, self.decoded),
                ("preprocess", self._preprocess, self.batches),
                ("network", self._network, self.results),
            )
        ]
        for thread in self.threads:
            thread.start()

    def put(self, target: queue.Queue, value: object) -> bool:
        """Put unless the stream is being stopped; False if it is."""
        while not self.stop.is_set():
            try:
                target.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, source: queue.Queue, timeout: float | None = None) -> object:
        """The next value; _DONE once stopping, None after `timeout` seconds with nothing."""
        waited = 0.0
        while not self.stop.is_set():
            try:
                return source.get(timeout=0.1 if timeout is None else min(0.1, timeout))
            except queue.Empty:
                waited += 0.1
                if timeout is not None and waited >= timeout:
                    return None
        return _DONE

    def _guard(self, work, output: queue.Queue) -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who re-raises it
            self.put(output, _Crash(error))
            return
        self.put(output, _DONE)

    def _decode(self) -> None:
        iterator = iter(self.items)
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            image, error = None, item.error
            if error is None and item.load is not None:
                try:
                    image = item.load()
                except (OSError, ValueError, TypeError) as failure:
                    error = str(failure)
            self.times.decode += time.perf_counter() - started
            if not self.put(self.decoded, (item, image, error)):
                return

    def _preprocess(self) -> None:
        batch = _Batch()
        while True:
            # Wait for the first item of a batch; then take what is ready, waiting a little,
            # so that a source slower than the network does not hold frames back.
            value = self.get(self.decoded, timeout=None if not batch.items else 0.05)
            if value is None or value is _DONE or isinstance(value, _Crash):
                if batch.items:
                    self._send(batch)
                    batch = _Batch()
                if value is None:
                    continue
                if isinstance(value, _Crash):
                    raise value.error
                return
            batch.items.append(value)
            if batch.frames() >= self.batch_size:
                self._send(batch)
                batch = _Batch()

    def _send(self, batch: _Batch) -> None:
        started = time.perf_counter()
        images = [image for _, image, _ in batch.items if image is not None]
        if images:
            processing = self.core.device_processing
            batch.pixels = processing.prepare(images) if processing is not None else self.core.pixel_values(images)
        self.times.preprocess += time.perf_counter() - started
        self.put(self.batches, batch)

    def _network(self) -> None:
        while True:
            batch = self.get(self.batches)
            if batch is _DONE:
                return
            if isinstance(batch, _Crash):
                raise batch.error
            assert isinstance(batch, _Batch)  # internal invariant, not input validation
            started = time.perf_counter()
            pixels = batch.pixels.wait() if isinstance(batch.pixels, DeviceBatch) else batch.pixels
            sizes = [(image.shape[0], image.shape[1]) for _, image, _ in batch.items if image is not None]
            host_logits: list[np.ndarray] = []
            packed: list[PackedMasks | None] = []
            if pixels is not None:
                logits = self.core.predict_logits_shared(pixels, self.embeddings)
                # Smoothing needs the host logits before thresholding: then the host kernels post-process.
                images = [image for _, image, _ in batch.items if image is not None]
                host_logits, packed = self.core.host_outputs(logits, [len(self.prompts)] * len(sizes), sizes,
                                                             self.threshold, on_device=self.smoother is None,
                                                             edges=self.edges, images=images)
            outputs = iter(zip(host_logits, packed))
            self.times.batches += 1
            results: list[FrameResult | FrameError] = []
            for item, image, error in batch.items:
                if image is None:
                    results.append(FrameError(index=item.index, error=error or "unknown error",
                                              timestamp=item.timestamp, source=item.source, key=item.key))
                    continue
                frame_logits, masks = next(outputs)
                if self.smoother is not None:
                    frame_logits = self.smoother(frame_logits)
                results.append(FrameResult(
                    prompts=list(self.prompts), logits=frame_logits, image_size=(image.shape[0], image.shape[1]),
                    threshold=self.threshold, source=item.source, threads=self.core.kernel_threads,
                    packed=masks, index=item.index, timestamp=item.timestamp, key=item.key, image=image,
                    edges=self.edges, guide=image if self.edges is not None else None,
                ))
            self.times.network += time.perf_counter() - started
            for result in results:
                if not self.put(self.results, result):
                    return

    def shutdown(self) -> None:
        self.stop.set()
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join()
        close = getattr(self.items, "close", None)
        if close is not None:
            close()  # a generator source: runs its finally (closes the video file)


class FrameStream(Iterator):
    """An iterator of `FrameResult`, or `FrameError` for an item that failed, in stream order.

    Use it in a `for` loop, ideally as a context manager (`with seg.segment_video(...) as
    frames:`); `close()` stops the background threads, as does dropping the last reference.
    `times` holds per-stage seconds (see `StageTimes`). At most `max_in_flight` frames are held
    by the threads and queues at any time.
    """

    def __init__(self, segmenter: object, items: Iterator[Item], prompts: list[str], *, threshold: float,
                 batch_size: int, smoother: LogitSmoother | None = None, queue_batches: int = 2,
                 edges: Edges | None = None) -> None:
        self._started = time.perf_counter()
        self._workers = _Workers(core_of(segmenter), items, prompts, threshold=threshold, batch_size=batch_size,
                                 smoother=smoother, queue_batches=queue_batches, edges=edges)
        # The decoded queue, one item in the decode thread, the batch being gathered, the
        # batches queue, the batch in the network thread, and the results queue.
        self.max_in_flight = batch_size * (queue_batches + queue_batches + 1 + queue_batches) + 1 + batch_size
        self.times = self._workers.times
        self._handed_out_at: float | None = None
        self._finished = False

    def __next__(self) -> FrameResult | FrameError:
        if self._handed_out_at is not None:
            self.times.consumer += time.perf_counter() - self._handed_out_at
            self._handed_out_at = None
        if self._finished:
            raise StopIteration
        value = self._workers.get(self._workers.results)
        if value is _DONE or isinstance(value, _Crash):
            self.close()
            if isinstance(value, _Crash):
                raise value.error
            raise StopIteration
        if isinstance(value, FrameError):
            self.times.failed += 1
        else:
            self.times.frames += 1
        self._handed_out_at = time.perf_counter()
        return value  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the background threads and release the source (idempotent)."""
        if self._finished:
            return
        self._finished = True
        self._workers.shutdown()
        self.times.wall = time.perf_counter() - self._started

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_finished", True):
            self.close()

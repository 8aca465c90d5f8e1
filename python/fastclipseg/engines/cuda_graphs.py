"""`cudagraphs`: the eager stages on a CUDA device, replayed as CUDA graphs of static batch sizes.

A CUDA graph records a stage's whole kernel sequence once, for one exact set of input shapes, and
replays it with a single launch. The vision tower alone launches a few hundred kernels per call;
at small batches their launch cost, not the arithmetic, sets the speed. So each stage runs as a
graph per batch-size bucket (`engines.buckets`):

- vision: one graph per image bucket (1, 2, 4, ... up to the segmenter's batch size), captured
  when the segmenter is built (`warm`), so the first frame is as fast as the rest;
- decoder: one graph per (image bucket, pair bucket), captured the first time that combination
  is seen (a video with K prompts and a fixed batch size uses one or two); past
  `MAX_DECODER_GRAPHS` combinations, or past the largest pair bucket, it runs eagerly;
- prompt: eager (it runs once per distinct prompt; its results are cached).

A call copies its inputs into the graph's static input buffers, padding a partial batch by
repeating its last item (as `buckets.pad_batch` does, and for the same reasons), replays, and
clones the real rows out of the static output, which the next replay overwrites. A lock makes
copy-in, replay and copy-out one step, so threads may share the engine. All of an engine's graphs
share one memory pool (see `CudaGraphEngine.__init__`).

The precisions are those of the eager engine (`precision.prepare_stages`): fp32, bf16, fp16.
`capture=False` keeps every buffer and padding step but calls the stage eagerly instead of
replaying a graph: that is how the CPU tests check this module's logic (CI has no CUDA).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch

from ..model.stages import Stages
from .buckets import (
    DEFAULT_BUCKETS,
    bucket_for,
    check_buckets,
    pair_buckets,
    split_into_buckets,
)
from .torch_engine import TorchEngine

BACKEND = "cudagraphs"
#: Decoder calls are padded to these pair counts; more pairs than the largest run eagerly.
PAIR_BUCKETS: tuple[int, ...] = pair_buckets(1024)  # 1, 2, 4 ... 1024
MAX_DECODER_GRAPHS = 16
#: Eager runs on a side stream before capture: cuBLAS handles, kernel choices and the caching
#: allocator settle there, so the capture records steady-state kernels only.
WARMUP_RUNS = 3


class StaticGraph:
    """`function` over static input buffers, replayed as one CUDA graph.

    `example_inputs` fix the shapes and dtypes; `batch_dims[i]` is the batch dimension of input
    i (None: copied whole). `capture=False` calls `function` on the same buffers instead of
    replaying (the CPU stand-in), writing into the same kind of reused output buffer. `pool`: the
    memory pool to capture into (`torch.cuda.graph_pool_handle()`; None: a private one).
    """

    def __init__(self, function: Callable[..., torch.Tensor], example_inputs: Sequence[torch.Tensor],
                 batch_dims: Sequence[int | None], *, capture: bool,
                 pool: torch.cuda._POOL_HANDLE | None = None) -> None:
        self.function = function
        self.batch_dims = tuple(batch_dims)
        self.capture = capture
        self.inputs = tuple(example.clone() for example in example_inputs)
        if not capture:
            self.output = function(*self.inputs).clone()
            return
        side = torch.cuda.Stream(device=self.inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(side.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                function(*self.inputs)
        torch.cuda.current_stream(side.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # "thread_local": a decoder graph may be captured while a stream's upload thread is
        # allocating and copying on its own stream; only this thread's calls must be capture-safe.
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.output = function(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Copy `inputs` in (padding each batch dimension by repeating its last item), run, and
        return the static output: read or clone it before the next call."""
        for static, value, dim in zip(self.inputs, inputs, self.batch_dims):
            if dim is None:
                static.copy_(value)
                continue
            n = value.shape[dim]
            static.narrow(dim, 0, n).copy_(value)
            rest = static.shape[dim] - n
            if rest:
                static.narrow(dim, n, rest).copy_(value.narrow(dim, n - 1, 1).expand_as(static.narrow(dim, n, rest)))
        if self.capture:
            self.graph.replay()
        else:
            self.output.copy_(self.function(*self.inputs))
        return self.output


class CudaGraphEngine(TorchEngine):
    """The eager stages in `precision` on `device`, with vision and decoder replayed as CUDA graphs."""

    name = BACKEND

    def __init__(self, stages: Stages, device: torch.device, precision: str = "fp16", *,
                 buckets: Sequence[int] = DEFAULT_BUCKETS, capture: bool | None = None) -> None:
        device = torch.device(device)
        self.capture = device.type == "cuda" if capture is None else bool(capture)
        if self.capture and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device.type!r}")
        super().__init__(stages, device, precision)
        # One memory pool for all of this engine's graphs rather than one each. A later capture may
        # reuse an earlier graph's intermediates for its static output (the only pool memory that
        # stays live), so replaying the earlier graph overwrites it. That is safe here: replays are
        # serialised by `_lock`, each output is cloned right after its replay, and the calls run
        # in stream order (one stream, as the shared static inputs already require).
        self._pool = torch.cuda.graph_pool_handle() if self.capture else None
        self.buckets = check_buckets(buckets)
        self.image_size = int(stages.vision.image_size)
        self.vision_graphs: dict[int, StaticGraph] = {}
        self.decoder_graphs: dict[tuple[int, int], StaticGraph] = {}
        self._lock = threading.Lock()

    @torch.inference_mode()
    def warm(self, max_batch: int) -> None:
        """Capture the vision graphs of every bucket a call of up to `max_batch` images uses."""
        largest = bucket_for(min(max_batch, self.buckets[-1]), self.buckets)
        with self._lock:
            for bucket in self.buckets:
                if bucket <= largest:
                    self._vision_graph(bucket)

    def _vision_graph(self, bucket: int) -> StaticGraph:
        graph = self.vision_graphs.get(bucket)
        if graph is None:
            example = torch.zeros(bucket, 3, self.image_size, self.image_size, device=self.device)
            graph = StaticGraph(self.vision, [example], [0], capture=self.capture, pool=self._pool)
            self.vision_graphs[bucket] = graph
        return graph

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.device, torch.float32)
        outputs, start = [], 0
        for chunk, bucket in split_into_buckets(int(pixel_values.shape[0]), self.buckets):
            with self._lock:
                activations = self._vision_graph(bucket)(pixel_values[start : start + chunk])
                outputs.append(activations[:, :chunk].clone())
            start += chunk
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    def _decoder_graph(self, activations: torch.Tensor, embeddings: torch.Tensor, image_bucket: int,
                       pair_bucket: int) -> StaticGraph | None:
        key = (image_bucket, pair_bucket)
        graph = self.decoder_graphs.get(key)
        if graph is None and len(self.decoder_graphs) < MAX_DECODER_GRAPHS:
            layers, _, tokens, width = activations.shape
            examples = [
                activations.new_zeros(layers, image_bucket, tokens, width),
                embeddings.new_zeros(pair_bucket, embeddings.shape[1]),
                torch.zeros(pair_bucket, dtype=torch.long, device=self.device),
            ]
            graph = StaticGraph(self.decoder, examples, [1, 0, 0], capture=self.capture, pool=self._pool)
            self.decoder_graphs[key] = graph
        return graph

    @torch.inference_mode()
    def decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        activations = activations.to(self.device)
        embeddings = embeddings.to(self.device, torch.float32)
        image_index = image_index.to(self.device, torch.long)
        images, pairs = int(activations.shape[1]), int(image_index.shape[0])
        if pairs == 0 or images > self.buckets[-1] or pairs > PAIR_BUCKETS[-1]:
            return self.decoder(activations, embeddings, image_index)
        with self._lock:
            graph = self._decoder_graph(activations, embeddings, bucket_for(images, self.buckets),
                                        bucket_for(pairs, PAIR_BUCKETS))
            if graph is None:
                return self.decoder(activations, embeddings, image_index)
            return graph(activations, embeddings, image_index)[:pairs].clone()

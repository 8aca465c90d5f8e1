"""GPU throughput: the transformers reference against fastclipseg's CUDA path, frames/s at batch 1-64.

One command, one process, on the full-size CIDAS/clipseg-rd64-refined architecture (random CLIP
backbone; the real refined decoder and vocabulary from ../shared/data when present). Frames are
uint8 RGB arrays in host memory (default 720x1280, as decoded video), each segmented with the same
prompts (default 2). Per batch size B, in turns (`interleaved_median_seconds`), with the device
synchronised at the end of every call:

| row | what one call does |
| --- | --- |
| transformers fp32 | `CLIPSegProcessor(text=prompts * B, images=frames, one copy per prompt)` + `CLIPSegForImageSegmentation` |
| transformers fp16 | the same with the model in fp16 |
| fastclipseg fp16 eager | network only: vision stage on B pixel batches on the device + decoder for B x K pairs (eager torch) |
| fastclipseg fp16 + CUDA graphs | network only, as above, with the `cudagraphs` engine |
| fastclipseg end-to-end | `segment_batch(frames, prompts)` on the `cudagraphs` fp16 segmenter (uploads, GPU preprocessing, network, GPU upsample + threshold + pack, packed masks to the host), and each mask's COCO RLE from the packed bits |
| fastclipseg stream | `segment_stream` over `STREAM_BATCHES` x B frames in batches of B (what `segment_video` runs after decoding): the same work, with the upload and preprocessing of batch n+1 overlapping the network on batch n; frames/s over all of them |

Then the FLOP floor: the analytic FLOPs of one frame (vision + decoder with K prompts,
`fastclipseg.bench.flops.stage_flops`) over the fp16 matmul rate measured on the same GPU in the same run
(`flops.matmul_rate`), and its ratio to the best network time (eager or graphs) per frame.
Goals (issue 7): end-to-end (batch or stream) >= 10x transformers eager fp32; network >= 25 % of
the floor.

    python benchmarks/bench_gpu.py [--batch-sizes 1,2,4,8,16,32,64] [--repeats 5] [--frame 720x1280]
                                   [--prompts 2] [--out benchmarks/results]

Needs a CUDA device; `run()` takes any model and device, which is how the test suite checks this
script on the CPU with a tiny model (rows that need CUDA are then left out and say so).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, build_fullsize_model, write_result
from fastclipseg import FastSegmenter
from fastclipseg.bench import flops
from fastclipseg.bench.measure import interleaved_median_seconds, natural_image
from fastclipseg.engines.torch_engine import TorchEngine

PROMPTS = ["a red car", "the road", "a person", "a tree"]
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
STREAM_BATCHES = 4
SPEEDUP_GOAL = 10.0
FLOOR_GOAL = 0.25


def synchronized(device: torch.device, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` followed by a device synchronisation, so wall time covers the queued GPU work."""
    if device.type != "cuda":
        return fn

    def call() -> object:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return call


def reference_call(model, processor, frames: Sequence[np.ndarray], prompts: list[str], device: torch.device,
                   dtype: torch.dtype) -> Callable[[], object]:
    """What a transformers user runs: the processor on the CPU, one image copy per prompt, the model."""
    def call() -> object:
        inputs = processor(text=prompts * len(frames), images=[f for f in frames for _ in prompts],
                           padding=True, return_tensors="pt")
        with torch.inference_mode():
            return model(input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device),
                         pixel_values=inputs["pixel_values"].to(device, dtype)).logits

    return call


def network_call(engine, pixels: torch.Tensor, embeddings: torch.Tensor) -> Callable[[], object]:
    """The network alone on pixels already on the device: vision stage + decoder for every pair."""
    index = torch.arange(pixels.shape[0], device=pixels.device).repeat_interleave(embeddings.shape[0])
    pairs = embeddings.repeat(pixels.shape[0], 1)

    def call() -> object:
        return engine.decode(engine.encode_images(pixels), pairs, index)

    return call


def end_to_end_call(segmenter: FastSegmenter, frames: Sequence[np.ndarray], prompts: list[str]) -> Callable[[], object]:
    def call() -> object:
        return [result.rle for result in segmenter.segment_batch(list(frames), prompts)]

    return call


def stream_call(segmenter: FastSegmenter, frames: Sequence[np.ndarray], prompts: list[str]) -> Callable[[], object]:
    """`STREAM_BATCHES` batches of `frames` through a stream, every result's RLE read."""
    def call() -> object:
        with segmenter.segment_stream(list(frames) * STREAM_BATCHES, prompts, batch_size=len(frames)) as stream:
            return [result.rle for result in stream]

    return call


def run(model, processor, device: str | torch.device, *, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
        repeats: int = 5, frame: tuple[int, int] = (720, 1280), prompts: int = 2, matmul_size: int = 8192) -> dict:
    """Time every row at every batch size; returns the JSON payload (and prints the table)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    prompt_list = PROMPTS[:prompts]
    half = torch.float16 if cuda else torch.float32  # the CPU has no fast fp16: the smoke run uses fp32
    precision = "fp16" if cuda else "fp32"
    reference = copy.deepcopy(model).to(device).eval()
    reference_half = copy.deepcopy(model).to(device, half).eval() if cuda else None
    stages_source = copy.deepcopy(model)
    segmenter = FastSegmenter(stages_source, processor, device=device, precision=precision,
                              backend="cudagraphs" if cuda else "torch", device_processing=True, cache=False,
                              batch_size=max(batch_sizes))
    eager = TorchEngine(segmenter.stages, device, precision) if cuda else segmenter.engine
    graphs = segmenter.engine if cuda else None
    embeddings = segmenter.encode_prompts(prompt_list).to(device)
    frame_flops = flops.stage_flops(segmenter.stages, prompts_per_image=prompts)["frame"]
    rate = flops.matmul_rate(device, half, size=matmul_size if cuda else 512, repeats=20 if cuda else 3)
    print(f"device {device} | {prompts} prompts | frames {frame[0]}x{frame[1]} | fastclipseg {segmenter.backend} "
          f"{segmenter.precision} | {frame_flops / 1e9:.2f} GFLOP/frame | matmul {rate / 1e12:.1f} TFLOP/s "
          f"({half}) -> floor {flops.floor_seconds(frame_flops, rate) * 1e3:.3f} ms/frame", flush=True)
    rows = []
    for batch in batch_sizes:
        frames = [natural_image(*frame, seed=i) for i in range(batch)]
        pixels = segmenter.pixel_values(frames)
        calls = {"transformers fp32": reference_call(reference, processor, frames, prompt_list, device, torch.float32)}
        if reference_half is not None:
            calls["transformers fp16"] = reference_call(reference_half, processor, frames, prompt_list, device, half)
        calls[f"fastclipseg {precision} eager"] = network_call(eager, pixels, embeddings)
        if graphs is not None:
            calls[f"fastclipseg {precision} + CUDA graphs"] = network_call(graphs, pixels, embeddings)
        calls["fastclipseg end-to-end"] = end_to_end_call(segmenter, frames, prompt_list)
        calls["fastclipseg stream"] = stream_call(segmenter, frames, prompt_list)
        seconds = interleaved_median_seconds({k: synchronized(device, f) for k, f in calls.items()}, repeats, warmup=2)
        network = min(s for k, s in seconds.items() if k.endswith(("eager", "CUDA graphs")))
        frames_per_call = {k: batch * (STREAM_BATCHES if k == "fastclipseg stream" else 1) for k in seconds}
        fps = {k: frames_per_call[k] / s for k, s in seconds.items()}
        row = {
            "batch": batch,
            "frames_per_s": fps,
            "seconds": seconds,
            "end_to_end_vs_transformers_fp32": fps["fastclipseg end-to-end"] / fps["transformers fp32"],
            "stream_vs_transformers_fp32": fps["fastclipseg stream"] / fps["transformers fp32"],
            "best_network_fraction_of_floor": flops.efficiency(network, frame_flops * batch, rate),
        }
        rows.append(row)
        print(f"batch {batch:3d}: " + " | ".join(f"{k} {v:8.1f} f/s" for k, v in row["frames_per_s"].items())
              + f" | end-to-end {row['end_to_end_vs_transformers_fp32']:.1f}x, stream "
              f"{row['stream_vs_transformers_fp32']:.1f}x transformers fp32"
              + f" | network {100 * row['best_network_fraction_of_floor']:.1f} % of floor", flush=True)
    best_speedup = max(max(r["end_to_end_vs_transformers_fp32"], r["stream_vs_transformers_fp32"]) for r in rows)
    best_floor = max(r["best_network_fraction_of_floor"] for r in rows)
    print(f"best end-to-end speedup over transformers fp32: {best_speedup:.1f}x (goal >= {SPEEDUP_GOAL:.0f}x: "
          f"{'met' if best_speedup >= SPEEDUP_GOAL else 'NOT met'}); best network time: {100 * best_floor:.1f} % of the "
          f"FLOP floor (goal >= {100 * FLOOR_GOAL:.0f} %: {'met' if best_floor >= FLOOR_GOAL else 'NOT met'})")
    skipped = [] if cuda else ["transformers fp16", "fastclipseg + CUDA graphs (need CUDA)", "fp16 (CPU runs fp32)"]
    return {
        "network_device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "torch": torch.__version__,
        "frame": list(frame),
        "prompts": prompt_list,
        "repeats": repeats,
        "backend": segmenter.backend,
        "precision": segmenter.precision,
        "frame_gflop": frame_flops / 1e9,
        "matmul_tflops": rate / 1e12,
        "matmul_dtype": str(half),
        "rows": rows,
        "best_end_to_end_vs_transformers_fp32": best_speedup,
        "best_network_fraction_of_floor": best_floor,
        "rows_not_run": skipped,
    }


def parse_frame(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--frame must be HEIGHTxWIDTH, e.g. 720x1280, got {text!r}") from error
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frame", type=parse_frame, default=(720, 1280), help="HEIGHTxWIDTH of the frames")
    parser.add_argument("--prompts", type=int, default=2, choices=range(1, len(PROMPTS) + 1))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA device; PyTorch sees none", file=sys.stderr)
        return 2
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    model, processor, real_decoder = build_fullsize_model()
    payload = run(model, processor, "cuda", batch_sizes=batch_sizes, repeats=args.repeats, frame=args.frame,
                  prompts=args.prompts)
    payload["real_decoder_weights"] = real_decoder
    path = write_result("bench_gpu-" + payload["gpu"].replace(" ", "_"), payload, args.out)
    print(f"wrote {path}")
    print(json.dumps({k: v for k, v in payload.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""fastclipseg vs the transformers reference, every backend x precision, in one process, on the
full-size model (see `fastclipseg.bench.suite` for the cases and what is timed).

Builds CLIPSeg in the CIDAS/clipseg-rd64-refined shape (random CLIP backbone; the real refined
decoder and CLIP vocabulary from ../shared/data when present, so the mask agreement columns mean
something: speed does not depend on weight values). Prints a table and writes JSON under
benchmarks/results/.

    python benchmarks/bench_segment.py [--threads 2] [--repeats 3] [--frames 16]
                                       [--backends torch,torchscript,onnxruntime] [--precisions fp32,bf16,int8]
                                       [--device cuda] [--no-rss]

With `--device cuda` the network runs on the GPU (TF32 off: the parity tests' arithmetic) with the
backends and precisions asked for that run there (e.g. `--backends torch,cudagraphs --precisions
fp32,fp16`); fastclipseg then pre- and post-processes on the GPU (its CUDA default,
`device_processing`), the reference with its processor on the CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers
from _common import RESULTS, build_fullsize_model, write_result
from fastclipseg.bench.suite import run_benchmark, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for every side (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per case (median reported)")
    parser.add_argument("--frames", type=int, default=16, help="frames in the video-like case (default 16)")
    parser.add_argument("--backends", default="torch,torchscript,onnxruntime")
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--device", default="cpu", help="torch device for the network on both sides (default cpu)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    args = parser.parse_args()
    if torch.device(args.device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    model, processor, real_decoder = build_fullsize_model()

    record = run_benchmark(
        model, processor, model_source="random", backends=args.backends.split(","), precisions=args.precisions.split(","),
        threads=args.threads, repeats=args.repeats, frames=args.frames, device=args.device, measure_rss=not args.no_rss,
        log=lambda line: print(line, flush=True),
    )
    record.update({"transformers": transformers.__version__, "real_decoder_weights": real_decoder})
    print("\n" + table(record))
    device = torch.device(args.device).type
    name = f"bench_segment-cpu-{args.threads}threads" if device == "cpu" else f"bench_segment-{device}"
    print(f"\nwrote {write_result(name, record, args.out)}")


if __name__ == "__main__":
    main()

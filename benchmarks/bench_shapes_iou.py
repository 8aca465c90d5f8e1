"""Masks against known answers for every CPU precision: mean IoU on scenes of clipseg-shapes-prompted.

The semantic check behind the precision table (engines/precision.py): the small CLIPSeg in
../shared/data/clipseg-shapes-prompted, trained on synthetic coloured shapes and following its
prompt, segments `--scenes` generated scenes (the scene generator beside it, a fixed seed); each
backend x precision's mean IoU with the ground truth is printed beside fp32's. The goal of issue
19: every fast path within 0.03 of fp32. Needs ../shared/data; writes JSON under benchmarks/results/.

    python benchmarks/bench_shapes_iou.py [--scenes 64] [--paths torch:fp32,torchscript:bf16,torchscript:int8]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import numpy as np
import torch
from _common import SHARED_DATA, write_result
from fastclipseg import FastSegmenter
from fastclipseg.engines import cpu_has_native_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--paths", default="torch:fp32,torch:bf16,torch:int8,torchscript:bf16,torchscript:int8",
                        help="comma-separated backend:precision pairs (torch:fp32, the reference, is always run)")
    args = parser.parse_args()
    folder = SHARED_DATA / "clipseg-shapes-prompted"
    if not folder.is_dir():
        sys.exit(f"{folder} is missing: this benchmark needs ../shared/data")

    spec = importlib.util.spec_from_file_location("shapes", SHARED_DATA / "shapes.py")
    shapes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shapes)
    rng = np.random.default_rng(args.seed)
    scenes = []
    for _ in range(args.scenes):
        image, objects = shapes.scene(rng)
        prompt, truth = shapes.query(rng, objects)
        scenes.append((image, prompt, truth))

    paths = ["torch:fp32"] + [pair for pair in args.paths.split(",") if pair != "torch:fp32"]
    rows, fp32 = {}, None
    for pair in paths:
        backend, precision = pair.split(":")
        if precision == "bf16" and not cpu_has_native_bf16():
            print(f"{pair}: skipped (this CPU has no native bf16)")
            continue
        segmenter = FastSegmenter.from_pretrained(folder, backend=backend, precision=precision, cache=False)
        iou = float(np.mean([shapes.iou(segmenter.segment(image, prompt).masks[0], truth)
                             for image, prompt, truth in scenes]))
        fp32 = iou if fp32 is None else fp32  # torch:fp32 runs first
        rows[pair] = {"mean_iou": round(iou, 4), "minus_fp32": round(iou - fp32, 4)}
        print(f"{pair}: mean IoU {iou:.4f} ({rows[pair]['minus_fp32']:+.4f} against fp32)", flush=True)
    within = all(abs(row["minus_fp32"]) <= 0.03 for row in rows.values())
    print(f"every path within 0.03 of fp32: {within}")
    record = {"model": "clipseg-shapes-prompted", "scenes": args.scenes, "seed": args.seed, "torch": torch.__version__,
              "rows": rows, "goals": {"within_0.03_of_fp32": within}}
    print(f"wrote {write_result('bench_shapes_iou', record)}")


if __name__ == "__main__":
    main()

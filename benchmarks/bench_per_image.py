"""What batch-invariant numerics cost on the CPU: each image through its own network calls
(`engines/per_image.py`, the CPU default) against whole batches, on the full-size model.

Both sides are the same segmenter (same weights, same compiled stages); only the engine wrapper
differs, and they are timed in turns in one process. Also checks what the wrapper is for: the
logits of an image alone equal its logits in the batch (per image) and differ without it.

    python benchmarks/bench_per_image.py [--threads 2] [--repeats 5] [--frames 8] [--backend torch] [--precision fp32]
"""

from __future__ import annotations

import argparse

import torch
from _common import (
    build_fullsize_model,
    interleaved_median_seconds,
    natural_image,
    write_result,
)
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, processor, _ = build_fullsize_model()
    segmenter = FastSegmenter(model, processor, backend=args.backend, precision=args.precision,
                              batch_size=args.frames)
    per_image = segmenter.engine
    batched = per_image.inner
    frames = [natural_image(720, 1280, seed=i) for i in range(args.frames)]
    prompts = ["a person", "a dog"]

    def run(engine):
        def call():
            segmenter.engine = engine
            return segmenter.segment_batch(frames, prompts)
        return call

    times = interleaved_median_seconds({"batched": run(batched), "per_image": run(per_image)}, args.repeats)
    segmenter.engine = per_image
    pixels = segmenter.pixel_values([*frames[:2], natural_image(480, 640, seed=99)])
    together = segmenter.predict_logits(pixels, [prompts] * 3)[1]
    alone = segmenter.predict_logits(pixels[1:2], [prompts])[0]
    segmenter.engine = batched
    batched_together = segmenter.predict_logits(pixels, [prompts] * 3)[1]
    segmenter.engine = per_image
    record = {
        "cpu": cpu_name(), "threads": args.threads, "backend": args.backend, "precision": args.precision,
        "frames": args.frames, "frame_size": [720, 1280], "prompts": len(prompts), "repeats": args.repeats,
        "seconds": {k: round(v, 4) for k, v in times.items()},
        "per_image_over_batched": round(times["per_image"] / times["batched"], 4),
        "alone_equals_in_batch_per_image": bool(torch.equal(alone, together)),
        "alone_minus_in_batch_batched_max_abs": float((alone - batched_together).abs().max()),
    }
    print(f"{args.frames} frames 720p x 2 prompts, {args.backend} {args.precision}, {args.threads} threads on "
          f"{record['cpu']}: batched {times['batched']:.3f} s, per image {times['per_image']:.3f} s "
          f"(x{record['per_image_over_batched']:.3f}); image alone == in batch: per image "
          f"{record['alone_equals_in_batch_per_image']}, batched differs by "
          f"{record['alone_minus_in_batch_batched_max_abs']:.2e}")
    print(f"wrote {write_result(f'per-image-{args.backend}-{args.precision}', record)}")


if __name__ == "__main__":
    main()

"""fastclipseg vs the transformers reference, in one process, on the full-size model.

Builds CLIPSeg in the CIDAS/clipseg-rd64-refined shape (random CLIP backbone; the real refined
decoder and CLIP vocabulary from ../shared/data when present: speed does not depend on weight
values) and times, for each case, the reference as its docs show it (processor + model, one
image copy per prompt) against `FastSegmenter.segment_batch` on the same uint8 images:

    1 image x 1 prompt, 1 image x 8 prompts, 8 images x 1 prompt

Both sides produce 352x352 logits from uint8 RGB images and text. fastclipseg's prompt cache is
cleared before every call, so neither side reuses text embeddings (the "cached" column shows
what the cache adds when prompts repeat, as in video). Prints medians and ratios and writes
JSON under benchmarks/results/.

    python benchmarks/bench_segment.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import transformers

from fastclipseg import FastSegmenter
from fastclipseg.model.random_model import random_reference_model

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PROMPTS = ["a cat", "the red car", "a dog", "a tree", "the sky", "a person", "a road", "a window"]


def natural_image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=2) * 200
    return np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per case (median reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for the JSON result")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    decoder = SHARED_DATA / "rd64-uni-refined.pth"
    vocab = SHARED_DATA / "bpe_simple_vocab_16e6.txt.gz"
    start = time.perf_counter()
    model, processor = random_reference_model(
        decoder_checkpoint=decoder if decoder.is_file() else None, bpe_vocab=vocab if vocab.is_file() else None
    )
    segmenter = FastSegmenter(model, processor)
    print(f"built full-size model in {time.perf_counter() - start:.1f} s "
          f"(real decoder: {decoder.is_file()}, real vocabulary: {vocab.is_file()})")

    images = [natural_image(480, 640, seed) for seed in range(8)]
    cases = {"1 image x 1 prompt": (images[:1], PROMPTS[:1]),
             "1 image x 8 prompts": (images[:1], PROMPTS),
             "8 images x 1 prompt": (images, PROMPTS[:1])}

    rows = []
    for name, (batch, prompts) in cases.items():
        def reference():
            pairs = [(image, prompt) for image in batch for prompt in prompts]
            inputs = processor(text=[p for _, p in pairs], images=[i for i, _ in pairs], padding=True, return_tensors="pt")
            with torch.inference_mode():
                return model(**inputs).logits

        def fast():
            segmenter.prompt_cache.clear()
            return segmenter.segment_batch(batch, prompts)

        def fast_cached():
            return segmenter.segment_batch(batch, prompts)

        # Same answer before timing: the comparison is of equal work.
        expected = reference()
        got = torch.cat([torch.from_numpy(r.logits) for r in fast()])
        error = ((got - expected).abs().max() / expected.abs().max()).item()

        t_ref = median_seconds(reference, args.repeats)
        t_fast = median_seconds(fast, args.repeats)
        t_cached = median_seconds(fast_cached, args.repeats)
        rows.append({"case": name, "reference_s": t_ref, "fastclipseg_s": t_fast, "fastclipseg_cached_prompts_s": t_cached,
                     "speedup": t_ref / t_fast, "speedup_cached_prompts": t_ref / t_cached, "max_relative_logit_error": error})
        print(f"  {name}: reference {t_ref * 1000:.0f} ms, fastclipseg {t_fast * 1000:.0f} ms", flush=True)

    header = f"| case | transformers (ms) | fastclipseg (ms) | speedup | cached prompts (ms) | speedup |"
    print("\n" + header + "\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['reference_s'] * 1000:.0f} | {r['fastclipseg_s'] * 1000:.0f} | {r['speedup']:.2f}x "
              f"| {r['fastclipseg_cached_prompts_s'] * 1000:.0f} | {r['speedup_cached_prompts']:.2f}x |")

    now = datetime.now(timezone.utc)
    result = {
        "benchmark": "bench_segment",
        "date": now.isoformat(timespec="seconds"),
        "device": f"cpu: {cpu_name()}",
        "threads": args.threads,
        "cores_visible": os.cpu_count(),
        "backend": "torch", "precision": "fp32",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "real_decoder_weights": decoder.is_file(),
        "image_size": [480, 640], "repeats": args.repeats,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_segment-cpu-{args.threads}threads-{now:%Y%m%d}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()

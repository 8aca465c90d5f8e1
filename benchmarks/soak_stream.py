"""Soak check (a script, not a CI test): 10,000 frames through `segment_stream` on the tiny test
model, resident memory sampled every 500 frames, which must stay flat within 5 %.

A leak of one frame's buffers per batch, or a result kept alive by the pipeline, shows here as
steady growth long before a real video runs out of memory. The first sample (frame 500) is the
baseline: by then the thread pools, allocator arenas and prompt cache are warm.

    python benchmarks/soak_stream.py [--frames 10000] [--every 500] [--tolerance 0.05]

Prints one line per sample, writes JSON to benchmarks/results/, exits 1 if memory grew past the
tolerance.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, natural_image, write_result

sys.path.insert(0, str(ROOT / "tests"))
from fastclipseg import FastSegmenter  # noqa: E402
from helpers.tiny_models import save_tiny_model  # noqa: E402  (the test suite's tiny random CLIPSeg)


def resident_bytes() -> int:
    """Current resident set size (VmRSS) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no /proc/self/status: the soak check reads resident memory from Linux's /proc")


def frames(count: int):
    """`count` fresh frames (a new array each, as a decoder gives), of a few sizes."""
    bank = [natural_image(72 + 8 * (i % 3), 96 + 16 * (i % 2), seed=i) for i in range(16)]
    for i in range(count):
        yield bank[i % len(bank)].copy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        segmenter = FastSegmenter.from_pretrained(save_tiny_model(Path(folder)))
    samples: list[dict] = []
    started = time.perf_counter()
    stream = segmenter.segment_stream(frames(args.frames), ["a cat", "red dog"], batch_size=args.batch_size)
    count = 0
    with stream:
        for result in stream:
            result.mask_records()  # the host outputs (RLE, scores) a writer would take
            count += 1
            if count % args.every == 0:
                samples.append({"frame": count, "rss_mb": round(resident_bytes() / 2**20, 1),
                                "seconds": round(time.perf_counter() - started, 1)})
                print(f"frame {count:6d}: {samples[-1]['rss_mb']:8.1f} MB RSS ({samples[-1]['seconds']} s)", flush=True)
    if count != args.frames:
        print(f"error: the stream gave {count} results for {args.frames} frames", file=sys.stderr)
        return 1
    baseline = samples[0]["rss_mb"]
    growth = max(s["rss_mb"] for s in samples) / baseline - 1
    flat = growth <= args.tolerance
    print(f"{count} frames in {time.perf_counter() - started:.0f} s; RSS from {baseline:.1f} MB (frame "
          f"{samples[0]['frame']}) peaked {growth:+.2%} above it: {'flat' if flat else 'NOT flat'} within "
          f"{args.tolerance:.0%}")
    path = write_result("soak-stream", {"frames": count, "batch_size": args.batch_size, "samples": samples,
                                        "growth": round(growth, 4), "tolerance": args.tolerance, "flat": flat})
    print(f"wrote {path}")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by the benchmark scripts (they live in the package, so `fastclipseg bench` has them too)."""

from __future__ import annotations

from pathlib import Path

from fastclipseg.bench import measure
from fastclipseg.bench.measure import (  # noqa: F401
    device_name,
    interleaved_median_seconds,
    natural_image,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def write_result(name: str, payload: dict, out: Path = RESULTS) -> Path:
    return measure.write_result(name, payload, out)


SHARED_DATA = ROOT.parent / "shared" / "data"


def build_fullsize_model():
    """CLIPSeg in the CIDAS/clipseg-rd64-refined shape with a random CLIP backbone, and the real
    refined decoder and CLIP vocabulary from ../shared/data when present (so masks and token ids
    are realistic; speed does not depend on weight values). Returns (model, processor,
    real_decoder_weights) and prints what was built."""
    import time

    from fastclipseg.model.random_model import random_reference_model

    decoder = SHARED_DATA / "rd64-uni-refined.pth"
    vocab = SHARED_DATA / "bpe_simple_vocab_16e6.txt.gz"
    started = time.perf_counter()
    model, processor = random_reference_model(
        decoder_checkpoint=decoder if decoder.is_file() else None, bpe_vocab=vocab if vocab.is_file() else None)
    print(f"built full-size model in {time.perf_counter() - started:.1f} s "
          f"(real decoder: {decoder.is_file()}, real vocabulary: {vocab.is_file()})", flush=True)
    return model, processor, decoder.is_file()


class VisionMaskCheck:
    """Mask agreement of a vision stage with fp32: its activations through the reference's fp32
    decoder, logits > 0 on the model's grid, 6 natural images x 4 prompts."""

    PROMPTS = ["a cat", "a person", "the sky", "a red car"]

    def __init__(self, reference) -> None:
        import torch

        self.reference = reference  # an fp32 torch FastSegmenter
        self.embeddings = reference.core.encode_prompts(self.PROMPTS)
        self.pairs = torch.zeros(len(self.PROMPTS), dtype=torch.long)

    def pixels(self, seed: int):
        return self.reference.pixel_values([measure.natural_image(480, 640, seed=seed)])

    def agreement(self, encode) -> float:
        import torch

        same = total = 0
        with torch.inference_mode():
            for seed in range(100, 106):
                image_pixels = self.pixels(seed)
                expected = self.reference.core.decode(self.reference.stages.vision(image_pixels), self.embeddings, self.pairs)
                logits = self.reference.core.decode(encode(image_pixels), self.embeddings, self.pairs)
                same += int(((logits > 0) == (expected > 0)).sum())
                total += logits.numel()
        return same / total


def vision_bench_arguments(doc: str):
    """The arguments shared by the vision-stage benchmarks (--threads, --repeats); sets torch's threads."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def write_vision_result(name: str, threads: int, rows: dict) -> Path:
    """`write_result` for a vision-stage benchmark: rows plus the CPU, its SIMD flags and torch.

    The file name carries the CPU's vendor (`bench_pt2e-intel-DATE.json`): the two CPU kinds of
    these machines give different answers, and both are kept.
    """
    import torch

    simd = [flag for flag in measure.cpu_flags() if flag.startswith(("avx", "amx"))]
    vendor = measure.cpu_name().split()[0].replace("(R)", "").lower()
    return write_result(f"{name}-{vendor}", {"cpu": measure.cpu_name(), "cpu_flags_simd": simd, "threads": threads,
                               "stage": "vision, 1 x 3 x 352 x 352", "torch": torch.__version__, "rows": rows})

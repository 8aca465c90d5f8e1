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

"""Helpers shared by the benchmark scripts (they live in the package, so `fastclipseg bench` has them too)."""

from __future__ import annotations

from pathlib import Path

from fastclipseg import benchmarking
from fastclipseg.benchmarking import device_name, interleaved_median_seconds, natural_image  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def write_result(name: str, payload: dict, out: Path = RESULTS) -> Path:
    return benchmarking.write_result(name, payload, out)

"""benchmarks/bench_gpu.py runs from start to end (on the CPU, with the tiny model).

What this checks is the script: every row is timed, the ratios and the FLOP floor are computed
and the rows that need CUDA are listed as not run. It asserts nothing about speed (the GPU numbers
come from running the script on a GPU; see README).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench_gpu():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_bench_gpu_runs_on_the_cpu_with_a_tiny_model(bench_gpu, tiny_reference):
    model, processor = tiny_reference
    payload = bench_gpu.run(model, processor, "cpu", batch_sizes=[1, 3], repeats=1, frame=(40, 60), prompts=2)
    assert [row["batch"] for row in payload["rows"]] == [1, 3]
    for row in payload["rows"]:
        assert set(row["frames_per_s"]) == {"transformers fp32", "fastclipseg fp32 eager", "fastclipseg end-to-end",
                                            "fastclipseg stream"}
        assert all(value > 0 for value in row["frames_per_s"].values())
        assert row["end_to_end_vs_transformers_fp32"] > 0 and row["stream_vs_transformers_fp32"] > 0
        assert row["best_network_fraction_of_floor"] > 0
    assert payload["backend"] == "torch" and payload["gpu"] is None
    assert any("CUDA graphs" in row for row in payload["rows_not_run"])


def test_bench_gpu_refuses_to_run_without_cuda(bench_gpu, capsys, monkeypatch):
    monkeypatch.setattr(bench_gpu.torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main(["--batch-sizes", "1"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err

"""`fastclipseg.bench.suite` on the tiny model: the record it writes, and its peak-memory processes."""

from __future__ import annotations

import pytest
import torch
from fastclipseg.bench.suite import run_benchmark, table
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor


@pytest.fixture(scope="module")
def record(tiny_model_dir):
    threads = torch.get_num_threads()
    model = CLIPSegForImageSegmentation.from_pretrained(tiny_model_dir).eval()
    processor = CLIPSegProcessor.from_pretrained(tiny_model_dir, backend="pil")
    result = run_benchmark(
        model, processor, model_source=str(tiny_model_dir), backends=["torch", "torchscript"],
        precisions=["fp32", "int8"], threads=1, repeats=1, frames=2, log=lambda line: None,
    )
    assert torch.get_num_threads() == threads  # restored: the benchmark ran with 1
    return result


def test_record_has_every_case_and_side(record):
    assert [row["case"] for row in record["rows"]] == ["1 image x 1 prompt", "1 image x 8 prompts", "2 frames 1280x720 x 2 prompts"]
    for row in record["rows"]:
        assert set(row["sides"]) == {"torch fp32", "torch int8", "torchscript fp32", "torchscript int8"}
        assert row["transformers_s"] > 0
        for name, side in row["sides"].items():
            assert side["seconds"] > 0 and side["speedup"] == pytest.approx(row["transformers_s"] / side["seconds"])
            if name.endswith("fp32"):  # the benchmark compares equal answers
                assert side["max_relative_logit_error"] < 1e-4 and side["mask_agreement"] > 0.999
    assert set(record["startup"]) == {"torch fp32", "torch int8", "torchscript fp32", "torchscript int8"}


def test_peak_memory_is_measured_in_fresh_processes(record):
    memory = record["peak_rss"]
    assert set(memory) == {"transformers", "torch fp32", "torch int8", "torchscript fp32", "torchscript int8"}
    for name, measured in memory.items():
        assert "error" not in measured, f"{name}: {measured}"
        # A fresh interpreter with torch imported holds well over 100 MB; a tiny model adds little.
        assert 100e6 < measured["peak_rss_1x1_bytes"] <= measured["peak_rss_bytes"] < 3e9
        assert measured["load_s"] > 0


def test_table_lists_every_side(record):
    text = table(record)
    assert text.count("| transformers |") == 3 and text.count("torchscript int8") == 3

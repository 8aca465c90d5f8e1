"""End-to-end speed: every backend x precision against the transformers reference, in one process.

Cases (uint8 RGB images and text in, 352x352 logits out on both sides):

- 1 image x 1 prompt and 1 image x 8 prompts (640x480): fastclipseg's prompt cache is cleared
  before every call, so neither side reuses text embeddings;
- N frames of 1280x720 x 2 prompts (video-like): fastclipseg keeps its prompt embeddings across
  calls, as a video run does; the reference runs its processor and model frame by frame.

The reference is transformers' own way (processor + `CLIPSegForImageSegmentation`, one image copy
per prompt). All sides are timed in turns (`interleaved_median_seconds`) so that drift in the
machine's speed affects each alike; medians and ratios are reported. Start-up is timed cold (an
empty cache: compiling) and cached. Peak RSS is measured for each side in fresh processes that
load it (compiled backends from an export folder, as a deployment would): one runs 1 image x 1
prompt alone, one runs every case once.

`fastclipseg bench --random-weights` needs no download: speed does not depend on weight values.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engines import available_precisions, cpu_has_native_bf16, onnxruntime_installed
from ..segmenter import FastSegmenter
from .measure import interleaved_median_seconds, natural_image, peak_rss_bytes

PROMPTS = ["a cat", "the red car", "a dog", "a tree", "the sky", "a person", "a road", "a window"]


@dataclass
class Case:
    name: str
    images: list[np.ndarray]
    prompts: list[str]
    reuse_prompts: bool  # video-like: prompt embeddings stay cached between calls


def make_cases(frames: int = 16, *, first_only: bool = False) -> list[Case]:
    """The cases in order; `first_only`: 1 image x 1 prompt alone (no other case's images made)."""
    photo = natural_image(480, 640, seed=0)
    cases = [Case("1 image x 1 prompt", [photo], PROMPTS[:1], False)]
    if first_only:
        return cases
    video = [natural_image(720, 1280, seed=1 + i) for i in range(frames)]
    return cases + [
        Case("1 image x 8 prompts", [photo], PROMPTS, False),
        Case(f"{frames} frames 1280x720 x 2 prompts", video, PROMPTS[:2], True),
    ]


def reference_runner(model, processor, case: Case, device: torch.device) -> Callable[[], torch.Tensor]:
    """transformers as its docs show it: one (image, prompt) pair per batch row, frame by frame."""

    def run() -> torch.Tensor:
        logits = []
        for image in case.images:
            inputs = processor(text=case.prompts, images=[image] * len(case.prompts), padding=True, return_tensors="pt")
            with torch.inference_mode():
                logits.append(model(**inputs.to(device)).logits.reshape(len(case.prompts), *inputs["pixel_values"].shape[-2:]).cpu())
        return torch.cat(logits)

    return run


def fastclipseg_runner(segmenter, case: Case) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        if not case.reuse_prompts:
            segmenter.prompt_cache.clear()
        results = segmenter.segment_batch(case.images, case.prompts)
        return torch.cat([torch.from_numpy(r.logits) for r in results])

    return run


def accuracy(got: torch.Tensor, expected: torch.Tensor) -> dict:
    """Max relative logit error, and the share of mask pixels (threshold 0.5) that agree."""
    return {
        "max_relative_logit_error": ((got - expected).abs().max() / expected.abs().max()).item(),
        "mask_agreement": ((got > 0) == (expected > 0)).double().mean().item(),
    }


def combinations(backends: Sequence[str], precisions: Sequence[str], device: torch.device) -> list[tuple[str, str]]:
    """The (backend, precision) pairs that this machine can run, in a stable order."""

    chosen = []
    for backend in backends:
        if backend == "onnxruntime" and not onnxruntime_installed():
            print("skipping onnxruntime: not installed (pip install 'fastclipseg[onnx]')", file=sys.stderr)
            continue
        for precision in precisions:
            if precision not in available_precisions(backend, device):
                continue
            if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
                print("skipping bf16: this CPU has no native bf16", file=sys.stderr)
                continue
            chosen.append((backend, precision))
    return chosen


# -- peak memory, one fresh process per side ------------------------------------------------------


def _rss_worker(spec: dict) -> dict:
    """Load one side as `spec` says, run every case once (or only the first, with
    `first_case_only`), report the process's peak RSS."""
    torch.set_num_threads(spec["threads"])
    cases = make_cases(spec["frames"], first_only=spec.get("first_case_only", False))
    started = time.perf_counter()
    if spec["side"] == "reference" or spec.get("export") is None:
        model, processor = load_model(spec["model"])
    if spec["side"] == "reference":
        runs = [reference_runner(model, processor, case, torch.device("cpu")) for case in cases]
    else:

        if spec.get("export"):
            segmenter = FastSegmenter.from_pretrained(spec["export"])
        else:
            segmenter = FastSegmenter(model, processor, backend=spec["backend"], precision=spec["precision"], cache=False)
        runs = [fastclipseg_runner(segmenter, case) for case in cases]
    load_s = time.perf_counter() - started
    peaks = []
    for run in runs:
        run()
        peaks.append(peak_rss_bytes())
    # The peak is the process's high-water mark: after the first case and after every case.
    return {"peak_rss_bytes": peaks[-1], "peak_rss_1x1_bytes": peaks[0], "load_s": load_s}


def measure_peak_rss(spec: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "fastclipseg.bench.suite", "--rss-worker", json.dumps(spec)],
        capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-3:]
        return {"error": f"exit {completed.returncode}: {' | '.join(tail)}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_side_rss(spec: dict) -> dict:
    """Peak RSS of one side in two fresh processes: one that runs 1 image x 1 prompt alone (issue
    19's memory goal: no other case's images or buffers held) and one that runs every case."""
    alone = measure_peak_rss({**spec, "first_case_only": True})
    every = measure_peak_rss(spec)
    failed = next((result for result in (alone, every) if "error" in result), None)
    if failed is not None:
        return failed
    return {"peak_rss_1x1_bytes": alone["peak_rss_bytes"], "peak_rss_bytes": every["peak_rss_bytes"],
            "peak_rss_1x1_among_all_cases_bytes": every["peak_rss_1x1_bytes"], "load_s": every["load_s"]}


def load_model(source: str):
    """`random` (the CIDAS/clipseg-rd64-refined shape, random weights) or a model id/folder."""
    # Imported here: they import transformers (0.15 GB), which a peak-memory process of an export
    # side must not count, as `fastclipseg` loading an export does not import it.
    from ..model.loading import load_model_and_processor
    from ..model.random_model import random_reference_model

    if source == "random":
        return random_reference_model()
    # The reference runs transformers' own forward and processor: load them, not the standalone tree.
    return load_model_and_processor(source, with_transformers=True)


# -- the benchmark ------------------------------------------------------------------------------


def run_benchmark(
    model,
    processor,
    *,
    model_source: str,
    backends: Sequence[str],
    precisions: Sequence[str],
    threads: int,
    repeats: int,
    frames: int = 16,
    device: str = "cpu",
    measure_rss: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Time the reference and every runnable (backend, precision); returns the result record.

    `model_source` ("random", a hub id or a folder) tells the peak-memory processes what to load.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(model, processor, model_source, backends, precisions, threads, repeats, frames, device, measure_rss, log)
    finally:
        torch.set_num_threads(previous_threads)  # a library call leaves the process as it found it


def _run(model, processor, model_source, backends, precisions, threads, repeats, frames, device, measure_rss, log) -> dict:

    device_ = torch.device(device)
    cases = make_cases(frames)
    combos = combinations(backends, precisions, device_)
    model.to(device_)
    segmenters, startup = {}, {}
    with tempfile.TemporaryDirectory(prefix="fastclipseg-bench-") as scratch:
        for backend, precision in combos:
            name = f"{backend} {precision}"
            log(f"starting {name} ...")
            cold = time.perf_counter()
            FastSegmenter(model, processor, device=device_, backend=backend, precision=precision, cache_dir=scratch)
            cold = time.perf_counter() - cold
            cached = time.perf_counter()
            segmenters[name] = FastSegmenter(model, processor, device=device_, backend=backend, precision=precision,
                                             cache_dir=scratch)
            startup[name] = {"cold_s": cold, "cached_s": time.perf_counter() - cached}
            log(f"  start-up: cold {startup[name]['cold_s']:.1f} s, cached {startup[name]['cached_s']:.2f} s")

        rows = []
        for case in cases:
            log(f"case {case.name}: timing {len(segmenters) + 1} sides in turns, {repeats} repeats ...")
            reference = reference_runner(model, processor, case, device_)
            expected = reference()
            runners = {"transformers": reference}
            row = {"case": case.name, "sides": {}}
            for name, segmenter in segmenters.items():
                runners[name] = fastclipseg_runner(segmenter, case)
                row["sides"][name] = accuracy(runners[name](), expected)
            medians = interleaved_median_seconds(runners, repeats)
            row["transformers_s"] = medians.pop("transformers")
            for name, seconds in medians.items():
                row["sides"][name].update({"seconds": seconds, "speedup": row["transformers_s"] / seconds})
            rows.append(row)
            best = max(row["sides"].items(), key=lambda item: item[1]["speedup"]) if row["sides"] else None
            if best:
                log(f"  transformers {row['transformers_s'] * 1000:.0f} ms; best {best[0]} "
                    f"{best[1]['seconds'] * 1000:.0f} ms ({best[1]['speedup']:.2f}x)")

        memory = {}
        if measure_rss and device_.type == "cpu":
            base = {"threads": threads, "frames": frames, "model": model_source}
            log("peak RSS: transformers ...")
            memory["transformers"] = measure_side_rss({**base, "side": "reference"})
            for (backend, precision), name in zip(combos, segmenters):
                log(f"peak RSS: {name} ...")
                export = None
                if backend != "torch":
                    export = str(Path(scratch) / f"export-{backend}-{precision}")
                    segmenters[name].export(export, backend=backend, precision=precision)  # copies the cached build
                memory[name] = measure_side_rss({**base, "side": "fastclipseg", "backend": backend,
                                                 "precision": precision, "export": export})

    return {"threads": threads, "repeats": repeats, "network_device": str(device_), "model": model_source,
            "torch": torch.__version__, "rows": rows, "startup": startup, "peak_rss": memory}


def table(record: dict) -> str:
    """A Markdown table of a `run_benchmark` record: per case and side, ms and speedup."""
    lines = ["| case | side | ms | speedup | mask agreement | start-up cold / cached (s) | peak RSS 1x1 / all (GB) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    rss = record.get("peak_rss", {})

    def gb(name: str) -> str:
        measured = rss.get(name, {})
        if not measured.get("peak_rss_bytes"):
            return "-"
        return f"{measured.get('peak_rss_1x1_bytes', 0) / 1e9:.2f} / {measured['peak_rss_bytes'] / 1e9:.2f}"

    for row in record["rows"]:
        lines.append(f"| {row['case']} | transformers | {row['transformers_s'] * 1000:.0f} | 1.00x | - | - | {gb('transformers')} |")
        for name, side in row["sides"].items():
            start = record["startup"].get(name, {})
            lines.append(
                f"| {row['case']} | {name} | {side['seconds'] * 1000:.0f} | {side['speedup']:.2f}x | "
                f"{side['mask_agreement']:.2%} | {start.get('cold_s', 0):.1f} / {start.get('cached_s', 0):.2f} | {gb(name)} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    # The peak-memory worker: `python -m fastclipseg.bench.suite --rss-worker '<json spec>'`.
    if len(sys.argv) == 3 and sys.argv[1] == "--rss-worker":
        print(json.dumps(_rss_worker(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: fastclipseg bench --help (this module's own entry point is for its worker processes)")

"""Start-up time of the command line (issue 17): `fastclipseg segment` on one 640x480 image with one
prompt, from process start to exit, for a model folder loaded without transformers, an export of
it (TorchScript fp32), and the same folder loaded through transformers (the old way,
FASTCLIPSEG_LOAD_WITH_TRANSFORMERS=1); also `python -c "import fastclipseg"` and `fastclipseg --help`.

The model has the full CIDAS/clipseg-rd64-refined shape with random CLIP weights (the real refined
decoder and vocabulary from ../shared/data when present), saved once into a temporary folder with
save_pretrained. Every side is a fresh process, timed in turns (one untimed warm-up run each, so the
files are in the page cache for all), and medians are reported with each side's ratio to the old way.

    python benchmarks/bench_startup.py [--rounds 5] [--threads N] [--note "machine idle"]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import build_fullsize_model, natural_image, write_result
from fastclipseg.bench.measure import cpu_name

SEGMENT_SIDES = ("folder", "export", "transformers")


def _fastclipseg(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "fastclipseg", *arguments]


def prepare(scratch: Path) -> tuple[Path, Path, Path]:
    """(model folder, its torchscript fp32 export, a 640x480 PNG) in `scratch`."""
    from fastclipseg import FastSegmenter
    from PIL import Image

    folder, export = scratch / "model", scratch / "export"
    model, processor, _ = build_fullsize_model()
    started = time.perf_counter()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    print(f"saved the model folder in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    FastSegmenter.from_pretrained(folder, cache=False).export(export, backend="torchscript", precision="fp32")
    print(f"exported (torchscript fp32) in {time.perf_counter() - started:.1f} s", flush=True)
    image = scratch / "image.png"
    Image.fromarray(natural_image(480, 640, seed=0)).save(image)
    return folder, export, image


def commands(folder: Path, export: Path, image: Path, out: Path, threads: int | None) -> dict[str, tuple[list, dict]]:
    """Each side's command line and environment."""
    base = {key: value for key, value in os.environ.items() if key != "FASTCLIPSEG_LOAD_WITH_TRANSFORMERS"}
    options = ["--threads", str(threads)] if threads else []

    def segment(model: Path, side: str) -> list[str]:
        return _fastclipseg("segment", str(image), "-p", "a cat", "-m", str(model), "-o", str(out / side), *options)

    return {
        "import": ([sys.executable, "-c", "import fastclipseg"], base),
        "help": (_fastclipseg("--help"), base),
        "folder": (segment(folder, "folder"), base),
        "export": (segment(export, "export"), base),
        "transformers": (segment(folder, "transformers"), {**base, "FASTCLIPSEG_LOAD_WITH_TRANSFORMERS": "1"}),
    }


def run_once(command: list[str], environment: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


def interleaved(sides: dict[str, tuple[list, dict]], rounds: int) -> dict[str, list[float]]:
    """Seconds per run of each side, the sides taking turns (after one untimed run each)."""
    for command, environment in sides.values():
        run_once(command, environment)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(rounds):
        for name, (command, environment) in sides.items():
            times[name].append(run_once(command, environment))
        print(f"round {index + 1}/{rounds}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    return times


def same_masks(out: Path) -> dict[str, bool]:
    """Whether each segment side wrote the masks (RLE) the transformers side wrote."""
    def masks(side: str) -> list:
        result = json.loads((out / side / "image.json").read_text())
        return [(entry["prompt"], entry["rle"]) for entry in result["masks"]]

    expected = masks("transformers")
    return {side: masks(side) == expected for side in SEGMENT_SIDES if side != "transformers"}


def table(medians: dict[str, float]) -> str:
    reference = medians["transformers"]
    lines = ["| side | median s | vs transformers |", "| --- | --- | --- |"]
    labels = {"import": "python -c 'import fastclipseg'", "help": "fastclipseg --help",
              "folder": "segment, model folder (no transformers)", "export": "segment, export (torchscript fp32)",
              "transformers": "segment, model folder via transformers"}
    for name, seconds in medians.items():
        lines.append(f"| {labels[name]} | {seconds:.2f} | {reference / seconds:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="--threads for segment (default: all cores)")
    parser.add_argument("--note", default="", help="what else the machine was doing, for the record")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fastclipseg-startup-") as scratch_name:
        scratch = Path(scratch_name)
        folder, export, image = prepare(scratch)
        sides = commands(folder, export, image, scratch / "out", args.threads)
        times = interleaved(sides, args.rounds)
        agreement = same_masks(scratch / "out")
        folder_bytes = sum(path.stat().st_size for path in folder.iterdir())
    medians = {name: statistics.median(values) for name, values in times.items()}
    record = {
        "cpu": cpu_name(), "threads": args.threads, "rounds": args.rounds, "note": args.note,
        "python": sys.version.split()[0], "image": [480, 640], "prompts": 1, "model_folder_bytes": folder_bytes,
        "seconds_median": {name: round(value, 3) for name, value in medians.items()},
        "seconds_all": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "speedup_vs_transformers": {name: round(medians["transformers"] / value, 3) for name, value in medians.items()},
        "same_masks_as_transformers": agreement,
    }
    print(table(medians))
    print(f"same masks as the transformers side: {agreement}")
    path = write_result("bench_startup", record, args.out) if args.out else write_result("bench_startup", record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

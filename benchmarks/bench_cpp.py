"""The C++ runtime (fastclipseg::Segmenter, examples/cpp) against the Python API, on the same
export of the full-size model (CIDAS/clipseg-rd64-refined shape, random CLIP weights, the real
decoder when ../shared/data has it): fp32 TorchScript by default, `--backend aoti` and
`--precision bf16` for the others the runtime loads.

- 1x1 and 1x8: one 640x480 image with 1 and 8 prompts, everything a caller gets (RLE, scores,
  stability, areas, boxes: Python's `segment(...).to_dict()`), prompts cached, median of
  `--repeats` calls after 3 warm-up calls; the C++ side in its own process (benchmarks/cpp/bench_segment).
- start-up: a fresh process that loads the export, segments one PNG with one prompt and prints
  the JSON: `segment_image` against `python -c "FastSegmenter.from_pretrained(...).segment(...)"`.

The sides take turns for `--rounds` rounds, and the medians over rounds are reported, so drift
on a shared machine hits both alike. Builds benchmarks/cpp against the installed package.

    python benchmarks/bench_cpp.py [--threads 2] [--repeats 7] [--rounds 3] [--backend torchscript] [--precision fp32]
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

import fastclipseg
import torch
from _common import ROOT, build_fullsize_model, natural_image, write_result
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import cpu_flags, cpu_name
from PIL import Image

PROMPTS = ["a person", "a dog", "a car", "a tree", "the sky", "a road", "a building", "grass"]
HEIGHT, WIDTH = 480, 640


def build(build_dir: Path) -> Path:
    prefix_path = ";".join([fastclipseg.cmake_dir(), torch.utils.cmake_prefix_path])
    for command in (["cmake", "-S", str(ROOT / "benchmarks" / "cpp"), "-B", str(build_dir),
                     "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix_path}"],
                    ["cmake", "--build", str(build_dir), "--parallel", "2"]):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return build_dir


def wall_seconds(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="torchscript", choices=["torchscript", "aoti"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        programs = build(scratch / "build")
        model, processor, _ = build_fullsize_model()
        segmenter = FastSegmenter(model, processor, backend=args.backend, precision=args.precision)
        export = segmenter.export(scratch / "export", backend=args.backend, precision=args.precision)
        del model, segmenter
        image = natural_image(HEIGHT, WIDTH)
        (scratch / "image.rgb").write_bytes(image.tobytes())
        Image.fromarray(image).save(scratch / "image.png")
        python = FastSegmenter.from_pretrained(export)

        def cpp_call(prompts: int) -> float:
            out = subprocess.run([str(programs / "bench_segment"), str(export), str(scratch / "image.rgb"),
                                  str(WIDTH), str(HEIGHT), str(prompts), str(args.repeats)],
                                 check=True, capture_output=True, env=env)
            return json.loads(out.stdout)["median_s"]

        def python_call(prompts: int) -> float:
            chosen = PROMPTS[:prompts]
            for _ in range(3):  # warm-up (the prompt cache), as many calls as the C++ side's
                python.segment(image, chosen).to_dict()
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                python.segment(image, chosen).to_dict()
                times.append(time.perf_counter() - started)
            return statistics.median(times)

        startup = {
            "cpp": [str(programs / "examples" / "segment_image"), str(export), str(scratch / "image.png"), "a person"],
            "python": [sys.executable, "-c", "import sys; from fastclipseg import FastSegmenter; "
                       "s = FastSegmenter.from_pretrained(sys.argv[1]); "
                       "print(s.segment(sys.argv[2], ['a person']).to_json())",
                       str(export), str(scratch / "image.png")],
        }
        samples: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            for prompts in (1, 8):
                samples.setdefault(f"cpp_1x{prompts}", []).append(cpp_call(prompts))
                samples.setdefault(f"python_1x{prompts}", []).append(python_call(prompts))
            for side, command in startup.items():
                samples.setdefault(f"{side}_startup", []).append(wall_seconds(command, env))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in samples.items()), flush=True)

    seconds = {name: round(statistics.median(values), 4) for name, values in samples.items()}
    ratios = {case: round(seconds[f"python_{case}"] / seconds[f"cpp_{case}"], 3) for case in ("1x1", "1x8", "startup")}
    record = {
        "cpu": cpu_name(), "cpu_flags": [f for f in cpu_flags() if f.startswith(("avx", "amx"))],
        "threads": args.threads, "image": [HEIGHT, WIDTH], "backend": args.backend, "precision": args.precision,
        "repeats": args.repeats, "rounds": args.rounds, "seconds": seconds, "python_over_cpp": ratios,
        "samples": {k: [round(v, 4) for v in values] for k, values in samples.items()},
    }
    print(f"{record['cpu']}, {args.threads} threads, {args.backend} {args.precision}, {WIDTH}x{HEIGHT}:")
    for case in ("1x1", "1x8", "startup"):
        print(f"  {case:8s} python {seconds[f'python_{case}']:.3f} s  C++ {seconds[f'cpp_{case}']:.3f} s  "
              f"(python / C++ = {ratios[case]:.2f})")
    name = "bench_cpp" if (args.backend, args.precision) == ("torchscript", "fp32") else f"bench_cpp-{args.backend}-{args.precision}"
    print(f"wrote {write_result(name, record)}")


if __name__ == "__main__":
    main()

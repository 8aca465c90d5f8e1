"""Interactive sessions: what the first prompt of a session costs, and what each later one costs.

Full-size model (CIDAS/clipseg-rd64-refined shape, random CLIP; the real refined decoder and CLIP
vocabulary from ../shared/data when present), one 640x480 image, in one process:

- first: `seg.session(image)` + `sess.segment(prompt)` (the vision stage, the prompt stage, the
  decoder, and the native post-processing of the mask's summary);
- later, new prompt: `sess.segment(another prompt)` on the same session (prompt stage + decoder);
- later, cached prompt: a prompt the session has seen (decoder only);
- refine: `sess.refine("exclude ...")` alone (one new term, and the fuzzy combination at full
  size), always from the same current mask ("a cat", segmented before timing; `undo()`, a list
  pop, steps back after each). That mask's full-size probabilities are computed before timing,
  so the figure is the refinement's own work.

Each figure is the median of `--repeats` runs timed in turns; the ratio later / first is the
goal's measure (<= 15 %). Writes JSON under benchmarks/results/.

    python benchmarks/bench_session.py [--threads 2] [--repeats 7] [--backend torch] [--precision fp32]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
from _common import (
    RESULTS,
    build_fullsize_model,
    device_name,
    interleaved_median_seconds,
    natural_image,
    write_result,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from fastclipseg import FastSegmenter

    model, processor, real_decoder = build_fullsize_model()
    segmenter = FastSegmenter(model, processor, backend=args.backend, precision=args.precision, threads=args.threads)
    image = natural_image(480, 640)
    fresh = (f"a prompt number {n}" for n in itertools.count())
    session = segmenter.session(image)
    session.segment("a cat")

    def first():
        segmenter.prompt_cache.clear()
        s = segmenter.session(image)
        s.segment(next(fresh)).scores  # noqa: B018 - the summary pass, as a user reads it

    def later_new():
        session.segment(next(fresh)).scores  # noqa: B018

    def later_cached():
        session.segment("a cat").scores  # noqa: B018

    # A session of its own, so that the other cases do not change its current mask.
    refining = segmenter.session(image)
    refining.segment("a cat").probs  # noqa: B018 - the current mask's probabilities, once

    def refine():
        refining.refine(f"exclude {next(fresh)}").scores  # noqa: B018
        refining.undo()  # back to "a cat" for the next turn (a list pop: nothing to time)

    started = time.perf_counter()
    medians = interleaved_median_seconds(
        {"first": first, "later_new_prompt": later_new, "later_cached_prompt": later_cached, "refine": refine},
        repeats=args.repeats)
    ratios = {name: round(seconds / medians["first"], 4) for name, seconds in medians.items()}
    for name, seconds in medians.items():
        print(f"{name:>20}: {1000 * seconds:8.1f} ms   {100 * ratios[name]:5.1f} % of the first", flush=True)
    record = {
        "benchmark": "bench_session", "device": device_name(), "threads": args.threads, "backend": args.backend,
        "precision": args.precision, "image": [640, 480], "repeats": args.repeats, "torch": torch.__version__,
        "real_decoder_weights": real_decoder, "median_seconds": medians, "fraction_of_first": ratios,
        "goal_later<=15%": ratios["later_new_prompt"] <= 0.15, "seconds_total": round(time.perf_counter() - started, 1),
    }
    print(f"wrote {write_result(f'bench_session-cpu-{args.threads}threads-{args.backend}-{args.precision}', record, args.out)}")


if __name__ == "__main__":
    main()

"""fastclipseg vs the transformers reference, in one process, on the full-size model.

Builds CLIPSeg in the CIDAS/clipseg-rd64-refined shape (random CLIP backbone; the real refined
decoder and CLIP vocabulary from ../shared/data when present: speed does not depend on weight
values) and times, for each case, the reference as its docs show it (processor + model, one
image copy per prompt) against `FastSegmenter.segment_batch` on the same uint8 images:

    1 image x 1 prompt, 1 image x 8 prompts, 8 images x 1 prompt

Both sides produce 352x352 logits from uint8 RGB images and text. fastclipseg's prompt cache is
cleared before every call, so neither side reuses text embeddings (the "cached" column shows
what the cache adds when prompts repeat, as in video). The three are timed in turns, so drift in
the machine's speed affects each alike. Prints medians and ratios and writes JSON under
benchmarks/results/.

    python benchmarks/bench_segment.py [--threads 2] [--repeats 5] [--device cuda]

With `--device cuda` both sides run the network on the GPU in fp32 (TF32 off: the same
arithmetic as the parity tests); preprocessing stays on the CPU on both sides.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import transformers

from fastclipseg import FastSegmenter
from fastclipseg.model.random_model import random_reference_model

from _common import RESULTS, ROOT, interleaved_median_seconds, natural_image, write_result

SHARED_DATA = ROOT.parent / "shared" / "data"
PROMPTS = ["a cat", "the red car", "a dog", "a tree", "the sky", "a person", "a road", "a window"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per case (median reported)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    parser.add_argument("--device", default="cpu", help="torch device for the network on both sides (default cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    decoder = SHARED_DATA / "rd64-uni-refined.pth"
    vocab = SHARED_DATA / "bpe_simple_vocab_16e6.txt.gz"
    start = time.perf_counter()
    model, processor = random_reference_model(
        decoder_checkpoint=decoder if decoder.is_file() else None, bpe_vocab=vocab if vocab.is_file() else None
    )
    model.to(device)
    segmenter = FastSegmenter(model, processor, device=device)  # shares the model's parameters
    print(f"built full-size model in {time.perf_counter() - start:.1f} s "
          f"(real decoder: {decoder.is_file()}, real vocabulary: {vocab.is_file()})")

    images = [natural_image(480, 640, seed) for seed in range(8)]
    cases = {"1 image x 1 prompt": (images[:1], PROMPTS[:1]),
             "1 image x 8 prompts": (images[:1], PROMPTS),
             "8 images x 1 prompt": (images, PROMPTS[:1])}

    rows = []
    for name, (batch, prompts) in cases.items():
        def reference():
            pairs = [(image, prompt) for image in batch for prompt in prompts]
            inputs = processor(text=[p for _, p in pairs], images=[i for i, _ in pairs], padding=True, return_tensors="pt")
            with torch.inference_mode():
                return model(**inputs.to(device)).logits.cpu()  # .cpu() waits for the GPU, as ours does

        def fast():
            segmenter.prompt_cache.clear()
            return segmenter.segment_batch(batch, prompts)

        def fast_cached():
            return segmenter.segment_batch(batch, prompts)

        # Same answer before timing: the comparison is of equal work.
        expected = reference()
        got = torch.cat([torch.from_numpy(r.logits) for r in fast()])
        error = ((got - expected).abs().max() / expected.abs().max()).item()

        medians = interleaved_median_seconds({"reference": reference, "fast": fast, "cached": fast_cached}, args.repeats)
        t_ref, t_fast, t_cached = medians["reference"], medians["fast"], medians["cached"]
        rows.append({"case": name, "reference_s": t_ref, "fastclipseg_s": t_fast, "fastclipseg_cached_prompts_s": t_cached,
                     "speedup": t_ref / t_fast, "speedup_cached_prompts": t_ref / t_cached, "max_relative_logit_error": error})
        print(f"  {name}: reference {t_ref * 1000:.0f} ms, fastclipseg {t_fast * 1000:.0f} ms", flush=True)

    header = "| case | transformers (ms) | fastclipseg (ms) | speedup | cached prompts (ms) | speedup |"
    print("\n" + header + "\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['reference_s'] * 1000:.0f} | {r['fastclipseg_s'] * 1000:.0f} | {r['speedup']:.2f}x "
              f"| {r['fastclipseg_cached_prompts_s'] * 1000:.0f} | {r['speedup_cached_prompts']:.2f}x |")

    name = f"bench_segment-cpu-{args.threads}threads" if device.type == "cpu" else f"bench_segment-{device.type}"
    path = write_result(name, {
        "threads": args.threads, "backend": "torch", "precision": "fp32", "network_device": str(device),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "real_decoder_weights": decoder.is_file(), "image_size": [480, 640], "repeats": args.repeats, "rows": rows,
    }, args.out)
    print(f"\nwrote {path}")

if __name__ == "__main__":
    main()

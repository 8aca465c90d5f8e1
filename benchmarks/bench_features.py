"""Zero-shot semantic segmentation of one image into N classes: dense CLIP features vs CLIPSeg's decoder.

Full-size model (CIDAS/clipseg-rd64-refined shape, random CLIP; the real refined decoder and CLIP
vocabulary from ../shared/data when present), one 640x480 image, N = 20 classes (`--classes`), in
one process, timed in turns (`interleaved_median_seconds`):

- dense: `fastclipseg.features.semantic_segment` (one vision pass to hidden state 10, the last 2
  encoder layers with the last one modified per `--method`, N cached text embeddings, cosine maps
  upsampled to 640x480, argmax, per-class scores);
- decoder: `segmenter.segment(image, classes).scores` (one vision pass, N decoder passes, the native
  post-processing's summary at 640x480);
- transformers: `CLIPSegProcessor(text=classes, images=[image] * N)` + `CLIPSegForImageSegmentation`
  (N vision passes, N text passes, N decoder passes; logits at 352x352, no post-processing);
- vision stage: `segmenter.engine.encode_images` alone, the part the two fastclipseg sides share.

Prompt embeddings are cached (computed once before timing) on the fastclipseg sides; transformers
has no cache. Prints the medians and ratios and writes JSON under benchmarks/results/.

    python benchmarks/bench_features.py [--threads 2] [--repeats 5] [--classes 20] [--method clearclip]
                                        [--backend torch] [--precision fp32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import transformers
from _common import (
    RESULTS,
    build_fullsize_model,
    interleaved_median_seconds,
    natural_image,
    write_result,
)

# Pascal VOC's 20 object classes, then more everyday things for larger N.
CLASS_NAMES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
    "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor", "sky", "road", "tree",
    "grass", "building", "water", "wall", "floor", "ceiling", "window",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for every side (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side (median reported)")
    parser.add_argument("--classes", type=int, default=20, help=f"N classes (at most {len(CLASS_NAMES)})")
    parser.add_argument("--method", default="clearclip", choices=["clearclip", "maskclip"])
    parser.add_argument("--backend", default="torch", help="the fastclipseg sides' backend (default torch)")
    parser.add_argument("--precision", default="fp32", help="the fastclipseg sides' precision (default fp32)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    args = parser.parse_args()
    if not 1 <= args.classes <= len(CLASS_NAMES):
        parser.error(f"--classes must be in 1..{len(CLASS_NAMES)}")
    torch.set_num_threads(args.threads)

    from fastclipseg import FastSegmenter
    from fastclipseg.features import semantic_segment

    started = time.perf_counter()
    model, processor, real_decoder = build_fullsize_model()
    segmenter = FastSegmenter(model, processor, backend=args.backend, precision=args.precision, threads=args.threads)

    image = natural_image(480, 640)
    classes = CLASS_NAMES[: args.classes]
    segmenter.encode_prompts(classes)  # cached for both fastclipseg sides
    pixels = segmenter.pixel_values([image])

    def dense():
        return semantic_segment(segmenter, image, classes, method=args.method).labels

    def decoder_passes():
        return segmenter.segment(image, classes).scores

    def reference():
        inputs = processor(text=classes, images=[image] * len(classes), padding=True, return_tensors="pt")
        with torch.inference_mode():
            return model(**inputs).logits

    def vision_stage():
        return segmenter.engine.encode_images(pixels)

    medians = interleaved_median_seconds(
        {"dense": dense, "decoder": decoder_passes, "transformers": reference, "vision_stage": vision_stage},
        repeats=args.repeats)
    ratios = {
        "decoder/dense": medians["decoder"] / medians["dense"],
        "transformers/dense": medians["transformers"] / medians["dense"],
        "transformers/decoder": medians["transformers"] / medians["decoder"],
        "vision_stage/dense": medians["vision_stage"] / medians["dense"],
    }
    labels = {
        "dense": f"dense features ({args.method}) + {len(classes)} cached texts",
        "decoder": f"CLIPSeg: 1 vision + {len(classes)} decoder passes",
        "transformers": f"transformers: {len(classes)} image copies",
        "vision_stage": "vision stage alone (shared)",
    }
    print(f"\n{len(classes)} classes, 640x480 image, {args.threads} threads, {args.backend} {args.precision}, "
          f"median of {args.repeats}:")
    for name, seconds in medians.items():
        print(f"  {labels[name]:<48} {1000 * seconds:9.1f} ms")
    for name, ratio in ratios.items():
        print(f"  {name:<24} {ratio:6.2f}x")
    record = {
        "threads": args.threads, "backend": args.backend, "precision": args.precision, "method": args.method,
        "classes": len(classes), "image": [640, 480], "repeats": args.repeats, "torch": torch.__version__,
        "transformers": transformers.__version__, "real_decoder_weights": real_decoder,
        "median_seconds": medians, "ratios": ratios, "seconds_total": round(time.perf_counter() - started, 1),
    }
    name = f"bench_features-cpu-{args.threads}threads-{args.backend}-{args.precision}"
    print(f"\nwrote {write_result(name, record, args.out)}")


if __name__ == "__main__":
    main()

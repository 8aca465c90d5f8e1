"""Native pre/post-processing kernels vs the library path, in one process.

Preprocess: `fastclipseg.ops.preprocess` vs the transformers image processor (ViTImageProcessorPil,
352x352 bilinear, ImageNet mean/std: CLIPSeg's) on uint8 RGB frames.
Postprocess: `fastclipseg.ops.postprocess` (masks, COCO RLE, area, bbox, score) vs
`torch.nn.functional.interpolate` + sigmoid + threshold + `pycocotools.mask.encode` (+ area,
toBbox, mean probability inside the mask), for K = 1 and 8 masks of 352x352 logits.

Frame sizes 640x480, 1920x1080 and 3840x2160; single-threaded (torch.set_num_threads(1),
threads=1) and with all threads; library and ours are timed in turns. Prints medians and ratios
and writes JSON under benchmarks/results/.

    python benchmarks/bench_kernels.py [--repeats 21]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from _common import RESULTS, interleaved_median_seconds, natural_image, write_result
from fastclipseg import ops
from pycocotools import mask as coco_mask
from transformers import ViTImageProcessorPil

SIZES = {"640x480": (480, 640), "1920x1080": (1080, 1920), "3840x2160": (2160, 3840)}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def blob_logits(k: int, side: int = 352, seed: int = 0) -> np.ndarray:
    """Smooth logits with a few blobs, like a real mask's (random noise would make unrealistic RLE)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = np.full((k, side, side), -4.0, np.float32)
    for i in range(k):
        for _ in range(3):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
            out[i] += 10 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return out


def median_ms(library, ours, repeats: int) -> tuple[float, float]:
    """Medians in ms of the library path and ours, timed in turns (see interleaved_median_seconds)."""
    medians = interleaved_median_seconds({"library": library, "ours": ours}, repeats, warmup=3)
    return 1000 * medians["library"], 1000 * medians["ours"]


def library_postprocess(logits: np.ndarray, size: tuple[int, int], threshold: float = 0.5):
    probs = torch.sigmoid(F.interpolate(torch.from_numpy(logits)[None], size=size, mode="bilinear", align_corners=False)[0])
    masks = (probs > threshold).numpy()
    rle = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    area = coco_mask.area(rle)
    bbox = coco_mask.toBbox(rle)
    probs_np = probs.numpy()
    score = [float(probs_np[i][masks[i]].mean()) if masks[i].any() else 0.0 for i in range(len(masks))]
    return masks, rle, area, bbox, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21, help="timed repetitions per case (median reported)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    args = parser.parse_args()
    all_threads = os.cpu_count() or 1
    processor = ViTImageProcessorPil(size={"height": 352, "width": 352}, image_mean=list(MEAN), image_std=list(STD))

    rows = []
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        for name, (height, width) in SIZES.items():
            image = natural_image(height, width)
            reference = processor(images=[image], return_tensors="np")["pixel_values"]
            ours = ops.preprocess(image, 352, MEAN, STD, threads=threads)
            t_lib, t_ours = median_ms(lambda: processor(images=[image], return_tensors="np"),
                                      lambda: ops.preprocess(image, 352, MEAN, STD, threads=threads), args.repeats)
            rows.append({"stage": "preprocess", "size": name, "k": 1, "threads": threads, "library_ms": t_lib,
                         "fastclipseg_ms": t_ours, "speedup": t_lib / t_ours,
                         "max_abs_difference": float(np.abs(ours - reference).max())})
            print(f"preprocess  {name:>9} threads={threads}: library {t_lib:7.2f} ms, ours {t_ours:6.2f} ms, {t_lib / t_ours:5.1f}x", flush=True)
            for k in (1, 8):
                logits = blob_logits(k)
                masks, _, _, _, _ = library_postprocess(logits, (height, width))
                result = ops.postprocess(logits, (height, width), 0.5, masks=True, rle=True, area=True, bbox=True, score=True, threads=threads)
                # Ours decides on the logit (> 0 for t = 0.5), the library on the float32
                # probability: they may differ only where the logit is within rounding of 0.
                upsampled = ops.upsample(logits, (height, width))
                differing = result.masks != masks
                boundary_only = bool(np.all(np.abs(upsampled[differing]) <= 1e-5))
                ours_as_coco = coco_mask.encode(np.asfortranarray(result.masks.transpose(1, 2, 0).astype(np.uint8)))
                same_rle = sum(a["counts"] == b["counts"].decode() for a, b in zip(result.rle, ours_as_coco))
                t_lib, t_ours = median_ms(lambda: library_postprocess(logits, (height, width)),
                                          lambda: ops.postprocess(logits, (height, width), 0.5, masks=True, rle=True,
                                                                  area=True, bbox=True, score=True, threads=threads),
                                          args.repeats)
                rows.append({"stage": "postprocess", "size": name, "k": k, "threads": threads, "library_ms": t_lib,
                             "fastclipseg_ms": t_ours, "speedup": t_lib / t_ours,
                             "differing_mask_pixels": int(differing.sum()), "differences_at_threshold_only": boundary_only,
                             "rle_identical_to_pycocotools": f"{same_rle}/{k}"})
                print(f"postprocess {name:>9} K={k} threads={threads}: library {t_lib:7.2f} ms, ours {t_ours:6.2f} ms, "
                      f"{t_lib / t_ours:5.1f}x (differing mask pixels {int(differing.sum())}, all at the threshold: "
                      f"{boundary_only}; RLE = pycocotools of the same masks: {same_rle}/{k})", flush=True)

    print("\n| stage | frame | K | threads | library (ms) | fastclipseg (ms) | speedup |\n|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['stage']} | {r['size']} | {r['k']} | {r['threads']} | {r['library_ms']:.2f} | {r['fastclipseg_ms']:.2f} | {r['speedup']:.1f}× |")

    path = write_result("bench_kernels-cpu", {"torch": torch.__version__, "transformers": transformers.__version__,
                                              "repeats": args.repeats, "rows": rows}, args.out)
    print(f"\nwrote {path}")

if __name__ == "__main__":
    main()

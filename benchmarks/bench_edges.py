"""Masks that follow edges (issue 18): bilinear vs the fast guided filter, against analytic ground truth.

Three parts, each writing its JSON under benchmarks/results:

- ``quality``: scenes of ../shared/data/shapes.py rendered at 1056x1056 and at 1920x1080 (drawn at
  1920x1920, the middle 1080 rows kept: the masks stay exact), one query each (scenes whose answer
  is empty are left out). For both shapes models, mean IoU and boundary IoU (Cheng et al., 2021:
  the pixels of each mask within d = 2 % of the image diagonal of its contour, as their reference
  code: erosion with the border counted as background) for bilinear and every candidate setting.
  Settings are ranked on SELECTION scenes (one seed) and reported on HELD-OUT scenes (another).
- ``instances``: scenes with two or more shapes of one colour, asked "something <colour>" of the
  prompted model; how often the number of instances equals the number of shapes, with and without
  edges, for several minimum areas; and COCOeval's segmentation AP of the instances (results file
  from ``to_coco(instances=True)``, ground truth one annotation per shape).
- ``timing``: post-processing of one 1920x1080 frame (RLE, area, box, score, stability; K=1 and
  K=8, 2 threads), bilinear vs guided settings interleaved in one process (medians).

    python benchmarks/bench_edges.py quality|instances|timing|all [--select 32] [--heldout 48]
        [--overlays DIR]   # also the README's before/after overlays of one 1080p scene

Run it alone on the machine (timing), and read the figures with the CPU named in the JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import SHARED_DATA, write_result
from fastclipseg import FastSegmenter, ops
from fastclipseg.bench.measure import cpu_flags, cpu_name
from fastclipseg.ops.edges import Edges
from scipy import ndimage

SELECTION_SEED, HELDOUT_SEED = 1234, 2026
SIZES = {"1056x1056": (1056, 1056), "1920x1080": (1080, 1920)}
# The model's grid (subsample 1) and coarser filter grids (the coefficients are smooth; s^2 less work).
CANDIDATES = [Edges(r, eps, guide, 1) for guide in ("grey", "colour") for r in (3, 4, 6) for eps in (1e-4, 1e-3)] + \
             [Edges(r, eps, guide, s) for guide in ("grey", "colour") for s in (2, 3, 4) for r in (1, 2, 3, 4)
              for eps in (1e-4, 1e-3)]
MODELS = ("clipseg-shapes", "clipseg-shapes-prompted")


def shapes_module():
    sys.path.insert(0, str(SHARED_DATA))
    import shapes

    return shapes


def name_of(edges: Edges | None) -> str:
    return "bilinear" if edges is None else f"{edges.guide} s{edges.subsample} r{edges.radius} eps{edges.eps:g}"


def boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """The mask's pixels within d of its contour (erosion by a (2d + 1) square, border = background)."""
    eroded = ndimage.minimum_filter(mask.astype(np.uint8), size=2 * d + 1, mode="constant", cval=0)
    return mask & ~eroded.astype(bool)


def band_width(shape: tuple[int, int]) -> int:
    return max(1, int(round(0.02 * float(np.hypot(*shape)))))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def render(shapes, rng, size: tuple[int, int]):
    """A scene of `size` (height, width) with its objects; wide sizes are the middle rows of a square."""
    height, width = size
    image, objects = shapes.scene(rng, size=width)
    top = (width - height) // 2
    return image[top:top + height], [(c, k, m[top:top + height]) for c, k, m in objects]


def query(shapes, rng, objects, size):
    height, width = size
    text, truth = shapes.query(rng, objects, size=width)
    return text, truth[:height]


def quality_scenes(shapes, seed: int, count: int, size: tuple[int, int]):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        image, objects = render(shapes, rng, size)
        text, truth = query(shapes, rng, objects, size)
        if truth.any():
            yield image, text, truth


def run_quality(args) -> dict:
    shapes = shapes_module()
    settings = [None, *CANDIDATES]
    figures: dict = {}
    for model in MODELS:
        segmenter = FastSegmenter.from_pretrained(SHARED_DATA / model, cache=False)
        for split, seed, count in (("selection", SELECTION_SEED, args.select), ("heldout", HELDOUT_SEED, args.heldout)):
            for size_name, size in SIZES.items():
                d = band_width(size)
                scores = {name_of(s): {"iou": [], "boundary_iou": []} for s in settings}
                for image, text, truth in quality_scenes(shapes, seed, count, size):
                    logits = segmenter.segment(image, [text]).logits
                    truth_band = boundary(truth, d)
                    for setting in settings:
                        mask = ops.postprocess(logits, size, 0.5, edges=setting, guide=image).masks[0]
                        entry = scores[name_of(setting)]
                        entry["iou"].append(iou(mask, truth))
                        entry["boundary_iou"].append(iou(boundary(mask, d), truth_band))
                summary = {name: {"iou": float(np.mean(v["iou"])), "boundary_iou": float(np.mean(v["boundary_iou"])),
                                  "scenes": len(v["iou"])} for name, v in scores.items()}
                figures.setdefault(model, {}).setdefault(split, {})[size_name] = summary
                base = summary["bilinear"]
                best = max(summary.items(), key=lambda item: item[1]["boundary_iou"])
                print(f"{model} {split} {size_name}: {base['scenes']} scenes, bilinear IoU {base['iou']:.3f} "
                      f"boundary {base['boundary_iou']:.3f}; best boundary {best[0]}: IoU {best[1]['iou']:.3f} "
                      f"boundary {best[1]['boundary_iou']:.3f}", flush=True)
    # One default for every model and size: the best mean boundary-IoU gain on the selection scenes
    # among settings that do not lower the mean IoU there.
    def gains(split: str, name: str) -> tuple[float, float]:
        cells = [figures[m][split][s] for m in MODELS for s in SIZES]
        return (float(np.mean([c[name]["boundary_iou"] - c["bilinear"]["boundary_iou"] for c in cells])),
                float(np.mean([c[name]["iou"] - c["bilinear"]["iou"] for c in cells])))

    names = [name_of(s) for s in CANDIDATES]
    eligible = [n for n in names if gains("selection", n)[1] >= 0.0] or names
    chosen = max(eligible, key=lambda n: gains("selection", n)[0])
    boundary_gain, iou_gain = gains("heldout", chosen)
    print(f"chosen on selection scenes: {chosen}; held-out mean gain: boundary IoU {boundary_gain:+.3f}, "
          f"IoU {iou_gain:+.3f}", flush=True)
    return {"chosen": chosen, "heldout_gain": {"boundary_iou": boundary_gain, "iou": iou_gain},
            "selection_seed": SELECTION_SEED, "heldout_seed": HELDOUT_SEED, "band": "2% of the diagonal",
            "figures": figures}


def same_colour_scenes(shapes, seed: int, count: int, size: tuple[int, int]):
    """`count` scenes with at least two shapes of one colour, with that colour's shapes."""
    rng = np.random.default_rng(seed)
    found = 0
    while found < count:
        image, objects = render(shapes, rng, size)
        colours = [c for c, _, _ in objects]
        repeated = sorted({c for c in colours if colours.count(c) >= 2})
        if not repeated:
            continue
        colour = repeated[0]
        masks = [m for c, _, m in objects if c == colour and m.any()]
        found += 1
        yield image, f"something {colour}", masks


def run_instances(args) -> dict:
    from fastclipseg.ops import rle as coco_rle
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    shapes = shapes_module()
    segmenter = FastSegmenter.from_pretrained(SHARED_DATA / "clipseg-shapes-prompted", cache=False)
    size = SIZES["1056x1056"]
    pixels = size[0] * size[1]
    min_areas = [0, int(0.0005 * pixels), int(0.002 * pixels), int(0.005 * pixels)]
    settings = {"bilinear": None, "edges": Edges()}
    counts = {s: {a: 0 for a in min_areas} for s in settings}
    detections = {s: [] for s in settings}
    truth = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "shape"}]}
    scenes = list(same_colour_scenes(shapes, HELDOUT_SEED, args.instance_scenes, size))
    for image_id, (image, text, masks) in enumerate(scenes, start=1):
        truth["images"].append({"id": image_id, "height": size[0], "width": size[1]})
        for mask in masks:
            encoded = coco_rle.encode(mask)
            truth["annotations"].append({"id": len(truth["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                                         "segmentation": encoded, "area": float(mask.sum()),
                                         "bbox": [float(v) for v in coco_rle.bbox(encoded)], "iscrowd": 0})
        for name, edges in settings.items():
            result = segmenter.segment(image, [text], edges=edges)
            for min_area in min_areas:
                counts[name][min_area] += len(result.instances(0, min_area=min_area)) == len(masks)
            detections[name] += result.to_coco(image_id, instances=True, min_area=min_areas[1])
    ground = COCO()
    ground.dataset = truth
    ground.createIndex()
    average_precision = {}
    for name in settings:
        if not detections[name]:
            average_precision[name] = 0.0
            continue
        evaluation = COCOeval(ground, ground.loadRes(detections[name]), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        average_precision[name] = {"AP": float(evaluation.stats[0]), "AP50": float(evaluation.stats[1]),
                                   "AP75": float(evaluation.stats[2])}
    for name in settings:
        print(f"{name}: instance count right in " +
              ", ".join(f"{counts[name][a]}/{len(scenes)} (min_area {a})" for a in min_areas) +
              f"; COCO AP {average_precision[name]}", flush=True)
    return {"scenes": len(scenes), "size": "1056x1056", "seed": HELDOUT_SEED, "edges": Edges().to_dict(),
            "count_right": {n: {str(a): c for a, c in v.items()} for n, v in counts.items()},
            "coco_min_area": min_areas[1], "coco_segm": average_precision}


def run_timing(args) -> dict:
    shapes = shapes_module()
    image, _ = render(shapes, np.random.default_rng(HELDOUT_SEED), SIZES["1920x1080"])
    segmenter = FastSegmenter.from_pretrained(SHARED_DATA / "clipseg-shapes", cache=False)
    outputs = {"masks": False, "rle": True, "area": True, "bbox": True, "score": True, "stability": True}
    compared = (Edges(), Edges(1, 1e-4, "grey", 3), Edges(6, 1e-3, "colour", 1))
    settings = {"bilinear": None, **{name_of(e): e for e in compared}}
    figures = {}
    for k in (1, 8):
        logits = segmenter.segment(image, [f"prompt {i}" for i in range(k)]).logits
        times = {name: [] for name in settings}
        for _ in range(args.repeats):
            for name, edges in settings.items():
                started = time.perf_counter()
                ops.postprocess(logits, image.shape[:2], 0.5, threads=2, edges=edges, guide=image, **outputs)
                times[name].append(time.perf_counter() - started)
        medians = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        figures[f"K={k}"] = {name: {"ms": ms, "extra_ms": ms - medians["bilinear"], "ratio": ms / medians["bilinear"]}
                             for name, ms in medians.items()}
        print(f"K={k}: " + ", ".join(f"{n} {m:.2f} ms" for n, m in medians.items()), flush=True)
    return {"frame": "1920x1080", "threads": 2, "repeats": args.repeats, "figures": figures}


def write_overlays(folder: Path) -> None:
    """Before/after crops of one 1080p scene (the same region, bilinear and edges) as PNGs."""
    from PIL import Image

    shapes = shapes_module()
    segmenter = FastSegmenter.from_pretrained(SHARED_DATA / "clipseg-shapes-prompted", cache=False)
    scene = next(same_colour_scenes(shapes, HELDOUT_SEED + 1, 1, SIZES["1920x1080"]))
    image, text, masks = scene
    truth = np.any(masks, axis=0)
    ys, xs = np.nonzero(truth)
    cy, cx = int(ys.mean()), int(xs.mean())
    top, left = max(0, min(cy - 240, 1080 - 480)), max(0, min(cx - 320, 1920 - 640))
    folder.mkdir(parents=True, exist_ok=True)
    for name, edges in (("bilinear", None), ("edges", Edges())):
        result = segmenter.segment(image, [text], edges=edges)
        overlay = result.overlay(image)[top:top + 480, left:left + 640]
        # A 16-colour palette keeps the committed PNGs small (the scene's pixel noise defeats zlib).
        Image.fromarray(overlay).quantize(16).save(folder / f"edges-{name}.png", optimize=True)
        print(f"wrote {folder / f'edges-{name}.png'} ({text!r}, rows {top}-{top + 480}, columns {left}-{left + 640})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("quality", "instances", "timing", "all"), nargs="?", default="all")
    parser.add_argument("--select", type=int, default=32, help="selection scenes drawn (seed 1234)")
    parser.add_argument("--heldout", type=int, default=48, help="held-out scenes drawn (seed 2026)")
    parser.add_argument("--instance-scenes", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--overlays", type=Path, help="write the before/after PNGs here")
    args = parser.parse_args()
    if not (SHARED_DATA / "shapes.py").is_file():
        raise SystemExit(f"needs ../shared/data (shapes.py and the shapes models), not found at {SHARED_DATA}")
    machine = {"cpu": cpu_name(), "cpu_flags": [f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))],
               "date": time.strftime("%Y-%m-%d")}
    parts = ("quality", "instances", "timing") if args.part == "all" else (args.part,)
    runners = {"quality": run_quality, "instances": run_instances, "timing": run_timing}
    for part in parts:
        payload = {"benchmark": f"bench_edges {part}", **machine, **runners[part](args)}
        path = write_result(f"bench_edges-{part}", payload)
        print(f"wrote {path}")
    if args.overlays:
        write_overlays(args.overlays)


if __name__ == "__main__":
    main()

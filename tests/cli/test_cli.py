"""The `fastclipseg` command line, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastclipseg.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / "cat.png")
    Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)).save(folder / "dog.jpg")
    (folder / "corrupt.png").write_bytes(b"\x89PNG not really")
    return folder


def test_help_explains_every_option():
    assert run_cli("--version").stdout.startswith("fastclipseg ")
    for command in ([], ["segment"], ["convert"], ["export"], ["bench"], ["cache"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout
    segment_help = run_cli("segment", "--help").stdout
    for option in ("--prompt", "--model", "--out", "--threshold", "--overlay", "--device", "--max-pixels",
                   "--backend", "--precision", "--cache-dir", "--no-cache", "--threads", "--heatmap"):
        assert option in segment_help
    bench_help = run_cli("bench", "--help").stdout
    for option in ("--random-weights", "--backends", "--precisions", "--threads", "--repeats", "--frames", "--no-rss"):
        assert option in bench_help


def test_segment_writes_outputs_and_reports_failures(tiny_model_dir, images, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        "segment", str(images / "cat.png"), str(images / "missing.png"), str(images / "corrupt.png"),
        str(images / "dog.jpg"), "-p", "a cat", "-p", "red dog", "--model", str(tiny_model_dir),
        "--out", str(out), "--overlay", "--threshold", "0.4",
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "missing.png" in errors[0] and "corrupt.png" in errors[1]
    assert "Traceback" not in result.stderr
    assert "2 of 4 images failed" in result.stderr
    summaries = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(summaries) == 2 and "cat.png: 60x40" in summaries[0] and "'red dog' score" in summaries[0]

    record = json.loads((out / "cat.json").read_text())
    assert (record["height"], record["width"]) == (40, 60)
    assert [m["prompt"] for m in record["masks"]] == ["a cat", "red dog"]
    for entry in record["masks"]:
        png = np.asarray(Image.open(out / entry["mask_png"]))
        assert png.shape == (40, 60) and set(np.unique(png)) <= {0, 255}
        decoded = coco_mask.decode({"size": entry["rle"]["size"], "counts": entry["rle"]["counts"].encode()})
        np.testing.assert_array_equal(decoded * 255, png)
        assert entry["area"] == int((png > 0).sum())
    assert Image.open(out / record["overlay_png"]).size == (60, 40)
    assert (out / "dog.json").exists()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_bad_arguments_fail_cleanly(tiny_model_dir, images, tmp_path):
    bad_threshold = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "--model", str(tiny_model_dir), "--threshold", "2", "--out", str(tmp_path))
    assert bad_threshold.returncode == 2 and "threshold" in bad_threshold.stderr and "Traceback" not in bad_threshold.stderr
    blank = run_cli("segment", str(images / "cat.png"), "-p", " ", "--model", str(tiny_model_dir), "--out", str(tmp_path))
    assert blank.returncode == 2 and "--prompt[0]" in blank.stderr
    syntax = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "-p", "(a dog AND", "--model", str(tmp_path / "nope"),
                     "--out", str(tmp_path))
    assert syntax.returncode == 2 and "column 11" in syntax.stderr and "Traceback" not in syntax.stderr
    no_model = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "--model", str(tmp_path / "nope"), "--out", str(tmp_path))
    assert no_model.returncode == 2 and "model folder not found" in no_model.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    unwritable = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "--model", str(tiny_model_dir), "--out", str(blocker / "sub"))
    assert unwritable.returncode == 2 and "cannot write to output folder" in unwritable.stderr


@pytest.mark.fullsize
def test_convert_then_segment(shared_data, images, tmp_path):
    # The released refined decoder, with random CLIP weights (no CLIP checkpoint offline).
    model_dir = tmp_path / "refined"
    refused = run_cli("convert", str(shared_data / "rd64-uni-refined.pth"), "--out", str(model_dir))
    assert refused.returncode == 2 and "CLIP" in refused.stderr and not model_dir.exists()
    # The command line's flags, not the Python API's keywords.
    assert "--clip" in refused.stderr and "--allow-random-clip" in refused.stderr, refused.stderr
    assert "clip_path" not in refused.stderr and "allow_random_clip" not in refused.stderr
    converted = run_cli(
        "convert", str(shared_data / "rd64-uni-refined.pth"), "--out", str(model_dir),
        "--vocab", str(shared_data / "bpe_simple_vocab_16e6.txt.gz"), "--allow-random-clip",
    )
    assert converted.returncode == 0, converted.stderr
    out = tmp_path / "out"
    segmented = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "--model", str(model_dir), "--out", str(out))
    assert segmented.returncode == 0, segmented.stderr
    record = json.loads((out / "cat.json").read_text())
    assert record["masks"][0]["prompt"] == "a cat" and record["masks"][0]["rle"]["size"] == [40, 60]


def test_export_then_segment_with_the_export(tiny_model_dir, images, tmp_path):
    export = tmp_path / "export"
    exported = run_cli("export", str(tiny_model_dir), "--out", str(export), "--backend", "torchscript", "--precision", "int8")
    assert exported.returncode == 0, exported.stderr
    assert (export / "fastclipseg-export.json").is_file() and (export / "vision.pt").is_file()
    again = run_cli("export", str(tiny_model_dir), "--out", str(export), "--backend", "torchscript")
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    out = tmp_path / "out"
    segmented = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "--model", str(export), "--out", str(out))
    assert segmented.returncode == 0, segmented.stderr
    assert json.loads((out / "cat.json").read_text())["masks"][0]["rle"]["size"] == [40, 60]
    wrong = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "--model", str(export), "--precision", "bf16",
                    "--out", str(out))
    assert wrong.returncode == 2 and "torchscript int8 export" in wrong.stderr


def test_aoti_export_then_segment_with_it(tiny_model_dir, images, tmp_path):
    # The build goes through the test session's engine cache ($FASTCLIPSEG_CACHE), so the other tiny
    # aoti tests load it rather than compile C++ again.
    export = tmp_path / "export"
    exported = run_cli("export", str(tiny_model_dir), "--out", str(export), "--backend", "aoti")
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((export / "fastclipseg-export.json").read_text())
    assert manifest["backend"] == "aoti" and manifest["cpu_features"] and (export / "vision.pt2").is_file()
    out = tmp_path / "out"
    segmented = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "--model", str(export), "--out", str(out))
    assert segmented.returncode == 0, segmented.stderr
    reference = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "--model", str(tiny_model_dir),
                        "--backend", "torch", "--precision", "fp32", "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    ours, theirs = (json.loads((folder / "cat.json").read_text())["masks"][0] for folder in (out, tmp_path / "reference"))
    assert ours["rle"]["size"] == [40, 60] and ours["score"] == pytest.approx(theirs["score"], abs=1e-4)


def test_segment_with_a_compiled_backend_and_the_cache_command(tiny_model_dir, images, tmp_path):
    cache = tmp_path / "cache"
    for _ in range(2):
        result = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "--model", str(tiny_model_dir),
                         "--backend", "torchscript", "--precision", "fp32", "--cache-dir", str(cache),
                         "--out", str(tmp_path / "out"))
        assert result.returncode == 0, result.stderr
    assert "compiling the torchscript fp32 stages" not in result.stderr  # the second run loaded the cache
    assert "loaded the torchscript fp32 stages from the cache" in result.stderr
    listed = run_cli("cache", "--cache-dir", str(cache))
    assert listed.returncode == 0 and "1 cached builds" in listed.stdout and "torchscript fp32" in listed.stdout
    cleared = run_cli("cache", "--cache-dir", str(cache), "--clear")
    assert cleared.returncode == 0 and "removed 1 cached builds" in cleared.stdout
    assert "0 cached builds" in run_cli("cache", "--cache-dir", str(cache)).stdout


def test_bench_rejects_bad_arguments(tmp_path):
    for args, message in ((["--threads", "0"], "--threads must be >= 1"),
                          (["--backends", "tensorflow"], "unknown backend tensorflow"),
                          (["--precisions", "fp8"], "unknown precision fp8")):
        result = run_cli("bench", "--random-weights", "--out", str(tmp_path), *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_bench_runs_and_writes_its_record(tiny_model_dir, tmp_path):
    result = run_cli("bench", "--model", str(tiny_model_dir), "--backends", "torch,torchscript", "--precisions", "fp32",
                     "--threads", "1", "--repeats", "1", "--frames", "1", "--no-rss", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "| 1 image x 1 prompt | torchscript fp32 |" in result.stdout
    (written,) = tmp_path.glob("bench-1threads-*.json")
    record = json.loads(written.read_text())
    assert [row["case"] for row in record["rows"]][-1] == "1 frames 1280x720 x 2 prompts"
    assert record["peak_rss"] == {} and set(record["startup"]) == {"torch fp32", "torchscript fp32"}


def test_segment_instances_and_coco_results(tiny_model_dir, images, tmp_path):
    """--instances lists each mask's objects as the Python API finds them; --coco writes detections
    that pycocotools loads and COCOeval scores (AP 1 against ground truth made of themselves)."""
    from fastclipseg import FastSegmenter
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out, coco = tmp_path / "out", tmp_path / "results" / "coco.json"
    coco.parent.mkdir()
    paths = [images / "cat.png", images / "corrupt.png", images / "dog.jpg"]
    done = run_cli("segment", *map(str, paths), "-p", "a cat", "-p", "red dog", "-m", str(tiny_model_dir),
                   "-o", str(out), "--instances", "--min-area", "2", "--coco", str(coco), "--threshold", "0.45", "--precision", "fp32")
    assert done.returncode == 1 and "1 of 3 images failed" in done.stderr, done.stderr
    detections = json.loads(coco.read_text())
    assert f"{coco}: {len(detections)} detections" in done.stderr

    segmenter = FastSegmenter.from_pretrained(tiny_model_dir)
    expected = []
    for image_id, path in ((1, paths[0]), (3, paths[2])):
        result = segmenter.segment(path, ["a cat", "red dog"], threshold=0.45)
        record = json.loads((out / f"{path.stem}.json").read_text())
        for k, entry in enumerate(record["masks"]):
            found = result.instances(k, min_area=2)
            assert entry["instances"] == [
                {key: value for key, value in i.to_dict().items() if key not in ("prompt", "prompt_index")}
                for i in found]
            assert all(item["area"] >= 2 for item in entry["instances"])
        expected += result.to_coco(image_id, instances=True, min_area=2)
    assert detections == json.loads(json.dumps(expected))
    assert {d["image_id"] for d in detections} <= {1, 3} and len(detections) > 2, "the test needs objects"

    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": i, "width": w, "height": h} for i, (w, h) in ((1, (60, 40)), (3, (20, 30)))],
        "categories": [{"id": 1, "name": "a cat"}, {"id": 2, "name": "red dog"}],
        "annotations": [{**d, "id": n + 1, "iscrowd": 0} for n, d in enumerate(detections)],
    }
    ground_truth.createIndex()
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), iouType="segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_segment_instance_options_are_checked(tiny_model_dir, images, tmp_path):
    base = ["segment", str(images / "cat.png"), "-p", "a cat", "-m", str(tiny_model_dir), "-o", str(tmp_path / "o")]
    done = run_cli(*base, "--min-area", "-1")
    assert done.returncode == 2 and "--min-area must be >= 0" in done.stderr
    done = run_cli(*base, "--coco", str(tmp_path))
    assert done.returncode == 2 and "is a folder: name the results file" in done.stderr


def test_batch_instances_are_a_setting_of_the_run(tiny_model_dir, images, tmp_path):
    """batch --instances writes the objects, and run.json records it: resuming without it, or with
    another --min-area, is refused; a run without --instances resumes as before."""
    out = tmp_path / "run"
    base = ["batch", str(images / "cat.png"), str(images / "dog.jpg"), "-p", "a cat", "-m", str(tiny_model_dir),
            "-o", str(out), "--backend", "torch"]
    done = run_cli(*base, "--instances", "--min-area", "2")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (out / "masks.jsonl").read_text().splitlines()]
    assert all("instances" in m for line in lines for m in line["masks"])
    assert json.loads((out / "run.json").read_text())["instances"] == {"min_area": 2}
    for other in ([], ["--instances", "--min-area", "5"]):
        refused = run_cli(*base, *other, "--resume")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert run_cli(*base, "--instances", "--min-area", "2", "--resume").returncode == 0
    plain = run_cli(*base, "-o", str(tmp_path / "plain"))
    assert plain.returncode == 0 and "instances" not in (tmp_path / "plain" / "masks.jsonl").read_text()
    assert "instances" not in json.loads((tmp_path / "plain" / "run.json").read_text())


def test_segment_edges_equal_the_api(tiny_model_dir, images, tmp_path):
    """--edges (with its parameters) writes what segment(edges=...) gives; the parameters need
    --edges and are checked before the model loads."""
    from fastclipseg import FastSegmenter
    from fastclipseg.ops.edges import Edges

    out = tmp_path / "out"
    done = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "-m", str(tiny_model_dir), "-o", str(out),
                   "--edges", "--edge-radius", "2", "--edge-eps", "0.0001", "--edge-guide", "grey", "--edge-subsample", "2",
                   "--precision", "fp32")
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "cat.json").read_text())
    expected = FastSegmenter.from_pretrained(tiny_model_dir).segment(images / "cat.png", ["a cat"],
                                                                     edges=Edges(2, 1e-4, "grey", 2))
    assert record["masks"][0]["rle"] == expected.rle[0]
    assert record["masks"][0]["score"] == pytest.approx(float(expected.scores[0]), abs=1e-12)
    for extra, message in ((["--edge-radius", "3"], "--edge-radius needs --edges"),
                           (["--edges", "--edge-radius", "0"], "--edge-radius must be in [1,"),
                           (["--edges", "--edge-eps", "-1"], "--edge-eps must be finite and > 0"),
                           (["--edges", "--edge-guide", "rgb"], "--edge-guide must be 'grey' or 'colour'"),
                           (["--edges", "--edge-subsample", "0"], "--edge-subsample must be in [1,")):
        refused = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "-m", "no/such/model", "-o", str(out),
                          *extra)
        assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr, refused.stderr


def test_batch_edges_are_a_setting_of_the_run(tiny_model_dir, images, tmp_path):
    out = tmp_path / "run"
    base = ["batch", str(images / "cat.png"), str(images / "dog.jpg"), "-p", "a cat", "-m", str(tiny_model_dir),
            "-o", str(out), "--backend", "torch"]
    assert run_cli(*base, "--edges", "--edge-radius", "3").returncode == 0
    assert json.loads((out / "run.json").read_text())["edges"] == {"radius": 3, "eps": 1e-3, "guide": "colour",
                                                                 "subsample": 4}
    for other in ([], ["--edges"]):
        refused = run_cli(*base, *other, "--resume")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert run_cli(*base, "--edges", "--edge-radius", "3", "--resume").returncode == 0


def test_default_precision_follows_a_named_backend(tiny_model_dir, images, tmp_path):
    """--backend onnxruntime with the default --precision auto runs what onnxruntime offers (no bf16)."""
    pytest.importorskip("onnxscript")
    done = run_cli("segment", str(images / "cat.png"), "-p", "a cat", "-m", str(tiny_model_dir), "-o", str(tmp_path),
                   "--backend", "onnxruntime")
    assert done.returncode == 0, done.stderr
    chosen = [line for line in done.stderr.splitlines() if line.startswith("precision ")]
    assert len(chosen) == 1 and chosen[0].split(",")[0] in ("precision fp32", "precision int8"), done.stderr
    assert "backend onnxruntime" in chosen[0]

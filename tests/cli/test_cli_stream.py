"""`fastclipseg video` and `fastclipseg batch`: outputs, failures, interruption and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fastclipseg.bench.measure import moving_disc_frames, natural_image, write_video
from fastclipseg.cli import app
from helpers.parity import assert_masks_agree
from PIL import Image
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

av = pytest.importorskip("av", reason="video commands need PyAV (the 'video' extra)")


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "disc.mp4"
    return write_video(path, (frame for frame, _ in moving_disc_frames(30, 72, 96)))


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """Long enough (800 frames) to be interrupted part-way, small enough to decode fast."""
    frames = [natural_image(48, 64, seed=i) for i in range(5)]
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    return write_video(path, (frames[i % 5] for i in range(800)), codec="mpeg4")


def test_video_writes_records_pngs_and_overlay(tiny_model_dir, tiny_segmenter, clip, tmp_path):
    out = tmp_path / "out"
    result = invoke("video", clip, "-p", "a cat", "-p", "red dog", "-m", tiny_model_dir, "--out", out, "--png",
                    "--overlay", out / "overlay.mp4", "--backend", "torch", "--precision", "fp32", "--batch-size", "4",
                    "--every", "2")
    assert result.exit_code == 0, result.output
    records = lines(out / "masks.jsonl")
    assert [r["frame"] for r in records] == list(range(0, 30, 2))
    assert records[1]["timestamp"] == pytest.approx(2 / 25)
    expected = list(tiny_segmenter.segment_video(clip, ["a cat", "red dog"], every_n=2, batch_size=4))
    assert len(records) == len(expected)
    for record, frame in zip(records, expected):
        assert (record["height"], record["width"]) == (72, 96)
        assert [m["prompt"] for m in record["masks"]] == ["a cat", "red dog"]
        for k, (entry, score, stability) in enumerate(zip(record["masks"], frame.scores, frame.stability)):
            decoded = coco_mask.decode(entry["rle"]).astype(bool)
            assert_masks_agree(decoded, frame, k)
            assert entry["area"] == int(decoded.sum())
            # A pixel flipped on the threshold moves the score and stability by about 1 / area.
            assert entry["score"] == pytest.approx(score, abs=1e-3)
            assert entry["stability"] == pytest.approx(stability, abs=1e-3) and 0 <= entry["stability"] <= 1
            png = np.asarray(Image.open(out / entry["mask_png"])) > 0
            np.testing.assert_array_equal(png, decoded)
    assert (out / "errors.jsonl").read_text() == ""
    settings = json.loads((out / "run.json").read_text())
    assert settings["prompts"] == ["a cat", "red dog"] and settings["every"] == 2
    with av.open(str(out / "overlay.mp4")) as overlay:
        # Every frame from the first record on: frames between records show the latest masks.
        assert sum(1 for _ in overlay.decode(video=0)) == 30
    assert "15 frames written" in result.output


def test_video_bad_input_and_output(tiny_model_dir, clip, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke("video", clip, "-p", "a cat", "-m", tiny_model_dir, "--out", blocker / "sub")
    assert result.exit_code == 2 and "cannot write to output folder" in result.output
    result = invoke("video", tmp_path / "missing.mp4", "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "o1")
    assert result.exit_code == 2 and "video file not found" in result.output
    for option, value, message in (("--every", "0", "--every must be"), ("--smooth", "1.5", "--smooth must be"),
                                   ("--threshold", "2", "threshold"), ("--batch-size", "0", "--batch-size must be")):
        result = invoke("video", clip, "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "o2", option, value)
        assert result.exit_code == 2 and message in result.output, result.output
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("plain text\n" * 20)
    result = invoke("video", not_video, "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "o3", "--backend", "torch")
    # Found before any work: no run folder (a rerun would otherwise need --force) and no model loaded.
    assert result.exit_code == 2 and "not a readable video" in result.output, result.output
    assert not (tmp_path / "o3").exists()


def test_streams_refuse_expressions_before_any_work(clip, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(natural_image(20, 30)).save(folder / "a.png")
    for command, source in (("video", clip), ("batch", folder)):
        out = tmp_path / f"{command}-out"
        # A model that does not exist: the expression must be refused before it is looked for.
        result = invoke(command, source, "-p", "a cat", "-p", "a dog AND NOT a collar", "-m", tmp_path / "no-model",
                        "--out", out)
        assert result.exit_code == 2, result.output
        assert "'a dog AND NOT a collar' is a prompt expression" in result.output, result.output
        assert "fastclipseg segment" in result.output
        assert not out.exists()


def test_existing_run_needs_resume_or_force(tiny_model_dir, clip, tmp_path):
    out = tmp_path / "out"
    base = ["video", clip, "-p", "a cat", "-m", tiny_model_dir, "--out", out, "--backend", "torch"]
    # A run whose model failed to load wrote nothing: the same command may simply be run again.
    failed = invoke(*[(tmp_path / "no-model" if a == tiny_model_dir else a) for a in base])
    assert failed.exit_code == 2 and "cannot load model" in failed.output
    assert invoke(*base).exit_code == 0
    result = invoke(*base)
    assert result.exit_code == 2 and "already holds a run" in result.output
    result = invoke(*[("a dog" if a == "a cat" else a) for a in base], "--resume")
    assert result.exit_code == 2 and "other settings" in result.output and "prompts" in result.output
    # Resuming a finished run does nothing more; --force starts over.
    first = (out / "masks.jsonl").read_bytes()
    assert invoke(*base, "--resume").exit_code == 0
    assert (out / "masks.jsonl").read_bytes() == first
    assert invoke(*base, "--force", "--threshold", "0.3").exit_code == 0
    assert len(lines(out / "masks.jsonl")) == 30


def _run_until(args: list[str], masks, at_least: int, signal_number: int) -> subprocess.CompletedProcess:
    """Start the command line, send `signal_number` once masks.jsonl holds `at_least` lines."""
    process = subprocess.Popen([sys.executable, "-m", "fastclipseg.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if masks.exists() and masks.read_bytes().count(b"\n") >= at_least:
            process.send_signal(signal_number)
            break
        time.sleep(0.01)
    stdout, stderr = process.communicate(timeout=240)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize(
    ("signal_number", "extra"),
    [(signal.SIGTERM, []), (signal.SIGINT, ["--every", "2"]), (signal.SIGKILL, ["--smooth", "0.5"])],
    ids=["sigterm", "ctrl-c", "kill-9-smoothed"],
)
def test_interrupted_and_resumed_video_equals_one_run(tiny_model_dir, long_clip, tmp_path, signal_number, extra):
    common = ["-p", "a cat", "-p", "red", "-m", str(tiny_model_dir), "--backend", "torch", "--batch-size", "1", *extra]
    whole = tmp_path / "whole"
    assert invoke("video", long_clip, *common, "--out", whole).exit_code == 0
    parted = tmp_path / "parted"
    args = ["video", str(long_clip), *common, "--out", str(parted)]
    stopped = _run_until(args, parted / "masks.jsonl", 40, signal_number)
    assert stopped.returncode in (128 + signal_number, -signal_number), stopped.stderr
    written = (parted / "masks.jsonl").read_bytes()
    complete = written.count(b"\n")
    assert 40 <= complete < len(lines(whole / "masks.jsonl")), "the run was not interrupted part-way"
    if signal_number != signal.SIGKILL:
        assert written.endswith(b"\n") and "--resume" in stopped.stderr
        # The summary counts what this run wrote, not 0 (issue 14).
        assert f"\n{complete} frames written" in "\n" + stopped.stderr, stopped.stderr
    else:
        # A hard kill can cut a line short: make sure resuming copes with one.
        with (parted / "masks.jsonl").open("ab") as file:
            file.write(b'{"frame": 99999, "timest')
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (parted / "masks.jsonl").read_bytes() == (whole / "masks.jsonl").read_bytes()


def test_batch_outputs_failures_skips_and_resume(tiny_model_dir, tiny_segmenter, tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    arrays = {}
    for name, size in (("a.png", (30, 40)), ("b.jpg", (50, 20)), ("nested/c.png", (25, 25)), ("nested/a.png", (20, 30))):
        arrays[name] = natural_image(*size, seed=len(arrays))
        Image.fromarray(arrays[name]).save(folder / name, quality=100)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    base = ["batch", folder, "-p", "a cat", "-m", tiny_model_dir, "--out", out, "--backend", "torch", "--precision", "fp32",
            "--png"]
    result = invoke(*base)
    assert result.exit_code == 1, result.output
    records = lines(out / "masks.jsonl")
    errors = lines(out / "errors.jsonl")
    expected_order = [str(folder / n) for n in ("a.png", "b.jpg", "broken.png", "nested/a.png", "nested/c.png")]
    assert [r["image"] for r in records] == [p for p in expected_order if "broken" not in p]
    assert len(errors) == 1 and errors[0]["image"] == str(folder / "broken.png") and "broken.png" in errors[0]["error"]
    assert (out / "skipped.txt").read_text().split() == [str(folder / "notes.txt")]
    assert "1 failed" in result.output
    # Same-named files in different folders get distinct PNG names.
    names = [r["masks"][0]["mask_png"] for r in records]
    assert len(set(names)) == len(names)
    direct = tiny_segmenter.segment(str(folder / "b.jpg"), "a cat")
    assert_masks_agree(coco_mask.decode(records[1]["masks"][0]["rle"]).astype(bool), direct, 0)
    assert records[1]["masks"][0]["stability"] == pytest.approx(direct.stability[0], abs=1e-3)

    # Interrupted after two lines, with a half-written third: --resume completes it exactly.
    complete = (out / "masks.jsonl").read_bytes()
    first_two = b"".join(line + b"\n" for line in complete.splitlines()[:2])
    (out / "masks.jsonl").write_bytes(first_two + complete.splitlines()[2][:25])
    (out / "errors.jsonl").write_bytes(b"")
    result = invoke(*base, "--resume")
    assert result.exit_code == 1
    assert (out / "masks.jsonl").read_bytes() == complete
    assert len(lines(out / "errors.jsonl")) == 1

    # A text file listing paths, and a glob.
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\n{folder / 'b.jpg'}\n\n{folder / 'a.png'}\n")
    result = invoke("batch", listing, str(folder / "nested" / "*.png"), "-p", "a cat", "-m", tiny_model_dir,
                    "--out", tmp_path / "listed", "--backend", "torch")
    assert result.exit_code == 0, result.output
    assert [r["image"] for r in lines(tmp_path / "listed" / "masks.jsonl")] == [
        str(folder / "b.jpg"), str(folder / "a.png"), str(folder / "nested" / "a.png"), str(folder / "nested" / "c.png")]
    result = invoke("batch", tmp_path / "nothing-*.png", "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "none")
    assert result.exit_code == 2 and "no files match" in result.output


def test_help_lists_the_stream_options():
    for command, options in (
        ("video", ("--prompt", "--out", "--batch-size", "--every", "--start", "--end", "--smooth", "--overlay", "--png",
                   "--resume", "--force", "--backend", "--precision")),
        ("batch", ("--prompt", "--out", "--batch-size", "--png", "--overlay", "--resume", "--force", "--max-pixels")),
    ):
        result = invoke(command, "--help")
        assert result.exit_code == 0
        for option in options:
            assert option in result.output, (command, option)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_batch_reports_what_it_wrote(tiny_model_dir, tmp_path, signal_number):
    # Issue 14: after Ctrl-C the summary said "0 images written" while 13 lines had been written.
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(400):
        Image.fromarray(natural_image(24, 32, seed=i % 7)).save(folder / f"{i:03d}.png")
    out = tmp_path / "out"
    args = ["batch", str(folder), "-p", "a cat", "-m", str(tiny_model_dir), "--out", str(out), "--backend", "torch",
            "--batch-size", "1"]
    stopped = _run_until(args, out / "masks.jsonl", 13, signal_number)
    assert stopped.returncode == 128 + signal_number, stopped.stderr
    assert "Traceback" not in stopped.stderr
    written = len(lines(out / "masks.jsonl"))
    assert 13 <= written < 400, "the run was not interrupted part-way"
    summary = [line for line in stopped.stderr.splitlines() if " images written" in line]
    assert len(summary) == 1 and summary[0].startswith(f"{written} images written"), stopped.stderr
    assert f"interrupted ({signal.Signals(signal_number).name}): {written} lines" in stopped.stderr


def test_batch_and_video_coco_results(tiny_model_dir, clip, tmp_path):
    """--coco on batch and video: the detections of masks.jsonl (objects with --instances), with
    image ids by position (batch) or frame number + 1 (video), which pycocotools loads and scores;
    edges on the way."""
    from fastclipseg.results import record_detections
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(natural_image(40 + seed, 50, seed=seed)).save(folder / f"im{seed}.png")
    out, coco = tmp_path / "batch", tmp_path / "batch.json"
    result = invoke("batch", folder, "-p", "a cat", "-p", "red dog", "-m", tiny_model_dir, "--out", out,
                    "--backend", "torch", "--instances", "--min-area", "3", "--coco", coco, "--edges",
                    "--threshold", "0.45")
    assert result.exit_code == 0, result.output
    records = lines(out / "masks.jsonl")
    ids = {str(folder / f"im{seed}.png"): seed + 1 for seed in range(3)}
    expected = [d for record in records for d in record_detections(record, ids[record["image"]], instances=True)]
    detections = json.loads(coco.read_text())
    assert detections == expected and len(detections) > 0, "the test needs objects"
    assert all(d["area"] >= 3 for d in detections)
    truth = COCO()
    truth.dataset = {"images": [{"id": i, "height": 40 + i - 1, "width": 50} for i in (1, 2, 3)],
                     "categories": [{"id": 1}, {"id": 2}],
                     "annotations": [{**d, "id": n, "iscrowd": 0} for n, d in enumerate(detections, 1)]}
    truth.createIndex()
    evaluation = COCOeval(truth, truth.loadRes(str(coco)), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)

    out, coco = tmp_path / "video", tmp_path / "video.json"
    result = invoke("video", clip, "-p", "a cat", "-m", tiny_model_dir, "--out", out, "--backend", "torch",
                    "--every", "3", "--coco", coco, "--threshold", "0.45")
    assert result.exit_code == 0, result.output
    records = lines(out / "masks.jsonl")
    detections = json.loads(coco.read_text())
    assert detections == [d for r in records for d in record_detections(r, r["frame"] + 1)]
    assert {d["image_id"] for d in detections} <= {frame + 1 for frame in range(0, 30, 3)}
    refused = invoke("batch", folder, "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "x", "--coco", tmp_path)
    assert refused.exit_code == 2 and "is a folder" in refused.output

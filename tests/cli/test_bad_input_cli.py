"""The command line on bad input: one `error: ...` line naming the input, never a traceback.

Exit status 2 for usage and configuration errors (options, model folders, exports, checkpoints,
output folders), 1 for per-item failures (an image that cannot be read). Most cases run in-process
through typer's CliRunner (stdout and stderr apart); a few run the installed command line in a
subprocess, where the real stderr is what a user sees.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.cli_checks import error_line, invoke
from PIL import Image


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def export_dir(tiny_model_dir, tmp_path_factory):
    from fastclipseg import FastSegmenter

    return FastSegmenter.from_pretrained(tiny_model_dir, cache=False).export(
        tmp_path_factory.mktemp("export") / "e", backend="torchscript")


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


def damaged_copy(folder, tmp_path, name, keep=0.5):
    copy = shutil.copytree(folder, tmp_path / f"damaged-{name}")
    data = (copy / name).read_bytes()
    (copy / name).write_bytes(data[: int(len(data) * keep)])
    return copy


def segment(image, model, out, *options):
    return invoke("segment", image, "-p", "a cat", "-m", model, "--out", out, *options)


# -- segment: options -------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "names"), [
    (["--threshold", "2"], ["threshold", "2.0"]),
    (["--threshold", "nan"], ["threshold", "nan"]),
    (["--threshold", "abc"], ["--threshold"]),            # click's own parsing, as one line too
    (["--max-pixels", "0"], ["--max-pixels", "0"]),
    (["--max-pixels", "-5"], ["--max-pixels", "-5"]),
    (["--backend", "tensorflow"], ["--backend", "tensorflow"]),
    (["--precision", "fp8"], ["--precision", "fp8"]),
    (["--device", "gpu0"], ["--device", "gpu0"]),
    (["--backend", "onnxruntime", "--precision", "bf16"], ["bf16", "onnxruntime"]),
    (["--backend", "torch", "--precision", "fp16"], ["fp16", "torch"]),
    (["-p", ""], ["--prompt[1]"]),
    (["-p", "a dog {+x}"], ["column"]),
], ids=["threshold-2", "threshold-nan", "threshold-abc", "max-pixels-0", "max-pixels-negative", "backend",
        "precision", "device", "onnxruntime-bf16", "torch-fp16", "empty-prompt", "expression-syntax"])
def test_segment_bad_options(tiny_model_dir, image, tmp_path, options, names):
    error_line(segment(image, tiny_model_dir, tmp_path / "out", *options), 2, *names)


def test_segment_missing_prompt_option(tiny_model_dir, image, tmp_path):
    result = invoke("segment", image, "-m", tiny_model_dir, "--out", tmp_path / "out")
    error_line(result, 2, "--prompt", "--help")


def test_segment_output_folder_that_is_a_file(tiny_model_dir, image, a_file):
    error_line(segment(image, tiny_model_dir, a_file / "sub"), 2, "cannot write to output folder", str(a_file))


# -- segment: images (per-item failures: exit 1, the others still run) -------------------------------


@pytest.mark.parametrize("kind", ["corrupt", "folder", "missing"])
def test_segment_unreadable_images(tiny_model_dir, image, tmp_path, kind):
    bad = tmp_path / "bad.png"
    if kind == "corrupt":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif kind == "folder":
        bad.mkdir()
    result = invoke("segment", bad, "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "out")
    error_line(result, 1, str(bad))


def test_segment_image_whose_outputs_cannot_be_written(tiny_model_dir, image, tmp_path):
    # A directory squats on "blocked.json" (permissions would not stop root, and long names are
    # shortened): that image fails (exit 1), the next one is still segmented.
    blocked = Path(shutil.copy(image, tmp_path / "blocked.png"))
    out = tmp_path / "out"
    (out / "blocked.json").mkdir(parents=True)
    result = invoke("segment", blocked, image, "-p", "a cat", "-m", tiny_model_dir, "--out", out)
    error_line(result, 1, str(blocked), "cannot write its outputs")
    assert (out / "photo.json").is_file()


# -- model folders and exports (configuration errors: exit 2) ------------------------------------------


def test_model_that_does_not_exist(image, tmp_path):
    error_line(segment(image, tmp_path / "no-such-model", tmp_path / "out"), 2, str(tmp_path / "no-such-model"))


def test_model_that_is_a_file(image, tmp_path, a_file):
    error_line(segment(image, a_file, tmp_path / "out"), 2, str(a_file), "fastclipseg convert")


def test_model_folder_missing_config(tiny_model_dir, image, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (folder / "config.json").unlink()
    error_line(segment(image, folder, tmp_path / "out"), 2, str(folder), "config.json")


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "config.json", "processor_config.json"])
def test_model_folder_with_a_truncated_file(tiny_model_dir, image, tmp_path, name):
    folder = damaged_copy(tiny_model_dir, tmp_path, name)
    error_line(segment(image, folder, tmp_path / "out"), 2, str(folder / name))


def test_export_with_a_changed_processor_file(export_dir, image, tmp_path):
    folder = shutil.copytree(export_dir, tmp_path / "export")
    path = folder / "processor_config.json"
    path.write_text(path.read_text().replace("0.485", "0.985", 1))
    error_line(segment(image, folder, tmp_path / "out"), 2, str(path), "corrupt")


def test_export_asked_for_another_precision(export_dir, image, tmp_path):
    error_line(segment(image, export_dir, tmp_path / "out", "--precision", "int8"), 2, "torchscript fp32 export")


def test_export_given_calibration_images(export_dir, image, tmp_path):
    error_line(segment(image, export_dir, tmp_path / "out", "--calibration", tmp_path), 2, "calibration")


# -- batch and video ----------------------------------------------------------------------------------


def test_batch_bad_settings_are_refused_before_any_work(tiny_model_dir, image, tmp_path):
    out = tmp_path / "out"
    for options, names in ((["--max-pixels", "0"], ["--max-pixels"]), (["--batch-size", "0"], ["--batch-size"]),
                           (["--resume", "--force"], ["--resume", "--force"]),
                           (["--backend", "nope"], ["--backend"])):
        result = invoke("batch", image, "-p", "a cat", "-m", tiny_model_dir, "--out", out, *options)
        error_line(result, 2, *names)
        assert not out.exists()


def test_batch_input_that_does_not_exist(tiny_model_dir, tmp_path):
    result = invoke("batch", tmp_path / "missing-folder", "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "o")
    error_line(result, 2, str(tmp_path / "missing-folder"))


def test_batch_with_a_damaged_model(tiny_model_dir, image, tmp_path):
    folder = damaged_copy(tiny_model_dir, tmp_path, "model.safetensors")
    result = invoke("batch", image, "-p", "a cat", "-m", folder, "--out", tmp_path / "o", "--backend", "torch")
    error_line(result, 2, str(folder / "model.safetensors"))


def test_video_bad_settings(tiny_model_dir, tmp_path):
    pytest.importorskip("av", reason="video commands need PyAV (the 'video' extra)")
    video = tmp_path / "missing.mp4"
    error_line(invoke("video", video, "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "o"), 2, str(video))
    for options, names in ((["--every", "0"], ["--every"]), (["--start", "5", "--end", "2"], ["end", "5.0"]),
                           (["--smooth", "0"], ["--smooth"])):
        result = invoke("video", video, "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "o", *options)
        error_line(result, 2, *names)


# -- convert ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "empty", "zip", "python-objects", "wrong-keys"])
def test_convert_files_that_are_not_clipseg_checkpoints(tmp_path, kind):
    import argparse
    import zipfile

    import torch

    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("just text\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
    elif kind == "python-objects":
        torch.save({"args": argparse.Namespace(lr=0.1)}, path)
    else:
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    line = error_line(invoke("convert", path, "--out", tmp_path / "converted"), 2, str(path))
    assert "weights_only" not in line  # torch's advice to unpickle arbitrary objects is never relayed
    assert not (tmp_path / "converted").exists()


def test_convert_into_an_existing_folder_names_the_option(tmp_path):
    (tmp_path / "out").mkdir()
    line = error_line(invoke("convert", tmp_path / "x.pth", "--out", tmp_path / "out"), 2, "--force")
    assert "overwrite=True" not in line


# -- export -------------------------------------------------------------------------------------------


def test_export_into_a_non_empty_folder_names_the_option(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = error_line(invoke("export", tiny_model_dir, "--out", out, "--backend", "torchscript"), 2, str(out), "--force")
    assert "overwrite=True" not in line  # the Python API's wording, not this command's
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("options", "names"), [
    (["--backend", "torch"], ["no compiled form"]),
    (["--precision", "fp8"], ["--precision", "fp8"]),
])
def test_export_bad_options(tiny_model_dir, tmp_path, options, names):
    error_line(invoke("export", tiny_model_dir, "--out", tmp_path / "e", *options), 2, *names)


def test_export_onto_a_file(tiny_model_dir, a_file):
    error_line(invoke("export", tiny_model_dir, "--out", a_file), 2, str(a_file))
    assert a_file.read_text() == "not a folder"


def test_export_of_an_export(export_dir, tmp_path):
    error_line(invoke("export", export_dir, "--out", tmp_path / "e"), 2, "export from the model")


# -- bench, cache, the command itself --------------------------------------------------------------------


def test_bench_and_cache_bad_input(tmp_path, a_file):
    error_line(invoke("bench", "--repeats", "0", "--out", tmp_path), 2, "--repeats")
    error_line(invoke("bench", "--model", tmp_path / "no-model", "--backends", "torch", "--precisions", "fp32",
                      "--no-rss", "--out", tmp_path), 2, str(tmp_path / "no-model"))
    error_line(invoke("cache", "--cache-dir", a_file), 2, str(a_file))


def test_unknown_command():
    error_line(invoke("segmnt"), 2, "segmnt")


# -- the installed command line: the real stderr --------------------------------------------------------


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastclipseg.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False)


def test_real_stderr_for_a_damaged_model_and_a_bad_checkpoint(tiny_model_dir, image, tmp_path):
    folder = damaged_copy(tiny_model_dir, tmp_path, "model.safetensors")
    checkpoint = tmp_path / "notes.pth"
    checkpoint.write_text("not a checkpoint")
    for done, name in ((run_cli("segment", image, "-p", "a cat", "-m", folder, "--out", tmp_path / "o"),
                        str(folder / "model.safetensors")),
                       (run_cli("convert", checkpoint, "--out", tmp_path / "c"), str(checkpoint))):
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and name in errors[0], done.stderr

"""What the installed `fastclipseg` command prints: help that reads like click's, quiet output
(no library progress bars or deprecation notices off a terminal), and the newer options."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap

import numpy as np
import pytest
import torch
from fastclipseg.cli import app
from fastclipseg.engines import choose_precision
from PIL import Image
from typer.testing import CliRunner

COMMANDS = ["segment", "video", "batch", "convert", "export", "bench", "cache"]


def fastclipseg(*args: str, columns: int = 90) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it (stdout and stderr are pipes, not a terminal)."""
    executable = shutil.which("fastclipseg")
    assert executable is not None, "the fastclipseg console script is not installed"
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_values_and_flags_like_click(command):
    result = fastclipseg(command, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # No typer type tags such as <bool>, <str>, <list[Path]> (file names like <stem>.json are prose).
    assert not re.search(r"<(bool|str|int|float|path|list\[\w+\])>", text, re.IGNORECASE), text
    assert "{" not in text.splitlines()[0], text  # usage: IMAGE..., not {IMAGE...}...
    on_off = {"segment": ["--overlay / --no-overlay", "--heatmap / --no-heatmap", "--cache / --no-cache"],
              "batch": ["--png / --no-png", "--overlay / --no-overlay"], "video": ["--png / --no-png"],
              "bench": ["--rss / --no-rss"]}
    for flag in on_off.get(command, []):
        assert flag in text, (flag, text)


def test_help_reflows_docstrings_to_the_terminal():
    width = 60
    text = fastclipseg("segment", "--help", columns=width).stdout
    description = text.split("\n\n")[2]  # after "Usage: ..." and the one-line summary
    lines = [line.strip() for line in description.splitlines()]
    assert len(lines) > 2 and " ".join(lines).startswith("For each image writes")
    # Every line but the last is full: the next word would not have fitted (not the source's line breaks).
    for line, following in zip(lines, lines[1:]):
        assert len(line) + 1 + len(following.split()[0]) > width - 4, (line, following)
    wide = fastclipseg("segment", "--help", columns=200).stdout  # wrapped at 100, the widest help reads well
    assert len(wide.split("\n\n")[2].splitlines()) < len(lines)


@pytest.mark.parametrize("command", ["segment", "batch", "video"])
def test_threads_is_checked(command, tmp_path):
    args = {"segment": ["x.png"], "batch": ["x.png", "-o", str(tmp_path)], "video": ["x.mp4", "-o", str(tmp_path)]}
    result = fastclipseg(command, *args[command], "-p", "a cat", "--threads", "0")
    assert result.returncode == 2 and "--threads must be >= 1" in result.stderr, result.stderr


def test_threads_sets_the_networks_and_kernels_threads(tiny_model_dir, image, tmp_path):
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["segment", str(image), "-p", "a cat", "-m", str(tiny_model_dir),
                                          "-o", str(tmp_path), "--threads", "1"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_segment_output_is_one_line_per_image_and_quiet(tiny_model_dir, image, tmp_path):
    result = fastclipseg("segment", str(image), "-p", "a cat", "-p", "a dog", "-m", str(tiny_model_dir),
                         "-o", str(tmp_path), "--overlay", "--heatmap")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [result.stdout.strip()] and "'a cat' score" in result.stdout
    # Off a terminal: no progress bars (ours or transformers'), no warnings; only the precision
    # that --precision's default (auto) chose, and why.
    chosen = choose_precision("auto", torch.device("cpu"))
    assert result.stderr.splitlines() == [
        f"precision {chosen.precision}, backend torch ({chosen.reason}; --precision and --backend choose others)"
    ], result.stderr
    record = json.loads((tmp_path / "cat.json").read_text())
    for key, suffix in (("overlay_png", "_overlay.png"), ("heatmap_png", "_heatmap.png")):
        assert record[key] == f"cat{suffix}"
        drawn = np.asarray(Image.open(tmp_path / record[key]))
        assert drawn.shape == (48, 64, 3)


def test_export_prints_what_it_did_and_no_library_noise(tiny_model_dir, tmp_path):
    pytest.importorskip("onnxscript")
    result = fastclipseg("export", str(tiny_model_dir), "-o", str(tmp_path / "export"), "--backend", "onnxruntime")
    assert result.returncode == 0, result.stderr
    noise = [line for line in result.stderr.splitlines() if not line.startswith("compiled the onnxruntime fp32")]
    assert noise == [], noise  # no FutureWarnings from torch.export, no "Loading weights" bar
    assert result.stdout.strip() == f"wrote {tmp_path / 'export'}"


def test_a_capture_device_is_refused_in_plain_words(tmp_path):
    result = fastclipseg("video", "/dev/video0", "-p", "a cat", "-o", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "capture devices (cameras) are not supported" in result.stderr and "not found" not in result.stderr


def test_warnings_are_one_line(tmp_path):
    # A warning the user must see (the library's own UserWarning) is one "warning:" line, no source line.
    script = textwrap.dedent("""
        import warnings, typer
        from fastclipseg import cli
        @cli.app.command("warn-once")
        def warn_once():
            warnings.warn("the masks are meaningless", UserWarning)
        cli.main()
    """)
    result = subprocess.run([shutil.which("python") or "python", "-c", script, "warn-once"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "warning: the masks are meaningless", result.stderr

"""A run stopped after any item and resumed writes the same bytes as one uninterrupted run.

Every stop position 1 .. N-1 is tried, with a vision batch size that does not divide N (so a
resume moves the batch boundaries) and a failing item in the middle. The stop is the one Ctrl-C
or SIGTERM asks for (`Interrupted` between items), injected without signals so that each position
is hit exactly.
"""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager

import pytest
from fastclipseg.bench.measure import moving_disc_frames, natural_image, write_video
from fastclipseg.cli import app
from fastclipseg.streams import jobs
from fastclipseg.streams.runs import Interrupted
from PIL import Image
from typer.testing import CliRunner

BATCH_SIZE = "3"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def stop_after(monkeypatch, items: int) -> None:
    """Make the next run stop (as after Ctrl-C) once `items` items are written or failed."""
    seen = []

    @contextmanager
    def stopping():
        def check() -> None:
            seen.append(1)
            if len(seen) >= items:
                raise Interrupted(signal.SIGINT)

        yield check

    monkeypatch.setattr(jobs, "stop_between_items", stopping)


def run_lines(out) -> int:
    return len((out / "masks.jsonl").read_bytes().splitlines()) + len((out / "errors.jsonl").read_bytes().splitlines())


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i in range(7):
        Image.fromarray(natural_image(30 + 5 * i, 40, seed=i)).save(folder / f"img{i}.png")
    (folder / "img3b.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")  # fails: an errors.jsonl line
    return folder


def test_batch_resumed_after_every_item_is_identical(photos, tiny_model_dir, tmp_path, monkeypatch):
    base = ["batch", photos, "-p", "a cat", "-p", "red dog", "-m", tiny_model_dir, "--backend", "torch",
            "--batch-size", BATCH_SIZE, "--threshold", "0.5"]
    whole = tmp_path / "whole"
    assert invoke(*base, "--out", whole).exit_code == 1  # one image fails
    items = run_lines(whole)
    assert items == 8
    for position in range(1, items):
        out = tmp_path / f"stopped-at-{position}"
        stop_after(monkeypatch, position)
        stopped = invoke(*base, "--out", out)
        assert stopped.exit_code == 128 + signal.SIGINT, stopped.output
        assert run_lines(out) == position
        monkeypatch.undo()
        resumed = invoke(*base, "--out", out, "--resume")
        assert resumed.exit_code == 1, resumed.output
        for name in ("masks.jsonl", "errors.jsonl"):
            assert (out / name).read_bytes() == (whole / name).read_bytes(), f"{name} after a stop at {position}"


@pytest.mark.parametrize("smooth", [None, "0.5"])
def test_video_resumed_after_every_frame_is_identical(tiny_model_dir, tmp_path, monkeypatch, smooth):
    pytest.importorskip("av", reason="video commands need PyAV (the 'video' extra)")
    video = write_video(tmp_path / "disc.mp4", (frame for frame, _ in moving_disc_frames(7, 48, 64)), codec="mpeg4")
    base = ["video", video, "-p", "a cat", "-p", "red dog", "-m", tiny_model_dir, "--backend", "torch",
            "--batch-size", BATCH_SIZE]
    if smooth is not None:
        base += ["--smooth", smooth]
    whole = tmp_path / "whole"
    assert invoke(*base, "--out", whole).exit_code == 0
    frames = [json.loads(line)["frame"] for line in (whole / "masks.jsonl").read_text().splitlines()]
    assert frames == list(range(7))
    for position in range(1, len(frames)):
        out = tmp_path / f"stopped-at-{position}"
        stop_after(monkeypatch, position)
        assert invoke(*base, "--out", out).exit_code == 128 + signal.SIGINT
        assert run_lines(out) == position
        monkeypatch.undo()
        assert invoke(*base, "--out", out, "--resume").exit_code == 0
        assert (out / "masks.jsonl").read_bytes() == (whole / "masks.jsonl").read_bytes(), f"stop at {position}"

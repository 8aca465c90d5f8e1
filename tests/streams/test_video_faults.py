"""Damaged videos lose nothing silently (issue 14): every frame that decodes comes out, every
piece that does not is reported.

The reference is PyAV decoding the same file without threads. FFmpeg's frame threads (which the
sources used before) hand a decoding failure back one call late; PyAV drops it when that call
also returned frames, and on the final drain the frames behind it are lost: a faststart MP4 cut
at 60 % gave 21 frames and no error where the reference gives 23 frames and the bad packet.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastclipseg.cli import app
from fastclipseg.ops.rle import encode
from fastclipseg.ops.validation import DEFAULT_MAX_PIXELS
from fastclipseg.streams.jobs import _frame_masks, _numbered_frames
from fastclipseg.streams.sources import open_video, video_items
from helpers.videos import make_video
from typer.testing import CliRunner

av = pytest.importorskip("av", reason="video tests need PyAV (the 'video' extra)")

FRAMES = 40


def reference_decode(path) -> tuple[list[tuple[float, np.ndarray]], list[float]]:
    """PyAV without threads: (timestamp, RGB) of every frame that decodes, and the timestamps of
    the packets whose decoding raised."""
    frames, failed = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                failed.append(float(packet.pts * packet.time_base))
                continue
            frames += [(float(f.time), f.to_ndarray(format="rgb24")) for f in decoded]
    return frames, failed


def items_of(path, **options):
    items = list(video_items(path, **options))
    good = [(i.index, i.timestamp, i.load()) for i in items if i.error is None]
    return good, [i for i in items if i.error is not None]


def assert_matches_reference(path, good, errors, reference, failed):
    """Every reference frame, in order, numbered 0.., same time and pixels; every reference
    failure reported (at its packet's time), each report naming the file."""
    assert [index for index, _, _ in good] == list(range(len(reference)))
    assert [t for _, t, _ in good] == pytest.approx([t for t, _ in reference], abs=1e-9)
    for (_, _, rgb), (_, expected) in zip(good, reference):
        np.testing.assert_array_equal(rgb, expected)
    reported = [e.timestamp for e in errors if e.key.startswith("packet:") and e.timestamp is not None]
    for when in failed:
        assert any(abs(when - t) < 1e-9 for t in reported), (when, [e.error for e in errors])
    assert all(str(path) in e.error for e in errors)
    assert len({e.key for e in errors}) == len(errors), "keys must tell failures apart (resume skips by key)"


@pytest.fixture(scope="module")
def faststart_mp4(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("faults") / "faststart.mp4", frames=FRAMES)


@pytest.fixture
def truncated_mp4(faststart_mp4, tmp_path):
    """The faststart MP4 cut at 60 % of its bytes: the index lists all 40 frames, the file holds fewer."""
    data = faststart_mp4.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def test_truncated_faststart_mp4_loses_no_frame_and_reports_the_cut(truncated_mp4):
    reference, failed = reference_decode(truncated_mp4)
    assert 0 < len(reference) < FRAMES and failed, "the cut must fall inside the frame data"
    good, errors = items_of(truncated_mp4)
    assert_matches_reference(truncated_mp4, good, errors, reference, failed)
    # The frames the index lists beyond the cut are reported too, as one failure.
    missing = [e for e in errors if "ends early" in e.error]
    assert len(missing) == 1 and f"lists {FRAMES} video packets" in missing[0].error


def test_truncated_video_through_segment_video(tiny_segmenter, truncated_mp4):
    reference, failed = reference_decode(truncated_mp4)
    got = list(tiny_segmenter.segment_video(truncated_mp4, "a cat", batch_size=3))
    ok = [r for r in got if r.ok]
    assert [r.index for r in ok] == list(range(len(reference)))
    assert len(got) - len(ok) >= len(failed) + 1  # each bad packet, and the frames cut off
    assert all(str(truncated_mp4) in r.error for r in got if not r.ok)


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_video_damaged_in_the_middle(tmp_path, codec):
    path = make_video(tmp_path / f"{codec}.mp4", codec, frames=FRAMES)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for offset in range(len(data) // 3, len(data) * 2 // 3, 997):
        data[offset : offset + 64] = rng.integers(0, 255, 64, dtype=np.uint8).tobytes()
    damaged = tmp_path / f"damaged-{codec}.mp4"
    damaged.write_bytes(bytes(data))
    reference, failed = reference_decode(damaged)
    assert reference, "the damage must leave frames that decode"
    good, errors = items_of(damaged)
    assert_matches_reference(damaged, good, errors, reference, failed)
    if failed or len(reference) < FRAMES:
        assert errors, "frames were lost and nothing said so"


def test_cut_short_packet_that_still_decodes_is_reported(tmp_path):
    # mpeg4 at this size puts most bytes in the first frame: a 60 % cut lands inside it; FFmpeg
    # conceals the missing part and raises nothing, so only the demuxer's flag tells.
    source = make_video(tmp_path / "source.mp4", "mpeg4", frames=FRAMES)
    data = source.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        entries = stream.index_entries if hasattr(stream, "index_entries") else None
        cut_inside = [k for k, e in enumerate(entries or []) if e.pos < len(data) * 6 // 10 < e.pos + e.size]
    good, errors = items_of(path)
    reference, _ = reference_decode(path)
    assert len(good) == len(reference)
    assert any("cut short" in e.error for e in errors), [e.error for e in errors]
    if cut_inside:
        assert any(e.key == f"packet:{cut_inside[0]}" for e in errors), [e.key for e in errors]


def test_file_cut_between_packets_is_reported(faststart_mp4, tmp_path):
    """A cut exactly at a packet's end leaves no damaged packet: only the index tells."""
    with av.open(str(faststart_mp4)) as container:
        stream = container.streams.video[0]
        if not hasattr(stream, "index_entries"):
            pytest.skip("needs PyAV >= 15 (Stream.index_entries)")
        entries = sorted(stream.index_entries, key=lambda e: e.pos)
    keep = entries[len(entries) // 2]
    path = tmp_path / "cut-between.mp4"
    path.write_bytes(faststart_mp4.read_bytes()[: keep.pos + keep.size])
    reference, failed = reference_decode(path)
    good, errors = items_of(path)
    assert not failed and len(good) == len(reference) > 0
    read = len(entries) // 2 + 1
    assert [e.key for e in errors] == [f"packet:{read}-{FRAMES - 1}"]
    assert f"only {read}" in errors[0].error and str(path) in errors[0].error


@pytest.mark.parametrize(("codec", "suffix", "faststart"),
                         [("libx264", ".mp4", True), ("libx264", ".mp4", False), ("mpeg4", ".mp4", False),
                          ("libx264", ".mkv", False)])
def test_intact_videos_report_nothing(tmp_path, codec, suffix, faststart):
    # B-frames (libx264) give the MP4 an edit list: its index must still count as complete.
    path = make_video(tmp_path / f"intact{suffix}", codec, frames=FRAMES, faststart=faststart)
    good, errors = items_of(path)
    assert errors == []
    reference, _ = reference_decode(path)
    assert len(good) == len(reference) == FRAMES


def test_overlay_numbers_frames_as_the_run_does(truncated_mp4, tmp_path):
    """The overlay renderer finds each record's frame by number: same frames, same numbers."""
    good, _ = items_of(truncated_mp4)
    with open_video(truncated_mp4) as container:
        frames = _numbered_frames(container, container.streams.video[0])
        numbered = [(i, f.to_ndarray(format="rgb24")) for i, f in frames]
    assert [i for i, _ in numbered] == [i for i, _, _ in good]
    for (_, a), (_, _, b) in zip(numbered, good):
        np.testing.assert_array_equal(a, b)


def test_overlay_decodes_more_prompts_than_the_default_cap(tmp_path):
    """Seven prompts on a 4K video are 58 M mask pixels, over the 50 M default decode cap: the
    overlay renderer allows exactly its frame's worth. Scaled down: 1000x1000 frames, 51 prompts."""
    height = width = 1000
    count = DEFAULT_MAX_PIXELS // (height * width) + 1
    mask = np.zeros((height, width), dtype=bool)
    mask[10:20, 30:60] = True
    record = {"frame": 3, "masks": [{"rle": encode(mask)} for _ in range(count)]}
    masks = _frame_masks(record, height, width, tmp_path / "masks.jsonl")
    assert masks.shape == (count, height, width) and masks.dtype == bool
    assert int(masks.sum()) == count * 300
    assert _frame_masks({"frame": 4, "masks": []}, height, width, tmp_path / "masks.jsonl") is None


def test_overlay_names_a_record_of_another_size(tmp_path):
    record = {"frame": 7, "masks": [{"rle": encode(np.ones((20, 30), dtype=bool))}]}
    with pytest.raises(ValueError, match=r"masks\.jsonl: frame 7: masks of 30x20 for a 96x72 video"):
        _frame_masks(record, 72, 96, tmp_path / "masks.jsonl")
    bigger = {"frame": 8, "masks": [{"rle": encode(np.ones((200, 300), dtype=bool))}]}
    with pytest.raises(ValueError, match=r"frame 8: .*max_pixels"):
        _frame_masks(bigger, 72, 96, tmp_path / "masks.jsonl")


def test_frames_held_in_the_decoder_come_out_when_reading_stops(faststart_mp4, monkeypatch):
    """A container that fails part-way: the frames of the packets read before (B-frames keep
    some in the decoder) come out with their timestamps, then the failure."""
    from fastclipseg.streams import sources

    real_open = sources.open_video
    packets_read = 12

    class FailingContainer:
        def __init__(self, path):
            self.real = real_open(path)
            self.streams = self.real.streams

        def demux(self, stream):
            for number, packet in enumerate(self.real.demux(stream)):
                if number == packets_read:
                    raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
                yield packet

        def close(self):
            self.real.close()

    with av.open(str(faststart_mp4)) as container:
        stream = container.streams.video[0]
        read = [float(p.pts * p.time_base) for _, p in zip(range(packets_read), container.demux(stream))]
    assert read != sorted(read), "B-frames: packets come in decoding order, frames in presentation order"
    monkeypatch.setattr(sources, "open_video", FailingContainer)
    good, errors = items_of(faststart_mp4)
    # One frame per packet read, none left in the decoder, each with its packet's time.
    assert [t for _, t, _ in good] == pytest.approx(sorted(read), abs=1e-9)
    assert [index for index, _, _ in good] == list(range(packets_read))
    assert [e.key for e in errors] == [f"packet:{packets_read}"]
    assert f"reading stopped after frame {packets_read - 1}" in errors[0].error


def test_cli_writes_each_failure_to_errors_jsonl(tiny_model_dir, truncated_mp4, tmp_path):
    reference, failed = reference_decode(truncated_mp4)
    out = tmp_path / "out"
    args = ["video", str(truncated_mp4), "-p", "a cat", "-m", str(tiny_model_dir), "--out", str(out),
            "--backend", "torch"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # something failed
    assert "Traceback" not in result.output
    records = [json.loads(line) for line in (out / "masks.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(reference)))
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) >= len(failed) + 1
    for when in failed:
        assert any(e["timestamp"] == pytest.approx(when) and e["key"].startswith("packet:") for e in errors), errors
    assert all(str(truncated_mp4) in e["error"] and e["image"] == str(truncated_mp4) for e in errors)
    assert f"{len(errors)} failed in all" in result.stderr
    # Resuming finds everything done: no line is written twice.
    before = (out / "masks.jsonl").read_bytes(), (out / "errors.jsonl").read_bytes()
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 1 and "Traceback" not in resumed.output
    assert ((out / "masks.jsonl").read_bytes(), (out / "errors.jsonl").read_bytes()) == before

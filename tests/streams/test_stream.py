"""Streams: `segment_stream` and `segment_video` (threads, batching, order, bad input, bounded memory)."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
from fastclipseg.bench.measure import moving_disc_frames, natural_image, write_video
from fastclipseg.results import FrameError, FrameResult
from helpers.parity import assert_masks_agree
from PIL import Image

av = pytest.importorskip("av", reason="video tests need PyAV (the 'video' extra)")

PROMPTS = ["a cat", "red dog"]


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    """40 frames of 96x128 at 25 fps: a red disc crossing a noisy background."""
    path = tmp_path_factory.mktemp("video") / "disc.mp4"
    return write_video(path, (frame for frame, _ in moving_disc_frames(40, 96, 128)))


def decoded_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fastclipseg-")]


def assert_same_results(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.image_size == b.image_size
        np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-5)
        for k in range(len(a.prompts)):
            assert_masks_agree(a.masks[k], b, k)


def test_stream_matches_segment_batch_in_order(tiny_segmenter, tmp_path):
    # Sizes vary from image to image; paths, PIL images and arrays mix.
    arrays = [natural_image(h, w, seed=i) for i, (h, w) in enumerate([(40, 60), (90, 30), (64, 64), (17, 200), (50, 50)])]
    path = tmp_path / "third.png"
    Image.fromarray(arrays[2]).save(path)
    inputs = [arrays[0], Image.fromarray(arrays[1]), str(path), arrays[3], arrays[4]]
    expected = tiny_segmenter.segment_batch(arrays, PROMPTS)
    for batch_size in (1, 2, 8):
        with tiny_segmenter.segment_stream(inputs, PROMPTS, batch_size=batch_size) as stream:
            got = list(stream)
        assert all(isinstance(r, FrameResult) and r.ok for r in got)
        assert [r.index for r in got] == [0, 1, 2, 3, 4]
        assert got[2].source == str(path) and got[2].key == str(path) and got[0].key == "image:0"
        assert_same_results(got, expected)
        times = stream.times
        assert times.frames == 5 and times.failed == 0 and times.batches >= -(-5 // batch_size)
        assert times.wall > 0 and times.network > 0
    # Stability scores come with every result, in [0, 1].
    assert all(0.0 <= s <= 1.0 for r in got for s in r.stability)
    assert not pipeline_threads()


def test_stream_reports_bad_items_and_goes_on(tiny_segmenter, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    good = natural_image(30, 40)
    inputs = [good, str(tmp_path / "missing.jpg"), str(corrupt), np.zeros((5, 5, 3), np.float32), good]
    got = list(tiny_segmenter.segment_stream(inputs, "a cat"))
    assert [r.ok for r in got] == [True, False, False, False, True]
    assert [r.index for r in got] == [0, 1, 2, 3, 4]
    assert "not found" in got[1].error and "missing.jpg" in got[1].error
    assert "corrupt.png" in got[2].error
    assert "uint8" in got[3].error
    assert isinstance(got[1], FrameError) and got[1].to_dict()["error"] == got[1].error
    np.testing.assert_array_equal(got[0].logits, got[4].logits)


def test_skip_leaves_out_done_keys(tiny_segmenter, tmp_path):
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(natural_image(20, 30, seed=i)).save(paths[-1])
    got = list(tiny_segmenter.segment_stream(paths, "a cat", skip={paths[0], paths[2]}))
    assert [r.source for r in got] == [paths[1], paths[3]]


def test_video_frames_match_segment_batch(tiny_segmenter, video_file):
    frames = decoded_frames(video_file)
    expected = tiny_segmenter.segment_batch(frames, PROMPTS)
    for batch_size in (1, 3):
        got = list(tiny_segmenter.segment_video(video_file, PROMPTS, batch_size=batch_size))
        assert [r.index for r in got] == list(range(40))
        np.testing.assert_allclose([r.timestamp for r in got], np.arange(40) / 25, atol=1e-9)
        assert all(r.source == str(video_file) and r.key == f"frame:{r.index}" for r in got)
        assert_same_results(got, expected)


def test_video_every_n_and_time_range(tiny_segmenter, video_file):
    got = list(tiny_segmenter.segment_video(video_file, "a cat", every_n=3))
    assert [r.index for r in got] == list(range(0, 40, 3))
    got = list(tiny_segmenter.segment_video(video_file, "a cat", start=0.4, end=1.0, every_n=2))
    # Frames at 0.40 .. 0.96 s are 10 .. 24; every second one from the first in range.
    assert [r.index for r in got] == list(range(10, 25, 2))
    with pytest.raises(ValueError, match="every_n"):
        tiny_segmenter.segment_video(video_file, "a cat", every_n=0)
    with pytest.raises(ValueError, match="end must be"):
        tiny_segmenter.segment_video(video_file, "a cat", start=2.0, end=1.0)
    with pytest.raises(ValueError, match="need a video file"):
        tiny_segmenter.segment_video([natural_image(10, 10)], "a cat", start=1.0)


def test_video_from_frames_of_varying_sizes(tiny_segmenter):
    frames = [natural_image(32, 48), natural_image(70, 20), natural_image(32, 48, seed=3)]
    got = list(tiny_segmenter.segment_video(iter(frames), "a cat", batch_size=2))
    assert [r.image_size for r in got] == [(32, 48), (70, 20), (32, 48)]
    assert [r.index for r in got] == [0, 1, 2] and all(r.timestamp is None for r in got)
    assert_same_results(got, tiny_segmenter.segment_batch(frames, "a cat"))


def test_bad_video_files(tiny_segmenter, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        tiny_segmenter.segment_video(tmp_path / "missing.mp4", "a cat")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(ValueError, match="not a readable video"):
        tiny_segmenter.segment_video(text, "a cat")
    with pytest.raises(ValueError, match="is a directory"):
        tiny_segmenter.segment_video(tmp_path, "a cat")
    image = tmp_path / "still.png"
    Image.fromarray(natural_image(20, 20)).save(image)
    # A still image opens as a one-frame video in FFmpeg: that is fine, and segmented.
    assert len(list(tiny_segmenter.segment_video(image, "a cat"))) == 1


def test_zero_frame_video_raises_a_clear_error(tiny_segmenter, tmp_path):
    # An mp4 whose header was written but no frame: FFmpeg sees no video stream in it.
    path = tmp_path / "empty.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height = 64, 48
    container.start_encoding()
    container.close()
    with pytest.raises(ValueError, match="empty.mp4: has no video stream"):
        tiny_segmenter.segment_video(path, "a cat")
    # A stream whose every packet fails to decode: no frame at all, said at the end.
    damaged = tmp_path / "all-damaged.mp4"
    source = tmp_path / "source.mp4"
    write_video(source, (natural_image(48, 64, seed=i) for i in range(5)), codec="mpeg4")
    with av.open(str(source)) as original, av.open(str(damaged), "w") as copy:
        video = original.streams.video[0]
        out = copy.add_stream_from_template(video)
        for packet in original.demux(video):
            if packet.size:
                packet.update(bytes(packet.size))  # all zeros: no start code, nothing decodes
                packet.stream = out
                copy.mux(packet)
    stream = tiny_segmenter.segment_video(damaged, "a cat")
    items = []
    with pytest.raises(ValueError, match="contains no decodable video frames"):
        for item in stream:
            items.append(item)
    assert all(not item.ok for item in items)
    assert not pipeline_threads()


def test_corrupt_and_truncated_videos_finish(tiny_segmenter, tmp_path, video_file):
    data = video_file.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    # Cut the file in the middle of its frame data (an mp4's index is at its start or end).
    truncated.write_bytes(data[: len(data) * 2 // 3])
    damaged = tmp_path / "damaged.mp4"
    middle = bytearray(data)
    rng = np.random.default_rng(0)
    for offset in range(len(data) // 3, len(data) * 2 // 3, 997):
        middle[offset : offset + 64] = rng.integers(0, 255, 64, dtype=np.uint8).tobytes()
    damaged.write_bytes(bytes(middle))
    for path in (truncated, damaged):
        try:
            got = list(tiny_segmenter.segment_video(path, "a cat"))
        except ValueError as error:  # a container too damaged to open is refused with its reason
            assert str(path) in str(error)
            continue
        good = [r for r in got if r.ok]
        assert good, f"{path.name}: no frame segmented"
        frame_numbers = [r.index for r in good]
        assert frame_numbers == sorted(set(frame_numbers))
        assert all(isinstance(r.error, str) and str(path) in r.error for r in got if not r.ok)


def test_source_exception_reaches_the_caller(tiny_segmenter):
    def frames():
        yield natural_image(20, 20)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        list(tiny_segmenter.segment_video(frames(), "a cat"))
    assert not pipeline_threads()


def test_closing_or_dropping_a_stream_stops_its_threads(tiny_segmenter):
    def endless():
        while True:
            yield natural_image(24, 24)

    with tiny_segmenter.segment_video(endless(), "a cat", batch_size=2) as stream:
        first = next(stream)
        assert first.index == 0 and pipeline_threads()
    assert not pipeline_threads()

    stream = tiny_segmenter.segment_video(endless(), "a cat", batch_size=2)
    next(stream)
    del stream
    gc.collect()
    deadline = time.monotonic() + 5
    while pipeline_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pipeline_threads()


def test_frames_in_flight_stay_bounded(tiny_segmenter):
    """However long the stream, the threads hold at most `max_in_flight` frames ahead of the caller."""
    produced = 0

    def counting():
        nonlocal produced
        for _ in range(400):
            produced += 1
            yield np.full((24, 32, 3), produced % 255, np.uint8)

    consumed = 0
    ahead = []
    with tiny_segmenter.segment_video(counting(), "a cat", batch_size=4) as stream:
        for _ in stream:
            consumed += 1
            if consumed % 25 == 0:
                time.sleep(0.05)  # a slow consumer: the threads must wait, not pile frames up
                ahead.append(produced - consumed)
    assert consumed == 400
    assert max(ahead) <= stream.max_in_flight, (max(ahead), stream.max_in_flight)
    assert stream.max_in_flight <= 40


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="RSS is read from /proc (Linux)")
def test_memory_stays_flat_on_a_long_video(tiny_segmenter, tmp_path):
    """2000 frames: resident memory after the last is within a few MB of what it was at frame 400."""
    frames = [natural_image(120, 160, seed=i) for i in range(7)]
    path = write_video(tmp_path / "long.mp4", (frames[i % 7] for i in range(2000)), codec="mpeg4")
    marks = {}
    with tiny_segmenter.segment_video(path, PROMPTS, batch_size=8) as stream:
        for result in stream:
            result.to_dict()  # the native post-processing pass, as the command line runs it
            if result.index in (400, 1999):
                gc.collect()
                marks[result.index] = _rss_mb()
    assert stream.times.frames == 2000
    assert marks[1999] - marks[400] < 20, marks


def test_video_url_and_prompts_encoded_once(tiny_segmenter, video_file):
    """A URL goes to FFmpeg as is (file:// here, as no network is needed); the prompt stage runs
    once per stream, not once per batch."""
    engine = tiny_segmenter.engine
    calls = []
    original = engine.encode_prompts

    def counting(tokens):
        calls.append(tokens.shape[0])
        return original(tokens)

    tiny_segmenter.prompt_cache.clear()
    engine.encode_prompts = counting
    try:
        got = list(tiny_segmenter.segment_video(f"file://{video_file}", ["a new prompt", "another one"], batch_size=2))
    finally:
        del engine.encode_prompts
    assert [r.index for r in got] == list(range(40))
    assert calls == [1, 1]  # each prompt once (one call per distinct prompt), not once per batch


def test_unreadable_container_mid_video_is_reported_and_the_stream_ends(tiny_segmenter, video_file, monkeypatch):
    """When the container itself fails part-way (not one packet's data), the frames before it are
    segmented and one error item says where reading stopped."""
    from fastclipseg.streams import sources

    real_open = sources.open_video

    class FailingAfterTenPackets:
        def __init__(self, path):
            self.real = real_open(path)
            self.streams = self.real.streams

        def demux(self, stream):
            for number, packet in enumerate(self.real.demux(stream)):
                if number == 10:
                    raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
                yield packet

        def close(self):
            self.real.close()

    monkeypatch.setattr(sources, "open_video", FailingAfterTenPackets)
    got = list(tiny_segmenter.segment_video(video_file, "a cat"))
    assert got[-1].ok is False and "reading stopped" in got[-1].error and "Invalid data" in got[-1].error
    good = [r.index for r in got if r.ok]
    assert good == list(range(len(good))) and 0 < len(good) <= 10

"""Bad input for videos and run folders (issue 14): each case fails with the documented exception
naming the input, or on the command line with one `error: ...` line naming it and no traceback.

API: `segment_video` / `video_items` raise `FileNotFoundError` for a missing file, `ValueError`
for a file that is not a video (or has no video stream, or no decodable frame, or no frame in the
asked time range), `TypeError` / `ValueError` for an option of the wrong type / value, and
`RunFolderError` (a `ValueError`) for a run folder that cannot be resumed. The command line exits
2 for those found before any work, 1 for a failure once the video is being decoded.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import zipfile

import numpy as np
import pytest
from fastclipseg.streams.runs import RunFolder, RunFolderError
from fastclipseg.streams.sources import video_items
from helpers.cli_checks import error_line, invoke
from helpers.videos import make_video

av = pytest.importorskip("av", reason="video tests need PyAV (the 'video' extra)")

FRAMES = 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=FRAMES)


# -- files that are not (readable) videos ---------------------------------------------------------------


def write_audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_data_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_data_stream()
        for i in range(5):
            packet = av.Packet(b"not a picture")
            packet.stream, packet.pts, packet.dts = stream, i * 90000, i * 90000
            container.mux(packet)


def bad_file(tmp_path, kind: str):
    """A path for each kind of not-a-video, and the exception and words it must raise."""
    if kind == "missing":
        return tmp_path / "missing.mp4", FileNotFoundError, "not found"
    path = tmp_path / {"audio-only": "sound.m4a", "data-only": "data.ts"}.get(kind, f"{kind}.mp4")
    if kind == "folder":
        path.mkdir()
        return path, ValueError, "is a directory"
    if kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    elif kind == "audio-only":
        write_audio_only(path)
        return path, ValueError, "has no video stream"
    elif kind == "data-only":
        try:
            write_data_only(path)
        except (AttributeError, NotImplementedError, av.error.FFmpegError) as error:
            pytest.skip(f"this PyAV cannot write a data stream ({error})")
        return path, ValueError, "has no video stream"
    return path, ValueError, "not a readable video"


NOT_VIDEOS = ["missing", "folder", "text", "zero-bytes", "random-bytes", "audio-only", "data-only"]


@pytest.mark.parametrize("kind", NOT_VIDEOS)
def test_not_a_video(tiny_segmenter, tmp_path, kind):
    path, exception, words = bad_file(tmp_path, kind)
    with pytest.raises(exception) as raised:
        tiny_segmenter.segment_video(path, "a cat")
    assert type(raised.value) is exception and words in str(raised.value) and str(path) in str(raised.value)
    with pytest.raises(exception, match=words):
        list(video_items(path))


@pytest.mark.parametrize("kind", NOT_VIDEOS)
def test_not_a_video_on_the_command_line(tiny_model_dir, tmp_path, kind):
    path, _, words = bad_file(tmp_path, kind)
    out = tmp_path / "out"
    result = invoke("video", path, "-p", "a cat", "-m", tiny_model_dir, "--out", out)
    assert words in error_line(result, 2, str(path))
    assert not out.exists(), "refused before any work: no run folder to --force later"


def reference_frames(path) -> int:
    """Frames PyAV decodes from `path` without threads (0 if it does not open)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            count = 0
            for packet in container.demux(stream):
                try:
                    count += len(packet.decode())
                except av.error.FFmpegError:
                    pass
            return count
    except (av.error.FFmpegError, IndexError):
        return 0


@pytest.mark.parametrize("keep", [0.001, 0.02, 0.05, 0.1, 0.3, 0.6, 0.9, 0.999])
def test_truncated_at_several_points(clip, tmp_path, keep):
    """However a video is cut, it is refused (naming it) or decodes every frame the cut leaves,
    and says that something is missing."""
    data = clip.read_bytes()
    path = tmp_path / f"cut-{keep}.mp4"
    path.write_bytes(data[: int(len(data) * keep)])
    try:
        items = list(video_items(path))
    except ValueError as error:
        assert str(path) in str(error)
        assert reference_frames(path) == 0, "refused a video that has frames"
        return
    good = [i.index for i in items if i.error is None]
    errors = [i for i in items if i.error is not None]
    assert good == list(range(reference_frames(path)))
    assert errors, "a cut-short video must not pass as whole"
    assert all(str(path) in e.error for e in errors)


# -- options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "exception"), [(0, ValueError), (-3, ValueError), (1.5, TypeError),
                                                  (True, TypeError), ("2", TypeError), (None, TypeError)])
def test_bad_every_n(tiny_segmenter, clip, value, exception):
    with pytest.raises(exception, match="every_n must be an int >= 1") as raised:
        tiny_segmenter.segment_video(clip, "a cat", every_n=value)
    assert type(raised.value) is exception and repr(value) in str(raised.value)


@pytest.mark.parametrize(("start", "end", "exception", "names"), [
    (-1.0, None, ValueError, ["start", "-1.0"]),
    (math.nan, None, ValueError, ["start", "nan"]),
    (math.inf, None, ValueError, ["start", "inf"]),
    ("1", None, TypeError, ["start", "'1'"]),
    (True, None, TypeError, ["start", "True"]),
    (2.0, 1.0, ValueError, ["end", "1.0"]),
    (1.0, 1.0, ValueError, ["end", "1.0"]),
    (None, math.nan, ValueError, ["end", "nan"]),
    (None, "soon", TypeError, ["end", "'soon'"]),
], ids=["negative", "nan", "inf", "string", "bool", "end-before", "empty", "end-nan", "end-string"])
def test_bad_time_range(tiny_segmenter, clip, start, end, exception, names):
    with pytest.raises(exception) as raised:
        tiny_segmenter.segment_video(clip, "a cat", start=start, end=end)
    assert type(raised.value) is exception
    for name in names:
        assert name in str(raised.value), str(raised.value)


@pytest.mark.parametrize(("start", "end"), [(100.0, None), (0.5, 0.51)], ids=["past-the-end", "between-frames"])
def test_time_range_without_frames(tiny_segmenter, clip, start, end):
    # Frames are 0.04 s apart: [0.5, 0.51) holds none. An empty output would pass for success.
    stream = tiny_segmenter.segment_video(clip, "a cat", start=start, end=end)
    with pytest.raises(ValueError, match="no frame in the time range") as raised:
        list(stream)
    assert str(clip) in str(raised.value) and repr(start) in str(raised.value)


def test_time_range_on_frames_without_timestamps(tiny_segmenter):
    with pytest.raises(ValueError, match="need a video file"):
        tiny_segmenter.segment_video(iter([np.zeros((8, 8, 3), np.uint8)]), "a cat", start=1.0)


@pytest.mark.parametrize(("options", "names"), [
    (["--every", "0"], ["--every", "0"]),
    (["--start", "-1"], ["start", "-1.0"]),
    (["--start", "nan"], ["start", "nan"]),
    (["--end", "0"], ["end", "0.0"]),
    (["--every", "two"], ["--every"]),
])
def test_bad_options_on_the_command_line(tiny_model_dir, clip, tmp_path, options, names):
    result = invoke("video", clip, "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "out", *options)
    error_line(result, 2, *names)


def test_time_range_past_the_end_on_the_command_line(tiny_model_dir, clip, tmp_path):
    result = invoke("video", clip, "-p", "a cat", "-m", tiny_model_dir, "--out", tmp_path / "out",
                    "--backend", "torch", "--start", "60")
    error_line(result, 1, str(clip), "no frame in the time range")


# -- run folders ----------------------------------------------------------------------------------------


def command(clip, model, out, *extra):
    return ["video", clip, "-p", "a cat", "-m", model, "--out", out, "--backend", "torch", "--batch-size", "2", *extra]


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, clip, tmp_path_factory):
    """A finished `fastclipseg video` run folder (with --smooth, so it holds smoothing.npz)."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = invoke(*command(clip, tiny_model_dir, out, "--smooth", "0.5"))
    assert result.exit_code == 0, result.output
    assert (out / "smoothing.npz").is_file() and len((out / "masks.jsonl").read_text().splitlines()) == FRAMES
    return out


def damage(finished_run, tmp_path, name: str, data: bytes | None):
    """A copy of the run with `name` replaced by `data` (None: made a folder)."""
    out = shutil.copytree(finished_run, tmp_path / "out")
    target = out / name
    target.unlink()
    if data is None:
        target.mkdir()
    else:
        target.write_bytes(data)
    return out, target


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npz_claiming(shape: tuple[int, ...], data: bytes = b"") -> bytes:
    """An .npz whose logits header names `shape` but holds only `data`: numpy would allocate the
    whole shape before reading (1 x 10^5 x 10^5 float32: 37 GiB)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    frame = io.BytesIO()
    np.save(frame, np.int64(29))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("frame.npy", frame.getvalue())
        out.writestr("logits.npy", header.getvalue() + data)
    return archive.getvalue()


def masks_with(finished_run, line: bytes) -> bytes:
    lines = (finished_run / "masks.jsonl").read_bytes().splitlines(keepends=True)
    return b"".join(lines[:5] + [line] + lines[5:])


DAMAGES = {
    # name: (file, how it is damaged, words the error must hold besides the file's path)
    "masks-garbage-line": ("masks.jsonl", lambda run: masks_with(run, b"}}} not json\n"), "line 6 is not valid JSON"),
    "masks-not-utf8": ("masks.jsonl", lambda run: masks_with(run, b'{"frame": 5, "x": "\xff"}\n'), "line 6"),
    "masks-number-line": ("masks.jsonl", lambda run: masks_with(run, b"42\n"), "line 6 is not a record"),
    "masks-empty-object": ("masks.jsonl", lambda run: masks_with(run, b"{}\n"), "line 6 is not a record"),
    "masks-frame-not-a-number": ("masks.jsonl", lambda run: masks_with(run, b'{"frame": "five", "masks": []}\n'),
                                 "frame is 'five'"),
    "masks-a-folder": ("masks.jsonl", lambda run: None, "cannot be read"),
    "errors-garbage": ("errors.jsonl", lambda run: b"not json\n", "line 1 is not valid JSON"),
    "run-json-garbage": ("run.json", lambda run: b"{this is not json", "settings cannot be read"),
    "run-json-truncated": ("run.json", lambda run: (run / "run.json").read_bytes()[:40], "settings cannot be read"),
    "run-json-a-list": ("run.json", lambda run: b"[1, 2, 3]\n", "should be a JSON object"),
    "run-json-not-utf8": ("run.json", lambda run: b'{"command": "\xff"}', "settings cannot be read"),
    "run-json-a-folder": ("run.json", lambda run: None, "settings cannot be read"),
    "smoothing-garbage": ("smoothing.npz", lambda run: b"garbage" * 20, "not an .npz archive"),
    "smoothing-truncated": ("smoothing.npz", lambda run: (run / "smoothing.npz").read_bytes()[:100], "damaged"),
    "smoothing-missing-key": ("smoothing.npz", lambda run: npz(frame=np.int64(29)), "damaged"),
    "smoothing-nan": ("smoothing.npz", lambda run: npz(frame=np.int64(29), logits=np.full((1, 4, 4), np.nan)),
                      "finite values"),
    "smoothing-frame-array": ("smoothing.npz", lambda run: npz(frame=np.arange(3), logits=np.zeros((1, 4, 4))),
                              "not a frame number"),
    "smoothing-huge-header": ("smoothing.npz", lambda run: npz_claiming((1, 100_000, 100_000)),
                              "larger than any model's"),
    "smoothing-data-short": ("smoothing.npz", lambda run: npz_claiming((1, 8, 8), b"\0" * 16),
                             "need 256 bytes, the archive holds 16"),
    "smoothing-other-prompts": ("smoothing.npz", lambda run: npz(frame=np.int64(29), logits=np.zeros((2, 4, 4))),
                                "logits for 2 prompts, but the run has 1"),
    "smoothing-2d": ("smoothing.npz", lambda run: npz(frame=np.int64(29), logits=np.zeros((4, 4))),
                     "expected (prompts, height, width)"),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_damaged_run_folder_on_resume(finished_run, tiny_model_dir, clip, tmp_path, case):
    name, make, words = DAMAGES[case]
    out, target = damage(finished_run, tmp_path, name, make(finished_run))
    settings = json.loads((finished_run / "run.json").read_text())
    with pytest.raises(RunFolderError) as raised:
        RunFolder(out, settings, resume=True)
    assert str(target) in str(raised.value) and words in str(raised.value), str(raised.value)
    line = error_line(invoke(*command(clip, tiny_model_dir, out, "--smooth", "0.5", "--resume")), 2, str(target))
    assert words in line
    # --force starts over from such a folder (a folder in a file's place it will not delete).
    result = invoke(*command(clip, tiny_model_dir, out, "--smooth", "0.5", "--force"))
    if target.is_dir():
        error_line(result, 2, str(target), "remove it")
        assert (out / "run.json").exists() or name == "run.json", "refused, yet a file was removed"
    else:
        assert result.exit_code == 0, result.output
        assert (out / "masks.jsonl").read_bytes() == (finished_run / "masks.jsonl").read_bytes()


def test_resume_with_other_settings(finished_run, tiny_model_dir, clip, tmp_path):
    out = shutil.copytree(finished_run, tmp_path / "out")
    settings = {**json.loads((out / "run.json").read_text()), "threshold": 0.3}
    with pytest.raises(RunFolderError, match=r"threshold: 0\.5 then, 0\.3 now") as raised:
        RunFolder(out, settings, resume=True)
    assert str(out) in str(raised.value)
    result = invoke(*command(clip, tiny_model_dir, out, "--smooth", "0.5", "--resume", "--every", "3"))
    assert "every: 1 then, 3 now" in error_line(result, 2, str(out))


def test_resume_without_run_json(finished_run, tiny_model_dir, clip, tmp_path):
    out = shutil.copytree(finished_run, tmp_path / "out")
    (out / "run.json").unlink()
    with pytest.raises(RunFolderError, match="has results but no run.json"):
        RunFolder(out, {"command": "video"}, resume=True)
    error_line(invoke(*command(clip, tiny_model_dir, out, "--smooth", "0.5", "--resume")), 2, str(out), "run.json")


def test_run_folder_that_is_a_file(tiny_model_dir, clip, tmp_path):
    a_file = tmp_path / "out"
    a_file.write_text("a file where the run folder should be")
    with pytest.raises(RunFolderError, match="is a file, not a folder") as raised:
        RunFolder(a_file, {"command": "video"})
    assert str(a_file) in str(raised.value)
    error_line(invoke(*command(clip, tiny_model_dir, a_file)), 2, str(a_file), "cannot write to output folder")
    assert a_file.read_text() == "a file where the run folder should be"


def unwritable_folder(tmp_path):
    """A folder the test cannot write into, or a skip saying why there is none."""
    if os.path.isdir("/sys"):
        probe = "/sys/fastclipseg-test-out"
        try:
            os.mkdir(probe)
        except OSError:
            return probe  # sysfs takes no new folders, even from root
        os.rmdir(probe)
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").write_bytes(b"")
    except OSError:
        return str(folder / "out")
    pytest.skip("running as root without /sys: permissions do not stop writes here")


def test_unwritable_output_folder(tiny_model_dir, clip, tmp_path):
    out = unwritable_folder(tmp_path)
    error_line(invoke(*command(clip, tiny_model_dir, out)), 2, out, "cannot write to output folder")
    with pytest.raises(OSError):
        RunFolder(out, {"command": "video"})

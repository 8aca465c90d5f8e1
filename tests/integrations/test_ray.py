"""fastclipseg.integrations.ray: SegmentBatch called directly, and the Ray Data pipelines on a
local two-CPU Ray instance (small images, one actor: the whole file takes well under a minute)."""

from __future__ import annotations

import copy
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'fastclipseg[ray]'")
pytest.importorskip("ray.data", reason="the Ray integration needs Ray Data: pip install 'fastclipseg[ray]'")

from fastclipseg.bench.measure import moving_disc_frames, natural_image, write_video
from fastclipseg.integrations.ray import SegmentBatch, segment_images, segment_videos
from helpers.parity import assert_masks_agree
from PIL import Image
from pycocotools import mask as coco_mask

# Ray Data's own DataContext warns about its deprecated settings when it is pickled to the workers.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

PROMPTS = ["a cat", "red dog"]
HEIGHT, WIDTH = 48, 64


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def segment_batch(tiny_model_dir):
    return SegmentBatch(str(tiny_model_dir), PROMPTS)


@pytest.fixture(scope="module")
def images():
    return [natural_image(HEIGHT, WIDTH, seed) for seed in range(3)]


def object_column(values) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        column[index] = value
    return column


def assert_same_records(masks_json: str, expected) -> None:
    """Records from a `masks` column agree with a `SegmentationResult`'s (within float noise)."""
    got = json.loads(masks_json)
    want = expected.mask_records()
    assert [r["prompt"] for r in got] == PROMPTS == [r["prompt"] for r in want]
    assert any(0 < r["area"] < HEIGHT * WIDTH for r in want), "the masks should be neither empty nor full"
    for k, (g, w) in enumerate(zip(got, want)):
        # Ray's batches differ from the reference's, so a pixel on the threshold may flip.
        decoded = coco_mask.decode(g["rle"]).astype(bool)
        assert_masks_agree(decoded, expected, k)
        assert g["area"] == int(decoded.sum())
        assert g["bbox"] == coco_mask.toBbox(g["rle"]).tolist()
        assert g["score"] == pytest.approx(w["score"], abs=1e-3)
        assert g["stability"] == pytest.approx(w["stability"], abs=1e-3)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# -- SegmentBatch called directly (no Ray cluster) ------------------------------------------------


def test_segment_batch_matches_segment_batch(segment_batch, tiny_segmenter, images):
    out = segment_batch({"image": np.stack(images), "id": np.array([10, 11, 12])})
    assert set(out) == {"id", "masks", "error", "height", "width"}  # the pixels are dropped
    assert out["id"].tolist() == [10, 11, 12]
    assert list(out["error"]) == ["", "", ""]
    assert out["height"].tolist() == [HEIGHT] * 3 and out["width"].tolist() == [WIDTH] * 3
    for masks, expected in zip(out["masks"], tiny_segmenter.segment_batch(images, PROMPTS)):
        assert_same_records(masks, expected)


def test_bad_array_is_reported_and_the_others_are_segmented(segment_batch, tiny_segmenter, images):
    bad = np.random.default_rng(0).random((HEIGHT, WIDTH))  # 2-D float64
    out = segment_batch({"image": object_column([images[0], bad, images[1]])})
    assert out["error"][0] == "" and out["error"][2] == ""
    assert "dtype uint8" in out["error"][1]
    assert json.loads(out["masks"][1]) == [] and out["height"][1] == 0 and out["width"][1] == 0
    expected = tiny_segmenter.segment_batch([images[0], images[1]], PROMPTS)
    assert_same_records(out["masks"][0], expected[0])
    assert_same_records(out["masks"][2], expected[1])


def test_path_and_bytes_columns(segment_batch, tiny_segmenter, images, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(images[0]).save(good)
    missing = tmp_path / "missing.png"
    out = copy.copy(segment_batch)  # the same segmenter, reading a path column
    out.path_column = "path"
    by_path = out({"path": np.array([str(good), str(missing)])})
    assert by_path["path"].tolist() == [str(good), str(missing)]  # paths are kept
    assert by_path["error"][0] == "" and "not found" in by_path["error"][1]
    expected = tiny_segmenter.segment(images[0], PROMPTS)
    assert_same_records(by_path["masks"][0], expected)

    out.path_column = "bytes"
    by_bytes = out({"bytes": object_column([png_bytes(images[0]), b"not an image"])})
    assert "bytes" not in by_bytes  # encoded images are dropped like pixels
    assert by_bytes["error"][0] == "" and "not a readable image" in by_bytes["error"][1]
    assert_same_records(by_bytes["masks"][0], expected)


def test_failed_batch_call_is_retried_one_image_at_a_time(segment_batch, tiny_segmenter, images, monkeypatch):
    real = segment_batch.segmenter.segment_batch

    def fragile(batch, prompts, threshold=0.5):
        if len(batch) > 1 or batch[0][0, 0, 0] == 7:
            raise RuntimeError("out of memory")
        return real(batch, prompts, threshold=threshold)

    poisoned = images[1].copy()
    poisoned[0, 0, 0] = 7
    monkeypatch.setattr(segment_batch.segmenter, "segment_batch", fragile)
    out = segment_batch({"image": np.stack([images[0], poisoned, images[2]])})
    assert out["error"].tolist() == ["", "RuntimeError: out of memory", ""]
    expected = tiny_segmenter.segment_batch([images[0], images[2]], PROMPTS)
    assert_same_records(out["masks"][0], expected[0])
    assert_same_records(out["masks"][2], expected[1])


def test_prompts_are_checked_at_construction(segment_batch, tiny_segmenter, tiny_model_dir, images):
    from fastclipseg.integrations.ray import SegmentVideo

    # Videos take text prompts only: refused at once, not as one error row per video.
    with pytest.raises(ValueError, match="'a cat OR a dog' is a prompt expression"):
        segment_videos(["clip.mp4"], ["red dog", "a cat OR a dog"], "no-such-model", None)  # before any Ray work
    pytest.importorskip("av", reason="SegmentVideo needs PyAV")
    with pytest.raises(ValueError, match="is a prompt expression"):
        SegmentVideo(str(tiny_model_dir), "a cat {+2}")
    # Images take expressions; a syntax error is raised by the constructor, not in every row.
    with pytest.raises(ValueError, match="column"):
        SegmentBatch(str(tiny_model_dir), ["a cat", "(a dog AND"])
    expression = copy.copy(segment_batch)
    expression.prompts = ["a cat AND NOT red dog"]
    out = expression({"image": np.stack(images[:1])})
    assert out["error"].tolist() == [""]
    expected = tiny_segmenter.segment(images[0], expression.prompts)
    assert [r["prompt"] for r in json.loads(out["masks"][0])] == [r["prompt"] for r in expected.mask_records()]


def test_missing_ray_says_how_to_install(monkeypatch):
    from fastclipseg.integrations import ray as integration

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'fastclipseg\[ray\]'"):
        integration.segment_images(["a.png"], PROMPTS, "model", None)


# -- the pipelines on local Ray ---------------------------------------------------------------------


def test_segment_images_folder_to_jsonl(local_ray, tiny_model_dir, tiny_segmenter, images, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for index, image in enumerate(images):
        paths.append(folder / f"img{index}.png")
        Image.fromarray(image).save(paths[-1])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    missing = tmp_path / "missing.png"  # named directly: reported in its row, not raised by the driver
    out = tmp_path / "out"

    summary = segment_images([folder, missing], PROMPTS, str(tiny_model_dir), str(out), concurrency=1, batch_size=2)

    assert summary["rows"] == 5 and summary["failed"] == 2
    rows = [json.loads(line) for file in sorted(out.glob("*.json")) for line in file.read_text().splitlines()]
    by_name = {Path(row["path"]).name: row for row in rows}
    assert sorted(by_name) == ["broken.png", "img0.png", "img1.png", "img2.png", "missing.png"]
    assert "not found" in by_name["missing.png"]["error"]
    assert "cannot read image" in by_name["broken.png"]["error"] or "not a readable" in by_name["broken.png"]["error"]
    assert json.loads(by_name["broken.png"]["masks"]) == []
    expected = tiny_segmenter.segment_batch([str(p) for p in paths], PROMPTS)
    for path, result in zip(paths, expected):
        row = by_name[path.name]
        assert row["error"] == "" and (row["height"], row["width"]) == (HEIGHT, WIDTH)
        assert_same_records(row["masks"], result)

    with pytest.raises(FileExistsError):
        segment_images(str(folder), PROMPTS, str(tiny_model_dir), str(out))


def test_segment_images_warns_about_skipped_files(local_ray, tiny_model_dir, images, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(images[0]).save(folder / "img.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "data.csv").write_text("1,2\n")
    with pytest.warns(UserWarning, match="skipped 2 files that are not images") as caught:
        segment_images(folder, PROMPTS, str(tiny_model_dir), None)  # lazy: nothing runs
    [warning] = [w for w in caught if "skipped" in str(w.message)]
    assert "data.csv" in str(warning.message) and "notes.txt" in str(warning.message)
    assert warning.filename == __file__  # it points at the call, not into the integration


def test_segment_images_dataset_to_parquet(local_ray, tiny_model_dir, tiny_segmenter, images, tmp_path):
    import pyarrow.parquet as pq

    dataset = ray.data.from_items([{"image": image, "name": f"img{i}"} for i, image in enumerate(images)])
    out = tmp_path / "parquet"

    summary = segment_images(dataset, PROMPTS, str(tiny_model_dir), str(out), format="parquet", concurrency=1)

    assert summary == {"rows": 3, "failed": 0, "output": str(out), "format": "parquet"}
    table = pq.read_table(out)
    assert set(table.column_names) == {"name", "masks", "error", "height", "width"}
    rows = {row["name"]: row for row in table.to_pylist()}
    for index, result in enumerate(tiny_segmenter.segment_batch(images, PROMPTS)):
        assert rows[f"img{index}"]["error"] == ""
        assert_same_records(rows[f"img{index}"]["masks"], result)


def test_segment_videos_one_row_per_frame(local_ray, tiny_model_dir, tiny_segmenter, tmp_path):
    video = write_video(tmp_path / "clip.mp4", (frame for frame, _ in moving_disc_frames(8, HEIGHT, WIDTH)))
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "frames"

    summary = segment_videos([video, missing], PROMPTS, str(tiny_model_dir), str(out), concurrency=1)

    assert summary["rows"] == 9 and summary["failed"] == 1
    rows = [json.loads(line) for file in sorted(out.glob("*.json")) for line in file.read_text().splitlines()]
    [error] = [row for row in rows if row["video"] == str(missing)]
    assert error["frame"] == -1 and "not found" in error["error"]
    frames = sorted((row for row in rows if row["video"] == str(video)), key=lambda row: row["frame"])
    assert [row["frame"] for row in frames] == list(range(8))
    expected = list(tiny_segmenter.segment_video(video, PROMPTS))
    assert [item.index for item in expected] == list(range(8))
    for row, result in zip(frames, expected):
        assert row["error"] == "" and (row["height"], row["width"]) == (HEIGHT, WIDTH)
        assert row["timestamp"] == pytest.approx(result.timestamp)
        assert_same_records(row["masks"], result)

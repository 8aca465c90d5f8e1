"""The demo's HTTP API (fastclipseg.demo.app) through FastAPI's TestClient, on the tiny model:
sessions, prompts, expressions, refinement, history, downloads, limits and errors."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason='the demo extra is not installed: pip install "fastclipseg[demo]"')
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (the test extra)")

from fastapi.testclient import TestClient  # noqa: E402
from fastclipseg.demo.app import STATIC, create_app  # noqa: E402
from pycocotools import mask as coco_mask  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def random_image(height: int = 60, width: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(image: np.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture
def make_client(tiny_segmenter):
    def make(**options) -> TestClient:
        return TestClient(create_app(tiny_segmenter, **options))

    return make


@pytest.fixture
def client(make_client, demo_images):
    return make_client(images_dir=demo_images)


def open_image(client: TestClient, image: np.ndarray, name: str = "photo.png") -> dict:
    response = client.post(f"/api/sessions?name={name}", content=encoded(image))
    assert response.status_code == 200, response.text
    return response.json()


def post(client: TestClient, token: str, action: str, body: dict | None = None, status: int = 200) -> dict:
    response = client.post(f"/api/sessions/{token}/{action}", json=body)
    assert response.status_code == status, response.text
    return response.json()


def detail(response) -> str:
    payload = response.json()
    assert set(payload) == {"detail"} and isinstance(payload["detail"], str), payload
    assert "Traceback" not in payload["detail"]
    return payload["detail"]


# -- the page ------------------------------------------------------------------------------------


def test_page_and_its_files_are_served_from_this_server_only(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ("file", "examples", "prompt", "segment", "refine-phrase", "refine", "undo", "reset", "error",
                    "overlay", "heatmap", "legend", "history", "download-masks", "download-json", "download-coco"):
        assert f'id="{element}"' in page.text, element
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    # No CDN, no font service: the page works without internet.
    for path in STATIC.iterdir():
        assert not re.search(r"https?://", path.read_text()), f"{path.name} names an outside URL"
    # No generated API docs either (their pages load scripts from a CDN).
    assert client.get("/docs").status_code == 404


def test_config_lists_the_image_folder(client):
    config = client.get("/api/config").json()
    assert config["images"] == ["more/room.jpg", "street.png"]
    assert config["max_upload_bytes"] == 20 * 2**20


# -- a session -----------------------------------------------------------------------------------


def test_upload_prompt_refine_undo_reset(client, tiny_segmenter):
    image = random_image()
    state = open_image(client, image, "dog.png")
    token = state["session"]
    assert (state["name"], state["width"], state["height"]) == ("dog.png", 80, 60)
    assert state["history"] == [] and state["current"] is None and "heatmap" not in state["links"]

    state = post(client, token, "segment", {"prompts": ["a dog"]})
    assert state["history"] == ["a dog"]
    [entry] = state["current"]["masks"]
    # The same masks as a Session of the library on the same image.
    expected = tiny_segmenter.session(image).segment("a dog")
    assert entry["prompt"] == "a dog" and entry["colour"] == "#1f77b4"
    assert entry["score"] == pytest.approx(float(expected.scores[0]))
    assert entry["area"] == int(expected.areas[0])

    state = post(client, token, "segment", {"prompts": ["a dog OR a cat {+5}"]})
    assert state["current"]["masks"][0]["prompt"] == "a dog OR a cat {+5}"
    state = post(client, token, "refine", {"phrase": "exclude the collar"})
    assert state["history"] == ["a dog", "a dog OR a cat {+5}", "(a dog OR a cat {+5}) AND NOT (the collar)"]
    versions = [state["version"]]

    state = post(client, token, "undo")
    assert state["history"] == ["a dog", "a dog OR a cat {+5}"]
    assert state["current"]["masks"][0]["prompt"] == "a dog OR a cat {+5}"
    versions.append(state["version"])
    state = post(client, token, "reset")
    assert state["history"] == [] and state["current"] is None
    versions.append(state["version"])
    # Every change is a new version, so the page's picture URLs change with it.
    assert versions == sorted(set(versions))
    assert client.get(f"/api/sessions/{token}").json()["version"] == versions[-1]


def test_several_prompts_give_one_mask_each_and_refine_asks_for_one(client):
    token = open_image(client, random_image())["session"]
    state = post(client, token, "segment", {"prompts": ["a dog", "a cat AND NOT red", "red"]})
    masks = state["current"]["masks"]
    assert [m["prompt"] for m in masks] == ["a dog", "a cat AND NOT red", "red"]
    assert [m["colour"] for m in masks] == ["#1f77b4", "#ff7f0e", "#2ca02c"]
    assert state["history"] == ["a dog · a cat AND NOT red · red"]
    response = client.post(f"/api/sessions/{token}/refine", json={"phrase": "exclude the collar"})
    assert response.status_code == 400 and "one mask" in detail(response)
    assert post(client, token, "undo")["history"] == []


def test_pictures_and_downloads(client, tiny_segmenter):
    image = random_image(seed=3)
    token = open_image(client, image, "Street Scene.jpg")["session"]
    before = client.get(f"/api/sessions/{token}/overlay.png")
    assert before.headers["content-type"] == "image/png"
    # Before any prompt, the "overlay" is the image itself.
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(before.content))), image)
    for name in ("heatmap.png", "masks.zip", "result.json", "coco.json"):
        response = client.get(f"/api/sessions/{token}/{name}")
        assert response.status_code == 409 and "segment a prompt first" in detail(response)

    state = post(client, token, "segment", {"prompts": ["a dog", "red"]})
    expected = tiny_segmenter.session(image).predict(["a dog", "red"])
    for name in ("overlay.png", "heatmap.png"):
        response = client.get(state["links"][name.split(".")[0]])
        picture = np.asarray(Image.open(io.BytesIO(response.content)))
        assert picture.shape == image.shape and not np.array_equal(picture, image)

    archive = client.get(state["links"]["masks"])
    assert archive.headers["content-disposition"] == 'attachment; filename="street-scene_masks.zip"'
    with zipfile.ZipFile(io.BytesIO(archive.content)) as files:
        assert files.namelist() == ["street-scene_0_a-dog.png", "street-scene_1_red.png"]
        for name, mask in zip(files.namelist(), expected.masks):
            assert np.array_equal(np.asarray(Image.open(files.open(name))), mask.astype(np.uint8) * 255)

    record = client.get(state["links"]["json"]).json()
    reference = expected.to_dict()
    reference["image"] = "Street Scene.jpg"
    assert record == json.loads(json.dumps(reference))
    for entry, mask in zip(record["masks"], expected.masks):
        assert np.array_equal(coco_mask.decode(entry["rle"]).astype(bool), mask)


def test_coco_results_load_in_pycocotools_and_evaluate(client):
    token = open_image(client, random_image(seed=5))["session"]
    state = post(client, token, "segment", {"prompts": ["a dog", "a cat"]})
    results = client.get(f"/api/sessions/{token}/coco.json?image_id=7").json()
    assert [(r["image_id"], r["category_id"]) for r in results] == [(7, 1), (7, 2)]
    assert all(set(r) == {"image_id", "category_id", "segmentation", "score", "bbox", "area"} for r in results)
    assert all(r["area"] > 0 for r in results), "the test needs non-empty masks"

    # Ground truth made of the same masks: the evaluation must find every one (AP 1).
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": 7, "width": state["width"], "height": state["height"]}],
        "categories": [{"id": 1, "name": "a dog"}, {"id": 2, "name": "a cat"}],
        "annotations": [{"id": k + 1, "image_id": 7, "category_id": r["category_id"], "segmentation": r["segmentation"],
                         "area": r["area"], "bbox": r["bbox"], "iscrowd": 0} for k, r in enumerate(results)],
    }
    ground_truth.createIndex()
    detections = ground_truth.loadRes(results)
    assert len(detections.anns) == 2
    evaluation = COCOeval(ground_truth, detections, iouType="segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_images_from_the_folder(client, demo_images):
    state = client.post("/api/sessions?example=more/room.jpg").json()
    assert (state["name"], state["width"], state["height"]) == ("more/room.jpg", 48, 64)
    for name in ("notes.txt", "../street.png", "/etc/passwd", "missing.png"):
        response = client.post("/api/sessions", params={"example": name})
        assert response.status_code == 404 and "image folder" in detail(response)


# -- limits and errors ---------------------------------------------------------------------------


def test_too_large_uploads_are_413(make_client):
    client = make_client(max_upload_bytes=2000)
    data = encoded(random_image(40, 40))
    assert len(data) > 2000
    response = client.post("/api/sessions", content=data)
    assert response.status_code == 413
    assert detail(response) == ("the file is larger than this demo's upload limit of 2000 bytes (start it with a "
                                "larger --max-upload-mb)")
    # Without a declared length (chunked), the limit holds while reading.
    chunks = iter([data[:1500], data[1500:]])
    response = client.post("/api/sessions", content=chunks)
    assert response.status_code == 413 and "upload limit" in detail(response)
    assert client.post("/api/sessions", content=encoded(random_image(8, 8))).status_code == 200


def test_bad_images_are_400_with_a_clear_message(make_client):
    client = make_client(max_pixels=1000)
    cases = {
        b"hello, not an image": "notes.txt: not a readable image",
        b"": "notes.txt: empty",
        encoded(random_image(20, 20))[:200]: "notes.txt: cannot read image",
        encoded(random_image(40, 40)): "above the limit of 1000",
    }
    for data, message in cases.items():
        response = client.post("/api/sessions?name=notes.txt", content=data)
        assert response.status_code == 400, response.text
        assert message in detail(response)
    assert "--max-pixels" in detail(client.post("/api/sessions", content=encoded(random_image(40, 40))))
    assert client.post("/api/sessions", content=encoded(random_image(20, 20))).status_code == 200


def test_bad_prompts_and_phrases_are_400_with_a_clear_message(client):
    token = open_image(client, random_image())["session"]

    def error(action: str, body: dict | None = None) -> str:
        response = client.post(f"/api/sessions/{token}/{action}", json=body)
        assert response.status_code == 400, response.text
        return detail(response)

    syntax = error("segment", {"prompts": ["a dog AND (a cat"]})
    assert "column" in syntax and "^" in syntax and "a dog AND (a cat" in syntax
    assert "empty" in error("segment", {"prompts": ["   "]})
    assert "no prompt" in error("segment", {"prompts": []})
    assert "at most 10" in error("segment", {"prompts": ["a dog"] * 11})
    assert "1000" in error("segment", {"prompts": ["a" * 1001]})
    assert "call segment(prompt) first" in error("refine", {"phrase": "exclude the collar"})
    assert "nothing to undo" in error("undo")
    post(client, token, "segment", {"prompts": ["a dog"]})
    assert "must start with one of" in error("refine", {"phrase": "paint the collar"})
    assert "column" in error("refine", {"phrase": "exclude a collar AND ("})
    # A failed request leaves the session as it was.
    assert client.get(f"/api/sessions/{token}").json()["history"] == ["a dog"]
    malformed = client.post(f"/api/sessions/{token}/segment", json={"prompt": "a dog"})
    assert malformed.status_code == 422


def test_unknown_sessions_are_404_and_the_oldest_is_dropped(make_client):
    client = make_client(max_sessions=2)
    for path in ("", "/overlay.png", "/coco.json"):
        response = client.get(f"/api/sessions/no-such-token{path}")
        assert response.status_code == 404 and "expired" in detail(response)
    assert client.post("/api/sessions/no-such-token/segment", json={"prompts": ["a dog"]}).status_code == 404
    tokens = [open_image(client, random_image(seed=seed))["session"] for seed in range(2)]
    assert client.get(f"/api/sessions/{tokens[0]}").status_code == 200  # now the most recently used
    open_image(client, random_image(seed=2))
    assert client.get(f"/api/sessions/{tokens[0]}").status_code == 200
    assert client.get(f"/api/sessions/{tokens[1]}").status_code == 404


def test_history_is_bounded(client):
    client.app.state.store.history_limit = 3
    token = open_image(client, random_image())["session"]
    for prompt in ("a", "b", "c", "d", "e"):
        state = post(client, token, "segment", {"prompts": [prompt]})
    assert state["history"] == ["c", "d", "e"]


def test_only_this_machines_names_are_answered_when_asked(make_client):
    client = make_client(allowed_hosts={"127.0.0.1", "localhost"})
    assert client.get("http://127.0.0.1:8000/api/config").status_code == 200
    assert client.get("http://localhost/api/config").status_code == 200
    response = client.get("http://attacker.example/api/config")
    assert response.status_code == 400 and "Host" in detail(response)


def test_the_model_runs_one_request_at_a_time(client, tiny_segmenter, monkeypatch):
    core = tiny_segmenter.core
    running, overlaps = [0], []
    guard = threading.Lock()

    def counted(method):
        def call(*args, **kwargs):
            with guard:
                running[0] += 1
                overlaps.append(running[0])
            try:
                return method(*args, **kwargs)
            finally:
                with guard:
                    running[0] -= 1
        return call

    monkeypatch.setattr(core, "decode", counted(core.decode))
    monkeypatch.setattr(core, "encode_images", counted(core.encode_images))
    images = [random_image(seed=seed) for seed in range(4)]

    def one_tab(image: np.ndarray) -> list:
        token = open_image(client, image)["session"]
        state = post(client, token, "segment", {"prompts": ["a dog"]})
        state = post(client, token, "refine", {"phrase": "and red"})
        return state["current"]["masks"]

    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(one_tab, images))
    assert overlaps and max(overlaps) == 1
    assert together == [one_tab(image) for image in images]


def test_nothing_is_written_to_disk(make_client, demo_images, tmp_path, monkeypatch):
    """Uploads, pictures and downloads stay in memory: no file appears in the working folder,
    the home folder, the temporary folder or the image folder."""
    watched = {name: tmp_path / name for name in ("cwd", "home", "temp")}
    for folder in watched.values():
        folder.mkdir()
    monkeypatch.chdir(watched["cwd"])
    monkeypatch.setenv("HOME", str(watched["home"]))
    monkeypatch.setenv("TMPDIR", str(watched["temp"]))
    monkeypatch.setattr(tempfile, "tempdir", str(watched["temp"]))
    before = sorted((p, p.stat().st_mtime_ns) for p in demo_images.rglob("*"))

    client = make_client(images_dir=demo_images)
    token = open_image(client, random_image(120, 160))["session"]
    post(client, token, "segment", {"prompts": ["a dog", "a cat OR red {+2}"]})
    post(client, token, "undo")
    post(client, token, "segment", {"prompts": ["a dog"]})
    post(client, token, "refine", {"phrase": "without red"})
    for name in ("overlay.png", "heatmap.png", "masks.zip", "result.json", "coco.json"):
        assert client.get(f"/api/sessions/{token}/{name}").status_code == 200
    client.post("/api/sessions?example=street.png")
    client.post("/api/sessions", content=b"x" * 10_000)

    for name, folder in watched.items():
        assert not any(folder.rglob("*")), f"files were written to the {name} folder: {list(folder.rglob('*'))}"
    assert sorted((p, p.stat().st_mtime_ns) for p in demo_images.rglob("*")) == before
    assert os.getcwd() == str(watched["cwd"])

"""The JSON Schemas shipped in `fastclipseg.schemas`, checked against what the installed command
line really writes (`segment`, `batch`, `video` on a tiny model), so the output cannot drift from
its documented form unnoticed; and each schema shown to reject a record that is off."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import sysconfig
from importlib.util import find_spec

import numpy as np
import pytest
from fastclipseg.bench.measure import natural_image
from fastclipseg.schemas import SCHEMA_NAMES, schema
from helpers.videos import make_video
from jsonschema import Draft202012Validator
from PIL import Image
from pycocotools import mask as coco_mask

HAVE_AV = find_spec("av") is not None
PROMPTS = ["a cat", "red dog"]


def installed_command() -> list[str]:
    """The `fastclipseg` script installed with this interpreter (what a user runs), else `-m`."""
    script = shutil.which("fastclipseg", path=sysconfig.get_path("scripts"))
    return [script] if script else [sys.executable, "-m", "fastclipseg"]


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name))


def assert_valid(name: str, record: dict) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(name).iter_errors(record)]
    assert not errors, f"{name} schema rejects {json.dumps(record)[:300]}: {errors}"


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """Each command run once on images with one unreadable file and a video cut short (so both
    masks.jsonl and errors.jsonl lines come out); the runs overlap, as separate processes."""
    root = tmp_path_factory.mktemp("schema-runs")
    images = root / "images"
    images.mkdir()
    Image.fromarray(natural_image(20, 30)).save(images / "a.png")
    Image.fromarray(natural_image(24, 32, seed=1)).save(images / "b.jpg")
    (images / "broken.png").write_bytes(b"not an image")
    model = ["-m", str(tiny_model_dir)] + [a for p in PROMPTS for a in ("-p", p)]
    commands = {
        "segment": ["segment", images / "a.png", images / "broken.png", *model, "-o", root / "segment", "--overlay",
                    "--heatmap", "--instances"],
        "batch": ["batch", images, *model, "-o", root / "batch", "--png", "--overlay", "--backend", "torch",
                  "--instances"],
    }
    if HAVE_AV:
        # A faststart MP4 cut at 60 %: frames decode, a damaged packet and the missing ones fail.
        whole = make_video(root / "whole.mp4", frames=12).read_bytes()
        (root / "cut.mp4").write_bytes(whole[: len(whole) * 6 // 10])
        commands["video"] = ["video", root / "cut.mp4", *model, "-o", root / "video", "--png", "--backend", "torch",
                             "--instances", "--min-area", "3"]
    # Output to files, not pipes: a process whose pipe nobody reads yet would stall.
    processes = {}
    for name, args in commands.items():
        with (root / f"{name}.log").open("w") as log:
            processes[name] = subprocess.Popen([*installed_command(), *map(str, args)], stdout=subprocess.DEVNULL,
                                               stderr=log)
    for name, process in processes.items():
        process.wait(timeout=300)
        stderr = (root / f"{name}.log").read_text()
        # Exit status 1: every run had an item that failed, and went on without it.
        assert process.returncode == 1 and "Traceback" not in stderr, f"{name}: {stderr}"
    return root


def test_schemas_are_draft_2020_12_and_describe_every_field():
    assert SCHEMA_NAMES == ("segment", "masks-line", "errors-line")
    for name in SCHEMA_NAMES:
        document = schema(name)
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(document)
        assert document.get("description"), name
        for where, field in _fields(document, document):
            assert field.get("description"), f"{name}: {where} has no description"


def _fields(node, document, where="#"):
    """(path, schema) of every property and tuple item in `node`, a local `$ref` followed."""
    if isinstance(node, dict):
        for key, child in node.get("properties", {}).items():
            target = child
            if "$ref" in child:
                target = document
                for part in child["$ref"].removeprefix("#/").split("/"):
                    target = target[part]
            yield f"{where}/{key}", target
        for index, item in enumerate(node.get("prefixItems", [])):
            yield f"{where}/{index}", item
        for key, child in node.items():
            yield from _fields(child, document, f"{where}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _fields(child, document, f"{where}/{index}")


def test_shared_definitions_agree():
    segment, line = schema("segment")["$defs"], schema("masks-line")["$defs"]
    assert segment["bbox"] == line["bbox"] and segment["rle"] == line["rle"]
    assert segment["mask"]["properties"].keys() == line["mask"]["properties"].keys()
    assert segment["instance"] == line["instance"]


def test_unknown_schema_name_lists_the_names():
    with pytest.raises(ValueError, match="unknown schema 'segments'.*segment, masks-line, errors-line"):
        schema("segments")


def test_segment_json_matches_schema(runs):
    out = runs / "segment"
    written = sorted(out.glob("*.json"))
    assert [p.name for p in written] == ["a.json"]  # the unreadable image gets no file
    record = json.loads(written[0].read_text())
    assert_valid("segment", record)
    assert [m["prompt"] for m in record["masks"]] == PROMPTS
    assert (out / record["overlay_png"]).is_file()
    for entry in record["masks"]:
        # What the descriptions promise: COCO RLE (column-major) at the image's size, area and a
        # COCO [x, y, width, height] box of the decoded mask, the PNG 255 inside it.
        mask = coco_mask.decode(entry["rle"]).astype(bool)
        assert mask.shape == (record["height"], record["width"])
        assert entry["area"] == int(mask.sum())
        assert entry["bbox"] == pytest.approx(coco_mask.toBbox(entry["rle"]).tolist())
        np.testing.assert_array_equal(np.asarray(Image.open(out / entry["mask_png"])) == 255, mask)
        # --instances: the objects tile the mask.
        objects = [coco_mask.decode(item["rle"]).astype(bool) for item in entry["instances"]]
        assert sum(item["area"] for item in entry["instances"]) == entry["area"]
        np.testing.assert_array_equal(np.any(objects, axis=0) if objects else np.zeros_like(mask), mask)


def test_batch_lines_match_schemas(runs):
    out = runs / "batch"
    lines = jsonl(out / "masks.jsonl")
    assert [r["image"].rsplit("/", 1)[-1] for r in lines] == ["a.png", "b.jpg"]
    for record in lines:
        assert_valid("masks-line", record)
        assert (out / record["overlay_png"]).is_file()
        assert all((out / m["mask_png"]).is_file() for m in record["masks"])
        # --instances: the objects tile each mask.
        assert all(sum(i["area"] for i in m["instances"]) == m["area"] for m in record["masks"])
    errors = jsonl(out / "errors.jsonl")
    assert len(errors) == 1 and errors[0]["image"].endswith("broken.png")
    assert_valid("errors-line", errors[0])


@pytest.mark.skipif(not HAVE_AV, reason="the video command needs PyAV (the 'video' extra)")
def test_video_lines_match_schemas(runs):
    out = runs / "video"
    lines = jsonl(out / "masks.jsonl")
    errors = jsonl(out / "errors.jsonl")
    assert lines and errors, "the cut video must give both frames and failures"
    for record in lines:
        assert_valid("masks-line", record)
        assert all((out / m["mask_png"]).is_file() for m in record["masks"])
        # --instances --min-area 3: objects of 3 pixels or more, inside their mask.
        assert all(i["area"] >= 3 for m in record["masks"] for i in m["instances"])
        assert all(sum(i["area"] for i in m["instances"]) <= m["area"] for m in record["masks"])
    for record in errors:
        assert_valid("errors-line", record)
        assert record["key"].startswith("packet:")


MASK = {"prompt": "a cat", "score": 0.7, "stability": 0.9, "area": 1, "bbox": [0.0, 0.0, 1.0, 1.0],
        "rle": {"size": [2, 3], "counts": "01"}}
GOOD = {
    "segment": {"image": "a.png", "height": 2, "width": 3, "threshold": 0.5,
                "masks": [{**MASK, "mask_png": "a_0_a-cat.png"}]},
    "masks-line": {"frame": 0, "timestamp": 0.0, "width": 3, "height": 2, "masks": [MASK]},
    "errors-line": {"key": "a.png", "frame": 0, "timestamp": None, "image": "a.png", "error": "a.png: unreadable"},
}


def _drop(record: dict, field: str) -> dict:
    return {k: v for k, v in record.items() if k != field}


def _first_mask(record: dict, **changes) -> dict:
    changed = copy.deepcopy(record)
    changed["masks"][0].update(changes)
    return changed


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schemas_reject_records_that_drifted(name):
    check = validator(name)
    good = GOOD[name]
    assert check.is_valid(good)
    drifted = {"missing field": _drop(good, "width" if "width" in good else "error"),
               "unknown field": {**good, "probabilities_png": "a_probabilities.png"},
               "wrong type": {**good, "frame": "0"} if name == "errors-line" else {**good, "height": "2"}}
    if "masks" in good:
        drifted |= {"mask score as text": _first_mask(good, score="0.7"),
                    "bbox of 3 numbers": _first_mask(good, bbox=[0.0, 0.0, 1.0]),
                    "rle without counts": _first_mask(good, rle={"size": [2, 3]}),
                    "unknown mask field": _first_mask(good, logits=[])}
    for what, record in drifted.items():
        assert not check.is_valid(record), f"{name} schema accepts a record with a {what}"


def test_masks_line_takes_a_frame_or_an_image_not_both():
    check = validator("masks-line")
    image_line = {**_drop(_drop(GOOD["masks-line"], "frame"), "timestamp"), "image": "a.png"}
    assert check.is_valid(image_line)
    assert not check.is_valid({**GOOD["masks-line"], "image": "a.png"})

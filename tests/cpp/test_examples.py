"""The C++ examples (examples/cpp), built against the installed package, give what Python gives.

fp32 TorchScript runs the same libtorch graphs on the same pixels (the native preprocessing is
Pillow-exact), so the RLE, area and bbox must be identical (bf16 and int8 exports, and AOTInductor
packages, too) and the scores equal to 1e-12 (they
are the same float64 sums; the tolerance only absorbs printing). JPEG is the exception: stb_image
and Pillow's libjpeg-turbo decode a few pixel values differently, so there the masks must agree
to an IoU of 0.97 instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastclipseg import FastSegmenter
from fastclipseg.engines.artifacts import MANIFEST_NAME, file_sha256, manifest_digest
from PIL import Image

SCORE_TOLERANCE = 1e-12


@pytest.fixture(scope="session")
def tiny_export(tiny_model_dir, tmp_path_factory) -> Path:
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript")
    return segmenter.export(tmp_path_factory.mktemp("cpp-tiny") / "export", backend="torchscript")


@pytest.fixture(scope="session")
def shapes_export(shared_data, tmp_path_factory) -> Path:
    segmenter = FastSegmenter.from_pretrained(shared_data / "clipseg-shapes", backend="torchscript")
    return segmenter.export(tmp_path_factory.mktemp("cpp-shapes") / "export", backend="torchscript")


def shapes_scenes(shared_data: Path, count: int, size: int) -> list[np.ndarray]:
    sys.path.insert(0, str(shared_data))
    try:
        import shapes
    finally:
        sys.path.remove(str(shared_data))
    rng = np.random.default_rng(16)
    return [shapes.scene(rng, size=size)[0] for _ in range(count)]


def run(program: Path, *args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), *map(str, args)], input=stdin, capture_output=True, timeout=300)


def segment_image(cpp_programs, export: Path, image: Path, prompts: list[str], threshold: float = 0.5) -> dict:
    done = run(cpp_programs["segment_image"], export, image, *prompts, "--threshold", threshold)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def assert_same_masks(cpp: list[dict], python: list[dict]) -> None:
    assert [m["prompt"] for m in cpp] == [m["prompt"] for m in python]
    for ours, theirs in zip(cpp, python):
        assert ours["rle"] == theirs["rle"], ours["prompt"]
        assert (ours["area"], ours["bbox"]) == (theirs["area"], theirs["bbox"]), ours["prompt"]
        assert ours["score"] == pytest.approx(theirs["score"], abs=SCORE_TOLERANCE)
        assert ours["stability"] == pytest.approx(theirs["stability"], abs=SCORE_TOLERANCE)


def test_segment_image_equals_python_on_the_tiny_model(cpp_programs, tiny_export, tmp_path):
    rng = np.random.default_rng(3)
    python = FastSegmenter.from_pretrained(tiny_export)
    prompts = ["a cat", "a dog", "red", "  A   CAT "]
    for index, (height, width) in enumerate([(61, 97), (200, 120), (1, 300)]):
        path = tmp_path / f"image{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        for threshold in (0.5, 0.3):
            cpp = segment_image(cpp_programs, tiny_export, path, prompts, threshold)
            expected = python.segment(path, prompts, threshold=threshold).to_dict()
            assert {k: cpp[k] for k in ("image", "height", "width", "threshold")} == \
                   {k: expected[k] for k in ("image", "height", "width", "threshold")}
            assert_same_masks(cpp["masks"], expected["masks"])


@pytest.fixture(scope="session")
def tiny_exports(tiny_model_dir, tmp_path_factory):
    """(backend, precision) -> an export of the tiny model, built on first use (the session's engine
    cache keeps the compiled stages, so an aoti export compiles once for every test that uses it)."""
    made: dict[tuple[str, str], Path] = {}

    def get(backend: str, precision: str) -> Path:
        if (backend, precision) not in made:
            segmenter = FastSegmenter.from_pretrained(tiny_model_dir, backend=backend, precision=precision)
            folder = tmp_path_factory.mktemp(f"cpp-{backend}-{precision}") / "export"
            made[backend, precision] = segmenter.export(folder, backend=backend, precision=precision)
        return made[backend, precision]

    return get


@pytest.mark.parametrize("backend, precision", [("torchscript", "bf16"), ("torchscript", "int8"),
                                                ("aoti", "fp32"), ("aoti", "bf16")])
def test_segment_image_equals_python_for_other_exports(cpp_programs, tiny_exports, tmp_path, backend, precision):
    """bf16 and int8 TorchScript exports, and AOTInductor packages, run the same libtorch graphs or
    compiled kernels in C++ as in Python, so they too give Python's RLE exactly (each one's parity
    with the fp32 reference is tested in tests/engines)."""
    export = tiny_exports(backend, precision)
    python = FastSegmenter.from_pretrained(export)
    path = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(path)
    prompts = ["a cat", "red"]
    assert_same_masks(segment_image(cpp_programs, export, path, prompts)["masks"],
                      python.segment(path, prompts).to_dict()["masks"])


def test_segment_image_equals_python_on_clipseg_shapes(cpp_programs, shapes_export, shared_data, tmp_path):
    python = FastSegmenter.from_pretrained(shapes_export)
    prompts = ["a red circle", "something blue", "a triangle", "a green square"]
    for index, scene in enumerate(shapes_scenes(shared_data, 3, 352)):
        # A crop with odd sides, so the resize is not the identity.
        path = tmp_path / f"scene{index}.png"
        Image.fromarray(scene[10:311, 3:350]).save(path)
        cpp = segment_image(cpp_programs, shapes_export, path, prompts)
        expected = python.segment(path, prompts).to_dict()
        assert_same_masks(cpp["masks"], expected["masks"])
        assert any(m["area"] > 0 for m in cpp["masks"])  # the model finds shapes: not all masks empty


def test_segment_image_reads_jpeg(cpp_programs, shapes_export, shared_data, tmp_path):
    from pycocotools import mask as coco_mask

    python = FastSegmenter.from_pretrained(shapes_export)
    path = tmp_path / "scene.jpg"
    Image.fromarray(shapes_scenes(shared_data, 1, 352)[0]).save(path, quality=95)
    prompts = ["a red circle", "something blue", "a triangle"]
    cpp = segment_image(cpp_programs, shapes_export, path, prompts)
    expected = python.segment(path, prompts).to_dict()
    for ours, theirs in zip(cpp["masks"], expected["masks"]):
        a, b = (coco_mask.decode({"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode()})
                for m in (ours, theirs))
        union = np.logical_or(a, b).sum()
        iou = np.logical_and(a, b).sum() / union if union else 1.0
        assert iou >= 0.97, (ours["prompt"], iou)


def test_segment_frames_reads_raw_rgb_from_stdin(cpp_programs, shapes_export, shared_data):
    python = FastSegmenter.from_pretrained(shapes_export)
    frames = [scene[:300, :340] for scene in shapes_scenes(shared_data, 3, 352)]
    prompts = ["a red circle", "a triangle"]
    done = run(cpp_programs["segment_frames"], shapes_export, 340, 300, *prompts,
               stdin=b"".join(np.ascontiguousarray(f).tobytes() for f in frames))
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2]
    for line, frame in zip(lines, frames):
        assert (line["height"], line["width"]) == (300, 340)
        assert_same_masks(line["masks"], python.segment(frame, prompts).to_dict()["masks"])


def test_segment_frames_reports_a_truncated_frame(cpp_programs, tiny_export):
    done = run(cpp_programs["segment_frames"], tiny_export, 10, 10, "a cat", stdin=bytes(300 + 7))
    assert done.returncode == 1
    assert len(done.stdout.decode().splitlines()) == 1  # the whole frame was segmented
    assert "ended inside a frame (7 of 300 bytes)" in done.stderr.decode()


def test_examples_refuse_bad_numbers(cpp_programs, tiny_export, tmp_path):
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    done = run(cpp_programs["segment_image"], tiny_export, image, "a cat", "--threshold", "half")
    assert done.returncode == 2 and "--threshold needs a number, got 'half'" in done.stderr.decode()
    done = run(cpp_programs["segment_image"], tiny_export, image, "a cat", "--threshold", "1.5")
    assert done.returncode == 1 and "threshold 1.500000 is outside [0, 1]" in done.stderr.decode()
    done = run(cpp_programs["segment_frames"], tiny_export, "wide", 10, "a cat", stdin=b"")
    assert done.returncode == 2 and "WIDTH and HEIGHT must be whole numbers" in done.stderr.decode()
    done = run(cpp_programs["segment_frames"], tiny_export, 100000, 100000, "a cat", stdin=b"")
    assert done.returncode == 2 and "WIDTH x HEIGHT must be between 1 and 50000000 pixels" in done.stderr.decode()


@pytest.mark.parametrize("backend", ["torchscript", "aoti"])
def test_runtime_checks(cpp_programs, tiny_exports, backend):
    """Threads, the prompt cache, masks/probabilities and bad input (tests/cpp/test_runtime.cpp)."""
    done = run(cpp_programs["test_runtime"], tiny_exports(backend, "fp32"))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert "all checks passed" in done.stdout.decode()


def _copy_export(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("damage, message", [
    ("missing_folder", "is not a folder"),
    ("no_manifest", "fastclipseg-export.json is missing"),
    ("edited_manifest", "corrupt or was edited"),
    ("damaged_stage", "(the decoder stage) is corrupt"),
    ("unlisted_file", "is not in the manifest"),
    ("other_backend", "is a onnxruntime export"),
    ("not_json", "is not valid JSON"),
    ("not_torchscript", "libtorch could not load"),
    ("aoti_for_another_cpu", "was compiled for a CPU with AVX2+elsewhere"),
    ("aoti_for_another_torch", "was compiled with torch 2.0.0+cpu; this runtime uses libtorch"),
])
def test_segment_image_refuses_a_bad_export(cpp_programs, tiny_export, tiny_exports, tmp_path, damage, message):
    source = tiny_exports("aoti", "fp32") if damage.startswith("aoti") else tiny_export
    folder = _copy_export(source, tmp_path / "export")
    manifest_path = folder / MANIFEST_NAME
    if damage == "missing_folder":
        folder = tmp_path / "nowhere"
    elif damage == "no_manifest":
        manifest_path.unlink()
    elif damage == "edited_manifest":
        manifest = json.loads(manifest_path.read_text())
        manifest["max_prompt_tokens"] = 5
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "damaged_stage":
        with open(folder / "decoder.pt", "r+b") as file:
            file.seek(100)
            byte = file.read(1)
            file.seek(100)
            file.write(bytes([byte[0] ^ 1]))
    elif damage == "unlisted_file":
        (folder / "tokenizer.json").rename(folder / "moved.json")
        manifest = json.loads(manifest_path.read_text())
        manifest["other_files"]["moved.json"] = manifest["other_files"].pop("tokenizer.json")
        manifest["manifest_sha256"] = manifest_digest(manifest)
        manifest_path.write_text(json.dumps(manifest))
        (folder / "tokenizer.json").write_text("{}")
    elif damage == "other_backend":
        manifest = json.loads(manifest_path.read_text())
        manifest["backend"] = "onnxruntime"
        manifest["manifest_sha256"] = manifest_digest(manifest)
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "aoti_for_another_cpu":  # as if built on a CPU with fewer vector instructions
        manifest = json.loads(manifest_path.read_text())
        manifest["cpu_features"] = "AVX2+elsewhere"
        manifest["manifest_sha256"] = manifest_digest(manifest)
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "aoti_for_another_torch":
        manifest = json.loads(manifest_path.read_text())
        manifest["versions"]["torch"] = "2.0.0+cpu"
        manifest["manifest_sha256"] = manifest_digest(manifest)
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "not_json":
        manifest_path.write_text("{not json")
    elif damage == "not_torchscript":  # listed with a matching hash, but not a TorchScript archive
        (folder / "vision.pt").write_bytes(b"not a zip archive")
        manifest = json.loads(manifest_path.read_text())
        manifest["files"]["vision"].update(sha256=file_sha256(folder / "vision.pt"), bytes=17)
        manifest["manifest_sha256"] = manifest_digest(manifest)
        manifest_path.write_text(json.dumps(manifest))
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    done = run(cpp_programs["segment_image"], folder, image, "a cat")
    assert done.returncode == 1
    assert message in done.stderr.decode()
    assert done.stderr.decode().startswith("error: ")  # a clear message, not an abort


def test_segment_image_usage_and_unreadable_image(cpp_programs, tiny_export, tmp_path):
    done = run(cpp_programs["segment_image"], tiny_export)
    assert done.returncode == 2 and "usage: segment_image" in done.stderr.decode()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    done = run(cpp_programs["segment_image"], tiny_export, bad, "a cat")
    assert done.returncode == 1 and f"cannot read {bad}" in done.stderr.decode()
    done = run(cpp_programs["segment_image"], tiny_export, bad.with_name("absent.png"), "a cat")
    assert done.returncode == 1 and "cannot read" in done.stderr.decode()

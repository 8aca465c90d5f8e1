"""Exports (`seg.export` / `from_pretrained(export)`) and the compiled-stage cache."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import natural_image
from fastclipseg.engines import compiled, onnxruntime_installed
from fastclipseg.engines.artifacts import MANIFEST_NAME, ArtifactError
from helpers.parity import assert_relative_close
from helpers.tiny_models import TINY_IMAGE_SIZE

EXPORTABLE = ["torchscript", "aoti"] + (["onnxruntime"] if onnxruntime_installed() else [])


@pytest.fixture
def count_builds(monkeypatch):
    """Counts how often the stages are compiled (rather than loaded from a cache)."""
    calls = []
    original = compiled._build_files

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(compiled, "_build_files", counting)
    return calls


def _logits(segmenter: FastSegmenter) -> torch.Tensor:
    pixel_values = segmenter.pixel_values([natural_image(30, 40, seed=1)])
    return segmenter.predict_logits(pixel_values, [["a cat", "red dog"]])[0]


# -- cache ------------------------------------------------------------------------------------


def test_second_start_loads_from_the_cache(tiny_model_dir, tmp_path, count_builds):
    first = FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path)
    second = FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path)
    assert count_builds == ["torchscript"]
    entries = list((tmp_path / "engines").iterdir())
    assert len(entries) == 1 and (entries[0] / MANIFEST_NAME).is_file()
    assert torch.equal(_logits(first), _logits(second))


def test_default_cache_folder_follows_the_environment(tiny_model_dir, tmp_path, monkeypatch, count_builds):
    monkeypatch.setenv("FASTCLIPSEG_CACHE", str(tmp_path / "mine"))
    FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript")
    assert len(list((tmp_path / "mine" / "engines").iterdir())) == 1


def test_cache_off_writes_nothing(tiny_model_dir, tmp_path, monkeypatch, count_builds):
    monkeypatch.setenv("FASTCLIPSEG_CACHE", str(tmp_path))
    FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache=False)
    FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache=False)
    assert count_builds == ["torchscript", "torchscript"]
    assert list(tmp_path.iterdir()) == []


def test_other_weights_get_their_own_entry(tiny_reference, tmp_path, count_builds):
    model, processor = tiny_reference
    FastSegmenter(model, processor, backend="torchscript", cache_dir=tmp_path)
    changed = type(model)(model.config).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.decoder.film_add.bias += 1.0
    FastSegmenter(changed, processor, backend="torchscript", cache_dir=tmp_path)
    assert len(count_builds) == 2 and len(list((tmp_path / "engines").iterdir())) == 2


def _only_entry(cache_dir):
    (entry,) = (cache_dir / "engines").iterdir()
    return entry


def test_corrupt_cached_file_is_rebuilt(tiny_model_dir, tmp_path, count_builds):
    expected = _logits(FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path))
    vision = _only_entry(tmp_path) / "vision.pt"
    data = bytearray(vision.read_bytes())
    data[len(data) // 2] ^= 0xFF
    vision.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path)
    assert count_builds == ["torchscript", "torchscript"]
    assert torch.equal(_logits(rebuilt), expected)


def test_truncated_cached_file_is_rebuilt(tiny_model_dir, tmp_path, count_builds):
    FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path)
    decoder = _only_entry(tmp_path) / "decoder.pt"
    decoder.write_bytes(decoder.read_bytes()[:100])
    with pytest.warns(UserWarning, match="corrupt"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path)
    assert len(count_builds) == 2


@pytest.mark.parametrize("field,value", [("weights_sha256", "0" * 64), ("versions", {"torch": "1.0"}), ("precision", "int8")])
def test_mismatched_cache_entry_is_rebuilt_not_loaded(tiny_model_dir, tmp_path, count_builds, field, value):
    FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path)
    manifest_path = _only_entry(tmp_path) / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest[field] = value
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match=field):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path)
    assert len(count_builds) == 2
    assert json.loads(manifest_path.read_text())[field] != value


def test_failed_build_leaves_no_entry(tiny_model_dir, tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("compiler crashed")

    monkeypatch.setattr(compiled, "_build_files", failing)
    with pytest.raises(RuntimeError, match="compiler crashed"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path)
    assert list((tmp_path / "engines").iterdir()) == []


# -- export -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", EXPORTABLE)
def test_export_round_trip(tiny_segmenter, tmp_path, backend):
    folder = tiny_segmenter.export(tmp_path / "export", backend=backend)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["backend"] == backend and manifest["precision"] == "fp32"
    assert len(manifest["weights_sha256"]) == 64 and "torch" in manifest["versions"]
    assert manifest["shapes"]["pixel_values"] == ["images", 3, 64, 64]
    assert set(manifest["files"]) == {"vision", "prompt", "decoder"}
    loaded = FastSegmenter.from_pretrained(folder)
    assert loaded.model is None and (loaded.backend, loaded.precision) == (backend, "fp32")
    assert_relative_close(_logits(loaded), _logits(tiny_segmenter), 1e-4)
    result = loaded.segment(natural_image(33, 21), "a cat")
    assert result.masks.shape == (1, 33, 21)


def test_export_int8(tiny_segmenter, tmp_path):
    folder = tiny_segmenter.export(tmp_path / "int8", backend="torchscript", precision="int8")
    loaded = FastSegmenter.from_pretrained(folder)
    assert loaded.precision == "int8"
    assert_relative_close(_logits(loaded), _logits(tiny_segmenter), 0.2)


def test_export_refuses_a_non_empty_folder(tiny_segmenter, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        tiny_segmenter.export(tmp_path, backend="torchscript")
    assert (tmp_path / "keep.txt").read_text() == "mine"
    tiny_segmenter.export(tmp_path / "e", backend="torchscript")
    tiny_segmenter.export(tmp_path / "e", backend="torchscript", overwrite=True)
    assert (tmp_path / "e" / MANIFEST_NAME).is_file()


def test_export_errors(tiny_segmenter, tmp_path):
    with pytest.raises(ValueError, match="no compiled form"):
        tiny_segmenter.export(tmp_path / "a", backend="torch")
    with pytest.raises(ValueError, match="unknown precision"):
        tiny_segmenter.export(tmp_path / "b", backend="torchscript", precision="fp8")
    folder = tiny_segmenter.export(tmp_path / "c", backend="torchscript")
    loaded = FastSegmenter.from_pretrained(folder)
    with pytest.raises(ValueError, match="exporting needs the transformers model's weights"):
        loaded.export(tmp_path / "d")
    with pytest.raises(ValueError, match="cannot run as precision 'int8'"):
        FastSegmenter.from_pretrained(folder, precision="int8")


def test_corrupt_export_is_refused_by_name(tiny_segmenter, tmp_path):
    folder = tiny_segmenter.export(tmp_path / "e", backend="torchscript")
    (folder / "prompt.pt").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="prompt.pt.*corrupt"):
        FastSegmenter.from_pretrained(folder)
    (folder / "prompt.pt").unlink()
    with pytest.raises(ArtifactError, match="prompt.pt.*missing"):
        FastSegmenter.from_pretrained(folder)


def test_manifest_cannot_point_outside_the_export(tiny_segmenter, tmp_path):
    folder = tiny_segmenter.export(tmp_path / "e", backend="torchscript")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["files"]["vision"]["path"] = "../elsewhere.pt"
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="invalid file name"):
        FastSegmenter.from_pretrained(folder)


def test_export_from_another_version_warns(tiny_segmenter, tmp_path):
    from fastclipseg.engines.artifacts import DIGEST_KEY, manifest_digest

    folder = tiny_segmenter.export(tmp_path / "e", backend="torchscript")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["versions"]["torch"] = "2.0.0"
    manifest[DIGEST_KEY] = manifest_digest(manifest)  # as that version would have written it
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="loading it anyway"):
        FastSegmenter.from_pretrained(folder)


# -- errors -----------------------------------------------------------------------------------


def test_bf16_without_native_support_is_a_clear_error(tiny_model_dir, monkeypatch):
    from fastclipseg.engines import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bf16"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="torch", precision="bf16")


def test_missing_onnxruntime_is_a_clear_error(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'fastclipseg\[onnx\]'"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", cache=False)


@pytest.mark.skipif(not onnxruntime_installed(), reason="onnxruntime is not installed")
def test_unavailable_provider_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ValueError, match="NoSuchExecutionProvider.*not available"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", providers=["NoSuchExecutionProvider"])


@pytest.mark.skipif(not onnxruntime_installed(), reason="onnxruntime is not installed")
def test_onnxruntime_threads_are_configurable(tiny_model_dir):
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", threads=1)
    assert segmenter.engine.threads == 1
    default = FastSegmenter.from_pretrained(tiny_model_dir, backend="onnxruntime")
    assert default.engine.threads == torch.get_num_threads()


def test_compiled_backends_are_cpu_only_for_now(tiny_model_dir):
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="does not run on cuda"):
            FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", device="cuda")
    else:
        with pytest.raises(ValueError, match="sees no CUDA device"):
            FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", device="cuda")


def test_cache_is_never_written_outside_its_folder(tiny_model_dir, tmp_path):
    FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path / "c")
    assert os.listdir(tmp_path) == ["c"]
    assert [p.name.startswith(".") for p in (tmp_path / "c" / "engines").iterdir()] == [False]


def test_export_copies_a_cached_build(tiny_model_dir, tmp_path, count_builds):
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path / "cache")
    folder = segmenter.export(tmp_path / "export", backend="torchscript")
    assert count_builds == ["torchscript"]  # compiled once, for the cache
    loaded = FastSegmenter.from_pretrained(folder)
    assert torch.equal(_logits(loaded), _logits(segmenter))


def test_export_stores_its_build_in_the_cache(tiny_model_dir, tmp_path, count_builds):
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, cache_dir=tmp_path / "cache")  # torch: nothing cached
    folder = segmenter.export(tmp_path / "export", backend="torchscript")
    again = FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=tmp_path / "cache")
    assert count_builds == ["torchscript"]  # compiled once, by the export, into the cache
    assert torch.equal(_logits(again), _logits(FastSegmenter.from_pretrained(folder)))


def test_export_replaces_a_damaged_cache_entry(tiny_model_dir, tmp_path, count_builds):
    cache = tmp_path / "cache"
    FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=cache)
    (entry,) = (cache / "engines").iterdir()
    (entry / "decoder.pt").write_bytes(b"damaged")
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, cache_dir=cache)  # torch: the cache is not read
    folder = segmenter.export(tmp_path / "export", backend="torchscript")
    again = FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=cache)
    assert count_builds == ["torchscript", "torchscript"]  # the first start, then the export into the cache
    assert torch.equal(_logits(again), _logits(FastSegmenter.from_pretrained(folder)))


def test_export_with_an_unwritable_cache_still_exports(tiny_model_dir, tmp_path, count_builds):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, cache_dir=blocker / "cache")
    folder = segmenter.export(tmp_path / "export", backend="torchscript")
    assert count_builds == ["torchscript"] and (folder / MANIFEST_NAME).is_file()
    assert FastSegmenter.from_pretrained(folder).backend == "torchscript"


def test_unwritable_cache_folder_falls_back_to_no_cache(tiny_model_dir, tmp_path, count_builds):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="compiling without a cache"):
        segmenter = FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript", cache_dir=blocker / "cache")
    assert count_builds == ["torchscript"] and blocker.read_text() == "not a folder"
    assert _logits(segmenter).shape == (2, 64, 64)


# -- an export without transformers -------------------------------------------------------------

PROMPT_SAMPLES = [
    "a cat", "the RED car", "  spaces   around  ", "café crème brûlée", "собака", "一只猫", "قطة", "🐱 and 🐶",
    "word " * 100,  # longer than the text tower's 77 tokens: truncated
]


@pytest.mark.parametrize("with_real_vocabulary", [False, True])
def test_export_tokenizer_gives_transformers_ids(tiny_model_dir, request, with_real_vocabulary):
    from fastclipseg.model.export_processor import ExportTokenizer

    folder = tiny_model_dir
    if with_real_vocabulary:
        folder = request.getfixturevalue("shared_data") / "clipseg-shapes"
    from transformers import CLIPSegProcessor

    expected_tokenizer = CLIPSegProcessor.from_pretrained(folder).tokenizer
    ours = ExportTokenizer(folder)
    for prompt in PROMPT_SAMPLES:
        assert ours(prompt)["input_ids"] == expected_tokenizer(prompt)["input_ids"], prompt
    batch = {"padding": True, "truncation": True, "max_length": 77, "return_tensors": "pt"}
    assert torch.equal(ours(PROMPT_SAMPLES, **batch)["input_ids"], expected_tokenizer(PROMPT_SAMPLES, **batch)["input_ids"])


def test_export_runs_without_importing_transformers(tiny_segmenter, tmp_path):
    import subprocess

    import numpy as np
    folder = tiny_segmenter.export(tmp_path / "e", backend="torchscript")
    np.save(tmp_path / "expected.npy", tiny_segmenter.segment(natural_image(20, 30, seed=5), ["a cat", "red dog"]).logits)
    script = (
        "import sys, numpy as np\n"
        "from fastclipseg import FastSegmenter\n"
        "from fastclipseg.bench.measure import natural_image\n"
        f"segmenter = FastSegmenter.from_pretrained({str(folder)!r})\n"
        "logits = segmenter.segment(natural_image(20, 30, seed=5), ['a cat', 'red dog']).logits\n"
        f"expected = np.load({str(tmp_path / 'expected.npy')!r})\n"
        "assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_export_without_image_settings_is_a_clear_error(tiny_segmenter, tmp_path):
    folder = tiny_segmenter.export(tmp_path / "e", backend="torchscript")
    for name in ("processor_config.json", "preprocessor_config.json"):
        (folder / name).unlink(missing_ok=True)
    # The manifest lists the file, so its absence is found before the settings are looked for.
    with pytest.raises(ArtifactError, match="processor_config.json.*missing"):
        FastSegmenter.from_pretrained(folder)


def test_keep_model_false_lets_the_fp32_model_go(tiny_model_dir, tiny_segmenter, tmp_path):
    import gc
    import weakref

    from fastclipseg.model.loading import load_model_and_processor

    model, processor = load_model_and_processor(tiny_model_dir)
    segmenter = FastSegmenter(model, processor, backend="torchscript", keep_model=False)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # nothing in the segmenter holds the fp32 weights any more
    assert segmenter.model is None and segmenter.stages is None
    kept = FastSegmenter.from_pretrained(tiny_model_dir, backend="torchscript")  # the same cached build
    assert torch.equal(_logits(segmenter), _logits(kept))
    with pytest.raises(ValueError, match="keep_model=False"):
        segmenter.export(tmp_path / "export")
    # An export holds no model whatever keep_model says.
    folder = kept.export(tmp_path / "export")
    assert FastSegmenter.from_pretrained(folder, keep_model=False).model is None


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_first_start_runs_what_it_traced_and_ignores_later_edits_of_the_model(tiny_model_dir, tmp_path, monkeypatch,
                                                                              precision):
    from fastclipseg.engines import cpu_has_native_bf16
    from fastclipseg.model.loading import load_model_and_processor

    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("bf16 needs a CPU with native bf16")
    loads = []
    load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: loads.append(args[0]) or load(*args, **kwargs))
    model, processor = load_model_and_processor(tiny_model_dir)
    first = FastSegmenter(model, processor, backend="torchscript", precision=precision, cache_dir=tmp_path)
    # bf16 and int8 trace copies of the weights and run those modules; fp32's would share the
    # model's tensors, so it loads the files it wrote.
    assert len(loads) == (3 if precision == "fp32" else 0)
    # bf16's private copies trace as plain functions (a faster first start); the others as modules.
    assert isinstance(first.engine.vision, torch.jit.ScriptFunction) == (precision == "bf16")
    cached = FastSegmenter(model, processor, backend="torchscript", precision=precision, cache_dir=tmp_path)
    assert len(loads) == (6 if precision == "fp32" else 3)
    expected = _logits(first)
    assert torch.equal(_logits(cached), expected)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)
    assert torch.equal(_logits(first), expected)


def test_torchscript_stages_run_without_the_graph_executors_optimisations(tiny_segmenter, tmp_path):
    # They gained no speed on the CPU and held 0.1 GB more at full size (README); the setting is
    # per thread and must be restored after each call.
    folder = tiny_segmenter.export(tmp_path / "export", backend="torchscript")
    engine, _ = compiled.load_export(folder, torch.device("cpu"))
    seen = []
    vision = engine.vision
    engine.vision = lambda pixels: seen.append(torch._C._get_graph_executor_optimize()) or vision(pixels)
    engine.encode_images(torch.zeros(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    assert seen == [False] and torch._C._get_graph_executor_optimize()

"""The TensorRT backend's parts: what runs without TensorRT here, the real compile on a GPU machine."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from fastclipseg.engines import tensorrt_engine as te
from fastclipseg.engines.artifacts import (
    library_versions,
    mismatches,
    read_manifest,
    write_manifest,
)
from fastclipseg.streams.calibration import calibration_images
from helpers.tiny_models import TINY_IMAGE_SIZE, tiny_model
from PIL import Image

needs_tensorrt = pytest.mark.skipif(
    not te.tensorrt_available() or not torch.cuda.is_available(),
    reason="needs torch-tensorrt, tensorrt and a CUDA GPU (pip install 'fastclipseg[tensorrt]')",
)
needs_modelopt = pytest.mark.skipif(importlib.util.find_spec("modelopt") is None, reason="needs nvidia-modelopt")
# Stated parity bound of the fp16 engine against the fp32 torch engine (max |difference| relative
# to max |reference logit|); fp16 keeps ~3 significant digits through a dozen layers.
FP16_TOLERANCE = 2e-2


@pytest.fixture(scope="module")
def tiny_stages():
    from fastclipseg.model.stages import Stages

    return Stages(tiny_model(), TINY_IMAGE_SIZE).eval()


def _pretend_missing(monkeypatch, *missing: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(te, "_find_spec", lambda name: None if name in missing else (real(name) or object()))


# -- availability and errors -----------------------------------------------------------------------


def test_non_cuda_device_is_a_clear_value_error():
    with pytest.raises(ValueError, match="CUDA devices only.*'cpu'"):
        te.require_tensorrt("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda():
    with pytest.raises(ValueError, match="sees none"):
        te.require_tensorrt("cuda")


def test_missing_packages_are_named_with_the_pip_command(monkeypatch):
    _pretend_missing(monkeypatch, "torch_tensorrt", "tensorrt")
    assert not te.tensorrt_available()
    with pytest.raises(ImportError) as raised:
        te.require_tensorrt()
    message = str(raised.value)
    assert "torch-tensorrt and tensorrt" in message and "are not installed" in message
    assert "pip install 'fastclipseg[tensorrt]'" in message


def test_only_tensorrt_missing(monkeypatch):
    _pretend_missing(monkeypatch, "tensorrt")
    assert te.missing_packages() == ["tensorrt"]
    with pytest.raises(ImportError, match=r"needs tensorrt, which is not installed: pip install 'fastclipseg\[tensorrt\]'"):
        te.require_tensorrt()


def test_installed_but_broken_torch_tensorrt(monkeypatch):
    _pretend_missing(monkeypatch)  # everything "installed"
    monkeypatch.setattr(te, "_import_failure", lambda: "OSError: libnvinfer.so.10: cannot open shared object file")
    assert not te.tensorrt_available()
    with pytest.raises(ImportError, match="does not import.*libnvinfer"):
        te.require_tensorrt()


def test_this_machine_reports_what_it_lacks():
    if te.tensorrt_available():
        pytest.skip("torch-tensorrt is installed here")
    with pytest.raises(ImportError, match="fastclipseg\\[tensorrt\\]"):
        te.require_tensorrt()


def test_missing_modelopt(monkeypatch):
    _pretend_missing(monkeypatch, "modelopt")
    with pytest.raises(ImportError, match="nvidia-modelopt.*pip install nvidia-modelopt"):
        te.require_modelopt()


def test_precision_options_follow_the_installed_api():
    def new_api(program, *, inputs=None, use_explicit_typing=True, enabled_precisions=None): ...

    def old_api(program, *, inputs=None, enabled_precisions=None): ...

    assert te.precision_options(new_api, "fp16") == {"use_explicit_typing": True}
    assert te.precision_options(old_api, "fp16") == {"enabled_precisions": {torch.float16, torch.float32}}
    assert torch.int8 in te.precision_options(old_api, "int8")["enabled_precisions"]


# -- profiles --------------------------------------------------------------------------------------


def test_default_profiles_describe_the_released_model():
    profile = te.profiles()
    assert profile["vision"]["pixel_values"] == {
        "min": [1, 3, 352, 352], "opt": [8, 3, 352, 352], "max": [64, 3, 352, 352], "dtype": "float32",
    }
    decoder = profile["decoder"]
    assert decoder["activations"]["min"] == [3, 1, 485, 768]
    assert decoder["activations"]["max"] == [3, 64, 485, 768]
    assert decoder["activations"]["dtype"] == "float16"  # fp16 vision feeds the fp16 decoder
    assert decoder["embeddings"]["min"] == [1, 512] and decoder["embeddings"]["max"] == [512, 512]
    assert decoder["image_index"] == {"min": [1], "opt": [16], "max": [512], "dtype": "int64"}
    assert profile["pair_buckets"][-1] == 512


def test_profiles_follow_buckets_and_precision():
    profile = te.profiles((2, 4, 16), 64, 3, layers=2, width=32, projection_dim=24, precision="int8", opt_batch=5)
    vision = profile["vision"]["pixel_values"]
    assert (vision["min"][0], vision["opt"][0], vision["max"][0]) == (2, 16, 16)
    acts = profile["decoder"]["activations"]
    assert acts["min"] == [2, 2, 17, 32] and acts["max"] == [2, 16, 17, 32] and acts["dtype"] == "float32"
    assert profile["decoder"]["embeddings"]["max"] == [48, 24]
    for specs in (profile["vision"], profile["decoder"]):
        for spec in specs.values():
            assert all(low <= opt <= high for low, opt, high in zip(spec["min"], spec["opt"], spec["max"]))
    assert te.profiles((1, 2), 64, 1, max_pairs=5)["decoder"]["image_index"]["max"] == [5]


def test_profiles_of_the_tiny_model(tiny_stages):
    profile = te.model_profiles(tiny_stages, (1, 2, 4), 2, precision="fp32")
    assert profile["vision"]["pixel_values"]["max"] == [4, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE]
    assert profile["decoder"]["activations"]["max"] == [3, 4, 17, 32]
    assert profile["decoder"]["embeddings"]["max"] == [8, 24]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "bf16"}, "unknown precision"),
        ({"image_size": 350}, "multiple of the patch size"),
        ({"max_prompts": 0}, "max_prompts"),
        ({"buckets": (4, 2)}, "sorted"),
    ],
)
def test_profiles_reject(kwargs, message):
    with pytest.raises(ValueError, match=message):
        te.profiles(**kwargs)


# -- cache keys and manifest -----------------------------------------------------------------------

KEY_FIELDS = {
    "weights_sha256": "ab" * 32, "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
    "tensorrt_version": "10.9.0", "torch_tensorrt_version": "2.13.0", "precision": "fp16",
    "profile": te.profiles(), "calibration_sha256": None,
}


def test_cache_key_is_stable():
    key = te.engine_cache_key(**KEY_FIELDS)
    assert len(key) == 64 and int(key, 16) >= 0
    assert te.engine_cache_key(**KEY_FIELDS) == key
    reordered = dict(reversed(list(KEY_FIELDS["profile"].items())))
    assert te.engine_cache_key(**{**KEY_FIELDS, "profile": reordered}) == key
    # A value, not a hash of Python's memory: a known digest for fixed fields.
    fixed = te.engine_cache_key("0" * 64, "gpu", "8.6", "10", "2", "fp32", {"b": [1, 2]})
    assert fixed == te.engine_cache_key("0" * 64, "gpu", "8.6", "10", "2", "fp32", {"b": (1, 2)})


@pytest.mark.parametrize(
    "field, value",
    [
        ("weights_sha256", "cd" * 32),
        ("gpu_name", "NVIDIA A100-SXM4-40GB"),
        ("compute_capability", "8.0"),
        ("tensorrt_version", "10.10.0"),
        ("torch_tensorrt_version", "2.12.0"),
        ("precision", "fp32"),
        ("profile", te.profiles(buckets=(1, 2, 4, 8))),
        ("calibration_sha256", "ef" * 32),
    ],
)
def test_cache_key_changes_with_every_field(field, value):
    assert te.engine_cache_key(**{**KEY_FIELDS, field: value}) != te.engine_cache_key(**KEY_FIELDS)


def test_cache_key_extra_and_int8():
    base = te.engine_cache_key(**KEY_FIELDS)
    assert te.engine_cache_key(**KEY_FIELDS, extra={"torch": "2.13.0"}) != base
    with pytest.raises(ValueError, match="calibration_sha256"):
        te.engine_cache_key(**{**KEY_FIELDS, "precision": "int8"})
    int8 = te.engine_cache_key(**{**KEY_FIELDS, "precision": "int8", "calibration_sha256": "1" * 64})
    assert int8 != te.engine_cache_key(**{**KEY_FIELDS, "precision": "int8", "calibration_sha256": "2" * 64})


def test_manifest_round_trip_uses_the_export_format(tmp_path, tiny_stages):
    dims = te.stage_dims(tiny_stages)
    gpu = {"gpu_name": "NVIDIA H100", "compute_capability": "9.0"}
    versions = {"fastclipseg": "x", "torch": "2.13", "tensorrt": "10.9", "torch-tensorrt": "2.13", "nvidia-modelopt": None}
    profile = te.model_profiles(tiny_stages, (1, 2), 2)
    build = te.describe_tensorrt_build("ab" * 32, dims, 599, "fp16", profile, gpu, versions=versions)
    assert build["backend"] == "tensorrt" and build["device"] == "cuda" and build["versions"] == versions
    assert build["engine_key"] == te.describe_tensorrt_build("ab" * 32, dims, 599, "fp16", profile, gpu,
                                                             versions=versions)["engine_key"]
    files = {}
    for stage, name in te.FILES.items():
        files[stage] = tmp_path / name
        files[stage].write_bytes(stage.encode())
    write_manifest(tmp_path, build, files, {"vision": profile["vision"], "decoder": profile["decoder"]})
    manifest = read_manifest(tmp_path)
    assert mismatches(manifest, build) == []
    other_gpu = te.describe_tensorrt_build("ab" * 32, dims, 599, "fp16", profile, {**gpu, "gpu_name": "NVIDIA L4"},
                                           versions=versions)
    problems = mismatches(manifest, other_gpu)
    assert any(p.startswith("gpu_name") for p in problems) and any(p.startswith("engine_key") for p in problems)
    newer = te.describe_tensorrt_build("ab" * 32, dims, 599, "fp16", profile, gpu,
                                       versions={**versions, "torch-tensorrt": "2.14"})
    assert newer["engine_key"] != build["engine_key"]


def test_builds_record_the_installed_tensorrt_versions(tiny_stages):
    dims, gpu = te.stage_dims(tiny_stages), {"gpu_name": "NVIDIA H100", "compute_capability": "9.0"}
    build = te.describe_tensorrt_build("ab" * 32, dims, 599, "fp32", te.model_profiles(tiny_stages, (1, 2), 2), gpu)
    assert build["versions"] == library_versions("tensorrt")
    assert set(build["versions"]) == {"fastclipseg", "torch", "tensorrt", "torch-tensorrt", "nvidia-modelopt"}


# -- the stage export (torch only) and the engine's bucketing --------------------------------------


@pytest.fixture(scope="module")
def exported(tiny_stages):
    profile = te.model_profiles(tiny_stages, (1, 2, 4), 2, precision="fp32")  # pairs: up to 8
    modules = te.prepare_tensorrt_stages(tiny_stages, "fp32")
    programs = {stage: te.export_stage(modules[stage], profile, stage) for stage in ("vision", "decoder")}
    return profile, programs


def test_exported_prompt_stage_takes_any_prompts_and_tokens(tiny_stages):
    program = te.export_prompt_stage(te.prepare_tensorrt_stages(tiny_stages, "fp32")["prompt"]).module()
    with torch.no_grad():
        for prompts, tokens in ((1, 2), (5, 11)):
            ids = torch.randint(3, 500, (prompts, tokens))
            ids[:, -1] = tiny_stages.prompt.eos_token_id
            torch.testing.assert_close(program(ids), tiny_stages.prompt(ids), rtol=1e-5, atol=1e-5)


def test_exported_stages_are_dynamic_and_exact(tiny_stages, exported):
    _, programs = exported
    vision, decoder = programs["vision"].module(), programs["decoder"].module()
    with torch.no_grad():
        for images, pairs in ((1, 1), (3, 5), (4, 8)):
            pixels = torch.randn(images, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
            activations = vision(pixels)
            torch.testing.assert_close(activations, tiny_stages.vision(pixels), rtol=1e-5, atol=1e-5)
            embeddings = torch.randn(pairs, 24)
            index = torch.arange(pairs) % images
            torch.testing.assert_close(decoder(activations, embeddings, index),
                                       tiny_stages.decoder(activations, embeddings, index), rtol=1e-5, atol=1e-5)


def test_engine_pads_and_splits_calls(tiny_stages, exported):
    """TensorRTEngine's own encode/decode logic, with the exported (untensorrt'd) programs standing in."""
    profile, programs = exported
    engine = te.TensorRTEngine.__new__(te.TensorRTEngine)  # __init__ needs TensorRT; its call logic does not
    engine.device, engine.precision, engine.profile = torch.device("cpu"), "fp32", profile
    engine.buckets, engine.pair_buckets = tuple(profile["buckets"]), tuple(profile["pair_buckets"])
    calls = []

    def recording(module):
        def run(*args):
            calls.append(tuple(int(a.shape[0]) for a in args))
            return module(*args)
        return run

    engine.vision = recording(programs["vision"].module())
    engine.decoder = recording(programs["decoder"].module())
    pixels = torch.randn(7, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)  # buckets (1, 2, 4): 4 + 3 padded to 4
    with torch.no_grad():
        activations = engine.encode_images(pixels)
        torch.testing.assert_close(activations, tiny_stages.vision(pixels), rtol=1e-5, atol=1e-5)
        assert calls == [(4,), (4,)]
        calls.clear()
        few = activations[:, :3]
        embeddings, index = torch.randn(11, 24), torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 0])
        logits = engine.decode(few, embeddings, index)  # 3 images padded to 4; 11 pairs: 8 + 3 padded to 4
        torch.testing.assert_close(logits, tiny_stages.decoder(few, embeddings, index), rtol=1e-5, atol=1e-5)
        assert [call[1:] for call in calls] == [(8, 8), (4, 4)] and all(call[0] == 3 for call in calls)


def test_engine_decodes_more_images_than_its_largest_bucket(tiny_stages, exported):
    """As a segmenter with batch_size above the largest bucket calls it: the images are split into
    runs of the largest bucket, each decoded with its own pairs, in any order of pairs."""
    profile, programs = exported
    engine = te.TensorRTEngine.__new__(te.TensorRTEngine)
    engine.device, engine.precision, engine.profile = torch.device("cpu"), "fp32", profile
    engine.buckets, engine.pair_buckets = tuple(profile["buckets"]), tuple(profile["pair_buckets"])
    engine.vision, engine.decoder = programs["vision"].module(), programs["decoder"].module()
    pixels = torch.randn(9, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)  # buckets (1, 2, 4): 4 + 4 + 1
    index = torch.tensor([8, 0, 5, 1, 4, 7, 2, 3, 6, 0, 8, 4])
    embeddings = torch.randn(index.shape[0], 24)
    with torch.no_grad():
        activations = engine.encode_images(pixels)
        logits = engine.decode(activations, embeddings, index)
        torch.testing.assert_close(logits, tiny_stages.decoder(activations, embeddings, index), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match=r"image numbers in \[0, 9\)"):
            engine.decode(activations, embeddings[:2], torch.tensor([0, 9]))


# -- the real thing (GPU machines with torch-tensorrt) ---------------------------------------------


@pytest.fixture
def cuda_stages(tiny_stages):
    import copy

    return copy.deepcopy(tiny_stages).to("cuda")


def _parity(engine, reference, seed: int = 0) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(5, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=generator)
    ids = torch.randint(3, 500, (3, 6), generator=generator)
    ids[:, -1] = reference.prompt.eos_token_id  # the torch engine's PromptStage
    index = torch.tensor([0, 1, 2, 3, 4, 4, 2])
    which = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    with torch.no_grad():
        expected = reference.decode(reference.encode_images(pixels), reference.encode_prompts(ids)[which], index)
        actual = engine.decode(engine.encode_images(pixels), engine.encode_prompts(ids)[which], index)
    return (actual.float() - expected.float()).abs().max().item(), expected.abs().max().item()


@needs_tensorrt
def test_fp16_engine_matches_the_fp32_torch_engine(cuda_stages, tmp_path):
    from fastclipseg.engines.torch_engine import TorchEngine

    device = torch.device("cuda")
    engine = te.cached_tensorrt_engine(cuda_stages, "fp16", device, tmp_path, buckets=(1, 2, 4, 8), max_prompts=2)
    assert engine.name == "tensorrt" and engine.precision == "fp16"
    error, scale = _parity(engine, TorchEngine(cuda_stages, device, "fp32"))
    assert error <= FP16_TOLERANCE * scale, f"max |difference| {error:.3g} > {FP16_TOLERANCE} x {scale:.3g}"


@needs_tensorrt
def test_corrupt_cached_engine_is_rebuilt(cuda_stages, tmp_path):
    device = torch.device("cuda")
    te.cached_tensorrt_engine(cuda_stages, "fp32", device, tmp_path, buckets=(1, 2), max_prompts=1)
    [entry] = (tmp_path / "engines").iterdir()
    vision = entry / te.FILES["vision"]
    vision.write_bytes(vision.read_bytes()[:-16] + b"corrupt-corrupt!")
    with pytest.warns(UserWarning, match="rebuilding the cached tensorrt fp32 engine.*corrupt"):
        engine = te.cached_tensorrt_engine(cuda_stages, "fp32", device, tmp_path, buckets=(1, 2), max_prompts=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry now loads without a warning
        te.cached_tensorrt_engine(cuda_stages, "fp32", device, tmp_path, buckets=(1, 2), max_prompts=1)
    assert engine.encode_images(torch.randn(3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)).shape[1] == 3


@needs_tensorrt
@needs_modelopt
def test_int8_engine_calibrates_on_a_folder(cuda_stages, tmp_path):
    from fastclipseg.bench.measure import natural_image
    from fastclipseg.engines.torch_engine import TorchEngine

    images = tmp_path / "calibration"
    images.mkdir()
    for seed in range(8):
        Image.fromarray(natural_image(96, 128, seed=seed)).save(images / f"{seed}.png")
    calib = calibration_images(images, count=8, size=TINY_IMAGE_SIZE)
    device = torch.device("cuda")
    engine = te.cached_tensorrt_engine(cuda_stages, "int8", device, tmp_path / "cache", buckets=(1, 2, 4, 8),
                                       max_prompts=2, calibration=calib.for_engine())
    error, scale = _parity(engine, TorchEngine(cuda_stages, device, "fp32"))
    assert error <= 0.2 * scale  # the bound test_engines states for int8 on the tiny random models


# -- as a backend of FastSegmenter ----------------------------------------------------------------


def test_tensorrt_backend_reports_what_it_needs(tiny_model_dir):
    from fastclipseg import FastSegmenter

    with pytest.raises(ValueError, match="CUDA devices only"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="tensorrt", precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            FastSegmenter.from_pretrained(tiny_model_dir, device="cuda", backend="tensorrt", precision="fp16")
    with pytest.raises(ValueError, match="invalid device 'cuda:x'"):  # parsed before TensorRT is looked for
        FastSegmenter.from_pretrained(tiny_model_dir, device="cuda:x", backend="tensorrt", precision="fp16")


def test_tensorrt_int8_without_calibration_images_is_refused(tiny_stages, monkeypatch):
    from fastclipseg import engines

    monkeypatch.setattr(engines, "require_tensorrt", lambda device=None: None)  # as if CUDA and TensorRT were here
    monkeypatch.setattr(engines, "parse_device", lambda device: torch.device("cuda"))
    with pytest.raises(ValueError, match="needs calibration=<folder"):
        engines.create_engine("tensorrt", tiny_stages, "cuda", "int8")


def test_calibration_is_only_for_tensorrt_int8(tiny_model_dir, tmp_path):
    from fastclipseg import FastSegmenter

    with pytest.raises(ValueError, match="calibration images are for backend 'tensorrt' in precision 'int8'"):
        FastSegmenter.from_pretrained(tiny_model_dir, calibration=tmp_path)

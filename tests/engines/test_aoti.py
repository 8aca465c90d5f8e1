"""The aoti backend's own rules: a build is tied to its CPU's features and to its torch, it needs a C++
compiler only to build, its kernels follow the thread count they run with, a call releases the GIL,
and a malformed package is a clear error. (Its parity with the fp32 reference is in test_engines.py,
its exports' C++ runs in tests/cpp.)"""

from __future__ import annotations

import json
import re
import threading
import time
import zipfile

import pytest
import torch
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import natural_image
from fastclipseg.engines import aoti_engine, compiled
from fastclipseg.engines.artifacts import DIGEST_KEY, MANIFEST_NAME, ArtifactError, describe_build, manifest_digest


@pytest.fixture(scope="module")
def aoti_export(tiny_segmenter, tmp_path_factory):
    """An fp32 aoti export of the tiny model; its build goes through the session's engine cache, so the
    other tests of the tiny aoti engine load it instead of compiling again."""
    return tiny_segmenter.export(tmp_path_factory.mktemp("aoti") / "export", backend="aoti")


def _edited_copy(source, target, **fields):
    import shutil

    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    manifest.update(fields)
    manifest[DIGEST_KEY] = manifest_digest(manifest)  # as that build would have written it
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


def test_export_records_the_cpu_it_was_built_for(aoti_export):
    manifest = json.loads((aoti_export / MANIFEST_NAME).read_text())
    assert manifest["backend"] == "aoti" and manifest["cpu_features"] == aoti_engine.cpu_features()
    assert manifest["cpu_features"].split("+")[0] == torch.backends.cpu.get_cpu_capability()
    assert {entry["path"] for entry in manifest["files"].values()} == {"vision.pt2", "prompt.pt2", "decoder.pt2"}


def test_export_for_another_cpu_is_refused(aoti_export, tmp_path):
    folder = _edited_copy(aoti_export, tmp_path / "other-cpu", cpu_features="AVX2+elsewhere")
    with pytest.raises(ArtifactError, match="compiled for a CPU with 'AVX2\\+elsewhere'.*export the model again"):
        FastSegmenter.from_pretrained(folder)


def test_export_for_another_torch_is_refused_not_loaded(aoti_export, tmp_path):
    manifest = json.loads((aoti_export / MANIFEST_NAME).read_text())
    folder = _edited_copy(aoti_export, tmp_path / "other-torch", versions={**manifest["versions"], "torch": "2.0.0"})
    # Unlike TorchScript files (loaded with a warning), compiled C++ may crash in another torch's process.
    with pytest.raises(ArtifactError, match="load only into the torch they were compiled against"):
        FastSegmenter.from_pretrained(folder)


def test_the_cpu_features_are_part_of_the_cache_key(monkeypatch):
    build = describe_build("aoti", "fp32", torch.device("cpu"), "0" * 64, 64, 16, 2)
    monkeypatch.setattr(aoti_engine, "cpu_features", lambda: "AVX2+elsewhere")
    elsewhere = describe_build("aoti", "fp32", torch.device("cpu"), "0" * 64, 64, 16, 2)
    assert elsewhere["cpu_features"] == "AVX2+elsewhere"
    assert compiled._entry("cache", build) != compiled._entry("cache", elsewhere)
    assert "cpu_features" not in describe_build("torchscript", "fp32", torch.device("cpu"), "0" * 64, 64, 16, 2)


def test_missing_compiler_is_a_clear_error(tiny_model_dir, monkeypatch):  # named before anything compiles
    monkeypatch.setattr(aoti_engine, "cxx_compiler", lambda: None)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler.*backend 'torchscript' needs none"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="aoti", cache=False)


def test_a_cached_build_loads_without_a_compiler(tiny_model_dir, aoti_export, monkeypatch):
    monkeypatch.setattr(aoti_engine, "cxx_compiler", lambda: None)
    assert FastSegmenter.from_pretrained(aoti_export).backend == "aoti"


def test_int8_is_not_offered(tiny_model_dir):
    with pytest.raises(ValueError, match="aoti.*fp32, bf16"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="aoti", precision="int8")


def test_kernels_take_the_thread_count_when_they_run(aoti_export):
    # Inductor writes the build's thread count into every parallel loop unless told not to; then a
    # package built with 2 threads would run with 2 whatever torch.set_num_threads says.
    for stage in ("vision", "prompt", "decoder"):
        with zipfile.ZipFile(aoti_export / f"{stage}.pt2") as package:
            sources = [package.read(name).decode() for name in package.namelist() if name.endswith(".cpp")]
        assert sources and any("#pragma omp parallel" in source for source in sources)
        assert not any(re.search(r"num_threads\(\d+\)", source) for source in sources), stage
    loaded = FastSegmenter.from_pretrained(aoti_export)
    pixel_values = loaded.pixel_values([natural_image(30, 40, seed=1)])
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 3):
            torch.set_num_threads(count)
            results.append(loaded.predict_logits(pixel_values, [["a cat", "red dog"]])[0])
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_a_stage_refuses_the_wrong_number_of_tensors(aoti_export):
    vision = FastSegmenter.from_pretrained(aoti_export).engine.vision
    pixels = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="takes 1 tensors, got 2"):
        vision(pixels, pixels)


def _rewritten_package(source, target, keep=lambda info: True, compression=zipfile.ZIP_STORED):
    """A copy of the package `source` with the members `keep` accepts, written with `compression`."""
    with zipfile.ZipFile(source) as package, zipfile.ZipFile(target, "w", compression) as copy:
        for info in package.infolist():
            if keep(info):
                copy.writestr(info.filename, package.read(info))
    return target


def test_a_malformed_package_is_a_clear_error(aoti_export, tmp_path):
    source = aoti_export / "decoder.pt2"
    no_library = _rewritten_package(source, tmp_path / "no-library.pt2",
                                    keep=lambda info: not info.filename.endswith(".so"))
    with pytest.raises(RuntimeError, match="expected one '\\*.wrapper.so' in the package, found 0"):
        aoti_engine._Package(no_library)
    compressed = _rewritten_package(source, tmp_path / "compressed.pt2", compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(RuntimeError, match="weights in the package are not what its library expects"):
        aoti_engine._Package(compressed)
    # The same members stored as torch stores them load and run.
    stored = aoti_engine._Package(_rewritten_package(source, tmp_path / "stored.pt2"))
    assert stored.inputs.value == 3 and stored.outputs.value == 1


def test_a_call_lets_other_python_threads_run(aoti_export):
    # torch's Python binding of the package loader holds the GIL for a whole call; the package's C
    # interface, called through ctypes, does not. A thread counting in Python measures it: during one
    # stage call (on one thread, so that the counter has a core where there are two) it should count at
    # a good part of its rate while the main thread sleeps; with the GIL held it counted at about 6 %.
    loaded = FastSegmenter.from_pretrained(aoti_export)
    size = loaded.core.preprocess_config.size
    pixels = torch.zeros(1024, 3, size, size)
    vision = loaded.engine.vision
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    counted, stop = [0], threading.Event()

    def count() -> None:
        while not stop.is_set():
            counted[0] += 1

    def rate_during(action) -> float:
        before, started = counted[0], time.perf_counter()
        action()
        return (counted[0] - before) / (time.perf_counter() - started)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        vision(pixels)  # first-call work outside the measurement
        idle = rate_during(lambda: time.sleep(0.2))
        running = rate_during(lambda: vision(pixels))
    finally:
        stop.set()
        counter.join()
        torch.set_num_threads(threads)
    assert running > 0.25 * idle, (running, idle)

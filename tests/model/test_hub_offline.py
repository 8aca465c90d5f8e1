"""Hub ids without network access (issue 17): a cached model loads with no network and no
transformers; an uncached one fails in seconds, naming the id and `hf download`."""

from __future__ import annotations

import shutil
import socket
import time

import numpy as np
import pytest
from fastclipseg import FastSegmenter, ModelUnavailableError
from fastclipseg.bench.measure import natural_image
from fastclipseg.model import hub
from fastclipseg.model.standalone import StandaloneCLIPSeg

REPO = "fastclipseg-tests/tiny-clipseg"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty HF_HOME (and no other cache variable), nothing offline unless a test says so; any
    download attempt fails the test."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))

    def no_download(*args, **kwargs):
        raise AssertionError("no download may be attempted")

    monkeypatch.setattr(hub, "download", no_download)
    return tmp_path / "hf-home" / "hub"


def _cache(tiny_model_dir, cache, repo=REPO):
    """Put the tiny model where huggingface_hub caches `repo`: blobs, snapshots/<commit>/ links, refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for path in tiny_model_dir.iterdir():
        blob = root / "blobs" / f"blob-{path.name}"
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(blob)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    return snapshot


def _assert_fails_fast(call, repo):
    started = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as caught:
        call()
    elapsed = time.perf_counter() - started
    message = str(caught.value)
    assert elapsed < 3, f"took {elapsed:.1f} s"
    assert repr(repo) in message and f"hf download {repo} --local-dir FOLDER" in message, message
    assert "pass its path" in message and "\n" not in message, message
    return message


def test_offline_uncached_id_fails_at_once(empty_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_probe(*args, **kwargs):
        raise AssertionError("offline: the network must not be probed")

    monkeypatch.setattr(hub, "reachable", no_probe)
    message = _assert_fails_fast(lambda: FastSegmenter.from_pretrained("CIDAS/clipseg-not-cached"),
                                 "CIDAS/clipseg-not-cached")
    assert "HF_HUB_OFFLINE" in message and str(empty_hub) in message


def test_transformers_offline_counts_too(empty_hub, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    _assert_fails_fast(lambda: FastSegmenter.from_pretrained("someone/model"), "someone/model")


def test_unreachable_hub_fails_fast(empty_hub, monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda timeout=hub.PROBE_TIMEOUT_S: "huggingface.co:443 cannot be reached")
    message = _assert_fails_fast(lambda: FastSegmenter.from_pretrained("CIDAS/clipseg-rd64-refined"),
                                 "CIDAS/clipseg-rd64-refined")
    assert "cannot be reached" in message and "HF_HUB_OFFLINE=1" in message


def test_cached_id_loads_without_network(tiny_model_dir, empty_hub, monkeypatch):
    _cache(tiny_model_dir, empty_hub)

    def no_network(*args, **kwargs):
        raise AssertionError("a cached model must load without network access")

    monkeypatch.setattr(hub, "reachable", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    from_hub = FastSegmenter.from_pretrained(REPO)
    assert isinstance(from_hub.model, StandaloneCLIPSeg)
    image = natural_image(30, 40, seed=1)
    expected = FastSegmenter.from_pretrained(tiny_model_dir).segment(image, ["a cat", "red dog"]).logits
    assert np.array_equal(from_hub.segment(image, ["a cat", "red dog"]).logits, expected)


def test_cached_id_loads_offline_with_hf_hub_cache(tiny_model_dir, tmp_path, monkeypatch):
    # HF_HUB_CACHE (read when loading, not when huggingface_hub was imported) wins over HF_HOME.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _cache(tiny_model_dir, tmp_path / "cache")
    assert FastSegmenter.from_pretrained(REPO, local_files_only=True).preprocess_config.size == 64


def test_cached_but_incomplete_offline_fails_fast(tiny_model_dir, empty_hub, monkeypatch):
    snapshot = _cache(tiny_model_dir, empty_hub)
    (snapshot / "model.safetensors").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_fails_fast(lambda: FastSegmenter.from_pretrained(REPO), REPO)


def test_local_files_only_never_probes(empty_hub, monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda *args, **kwargs: pytest.fail("probed"))
    message = _assert_fails_fast(lambda: FastSegmenter.from_pretrained("owner/name", local_files_only=True),
                                 "owner/name")
    assert "local_files_only" in message


def test_reachable_answers_for_a_closed_and_an_open_port(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.probe_address() == ("127.0.0.1", server.getsockname()[1])
        assert hub.reachable(timeout=2) is None
    started = time.perf_counter()
    problem = hub.reachable(timeout=2)  # the port is closed now
    assert problem is not None and "127.0.0.1" in problem and time.perf_counter() - started < 2.5


def test_probe_goes_to_the_https_proxy(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert hub.probe_address() == ("proxy.example", 3128)


def test_download_takes_only_the_folder_files(tmp_path, monkeypatch):
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns, cache_dir, endpoint):
        calls.append(allow_patterns)
        folder = tmp_path / "snapshot"
        folder.mkdir(exist_ok=True)
        if allow_patterns == hub.LEGACY_WEIGHTS_PATTERNS:
            (folder / "pytorch_model.bin").write_bytes(b"")
        return str(folder)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    # A repository without safetensors: its pytorch_model.bin is fetched in a second call.
    assert hub.download("owner/name", tmp_path) == tmp_path / "snapshot"
    assert calls == [hub.FOLDER_PATTERNS, hub.LEGACY_WEIGHTS_PATTERNS]
    assert "*.bin" not in hub.FOLDER_PATTERNS and "pytorch_model.bin" not in hub.FOLDER_PATTERNS

"""A hub id as a local model folder: from the HuggingFace cache, or downloaded once; never slow to fail.

A cached model is found by reading the cache's documented layout
(`models--owner--name/refs/main` -> `snapshots/<commit>/`), with no network access and without
importing huggingface_hub. Otherwise, with HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set, or
`local_files_only`, it fails at once; else one quick TCP connection to the hub's endpoint (or the
HTTPS proxy) decides whether a download can work, so that a machine without network access gets
its answer in seconds, not after half a minute of retries. Downloads take only the files a
CLIPSeg folder needs (`snapshot_download` with `allow_patterns`).
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .files import first_line

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
# What a CLIPSeg folder is made of (weights in safetensors; pytorch_model.bin only for a repository
# that has no safetensors).
FOLDER_PATTERNS = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                   "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "preprocessor_config.json", "processor_config.json"]
LEGACY_WEIGHTS_PATTERNS = ["pytorch_model.bin"]
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of boolean variables


class HubUnavailableError(OSError):
    """The model is not in the local cache and cannot be downloaded now."""


def hub_cache_dir() -> Path:
    """The HuggingFace hub cache, as huggingface_hub finds it (read now, not when it was imported)."""
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                     "huggingface")
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def offline_mode() -> bool:
    return any((os.environ.get(name) or "").upper() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def cached_snapshot(repo_id: str, cache: Path | None = None) -> Path | None:
    """The folder of the cached snapshot of `repo_id`'s main branch, or None (not cached)."""
    repo = (cache or hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    try:
        commit = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    folder = repo / "snapshots" / commit
    return folder if commit and folder.is_dir() else None


def probe_address() -> tuple[str, int]:
    """(host, port) a download connects to first: the endpoint's, or the HTTPS proxy's."""
    url = urlsplit(endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if proxy_url.hostname:
            return proxy_url.hostname, proxy_url.port or (443 if proxy_url.scheme == "https" else 80)
    return host, port


def reachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to `probe_address()` opens within `timeout` seconds; else why not.

    Name resolution counts in the time too (a thread, since `getaddrinfo` takes no timeout)."""
    host, port = probe_address()
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"{type(error).__name__}: {first_line(error)}")

    worker = threading.Thread(target=connect, name="fastclipseg-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"{host}:{port} did not answer within {timeout:g} s"
    return None if outcome[0] is None else f"{host}:{port} cannot be reached ({outcome[0]})"


def way_out(repo_id: str) -> str:
    return (f"Download it where there is network access (`hf download {repo_id} --local-dir FOLDER`), copy the folder "
            "here and pass its path instead of the id")


def download(repo_id: str, cache: Path) -> Path:
    """Download the files of a CLIPSeg folder into the cache; returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    options = {"cache_dir": str(cache), "endpoint": endpoint()}
    folder = Path(snapshot_download(repo_id, allow_patterns=FOLDER_PATTERNS, **options))
    if not any(folder.glob("*.safetensors")):
        folder = Path(snapshot_download(repo_id, allow_patterns=LEGACY_WEIGHTS_PATTERNS, **options))
    return folder


def resolve(repo_id: str, has_model: Callable[[Path], bool], local_files_only: bool = False) -> Path:
    """The local folder of hub model `repo_id`: cached (if `has_model(folder)` says it is complete)
    or downloaded now. `HubUnavailableError` naming the id and the way out otherwise."""
    cache = hub_cache_dir()
    folder = cached_snapshot(repo_id, cache)
    if folder is not None and has_model(folder):
        return folder
    where = f"model {repo_id!r} is not in the HuggingFace cache ({cache})"
    if local_files_only:
        raise HubUnavailableError(f"{where} and local_files_only=True forbids downloading it. {way_out(repo_id)}.")
    if offline_mode():
        raise HubUnavailableError(f"{where} and HF_HUB_OFFLINE is set. {way_out(repo_id)}.")
    problem = reachable()
    if problem is not None:
        raise HubUnavailableError(f"{where} and the hub cannot be reached ({problem}). {way_out(repo_id)} "
                                  "(HF_HUB_OFFLINE=1 skips the network check).")
    try:
        return download(repo_id, cache)
    except MemoryError:
        raise
    except Exception as error:  # huggingface_hub's errors: not found, gated, network, disk
        raise HubUnavailableError(f"could not download model {repo_id!r} from the HuggingFace hub "
                                  f"({type(error).__name__}: {first_line(error)}). {way_out(repo_id)}.") from error


__all__ = ["HubUnavailableError", "cached_snapshot", "hub_cache_dir", "reachable", "resolve"]

"""Helpers for the benchmarks (`fastclipseg bench` and benchmarks/*.py): test images, turn-taking
timing, the machine's description, peak memory, and JSON results."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: resampling and encoding cost as they would on photos."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=2) * 200
    return np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


def interleaved_median_seconds(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, timed in turns (a, b, c, a, b, c, ...).

    On a shared machine whose speed drifts, timing one side's runs after the other's biases the
    ratio; taking turns exposes every side to the same drift.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (since its program started)."""
    # Linux's ru_maxrss survives fork + exec, so a child of a big process would report its
    # parent's peak; VmHWM is the high-water mark of this program's own memory.
    for line in _read_lines("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _read_lines(path: str) -> list[str]:
    """The lines of a /proc file; none where there is no /proc (macOS, Windows)."""
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    for line in _read_lines("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


#: The CPU features that change which kernels torch and onnxruntime pick (hence the timings).
_SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of the speed-relevant CPU features (`_SPEED_FLAGS`) this machine has, from /proc/cpuinfo."""
    for line in _read_lines("/proc/cpuinfo"):
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in _SPEED_FLAGS if flag in present]
    return []


def device_name() -> str:
    """The CPU, and the first CUDA GPU when PyTorch sees one (benchmarks on a GPU name it)."""
    name = f"cpu: {cpu_name()}"
    try:
        import torch
    except ImportError:  # a benchmark without torch runs on the CPU only
        return name
    return name + (f"; gpu: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")


def write_result(name: str, payload: dict, out: Path) -> Path:
    """Write `payload` (plus date and machine) as <out>/<name>-<date>.json, atomically."""
    now = datetime.now(timezone.utc)
    record = {"benchmark": name, "date": now.isoformat(timespec="seconds"), "device": device_name(),
              "cpu_flags": cpu_flags(), "cores_visible": os.cpu_count(), **payload}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{now:%Y%m%d}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(partial, path)
    return path


def moving_disc_frames(count: int, height: int, width: int, *, noise: float = 20.0, seed: int = 0):
    """`count` frames of a red disc crossing a natural background left to right at constant speed,
    with independent per-frame noise; yields `(frame, disc_mask)` (the ground truth)."""
    rng = np.random.default_rng(seed)
    background = natural_image(height, width, seed).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    radius = max(2.0, min(height, width) / 6)
    for index in range(count):
        cx = radius + (width - 2 * radius) * index / max(1, count - 1)
        disc = (yy - height / 2) ** 2 + (xx - cx) ** 2 <= radius**2
        frame = background.copy()
        frame[disc] = (220, 40, 40)
        frame += rng.normal(0, noise, frame.shape)
        yield np.clip(frame, 0, 255).astype(np.uint8), disc


def write_video(path: Path, frames, *, fps: int = 25, codec: str = "libx264") -> Path:
    """Encode RGB uint8 frames (an iterable) to `path` with PyAV (yuv420p, even sizes)."""
    import av

    with av.open(str(path), "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.height, stream.width = frame.shape[0], frame.shape[1]
                stream.pix_fmt = "yuv420p"
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path

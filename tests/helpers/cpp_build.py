"""Building the C++ examples and tests (tests/cpp) against the installed CMake package."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "cpp"
TEST_PROJECT = REPO / "tests" / "cpp"
EXECUTABLES = ("segment_image", "segment_frames", "tokenize", "test_runtime")


class MissingSystemLibraries(RuntimeError):
    """The package config found no ICU, nlohmann-json or OpenSSL (a machine without the Debian
    packages that .ci/run installs, such as the GPU machine)."""


def _run(command: list[str], log: Path) -> None:
    with open(log, "a") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if status != 0:
        text = log.read_text()
        tail = "\n".join(text.splitlines()[-40:])
        missing = [line.strip() for line in text.splitlines()
                   if "was not built: the" in line or "Could not find STB_INCLUDE_DIR" in line]
        if missing:
            reason = missing[0]
            raise MissingSystemLibraries(reason)
        raise RuntimeError(f"{command[0]} failed (exit {status}); the end of {log}:\n{tail}")


def build_cpp_tests(build_dir: Path) -> dict[str, Path]:
    """Configure and build tests/cpp (which adds examples/cpp) with find_package(fastclipseg)
    from `fastclipseg.cmake_dir()` and libtorch from `torch.utils.cmake_prefix_path`; returns
    the executables by name. RuntimeError with the build log's end if anything fails;
    MissingSystemLibraries if the C++ side's system libraries are not installed."""
    import fastclipseg
    import torch

    if shutil.which("cmake") is None:
        raise RuntimeError("cmake is not installed: the C++ tests need CMake >= 3.18 and a C++17 compiler")
    log = build_dir / "build.log"
    prefix_path = ";".join([fastclipseg.cmake_dir(), torch.utils.cmake_prefix_path])
    _run(["cmake", "-S", str(TEST_PROJECT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
          f"-DCMAKE_PREFIX_PATH={prefix_path}", f"-DFASTCLIPSEG_EXAMPLES={EXAMPLES}"], log)
    _run(["cmake", "--build", str(build_dir), "--parallel", str(min(2, os.cpu_count() or 1))], log)
    found = {}
    for name in EXECUTABLES:
        matches = [p for p in build_dir.rglob(name) if p.is_file() and os.access(p, os.X_OK)]
        if not matches:
            raise RuntimeError(f"the build made no {name} executable (see {log})")
        found[name] = matches[0]
    return found

"""Where the installed C++ package lies, for `find_package(fastclipseg)` in a CMake project."""

from __future__ import annotations

from pathlib import Path

CONFIG_NAME = "fastclipsegConfig.cmake"


def cmake_dir() -> str:
    """The folder of `fastclipsegConfig.cmake` inside this installation, for CMake's
    `-Dfastclipseg_DIR=...` or `CMAKE_PREFIX_PATH` (as `pybind11 --cmakedir`).

    Raises FileNotFoundError when the package was installed without its C++ part (a source
    tree on `PYTHONPATH` rather than `pip install`).
    """
    folder = Path(__file__).resolve().parent / "cpp" / "lib" / "cmake" / "fastclipseg"
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{folder / CONFIG_NAME} is missing: this fastclipseg was not installed with its C++ package; "
            "install it with pip (pip install fastclipseg, or pip install . in a clone)"
        )
    return str(folder)

"""The C++ examples and test program, built once per session against the installed package."""

from __future__ import annotations

import importlib

import pytest
from helpers.cpp_build import MissingSystemLibraries, build_cpp_tests


@pytest.fixture(autouse=True)
def python_resizes_as_the_runtime(monkeypatch):
    """The C++ runtime has no Pillow to follow: it resizes as Pillow >= 13 does (the order of the
    two passes). Python follows the installed Pillow, and Python 3.10 tops out at Pillow 12, whose
    order moves a few resized pixels by one level; compare like with like."""
    # The module, not `fastclipseg.ops.preprocess`, the function of the same name.
    kernels = importlib.import_module("fastclipseg.ops.preprocess")
    monkeypatch.setattr(kernels, "pass_order_of_installed_pillow", lambda: kernels.PILLOW_13)


@pytest.fixture(scope="session")
def cpp_programs(tmp_path_factory):
    """name -> path of segment_image, segment_frames, tokenize and test_runtime."""
    try:
        return build_cpp_tests(tmp_path_factory.mktemp("cpp-build"))
    except MissingSystemLibraries as error:
        # CI installs them (.ci/run, whose sanitizer step fails without them); the GPU machine has none.
        pytest.skip(f"{error} (Debian: apt install libicu-dev nlohmann-json3-dev libssl-dev libstb-dev)")
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def tokenize_exe(cpp_programs):
    """The tokenize example (examples/cpp/tokenize.cpp)."""
    return cpp_programs["tokenize"]

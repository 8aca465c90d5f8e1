"""The installed C++ package: where it is, what it exposes, and that CMake alone builds it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import fastclipseg
import numpy as np
import pytest
from fastclipseg import ops
from fastclipseg.ops.edges import Edges
from helpers.cpp_build import REPO

CONSUMER = """
cmake_minimum_required(VERSION 3.18)
project(consumer LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 17)
find_package(fastclipseg 0.1 REQUIRED {components})
add_executable(encode encode.cpp)
target_link_libraries(encode PRIVATE fastclipseg::kernels)
"""
ENCODE = """
#include <fastclipseg/instances.hpp>
#include <fastclipseg/postprocess.hpp>
#include <fastclipseg/rle.hpp>
#include <iostream>
#include <vector>
int main() {
    std::vector<std::uint8_t> mask(5 * 7, 0);  // row-major 5 x 7
    for (int r = 1; r < 4; ++r) for (int c = 2; c < 6; ++c) mask[r * 7 + c] = 1;
    std::cout << fastclipseg::rle::encode(mask.data(), 5, 7, 7, 1) << std::endl;
    mask[2 * 7 + 4] = mask[2 * 7 + 3] = 0, mask[1 * 7 + 3] = mask[3 * 7 + 3] = 0;  // cut column 3: two objects
    std::vector<std::int32_t> labels(mask.size());
    std::cout << fastclipseg::instances::label(mask.data(), 5, 7, 4, labels.data(), labels.size()) << std::endl;
    // Edge-aware upsampling: 4 x 4 logits to a 12 x 12 image, dark left and bright right.
    std::vector<float> logits(16);
    for (int i = 0; i < 16; ++i) logits[i] = static_cast<float>(i % 4) - 1.2f;
    std::vector<std::uint8_t> image(12 * 12 * 3);
    for (int i = 0; i < 12 * 12; ++i) image[3 * i] = image[3 * i + 1] = image[3 * i + 2] = (i % 12) < 6 ? 20 : 220;
    fastclipseg::edges::Guide guide{image.data(), image.size(), 12, 12, 3};
    fastclipseg::postprocess::Request request;
    request.area = true;
    request.guide = &guide;
    request.edges.radius = 1;
    request.edges.eps = 1e-3;
    request.edges.mode = fastclipseg::edges::GuideMode::grey;
    request.edges.subsample = 1;
    std::cout << fastclipseg::postprocess::run(logits.data(), logits.size(), {1, 4, 4, 12, 12}, request).area[0]
              << std::endl;
}
"""


def cmake(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["cmake", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_cmake_dir_is_the_installed_config_folder():
    folder = Path(fastclipseg.cmake_dir())
    assert (folder / "fastclipsegConfig.cmake").is_file() and (folder / "fastclipsegConfigVersion.cmake").is_file()
    printed = subprocess.run([sys.executable, "-m", "fastclipseg", "--cmake-dir"], capture_output=True, text=True)
    assert printed.returncode == 0 and printed.stdout.strip() == str(folder)


def test_kernels_library_exposes_only_its_api():
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    library = Path(fastclipseg.cmake_dir()).parents[1] / "libfastclipseg_kernels.a"
    table = subprocess.run(["readelf", "-sW", "--demangle", str(library)], capture_output=True, text=True,
                           check=True).stdout
    visible = set()
    for line in table.splitlines():
        fields = line.split(None, 7)
        # Num: Value Size Type Bind Vis Ndx Name; defined (Ndx != UND), global or weak, default visibility.
        if len(fields) == 8 and fields[4] in ("GLOBAL", "WEAK") and fields[5] == "DEFAULT" and fields[6] != "UND":
            if "fastclipseg::" in fields[7]:
                visible.add(fields[7].split("(")[0])
    public = ("fastclipseg::rle::", "fastclipseg::preprocess::", "fastclipseg::postprocess::",
              "fastclipseg::instances::", "fastclipseg::edges::")
    assert {"fastclipseg::rle::encode[abi:cxx11]", "fastclipseg::postprocess::run",
            "fastclipseg::preprocess::preprocess", "fastclipseg::instances::label",
            "fastclipseg::instances::measure", "fastclipseg::edges::check", "fastclipseg::edges::coefficients",
            "fastclipseg::edges::probability_cuts"} <= visible
    assert not [name for name in visible if not name.startswith(public) or "detail" in name or "anonymous" in name]


def test_pycocotools_reads_what_a_consumer_of_the_kernels_prints(tmp_path):
    """A CMake project with find_package(fastclipseg) and no components links the prebuilt kernels."""
    from pycocotools import mask as coco_mask

    (tmp_path / "CMakeLists.txt").write_text(CONSUMER.format(components=""))
    (tmp_path / "encode.cpp").write_text(ENCODE)
    configured = cmake("-S", str(tmp_path), "-B", str(tmp_path / "build"),
                       f"-Dfastclipseg_DIR={fastclipseg.cmake_dir()}")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    built = cmake("--build", str(tmp_path / "build"))
    assert built.returncode == 0, built.stdout + built.stderr
    counts, objects, guided_area = subprocess.run([str(tmp_path / "build" / "encode")], capture_output=True,
                                                  text=True, check=True).stdout.split()
    mask = np.zeros((5, 7), np.uint8)
    mask[1:4, 2:6] = 1
    assert counts == coco_mask.encode(np.asfortranarray(mask))["counts"].decode()
    assert objects == "2"  # the installed instances header and kernel
    # The installed edges header and kernel: what the Python binding gives on the same input.
    logits = np.tile(np.arange(4, dtype=np.float32) - np.float32(1.2), (1, 4, 1))
    image = np.where(np.arange(12) < 6, 20, 220).astype(np.uint8)[None, :, None].repeat(12, 0).repeat(3, 2)
    expected = ops.postprocess(logits, (12, 12), masks=False, area=True, edges=Edges(1, 1e-3, "grey", 1),
                               guide=image).area[0]
    assert int(guided_area) == expected


def test_runtime_component_without_libtorch_says_what_is_missing(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text(CONSUMER.format(components="COMPONENTS runtime"))
    (tmp_path / "encode.cpp").write_text(ENCODE)
    configured = cmake("-S", str(tmp_path), "-B", str(tmp_path / "build"),
                       f"-Dfastclipseg_DIR={fastclipseg.cmake_dir()}",
                       "-DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON")
    assert configured.returncode != 0
    assert "fastclipseg::runtime was not built" in configured.stderr and "libtorch" in configured.stderr


def test_kernels_build_and_install_with_cmake_alone(tmp_path):
    """-DFASTCLIPSEG_PYTHON=OFF: no Python, no pybind11; the install holds the package config."""
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    configured = cmake("-S", str(REPO), "-B", str(build), "-DFASTCLIPSEG_PYTHON=OFF", "-DCMAKE_BUILD_TYPE=Release",
                       f"-DCMAKE_INSTALL_PREFIX={prefix}")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    for step in (("--build", str(build), "--parallel", "2"), ("--install", str(build))):
        done = cmake(*step)
        assert done.returncode == 0, done.stdout + done.stderr
    libdir = next(p for p in (prefix / "lib", prefix / "lib64") if p.is_dir())
    assert (libdir / "libfastclipseg_kernels.a").is_file()
    assert (libdir / "cmake" / "fastclipseg" / "fastclipsegConfig.cmake").is_file()
    for header in ("rle.hpp", "preprocess.hpp", "postprocess.hpp", "tokenizer.hpp", "runtime.hpp"):
        assert (prefix / "include" / "fastclipseg" / header).is_file()
    assert (prefix / "share" / "fastclipseg" / "src" / "runtime" / "segmenter.cpp").is_file()

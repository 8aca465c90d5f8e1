"""The API reference (mkdocs.yml, docs/) builds with `mkdocs build --strict`: every `::: name` is
found, every `[title][fastclipseg.Name]` cross-reference resolves, every docstring parses; and a
broken reference is shown to fail the build, so the check can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, timeout=120)


def test_reference_builds_strict_with_every_public_name(tmp_path):
    done = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr
    pages = {path.relative_to(tmp_path / "site").as_posix(): path.read_text(encoding="utf-8")
             for path in (tmp_path / "site").rglob("index.html")}
    expected = {
        "api/segmenter/index.html": ["fastclipseg.FastSegmenter", "fastclipseg.FastSegmenter.from_pretrained",
                                     "fastclipseg.FastSegmenter.segment", "fastclipseg.FastSegmenter.segment_video",
                                     "fastclipseg.load_image"],
        "api/results/index.html": ["fastclipseg.SegmentationResult", "fastclipseg.SegmentationResult.to_dict",
                                   "fastclipseg.FrameResult", "fastclipseg.FrameError"],
        "api/session/index.html": ["fastclipseg.Session", "fastclipseg.Session.refine"],
        "api/prompts/index.html": ["fastclipseg.ImagePrompt", "fastclipseg.prompts.expressions.parse"],
        "api/features/index.html": ["fastclipseg.features.DenseFeatures", "fastclipseg.features.SemanticSegmentation"],
        "api/streams/index.html": ["fastclipseg.streams.FrameStream", "fastclipseg.streams.runs.RunFolder"],
        "api/schemas/index.html": ["fastclipseg.schemas.schema", "fastclipseg.schemas.SCHEMA_NAMES"],
        "api/core/index.html": ["fastclipseg.InferenceCore"],
        "api/errors/index.html": ["fastclipseg.ModelLoadError", "fastclipseg.ArtifactError"],
        "api/native_package/index.html": ["fastclipseg.cmake_dir"],
    }
    for page, names in expected.items():
        assert page in pages, sorted(pages)
        for name in names:
            assert f'id="{name}"' in pages[page], f"{page} does not document {name}"


BROKEN = {
    "cross-reference": "See [the missing class][fastclipseg.NoSuchThing].\n",
    "object": "::: fastclipseg.NoSuchThing\n",
}


@pytest.mark.parametrize("what", BROKEN)
def test_broken_reference_fails_the_build(tmp_path, what):
    # The real configuration and pages, the package's source linked in, one reference broken.
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    (tmp_path / "python").symlink_to(ROOT / "python", target_is_directory=True)
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "\n" + BROKEN[what], encoding="utf-8")
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0, f"a broken {what} built: {done.stderr}"
    assert "fastclipseg.NoSuchThing" in done.stderr, done.stderr

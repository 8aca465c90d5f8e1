"""from_pretrained: local folders, hub ids without network, and wrong paths."""

from __future__ import annotations

import shutil

import pytest
from fastclipseg import FastSegmenter, ModelUnavailableError


def test_local_folder_loads(tiny_model_dir):
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir)
    assert segmenter.preprocess_config.size == 64
    assert segmenter.backend == "torch" and segmenter.precision == "fp32"


def test_hub_id_offline_names_the_id_and_the_way_out():
    with pytest.raises(ModelUnavailableError) as caught:
        FastSegmenter.from_pretrained("CIDAS/clipseg-does-not-exist-here", local_files_only=True)
    message = str(caught.value)
    assert "CIDAS/clipseg-does-not-exist-here" in message
    assert "pass its path" in message and "local-dir" in message


def test_missing_folder_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        FastSegmenter.from_pretrained(str(tmp_path / "no-such-model"))


def test_folder_with_missing_files_lists_them(tiny_model_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(ModelUnavailableError, match="missing model.safetensors"):
        FastSegmenter.from_pretrained(partial)


def test_a_checkpoint_file_points_to_convert(tmp_path):
    checkpoint = tmp_path / "rd64-uni.pth"
    checkpoint.write_bytes(b"x")
    with pytest.raises(ModelUnavailableError, match="fastclipseg convert"):
        FastSegmenter.from_pretrained(checkpoint)


def test_wrong_argument_type():
    with pytest.raises(TypeError, match="name_or_path"):
        FastSegmenter.from_pretrained(42)

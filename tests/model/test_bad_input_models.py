"""Damaged model folders, exports and checkpoints: each is refused with the documented exception
type, and the message names the file that is wrong (issue 14: nothing lost, nothing trusted).

Model folders raise `ModelLoadError` (a `ValueError`), or `ModelUnavailableError` (an `OSError`)
for a folder that lacks files; exports raise `ArtifactError` (a `ModelLoadError`); checkpoints
given to the converter raise `ValueError`.
"""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
import torch
from fastclipseg import FastSegmenter, ModelUnavailableError
from fastclipseg.engines.artifacts import (
    DIGEST_KEY,
    MANIFEST_NAME,
    ArtifactError,
    file_sha256,
    manifest_digest,
)
from fastclipseg.model.convert import convert_original_checkpoint, load_state_dict_file
from fastclipseg.model.export_processor import ExportTokenizer, image_settings
from fastclipseg.model.files import ModelLoadError
from fastclipseg.model.tokenizer_files import read_bpe_merges


@pytest.fixture(scope="module")
def export_dir(tiny_model_dir, tmp_path_factory):
    """A torchscript export of the tiny model, made once; tests damage copies of it."""
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, cache=False)
    return segmenter.export(tmp_path_factory.mktemp("export") / "e", backend="torchscript")


@pytest.fixture
def export_copy(export_dir, tmp_path):
    return shutil.copytree(export_dir, tmp_path / "export")


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def reseal(folder, name):
    """Record `name`'s current contents in the manifest, as a writer that produced them would."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["other_files"][name] = {"sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size}
    manifest[DIGEST_KEY] = manifest_digest(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def refused(folder, error_type, *names):
    """Loading `folder` raises `error_type` whose message names each of `names`; returns the message."""
    with pytest.raises(error_type) as caught:
        FastSegmenter.from_pretrained(folder)
    message = str(caught.value)
    for name in names:
        assert name in message, message
    assert "\n" not in message, message  # one line, for the command line's `error: ...`
    return message


# -- exports: every file the loader reads is checked against the manifest ------------------------


def test_export_processor_config_changed_by_one_byte_is_refused(export_copy):
    # Issue 14's report: mean 0.485 -> 0.985 loaded silently and changed 24 % of mask pixels.
    path = export_copy / "processor_config.json"
    text = path.read_text()
    assert "0.485" in text
    path.write_text(text.replace("0.485", "0.985", 1))
    refused(export_copy, ArtifactError, str(path), "corrupt", "export the model again")


@pytest.mark.parametrize("name", ["processor_config.json", "tokenizer.json", "tokenizer_config.json"])
def test_export_truncated_processor_files_are_refused(export_copy, name):
    truncate(export_copy / name)
    refused(export_copy, ArtifactError, str(export_copy / name), "corrupt")


def test_export_missing_tokenizer_is_refused(export_copy):
    (export_copy / "tokenizer.json").unlink()
    refused(export_copy, ArtifactError, str(export_copy / "tokenizer.json"), "missing")


def test_export_manifest_edited_by_one_byte_is_refused(export_copy):
    path = export_copy / MANIFEST_NAME
    text = path.read_text()
    assert '"max_prompt_tokens": 77' in text
    path.write_text(text.replace('"max_prompt_tokens": 77', '"max_prompt_tokens": 17'))
    refused(export_copy, ArtifactError, str(path), "edited")


def test_export_truncated_manifest_names_the_file(export_copy):
    truncate(export_copy / MANIFEST_NAME)
    refused(export_copy, ArtifactError, str(export_copy / MANIFEST_NAME), "not valid JSON")


def test_export_file_added_after_writing_is_not_read_unchecked(export_copy):
    # image_settings would read preprocessor_config.json where processor_config.json has none.
    (export_copy / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.9, 0.9, 0.9]}))
    refused(export_copy, ArtifactError, str(export_copy / "preprocessor_config.json"), "not in the manifest")


def test_export_of_format_1_is_refused_with_the_way_out(export_copy):
    # An export written before the processor files were hashed: they cannot be checked.
    def to_version_1(manifest):
        manifest["format_version"] = 1
        del manifest["other_files"], manifest[DIGEST_KEY]

    edit_json(export_copy / MANIFEST_NAME, to_version_1)
    message = refused(export_copy, ArtifactError, str(export_copy / MANIFEST_NAME), "format 1")
    assert "export the model again" in message


def test_export_with_unusable_image_settings_names_file_and_setting(export_copy):
    # Hashes match (the writer produced these values); the values themselves are refused.
    edit_json(export_copy / "processor_config.json", lambda c: c["image_processor"].update(image_mean=[0.5]))
    reseal(export_copy, "processor_config.json")
    refused(export_copy, ArtifactError, str(export_copy / "processor_config.json"), "image_mean")


def test_export_tokenizer_that_is_not_a_tokenizer_names_the_file(export_copy):
    (export_copy / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    reseal(export_copy, "tokenizer.json")
    refused(export_copy, ArtifactError, str(export_copy / "tokenizer.json"), "not a tokenizers tokenizer file")


def test_export_processor_json_errors_name_the_file_on_their_own(export_dir, tmp_path):
    # The export processor used directly (no manifest): a truncated JSON file is named, not a bare
    # JSONDecodeError.
    folder = shutil.copytree(export_dir, tmp_path / "e")
    truncate(folder / "processor_config.json")
    with pytest.raises(ModelLoadError, match=r"processor_config\.json is not valid JSON"):
        image_settings(folder)
    truncate(folder / "tokenizer_config.json")
    with pytest.raises(ModelLoadError, match=r"tokenizer_config\.json is not valid JSON"):
        ExportTokenizer(folder)


def test_error_classes_are_value_errors():
    assert issubclass(ModelLoadError, ValueError) and issubclass(ArtifactError, ModelLoadError)


# -- model folders: each damaged file is named -----------------------------------------------------


@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["truncated", "empty"])
def test_model_truncated_or_empty_weights(model_copy, keep):
    truncate(model_copy / "model.safetensors", keep)
    refused(model_copy, ModelLoadError, str(model_copy / "model.safetensors"), "replace the model folder")


def test_model_weights_that_are_not_safetensors(model_copy):
    (model_copy / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    refused(model_copy, ModelLoadError, str(model_copy / "model.safetensors"), "not a safetensors")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "processor_config.json", "tokenizer_config.json"])
def test_model_truncated_json_names_the_file(model_copy, name):
    truncate(model_copy / name)
    refused(model_copy, ModelLoadError, str(model_copy / name), "not valid JSON")


def test_model_config_of_another_architecture(model_copy):
    (model_copy / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    refused(model_copy, ModelLoadError, str(model_copy / "config.json"), "'bert'", "not CLIPSeg")


def test_model_config_that_does_not_fit_the_weights(model_copy):
    edit_json(model_copy / "config.json", lambda c: c.update(projection_dim=48))
    refused(model_copy, ModelLoadError, "config.json", "model.safetensors", "shapes")


def test_model_weights_missing_a_tensor_are_not_left_random(model_copy):
    from safetensors.torch import load_file, save_file

    weights = load_file(model_copy / "model.safetensors")
    del weights["decoder.film_mul.weight"]
    save_file(weights, model_copy / "model.safetensors", metadata={"format": "pt"})
    refused(model_copy, ModelLoadError, "model.safetensors", "decoder.film_mul.weight", "random")


def test_model_tokenizer_that_is_not_a_tokenizer(model_copy):
    (model_copy / "tokenizer.json").write_text(json.dumps({"a": 1}))
    refused(model_copy, ModelLoadError, "tokenizer.json", str(model_copy))


def test_model_image_size_zero_is_refused_at_load(model_copy):
    edit_json(model_copy / "processor_config.json", lambda c: c["image_processor"].update(size={"height": 0, "width": 0}))
    refused(model_copy, ModelLoadError, str(model_copy / "processor_config.json"), "size")


def test_model_folder_without_config(model_copy):
    (model_copy / "config.json").unlink()
    refused(model_copy, ModelUnavailableError, str(model_copy), "missing config.json")


# -- checkpoints for the converter: not torch's advice, but what the file is -----------------------


def converter_refuses(path, tmp_path, *fragments):
    with pytest.raises(ValueError) as caught:
        convert_original_checkpoint(path, tmp_path / "converted")
    message = str(caught.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    # torch suggests weights_only=False, which would run code from the file: never relayed.
    assert "weights_only" not in message, message
    assert not (tmp_path / "converted").exists()
    return message


def test_checkpoint_that_is_text(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello, not a checkpoint\n")
    converter_refuses(path, tmp_path, "not a PyTorch checkpoint")


def test_checkpoint_that_is_empty(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    converter_refuses(path, tmp_path, "not a PyTorch checkpoint", "empty")


def test_checkpoint_that_is_a_zip_but_not_torch(tmp_path):
    path = tmp_path / "archive.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    converter_refuses(path, tmp_path, "not a PyTorch checkpoint", "zip")


def test_checkpoint_truncated(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"weight": torch.zeros(64, 64)}, path)
    truncate(path, 0.6)
    converter_refuses(path, tmp_path, "damaged or truncated")


def test_checkpoint_holding_python_objects(tmp_path):
    import argparse

    path = tmp_path / "training.pth"
    torch.save({"args": argparse.Namespace(lr=0.1), "weight": torch.zeros(2)}, path)
    converter_refuses(path, tmp_path, "argparse.Namespace", "state_dict()")


def test_checkpoint_plain_pickle(tmp_path):
    import pickle

    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    converter_refuses(path, tmp_path, "not a PyTorch checkpoint")


def test_checkpoint_with_the_wrong_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(10)}, path)
    converter_refuses(path, tmp_path, "conv1.weight", "not an original CLIPSeg checkpoint")


def test_checkpoint_nested_training_state(tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": torch.tensor(3)}, path)
    converter_refuses(path, tmp_path, "'state_dict'", "not a plain state dict")


def test_checkpoint_that_is_a_folder(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="is a folder, not a checkpoint file"):
        load_state_dict_file(tiny_model_dir)


def test_vocabulary_that_is_not_gzip(tmp_path):
    path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    path.write_text("not gzip")
    with pytest.raises(ValueError, match="not a readable gzipped CLIP BPE merges list") as caught:
        read_bpe_merges(path)
    assert str(path) in str(caught.value)

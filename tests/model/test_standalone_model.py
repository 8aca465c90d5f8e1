"""Model folders load without transformers (issue 17), into the same weights, token ids and logits.

`StandaloneCLIPSeg` must have exactly transformers' parameter tree, `ClipSegConfig` its defaults,
`FolderProcessor` its token ids and image settings, and a segmenter built on them must give the
logits of one built on transformers' model, bit for bit on the torch backend.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from fastclipseg import FastSegmenter, ModelLoadError
from fastclipseg.bench.measure import natural_image
from fastclipseg.model.configs import reference_config
from fastclipseg.model.folder_processor import FolderProcessor
from fastclipseg.model.loading import LOAD_WITH_TRANSFORMERS_ENV, load_model_and_processor
from fastclipseg.model.standalone import StandaloneCLIPSeg, is_clipseg_model
from fastclipseg.model.standalone_config import CLIPSEG_DEFAULTS, TEXT_DEFAULTS, VISION_DEFAULTS, ClipSegConfig
from helpers.tiny_models import TINY_IMAGE_SIZE, tiny_config
from transformers import (
    CLIPSegConfig,
    CLIPSegForImageSegmentation,
    CLIPSegProcessor,
    CLIPSegTextConfig,
    CLIPSegVisionConfig,
    PreTrainedConfig,
)

PROMPTS = ["a cat", "red dog", "a red cat on a red dog", "dog"]
TOKEN_SAMPLES = [
    "a cat", "the RED car", "  spaces   around  ", "café crème brûlée", "собака", "一只猫", "قطة", "🐱 and 🐶", "",
    "it's a dog's life", "don't STOP", "<|startoftext|>", "<|ENDOFTEXT|>", "a <|endoftext|> b", "tab\tnew\nline",
    "123 4567", "Ǆ ﬁ ＡＢＣ", "e\u0301 vs \u00e9", "hello!!!???", "word " * 100, "x" * 300,
]


def _own_fields(config_class) -> dict:
    base = {field.name for field in dataclasses.fields(PreTrainedConfig)}
    instance = config_class()
    return {field.name: getattr(instance, field.name) for field in dataclasses.fields(config_class)
            if field.name not in base and field.name not in ("text_config", "vision_config")}


@pytest.mark.parametrize("ours, theirs", [(TEXT_DEFAULTS, CLIPSegTextConfig), (VISION_DEFAULTS, CLIPSegVisionConfig),
                                          (CLIPSEG_DEFAULTS, CLIPSegConfig)], ids=["text", "vision", "clipseg"])
def test_default_snapshot_matches_transformers(ours, theirs):
    # A transformers release that adds a field or changes a default shows up here.
    expected = {name: list(value) if isinstance(value, tuple) else value for name, value in _own_fields(theirs).items()}
    assert ours == expected


def _meta(model_class, config):
    with torch.device("meta"):
        return model_class(config)


def _same_tree(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for key, tensor in theirs_state.items():
        assert (ours_state[key].shape, ours_state[key].dtype) == (tensor.shape, tensor.dtype), key
    assert [name for name, _ in ours.named_buffers()] == [name for name, _ in theirs.named_buffers()]
    # What the stages, the image-prompt encoder and the dense heads read besides the weights.
    for name, module in theirs.named_modules():
        other = ours.get_submodule(name)
        for attribute in ("num_heads", "head_dim", "scale", "embed_dim", "patch_size", "image_size", "eps",
                          "eos_token_id", "conditional_layer", "normalized_shape"):
            if hasattr(module, attribute):
                assert getattr(other, attribute) == getattr(module, attribute), f"{name}.{attribute}"
        if hasattr(module, "activation_fn"):
            x = torch.linspace(-4, 4, 101)
            assert torch.equal(other.activation_fn(x), module.activation_fn(x)), name


CONFIG_VARIANTS = {
    "tiny": {},
    "film-at-1": dict(conditional_layer=1),
    "layers-3-1": dict(extract_layers=(3, 1), conditional_layer=1),
    "single-layer": dict(extract_layers=(2,)),
    "simple-conv": dict(complex_conv=False),
}


@pytest.mark.parametrize("options", CONFIG_VARIANTS.values(), ids=CONFIG_VARIANTS.keys())
def test_tree_equals_transformers(options):
    config = tiny_config(**options)
    ours = _meta(StandaloneCLIPSeg, ClipSegConfig.from_dict(config.to_dict()))
    _same_tree(ours, _meta(CLIPSegForImageSegmentation, config))


def test_tree_with_other_reduce_dim_and_activation():
    config = tiny_config()
    config.reduce_dim, config.decoder_num_attention_heads, config.text_config.hidden_act = 8, 4, "gelu"
    _same_tree(_meta(StandaloneCLIPSeg, ClipSegConfig.from_dict(config.to_dict())),
               _meta(CLIPSegForImageSegmentation, config))


def test_full_size_tree_equals_transformers():
    config = reference_config()
    ours = _meta(StandaloneCLIPSeg, ClipSegConfig.from_dict(config.to_dict()))
    _same_tree(ours, _meta(CLIPSegForImageSegmentation, config))
    assert sum(p.numel() for p in ours.parameters()) > 150_000_000


def _write_config(tmp_path, data: dict):
    (tmp_path / "config.json").write_text(json.dumps(data))
    return ClipSegConfig.from_json_file(tmp_path / "config.json"), CLIPSegConfig.from_pretrained(tmp_path)


def test_config_with_defaults_omitted(tmp_path):
    # What save_pretrained leaves out, or an old config never had, takes transformers' defaults.
    ours, theirs = _write_config(tmp_path, {"model_type": "clipseg", "vision_config": {"patch_size": 16}})
    for name in TEXT_DEFAULTS:
        assert getattr(ours.text_config, name) == getattr(theirs.text_config, name)
    for name in VISION_DEFAULTS:
        assert getattr(ours.vision_config, name) == getattr(theirs.vision_config, name)
    _same_tree(_meta(StandaloneCLIPSeg, ours), _meta(CLIPSegForImageSegmentation, theirs))


def test_config_written_before_transformers_4_25(tmp_path):
    # "vision_config_dict" replaces "vision_config", as transformers reads it.
    ours, theirs = _write_config(tmp_path, {
        "model_type": "clipseg", "vision_config": {"patch_size": 32, "hidden_size": 64},
        "vision_config_dict": {"patch_size": 16, "num_hidden_layers": 10}, "text_config_dict": None,
        "reduce_dim": 32, "use_complex_transposed_convolution": True, "torch_dtype": "float32"})
    for name in VISION_DEFAULTS:
        assert getattr(ours.vision_config, name) == getattr(theirs.vision_config, name), name
    _same_tree(_meta(StandaloneCLIPSeg, ours), _meta(CLIPSegForImageSegmentation, theirs))


@pytest.mark.parametrize("change, field", [
    (lambda c: c.update(reduce_dim="64"), "reduce_dim"),
    (lambda c: c["vision_config"].update(num_attention_heads=3), "num_attention_heads"),
    (lambda c: c.update(extract_layers=[1, 9]), "extract_layers"),
    (lambda c: c.update(use_complex_transposed_convolution="yes"), "use_complex_transposed_convolution"),
])
def test_unusable_config_values_name_the_file_and_field(model_copy, change, field):
    path = model_copy / "config.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError) as caught:
        FastSegmenter.from_pretrained(model_copy)
    assert str(path) in str(caught.value) and field in str(caught.value)


# -- weights ----------------------------------------------------------------------------------


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def _assert_same_weights(folder):
    ours, _ = load_model_and_processor(folder)
    theirs = CLIPSegForImageSegmentation.from_pretrained(folder)
    assert isinstance(ours, StandaloneCLIPSeg)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for key, tensor in theirs_state.items():
        assert ours_state[key].dtype == tensor.dtype and torch.equal(ours_state[key], tensor), key
    return ours


def test_weights_equal_transformers(tiny_model_dir):
    model = _assert_same_weights(tiny_model_dir)
    assert not model.training and model.config.extract_layers == [0, 1, 2]


@pytest.mark.parametrize("name", ["clipseg-shapes", "clipseg-shapes-prompted"])
def test_weights_of_the_shared_checkpoints_equal_transformers(shared_data, name):
    _assert_same_weights(shared_data / name)


def test_sharded_safetensors(model_copy):
    CLIPSegForImageSegmentation.from_pretrained(model_copy).save_pretrained(model_copy, max_shard_size="200KB")
    assert (model_copy / "model.safetensors.index.json").is_file()
    (model_copy / "model.safetensors").unlink(missing_ok=True)
    _assert_same_weights(model_copy)


def test_pytorch_model_bin_with_legacy_position_ids(model_copy):
    # Checkpoints written before transformers 4.31 hold the position_ids buffers; both loaders ignore them.
    state = CLIPSegForImageSegmentation.from_pretrained(model_copy).state_dict()
    state["clip.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    state["clip.vision_model.embeddings.position_ids"] = torch.arange(5)[None]
    torch.save(state, model_copy / "pytorch_model.bin")
    (model_copy / "model.safetensors").unlink()
    _assert_same_weights(model_copy)


def test_half_precision_checkpoint_loads_in_its_dtype(model_copy):
    CLIPSegForImageSegmentation.from_pretrained(model_copy).half().save_pretrained(model_copy)
    assert _assert_same_weights(model_copy).clip.logit_scale.dtype == torch.float16


def test_extra_tensors_are_refused(model_copy):
    from safetensors.torch import load_file, save_file

    weights = load_file(model_copy / "model.safetensors")
    weights["decoder.extra.weight"] = torch.zeros(2)
    save_file(weights, model_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"model\.safetensors holds 1 tensors .*decoder\.extra\.weight"):
        FastSegmenter.from_pretrained(model_copy)


def test_pytorch_model_bin_that_holds_code_is_refused(model_copy):
    (model_copy / "model.safetensors").unlink()
    torch.save({"model": object}, model_copy / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pytorch_model.bin") as caught:
        FastSegmenter.from_pretrained(model_copy)
    assert "weights_only" not in str(caught.value)


# -- the processor ------------------------------------------------------------------------------


def _tokenizer_folder(layout: str, request, tmp_path):
    """A model folder with one of the tokenizer layouts a folder may have."""
    if layout == "tiny":
        return request.getfixturevalue("tiny_model_dir")
    real = request.getfixturevalue("shared_data") / "clipseg-shapes"
    if layout == "real":
        return real
    vocab_only = shutil.copytree(real, tmp_path / "vocab-only")
    (vocab_only / "tokenizer.json").unlink()
    # As transformers 4 wrote CLIP tokenizers: AddedToken objects, special_tokens_map.json, and
    # normalised special tokens in tokenizer.json; the image settings in preprocessor_config.json.
    old = shutil.copytree(real, tmp_path / "transformers-4")

    def added(content):
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    (old / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": {"__type": "AddedToken", **added("<|startoftext|>")},
        "do_lower_case": True, "eos_token": {"__type": "AddedToken", **added("<|endoftext|>")}, "errors": "replace",
        "model_max_length": 77, "pad_token": "<|endoftext|>", "processor_class": "CLIPSegProcessor",
        "tokenizer_class": "CLIPTokenizer", "unk_token": {"__type": "AddedToken", **added("<|endoftext|>")}}))
    (old / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": added("<|startoftext|>"), "eos_token": added("<|endoftext|>"), "pad_token": "<|endoftext|>",
        "unk_token": added("<|endoftext|>")}))
    tokenizer = json.loads((old / "tokenizer.json").read_text())
    for token in tokenizer["added_tokens"]:
        token["normalized"] = True
    (old / "tokenizer.json").write_text(json.dumps(tokenizer))
    (old / "processor_config.json").unlink()
    (old / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "processor_class": "CLIPSegProcessor",
        "resample": 2, "size": 352}))
    return {"vocab-only": vocab_only, "transformers-4": old}[layout]


@pytest.mark.parametrize("layout", ["tiny", "real", "vocab-only", "transformers-4"])
def test_token_ids_equal_transformers(request, tmp_path, layout):
    folder = _tokenizer_folder(layout, request, tmp_path)
    expected = CLIPSegProcessor.from_pretrained(folder)
    ours = FolderProcessor(folder, "fix")
    for text in TOKEN_SAMPLES:
        assert ours.tokenizer(text)["input_ids"] == expected.tokenizer(text)["input_ids"], text
    # As PromptTokenizer calls it: a batch, right-padded, truncated to the text tower's length.
    options = {"padding": True, "truncation": True, "max_length": 77, "return_tensors": "pt"}
    assert torch.equal(ours.tokenizer(TOKEN_SAMPLES, **options)["input_ids"],
                       expected.tokenizer(TOKEN_SAMPLES, **options)["input_ids"])
    pair = ["a", "a cat"]
    assert ours.tokenizer(pair, padding=True)["input_ids"] == expected.tokenizer(pair, padding=True)["input_ids"]
    assert ours.tokenizer.pad_token_id == expected.tokenizer.pad_token_id
    assert len(ours.tokenizer) == len(expected.tokenizer)
    settings = expected.image_processor
    assert vars(ours.image_processor)["size"] == {"height": settings.size["height"], "width": settings.size["width"]}
    for name in ("resample", "do_resize", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std"):
        value = getattr(settings, name)
        assert getattr(ours.image_processor, name) == (list(value) if isinstance(value, tuple) else value), name


@pytest.mark.parametrize("layout", ["tiny", "real", "vocab-only", "transformers-4"])
def test_saved_processor_files_are_what_transformers_writes(request, tmp_path, layout):
    folder = _tokenizer_folder(layout, request, tmp_path)
    CLIPSegProcessor.from_pretrained(folder).save_pretrained(tmp_path / "theirs")
    FolderProcessor(folder, "fix").save_pretrained(tmp_path / "ours")
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "theirs"))
    for name in ("tokenizer.json", "processor_config.json"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes(), name
    # tokenizer_config.json: what the tokenizer is built from (transformers adds its own load-time entries).
    ours = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    theirs = json.loads((tmp_path / "theirs" / "tokenizer_config.json").read_text())
    assert ours == {name: theirs[name] for name in ours}


# -- segmenters built both ways -----------------------------------------------------------------


@pytest.fixture(scope="module")
def both_ways(tiny_model_dir):
    """(standalone segmenter, segmenter on transformers' model and processor) of the tiny folder."""
    standalone = FastSegmenter.from_pretrained(tiny_model_dir)
    reference = FastSegmenter(CLIPSegForImageSegmentation.from_pretrained(tiny_model_dir).eval(),
                              CLIPSegProcessor.from_pretrained(tiny_model_dir, backend="pil"))
    return standalone, reference


def test_logits_equal_bit_for_bit(both_ways):
    standalone, reference = both_ways
    assert isinstance(standalone.model, StandaloneCLIPSeg) and "transformers" not in type(standalone.model).__module__
    images = [natural_image(40, 90, seed=1), natural_image(64, 64, seed=2)]
    for ours, theirs in zip(standalone.segment_batch(images, PROMPTS), reference.segment_batch(images, PROMPTS)):
        assert np.array_equal(ours.logits, theirs.logits)
        assert np.array_equal(ours.masks, theirs.masks)


def test_image_prompts_and_dense_features_equal(both_ways):
    standalone, reference = both_ways
    example = natural_image(50, 50, seed=4)
    assert torch.equal(standalone.encode_image_prompts([example]), reference.encode_image_prompts([example]))
    image = natural_image(48, 72, seed=5)
    assert np.array_equal(standalone.dense_features(image).embeddings, reference.dense_features(image).embeddings)


def test_vision_tower_forward_matches_transformers(both_ways):
    standalone, reference = both_ways
    pixels = standalone.pixel_values([natural_image(30, 30, seed=6)])
    with torch.no_grad():
        ours = standalone.model.clip.vision_model(pixels, output_hidden_states=True, interpolate_pos_encoding=True)
        theirs = reference.model.clip.vision_model(pixels, output_hidden_states=True, interpolate_pos_encoding=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    for mine, expected in zip(ours.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["clipseg-shapes", "clipseg-shapes-prompted"])
def test_shared_checkpoints_give_transformers_logits(shared_data, name):
    folder = shared_data / name
    ours = FastSegmenter.from_pretrained(folder)
    theirs = FastSegmenter(CLIPSegForImageSegmentation.from_pretrained(folder).eval(),
                           CLIPSegProcessor.from_pretrained(folder, backend="pil"))
    image = natural_image(120, 160, seed=7)
    prompts = ["a red circle", "a blue square", "something green"]
    assert np.array_equal(ours.segment(image, prompts).logits, theirs.segment(image, prompts).logits)


def test_export_of_a_standalone_model_equals_the_transformers_one(both_ways, tmp_path):
    standalone, reference = both_ways
    ours = standalone.export(tmp_path / "ours", backend="torchscript")
    theirs = reference.export(tmp_path / "theirs", backend="torchscript")
    assert (ours / "processor_config.json").read_bytes() == (theirs / "processor_config.json").read_bytes()
    # transformers saves the padding and truncation of its tokenizer's last call; ours, the folder's.
    ours_tokenizer, theirs_tokenizer = (json.loads((out / "tokenizer.json").read_text()) for out in (ours, theirs))
    for settings in ("padding", "truncation"):
        ours_tokenizer.pop(settings), theirs_tokenizer.pop(settings)
    assert ours_tokenizer == theirs_tokenizer
    image = natural_image(40, 60, seed=8)
    loaded = [FastSegmenter.from_pretrained(folder) for folder in (ours, theirs)]
    assert loaded[0].model is None
    assert loaded[0].core.tokenize(PROMPTS).tolist() == loaded[1].core.tokenize(PROMPTS).tolist()
    expected = standalone.segment(image, PROMPTS).logits
    for segmenter in loaded:
        logits = segmenter.segment(image, PROMPTS).logits
        assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()


# -- choosing the loader ----------------------------------------------------------------------


def test_transformers_models_are_still_accepted(tiny_reference):
    model, processor = tiny_reference
    assert is_clipseg_model(model) and FastSegmenter.from_pretrained(model, processor=processor).model is model
    with pytest.raises(TypeError, match="CLIPSeg model"):
        FastSegmenter(torch.nn.Linear(2, 2), processor)


def test_escape_hatch_loads_with_transformers(tiny_model_dir, monkeypatch):
    monkeypatch.setenv(LOAD_WITH_TRANSFORMERS_ENV, "1")
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir)
    assert isinstance(segmenter.model, CLIPSegForImageSegmentation)
    assert isinstance(segmenter.processor, CLIPSegProcessor)


def test_unknown_activation_falls_back_to_transformers(model_copy):
    path = model_copy / "config.json"
    data = json.loads(path.read_text())
    data["vision_config"]["hidden_act"] = "gelu_fast"
    path.write_text(json.dumps(data))
    model, _ = load_model_and_processor(model_copy)
    assert isinstance(model, CLIPSegForImageSegmentation)


def test_segment_command_never_imports_transformers(tiny_model_dir, tmp_path):
    from PIL import Image

    Image.fromarray(natural_image(48, 64, seed=9)).save(tmp_path / "image.png")
    script = (
        "import sys\n"
        "from fastclipseg.cli import main\n"
        f"sys.argv = ['fastclipseg', 'segment', {str(tmp_path / 'image.png')!r}, '-p', 'a cat', "
        f"'-m', {str(tiny_model_dir)!r}, '-o', {str(tmp_path / 'out')!r}]\n"
        "try:\n    main()\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
        "print('imported:', sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'huggingface_hub')))\n"
    )
    environment = {**os.environ}
    environment.pop(LOAD_WITH_TRANSFORMERS_ENV, None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False,
                          env=environment)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout, done.stdout
    assert (tmp_path / "out" / "image.json").is_file()


def test_tiny_image_size_is_kept(tiny_model_dir):
    assert FastSegmenter.from_pretrained(tiny_model_dir).preprocess_config.size == TINY_IMAGE_SIZE

"""Dense CLIP features (fastclipseg.features) on tiny random models.

Each method is recomputed here, independently of the package, from the transformers model's
weights with plain torch ops, following the published code:

- MaskCLIP: github.com/chongzhou96/MaskCLIP (mirror volgachen/MaskCLIP)
  mmseg/models/backbones/vit.py `TransformerEncoderLayer.forward(return_qkv=True)`: the value path
  through out_proj, plus the residual, plus the FFN with its residual; then the final norm and the
  visual projection (mmseg/models/decode_heads/maskclip_head.py).
- ClearCLIP: github.com/mc-lan/ClearCLIP open_clip/transformer.py `custom_attn('ClearCLIP')` with
  `ignore_residual=True`: per-head softmax(q q^T * head_dim^-0.5) v, out_proj, no residual, no FFN;
  then ln_post and proj.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastclipseg import FastSegmenter
from fastclipseg import features as features_module
from fastclipseg.bench.measure import natural_image
from fastclipseg.features import (
    DEFAULT_TEMPERATURE,
    DenseFeatures,
    dense_features,
    semantic_segment,
)
from fastclipseg.model.dense_heads import METHODS, compute_dense_features
from helpers.tiny_models import TINY_IMAGE_SIZE, tiny_config, tiny_model

# fp32 on the same weights: the package runs the vision stage (its own SDPA blocks) and the last
# layers with functional ops, the reference runs transformers' tower and the formulas below, so
# the difference is float rounding only (observed max ~1e-7 on unit vectors).
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}

PATCH = 16
GRID = TINY_IMAGE_SIZE // PATCH  # 4 x 4 patches for the tiny models' 64-pixel input
IMAGE = natural_image(48, 80, seed=3)  # H x W differs from the square network input
CLASSES = ["a cat", "red dog", "a", "dog"]


@pytest.fixture(scope="module")
def deep_segmenter(tiny_reference):
    """A tiny model with one unmodified layer between the deepest extracted one and the last
    (as the real model: extract (3, 6, 9) of 12 layers leaves layer 10 unchanged, layer 11 modified)."""
    _, processor = tiny_reference
    config = tiny_config(extract_layers=(1, 0), vocab_size=len(processor.tokenizer))
    config.vision_config.num_hidden_layers = 4  # layers 0, 1 extracted; 2 unchanged; 3 modified
    model = tiny_model(config, seed=5)
    return FastSegmenter(model, processor)


def _segmenter_extracting(tiny_reference, extract_layers: tuple[int, ...], seed: int) -> FastSegmenter:
    """A tiny 4-layer model whose `extract_layers` reach the tower's last layer (3), the one the
    dense-feature methods change: the features must start before it."""
    _, processor = tiny_reference
    config = tiny_config(extract_layers=extract_layers, vocab_size=len(processor.tokenizer))
    config.vision_config.num_hidden_layers = 4
    return FastSegmenter(tiny_model(config, seed=seed), processor)


@pytest.fixture(params=["tiny", "deep", "reaches_last", "only_last"])
def segmenter(request, tiny_segmenter, deep_segmenter, tiny_reference):
    if request.param == "reaches_last":  # starts from layer 1's output
        return _segmenter_extracting(tiny_reference, (1, 3), seed=6)
    if request.param == "only_last":  # no activation before the last layer: starts from the embedded pixels
        return _segmenter_extracting(tiny_reference, (3,), seed=7)
    return tiny_segmenter if request.param == "tiny" else deep_segmenter


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def reference_features(model, pixel_values: torch.Tensor, method: str) -> torch.Tensor:
    """(B, h, w, D) by hand from transformers' tower, as the published code computes it."""
    vision = model.clip.vision_model
    with torch.no_grad():
        hidden = vision(pixel_values, output_hidden_states=True, interpolate_pos_encoding=True).hidden_states
        layers = vision.encoder.layers
        x = hidden[len(layers) - 1]  # the state entering the last layer
        last = layers[-1]
        attn = last.self_attn
        batch, tokens, width = x.shape
        heads = attn.num_heads
        head_dim = width // heads
        y = F.layer_norm(x, (width,), last.layer_norm1.weight, last.layer_norm1.bias, last.layer_norm1.eps)
        if method == "maskclip":
            # y = norm1(x); v = out_proj(v-part of in_proj(y)); v += x; v = ffn(norm2(v), identity=v)
            v = _linear(_linear(y, attn.v_proj), attn.out_proj) + x
            normed = F.layer_norm(v, (width,), last.layer_norm2.weight, last.layer_norm2.bias, last.layer_norm2.eps)
            hidden_fc = _linear(normed, last.mlp.fc1)
            hidden_fc = hidden_fc * torch.sigmoid(1.702 * hidden_fc)  # quick_gelu, CLIP's activation
            out = v + _linear(hidden_fc, last.mlp.fc2)
        elif method == "clearclip":
            # q, k, v = in_proj(ln_1(x)) per head; softmax(bmm(q, q^T) * scale); bmm(attn, v); out_proj
            q = _linear(y, attn.q_proj).reshape(batch, tokens, heads, head_dim).permute(0, 2, 1, 3)
            v = _linear(y, attn.v_proj).reshape(batch, tokens, heads, head_dim).permute(0, 2, 1, 3)
            weights = torch.softmax((q @ q.transpose(-1, -2)) * head_dim**-0.5, dim=-1)
            merged = (weights @ v).permute(0, 2, 1, 3).reshape(batch, tokens, width)
            out = _linear(merged, attn.out_proj)  # no residual, no FFN
        else:
            raise AssertionError(method)
        post = vision.post_layernorm
        out = F.layer_norm(out, (width,), post.weight, post.bias, post.eps)
        patches = out[:, 1:] @ model.clip.visual_projection.weight.T
        patches = patches / patches.norm(dim=-1, keepdim=True)
    side = math.isqrt(tokens - 1)
    return patches.reshape(batch, side, side, -1)


@pytest.mark.parametrize("method", METHODS)
def test_matches_published_formula(segmenter, method):
    ours = dense_features(segmenter, IMAGE, method=method)
    expected = reference_features(segmenter.model, segmenter.pixel_values([IMAGE]), method)[0]
    torch.testing.assert_close(torch.from_numpy(ours.embeddings), expected, **TOLERANCE)
    # The features vary over the image (so the comparison is not of constants).
    assert ours.embeddings.reshape(-1, ours.dim).std(axis=0).mean() > 1e-2


def test_methods_differ(tiny_segmenter):
    maskclip, clearclip = (dense_features(tiny_segmenter, IMAGE, method=m).embeddings for m in METHODS)
    assert np.abs(maskclip - clearclip).max() > 1e-2


@pytest.mark.parametrize("method", METHODS)
def test_shape_unit_norm_and_metadata(tiny_segmenter, method):
    features = dense_features(tiny_segmenter, IMAGE, method=method)
    dim = tiny_segmenter.model.config.projection_dim
    assert features.embeddings.shape == (GRID, GRID, dim)
    assert features.embeddings.dtype == np.float32
    assert features.grid == (GRID, GRID) and features.dim == dim
    assert features.image_size == IMAGE.shape[:2]
    assert features.method == method
    np.testing.assert_allclose(np.linalg.norm(features.embeddings, axis=-1), 1.0, atol=1e-5)


def test_size_options(tiny_segmenter):
    grid = dense_features(tiny_segmenter, IMAGE, method="clearclip")
    by_hand = F.normalize(
        F.interpolate(torch.from_numpy(grid.embeddings).permute(2, 0, 1)[None], size=(10, 12), mode="bilinear",
                      align_corners=False)[0], dim=0,
    ).permute(1, 2, 0)
    sized = dense_features(tiny_segmenter, IMAGE, method="clearclip", size=(10, 12))
    assert sized.embeddings.shape == (10, 12, grid.dim)
    torch.testing.assert_close(torch.from_numpy(sized.embeddings), by_hand, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(grid.upsample((10, 12)).embeddings, sized.embeddings)

    full = dense_features(tiny_segmenter, IMAGE, method="clearclip", size="image")
    assert full.embeddings.shape == (*IMAGE.shape[:2], grid.dim)
    np.testing.assert_allclose(np.linalg.norm(full.embeddings, axis=-1), 1.0, atol=1e-5)
    assert full.image_size == grid.image_size
    np.testing.assert_array_equal(grid.upsample("image").embeddings, full.embeddings)
    np.testing.assert_array_equal(grid.upsample((GRID, GRID)).embeddings, grid.embeddings)

    for bad in ("big", (0, 3), (3,), (2.5, 3), True):
        with pytest.raises(ValueError, match="size"):
            dense_features(tiny_segmenter, IMAGE, size=bad)


@pytest.mark.parametrize("method", METHODS)
def test_reuses_given_activations(segmenter, method, monkeypatch):
    activations = segmenter.engine.encode_images(segmenter.pixel_values([IMAGE]))
    fresh = dense_features(segmenter, IMAGE, method=method)

    def no_vision_pass(_):
        raise AssertionError("the vision stage ran again")

    monkeypatch.setattr(segmenter.engine, "encode_images", no_vision_pass)
    reused = dense_features(segmenter, IMAGE, method=method, activations=activations)
    np.testing.assert_array_equal(reused.embeddings, fresh.embeddings)
    labels = semantic_segment(segmenter, IMAGE, CLASSES, method=method, activations=activations).labels
    assert labels.shape == IMAGE.shape[:2]


def test_bad_activations(tiny_segmenter):
    activations = tiny_segmenter.engine.encode_images(tiny_segmenter.pixel_values([IMAGE, IMAGE]))
    with pytest.raises(ValueError, match=r"activations\[:, i:i\+1\]"):
        dense_features(tiny_segmenter, IMAGE, activations=activations)
    with pytest.raises(ValueError, match="activations must be"):
        dense_features(tiny_segmenter, IMAGE, activations=activations[:1, :1])
    with pytest.raises(TypeError, match="activations"):
        dense_features(tiny_segmenter, IMAGE, activations=activations.numpy())


def test_compute_dense_features_checks_the_layer(tiny_segmenter):
    model = tiny_segmenter.model
    pixels = tiny_segmenter.pixel_values([IMAGE])
    hidden = model.clip.vision_model(pixels, output_hidden_states=True, interpolate_pos_encoding=True).hidden_states
    layers = len(model.clip.vision_model.encoder.layers)
    # Entering from earlier layers is the same computation with more unchanged layers first.
    from_input = compute_dense_features(model, hidden[0], "clearclip", layer=0)
    from_last = compute_dense_features(model, hidden[layers - 1], "clearclip", layer=layers - 1)
    torch.testing.assert_close(from_input, from_last, **TOLERANCE)
    with pytest.raises(ValueError, match="last layer"):
        compute_dense_features(model, hidden[layers], "clearclip", layer=layers)
    with pytest.raises(ValueError, match="hidden_state must be"):
        compute_dense_features(model, hidden[0][..., :-1], "clearclip", layer=0)


@pytest.mark.parametrize("method", METHODS)
def test_similarity_is_cosine(tiny_segmenter, method):
    features = dense_features(tiny_segmenter, IMAGE, method=method)
    text = np.random.default_rng(0).normal(size=(3, features.dim)).astype(np.float32) * 7.0
    expected = np.einsum("hwd,kd->khw", features.embeddings.astype(np.float64), text.astype(np.float64))
    expected /= np.linalg.norm(features.embeddings, axis=-1)[None] * np.linalg.norm(text, axis=-1)[:, None, None]
    got = features.similarity(text)
    assert got.shape == (3, GRID, GRID) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(features.similarity(torch.from_numpy(text)), got)
    # One row goes through a matrix-vector kernel: equal up to rounding, not bit for bit.
    np.testing.assert_allclose(features.similarity(text[1]), got[1:2], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="text_embeddings"):
        features.similarity(text[:, :-1])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "one-class-chunks"])
def test_semantic_segment_by_hand(tiny_segmenter, method, chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(features_module, "_CHUNK_VALUES", 1)
    result = semantic_segment(tiny_segmenter, IMAGE, CLASSES, method=method)
    height, width = IMAGE.shape[:2]
    # By hand: cosine at the grid, upsampled bilinearly to the image, argmax over classes.
    text = tiny_segmenter.encode_prompts(CLASSES)
    grid = torch.from_numpy(result.features.embeddings)
    assert result.features.embeddings.shape[:2] == (GRID, GRID)
    cosine = torch.einsum("hwd,kd->khw", grid, F.normalize(text, dim=-1))
    upsampled = F.interpolate(cosine[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    labels = upsampled.argmax(dim=0).numpy()
    np.testing.assert_array_equal(result.labels, labels)
    assert result.labels.shape == (height, width)
    temperature = DEFAULT_TEMPERATURE[method]
    assert result.temperature == temperature
    probabilities = torch.softmax(upsampled / temperature, dim=0).numpy()
    np.testing.assert_allclose(result.probabilities, probabilities, rtol=1e-5, atol=1e-6)
    for k in range(len(CLASSES)):
        inside = labels == k
        assert result.areas[k] == inside.sum()
        expected = probabilities[k][inside].mean() if inside.any() else 0.0
        assert result.scores[k] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(result.similarity, cosine.numpy(), rtol=1e-5, atol=1e-6)
    assert result.class_names == CLASSES and result.image_size == (height, width) and result.method == method


def test_semantic_segment_finds_several_classes(tiny_segmenter):
    # The tiny random model's MaskCLIP maps split this image among the classes: the labels above
    # are not a constant map.
    result = semantic_segment(tiny_segmenter, IMAGE, CLASSES, method="maskclip")
    assert len(np.unique(result.labels)) > 1


def test_temperature(tiny_segmenter):
    sharp = semantic_segment(tiny_segmenter, IMAGE, CLASSES, method="maskclip", temperature=0.001)
    soft = semantic_segment(tiny_segmenter, IMAGE, CLASSES, method="maskclip", temperature=10.0)
    np.testing.assert_array_equal(sharp.labels, soft.labels)
    assert (sharp.scores[sharp.areas > 0] > soft.scores[soft.areas > 0]).all()
    for bad in (0, -1.0, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="temperature"):
            semantic_segment(tiny_segmenter, IMAGE, CLASSES, temperature=bad)


def test_bad_method(tiny_segmenter):
    for call in (
        lambda: dense_features(tiny_segmenter, IMAGE, method="sclip"),
        lambda: semantic_segment(tiny_segmenter, IMAGE, CLASSES, method="MaskCLIP"),
        lambda: compute_dense_features(tiny_segmenter.model, torch.zeros(1, 17, 32), "vanilla"),
    ):
        with pytest.raises(ValueError, match="'maskclip', 'clearclip'"):
            call()
    with pytest.raises(ValueError, match="class_names"):
        semantic_segment(tiny_segmenter, IMAGE, [])


def test_segmenter_from_export_raises(tiny_segmenter, tmp_path):
    exported = FastSegmenter.from_pretrained(tiny_segmenter.export(tmp_path / "export", backend="torchscript"))
    assert exported.model is None
    with pytest.raises(ValueError, match="loaded from an export"):
        dense_features(exported, IMAGE)
    with pytest.raises(ValueError, match="loaded from an export"):
        semantic_segment(exported, IMAGE, CLASSES)


def test_dense_features_dataclass_upsample_keeps_metadata():
    embeddings = F.normalize(torch.randn(2, 3, 5), dim=-1).numpy()
    features = DenseFeatures(embeddings, (20, 30), "maskclip")
    up = features.upsample()
    assert up.embeddings.shape == (20, 30, 5) and up.image_size == (20, 30) and up.method == "maskclip"


def test_stride_gives_one_feature_per_stride_pixels(tiny_segmenter):
    image = np.random.default_rng(3).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    by_stride = dense_features(tiny_segmenter, image, stride=8)
    assert by_stride.embeddings.shape[:2] == (7, 9)  # ceil(50 / 8), ceil(70 / 8)
    np.testing.assert_array_equal(by_stride.embeddings, dense_features(tiny_segmenter, image, size=(7, 9)).embeddings)
    with pytest.raises(ValueError, match="not both"):
        dense_features(tiny_segmenter, image, size=(7, 9), stride=8)
    with pytest.raises(ValueError, match="stride must be"):
        dense_features(tiny_segmenter, image, stride=0)


def test_similarity_takes_texts(tiny_segmenter):
    image = np.random.default_rng(4).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    features = dense_features(tiny_segmenter, image)
    by_text = features.similarity(["a cat", "red dog"])
    by_embedding = features.similarity(tiny_segmenter.encode_prompts(["a cat", "red dog"]))
    np.testing.assert_array_equal(by_text, by_embedding)
    # One row takes another matrix kernel: equal to rounding.
    np.testing.assert_allclose(features.similarity("a cat"), by_text[:1], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(features.upsample((5, 5)).similarity("a cat").shape, (1, 5, 5))
    bare = features_module.DenseFeatures(features.embeddings, features.image_size, features.method)
    with pytest.raises(ValueError, match="without a segmenter"):
        bare.similarity("a cat")
